//! The notifier against real HTTP endpoints on 127.0.0.1 that accept, fail, stall and answer
//! the wrong status.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use relaycast_core::app::outbox::{queue_pending, SWEEP_GRACE_MS};
use relaycast_core::config::Settings;
use relaycast_core::domain::outbox::{DeliveryState, OutboxEntry, RetryPolicy, CALLBACK_QUEUE};
use relaycast_core::ports::{Condition, ManualClock, Ports, TypedStore};
use relaycast_embedded::{DirObjectStore, SqliteQueue, SqliteStore};
use relaycast_functions::notifier::{Notifier, Outcome};
use relaycast_functions::Context;

struct Endpoint {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

/// An endpoint answering with `statuses` in turn (the last one repeats); 0 means stall.
async fn endpoint(statuses: Vec<u16>) -> Endpoint {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (b, c) = (bodies.clone(), calls.clone());
    let app = Router::new().route(
        "/cb",
        post(move |body: String| {
            let (b, c, statuses) = (b.clone(), c.clone(), statuses.clone());
            async move {
                b.lock().unwrap().push(body);
                let n = c.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                if status == 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                StatusCode::from_u16(status.max(200)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Endpoint { url, bodies }
}

fn context(dir: &tempfile::TempDir, clock: &ManualClock, allow_private: bool) -> Context {
    let db = dir.path().join("db.sqlite");
    let c: Arc<ManualClock> = Arc::new(clock.clone());
    let ports = Ports {
        store: Arc::new(SqliteStore::open(&db, c.clone()).unwrap()),
        queue: Arc::new(SqliteQueue::open(&db, c.clone()).unwrap()),
        objects: Arc::new(
            DirObjectStore::open(
                &dir.path().join("o"),
                "http://x".into(),
                vec![1; 32],
                c.clone(),
            )
            .unwrap(),
        ),
        clock: c,
    };
    let mut settings = Settings {
        allow_private_targets: allow_private,
        ..Default::default()
    };
    settings.timing.callback_timeout_ms = 300;
    Context::new(ports, Arc::new(settings))
}

async fn store_entry(ctx: &Context, seq: u64, url: &str) -> String {
    let entry = OutboxEntry::new(
        "acme",
        "task1",
        seq,
        url,
        format!("{{\"seq\":{seq}}}"),
        RetryPolicy {
            interval_ms: 60_000,
            retries: 2,
        },
        ctx.ports.clock.now_ms(),
    );
    ctx.ports
        .store
        .save(&entry, Condition::Absent)
        .await
        .unwrap();
    entry.id
}

async fn attempt(ctx: &Context, notifier: &Notifier) -> Vec<Outcome> {
    let messages = ctx
        .ports
        .queue
        .receive(CALLBACK_QUEUE, 10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for m in messages {
        outcomes.push(notifier.deliver(m).await.unwrap());
    }
    outcomes
}

async fn state(ctx: &Context, id: &str) -> OutboxEntry {
    ctx.ports
        .store
        .load::<OutboxEntry>(id)
        .await
        .unwrap()
        .unwrap()
        .value
}

#[tokio::test]
async fn delivers_in_order_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let ctx = context(&dir, &clock, true);
    let notifier = Notifier::new(ctx.clone()).expect("notifier");
    let ep = endpoint(vec![200]).await;
    let a = store_entry(&ctx, 1, &ep.url).await;
    let b = store_entry(&ctx, 2, &ep.url).await;
    // The sweep leaves fresh entries to their producer for a grace period.
    assert_eq!(queue_pending(&ctx.ports, 10).await.unwrap(), 0);
    clock.advance_ms(SWEEP_GRACE_MS);
    assert_eq!(queue_pending(&ctx.ports, 10).await.unwrap(), 2);
    // A second sweep (or a crash replay) queues nothing twice.
    assert_eq!(queue_pending(&ctx.ports, 10).await.unwrap(), 0);
    assert_eq!(
        attempt(&ctx, &notifier).await,
        vec![Outcome::Delivered, Outcome::Delivered]
    );
    assert_eq!(
        *ep.bodies.lock().unwrap(),
        vec!["{\"seq\":1}".to_string(), "{\"seq\":2}".to_string()]
    );
    assert_eq!(state(&ctx, &a).await.state, DeliveryState::Delivered);
    assert_eq!(state(&ctx, &b).await.state, DeliveryState::Delivered);
}

#[tokio::test]
async fn errors_and_stalls_are_retried_on_schedule_then_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let ctx = context(&dir, &clock, true);
    let notifier = Notifier::new(ctx.clone()).expect("notifier");

    // 500, then a stall past the timeout, then 200.
    let flaky = endpoint(vec![500, 0, 200]).await;
    let id = store_entry(&ctx, 1, &flaky.url).await;
    clock.advance_ms(SWEEP_GRACE_MS);
    queue_pending(&ctx.ports, 10).await.unwrap();
    assert_eq!(attempt(&ctx, &notifier).await, vec![Outcome::Retrying]);
    // Nothing is due before the retry interval.
    clock.advance_ms(59_000);
    assert!(attempt(&ctx, &notifier).await.is_empty());
    clock.advance_ms(1_000);
    assert_eq!(attempt(&ctx, &notifier).await, vec![Outcome::Retrying]);
    assert_eq!(
        state(&ctx, &id).await.last_error.as_deref(),
        Some("no answer within the timeout")
    );
    clock.advance_ms(60_000);
    assert_eq!(attempt(&ctx, &notifier).await, vec![Outcome::Delivered]);
    assert_eq!(state(&ctx, &id).await.attempts, 3);

    // 201 is not 200: the seed counts only 200 as success.
    let wrong = endpoint(vec![201]).await;
    let id = store_entry(&ctx, 2, &wrong.url).await;
    clock.advance_ms(SWEEP_GRACE_MS);
    queue_pending(&ctx.ports, 10).await.unwrap();
    for _ in 0..2 {
        assert_eq!(attempt(&ctx, &notifier).await, vec![Outcome::Retrying]);
        clock.advance_ms(60_000);
    }
    assert_eq!(attempt(&ctx, &notifier).await, vec![Outcome::GaveUp]);
    let entry = state(&ctx, &id).await;
    assert_eq!((entry.state, entry.attempts), (DeliveryState::Failed, 3));
    assert_eq!(
        entry.last_error.as_deref(),
        Some("endpoint answered HTTP 201")
    );
    clock.advance_ms(600_000);
    assert!(attempt(&ctx, &notifier).await.is_empty());
}

#[tokio::test]
async fn internal_targets_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let ctx = context(&dir, &clock, false);
    let notifier = Notifier::new(ctx.clone()).expect("notifier");
    let ep = endpoint(vec![200]).await;
    let id = store_entry(&ctx, 1, &ep.url).await;
    clock.advance_ms(SWEEP_GRACE_MS);
    queue_pending(&ctx.ports, 10).await.unwrap();
    assert_eq!(attempt(&ctx, &notifier).await, vec![Outcome::Retrying]);
    assert!(
        ep.bodies.lock().unwrap().is_empty(),
        "nothing may reach 127.0.0.1"
    );
    assert!(state(&ctx, &id)
        .await
        .last_error
        .unwrap()
        .contains("private"));
}
