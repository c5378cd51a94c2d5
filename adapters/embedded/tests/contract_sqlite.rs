//! The port contract suites against the embedded adapters (SQLite store and queue, directory
//! object store), plus what only they promise: durability across an unclean drop, clear open
//! errors, and playback URL signatures.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use relaycast_core::ports::contract::{
    run_object_contract, run_queue_contract, run_store_contract, ObjectFixture, QueueFixture,
    StoreFixture,
};
use relaycast_core::ports::{
    Clock, Condition, IndexKeys, Kind, ManualClock, ObjectStore, Query, QueryIndex, Queue,
    QueueError, Record, Store, StoreError,
};
use relaycast_embedded::{DirObjectStore, SqliteQueue, SqliteStore};
use serde_json::json;
use tempfile::TempDir;

const MAX_RECEIVES: u32 = 3;

fn clock() -> ManualClock {
    ManualClock::new(1_700_000_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract() {
    run_store_contract(|| async {
        let dir = TempDir::new().unwrap();
        let clock = clock();
        let store =
            SqliteStore::open(&dir.path().join("relaycast.db"), Arc::new(clock.clone())).unwrap();
        StoreFixture {
            store: Arc::new(store),
            clock,
            purge_counts: true,
            guard: Box::new(dir),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_contract() {
    run_queue_contract(|| async {
        let dir = TempDir::new().unwrap();
        let clock = clock();
        let queue = SqliteQueue::open_with_max_receives(
            &dir.path().join("relaycast.db"),
            Arc::new(clock.clone()),
            MAX_RECEIVES,
        )
        .unwrap();
        QueueFixture {
            queue: Arc::new(queue),
            clock,
            real_time: false,
            max_receives: MAX_RECEIVES,
            max_name_len: 80,
            long_delay_hops: None,
            guard: Box::new(dir),
        }
    })
    .await;
}

/// The queue sharing its file with a store, as `relaycast up` runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_contract_sharing_the_store_file() {
    run_queue_contract(|| async {
        let dir = TempDir::new().unwrap();
        let clock = clock();
        let path = dir.path().join("relaycast.db");
        let store = SqliteStore::open(&path, Arc::new(clock.clone())).unwrap();
        let queue =
            SqliteQueue::open_with_max_receives(&path, Arc::new(clock.clone()), MAX_RECEIVES)
                .unwrap();
        QueueFixture {
            queue: Arc::new(queue),
            clock,
            real_time: false,
            max_receives: MAX_RECEIVES,
            max_name_len: 80,
            long_delay_hops: None,
            guard: Box::new((dir, store)),
        }
    })
    .await;
}

fn open_objects(root: &Path, clock: &ManualClock) -> DirObjectStore {
    DirObjectStore::open(
        root,
        "http://127.0.0.1:8080/".into(),
        b"playback secret".to_vec(),
        Arc::new(clock.clone()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_contract() {
    run_object_contract(|| async {
        let dir = TempDir::new().unwrap();
        let clock = clock();
        let objects = open_objects(&dir.path().join("objects"), &clock);
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        ObjectFixture {
            objects: Arc::new(objects),
            clock,
            scratch,
            // The URL needs the host's `/objects/` route (tested with the host).
            fetch_urls: false,
            guard: Box::new(dir),
        }
    })
    .await;
}

fn query_param<'a>(url: &'a str, name: &str) -> &'a str {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap()
}

#[tokio::test]
async fn playback_url_signature() {
    let dir = TempDir::new().unwrap();
    let clock = clock();
    let objects = open_objects(dir.path(), &clock);
    objects
        .put_bytes("rec/a.mp4", bytes::Bytes::from_static(b"mp4"), "video/mp4")
        .await
        .unwrap();
    let url = objects
        .playback_url("rec/a.mp4", Duration::from_secs(600))
        .await
        .unwrap();
    let expires: i64 = query_param(&url, "expires").parse().unwrap();
    let sig = query_param(&url, "sig");
    assert!(
        url.starts_with("http://127.0.0.1:8080/objects/rec/a.mp4?"),
        "{url}"
    );
    assert_eq!(expires, clock.now_ms() / 1000 + 600);
    assert_eq!(sig.len(), 64);

    assert!(objects.verify_playback_signature("rec/a.mp4", expires, sig));
    assert!(
        !objects.verify_playback_signature("rec/b.mp4", expires, sig),
        "other key"
    );
    assert!(
        !objects.verify_playback_signature("rec/a.mp4", expires + 1, sig),
        "altered expiry"
    );
    let mut altered = sig.to_string();
    altered.replace_range(0..1, if &sig[0..1] == "0" { "1" } else { "0" });
    assert!(
        !objects.verify_playback_signature("rec/a.mp4", expires, &altered),
        "altered signature"
    );
    assert!(!objects.verify_playback_signature("rec/a.mp4", expires, "not hex"));
    assert!(!objects.verify_playback_signature("rec/a.mp4", expires, ""));

    // Another key signs differently.
    let other = DirObjectStore::open(
        dir.path(),
        "http://h".into(),
        b"other secret".to_vec(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    assert!(!other.verify_playback_signature("rec/a.mp4", expires, sig));

    clock.advance_ms(600_000);
    assert!(
        objects.verify_playback_signature("rec/a.mp4", expires, sig),
        "valid through its last second"
    );
    clock.advance_ms(1_000);
    assert!(
        !objects.verify_playback_signature("rec/a.mp4", expires, sig),
        "expired"
    );
}

#[tokio::test]
async fn interrupted_uploads_are_cleared_at_open() {
    let dir = TempDir::new().unwrap();
    let clock = clock();
    let objects = open_objects(dir.path(), &clock);
    objects
        .put_bytes("kept.ts", bytes::Bytes::from_static(b"ts"), "video/mp2t")
        .await
        .unwrap();
    drop(objects);
    let tmp = dir.path().join("tmp");
    std::fs::write(tmp.join("abandoned"), b"partial").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(tmp.join("abandoned"))
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    std::fs::write(tmp.join("in-progress"), b"partial").unwrap();
    let objects = open_objects(dir.path(), &clock);
    let keys: Vec<_> = objects
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["kept.ts"]);
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["in-progress"]);
}

/// Every acknowledged write and every unacked message survive the adapters being dropped without
/// any clean close (the lead's SIGKILL test covers a real process kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_across_unclean_drop() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("relaycast.db");
    let clock = clock();
    let kind = Kind("tasks");
    let mut acked_messages = Vec::new();
    {
        let store = SqliteStore::open(&path, Arc::new(clock.clone())).unwrap();
        let queue = SqliteQueue::open(&path, Arc::new(clock.clone())).unwrap();
        for i in 0..200 {
            let record = Record {
                index: IndexKeys {
                    account: Some("acc".into()),
                    status: None,
                    time_ms: Some(i),
                },
                ..Record::new(kind, format!("task-{i:03}"), json!({ "i": i }))
            };
            store.put(record, Condition::Absent).await.unwrap();
        }
        store
            .put(
                Record::new(kind, "task-000", json!({ "i": "updated" })),
                Condition::Version(1),
            )
            .await
            .unwrap();
        store
            .delete(kind, "task-199", Condition::Any)
            .await
            .unwrap();
        for i in 0..50 {
            queue
                .send("jobs", &format!("job-{i}"), Duration::ZERO)
                .await
                .unwrap();
        }
        queue
            .send("jobs", "delayed", Duration::from_secs(60))
            .await
            .unwrap();
        // Ten received and acked, ten received and left in flight.
        for m in queue
            .receive("jobs", 10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap()
        {
            queue.ack("jobs", &m.receipt).await.unwrap();
            acked_messages.push(m.body);
        }
        assert_eq!(
            queue
                .receive("jobs", 10, Duration::from_secs(30), Duration::ZERO)
                .await
                .unwrap()
                .len(),
            10
        );
        // No Drop, no checkpoint, no close: the connections are simply abandoned.
        std::mem::forget(store);
        std::mem::forget(queue);
    }

    let store = SqliteStore::open(&path, Arc::new(clock.clone())).unwrap();
    let queue = SqliteQueue::open(&path, Arc::new(clock.clone())).unwrap();
    let first = store.get(kind, "task-000").await.unwrap().unwrap();
    assert_eq!(
        (first.body.value(), first.version),
        (json!({ "i": "updated" }), 2)
    );
    assert!(store.get(kind, "task-199").await.unwrap().is_none());
    let mut q = Query::new(kind, QueryIndex::Account("acc".into()));
    q.limit = 1000;
    // task-000 lost its index keys in the update.
    assert_eq!(store.query(q).await.unwrap().records.len(), 198);

    let st = queue.stats("jobs").await.unwrap();
    assert_eq!((st.visible, st.in_flight, st.delayed), (30, 10, 1));
    clock.advance_ms(60_000);
    let mut bodies = Vec::new();
    loop {
        let got = queue
            .receive("jobs", 10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        bodies.extend(got.into_iter().map(|m| m.body));
    }
    assert_eq!(bodies.len(), 41);
    assert!(bodies.iter().all(|b| !acked_messages.contains(b)));
}

#[test]
fn open_errors_name_the_path() {
    let dir = TempDir::new().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(clock());

    let garbage = dir.path().join("not-a-db.sqlite");
    std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
    match SqliteStore::open(&garbage, Arc::clone(&clock)) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("not-a-db.sqlite"), "{msg}"),
        other => panic!("expected Backend error, got {other:?}"),
    }
    match SqliteQueue::open(&garbage, Arc::clone(&clock)) {
        Err(QueueError::Backend(msg)) => assert!(msg.contains("not-a-db.sqlite"), "{msg}"),
        other => panic!("expected Backend error, got {other:?}"),
    }

    // A directory that cannot be created (its parent is a file); fails even when run as root.
    let blocked = dir.path().join("a-file").join("relaycast.db");
    std::fs::write(dir.path().join("a-file"), b"").unwrap();
    match SqliteStore::open(&blocked, Arc::clone(&clock)) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("a-file"), "{msg}"),
        other => panic!("expected Backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn reopen_keeps_schema_and_data() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite");
    let clock = clock();
    let store = SqliteStore::open(&path, Arc::new(clock.clone())).unwrap();
    store
        .put(Record::new(Kind("k"), "a", json!(1)), Condition::Absent)
        .await
        .unwrap();
    drop(store);
    let store = SqliteStore::open(&path, Arc::new(clock.clone())).unwrap();
    assert_eq!(store.get(Kind("k"), "a").await.unwrap().unwrap().version, 1);
}

/// Set in the child process of [`durable_across_process_abort`]: where to write before aborting.
const CRASH_DIR_ENV: &str = "RELAYCAST_TEST_CRASH_DIR";

/// The child half of [`durable_across_process_abort`]: writes, then aborts the process with the
/// database open (no destructors, no checkpoint), as a crash or SIGKILL would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by durable_across_process_abort in a child process"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let path = Path::new(&dir).join("relaycast.db");
    let clock: Arc<dyn Clock> = Arc::new(clock());
    let store = SqliteStore::open(&path, Arc::clone(&clock)).unwrap();
    let queue = SqliteQueue::open(&path, clock).unwrap();
    for i in 0..100 {
        store
            .put(
                Record::new(Kind("crash"), format!("r{i:03}"), json!(i)),
                Condition::Absent,
            )
            .await
            .unwrap();
    }
    for i in 0..30 {
        queue
            .send("crash-jobs", &format!("m{i}"), Duration::ZERO)
            .await
            .unwrap();
    }
    let got = queue
        .receive("crash-jobs", 10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    for m in &got[..5] {
        queue.ack("crash-jobs", &m.receipt).await.unwrap();
    }
    std::process::abort();
}

/// Every acknowledged write survives the process dying mid-flight.
#[test]
fn durable_across_process_abort() {
    let dir = TempDir::new().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have aborted");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let path = dir.path().join("relaycast.db");
        let clock = clock();
        let store = SqliteStore::open(&path, Arc::new(clock.clone())).unwrap();
        let queue = SqliteQueue::open(&path, Arc::new(clock.clone())).unwrap();
        for i in 0..100 {
            let r = store.get(Kind("crash"), &format!("r{i:03}")).await.unwrap();
            assert_eq!(r.map(|r| r.body.value()), Some(json!(i)), "record r{i:03}");
        }
        let st = queue.stats("crash-jobs").await.unwrap();
        assert_eq!(
            (st.visible, st.in_flight),
            (20, 5),
            "25 unacked messages, 5 of them in flight"
        );
    });
}

/// Set in the child process of [`group_commit_crash_loses_only_unanswered_writes`].
const GROUP_CRASH_DIR_ENV: &str = "RELAYCAST_TEST_GROUP_CRASH_DIR";

/// The child half of [`group_commit_crash_loses_only_unanswered_writes`]: 32 writers issue
/// two-record transactions and queue sends at once (so commits hold many of them), print each
/// one answered, and the process aborts in the middle of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by group_commit_crash_loses_only_unanswered_writes in a child process"]
async fn group_crash_child() {
    use std::io::Write as _;
    let Some(dir) = std::env::var_os(GROUP_CRASH_DIR_ENV) else {
        return;
    };
    let settings = relaycast_core::config::Settings {
        data_dir: dir.into(),
        ..Default::default()
    };
    let ports = relaycast_embedded::open_embedded(&settings, Arc::new(clock()))
        .unwrap()
        .ports;
    for w in 0..32 {
        let (store, queue) = (ports.store.clone(), ports.queue.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let writes = vec![
                    relaycast_core::ports::Write::Put(
                        Record::new(Kind("a"), format!("w{w}-{i}"), json!(i)),
                        Condition::Absent,
                    ),
                    relaycast_core::ports::Write::Put(
                        Record::new(Kind("b"), format!("w{w}-{i}"), json!(i)),
                        Condition::Absent,
                    ),
                ];
                store.transact(writes).await.unwrap();
                writeln!(std::io::stdout().lock(), "ACK tx w{w}-{i}").unwrap();
                queue
                    .send("crash-group", &format!("w{w}-{i}"), Duration::ZERO)
                    .await
                    .unwrap();
                writeln!(std::io::stdout().lock(), "ACK send w{w}-{i}").unwrap();
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::process::abort();
}

/// A crash in the middle of group commits loses only writes that were never answered: every
/// transaction and send the child saw answered is there, and every transaction is whole.
#[test]
fn group_commit_crash_loses_only_unanswered_writes() {
    let dir = TempDir::new().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "group_crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(GROUP_CRASH_DIR_ENV, dir.path())
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must have aborted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acked_tx: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ACK tx "))
        .collect();
    let acked_send: std::collections::HashSet<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ACK send "))
        .collect();
    assert!(
        acked_tx.len() > 100,
        "the child should have been answered many times: {}",
        acked_tx.len()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let path = dir.path().join("relaycast.db");
        let store = SqliteStore::open(&path, Arc::new(clock())).unwrap();
        let queue = SqliteQueue::open(&path, Arc::new(clock())).unwrap();
        for key in &acked_tx {
            assert!(
                store.get(Kind("a"), key).await.unwrap().is_some(),
                "answered write a/{key} lost"
            );
        }
        // Whole transactions only, answered or not.
        for w in 0..32 {
            for i in 0.. {
                let key = format!("w{w}-{i}");
                let a = store.get(Kind("a"), &key).await.unwrap().is_some();
                let b = store.get(Kind("b"), &key).await.unwrap().is_some();
                assert_eq!(a, b, "transaction {key} half written");
                if !a {
                    break;
                }
            }
        }
        let mut sent = std::collections::HashSet::new();
        loop {
            let got = queue
                .receive("crash-group", 10, Duration::from_secs(30), Duration::ZERO)
                .await
                .unwrap();
            if got.is_empty() {
                break;
            }
            sent.extend(got.into_iter().map(|m| m.body));
        }
        for body in &acked_send {
            assert!(sent.contains(*body), "answered send {body} lost");
        }
    });
}
