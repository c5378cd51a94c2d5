//! [`DynamoStore`]: the [`Store`] port on the one DynamoDB table of `infra/relaycast.yaml`.
//!
//! One item per record, exactly as `infra/README.md` lists them: `pk` = `<kind>#<key>`, `sk` =
//! `record`, `version` (number), `body` (the JSON text), `kind`, and, only when the record has
//! them, `account_pk` = `<kind>#<account>`, `status_pk` = `<kind>#<status>`, `time_sk` = the
//! time as 20 digits, `#`, the key (so look-ups come ordered by time, then key, as on SQLite).
//! An expiring record carries `expires_at` (Unix seconds, for the TTL sweeper) and
//! `expires_at_ms`, which every read and condition checks against the adapter's [`Clock`], so an
//! expired record is gone at once, whatever the sweeper has done yet. A counter
//! ([`Store::increment`]) keeps its count in a number attribute `count` instead of a `body`,
//! since `ADD` cannot edit JSON text; reads give it back as the body `{"count": n}`.
//!
//! Every [`Condition`] is a condition expression on `version` and `expires_at_ms`, and a failed
//! one comes back with the item (`ReturnValuesOnConditionCheckFailure`), which tells the current
//! version without another read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
    TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use relaycast_core::config::AwsSettings;
use relaycast_core::ports::{
    check_record, Clock, Condition, IndexKeys, Kind, Page, Query, QueryIndex, Record, RecordBody,
    Store, StoreError, Write,
};

use crate::AwsError;

type Item = HashMap<String, AttributeValue>;

/// The sort key of every record item (the table's key is `pk` + `sk`, room for other item
/// types under one partition later).
const SK: &str = "record";
/// Longest key accepted, in bytes (as on SQLite; `pk` itself may be 2048).
const MAX_KEY_BYTES: usize = 1024;
/// Most writes in one [`Store::transact`] (DynamoDB's limit).
const MAX_TRANSACT_WRITES: usize = 100;
/// Largest TransactWriteItems request DynamoDB takes, in bytes of items.
const MAX_TRANSACT_BYTES: usize = 4_000_000;
/// How often a write retries when its own mode guess (live or expired record) was wrong, or a
/// transaction met a concurrent one, before it reports contention.
const MAX_ATTEMPTS: usize = 8;

/// The look-ups of `infra/relaycast.yaml`: (index, partition attribute) per [`QueryIndex`].
const BY_ACCOUNT: (&str, &str) = ("records_by_account", "account_pk");
const BY_STATUS: (&str, &str) = ("records_by_status", "status_pk");
const BY_TIME: (&str, &str) = ("records_by_time", "kind");

/// Placeholders of attribute names in expressions. None is a prefix of another, so which ones an
/// expression uses is found by searching its text (DynamoDB refuses unused names).
const NAMES: [(&str, &str); 10] = [
    ("#pk", "pk"),
    ("#ver", "version"),
    ("#body", "body"),
    ("#kind", "kind"),
    ("#acc", "account_pk"),
    ("#sts", "status_pk"),
    ("#tsk", "time_sk"),
    ("#ttl", "expires_at"),
    ("#exp", "expires_at_ms"),
    ("#cnt", "count"),
];

/// No live record: never written, deleted, or expired by the clock.
const DEAD_OR_ABSENT: &str = "attribute_not_exists(#pk) OR #exp <= :now";
/// A live record, or none at all (but not an expired one, which must start over at version 1).
const LIVE_OR_ABSENT: &str =
    "attribute_not_exists(#pk) OR attribute_not_exists(#exp) OR #exp > :now";
/// The live record has version `:expected`.
const LIVE_AT_VERSION: &str = "#ver = :expected AND (attribute_not_exists(#exp) OR #exp > :now)";
/// A live counter, or none at all.
const LIVE_COUNTER_OR_ABSENT: &str =
    "attribute_not_exists(#pk) OR (attribute_exists(#cnt) AND (attribute_not_exists(#exp) OR #exp > :now))";

/// The [`Store`] on a DynamoDB table laid out as `infra/relaycast.yaml` makes it. Cheap to share
/// behind an `Arc`; the client pools its connections.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// The store on table `table` through `client`; expiry is decided by `clock`.
    pub fn new(client: Client, table: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
        }
    }

    /// The store on the table `settings` name, with a client from [`crate::sdk_config`]. Makes no
    /// request: a missing table shows at the first operation, naming it.
    pub async fn open(settings: &AwsSettings, clock: Arc<dyn Clock>) -> Result<Self, AwsError> {
        if settings.table.is_empty() {
            return Err(AwsError::Open {
                what: "DynamoDB table",
                reason: "no table name in the [aws] settings".into(),
            });
        }
        let client = Client::new(&crate::sdk_config(settings).await);
        Ok(Self::new(client, settings.table.clone(), clock))
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn backend<E, R>(&self, op: &str, e: SdkError<E, R>) -> StoreError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        StoreError::Backend(format!(
            "DynamoDB {op} on table {}: {}",
            self.table,
            DisplayErrorContext(&e)
        ))
    }

    fn key(&self, kind: Kind, key: &str) -> Result<Item, StoreError> {
        Ok(HashMap::from([
            ("pk".to_string(), s(pk(kind, key)?)),
            ("sk".to_string(), s(SK)),
        ]))
    }

    /// Runs one single-item write; a failed condition comes back as [`Failure::Condition`] with
    /// the item as it was.
    async fn run(&self, op: Op) -> Result<Item, Failure> {
        let names = op.names();
        match op {
            Op::Put {
                item,
                condition,
                values,
            } => self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await
                .map(|_| Item::new())
                .map_err(|e| match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => {
                        Failure::Condition(c.item().cloned())
                    }
                    _ => Failure::Backend(self.backend("PutItem", e)),
                }),
            Op::Update {
                key,
                update,
                condition,
                values,
            } => self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression(update)
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(Some(values))
                .return_values(ReturnValue::UpdatedNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await
                .map(|out| out.attributes.unwrap_or_default())
                .map_err(|e| match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        Failure::Condition(c.item().cloned())
                    }
                    _ => Failure::Backend(self.backend("UpdateItem", e)),
                }),
            Op::Delete {
                key,
                condition,
                values,
            } => self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .set_condition_expression(condition.map(str::to_string))
                .set_expression_attribute_names(names)
                .set_expression_attribute_values((!values.is_empty()).then_some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await
                .map(|_| Item::new())
                .map_err(|e| match e.as_service_error() {
                    Some(DeleteItemError::ConditionalCheckFailedException(c)) => {
                        Failure::Condition(c.item().cloned())
                    }
                    _ => Failure::Backend(self.backend("DeleteItem", e)),
                }),
        }
    }

    /// The live item of `kind/key` (consistent read), with only `projection` when given.
    async fn get_item(
        &self,
        kind: Kind,
        key: &str,
        projection: Option<&str>,
    ) -> Result<Option<Item>, StoreError> {
        check_key(key)?;
        let now = self.clock.now_ms();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(kind, key)?))
            .consistent_read(true)
            .set_projection_expression(projection.map(str::to_string))
            .set_expression_attribute_names(projection.and_then(names_in))
            .send()
            .await
            .map_err(|e| self.backend("GetItem", e))?;
        Ok(out.item.filter(|item| is_live(item, now)))
    }
}

/// How one put is written, which depends on its [`Condition`] and, for an unconditional put, on
/// whether an expired item is in the way (an expired record's version does not carry on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutMode {
    /// `UpdateItem` that `ADD`s one to the version of a live record or of none (1).
    Bump,
    /// `PutItem` at version 1 where no live record is.
    Fresh,
    /// `PutItem` at version n+1 over the live record at version n.
    Replace(u64),
}

impl PutMode {
    fn of(condition: Condition) -> Self {
        match condition {
            Condition::Any => PutMode::Bump,
            Condition::Absent => PutMode::Fresh,
            Condition::Version(n) => PutMode::Replace(n),
        }
    }
}

/// One single-item write, as a request of its own or an element of a transaction.
#[derive(Debug, Clone)]
enum Op {
    Put {
        item: Item,
        condition: &'static str,
        values: Item,
    },
    Update {
        key: Item,
        update: String,
        condition: &'static str,
        values: Item,
    },
    Delete {
        key: Item,
        condition: Option<&'static str>,
        values: Item,
    },
}

impl Op {
    /// The attribute names its expressions use.
    fn names(&self) -> Option<HashMap<String, String>> {
        match self {
            Op::Put { condition, .. } => names_in(condition),
            Op::Update {
                update, condition, ..
            } => names_in(&format!("{update} {condition}")),
            Op::Delete { condition, .. } => condition.and_then(names_in),
        }
    }

    fn into_transact(self, table: &str) -> Result<TransactWriteItem, StoreError> {
        let names = self.names();
        let built = match self {
            Op::Put {
                item,
                condition,
                values,
            } => Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map(|p| TransactWriteItem::builder().put(p).build()),
            Op::Update {
                key,
                update,
                condition,
                values,
            } => Update::builder()
                .table_name(table)
                .set_key(Some(key))
                .update_expression(update)
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map(|u| TransactWriteItem::builder().update(u).build()),
            Op::Delete {
                key,
                condition,
                values,
            } => Delete::builder()
                .table_name(table)
                .set_key(Some(key))
                .set_condition_expression(condition.map(str::to_string))
                .set_expression_attribute_names(names)
                .set_expression_attribute_values((!values.is_empty()).then_some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map(|d| TransactWriteItem::builder().delete(d).build()),
        };
        built.map_err(|e| StoreError::Backend(format!("DynamoDB transaction item: {e}")))
    }
}

/// Why a single-item write did not happen.
enum Failure {
    /// Its condition did not hold; the item as it was, when there was one.
    Condition(Option<Item>),
    /// Anything else, already named.
    Backend(StoreError),
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn names_in(expression: &str) -> Option<HashMap<String, String>> {
    let names: HashMap<String, String> = NAMES
        .iter()
        .filter(|(placeholder, _)| expression.contains(placeholder))
        .map(|(p, a)| (p.to_string(), a.to_string()))
        .collect();
    (!names.is_empty()).then_some(names)
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "key must be 1-{MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// `<kind>#<key>`. A `#` in a kind would let two records share an item, so it is refused (the
/// domain's kinds are constants without one).
fn pk(kind: Kind, key: &str) -> Result<String, StoreError> {
    if kind.as_str().contains('#') || kind.as_str().is_empty() {
        return Err(StoreError::Invalid(format!(
            "kind {kind:?} must be non-empty and without '#'"
        )));
    }
    Ok(format!("{kind}#{key}"))
}

/// The 20-digit time, `#`, the key: sorts by time, then key, as strings.
fn time_sk(time_ms: i64, key: &str) -> String {
    format!("{time_ms:020}#{key}")
}

/// The TTL attribute: whole seconds rounded up, so the sweeper never removes an item before its
/// expiry in ms (reads hide it from that instant anyway).
fn ttl_seconds(expires_at_ms: i64) -> i64 {
    expires_at_ms.div_euclid(1000) + i64::from(expires_at_ms.rem_euclid(1000) != 0)
}

fn number<T: std::str::FromStr>(item: &Item, attr: &str) -> Option<T> {
    item.get(attr)?.as_n().ok()?.parse().ok()
}

fn string<'a>(item: &'a Item, attr: &str) -> Option<&'a str> {
    item.get(attr)?.as_s().ok().map(String::as_str)
}

fn is_live(item: &Item, now: i64) -> bool {
    number::<i64>(item, "expires_at_ms").is_none_or(|e| e > now)
}

/// The version of `item` if it is a live record.
fn live_version(item: Option<&Item>, now: i64) -> Option<u64> {
    item.filter(|i| is_live(i, now))
        .and_then(|i| number(i, "version"))
}

/// The attributes every record item has besides its key and version, with their values, in
/// `SET` order; `None` values are attributes the record does not have.
fn record_attributes(
    record: &Record,
) -> Result<Vec<(&'static str, Option<AttributeValue>)>, StoreError> {
    let kind = record.kind;
    let index = &record.index;
    Ok(vec![
        ("#body", Some(s(record.body.as_str()))),
        ("#kind", Some(s(kind.as_str()))),
        (
            "#acc",
            index.account.as_ref().map(|a| s(format!("{kind}#{a}"))),
        ),
        (
            "#sts",
            index.status.as_ref().map(|st| s(format!("{kind}#{st}"))),
        ),
        ("#tsk", index.time_ms.map(|t| s(time_sk(t, &record.key)))),
        ("#ttl", record.expires_at_ms.map(|e| n(ttl_seconds(e)))),
        ("#exp", record.expires_at_ms.map(n)),
    ])
}

fn attribute_name(placeholder: &str) -> &'static str {
    NAMES
        .iter()
        .find(|(p, _)| *p == placeholder)
        .map(|(_, a)| *a)
        .unwrap_or("")
}

/// The whole item of `record` at `version`.
fn record_item(record: &Record, version: u64) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        ("pk".to_string(), s(pk(record.kind, &record.key)?)),
        ("sk".to_string(), s(SK)),
        ("version".to_string(), n(version)),
    ]);
    for (placeholder, value) in record_attributes(record)? {
        if let Some(value) = value {
            item.insert(attribute_name(placeholder).to_string(), value);
        }
    }
    Ok(item)
}

/// The write of `record` in `mode`, its conditions checked at `now`.
fn put_op(record: &Record, mode: PutMode, now: i64) -> Result<Op, StoreError> {
    let now_value = (":now".to_string(), n(now));
    Ok(match mode {
        PutMode::Fresh => Op::Put {
            item: record_item(record, 1)?,
            condition: DEAD_OR_ABSENT,
            values: HashMap::from([now_value]),
        },
        PutMode::Replace(v) => Op::Put {
            item: record_item(record, v + 1)?,
            condition: LIVE_AT_VERSION,
            values: HashMap::from([now_value, (":expected".to_string(), n(v))]),
        },
        PutMode::Bump => {
            // Every attribute is set or removed, so the item is the record's whatever it was.
            let mut values = HashMap::from([now_value, (":one".to_string(), n(1))]);
            let mut set = Vec::new();
            let mut remove = vec!["#cnt"];
            for (placeholder, value) in record_attributes(record)? {
                match value {
                    Some(value) => {
                        let name = format!(":{}", &placeholder[1..]);
                        set.push(format!("{placeholder} = {name}"));
                        values.insert(name, value);
                    }
                    None => remove.push(placeholder),
                }
            }
            Op::Update {
                key: HashMap::from([
                    ("pk".to_string(), s(pk(record.kind, &record.key)?)),
                    ("sk".to_string(), s(SK)),
                ]),
                update: format!(
                    "SET {} ADD #ver :one REMOVE {}",
                    set.join(", "),
                    remove.join(", ")
                ),
                condition: LIVE_OR_ABSENT,
                values,
            }
        }
    })
}

fn delete_op(key: Item, condition: Condition, now: i64) -> Op {
    let now_value = (":now".to_string(), n(now));
    match condition {
        Condition::Any => Op::Delete {
            key,
            condition: None,
            values: Item::new(),
        },
        Condition::Absent => Op::Delete {
            key,
            condition: Some(DEAD_OR_ABSENT),
            values: HashMap::from([now_value]),
        },
        Condition::Version(v) => Op::Delete {
            key,
            condition: Some(LIVE_AT_VERSION),
            values: HashMap::from([now_value, (":expected".to_string(), n(v))]),
        },
    }
}

/// The whole counter item at `count`, version `version`.
fn counter_item(
    kind: Kind,
    key: &str,
    count: u64,
    version: u64,
    expires_at_ms: Option<i64>,
) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        ("pk".to_string(), s(pk(kind, key)?)),
        ("sk".to_string(), s(SK)),
        ("kind".to_string(), s(kind.as_str())),
        ("count".to_string(), n(count)),
        ("version".to_string(), n(version)),
    ]);
    if let Some(e) = expires_at_ms {
        item.insert("expires_at".into(), n(ttl_seconds(e)));
        item.insert("expires_at_ms".into(), n(e));
    }
    Ok(item)
}

/// The record an item holds.
fn item_record(kind: Kind, item: &Item) -> Result<Record, StoreError> {
    let pk = string(item, "pk").unwrap_or_default();
    let prefix = format!("{kind}#");
    let corrupt = |key: &str, reason: &str| StoreError::Corrupt {
        kind,
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let key = pk
        .strip_prefix(&prefix)
        .ok_or_else(|| corrupt(pk, "pk is not <kind>#<key>"))?;
    let version = number(item, "version").ok_or_else(|| corrupt(key, "no version"))?;
    let body = match (string(item, "body"), number::<u64>(item, "count")) {
        (Some(body), _) => RecordBody::from_stored(body.to_string()),
        (None, Some(count)) => RecordBody::from(serde_json::json!({ "count": count })),
        (None, None) => return Err(corrupt(key, "no body")),
    };
    let unprefix =
        |attr: &str| string(item, attr).map(|v| v.strip_prefix(&prefix).unwrap_or(v).to_string());
    let time_ms = match string(item, "time_sk") {
        Some(t) => Some(
            t.get(..20)
                .and_then(|digits| digits.parse().ok())
                .ok_or_else(|| corrupt(key, "time_sk is not 20 digits"))?,
        ),
        None => None,
    };
    Ok(Record {
        kind,
        key: key.to_string(),
        version,
        index: IndexKeys {
            account: unprefix("account_pk"),
            status: unprefix("status_pk"),
            time_ms,
        },
        expires_at_ms: number(item, "expires_at_ms"),
        body,
    })
}

/// About what DynamoDB counts for the item of `record`: the record, plus the key again in
/// `time_sk`, the kind in the index partitions, and the attribute names and numbers.
fn item_bytes(record: &Record) -> usize {
    relaycast_core::ports::record_bytes(record)
        + record.key.len()
        + 3 * record.kind.as_str().len()
        + 160
}

fn write_key(write: &Write) -> (Kind, &str) {
    match write {
        Write::Put(r, _) => (r.kind, r.key.as_str()),
        Write::Delete(k, key, _) => (*k, key.as_str()),
    }
}

/// The opaque paging cursor: hex of the `time_sk` of the last record returned, which gives back
/// the whole `ExclusiveStartKey` of the next page (positional, as on SQLite).
fn encode_cursor(time_sk: &str) -> String {
    hex::encode(time_sk)
}

fn decode_cursor(cursor: &str) -> Result<(String, String), StoreError> {
    let bad = || StoreError::Invalid(format!("bad cursor {cursor:?}"));
    let raw = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let key = text
        .get(21..)
        .filter(|k| !k.is_empty())
        .filter(|_| text.as_bytes()[20] == b'#' && text[..20].bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(bad)?
        .to_string();
    Ok((text, key))
}

/// A short pause before retrying a transaction that met another one on the same items.
async fn backoff(attempt: usize) {
    let jitter = u64::from(std::process::id() % 7) + attempt as u64 * 3;
    tokio::time::sleep(Duration::from_millis(5 * (attempt as u64 + 1) + jitter)).await;
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Record>, StoreError> {
        match self.get_item(kind, key, None).await? {
            Some(item) => item_record(kind, &item).map(Some),
            None => Ok(None),
        }
    }

    async fn version(&self, kind: Kind, key: &str) -> Result<Option<u64>, StoreError> {
        // A projection read: the same read units as the item's size rounds to, but no body to
        // move or decode.
        let item = self.get_item(kind, key, Some("#ver, #exp")).await?;
        Ok(item.and_then(|i| number(&i, "version")))
    }

    async fn put(&self, record: Record, condition: Condition) -> Result<u64, StoreError> {
        check_key(&record.key)?;
        check_record(&record)?;
        let mut mode = PutMode::of(condition);
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now_ms();
            match self.run(put_op(&record, mode, now)?).await {
                Ok(attributes) => {
                    return Ok(match mode {
                        PutMode::Fresh => 1,
                        PutMode::Replace(v) => v + 1,
                        PutMode::Bump => number(&attributes, "version").ok_or_else(|| {
                            StoreError::Backend("DynamoDB UpdateItem returned no version".into())
                        })?,
                    })
                }
                Err(Failure::Condition(old)) => {
                    let current = live_version(old.as_ref(), now);
                    if condition != Condition::Any {
                        return Err(StoreError::ConditionFailed {
                            kind: record.kind,
                            key: record.key,
                            current,
                        });
                    }
                    // An unconditional put met an expired item (start over at 1) or, trying
                    // that, a record written meanwhile (bump it).
                    mode = if current.is_some() {
                        PutMode::Bump
                    } else {
                        PutMode::Fresh
                    };
                }
                Err(Failure::Backend(e)) => return Err(e),
            }
        }
        Err(StoreError::Backend(format!(
            "put of {}/{} on table {}: still contended after {MAX_ATTEMPTS} attempts",
            record.kind, record.key, self.table
        )))
    }

    async fn delete(&self, kind: Kind, key: &str, condition: Condition) -> Result<(), StoreError> {
        check_key(key)?;
        let now = self.clock.now_ms();
        match self
            .run(delete_op(self.key(kind, key)?, condition, now))
            .await
        {
            Ok(_) => Ok(()),
            Err(Failure::Condition(old)) => Err(StoreError::ConditionFailed {
                kind,
                key: key.to_string(),
                current: live_version(old.as_ref(), now),
            }),
            Err(Failure::Backend(e)) => Err(e),
        }
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<Option<u64>>, StoreError> {
        if writes.len() > MAX_TRANSACT_WRITES {
            return Err(StoreError::Invalid(format!(
                "a transaction holds at most {MAX_TRANSACT_WRITES} writes, got {}",
                writes.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let mut bytes = 0;
        for w in &writes {
            let (kind, key) = write_key(w);
            check_key(key)?;
            if !seen.insert((kind, key)) {
                return Err(StoreError::Invalid(format!(
                    "transaction writes {kind}/{key} twice"
                )));
            }
            if let Write::Put(record, _) = w {
                check_record(record)?;
                bytes += item_bytes(record);
            }
        }
        if bytes > MAX_TRANSACT_BYTES {
            return Err(StoreError::Invalid(format!(
                "a transaction holds at most {} MB of records on DynamoDB, got {bytes} bytes",
                MAX_TRANSACT_BYTES / 1_000_000
            )));
        }
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        // One per write; a delete's is not used.
        let mut modes: Vec<PutMode> = writes
            .iter()
            .map(|w| match w {
                Write::Put(_, c) | Write::Delete(_, _, c) => PutMode::of(*c),
            })
            .collect();
        for attempt in 0..MAX_ATTEMPTS {
            let now = self.clock.now_ms();
            let items = writes
                .iter()
                .zip(&modes)
                .map(|(w, mode)| {
                    let op = match w {
                        Write::Put(record, _) => put_op(record, *mode, now)?,
                        Write::Delete(kind, key, c) => delete_op(self.key(*kind, key)?, *c, now),
                    };
                    op.into_transact(&self.table)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let e = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(writes.iter().map(Write::new_version).collect()),
                Err(e) => e,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) =
                e.as_service_error()
            else {
                return Err(self.backend("TransactWriteItems", e));
            };
            // Reasons come in the order of the writes; "None" for those that were fine.
            let mut retry = false;
            for (i, reason) in cancel.cancellation_reasons().iter().enumerate() {
                match reason.code() {
                    Some("ConditionalCheckFailed") => {
                        let current = live_version(reason.item(), now);
                        match &writes[i] {
                            // An unconditional put guessed wrong about an expired item.
                            Write::Put(_, Condition::Any) => {
                                modes[i] = if current.is_some() {
                                    PutMode::Bump
                                } else {
                                    PutMode::Fresh
                                };
                                retry = true;
                            }
                            w => {
                                let (kind, key) = write_key(w);
                                return Err(StoreError::ConditionFailed {
                                    kind,
                                    key: key.to_string(),
                                    current,
                                });
                            }
                        }
                    }
                    Some("TransactionConflict") => retry = true,
                    _ => {}
                }
            }
            if !retry {
                return Err(self.backend("TransactWriteItems", e));
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "transaction on table {}: still contended after {MAX_ATTEMPTS} attempts",
            self.table
        )))
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        if query.limit == 0 || query.limit > 1000 {
            return Err(StoreError::Invalid(format!(
                "limit must be 1..=1000, got {}",
                query.limit
            )));
        }
        let kind = query.kind;
        let ((index, partition_attr), partition) = match &query.index {
            QueryIndex::All => (BY_TIME, kind.as_str().to_string()),
            QueryIndex::Account(a) => (BY_ACCOUNT, format!("{kind}#{a}")),
            QueryIndex::Status(st) => (BY_STATUS, format!("{kind}#{st}")),
        };
        let mut start = match &query.cursor {
            Some(cursor) => {
                let (sort, key) = decode_cursor(cursor)?;
                Some(HashMap::from([
                    ("pk".to_string(), s(pk(kind, &key)?)),
                    ("sk".to_string(), s(SK)),
                    (partition_attr.to_string(), s(partition.clone())),
                    ("time_sk".to_string(), s(sort)),
                ]))
            }
            None => None,
        };
        // [from, to) on the 20-digit prefix: `BETWEEN from AND to` takes every `to-1…#key` but
        // no `to#key`, which sorts after the bare `to`. No time is negative.
        let from = query.time_from_ms.map(|t| t.max(0));
        let mut condition = "#part = :part".to_string();
        let mut names = HashMap::from([("#part".to_string(), partition_attr.to_string())]);
        let mut values = HashMap::from([(":part".to_string(), s(partition))]);
        match (from, query.time_to_ms) {
            (_, Some(to)) if to <= from.unwrap_or(0) => {
                return Ok(Page {
                    records: Vec::new(),
                    next_cursor: None,
                })
            }
            (from, Some(to)) => {
                condition.push_str(" AND #tsk BETWEEN :from AND :to");
                values.insert(":from".into(), s(format!("{:020}", from.unwrap_or(0))));
                values.insert(":to".into(), s(format!("{to:020}")));
            }
            (Some(from), None) => {
                condition.push_str(" AND #tsk >= :from");
                values.insert(":from".into(), s(format!("{from:020}")));
            }
            (None, None) => {}
        }
        if condition.contains("#tsk") {
            names.insert("#tsk".into(), "time_sk".into());
        }
        // One more than the limit tells whether another page follows; expired items are
        // dropped here, so a page of DynamoDB's may give fewer, and the loop asks for more.
        let wanted = query.limit + 1;
        let mut records = Vec::with_capacity(wanted.min(128));
        loop {
            let now = self.clock.now_ms();
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(&condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(!query.descending)
                .limit((wanted - records.len()) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.backend("Query", e))?;
            for item in out.items() {
                if is_live(item, now) {
                    records.push(item_record(kind, item)?);
                }
            }
            start = out.last_evaluated_key;
            if records.len() >= wanted || start.is_none() {
                break;
            }
        }
        let next_cursor = if records.len() > query.limit {
            records.truncate(query.limit);
            records
                .last()
                .map(|r| encode_cursor(&time_sk(r.index.time_ms.unwrap_or_default(), &r.key)))
        } else {
            None
        };
        Ok(Page {
            records,
            next_cursor,
        })
    }

    async fn increment(
        &self,
        kind: Kind,
        key: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<u64, StoreError> {
        check_key(key)?;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now_ms();
            let mut values = HashMap::from([
                (":now".to_string(), n(now)),
                (":one".to_string(), n(1)),
                (":kind".to_string(), s(kind.as_str())),
            ]);
            let update = match expires_at_ms {
                Some(e) => {
                    values.insert(":exp".into(), n(e));
                    values.insert(":ttl".into(), n(ttl_seconds(e)));
                    "SET #kind = :kind, #exp = :exp, #ttl = :ttl ADD #cnt :one, #ver :one"
                }
                None => "SET #kind = :kind ADD #cnt :one, #ver :one REMOVE #exp, #ttl",
            };
            let op = Op::Update {
                key: self.key(kind, key)?,
                update: update.to_string(),
                condition: LIVE_COUNTER_OR_ABSENT,
                values,
            };
            let old = match self.run(op).await {
                Ok(attributes) => {
                    return number(&attributes, "count").ok_or_else(|| {
                        StoreError::Backend("DynamoDB UpdateItem returned no count".into())
                    })
                }
                Err(Failure::Condition(old)) => old,
                Err(Failure::Backend(e)) => return Err(e),
            };
            // Not a live counter item: an expired record (start over at 1), or a live record
            // whose body is a counter written by `put` (carry its count into a counter item).
            let (item, condition, count, mut values) = match live_version(old.as_ref(), now) {
                None => (
                    counter_item(kind, key, 1, 1, expires_at_ms)?,
                    DEAD_OR_ABSENT,
                    1,
                    Item::new(),
                ),
                Some(version) => {
                    let record = item_record(kind, old.as_ref().expect("a live item"))?;
                    let count = record.body.value()["count"].as_u64().ok_or_else(|| {
                        StoreError::Corrupt {
                            kind,
                            key: key.to_string(),
                            reason: "not a counter".into(),
                        }
                    })?;
                    let item = counter_item(kind, key, count + 1, version + 1, expires_at_ms)?;
                    let values = HashMap::from([(":expected".to_string(), n(version))]);
                    (item, LIVE_AT_VERSION, count + 1, values)
                }
            };
            values.insert(":now".into(), n(now));
            match self
                .run(Op::Put {
                    item,
                    condition,
                    values,
                })
                .await
            {
                Ok(_) => return Ok(count),
                // Written meanwhile: go round again.
                Err(Failure::Condition(_)) => {}
                Err(Failure::Backend(e)) => return Err(e),
            }
        }
        Err(StoreError::Backend(format!(
            "increment of {kind}/{key} on table {}: still contended after {MAX_ATTEMPTS} attempts",
            self.table
        )))
    }

    /// Nothing to do: DynamoDB's TTL sweeper removes expired items (within days), and reads
    /// hide them from their expiry on.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Creates table `name` as `infra/relaycast.yaml` does (keys, the three look-ups with every
/// attribute projected, on-demand billing, TTL on `expires_at`) and waits until it is active.
/// For tests and local development; deployments get the table from the stack.
pub async fn create_table(client: &Client, name: &str) -> Result<(), AwsError> {
    let fail = |reason: String| AwsError::Provision {
        what: "DynamoDB table",
        reason: format!("{name}: {reason}"),
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| fail(e.to_string()))
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|e| fail(e.to_string()))
    };
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?);
    for a in ["pk", "sk", "kind", "account_pk", "status_pk", "time_sk"] {
        create = create.attribute_definitions(attr(a)?);
    }
    for (index, partition) in [BY_ACCOUNT, BY_STATUS, BY_TIME] {
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(index)
            .key_schema(key(partition, KeyType::Hash)?)
            .key_schema(key("time_sk", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(|e| fail(e.to_string()))?;
        create = create.global_secondary_indexes(gsi);
    }
    create
        .send()
        .await
        .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
        let status = described.table().and_then(|t| t.table_status());
        if status == Some(&aws_sdk_dynamodb::types::TableStatus::Active) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(fail(format!("not active after 60 s ({status:?})")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .map_err(|e| fail(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_sk_sorts_by_time_then_key() {
        let mut sks = vec![
            time_sk(300, "t4"),
            time_sk(100, "t1"),
            time_sk(300, "t0"),
            time_sk(1_700_000_000_000, "a"),
            time_sk(50, "z"),
        ];
        sks.sort();
        assert_eq!(
            sks,
            [
                time_sk(50, "z"),
                time_sk(100, "t1"),
                time_sk(300, "t0"),
                time_sk(300, "t4"),
                time_sk(1_700_000_000_000, "a")
            ]
        );
        assert_eq!(time_sk(5, "k"), "00000000000000000005#k");
        // The bounds of a [from, to) look-up.
        assert!(time_sk(299, "~~~") < format!("{:020}", 300));
        assert!(time_sk(300, "") > format!("{:020}", 300));
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(1_000), 1);
        assert_eq!(ttl_seconds(1_001), 2);
        assert_eq!(ttl_seconds(1_999), 2);
        assert_eq!(ttl_seconds(0), 0);
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_invalid() {
        let sk = time_sk(42, "key#with:odd chars");
        let (back, key) = decode_cursor(&encode_cursor(&sk)).unwrap();
        assert_eq!(
            (back.as_str(), key.as_str()),
            (sk.as_str(), "key#with:odd chars")
        );
        for bad in [
            "",
            "zz",
            "abc",
            &hex::encode("123#k"),
            &hex::encode("0000000000000000000x#k"),
        ] {
            assert!(
                matches!(decode_cursor(bad), Err(StoreError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expressions_name_only_what_they_use() {
        let names = names_in(LIVE_AT_VERSION).unwrap();
        let mut used: Vec<_> = names.values().map(String::as_str).collect();
        used.sort_unstable();
        assert_eq!(used, ["expires_at_ms", "version"]);
        assert_eq!(names_in(":now"), None);
    }

    #[test]
    fn items_round_trip_records() {
        let record = Record {
            kind: Kind("task"),
            key: "a#1".into(),
            version: 0,
            index: IndexKeys {
                account: Some("acc".into()),
                status: Some("running".into()),
                time_ms: Some(1_700_000_000_123),
            },
            expires_at_ms: Some(1_700_000_060_500),
            body: serde_json::json!({ "x": [1, 2] }).into(),
        };
        let item = record_item(&record, 7).unwrap();
        assert_eq!(string(&item, "pk"), Some("task#a#1"));
        assert_eq!(string(&item, "account_pk"), Some("task#acc"));
        assert_eq!(string(&item, "status_pk"), Some("task#running"));
        assert_eq!(string(&item, "time_sk"), Some("00000001700000000123#a#1"));
        assert_eq!(number::<i64>(&item, "expires_at"), Some(1_700_000_061));
        assert_eq!(
            item_record(Kind("task"), &item).unwrap(),
            Record {
                version: 7,
                ..record
            }
        );
    }
}
