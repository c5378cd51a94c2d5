//! Leases over the embedded store: one holder at a time, stale leases found and taken over,
//! the previous holder told at its next renewal.

use std::sync::Arc;

use relaycast_core::domain::lease::Leases;
use relaycast_core::ports::ManualClock;
use relaycast_embedded::SqliteStore;

fn leases(dir: &tempfile::TempDir, clock: &ManualClock) -> Leases {
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), Arc::new(clock.clone())).unwrap();
    Leases::new(Arc::new(store), Arc::new(clock.clone()), 30_000)
}

#[tokio::test]
async fn one_holder_then_take_over_after_going_stale() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let leases = leases(&dir, &clock);

    let mut a = leases
        .acquire("relay:acme:t1", "worker-a")
        .await
        .unwrap()
        .expect("free lease");
    assert_eq!(a.lease.token, 1);
    assert!(
        leases
            .acquire("relay:acme:t1", "worker-b")
            .await
            .unwrap()
            .is_none(),
        "held by a"
    );
    // Re-acquiring one's own lease is a renewal, not a take-over.
    assert_eq!(
        leases
            .acquire("relay:acme:t1", "worker-a")
            .await
            .unwrap()
            .unwrap()
            .lease
            .token,
        1
    );

    clock.advance_ms(20_000);
    assert!(
        !leases.renew(&mut a).await.unwrap(),
        "the re-acquire above moved the version"
    );
    let mut a = leases
        .acquire("relay:acme:t1", "worker-a")
        .await
        .unwrap()
        .unwrap();
    assert!(leases.renew(&mut a).await.unwrap());
    assert!(leases.stale(10).await.unwrap().is_empty());

    // worker-a dies: no renewal for longer than the TTL.
    clock.advance_ms(31_000);
    let stale = leases.stale(10).await.unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].holder, "worker-a");

    let b = leases
        .acquire("relay:acme:t1", "worker-b")
        .await
        .unwrap()
        .expect("stale lease is free");
    assert_eq!(b.lease.token, 2, "a take-over bumps the fencing token");
    assert!(
        !leases.renew(&mut a).await.unwrap(),
        "the old holder learns it lost the lease"
    );

    leases.release(b).await.unwrap();
    assert!(leases
        .acquire("relay:acme:t1", "worker-c")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_stale_lease_is_reaped_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let leases = leases(&dir, &clock);
    leases
        .acquire("relay:acme:t2", "worker-a")
        .await
        .unwrap()
        .unwrap();
    clock.advance_ms(30_001);
    let stale = leases.stale(10).await.unwrap();
    let (first, second) = tokio::join!(leases.reap(&stale[0]), leases.reap(&stale[0]));
    assert_eq!(
        [first.unwrap(), second.unwrap()]
            .iter()
            .filter(|won| **won)
            .count(),
        1
    );
    assert!(leases.stale(10).await.unwrap().is_empty());
}

/// The lease race and fencing scenario every adapter set runs (`app::scenarios`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_hold_one_task_and_a_stale_holder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let settings = relaycast_core::config::Settings {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let ports = relaycast_embedded::open_embedded(&settings, Arc::new(clock.clone()))
        .unwrap()
        .ports;
    relaycast_core::app::scenarios::lease_race_and_fencing(ports, clock).await;
}
