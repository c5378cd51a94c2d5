//! The store contract suite against [`DynamoStore`] on moto's DynamoDB (a fresh table per case),
//! plus what only DynamoDB makes a question: the item layout the stack's indexes and TTL rely
//! on, the size limits, and writes over expired items that the TTL sweeper has not removed yet.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use relaycast_aws::moto::{unique, MotoServer};
use relaycast_aws::store::{create_table, DynamoStore};
use relaycast_core::ports::contract::{run_store_contract, StoreFixture};
use relaycast_core::ports::{
    Clock, Condition, IndexKeys, Kind, ManualClock, Record, Store, StoreError, Write,
    MAX_RECORD_BYTES,
};
use serde_json::json;

fn clock() -> ManualClock {
    ManualClock::new(1_700_000_000_000)
}

/// A store on a new table of `server`, with its raw client.
async fn fresh_store(server: &MotoServer, clock: &ManualClock) -> (DynamoStore, Client) {
    let settings = server.settings(&unique("store"));
    let store = DynamoStore::open(&settings, Arc::new(clock.clone()))
        .await
        .unwrap();
    let client = Client::new(&relaycast_aws::sdk_config(&settings).await);
    create_table(&client, &settings.table).await.unwrap();
    (store, client)
}

async fn raw_item(
    client: &Client,
    table: &str,
    pk: &str,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S("record".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract() {
    let server = MotoServer::shared();
    run_store_contract(|| {
        let server = Arc::clone(&server);
        async move {
            let clock = clock();
            let (store, _) = fresh_store(&server, &clock).await;
            StoreFixture {
                store: Arc::new(store),
                clock,
                // TTL sweeps; purge_expired does nothing.
                purge_counts: false,
                guard: Box::new(server),
            }
        }
    })
    .await;
}

/// Items carry exactly the attributes `infra/relaycast.yaml` indexes and sweeps, and
/// `create_table` makes the indexes and TTL the template declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_match_the_stack() {
    let server = MotoServer::shared();
    let clock = clock();
    let (store, client) = fresh_store(&server, &clock).await;
    let record = Record {
        index: IndexKeys {
            account: Some("acc1".into()),
            status: Some("running".into()),
            time_ms: Some(1_700_000_000_123),
        },
        expires_at_ms: Some(1_700_000_060_001),
        ..Record::new(Kind("task"), "t-1", json!({ "id": "t-1" }))
    };
    assert_eq!(store.put(record, Condition::Absent).await.unwrap(), 1);
    let item = raw_item(&client, store.table(), "task#t-1").await.unwrap();
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "account_pk",
            "body",
            "expires_at",
            "expires_at_ms",
            "kind",
            "pk",
            "sk",
            "status_pk",
            "time_sk",
            "version"
        ]
    );
    let text = |a: &str| item[a].as_s().unwrap().as_str();
    let number = |a: &str| item[a].as_n().unwrap().as_str();
    assert_eq!(text("account_pk"), "task#acc1");
    assert_eq!(text("status_pk"), "task#running");
    assert_eq!(text("kind"), "task");
    assert_eq!(text("time_sk"), "00000001700000000123#t-1");
    assert_eq!(number("expires_at"), "1700000061", "TTL seconds round up");
    assert_eq!(number("version"), "1");

    // A record without index values is in no look-up: the attributes are absent, not empty.
    store
        .put(
            Record::new(Kind("task"), "t-1", json!({ "id": "t-1" })),
            Condition::Version(1),
        )
        .await
        .unwrap();
    let item = raw_item(&client, store.table(), "task#t-1").await.unwrap();
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["body", "kind", "pk", "sk", "version"]);

    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/relaycast.yaml"
    ))
    .unwrap();
    let table = client
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    for gsi in table.global_secondary_indexes() {
        let name = gsi.index_name().unwrap();
        assert!(
            template.contains(&format!("IndexName: {name}")),
            "{name} is not in the template"
        );
        let keys: Vec<&str> = gsi
            .key_schema()
            .iter()
            .map(|k| k.attribute_name())
            .collect();
        assert_eq!(keys[1], "time_sk");
    }
    assert_eq!(table.global_secondary_indexes().len(), 3);
    let ttl = client
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    let ttl_attr = ttl
        .time_to_live_description()
        .and_then(|d| d.attribute_name())
        .unwrap();
    assert_eq!(ttl_attr, "expires_at");
    assert!(template.contains(&format!("AttributeName: {ttl_attr}\n        Enabled: true")));
}

/// DynamoDB would refuse a 400 KB item with a bare validation error; the store refuses it first,
/// saying which record and by how much, alone or in a transaction, and so does a transaction
/// over DynamoDB's 4 MB request limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_too_large_are_refused_clearly() {
    let server = MotoServer::shared();
    let clock = clock();
    let (store, client) = fresh_store(&server, &clock).await;
    let big = |key: &str| {
        Record::new(
            Kind("media"),
            key,
            json!({ "sources": "s".repeat(400 * 1024) }),
        )
    };
    match store.put(big("huge"), Condition::Any).await {
        Err(StoreError::Invalid(msg)) => {
            assert!(msg.starts_with("record media/huge is 409"), "{msg}");
            assert!(msg.ends_with("bytes, over the 350 KiB limit"), "{msg}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // What DynamoDB itself says about such an item.
    let raw = client
        .put_item()
        .table_name(store.table())
        .item("pk", AttributeValue::S("media#raw".into()))
        .item("sk", AttributeValue::S("record".into()))
        .item("body", AttributeValue::S("s".repeat(410 * 1024)))
        .send()
        .await;
    assert!(raw.is_err(), "moto took a 410 KiB item");

    // Twelve records just under the limit: each is fine, together they are over 4 MB.
    let near = |i: usize| {
        Record::new(
            Kind("media"),
            format!("near{i:02}"),
            json!("n".repeat(MAX_RECORD_BYTES - 100)),
        )
    };
    let writes = (0..12)
        .map(|i| Write::Put(near(i), Condition::Absent))
        .collect();
    match store.transact(writes).await {
        Err(StoreError::Invalid(msg)) => assert!(msg.contains("4 MB"), "{msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(store.get(Kind("media"), "near00").await.unwrap(), None);
    assert_eq!(
        store.put(near(0), Condition::Absent).await.unwrap(),
        1,
        "one of them alone is stored"
    );
}

/// An expired item the TTL sweeper has not removed yet is invisible, and writes over it start a
/// new life at version 1, whether they are unconditional puts, transactions or counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_expired_items_start_over() {
    let server = MotoServer::shared();
    let clock = clock();
    let (store, client) = fresh_store(&server, &clock).await;
    let kind = Kind("lease");
    let expiring = |key: &str, body| Record {
        expires_at_ms: Some(clock.now_ms() + 1_000),
        ..Record::new(kind, key, body)
    };
    for key in ["put", "tx", "calls"] {
        store
            .put(expiring(key, json!(1)), Condition::Any)
            .await
            .unwrap();
        assert_eq!(
            store
                .put(expiring(key, json!(2)), Condition::Any)
                .await
                .unwrap(),
            2
        );
    }
    clock.advance_ms(1_000);
    assert!(
        raw_item(&client, store.table(), "lease#put")
            .await
            .is_some(),
        "still stored"
    );
    assert_eq!(store.get(kind, "put").await.unwrap(), None);
    assert_eq!(
        store
            .put(Record::new(kind, "put", json!(3)), Condition::Any)
            .await
            .unwrap(),
        1
    );
    let versions = store
        .transact(vec![
            Write::Put(Record::new(kind, "tx", json!(3)), Condition::Any),
            Write::Put(Record::new(kind, "new", json!(3)), Condition::Any),
        ])
        .await
        .unwrap();
    assert_eq!(versions, [None, None]);
    assert_eq!(store.version(kind, "tx").await.unwrap(), Some(1));
    assert_eq!(store.version(kind, "new").await.unwrap(), Some(1));
    // "calls" was a plain record with body 2: expired, the counter starts at 1.
    assert_eq!(store.increment(kind, "calls", None).await.unwrap(), 1);
    assert_eq!(store.increment(kind, "calls", None).await.unwrap(), 2);
    let calls = store.get(kind, "calls").await.unwrap().unwrap();
    assert_eq!(
        (calls.version, calls.body.value()),
        (2, json!({ "count": 2 }))
    );
}

/// A counter written by `put` counts on from its body; a record that is no counter is corrupt
/// to `increment`; a counter overwritten by `put` is a plain record again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_plain_records_mix_as_on_sqlite() {
    let server = MotoServer::shared();
    let clock = clock();
    let (store, client) = fresh_store(&server, &clock).await;
    let kind = Kind("calls");
    store
        .put(
            Record::new(kind, "window", json!({ "count": 5 })),
            Condition::Absent,
        )
        .await
        .unwrap();
    assert_eq!(store.increment(kind, "window", None).await.unwrap(), 6);
    assert_eq!(store.increment(kind, "window", None).await.unwrap(), 7);
    let item = raw_item(&client, store.table(), "calls#window")
        .await
        .unwrap();
    assert_eq!(item["count"].as_n().unwrap(), "7");
    assert!(!item.contains_key("body"));
    assert_eq!(store.version(kind, "window").await.unwrap(), Some(3));

    store
        .put(Record::new(kind, "window", json!("plain")), Condition::Any)
        .await
        .unwrap();
    let item = raw_item(&client, store.table(), "calls#window")
        .await
        .unwrap();
    assert!(
        !item.contains_key("count"),
        "the count went with the counter"
    );
    let got = store.get(kind, "window").await.unwrap().unwrap();
    assert_eq!((got.version, got.body.value()), (4, json!("plain")));
    assert!(matches!(
        store.increment(kind, "window", None).await,
        Err(StoreError::Corrupt { .. })
    ));
}

/// A store opened on a table that does not exist says so, naming the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_named() {
    let server = MotoServer::shared();
    let settings = server.settings(&unique("missing"));
    let store = DynamoStore::open(&settings, Arc::new(clock()))
        .await
        .unwrap();
    match store.get(Kind("task"), "t").await {
        Err(StoreError::Backend(msg)) => {
            assert!(msg.contains(&settings.table), "{msg}");
            assert!(msg.contains("GetItem"), "{msg}");
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    let mut empty = settings.clone();
    empty.table.clear();
    assert!(DynamoStore::open(&empty, Arc::new(clock())).await.is_err());
}
