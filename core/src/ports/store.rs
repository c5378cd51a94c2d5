//! The `Store` port: durable typed records with conditional writes, secondary look-ups, paging and
//! expiry.
//!
//! The model is a single table of records, which maps one-to-one onto DynamoDB (partition key
//! `kind#key`, one GSI per look-up, TTL attribute) and onto one SQLite table with indexes:
//! - a record is addressed by its [`Kind`] and a `key` unique within that kind;
//! - every write bumps a `version` (1 on first write); a [`Condition`] makes a write
//!   compare-and-set on it, which is how leases, idempotency keys and state transitions are made
//!   safe against concurrent writers;
//! - [`IndexKeys`] (account, status, time) drive the secondary look-ups in [`Query`];
//! - a record whose `expires_at_ms` is in the past (by the store's clock) is gone: it is never
//!   returned, and a write with [`Condition::Absent`] succeeds over it. Physical removal happens
//!   later ([`Store::purge_expired`], or DynamoDB's TTL sweeper).
//!
//! What every backend can keep, and so all that callers may rely on (DynamoDB sets the bounds):
//! - **Point reads are strongly consistent, look-ups are not.** [`Store::get`] and
//!   [`Store::version`] see every write that returned before them. A [`Store::query`] may not yet
//!   see a write made just before it, or may still see a record just changed or deleted (a GSI is
//!   updated asynchronously); it never returns an expired record. Code that must see its own
//!   write reads the record by key; a look-up only finds candidates, which the caller re-reads
//!   by key when it acts on them.
//! - **A record is at most [`MAX_RECORD_BYTES`]** of kind, key, body and index values (a
//!   DynamoDB item is at most 400 KB including attribute names); a bigger one is refused as
//!   [`StoreError::Invalid`] by [`check_record`], which every adapter calls.
//! - **Versions come back where they can be known atomically.** [`Store::put`] and
//!   [`Store::increment`] return the new version or count. [`Store::transact`] returns
//!   [`Write::new_version`] for each write: the version of a put conditioned on
//!   [`Condition::Absent`] (1) or [`Condition::Version`] (n+1), `None` for unconditional puts and
//!   deletes (DynamoDB's TransactWriteItems returns no attributes). A caller that needs the
//!   version of such a write reads it back, or conditions the write.
//! - Times in [`IndexKeys::time_ms`] are not negative (DynamoDB orders them as digit strings).

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A collection of records ("table" in the domain's terms). Open-ended: the domain declares its
/// kinds as constants next to the types stored under them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind(pub &'static str);

impl Kind {
    /// The kind's name as stored.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Secondary index attributes of a record. Each is optional; a record without an attribute does
/// not appear in the look-ups on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexKeys {
    /// The owning account, for per-account listings.
    pub account: Option<String>,
    /// A status (e.g. a task's state), for "all tasks that are running" look-ups.
    pub status: Option<String>,
    /// A time in Unix ms (e.g. a task's start, an event's time); orders every look-up.
    pub time_ms: Option<i64>,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The collection.
    pub kind: Kind,
    /// Unique within `kind`; at most 1024 bytes.
    pub key: String,
    /// The version this record has in the store; 0 for a record not yet written. Writes ignore it
    /// (use a [`Condition`]) and return the new one.
    pub version: u64,
    /// Secondary index attributes.
    pub index: IndexKeys,
    /// When the record stops existing, in Unix ms; `None` for never.
    pub expires_at_ms: Option<i64>,
    /// The payload.
    pub body: RecordBody,
}

impl Record {
    /// A record not yet written.
    pub fn new(kind: Kind, key: impl Into<String>, body: impl Into<RecordBody>) -> Self {
        Self {
            kind,
            key: key.into(),
            version: 0,
            index: IndexKeys::default(),
            expires_at_ms: None,
            body: body.into(),
        }
    }
}

/// A record's payload as JSON text. An entity is encoded straight to text on the way in and
/// decoded straight from it on the way out, with no `serde_json::Value` tree in between: on a
/// busy store those trees were a good part of all allocations.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBody(String);

impl RecordBody {
    /// Encodes `value`.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(Self)
    }

    /// A body an adapter reads back from where it stored one (it was JSON when written).
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Decodes the body.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// The body as a JSON value (`Null` when the text is not JSON).
    pub fn value(&self) -> serde_json::Value {
        self.decode().unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for RecordBody {
    fn from(value: serde_json::Value) -> Self {
        Self(value.to_string())
    }
}

impl PartialEq<serde_json::Value> for RecordBody {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.decode::<serde_json::Value>()
            .is_ok_and(|v| &v == other)
    }
}

impl std::fmt::Debug for RecordBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A precondition on a write, checked atomically with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Write unconditionally.
    Any,
    /// Only if no live (stored and not expired) record has this key.
    Absent,
    /// Only if the live record has exactly this version.
    Version(u64),
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// Create or replace a record.
    Put(Record, Condition),
    /// Remove a record; deleting a missing record with [`Condition::Any`] succeeds.
    Delete(Kind, String, Condition),
}

impl Write {
    /// The version the record has after this write succeeds, when the write alone tells it: 1
    /// for a put on [`Condition::Absent`], n+1 for a put on [`Condition::Version`]`(n)`; `None`
    /// for an unconditional put (which version it replaced is known neither to the caller nor,
    /// inside a DynamoDB transaction, to the adapter) and for a delete. What
    /// [`Store::transact`] returns for each write.
    pub fn new_version(&self) -> Option<u64> {
        match self {
            Write::Put(_, Condition::Absent) => Some(1),
            Write::Put(_, Condition::Version(n)) => Some(n + 1),
            Write::Put(_, Condition::Any) | Write::Delete(..) => None,
        }
    }
}

/// Largest record accepted, in bytes of kind, key, body and index values ([`record_bytes`]):
/// 350 KiB, which leaves a DynamoDB item (at most 400 KB with its attribute names, the key
/// repeated in the sort attribute of the look-ups, the version and the expiry) room to spare.
pub const MAX_RECORD_BYTES: usize = 350 * 1024;

/// The size of `record` as [`MAX_RECORD_BYTES`] counts it.
pub fn record_bytes(record: &Record) -> usize {
    let index = &record.index;
    record.kind.as_str().len()
        + record.key.len()
        + record.body.as_str().len()
        + index.account.as_ref().map_or(0, String::len)
        + index.status.as_ref().map_or(0, String::len)
}

/// Checks what every adapter refuses in a record to write, whatever its backend could store: a
/// record over [`MAX_RECORD_BYTES`] and a negative [`IndexKeys::time_ms`]. Adapters call it on
/// every record of `put` and `transact`, so code that works on one backend works on the others.
pub fn check_record(record: &Record) -> Result<(), StoreError> {
    let size = record_bytes(record);
    if size > MAX_RECORD_BYTES {
        return Err(StoreError::Invalid(format!(
            "record {}/{} is {size} bytes, over the {} KiB limit",
            record.kind,
            record.key,
            MAX_RECORD_BYTES / 1024
        )));
    }
    if let Some(t) = record.index.time_ms.filter(|t| *t < 0) {
        return Err(StoreError::Invalid(format!(
            "record {}/{} has a negative time_ms {t}",
            record.kind, record.key
        )));
    }
    Ok(())
}

/// Which secondary look-up a [`Query`] uses. Results are ordered by `IndexKeys::time_ms`, then key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryIndex {
    /// Every record of the kind that has a `time_ms`.
    All,
    /// Records of one account.
    Account(String),
    /// Records in one status.
    Status(String),
}

/// A page of a secondary look-up.
#[derive(Debug, Clone)]
pub struct Query {
    /// The collection.
    pub kind: Kind,
    /// The look-up.
    pub index: QueryIndex,
    /// Only records with `time_ms >= time_from_ms`.
    pub time_from_ms: Option<i64>,
    /// Only records with `time_ms < time_to_ms`.
    pub time_to_ms: Option<i64>,
    /// Newest first when true.
    pub descending: bool,
    /// At most this many records (1..=1000).
    pub limit: usize,
    /// Where the previous page stopped; `None` for the first page.
    pub cursor: Option<String>,
}

impl Query {
    /// The first page (of up to 100) of `index` over `kind`, oldest first, no time bounds.
    pub fn new(kind: Kind, index: QueryIndex) -> Self {
        Self {
            kind,
            index,
            time_from_ms: None,
            time_to_ms: None,
            descending: false,
            limit: 100,
            cursor: None,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page {
    /// The records, in index order.
    pub records: Vec<Record>,
    /// Pass as [`Query::cursor`] to get the next page; `None` when this was the last one.
    pub next_cursor: Option<String>,
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A [`Condition`] did not hold; nothing was written. `current` is the live version, if any.
    #[error("conditional write on {kind}/{key} failed (current version {current:?})")]
    ConditionFailed {
        kind: Kind,
        key: String,
        current: Option<u64>,
    },
    /// The request itself is invalid (key too long, bad cursor, limit out of range).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// A stored body did not decode as the expected type.
    #[error("stored record {kind}/{key} does not decode: {reason}")]
    Corrupt {
        kind: Kind,
        key: String,
        reason: String,
    },
    /// The backend failed (I/O, database, network).
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Durable typed records. See the module documentation for the model.
///
/// Guarantees every adapter gives (and `core/src/ports/contract.rs`, run by each adapter crate's
/// `tests/contract_*.rs`, checks):
/// - a write that returned `Ok` is durable: it survives a crash of the process at any later moment;
/// - conditional writes and [`Store::transact`] are atomic and linearizable per key;
/// - point reads ([`Store::get`], [`Store::version`]) see every write that returned before them;
///   look-ups ([`Store::query`]) may lag behind writes (see the module documentation);
/// - expired records are invisible to reads and queries at once, whatever their physical state;
/// - records over [`MAX_RECORD_BYTES`] are refused ([`check_record`]).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The live record, or `None`.
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Record>, StoreError>;

    /// The live record's version only, or `None`: how a reader holding a copy tells whether it
    /// changed without reading (and decoding) the whole record again.
    async fn version(&self, kind: Kind, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.get(kind, key).await?.map(|r| r.version))
    }

    /// Creates or replaces `record` if `condition` holds; returns the new version (1 when no
    /// live record had the key, even over an expired one).
    async fn put(&self, record: Record, condition: Condition) -> Result<u64, StoreError>;

    /// Removes a record if `condition` holds. Deleting a missing record with `Condition::Any` is
    /// not an error.
    async fn delete(&self, kind: Kind, key: &str, condition: Condition) -> Result<(), StoreError>;

    /// Applies every write or none (at most 100, DynamoDB's limit, one per key); returns
    /// [`Write::new_version`] of each write in order: the new version of conditioned puts, `None`
    /// for unconditional puts and deletes. On a failed condition the error names the first
    /// write (in order) whose condition failed.
    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<Option<u64>>, StoreError>;

    /// One page of a secondary look-up. Eventually consistent: it may miss a write made just
    /// before, or still show a record as it was (never one that expired).
    async fn query(&self, query: Query) -> Result<Page, StoreError>;

    /// Atomically adds one to the counter record `kind/key` (body `{"count": n}`), creating it
    /// at 1 when there is no live one, and sets its expiry; returns the new count. Counters under
    /// contention (an account's calls per window) must not need compare-and-set retries.
    async fn increment(
        &self,
        kind: Kind,
        key: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<u64, StoreError>;

    /// Physically removes records that expired before now; returns how many. Adapters whose
    /// backend expires records itself may do nothing.
    async fn purge_expired(&self) -> Result<u64, StoreError>;
}

/// A record with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The decoded body.
    pub value: T,
    /// The version to pass to [`Condition::Version`] for a compare-and-set.
    pub version: u64,
}

/// A domain type stored as a record of one kind.
pub trait Entity: Serialize + DeserializeOwned + Send + Sync {
    /// The collection it lives in.
    const KIND: Kind;
    /// Its key within the collection.
    fn key(&self) -> String;
    /// Its secondary index attributes.
    fn index(&self) -> IndexKeys {
        IndexKeys::default()
    }
    /// When it expires, in Unix ms.
    fn expires_at_ms(&self) -> Option<i64> {
        None
    }

    /// The record to write for this value.
    fn to_record(&self) -> Result<Record, StoreError> {
        let body = RecordBody::encode(self)
            .map_err(|e| StoreError::Invalid(format!("{} does not encode: {e}", Self::KIND)))?;
        Ok(Record {
            kind: Self::KIND,
            key: self.key(),
            version: 0,
            index: self.index(),
            expires_at_ms: self.expires_at_ms(),
            body,
        })
    }

    /// Decodes a record of this kind.
    fn from_record(record: Record) -> Result<Versioned<Self>, StoreError> {
        let version = record.version;
        let value = record.body.decode().map_err(|e| StoreError::Corrupt {
            kind: Self::KIND,
            key: record.key,
            reason: e.to_string(),
        })?;
        Ok(Versioned { value, version })
    }
}

/// Typed access to any [`Store`].
#[async_trait]
pub trait TypedStore {
    /// The live value of `key`, with its version.
    async fn load<T: Entity>(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError>;
    /// Writes `value` if `condition` holds; returns the new version.
    async fn save<T: Entity>(&self, value: &T, condition: Condition) -> Result<u64, StoreError>;
    /// Decodes a page of a look-up over `T`'s kind.
    async fn query_typed<T: Entity>(
        &self,
        query: Query,
    ) -> Result<(Vec<Versioned<T>>, Option<String>), StoreError>;
}

#[async_trait]
impl<S: Store + ?Sized> TypedStore for S {
    async fn load<T: Entity>(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError> {
        match self.get(T::KIND, key).await? {
            Some(record) => Ok(Some(T::from_record(record)?)),
            None => Ok(None),
        }
    }

    async fn save<T: Entity>(&self, value: &T, condition: Condition) -> Result<u64, StoreError> {
        self.put(value.to_record()?, condition).await
    }

    async fn query_typed<T: Entity>(
        &self,
        mut query: Query,
    ) -> Result<(Vec<Versioned<T>>, Option<String>), StoreError> {
        query.kind = T::KIND;
        let page = self.query(query).await?;
        let values = page
            .records
            .into_iter()
            .map(T::from_record)
            .collect::<Result<_, _>>()?;
        Ok((values, page.next_cursor))
    }
}
