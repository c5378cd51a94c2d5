//! Scenarios over a whole adapter set, written once and run by each adapter crate's tests
//! (feature `contract-tests`): what the workers rely on from leases and fencing tokens, whatever
//! the backend.

use crate::app::relay::{apply_as_holder, record_run_stats, relay_lease_resource};
use crate::app::AppError;
use crate::config::Settings;
use crate::domain::lease::Leases;
use crate::domain::relay::state::{Action, TaskState};
use crate::domain::relay::task::{RelayTask, RunStats};
use crate::domain::relay::types::{RtmpUrl, Source, SourceUrl, TaskId, TaskType};
use crate::domain::relay::wire::NewRelayTask;
use crate::ports::{Condition, Entity, ManualClock, Ports, TypedStore};

const LEASE_TTL_MS: u64 = 3_000;

fn live_task(id: &str, now_ms: i64) -> RelayTask {
    let new = NewRelayTask {
        id: TaskId::parse(id).unwrap(),
        sources: vec![Source::new(
            SourceUrl::parse("rtmp://src.example/live/in", TaskType::Live).unwrap(),
        )],
        forwards: vec![RtmpUrl::parse("rtmp://dst.example/live/out").unwrap()],
        start_ms: None,
        end_ms: None,
        fops: Default::default(),
        extend: Default::default(),
    };
    RelayTask::create("acme", TaskType::Live, None, new, now_ms)
}

/// Two workers racing for a task's lease: exactly one wins every time. The loser that takes the
/// lease over once the winner went silent past the TTL runs the task from then on; the old
/// holder learns it at its next renewal, and its late writes are refused and change nothing.
pub async fn lease_race_and_fencing(ports: Ports, clock: ManualClock) {
    let settings = Settings::default();
    let leases = Leases::new(ports.store.clone(), ports.clock.clone(), LEASE_TTL_MS);
    for round in 0..8 {
        let resource = relay_lease_resource(&format!("acme:race{round}"));
        let (a, b) = tokio::join!(
            leases.acquire(&resource, "worker-a"),
            leases.acquire(&resource, "worker-b")
        );
        let winners = [a.unwrap(), b.unwrap()].into_iter().flatten().count();
        assert_eq!(
            winners, 1,
            "round {round}: {winners} workers hold one lease"
        );
    }

    let task = live_task("fenced", ports.clock.now_ms());
    ports.store.save(&task, Condition::Absent).await.unwrap();
    let key = task.key();
    let resource = relay_lease_resource(&key);
    let mut first = leases
        .acquire(&resource, "worker-a")
        .await
        .unwrap()
        .expect("a free lease");
    let running = apply_as_holder(
        &ports,
        &settings,
        "acme",
        &task.id,
        Action::Started,
        first.lease.token,
    )
    .await
    .unwrap()
    .expect("the task");
    assert_eq!(
        (running.value.state, running.value.run_token),
        (TaskState::Running, first.lease.token)
    );

    // worker-a goes silent past the TTL; worker-b takes over with a newer token.
    clock.advance_ms(LEASE_TTL_MS as i64 + 1);
    let second = leases
        .acquire(&resource, "worker-b")
        .await
        .unwrap()
        .expect("a stale lease is taken over");
    assert!(
        second.lease.token > first.lease.token,
        "{} after {}",
        second.lease.token,
        first.lease.token
    );
    let stats = RunStats {
        bitrate_bps: Some(2_500_000),
        ..Default::default()
    };
    record_run_stats(&ports, "acme", &task.id, stats, second.lease.token)
        .await
        .unwrap();

    // worker-a comes back: its renewal tells it the lease is gone, and whatever it still tries
    // to write is refused.
    assert!(
        !leases.renew(&mut first).await.unwrap(),
        "the old holder's renewal must fail"
    );
    let before = ports.store.load::<RelayTask>(&key).await.unwrap().unwrap();
    let failed = Action::SourceFailed {
        reason: "stale".into(),
    };
    let late = apply_as_holder(
        &ports,
        &settings,
        "acme",
        &task.id,
        failed,
        first.lease.token,
    )
    .await;
    assert!(
        matches!(late, Err(AppError::StaleHolder { .. })),
        "{late:?}"
    );
    let late_stats = record_run_stats(
        &ports,
        "acme",
        &task.id,
        RunStats::default(),
        first.lease.token,
    )
    .await;
    assert!(
        matches!(late_stats, Err(AppError::StaleHolder { .. })),
        "{late_stats:?}"
    );
    let after = ports.store.load::<RelayTask>(&key).await.unwrap().unwrap();
    assert_eq!(
        after.version, before.version,
        "a refused write changed the task"
    );
    assert_eq!(
        (after.value.state, after.value.stats.bitrate_bps),
        (TaskState::Running, Some(2_500_000))
    );
}
