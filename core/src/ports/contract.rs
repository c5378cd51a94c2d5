//! Contract test suites for the ports, written once and run against every adapter.
//!
//! Each suite is a list of named cases; a runner builds a fresh fixture (adapter + manual clock)
//! per case from a factory and runs the cases in order, naming each on stderr so a failure points
//! at its case. An adapter test is then one call, e.g. in `adapters/embedded/tests/contract_sqlite.rs`:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn store() {
//!     run_store_contract(|| async { /* open a fresh store */ }).await;
//! }
//! ```
//!
//! Cases move time with the fixture's [`ManualClock`] rather than sleeping, except for long
//! polling, which waits in real time by definition, and for queue adapters that cannot follow a
//! manual clock (SQS keeps its own time): their fixture says `real_time`, and the queue cases
//! then sleep through short whole-second delays instead. Compiled for this crate's tests and, with the
//! `contract-tests` feature, for other crates' (the AWS adapters against moto).

use std::any::Any;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;

use super::queue::MAX_MESSAGE_BYTES;
use super::{
    dead_letter_queue, record_bytes, Clock, Condition, IndexKeys, Kind, ManualClock, ObjectStore,
    ObjectStoreError, Query, QueryIndex, Queue, QueueError, Record, Store, StoreError, Write,
    MAX_RECORD_BYTES,
};

/// A boxed case future.
pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A store under test.
pub struct StoreFixture {
    /// The adapter, fresh (no records).
    pub store: Arc<dyn Store>,
    /// The clock the adapter was built with.
    pub clock: ManualClock,
    /// Whether `purge_expired` physically removes and counts expired records (false for
    /// backends that expire records on their own and make it a no-op).
    pub purge_counts: bool,
    /// Kept alive for the case (e.g. the temporary directory).
    pub guard: Box<dyn Any + Send>,
}

/// A queue under test.
pub struct QueueFixture {
    /// The adapter, with empty queues.
    pub queue: Arc<dyn Queue>,
    /// The clock the adapter was built with (unused by real-time adapters).
    pub clock: ManualClock,
    /// Whether the adapter keeps time itself (SQS) rather than by `clock`: cases that move time
    /// then sleep instead, with short whole-second delays and visibility timeouts, and poll
    /// the approximate stats until they settle.
    pub real_time: bool,
    /// The adapter's receives before dead-lettering.
    pub max_receives: u32,
    /// The longest queue name the adapter takes (80; less on SQS, where a prefix and the
    /// dead-letter queue's `-dlq` share SQS's 80 characters).
    pub max_name_len: usize,
    /// For adapters that keep a delay past SQS's 15 minutes as a chain of shorter ones: the
    /// same queues through an adapter whose hops are at most this long (a few seconds), so the
    /// long-delay case runs the chain in real time. `None`: that case sends on `queue` with a
    /// 40-minute delay and moves the manual clock.
    pub long_delay_hops: Option<(Arc<dyn Queue>, Duration)>,
    /// Kept alive for the case.
    pub guard: Box<dyn Any + Send>,
}

/// An object store under test.
pub struct ObjectFixture {
    /// The adapter, empty.
    pub objects: Arc<dyn ObjectStore>,
    /// The clock the adapter was built with.
    pub clock: ManualClock,
    /// A writable directory for source files of `put_file`.
    pub scratch: PathBuf,
    /// Whether the case can fetch a playback URL over HTTP and compare the bytes (S3's presigned
    /// URLs); false where the URL needs a route of the host (the directory store's `/objects/`).
    pub fetch_urls: bool,
    /// Kept alive for the case.
    pub guard: Box<dyn Any + Send>,
}

/// A named case run on a fixture of type `F`.
pub type Case<F> = (&'static str, fn(F) -> CaseFuture);
/// A named store case.
pub type StoreCase = Case<StoreFixture>;
/// A named queue case.
pub type QueueCase = Case<QueueFixture>;
/// A named object store case.
pub type ObjectCase = Case<ObjectFixture>;

macro_rules! cases {
    ($fixture:ty; $($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|f: $fixture| -> CaseFuture { Box::pin($name(f)) }) as fn($fixture) -> CaseFuture)),*]
    };
}

/// Every store case.
pub fn store_cases() -> Vec<StoreCase> {
    use store::*;
    cases![StoreFixture;
        put_get_version, conditions, delete, transact_all_or_nothing, transact_limits, query_indexes,
        query_descending, paging, paging_stable_under_inserts, expiry, concurrent_cas, concurrent_absent_one_winner,
        concurrent_cas_one_winner_per_version, increment_counts_atomically, invalid_requests,
        record_size_limit]
}

/// Every queue case.
pub fn queue_cases() -> Vec<QueueCase> {
    use queue::*;
    cases![QueueFixture;
        send_receive_ack, delay, long_delay, visibility_timeout_redelivery, extend, dead_letter, long_poll_wakes_on_send,
        long_poll_times_out, batches_and_stats, concurrent_consumers, queues_are_separate, invalid_requests]
}

/// Every object store case.
pub fn object_cases() -> Vec<ObjectCase> {
    use objects::*;
    cases![ObjectFixture;
        put_get_bytes, put_file, overwrite, list_by_prefix_in_order, delete_idempotent, invalid_keys, get_range, playback_url]
}

async fn run<F, Fx, Fut>(suite: &str, cases: Vec<Case<Fx>>, mut factory: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Fx>,
{
    for (name, case) in cases {
        eprintln!("{suite} contract: {name}");
        let started = Instant::now();
        case(factory().await).await;
        eprintln!(
            "{suite} contract: {name} ok ({} ms)",
            started.elapsed().as_millis()
        );
    }
}

/// Runs every store case, each on a fresh fixture from `factory`.
pub async fn run_store_contract<F, Fut>(factory: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreFixture>,
{
    run("store", store_cases(), factory).await
}

/// Runs every queue case, each on a fresh fixture from `factory`.
pub async fn run_queue_contract<F, Fut>(factory: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = QueueFixture>,
{
    run("queue", queue_cases(), factory).await
}

/// Runs every object store case, each on a fresh fixture from `factory`.
pub async fn run_object_contract<F, Fut>(factory: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ObjectFixture>,
{
    run("object store", object_cases(), factory).await
}

/// The store cases.
pub mod store {
    use super::*;

    fn rec(kind: Kind, key: &str, body: serde_json::Value) -> Record {
        Record::new(kind, key, body)
    }

    fn indexed(
        kind: Kind,
        key: &str,
        account: Option<&str>,
        status: Option<&str>,
        time_ms: Option<i64>,
    ) -> Record {
        Record {
            index: IndexKeys {
                account: account.map(Into::into),
                status: status.map(Into::into),
                time_ms,
            },
            ..rec(kind, key, json!({ "k": key }))
        }
    }

    fn keys(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| r.key.as_str()).collect()
    }

    fn assert_condition_failed<T: std::fmt::Debug>(
        r: Result<T, StoreError>,
        expected_current: Option<u64>,
    ) {
        match r {
            Err(StoreError::ConditionFailed { current, .. }) => {
                assert_eq!(current, expected_current)
            }
            other => {
                panic!("expected ConditionFailed(current {expected_current:?}), got {other:?}")
            }
        }
    }

    /// A write returns version 1 then 2; get returns exactly what was written.
    pub async fn put_get_version(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_put"));
        assert_eq!(s.get(kind, "a").await.unwrap(), None);
        let mut r = indexed(kind, "a", Some("acc"), Some("on"), Some(5));
        r.body = json!({ "n": 1, "s": "x", "nested": [1, 2, { "z": null }] }).into();
        r.expires_at_ms = Some(f.clock.now_ms() + 60_000);
        assert_eq!(s.put(r.clone(), Condition::Any).await.unwrap(), 1);
        let got = s.get(kind, "a").await.unwrap().expect("written record");
        assert_eq!(
            got,
            Record {
                version: 1,
                ..r.clone()
            }
        );
        r.body = json!({ "n": 2 }).into();
        r.index = IndexKeys::default();
        r.expires_at_ms = None;
        assert_eq!(s.put(r.clone(), Condition::Any).await.unwrap(), 2);
        assert_eq!(
            s.get(kind, "a").await.unwrap(),
            Some(Record { version: 2, ..r })
        );
        assert_eq!(s.version(kind, "a").await.unwrap(), Some(2));
        assert_eq!(s.version(kind, "nothing").await.unwrap(), None);
        // Same key in another kind is another record.
        assert_eq!(s.get(Kind("c_put_other"), "a").await.unwrap(), None);
    }

    /// Absent and Version conditions; a failed one changes nothing.
    pub async fn conditions(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_cond"));
        assert_eq!(
            s.put(rec(kind, "k", json!(1)), Condition::Absent)
                .await
                .unwrap(),
            1
        );
        assert_condition_failed(
            s.put(rec(kind, "k", json!(2)), Condition::Absent).await,
            Some(1),
        );
        assert_eq!(s.get(kind, "k").await.unwrap().unwrap().body, json!(1));
        assert_eq!(
            s.put(rec(kind, "k", json!(3)), Condition::Version(1))
                .await
                .unwrap(),
            2
        );
        assert_condition_failed(
            s.put(rec(kind, "k", json!(4)), Condition::Version(1)).await,
            Some(2),
        );
        let got = s.get(kind, "k").await.unwrap().unwrap();
        assert_eq!((got.body.value(), got.version), (json!(3), 2));
        assert_condition_failed(
            s.put(rec(kind, "missing", json!(5)), Condition::Version(1))
                .await,
            None,
        );
        assert_eq!(s.get(kind, "missing").await.unwrap(), None);
    }

    /// Delete, conditional delete, and deleting what is not there.
    pub async fn delete(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_del"));
        s.delete(kind, "nothing", Condition::Any).await.unwrap();
        s.put(rec(kind, "k", json!(1)), Condition::Any)
            .await
            .unwrap();
        assert_condition_failed(s.delete(kind, "k", Condition::Version(7)).await, Some(1));
        assert_condition_failed(s.delete(kind, "k", Condition::Absent).await, Some(1));
        assert!(s.get(kind, "k").await.unwrap().is_some());
        s.delete(kind, "k", Condition::Version(1)).await.unwrap();
        assert_eq!(s.get(kind, "k").await.unwrap(), None);
        assert_condition_failed(s.delete(kind, "k", Condition::Version(1)).await, None);
        // A record re-created after a delete starts again at version 1.
        assert_eq!(
            s.put(rec(kind, "k", json!(2)), Condition::Absent)
                .await
                .unwrap(),
            1
        );
    }

    /// A transaction applies every write or none, and returns the versions its conditions tell.
    pub async fn transact_all_or_nothing(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_tx"));
        s.put(rec(kind, "old", json!("old")), Condition::Any)
            .await
            .unwrap();
        let versions = s
            .transact(vec![
                Write::Put(rec(kind, "a", json!("a")), Condition::Absent),
                Write::Put(rec(kind, "b", json!("b")), Condition::Any),
                Write::Delete(kind, "old".into(), Condition::Version(1)),
            ])
            .await
            .unwrap();
        // Conditioned puts tell their version; unconditional puts and deletes do not.
        assert_eq!(versions, vec![Some(1), None, None]);
        assert!(s.get(kind, "old").await.unwrap().is_none());
        assert_eq!(s.version(kind, "b").await.unwrap(), Some(1));

        // The last write's condition fails: the first two must not be applied.
        let r = s
            .transact(vec![
                Write::Put(rec(kind, "a", json!("a2")), Condition::Version(1)),
                Write::Put(rec(kind, "c", json!("c")), Condition::Absent),
                Write::Put(rec(kind, "b", json!("b2")), Condition::Version(9)),
            ])
            .await;
        assert_condition_failed(r, Some(1));
        let a = s.get(kind, "a").await.unwrap().unwrap();
        assert_eq!((a.body.value(), a.version), (json!("a"), 1));
        assert_eq!(s.get(kind, "c").await.unwrap(), None);
        assert_eq!(s.get(kind, "b").await.unwrap().unwrap().body, json!("b"));

        // Version(n) gives n + 1; an unconditional put still bumps the stored version.
        let versions = s
            .transact(vec![
                Write::Put(rec(kind, "a", json!("a3")), Condition::Version(1)),
                Write::Put(rec(kind, "b", json!("b3")), Condition::Any),
            ])
            .await
            .unwrap();
        assert_eq!(versions, vec![Some(2), None]);
        assert_eq!(s.version(kind, "a").await.unwrap(), Some(2));
        let b = s.get(kind, "b").await.unwrap().unwrap();
        assert_eq!((b.body.value(), b.version), (json!("b3"), 2));

        assert_eq!(s.transact(vec![]).await.unwrap(), Vec::<Option<u64>>::new());
    }

    /// At most 100 writes, one per key.
    pub async fn transact_limits(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_txlim"));
        let many = (0..101)
            .map(|i| Write::Put(rec(kind, &format!("k{i}"), json!(i)), Condition::Any))
            .collect();
        assert!(matches!(
            s.transact(many).await,
            Err(StoreError::Invalid(_))
        ));
        let dup = vec![
            Write::Put(rec(kind, "d", json!(1)), Condition::Any),
            Write::Delete(kind, "d".into(), Condition::Any),
        ];
        assert!(matches!(s.transact(dup).await, Err(StoreError::Invalid(_))));
        assert_eq!(s.get(kind, "d").await.unwrap(), None);
        let ok = (0..100)
            .map(|i| Write::Put(rec(kind, &format!("k{i:03}"), json!(i)), Condition::Any))
            .collect();
        assert_eq!(s.transact(ok).await.unwrap(), vec![None; 100]);
        assert_eq!(s.version(kind, "k099").await.unwrap(), Some(1));
    }

    /// Records up to `MAX_RECORD_BYTES` are stored whole; a bigger one is refused as invalid,
    /// alone or in a transaction, and nothing of it is written.
    pub async fn record_size_limit(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_size"));
        // A JSON string body: two quotes around the filler.
        let sized = |key: &str, bytes: usize| {
            let mut r = indexed(kind, key, Some("acc"), Some("on"), Some(7));
            let filler = bytes - record_bytes(&rec(kind, key, json!(""))) - 5; // "acc", "on"
            r.body = json!("x".repeat(filler)).into();
            assert_eq!(record_bytes(&r), bytes);
            r
        };
        let biggest = sized("max", MAX_RECORD_BYTES);
        assert_eq!(s.put(biggest.clone(), Condition::Absent).await.unwrap(), 1);
        assert_eq!(
            s.get(kind, "max").await.unwrap(),
            Some(Record {
                version: 1,
                ..biggest
            })
        );
        match s
            .put(sized("over", MAX_RECORD_BYTES + 1), Condition::Any)
            .await
        {
            Err(StoreError::Invalid(msg)) => {
                assert!(
                    msg.contains("c_size/over") && msg.contains("KiB limit"),
                    "{msg}"
                )
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        let r = s
            .transact(vec![
                Write::Put(rec(kind, "small", json!(1)), Condition::Absent),
                Write::Put(sized("over", MAX_RECORD_BYTES + 1), Condition::Absent),
            ])
            .await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
        assert_eq!(s.get(kind, "small").await.unwrap(), None);
        assert_eq!(s.get(kind, "over").await.unwrap(), None);
        let mut negative = rec(kind, "neg", json!(1));
        negative.index.time_ms = Some(-1);
        assert!(matches!(
            s.put(negative, Condition::Any).await,
            Err(StoreError::Invalid(_))
        ));
    }

    async fn seed_index_records(s: &Arc<dyn Store>, kind: Kind) {
        let rows = [
            ("t1", Some("acc1"), Some("running"), Some(100)),
            ("t2", Some("acc1"), Some("stopped"), Some(200)),
            ("t3", Some("acc2"), Some("running"), Some(150)),
            ("t4", Some("acc1"), Some("running"), Some(300)),
            ("t0", Some("acc1"), Some("running"), Some(300)), // same time: ordered by key
            ("t5", Some("acc1"), Some("running"), None),      // no time: in no look-up
            ("t6", None, None, Some(50)),                     // only in All
        ];
        for (key, account, status, time) in rows {
            s.put(indexed(kind, key, account, status, time), Condition::Any)
                .await
                .unwrap();
        }
        // Another kind with the same index values must not leak in.
        s.put(
            indexed(
                Kind("c_q_other"),
                "x",
                Some("acc1"),
                Some("running"),
                Some(120),
            ),
            Condition::Any,
        )
        .await
        .unwrap();
    }

    /// Look-ups by account, status and all, with time bounds, ordered by time then key.
    pub async fn query_indexes(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_q"));
        seed_index_records(&s, kind).await;
        let q = |index| Query::new(kind, index);
        let page = s
            .query(q(QueryIndex::Account("acc1".into())))
            .await
            .unwrap();
        assert_eq!(keys(&page.records), ["t1", "t2", "t0", "t4"]);
        assert!(page.next_cursor.is_none());
        assert_eq!(page.records[0].version, 1);
        assert_eq!(page.records[0].body, json!({ "k": "t1" }));
        let page = s
            .query(q(QueryIndex::Status("running".into())))
            .await
            .unwrap();
        assert_eq!(keys(&page.records), ["t1", "t3", "t0", "t4"]);
        let page = s.query(q(QueryIndex::All)).await.unwrap();
        assert_eq!(keys(&page.records), ["t6", "t1", "t3", "t2", "t0", "t4"]);
        let page = s
            .query(q(QueryIndex::Account("nobody".into())))
            .await
            .unwrap();
        assert!(page.records.is_empty() && page.next_cursor.is_none());

        // [from, to)
        let mut bounded = q(QueryIndex::All);
        bounded.time_from_ms = Some(100);
        bounded.time_to_ms = Some(300);
        assert_eq!(
            keys(&s.query(bounded.clone()).await.unwrap().records),
            ["t1", "t3", "t2"]
        );
        bounded.index = QueryIndex::Status("running".into());
        assert_eq!(
            keys(&s.query(bounded.clone()).await.unwrap().records),
            ["t1", "t3"]
        );
        bounded.time_to_ms = None;
        bounded.index = QueryIndex::Account("acc1".into());
        assert_eq!(
            keys(&s.query(bounded).await.unwrap().records),
            ["t1", "t2", "t0", "t4"]
        );

        // A record that changes index values moves between look-ups.
        s.put(
            indexed(kind, "t1", Some("acc2"), Some("stopped"), Some(100)),
            Condition::Version(1),
        )
        .await
        .unwrap();
        assert_eq!(
            keys(
                &s.query(q(QueryIndex::Account("acc1".into())))
                    .await
                    .unwrap()
                    .records
            ),
            ["t2", "t0", "t4"]
        );
        assert_eq!(
            keys(
                &s.query(q(QueryIndex::Status("running".into())))
                    .await
                    .unwrap()
                    .records
            ),
            ["t3", "t0", "t4"]
        );
    }

    /// Descending look-ups, bounded and paged.
    pub async fn query_descending(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_qd"));
        seed_index_records(&s, kind).await;
        let mut q = Query::new(kind, QueryIndex::Account("acc1".into()));
        q.descending = true;
        assert_eq!(
            keys(&s.query(q.clone()).await.unwrap().records),
            ["t4", "t0", "t2", "t1"]
        );
        q.limit = 3;
        let first = s.query(q.clone()).await.unwrap();
        assert_eq!(keys(&first.records), ["t4", "t0", "t2"]);
        q.cursor = first.next_cursor;
        assert!(q.cursor.is_some());
        let second = s.query(q.clone()).await.unwrap();
        assert_eq!(keys(&second.records), ["t1"]);
        assert!(second.next_cursor.is_none());
        let mut bounded = Query::new(kind, QueryIndex::All);
        bounded.descending = true;
        bounded.time_from_ms = Some(100);
        bounded.time_to_ms = Some(300);
        assert_eq!(
            keys(&s.query(bounded).await.unwrap().records),
            ["t2", "t3", "t1"]
        );
    }

    /// 250 records in pages of 100, both directions.
    pub async fn paging(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_page"));
        // Several records per time value, so the cursor has to carry the key too.
        let mut writes = Vec::new();
        for i in 0..250 {
            writes.push(Write::Put(
                indexed(kind, &format!("k{i:03}"), Some("acc"), None, Some(i / 3)),
                Condition::Any,
            ));
            if writes.len() == 25 {
                s.transact(std::mem::take(&mut writes)).await.unwrap();
            }
        }
        for descending in [false, true] {
            let mut q = Query::new(kind, QueryIndex::Account("acc".into()));
            q.descending = descending;
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            loop {
                let page = s.query(q.clone()).await.unwrap();
                sizes.push(page.records.len());
                seen.extend(page.records.into_iter().map(|r| r.key));
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(sizes, [100, 100, 50], "descending={descending}");
            let mut expected: Vec<String> = (0..250).map(|i| format!("k{i:03}")).collect();
            if descending {
                expected.reverse();
            }
            assert_eq!(seen, expected, "descending={descending}");
        }
        // Exactly one full page: no cursor, or a cursor to an empty page.
        let mut q = Query::new(kind, QueryIndex::All);
        q.time_from_ms = Some(0);
        q.time_to_ms = Some(10); // keys k000..k029
        q.limit = 30;
        let page = s.query(q.clone()).await.unwrap();
        assert_eq!(page.records.len(), 30);
        if let Some(c) = page.next_cursor {
            q.cursor = Some(c);
            let rest = s.query(q).await.unwrap();
            assert!(rest.records.is_empty() && rest.next_cursor.is_none());
        }
    }

    /// Records inserted between pages neither repeat nor shift what was already read.
    pub async fn paging_stable_under_inserts(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_pstable"));
        for i in 0..10 {
            s.put(
                indexed(kind, &format!("m{i}"), None, Some("s"), Some(i * 10)),
                Condition::Any,
            )
            .await
            .unwrap();
        }
        let mut q = Query::new(kind, QueryIndex::Status("s".into()));
        q.limit = 4;
        let first = s.query(q.clone()).await.unwrap();
        assert_eq!(keys(&first.records), ["m0", "m1", "m2", "m3"]);
        // One before the cursor (not seen by later pages), one after it (seen).
        s.put(
            indexed(kind, "early", None, Some("s"), Some(5)),
            Condition::Any,
        )
        .await
        .unwrap();
        s.put(
            indexed(kind, "late", None, Some("s"), Some(55)),
            Condition::Any,
        )
        .await
        .unwrap();
        q.cursor = first.next_cursor;
        let mut rest = Vec::new();
        loop {
            let page = s.query(q.clone()).await.unwrap();
            rest.extend(page.records.into_iter().map(|r| r.key));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(rest, ["m4", "m5", "late", "m6", "m7", "m8", "m9"]);
    }

    /// Expired records vanish at once; Absent writes succeed over them; purge removes them.
    pub async fn expiry(f: StoreFixture) {
        let (s, clock, kind) = (f.store, f.clock, Kind("c_exp"));
        let now = clock.now_ms();
        let expiring = |key: &str, ttl: i64| Record {
            expires_at_ms: Some(now + ttl),
            ..indexed(kind, key, Some("acc"), None, Some(1))
        };
        s.put(expiring("lease", 1_000), Condition::Absent)
            .await
            .unwrap();
        s.put(expiring("e2", 500), Condition::Any).await.unwrap();
        s.put(expiring("e3", 2_000), Condition::Any).await.unwrap();
        s.put(
            indexed(kind, "forever", Some("acc"), None, Some(1)),
            Condition::Any,
        )
        .await
        .unwrap();
        let acc = Query::new(kind, QueryIndex::Account("acc".into()));
        assert_eq!(s.query(acc.clone()).await.unwrap().records.len(), 4);

        clock.advance_ms(999);
        assert!(s.get(kind, "lease").await.unwrap().is_some());
        assert!(s.get(kind, "e2").await.unwrap().is_none());
        assert_eq!(
            s.version(kind, "e2").await.unwrap(),
            None,
            "an expired record has no version"
        );
        clock.advance_ms(1); // exactly at expires_at_ms: gone
        assert!(s.get(kind, "lease").await.unwrap().is_none());
        assert_eq!(
            keys(&s.query(acc.clone()).await.unwrap().records),
            ["e3", "forever"]
        );
        assert_condition_failed(
            s.put(expiring("lease", 5_000), Condition::Version(1)).await,
            None,
        );
        assert_condition_failed(s.delete(kind, "e2", Condition::Version(1)).await, None);

        // Taking over an expired lease.
        assert_eq!(
            s.put(expiring("lease", 5_000), Condition::Absent)
                .await
                .unwrap(),
            1
        );
        assert!(s.get(kind, "lease").await.unwrap().is_some());

        let purged = s.purge_expired().await.unwrap();
        if f.purge_counts {
            assert_eq!(purged, 1, "only e2 had expired and was still stored");
        }
        clock.advance_ms(10_000);
        let purged = s.purge_expired().await.unwrap();
        if f.purge_counts {
            assert_eq!(purged, 2, "lease and e3");
        }
        assert_eq!(keys(&s.query(acc).await.unwrap().records), ["forever"]);
        assert!(s.get(kind, "forever").await.unwrap().is_some());
        assert_eq!(s.purge_expired().await.unwrap(), 0);
    }

    /// 20 tasks increment one counter by compare-and-set; it ends at exactly 20.
    pub async fn concurrent_cas(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_cas"));
        s.put(rec(kind, "counter", json!({ "n": 0 })), Condition::Absent)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let mut conflicts = 0u32;
                    loop {
                        let cur = s.get(kind, "counter").await.unwrap().unwrap();
                        let n = cur.body.value()["n"].as_i64().unwrap();
                        match s
                            .put(
                                rec(kind, "counter", json!({ "n": n + 1 })),
                                Condition::Version(cur.version),
                            )
                            .await
                        {
                            Ok(_) => return conflicts,
                            Err(StoreError::ConditionFailed { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                        assert!(conflicts < 10_000, "livelock");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let end = s.get(kind, "counter").await.unwrap().unwrap();
        assert_eq!(end.body, json!({ "n": 20 }));
        assert_eq!(end.version, 21);
    }

    /// Ten tasks create one key with `Absent` at once: exactly one wins.
    /// Counters: 20 concurrent increments give 1..=20 exactly once each; expiry starts over.
    pub async fn increment_counts_atomically(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_incr"));
        let expires = f.clock.now_ms() + 60_000;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let s = Arc::clone(&s);
                tokio::spawn(
                    async move { s.increment(kind, "calls", Some(expires)).await.unwrap() },
                )
            })
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
        assert_eq!(
            s.get(kind, "calls").await.unwrap().unwrap().body.value()["count"],
            20
        );
        f.clock.advance_ms(60_000);
        assert_eq!(s.get(kind, "calls").await.unwrap(), None);
        assert_eq!(s.increment(kind, "calls", None).await.unwrap(), 1);
    }

    pub async fn concurrent_absent_one_winner(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_race"));
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(
                    async move { s.put(rec(kind, "idem", json!(i)), Condition::Absent).await },
                )
            })
            .collect();
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(v) => winners.push((i, v)),
                Err(StoreError::ConditionFailed {
                    current: Some(1), ..
                }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let got = s.get(kind, "idem").await.unwrap().unwrap();
        assert_eq!((got.body.value(), got.version), (json!(winners[0].0), 1));
    }

    /// Many concurrent compare-and-set writes on one key give exactly one winner per version:
    /// 20 rounds of 32 writers all conditioned on the same version (one wins, every other is
    /// told the version that beat it), then 32 writers racing read-then-write until 200 have
    /// won (every version is won once, no version is skipped, the record is the last winner's).
    pub async fn concurrent_cas_one_winner_per_version(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_cas_versions"));
        assert_eq!(
            s.put(rec(kind, "k", json!({ "by": null })), Condition::Absent)
                .await
                .unwrap(),
            1
        );
        for round in 1..=20u64 {
            let tasks: Vec<_> = (0..32)
                .map(|w| {
                    let s = Arc::clone(&s);
                    let body = json!({ "round": round, "by": w });
                    tokio::spawn(async move {
                        s.put(rec(kind, "k", body), Condition::Version(round)).await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for (w, t) in tasks.into_iter().enumerate() {
                match t.await.unwrap() {
                    Ok(v) => winners.push((w, v)),
                    Err(e) => assert_condition_failed::<u64>(Err(e), Some(round + 1)),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert_eq!(winners[0].1, round + 1);
            let got = s.get(kind, "k").await.unwrap().unwrap();
            assert_eq!(
                (got.version, got.body.value()),
                (round + 1, json!({ "round": round, "by": winners[0].0 }))
            );
        }

        let base = 21u64;
        let won = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..32)
            .map(|w| {
                let (s, won) = (Arc::clone(&s), Arc::clone(&won));
                tokio::spawn(async move {
                    loop {
                        if won.lock().unwrap().len() >= 200 {
                            return;
                        }
                        let cur = s.get(kind, "k").await.unwrap().unwrap();
                        let body = json!({ "by": w, "over": cur.version });
                        match s
                            .put(rec(kind, "k", body), Condition::Version(cur.version))
                            .await
                        {
                            Ok(v) => {
                                assert_eq!(v, cur.version + 1, "a win writes the next version");
                                won.lock().unwrap().push((v, w));
                            }
                            Err(StoreError::ConditionFailed {
                                current: Some(c), ..
                            }) => {
                                assert!(c > cur.version, "lost to {c}, read {}", cur.version)
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut won = won.lock().unwrap().clone();
        won.sort_unstable();
        let versions: Vec<u64> = won.iter().map(|(v, _)| *v).collect();
        let expected: Vec<u64> = (base + 1..=base + won.len() as u64).collect();
        assert_eq!(versions, expected, "each version won exactly once");
        let (last, by) = *won.last().unwrap();
        let got = s.get(kind, "k").await.unwrap().unwrap();
        assert_eq!(
            (got.version, got.body.value()),
            (last, json!({ "by": by, "over": last - 1 }))
        );
    }

    /// Bad keys, limits and cursors are refused as invalid.
    pub async fn invalid_requests(f: StoreFixture) {
        let (s, kind) = (f.store, Kind("c_inv"));
        assert!(matches!(s.get(kind, "").await, Err(StoreError::Invalid(_))));
        let long = "k".repeat(1025);
        assert!(matches!(
            s.put(rec(kind, &long, json!(1)), Condition::Any).await,
            Err(StoreError::Invalid(_))
        ));
        let ok_long = "k".repeat(1024);
        assert_eq!(
            s.put(rec(kind, &ok_long, json!(1)), Condition::Any)
                .await
                .unwrap(),
            1
        );
        let mut q = Query::new(kind, QueryIndex::All);
        q.limit = 0;
        assert!(matches!(
            s.query(q.clone()).await,
            Err(StoreError::Invalid(_))
        ));
        q.limit = 1001;
        assert!(matches!(
            s.query(q.clone()).await,
            Err(StoreError::Invalid(_))
        ));
        q.limit = 10;
        q.cursor = Some("not a cursor!".into());
        assert!(matches!(s.query(q).await, Err(StoreError::Invalid(_))));
    }
}

/// The queue cases.
pub mod queue {
    use super::super::queue::{MAX_DELAY, MAX_VISIBILITY};
    use super::super::{QueueStats, SystemClock};
    use super::*;

    const VIS: Duration = Duration::from_secs(30);
    const NOW: Duration = Duration::ZERO;
    /// How far before a deadline "just before" it is in real time: SQS rounds to seconds and
    /// starts its timers when it handles the request, a little after the case's origin.
    const REAL_EARLY: Duration = Duration::from_millis(700);
    /// How far past a deadline "reached" is in real time, for the same reasons.
    const REAL_LATE: Duration = Duration::from_millis(1000);
    /// How long approximate stats get to settle.
    const SETTLE: Duration = Duration::from_secs(5);

    /// A case's time: the fixture's manual clock, or real time on a real-time fixture, where
    /// durations are short whole seconds and every point is met with a margin.
    struct Time {
        clock: ManualClock,
        real_time: bool,
        origin: Instant,
        origin_ms: i64,
    }

    impl Time {
        fn of(f: &QueueFixture) -> Self {
            Self {
                clock: f.clock.clone(),
                real_time: f.real_time,
                origin: Instant::now(),
                origin_ms: f.clock.now_ms(),
            }
        }

        /// `manual` under a manual clock, `real` in real time.
        fn pick(&self, manual: Duration, real: Duration) -> Duration {
            if self.real_time {
                real
            } else {
                manual
            }
        }

        /// Counts from now on.
        fn restart(&mut self) {
            self.origin = Instant::now();
            self.origin_ms = self.clock.now_ms();
        }

        /// Moves to `d` after the origin.
        async fn at(&self, d: Duration) {
            if self.real_time {
                tokio::time::sleep_until((self.origin + d).into()).await;
            } else {
                self.clock.set_ms(self.origin_ms + d.as_millis() as i64);
            }
        }

        /// Moves to just before `d` after the origin.
        async fn just_before(&self, d: Duration) {
            self.at(d - self.pick(Duration::from_millis(1), REAL_EARLY))
                .await
        }

        /// Moves to `d` after the origin, or a margin past it in real time.
        async fn reached(&self, d: Duration) {
            self.at(d + self.pick(Duration::ZERO, REAL_LATE)).await
        }

        /// Now in Unix ms, by the clock the backend stamps messages with.
        fn now_ms(&self) -> i64 {
            if self.real_time {
                SystemClock.now_ms()
            } else {
                self.clock.now_ms()
            }
        }

        /// `sent_at_ms` of a message sent between `before` and `after` (of [`Time::now_ms`]).
        fn assert_sent_at(&self, sent_at_ms: i64, before: i64, after: i64) {
            let slack = if self.real_time { 1_000 } else { 0 };
            assert!(
                (before - slack..=after + slack).contains(&sent_at_ms),
                "sent at {sent_at_ms}, expected within {before}..={after}"
            );
        }
    }

    fn assert_stale(r: Result<(), QueueError>) {
        assert!(
            matches!(r, Err(QueueError::StaleReceipt(_))),
            "expected StaleReceipt, got {r:?}"
        );
    }

    /// A receipt that is no longer the latest delivery's: refused, or accepted (SQS) without
    /// bringing the message back.
    fn assert_stale_or_ok(r: Result<(), QueueError>) {
        assert!(
            matches!(r, Ok(()) | Err(QueueError::StaleReceipt(_))),
            "expected StaleReceipt or Ok, got {r:?}"
        );
    }

    fn assert_invalid<T: std::fmt::Debug>(r: Result<T, QueueError>) {
        assert!(
            matches!(r, Err(QueueError::Invalid(_))),
            "expected Invalid, got {r:?}"
        );
    }

    /// The stats of `queue` once `want` holds, polling for up to [`SETTLE`] (they are
    /// approximate on SQS); fails with the last reading otherwise.
    async fn settled(
        q: &Arc<dyn Queue>,
        queue: &str,
        what: &str,
        want: impl Fn(&QueueStats) -> bool,
    ) -> QueueStats {
        let deadline = Instant::now() + SETTLE;
        loop {
            let st = q.stats(queue).await.unwrap();
            if want(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "stats of {queue} did not settle at {what} within {SETTLE:?}: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stats settle at (visible, in flight, delayed).
    async fn assert_counts(q: &Arc<dyn Queue>, queue: &str, counts: (u64, u64, u64)) {
        settled(q, queue, &format!("{counts:?}"), |st| {
            (st.visible, st.in_flight, st.delayed) == counts
        })
        .await;
    }

    /// Send, receive, ack; an acked message is gone for good, and its receipt is no good.
    pub async fn send_receive_ack(f: QueueFixture) {
        let t = Time::of(&f);
        let q = f.queue;
        let vis = t.pick(VIS, Duration::from_secs(2));
        let before = t.now_ms();
        let id = q.send("jobs", "hello", NOW).await.unwrap();
        let after = t.now_ms();
        assert_counts(&q, "jobs", (1, 0, 0)).await;
        let got = q.receive("jobs", 10, vis, NOW).await.unwrap();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(
            (m.id.as_str(), m.body.as_str(), m.receive_count),
            (id.as_str(), "hello", 1)
        );
        t.assert_sent_at(m.sent_at_ms, before, after);
        assert_counts(&q, "jobs", (0, 1, 0)).await;
        assert!(q.receive("jobs", 10, vis, NOW).await.unwrap().is_empty());
        q.ack("jobs", &m.receipt).await.unwrap();
        assert_stale_or_ok(q.ack("jobs", &m.receipt).await);
        assert_stale(q.ack("jobs", "no-such-receipt").await);
        assert_counts(&q, "jobs", (0, 0, 0)).await;
        t.reached(vis).await;
        assert!(q.receive("jobs", 10, vis, NOW).await.unwrap().is_empty());
    }

    /// A delayed message is invisible until its delay passes.
    pub async fn delay(f: QueueFixture) {
        let t = Time::of(&f);
        let q = f.queue;
        let d = t.pick(Duration::from_secs(10), Duration::from_secs(2));
        q.send("delayed", "later", d).await.unwrap();
        q.send("delayed", "now", NOW).await.unwrap();
        let got = q.receive("delayed", 10, VIS, NOW).await.unwrap();
        assert_eq!(
            got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["now"]
        );
        assert_counts(&q, "delayed", (0, 1, 1)).await;
        t.just_before(d).await;
        assert!(q.receive("delayed", 10, VIS, NOW).await.unwrap().is_empty());
        t.reached(d).await;
        let got = q.receive("delayed", 10, VIS, NOW).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].body.as_str(), got[0].receive_count), ("later", 1));
        assert_invalid(
            q.send("delayed", "x", MAX_DELAY + Duration::from_secs(1))
                .await,
        );
    }

    /// A delay longer than SQS's 15 minutes is kept: the message stays hidden from a consumer
    /// polling all along, then comes once, with the id `send` returned and its send time.
    /// A real-time fixture runs this on its adapter with short hops, so the chain of re-sends
    /// that keeps such a delay on SQS really runs.
    pub async fn long_delay(f: QueueFixture) {
        let t = Time::of(&f);
        let (q, d) = match &f.long_delay_hops {
            Some((q, hop)) => (Arc::clone(q), *hop * 2 + *hop / 2),
            None => (Arc::clone(&f.queue), Duration::from_secs(40 * 60)),
        };
        let before = t.now_ms();
        let id = q.send("later", "in a while", d).await.unwrap();
        let after = t.now_ms();
        // Poll as a consumer would, until just before the delay is over.
        let poll = t.pick(Duration::ZERO, Duration::from_secs(1));
        let step = t.pick(Duration::from_secs(5 * 60), Duration::ZERO);
        let mut at = Duration::ZERO;
        loop {
            at += step;
            if at + poll + t.pick(Duration::from_millis(1), REAL_EARLY) >= d {
                break;
            }
            t.at(at).await;
            let got = q.receive("later", 10, VIS, poll).await.unwrap();
            assert!(got.is_empty(), "delivered early: {got:?}");
            if t.real_time {
                at = t.origin.elapsed();
            }
        }
        t.just_before(d).await;
        assert!(q.receive("later", 10, VIS, NOW).await.unwrap().is_empty());
        t.reached(d).await;
        let got = q
            .receive("later", 10, VIS, t.pick(NOW, Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        let m = &got[0];
        assert_eq!(
            (m.id.as_str(), m.body.as_str(), m.receive_count),
            (id.as_str(), "in a while", 1)
        );
        t.assert_sent_at(m.sent_at_ms, before, after);
        q.ack("later", &m.receipt).await.unwrap();
        assert!(q.receive("later", 10, VIS, NOW).await.unwrap().is_empty());
        assert_counts(&q, "later", (0, 0, 0)).await;
        // The longest delay is accepted.
        q.send("later", "much later", MAX_DELAY).await.unwrap();
    }

    /// An unacked message comes back after its visibility timeout, with a new receipt; the old
    /// receipt cannot bring it back a third time.
    pub async fn visibility_timeout_redelivery(f: QueueFixture) {
        let mut t = Time::of(&f);
        let q = f.queue;
        let vis = t.pick(VIS, Duration::from_secs(2));
        let id = q.send("vis", "job", NOW).await.unwrap();
        t.restart();
        let first = q.receive("vis", 1, vis, NOW).await.unwrap().remove(0);
        t.just_before(vis).await;
        assert!(q.receive("vis", 1, vis, NOW).await.unwrap().is_empty());
        t.reached(vis).await;
        settled(&q, "vis", "visible again", |st| {
            (st.visible, st.in_flight) == (1, 0)
        })
        .await;
        let second = q.receive("vis", 1, vis, NOW).await.unwrap().remove(0);
        assert_eq!(
            (
                second.id.as_str(),
                second.body.as_str(),
                second.receive_count
            ),
            (id.as_str(), "job", 2)
        );
        assert_ne!(first.receipt, second.receipt);
        assert_eq!(first.sent_at_ms, second.sent_at_ms);
        assert_stale_or_ok(q.ack("vis", &first.receipt).await);
        assert_stale_or_ok(q.extend("vis", &first.receipt, vis).await);
        q.ack("vis", &second.receipt).await.unwrap();
        assert_counts(&q, "vis", (0, 0, 0)).await;
        t.restart();
        t.reached(vis).await;
        assert!(q.receive("vis", 1, vis, NOW).await.unwrap().is_empty());
    }

    /// `extend` pushes visibility out from now.
    pub async fn extend(f: QueueFixture) {
        let mut t = Time::of(&f);
        let q = f.queue;
        let secs = |manual, real| t.pick(Duration::from_secs(manual), Duration::from_secs(real));
        let (first_vis, extended_at, extended, due) =
            (secs(10, 2), secs(5, 1), secs(20, 3), secs(25, 4));
        q.send("ext", "long job", NOW).await.unwrap();
        t.restart();
        let m = q.receive("ext", 1, first_vis, NOW).await.unwrap().remove(0);
        t.at(extended_at).await;
        q.extend("ext", &m.receipt, extended).await.unwrap();
        t.just_before(due).await; // past the original timeout
        assert!(q.receive("ext", 1, VIS, NOW).await.unwrap().is_empty());
        settled(&q, "ext", "in flight", |st| st.in_flight == 1).await;
        t.reached(due).await;
        let again = q.receive("ext", 1, VIS, NOW).await.unwrap().remove(0);
        assert_eq!(again.receive_count, 2);
        // Extending with zero makes it visible at once.
        q.extend("ext", &again.receipt, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            q.receive("ext", 1, VIS, NOW).await.unwrap()[0].receive_count,
            3
        );
        assert_invalid(
            q.extend(
                "ext",
                &again.receipt,
                MAX_VISIBILITY + Duration::from_secs(1),
            )
            .await,
        );
    }

    /// After `max_receives` deliveries the message moves to the dead-letter queue.
    pub async fn dead_letter(f: QueueFixture) {
        let mut t = Time::of(&f);
        let q = f.queue;
        let vis = t.pick(VIS, Duration::from_secs(1));
        let id = q.send("poison", "bad job", NOW).await.unwrap();
        q.send(
            "poison",
            "good job",
            t.pick(Duration::from_secs(900), Duration::from_secs(60)),
        )
        .await
        .unwrap();
        for n in 1..=f.max_receives {
            let got = q.receive("poison", 10, vis, NOW).await.unwrap();
            assert_eq!(got.len(), 1, "delivery {n}");
            assert_eq!(got[0].receive_count, n);
            t.restart();
            t.reached(vis).await;
        }
        assert!(q.receive("poison", 10, vis, NOW).await.unwrap().is_empty());
        assert_counts(&q, "poison", (0, 0, 1)).await;
        let dlq = dead_letter_queue("poison");
        settled(&q, &dlq, "one visible", |st| st.visible == 1).await;
        let dead = q.receive(&dlq, 10, VIS, NOW).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].id.as_str(), dead[0].body.as_str()),
            (id.as_str(), "bad job")
        );
        q.ack(&dlq, &dead[0].receipt).await.unwrap();
        assert_counts(&q, &dlq, (0, 0, 0)).await;
    }

    /// A waiting receive returns as soon as a message is sent.
    pub async fn long_poll_wakes_on_send(f: QueueFixture) {
        let q = f.queue;
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                let started = Instant::now();
                let got = q
                    .receive("lp", 10, VIS, Duration::from_secs(5))
                    .await
                    .unwrap();
                (got, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        q.send("lp", "wake up", NOW).await.unwrap();
        let (got, waited) = waiter.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "wake up");
        assert!(
            waited >= Duration::from_millis(100),
            "returned before the send: {waited:?}"
        );
        assert!(waited < Duration::from_secs(2), "woke late: {waited:?}");
    }

    /// A long poll on an empty queue returns empty after about `wait`.
    pub async fn long_poll_times_out(f: QueueFixture) {
        let started = Instant::now();
        let got = f
            .queue
            .receive("lp-empty", 10, VIS, Duration::from_millis(300))
            .await
            .unwrap();
        let waited = started.elapsed();
        assert!(got.is_empty());
        assert!(
            waited >= Duration::from_millis(250),
            "returned early: {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "returned late: {waited:?}");
    }

    /// Receives take at most `max`; every message is delivered once; counts add up.
    pub async fn batches_and_stats(f: QueueFixture) {
        let q = f.queue;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(q.send("batch", &format!("m{i}"), NOW).await.unwrap());
        }
        let bodies: Vec<String> = (5..15).map(|i| format!("m{i}")).collect();
        let batch_ids = q.send_batch("batch", &bodies, NOW).await.unwrap();
        assert_eq!(batch_ids.len(), 10);
        ids.extend(batch_ids);
        assert!(q.send_batch("batch", &[], NOW).await.unwrap().is_empty());
        q.send("batch", "delayed", Duration::from_secs(60))
            .await
            .unwrap();
        assert_counts(&q, "batch", (15, 0, 1)).await;
        // SQS may answer a receive with fewer than are visible, never with more than `max`.
        let mut received = Vec::new();
        let mut batches = 0;
        loop {
            let batch = q.receive("batch", 10, VIS, NOW).await.unwrap();
            assert!(batch.len() <= 10, "{} in one batch", batch.len());
            if batch.is_empty() {
                break;
            }
            batches += 1;
            received.extend(batch);
        }
        assert!(
            batches >= 2,
            "15 messages in {batches} batches of at most 10"
        );
        let mut got: Vec<String> = received.iter().map(|m| m.id.clone()).collect();
        got.sort();
        ids.sort();
        assert_eq!(got, ids);
        assert_counts(&q, "batch", (0, 15, 1)).await;
        let mut bodies: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
        bodies.sort_by_key(|b| b[1..].parse::<u32>().unwrap());
        let expected: Vec<String> = (0..15).map(|i| format!("m{i}")).collect();
        assert_eq!(bodies, expected, "every body of both kinds of send arrives");
        for m in received.iter().take(2) {
            q.ack("batch", &m.receipt).await.unwrap();
        }
        let receipts: Vec<String> = received[2..12].iter().map(|m| m.receipt.clone()).collect();
        let acked = q.ack_batch("batch", &receipts).await;
        assert_eq!(acked.len(), 10);
        assert!(acked.iter().all(Result::is_ok), "{acked:?}");
        settled(&q, "batch", "3 in flight", |st| st.in_flight == 3).await;
        assert_invalid(q.receive("batch", 0, VIS, NOW).await);
        assert_invalid(q.receive("batch", 11, VIS, NOW).await);
    }

    /// Concurrent consumers never get one message twice within its visibility timeout.
    pub async fn concurrent_consumers(f: QueueFixture) {
        let q = f.queue;
        for i in 0..100 {
            q.send("shared", &format!("m{i}"), NOW).await.unwrap();
        }
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let q = Arc::clone(&q);
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    loop {
                        let got = q.receive("shared", 10, VIS, NOW).await.unwrap();
                        if got.is_empty() {
                            return ids;
                        }
                        for m in got {
                            q.ack("shared", &m.receipt).await.unwrap();
                            ids.push(m.id);
                        }
                    }
                })
            })
            .collect();
        let mut ids = Vec::new();
        for c in consumers {
            ids.extend(c.await.unwrap());
        }
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((total, ids.len()), (100, 100));
        assert_counts(&q, "shared", (0, 0, 0)).await;
    }

    /// Queues do not see each other's messages or receipts.
    pub async fn queues_are_separate(f: QueueFixture) {
        let q = f.queue;
        q.send("q-one", "1", NOW).await.unwrap();
        assert!(q.receive("q_two", 10, VIS, NOW).await.unwrap().is_empty());
        let m = q.receive("q-one", 10, VIS, NOW).await.unwrap().remove(0);
        assert_stale(q.ack("q_two", &m.receipt).await);
        q.ack("q-one", &m.receipt).await.unwrap();
    }

    /// Bad names and oversized bodies are refused.
    pub async fn invalid_requests(f: QueueFixture) {
        let q = f.queue;
        for name in [
            "",
            "has space",
            "dots.not.allowed",
            "slash/no",
            &"x".repeat(81),
        ] {
            assert_invalid(q.send(name, "x", NOW).await);
            assert_invalid(q.receive(name, 1, VIS, NOW).await);
            assert_invalid(q.ack(name, "r").await);
            assert_invalid(q.stats(name).await);
        }
        q.send(&"x".repeat(f.max_name_len), "ok", NOW)
            .await
            .unwrap();
        assert_invalid(q.send("big", &"b".repeat(MAX_MESSAGE_BYTES + 1), NOW).await);
        q.send("big", &"b".repeat(MAX_MESSAGE_BYTES), NOW)
            .await
            .unwrap();
        let m = q.receive("big", 1, VIS, NOW).await.unwrap().remove(0);
        assert_eq!(m.body.len(), MAX_MESSAGE_BYTES);
    }
}

/// The object store cases.
pub mod objects {
    use super::*;

    async fn read(objects: &Arc<dyn ObjectStore>, key: &str) -> Option<Vec<u8>> {
        let mut reader = objects.get(key).await.unwrap()?;
        let mut buf = Vec::new();
        reader.body.read_to_end(&mut buf).await.unwrap();
        assert_eq!(reader.meta.size, buf.len() as u64);
        assert_eq!(reader.meta.key, key);
        Some(buf)
    }

    /// Bytes round-trip; a missing key reads as `None`.
    pub async fn put_get_bytes(f: ObjectFixture) {
        let o = f.objects;
        let meta = o
            .put_bytes(
                "snap/a.jpg",
                bytes::Bytes::from_static(b"jpeg bytes"),
                "image/jpeg",
            )
            .await
            .unwrap();
        assert_eq!((meta.key.as_str(), meta.size), ("snap/a.jpg", 10));
        assert!(meta.modified_ms > 0);
        assert_eq!(read(&o, "snap/a.jpg").await.unwrap(), b"jpeg bytes");
        assert!(o.get("snap/missing.jpg").await.unwrap().is_none());
        assert!(o.get("snap/a.jpg/below-a-file").await.unwrap().is_none());
        let empty = o
            .put_bytes("empty", bytes::Bytes::new(), "application/octet-stream")
            .await
            .unwrap();
        assert_eq!(empty.size, 0);
        assert_eq!(read(&o, "empty").await.unwrap(), b"");
    }

    /// A file is stored whole and the source stays the caller's.
    pub async fn put_file(f: ObjectFixture) {
        let o = f.objects;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let src = f.scratch.join("segment.mp4");
        tokio::fs::write(&src, &data).await.unwrap();
        let meta = o
            .put_file("rec/2026/task1/part-0001.mp4", &src, "video/mp4")
            .await
            .unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(
            read(&o, "rec/2026/task1/part-0001.mp4").await.unwrap(),
            data
        );
        assert!(src.exists(), "put_file must not consume its source");
        let missing = f.scratch.join("does-not-exist");
        assert!(o
            .put_file("rec/x.mp4", &missing, "video/mp4")
            .await
            .is_err());
        assert!(o.get("rec/x.mp4").await.unwrap().is_none());
    }

    /// A second put replaces the object.
    pub async fn overwrite(f: ObjectFixture) {
        let o = f.objects;
        o.put_bytes(
            "k.txt",
            bytes::Bytes::from_static(b"first version"),
            "text/plain",
        )
        .await
        .unwrap();
        o.put_bytes("k.txt", bytes::Bytes::from_static(b"second"), "text/plain")
            .await
            .unwrap();
        assert_eq!(read(&o, "k.txt").await.unwrap(), b"second");
        assert_eq!(o.list("k").await.unwrap().len(), 1);
    }

    /// `list` filters by prefix and returns keys in lexicographic order.
    pub async fn list_by_prefix_in_order(f: ObjectFixture) {
        let o = f.objects;
        for key in [
            "l/b.ts", "l/a.ts", "l/a/c.ts", "l-x.ts", "m/z.ts", "l/a0.ts", "la.ts",
        ] {
            o.put_bytes(
                key,
                bytes::Bytes::from(key.as_bytes().to_vec()),
                "video/mp2t",
            )
            .await
            .unwrap();
        }
        let keys =
            |v: Vec<super::super::ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
        assert_eq!(
            keys(o.list("l/").await.unwrap()),
            ["l/a.ts", "l/a/c.ts", "l/a0.ts", "l/b.ts"]
        );
        assert_eq!(
            keys(o.list("l/a").await.unwrap()),
            ["l/a.ts", "l/a/c.ts", "l/a0.ts"]
        );
        assert_eq!(
            keys(o.list("l").await.unwrap()),
            ["l-x.ts", "l/a.ts", "l/a/c.ts", "l/a0.ts", "l/b.ts", "la.ts"]
        );
        assert_eq!(
            keys(o.list("").await.unwrap()),
            ["l-x.ts", "l/a.ts", "l/a/c.ts", "l/a0.ts", "l/b.ts", "la.ts", "m/z.ts"]
        );
        assert!(o.list("nothing/").await.unwrap().is_empty());
        let metas = o.list("m/").await.unwrap();
        assert_eq!(metas[0].size, "m/z.ts".len() as u64);
    }

    /// Deleting removes the object; deleting again, or something never stored, is fine.
    pub async fn delete_idempotent(f: ObjectFixture) {
        let o = f.objects;
        o.put_bytes("d/one.flv", bytes::Bytes::from_static(b"1"), "video/x-flv")
            .await
            .unwrap();
        o.put_bytes("d/two.flv", bytes::Bytes::from_static(b"2"), "video/x-flv")
            .await
            .unwrap();
        o.delete("d/one.flv").await.unwrap();
        assert!(o.get("d/one.flv").await.unwrap().is_none());
        o.delete("d/one.flv").await.unwrap();
        o.delete("never/was.flv").await.unwrap();
        let left: Vec<_> = o
            .list("d/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(left, ["d/two.flv"]);
        o.delete("d/two.flv").await.unwrap();
        assert!(o.list("").await.unwrap().is_empty());
        // The key can be used again, also as a directory.
        o.put_bytes("d", bytes::Bytes::from_static(b"now a file"), "text/plain")
            .await
            .unwrap();
        assert_eq!(read(&o, "d").await.unwrap(), b"now a file");
    }

    /// Keys that are not safe relative paths are refused by every operation.
    pub async fn invalid_keys(f: ObjectFixture) {
        let o = f.objects;
        let src = f.scratch.join("src.bin");
        tokio::fs::write(&src, b"x").await.unwrap();
        for key in [
            "../x",
            "/abs",
            "a//b",
            "",
            "a/./b",
            "a/../../b",
            "trailing/",
            "sp ace",
            "a\\b",
            "ü",
        ] {
            let invalid = |r: Result<(), ObjectStoreError>| {
                assert!(
                    matches!(r, Err(ObjectStoreError::InvalidKey(_))),
                    "key {key:?}: {r:?}"
                )
            };
            invalid(
                o.put_bytes(key, bytes::Bytes::from_static(b"x"), "text/plain")
                    .await
                    .map(drop),
            );
            invalid(o.put_file(key, &src, "text/plain").await.map(drop));
            invalid(o.get(key).await.map(drop));
            invalid(o.delete(key).await);
            invalid(o.playback_url(key, Duration::from_secs(60)).await.map(drop));
        }
        assert!(o.list("").await.unwrap().is_empty());
    }

    /// A range read yields exactly the bytes asked for, fewer at the end, none past it; the
    /// metadata is the whole object's.
    pub async fn get_range(f: ObjectFixture) {
        let o = f.objects;
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        o.put_bytes("r/a.mp4", bytes::Bytes::from(data.clone()), "video/mp4")
            .await
            .unwrap();
        let range = |offset: u64, len: Option<u64>| {
            let o = o.clone();
            async move {
                let mut reader = o
                    .get_range("r/a.mp4", offset, len)
                    .await
                    .unwrap()
                    .expect("the object exists");
                assert_eq!(reader.meta.size, 10_000);
                let mut buf = Vec::new();
                reader.body.read_to_end(&mut buf).await.unwrap();
                buf
            }
        };
        assert_eq!(range(0, Some(100)).await, &data[..100]);
        assert_eq!(range(4321, Some(1000)).await, &data[4321..5321]);
        assert_eq!(range(9990, Some(100)).await, &data[9990..]);
        assert_eq!(range(9000, None).await, &data[9000..]);
        assert!(range(10_000, Some(10)).await.is_empty());
        assert!(range(20_000, Some(10)).await.is_empty());
        assert!(o
            .get_range("r/missing.mp4", 0, Some(1))
            .await
            .unwrap()
            .is_none());
        assert!(matches!(
            o.get_range("../x", 0, Some(1)).await,
            Err(ObjectStoreError::InvalidKey(_))
        ));
    }

    /// A playback URL names the key, and fetched without credentials gives the object's bytes.
    pub async fn playback_url(f: ObjectFixture) {
        let o = f.objects;
        o.put_bytes(
            "rec/p.m3u8",
            bytes::Bytes::from_static(b"#EXTM3U\n"),
            "application/vnd.apple.mpegurl",
        )
        .await
        .unwrap();
        let url = o
            .playback_url("rec/p.m3u8", Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(
            url.starts_with("http://") || url.starts_with("https://"),
            "{url}"
        );
        assert!(url.contains("rec/p.m3u8"), "{url}");
        if f.fetch_urls {
            let response = reqwest::get(&url).await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            assert_eq!(&response.bytes().await.unwrap()[..], b"#EXTM3U\n");
        }
    }
}
