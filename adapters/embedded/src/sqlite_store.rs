//! [`SqliteStore`]: the embedded [`Store`] on one SQLite file.
//!
//! One `records` table keyed by `(kind, key)` with a partial index per look-up. Every write
//! (`put`, `delete`, `transact`, `increment`, `purge_expired`) is an operation of the file's
//! group commit ([`SqliteDatabase`]): it runs in its own savepoint of a `BEGIN IMMEDIATE`
//! transaction shared with the writes issued at the same time, so the condition check and the
//! write are atomic against every other connection to the file, including other processes, and
//! a failed condition undoes only its own call. Reads use separate read connections. Expiry is
//! decided by the injected [`Clock`] at read time; [`Store::purge_expired`] removes the rows
//! later.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::sqlite_db::{OpError, SqliteDatabase};
use relaycast_core::ports::{
    Clock, Condition, IndexKeys, Kind, Page, Query, QueryIndex, Record, RecordBody, Store,
    StoreError, Write,
};

/// Longest key accepted, in bytes (DynamoDB's sort-key limit).
const MAX_KEY_BYTES: usize = 1024;
/// Most writes in one [`Store::transact`] (DynamoDB's limit).
const MAX_TRANSACT_WRITES: usize = 100;

/// The [`Store`] on a SQLite file (WAL, `synchronous=FULL`). Cheap to share behind an `Arc`;
/// concurrent writes share one commit (see [`SqliteDatabase`]), reads run on the blocking pool.
pub struct SqliteStore {
    db: SqliteDatabase,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl OpError for StoreError {
    fn backend(msg: String) -> Self {
        StoreError::Backend(msg)
    }

    fn wrote_nothing(&self) -> bool {
        !matches!(self, StoreError::Backend(_))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates its schema. The file may be
    /// shared with a [`super::SqliteQueue`]. Fails with [`StoreError::Backend`] naming the path
    /// when the directory is not writable or the file is not a SQLite database.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let db = SqliteDatabase::open(path).map_err(StoreError::Backend)?;
        Ok(Self::on(db, clock))
    }

    /// The store on an open database, whose writer it shares with whatever else uses `db`
    /// (e.g. a [`super::SqliteQueue`], as [`super::open_embedded`] sets them up).
    pub fn on(db: SqliteDatabase, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Runs the write `f` in the file's group commit; `now_ms` is read from the clock first so
    /// every check inside one call sees one instant. Answers once `f`'s writes are durable.
    async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
    {
        let now = self.clock.now_ms();
        let result = self.db.write(move |conn| f(conn, now)).await;
        result.map_err(|e| self.name_error(op, e))
    }

    /// Runs the read `f` on a read connection (on the calling thread: see [`SqliteDatabase::read`]).
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection, i64) -> Result<T, StoreError>,
    {
        let now = self.clock.now_ms();
        let result = self.db.read(|conn| f(conn, now));
        result.map_err(|e| self.name_error(op, e))
    }

    fn name_error(&self, op: &str, e: StoreError) -> StoreError {
        match e {
            StoreError::Backend(msg) => {
                StoreError::Backend(format!("{op} on {}: {msg}", self.db.path().display()))
            }
            other => other,
        }
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "key must be 1-{MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

fn to_i64(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version)
        .map_err(|_| StoreError::Invalid(format!("version {version} out of range")))
}

/// The version of the live record at `(kind, key)`, if any.
fn live_version(
    conn: &Connection,
    kind: &str,
    key: &str,
    now: i64,
) -> Result<Option<u64>, StoreError> {
    conn.prepare_cached(
        "SELECT version FROM records
         WHERE kind = ?1 AND key = ?2 AND (expires_at_ms IS NULL OR expires_at_ms > ?3)",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![kind, key, now], |r| r.get::<_, i64>(0))
            .optional()
    })
    .map_err(db_err)
    .map(|v| v.map(|v| v as u64))
}

fn check(
    condition: Condition,
    current: Option<u64>,
    kind: Kind,
    key: &str,
) -> Result<(), StoreError> {
    let ok = match condition {
        Condition::Any => true,
        Condition::Absent => current.is_none(),
        Condition::Version(v) => current == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::ConditionFailed {
            kind,
            key: key.to_string(),
            current,
        })
    }
}

/// Checks one write's record and condition against the live row; returns the row's version.
fn check_write(conn: &Connection, write: &Write, now: i64) -> Result<Option<u64>, StoreError> {
    match write {
        Write::Put(record, condition) => {
            relaycast_core::ports::check_record(record)?;
            let current = live_version(conn, record.kind.as_str(), &record.key, now)?;
            check(*condition, current, record.kind, &record.key)?;
            Ok(current)
        }
        Write::Delete(kind, key, condition) => {
            let current = live_version(conn, kind.as_str(), key, now)?;
            check(*condition, current, *kind, key)?;
            Ok(current)
        }
    }
}

/// Applies one checked write (`current`: the live row's version) inside an open transaction;
/// returns the new version (0 for a delete).
fn apply(conn: &Connection, write: &Write, current: Option<u64>) -> Result<u64, StoreError> {
    match write {
        Write::Put(record, _) => {
            // An expired row is gone: a write over it starts a new life at version 1.
            let version = current.map_or(1, |v| v + 1);
            // After earlier writes of the transaction: only a backend error may stop it here.
            let stored_version = to_i64(version).map_err(|e| StoreError::Backend(e.to_string()))?;
            conn.prepare_cached(
                "INSERT INTO records (kind, key, version, account, status, time_ms, expires_at_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (kind, key) DO UPDATE SET
                     version = excluded.version, account = excluded.account, status = excluded.status,
                     time_ms = excluded.time_ms, expires_at_ms = excluded.expires_at_ms, body = excluded.body",
            )
            .map_err(db_err)?
            .execute(params![
                record.kind.as_str(),
                record.key,
                stored_version,
                record.index.account,
                record.index.status,
                record.index.time_ms,
                record.expires_at_ms,
                record.body.as_str()
            ])
            .map_err(db_err)?;
            Ok(version)
        }
        Write::Delete(kind, key, _) => {
            conn.prepare_cached("DELETE FROM records WHERE kind = ?1 AND key = ?2")
                .map_err(db_err)?
                .execute(params![kind.as_str(), key])
                .map_err(db_err)?;
            Ok(0)
        }
    }
}

fn write_key(write: &Write) -> (Kind, &str) {
    match write {
        Write::Put(r, _) => (r.kind, r.key.as_str()),
        Write::Delete(k, key, _) => (*k, key.as_str()),
    }
}

/// Applies `writes` in order inside the operation's savepoint: all of them or, on any error
/// (which rolls the savepoint back), none.
/// Applies `writes` inside an open transaction once every one of their conditions holds:
/// checked first, so a failed condition or an invalid record returns before anything is
/// written (what the group commit counts on).
fn transact_in(conn: &Connection, writes: &[Write], now: i64) -> Result<Vec<u64>, StoreError> {
    let mut current = Vec::with_capacity(writes.len());
    for write in writes {
        current.push(check_write(conn, write, now)?);
    }
    writes
        .iter()
        .zip(current)
        .map(|(w, current)| apply(conn, w, current))
        .collect()
}

const RECORD_COLUMNS: &str = "key, version, account, status, time_ms, expires_at_ms, body";

fn read_record(kind: Kind, row: &Row<'_>) -> rusqlite::Result<Result<Record, StoreError>> {
    let key: String = row.get(0)?;
    let body: String = row.get(6)?;
    let index = IndexKeys {
        account: row.get(2)?,
        status: row.get(3)?,
        time_ms: row.get(4)?,
    };
    let version = row.get::<_, i64>(1)? as u64;
    let expires_at_ms = row.get(5)?;
    // Not parsed here: the entity decoding it tells a corrupt body (`StoreError::Corrupt`).
    Ok(Ok(Record {
        kind,
        key,
        version,
        index,
        expires_at_ms,
        body: RecordBody::from_stored(body),
    }))
}

/// The opaque paging cursor: hex of `time_ms:key` of the last record returned. Positional, so
/// records inserted between pages neither repeat nor shift the pages already read.
fn encode_cursor(time_ms: i64, key: &str) -> String {
    hex::encode(format!("{time_ms}:{key}"))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    let bad = || StoreError::Invalid(format!("bad cursor {cursor:?}"));
    let raw = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (time, key) = text.split_once(':').ok_or_else(bad)?;
    Ok((time.parse().map_err(|_| bad())?, key.to_string()))
}

/// The SQL and arguments of one page of a look-up (one more row than the limit, to tell whether
/// another page follows).
fn query_sql(q: &Query, now: i64) -> Result<(String, Vec<rusqlite::types::Value>), StoreError> {
    if q.limit == 0 || q.limit > 1000 {
        return Err(StoreError::Invalid(format!(
            "limit must be 1..=1000, got {}",
            q.limit
        )));
    }
    // Look-ups only see records with a time_ms, like a DynamoDB GSI whose sort key is missing.
    let mut sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE kind = ?1 AND time_ms IS NOT NULL
         AND (expires_at_ms IS NULL OR expires_at_ms > ?2)"
    );
    let mut args: Vec<rusqlite::types::Value> =
        vec![q.kind.as_str().to_string().into(), now.into()];
    // Binds a value and names its placeholder.
    fn bind(
        args: &mut Vec<rusqlite::types::Value>,
        v: impl Into<rusqlite::types::Value>,
    ) -> String {
        args.push(v.into());
        format!("?{}", args.len())
    }
    match &q.index {
        QueryIndex::All => {}
        QueryIndex::Account(a) => {
            sql.push_str(&format!(" AND account = {}", bind(&mut args, a.clone())))
        }
        QueryIndex::Status(s) => {
            sql.push_str(&format!(" AND status = {}", bind(&mut args, s.clone())))
        }
    }
    if let Some(from) = q.time_from_ms {
        sql.push_str(&format!(" AND time_ms >= {}", bind(&mut args, from)));
    }
    if let Some(to) = q.time_to_ms {
        sql.push_str(&format!(" AND time_ms < {}", bind(&mut args, to)));
    }
    if let Some(cursor) = &q.cursor {
        let (t, k) = decode_cursor(cursor)?;
        let op = if q.descending { "<" } else { ">" };
        let (t, k) = (bind(&mut args, t), bind(&mut args, k));
        sql.push_str(&format!(" AND (time_ms, key) {op} ({t}, {k})"));
    }
    let dir = if q.descending { "DESC" } else { "ASC" };
    sql.push_str(&format!(
        " ORDER BY time_ms {dir}, key {dir} LIMIT {}",
        q.limit + 1
    ));
    Ok((sql, args))
}

fn query_blocking(conn: &Connection, q: &Query, now: i64) -> Result<Page, StoreError> {
    let (sql, args) = query_sql(q, now)?;
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |row| {
            read_record(q.kind, row)
        })
        .map_err(db_err)?;
    let mut records = Vec::with_capacity(q.limit.min(128));
    for row in rows {
        records.push(row.map_err(db_err)??);
    }
    let next_cursor = if records.len() > q.limit {
        records.truncate(q.limit);
        records
            .last()
            .map(|r| encode_cursor(r.index.time_ms.unwrap_or_default(), &r.key))
    } else {
        None
    };
    Ok(Page {
        records,
        next_cursor,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        self.read("get", |conn, now| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE kind = ?1 AND key = ?2 AND (expires_at_ms IS NULL OR expires_at_ms > ?3)"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
            let found = stmt
                .query_row(params![kind.as_str(), key, now], |row| {
                    read_record(kind, row)
                })
                .optional()
                .map_err(db_err)?;
            found.transpose()
        })
        .await
    }

    async fn version(&self, kind: Kind, key: &str) -> Result<Option<u64>, StoreError> {
        validate_key(key)?;
        self.read("version", |conn, now| {
            live_version(conn, kind.as_str(), key, now)
        })
        .await
    }

    async fn put(&self, record: Record, condition: Condition) -> Result<u64, StoreError> {
        validate_key(&record.key)?;
        let writes = vec![Write::Put(record, condition)];
        let versions = self
            .write("put", move |conn, now| transact_in(conn, &writes, now))
            .await?;
        Ok(versions.first().copied().unwrap_or_default())
    }

    async fn delete(&self, kind: Kind, key: &str, condition: Condition) -> Result<(), StoreError> {
        validate_key(key)?;
        let writes = vec![Write::Delete(kind, key.to_string(), condition)];
        self.write("delete", move |conn, now| transact_in(conn, &writes, now))
            .await?;
        Ok(())
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<Option<u64>>, StoreError> {
        if writes.len() > MAX_TRANSACT_WRITES {
            return Err(StoreError::Invalid(format!(
                "a transaction holds at most {MAX_TRANSACT_WRITES} writes, got {}",
                writes.len()
            )));
        }
        // DynamoDB refuses two writes on one item in a transaction; refusing here too keeps code
        // that works embedded working on AWS.
        let mut seen = HashSet::new();
        for w in &writes {
            let (kind, key) = write_key(w);
            validate_key(key)?;
            if !seen.insert((kind, key)) {
                return Err(StoreError::Invalid(format!(
                    "transaction writes {kind}/{key} twice"
                )));
            }
        }
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let versions = writes.iter().map(Write::new_version).collect();
        self.write("transact", move |conn, now| transact_in(conn, &writes, now))
            .await?;
        Ok(versions)
    }

    async fn increment(
        &self,
        kind: Kind,
        key: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<u64, StoreError> {
        validate_key(key)?;
        let key = key.to_string();
        self.write("increment", move |conn, now| {
            let current: Option<(i64, String)> = conn
                .prepare_cached(
                    "SELECT version, body FROM records
                     WHERE kind = ?1 AND key = ?2 AND (expires_at_ms IS NULL OR expires_at_ms > ?3)",
                )
                .and_then(|mut s| {
                    s.query_row(params![kind.as_str(), key, now], |r| Ok((r.get(0)?, r.get(1)?))).optional()
                })
                .map_err(db_err)?;
            let (version, count) = match current {
                Some((version, body)) => {
                    let count = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|b| b["count"].as_u64())
                        .ok_or_else(|| StoreError::Corrupt {
                            kind,
                            key: key.clone(),
                            reason: "not a counter".into(),
                        })?;
                    (version + 1, count + 1)
                }
                None => (1, 1),
            };
            conn.prepare_cached(
                "INSERT INTO records (kind, key, version, account, status, time_ms, expires_at_ms, body)
                 VALUES (?1, ?2, ?3, NULL, NULL, NULL, ?4, ?5)
                 ON CONFLICT (kind, key) DO UPDATE SET
                     version = excluded.version, expires_at_ms = excluded.expires_at_ms, body = excluded.body",
            )
            .map_err(db_err)?
            .execute(params![
                kind.as_str(),
                key,
                version,
                expires_at_ms,
                serde_json::json!({ "count": count }).to_string()
            ])
            .map_err(db_err)?;
            Ok(count)
        })
        .await
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        self.read("query", move |conn, now| query_blocking(conn, &query, now))
            .await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.write("purge_expired", move |conn, now| {
            let n = conn
                .execute(
                    "DELETE FROM records WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
                    params![now],
                )
                .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::sqlite_common::open_connection;
    use super::*;

    /// Every look-up must be served by its index, not a scan of the kind.
    #[test]
    fn lookups_use_their_index() {
        let dir = tempfile::TempDir::new().unwrap();
        let conn = open_connection(&dir.path().join("db")).unwrap();
        let kind = Kind("k");
        let cases = [
            (QueryIndex::Account("a".into()), "records_by_account"),
            (QueryIndex::Status("s".into()), "records_by_status"),
            (QueryIndex::All, "records_by_time"),
        ];
        for (index, expected) in cases {
            for descending in [false, true] {
                let mut q = Query::new(kind, index.clone());
                q.descending = descending;
                q.time_from_ms = Some(1);
                q.cursor = Some(encode_cursor(5, "x"));
                let (sql, args) = query_sql(&q, 0).unwrap();
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                let plan: Vec<String> = stmt
                    .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let plan = plan.join("; ");
                assert!(
                    plan.contains(expected),
                    "{index:?} descending={descending}: {plan}"
                );
                assert!(!plan.contains("TEMP B-TREE"), "{index:?} sorts: {plan}");
            }
        }
    }
}

#[cfg(test)]
mod group_commit_tests {
    use std::task::{Context, Poll};
    use std::time::Duration;

    use futures::future::BoxFuture;
    use futures::FutureExt;
    use serde_json::json;

    use super::*;
    use crate::SqliteQueue;
    use relaycast_core::ports::{ManualClock, Queue};

    fn rec(key: &str, body: serde_json::Value) -> Record {
        Record::new(Kind("g"), key, body)
    }

    /// Polls `fut` once, which hands its operation to the writer, and keeps it for later.
    fn enqueue<'a, T>(fut: BoxFuture<'a, T>) -> BoxFuture<'a, T> {
        let mut fut = fut;
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(
            matches!(fut.poll_unpin(&mut cx), Poll::Pending),
            "answered before the group ran"
        );
        fut
    }

    /// Operations that fail (a condition, a whole transaction) inside one group commit are
    /// answered with their own error and leave no trace, while the rest of the group, store
    /// writes and a queue send on the same database, commits once; later operations of a
    /// group see the earlier ones' writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_in_a_group_fails_alone() {
        let dir = tempfile::TempDir::new().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let db = SqliteDatabase::open(&dir.path().join("relaycast.db")).unwrap();
        let store = SqliteStore::on(db.clone(), Arc::new(clock.clone()));
        let queue = SqliteQueue::on(db.clone(), Arc::new(clock.clone()), 3).unwrap();
        store
            .put(rec("taken", json!(0)), Condition::Absent)
            .await
            .unwrap();
        store
            .put(rec("cas", json!(0)), Condition::Absent)
            .await
            .unwrap();

        // Hold the writer inside a group until everything below is queued behind it.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (running_tx, running) = tokio::sync::oneshot::channel::<()>();
        let held = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(move |_| {
                    running_tx.send(()).unwrap();
                    gate.recv().map_err(|e| StoreError::Backend(e.to_string()))
                })
                .await
            }
        });
        running.await.unwrap();
        let commits_before = db.commits();

        let new = enqueue(store.put(rec("new", json!("a")), Condition::Absent));
        let taken = enqueue(store.put(rec("taken", json!("b")), Condition::Absent));
        let failed_tx = enqueue(store.transact(vec![
            Write::Put(rec("t1", json!("c")), Condition::Absent),
            Write::Put(rec("cas", json!("c")), Condition::Version(7)),
        ]));
        let cas = enqueue(store.put(rec("cas", json!("d")), Condition::Version(1)));
        let missing = enqueue(store.delete(Kind("g"), "missing", Condition::Version(3)));
        let counter = enqueue(store.increment(Kind("g"), "calls", None));
        let sent = enqueue(queue.send("jobs", "m", Duration::ZERO));
        let ok_tx = enqueue(store.transact(vec![
            Write::Put(rec("t2", json!("h")), Condition::Absent),
            Write::Delete(Kind("g"), "taken".into(), Condition::Version(1)),
        ]));
        let new_again = enqueue(store.put(rec("new", json!("i")), Condition::Absent));

        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert_eq!(new.await.unwrap(), 1);
        assert!(matches!(
            taken.await,
            Err(StoreError::ConditionFailed {
                current: Some(1),
                ..
            })
        ));
        match failed_tx.await {
            Err(StoreError::ConditionFailed {
                key,
                current: Some(1),
                ..
            }) => assert_eq!(key, "cas"),
            other => panic!("{other:?}"),
        }
        assert_eq!(cas.await.unwrap(), 2);
        assert!(matches!(
            missing.await,
            Err(StoreError::ConditionFailed { current: None, .. })
        ));
        assert_eq!(counter.await.unwrap(), 1);
        sent.await.unwrap();
        assert_eq!(ok_tx.await.unwrap(), vec![Some(1), None]);
        assert!(matches!(
            new_again.await,
            Err(StoreError::ConditionFailed {
                current: Some(1),
                ..
            })
        ));
        // The held group, then one group for all nine.
        assert_eq!(db.commits(), commits_before + 2);

        let get = |key: &'static str| {
            let store = &store;
            async move {
                store
                    .get(Kind("g"), key)
                    .await
                    .unwrap()
                    .map(|r| (r.version, r.body.value()))
            }
        };
        assert_eq!(get("new").await, Some((1, json!("a"))));
        assert_eq!(get("taken").await, None);
        assert_eq!(get("t1").await, None, "a failed transaction leaves nothing");
        assert_eq!(get("cas").await, Some((2, json!("d"))));
        assert_eq!(get("t2").await, Some((1, json!("h"))));
        assert_eq!(get("calls").await, Some((1, json!({ "count": 1 }))));
        assert_eq!(queue.stats("jobs").await.unwrap().visible, 1);
    }

    /// A write that panics is answered with an error; the writer lives on.
    #[tokio::test]
    async fn a_panicking_operation_does_not_stop_the_writer() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = SqliteDatabase::open(&dir.path().join("relaycast.db")).unwrap();
        let store = SqliteStore::on(db.clone(), Arc::new(ManualClock::new(0)));
        let r: Result<(), StoreError> = db.write(|_| panic!("boom")).await;
        assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
        assert_eq!(
            store
                .put(rec("k", json!(1)), Condition::Absent)
                .await
                .unwrap(),
            1
        );
    }

    /// Checkpoints run beside the writer, yet under writes that never pause the WAL still
    /// starts over: it stays near its reset size instead of growing with everything written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_constant_writes() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("relaycast.db");
        let store = Arc::new(SqliteStore::on(
            SqliteDatabase::open(&path).unwrap(),
            Arc::new(ManualClock::new(0)),
        ));
        let filler = "x".repeat(2000);
        // About 60 MB of records and index entries, from 32 writers at once.
        let writers: Vec<_> = (0..32)
            .map(|w| {
                let store = Arc::clone(&store);
                let filler = filler.clone();
                tokio::spawn(async move {
                    for i in 0..600 {
                        let writes = (0..4)
                            .map(|j| {
                                Write::Put(
                                    rec(&format!("{w}-{i}-{j}"), json!({ "f": filler })),
                                    Condition::Absent,
                                )
                            })
                            .collect();
                        store.transact(writes).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("relaycast.db-wal"))
            .unwrap()
            .len();
        let db = std::fs::metadata(&path).unwrap().len();
        assert!(
            db > 40 << 20,
            "the records reached the database file: {db} bytes"
        );
        assert!(wal < 32 << 20, "WAL of {wal} bytes after writing {db}");
        assert!(store.get(Kind("g"), "31-599-3").await.unwrap().is_some());
    }
}
