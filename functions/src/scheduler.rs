//! The scheduler: one tick every `timing.scheduler_tick_ms` that starts tasks whose `start`
//! came, ends tasks whose `end` passed, expires tasks whose resume window closed, re-queues tasks
//! whose worker died (stale lease), and purges expired records. Every step is idempotent, so
//! several schedulers (or a Lambda on an EventBridge schedule) may run at once.

use std::time::Duration;

use relaycast_core::app::recording::{enqueue_record_job, RECORD_LEASE_PREFIX};
use relaycast_core::app::relay::{
    apply_to_task, enqueue_job, list_tasks, relay_lease_resource, RELAY_LEASE_PREFIX,
};
use relaycast_core::app::AppError;
use relaycast_core::domain::lease::Leases;
use relaycast_core::domain::recording::{Recording, RecordingState};
use relaycast_core::domain::relay::state::{Action, StopCause, TaskState};
use relaycast_core::domain::relay::task::RelayTask;
use relaycast_core::ports::{Entity, Query, QueryIndex, TypedStore};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TickReport {
    /// Scheduled tasks started.
    pub started: usize,
    /// Active tasks ended at their `end`.
    pub ended: usize,
    /// Stopped or never-started tasks expired.
    pub expired: usize,
    /// Tasks re-queued after their worker's lease went stale.
    pub requeued: usize,
    /// Starting tasks no worker took up in time (92).
    pub undelivered: usize,
    /// Expired records removed.
    pub purged: u64,
    /// Recording files deleted at the end of their storage time.
    pub media_expired: usize,
}

/// Runs ticks until `shutdown`.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let tick = Duration::from_millis(ctx.settings.timing.scheduler_tick_ms.max(50));
    let mut ticks: u64 = 0;
    loop {
        // Purging is a sweep over the whole store: once a minute is plenty.
        let purge = ticks.is_multiple_of((60_000 / tick.as_millis().max(1) as u64).max(1));
        match run_tick(&ctx, purge).await {
            Ok(report) if report != TickReport::default() => {
                tracing::info!(?report, "scheduler tick")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "scheduler tick failed"),
        }
        ticks += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {},
        }
    }
}

/// One pass of every duty.
pub async fn run_tick(ctx: &Context, purge: bool) -> Result<TickReport, AppError> {
    let ports = &ctx.ports;
    let settings = &ctx.settings;
    let now = ports.clock.now_ms();
    let mut report = TickReport::default();

    // Due: scheduled tasks whose start has come (the index time is the start).
    let mut due = Query::new(
        RelayTask::KIND,
        QueryIndex::Status(TaskState::Scheduled.key().into()),
    );
    due.time_to_ms = Some(now + 1);
    due.limit = 500;
    for task in ports.store.query_typed::<RelayTask>(due).await?.0 {
        let t = task.value;
        let action = if t.end_ms.is_some_and(|e| e <= now) {
            Action::Expire
        } else {
            Action::Due
        };
        if let Some(after) = apply_to_task(ports, settings, &t.account, &t.id, action).await? {
            match after.value.state {
                TaskState::Starting => report.started += 1,
                TaskState::Expired => report.expired += 1,
                _ => {}
            }
        }
    }

    // Ended: active tasks past their `end` (end > loop > relofftime: the end always wins).
    for status in [
        TaskState::Starting.key(),
        TaskState::Running.key(),
        "retrying",
    ] {
        for task in all_in_status(ctx, status).await? {
            if task.end_ms.is_some_and(|e| e <= now) {
                let action = Action::Finished {
                    cause: StopCause::EndTime,
                };
                if apply_to_task(ports, settings, &task.account, &task.id, action)
                    .await?
                    .is_some()
                {
                    report.ended += 1;
                }
            }
        }
    }

    // Undelivered: a starting task no worker has taken up within the start timeout (no worker
    // runs, or all are saturated) failed to start: the seed's 92, and the customer may retry.
    let leases = Leases::new(
        ports.store.clone(),
        ports.clock.clone(),
        settings.timing.lease_ttl_ms,
    );
    let start_timeout = settings.timing.start_timeout_ms as i64;
    for task in all_in_status(ctx, TaskState::Starting.key()).await? {
        if task.updated_ms + start_timeout > now {
            continue;
        }
        let key = RelayTask::store_key(&task.account, &task.id);
        if leases.holder(&relay_lease_resource(&key)).await?.is_some() {
            continue;
        }
        if let Some(after) = apply_to_task(
            ports,
            settings,
            &task.account,
            &task.id,
            Action::DeliveryFailed,
        )
        .await?
        {
            if !after.value.state.is_active() {
                tracing::warn!(task = %key, "no worker took the task up in time; start failed (92)");
                report.undelivered += 1;
            }
        }
    }

    // Expired: stopped tasks whose resume window closed (the domain decides when).
    for status in ["stopped_natural", "stopped_manual", "stopped_failed"] {
        for task in all_in_status(ctx, status).await? {
            if let Some(after) =
                apply_to_task(ports, settings, &task.account, &task.id, Action::Expire).await?
            {
                if after.value.state == TaskState::Expired {
                    report.expired += 1;
                }
            }
        }
    }

    // Orphaned: a worker died holding tasks. Reap its stale leases (exactly one reaper wins
    // each) and hand the tasks that should still run to another worker.
    for stale in leases.stale(500).await? {
        if !leases.reap(&stale).await? {
            continue;
        }
        if let Some(recording_key) = stale.resource.strip_prefix(RECORD_LEASE_PREFIX) {
            // A recorder died mid-recording: the next one takes it over from its progress.
            if let Some(recording) = ports.store.load::<Recording>(recording_key).await? {
                if recording.value.state != RecordingState::Finished
                    && enqueue_record_job(ports, &recording.value).await
                {
                    tracing::warn!(recording = %recording_key, holder = %stale.holder, "recorder lease went stale; recording re-queued");
                    report.requeued += 1;
                }
            }
            continue;
        }
        let Some(task_key) = stale.resource.strip_prefix(RELAY_LEASE_PREFIX) else {
            continue;
        };
        if let Some(task) = ports.store.load::<RelayTask>(task_key).await? {
            if task.value.state.is_active()
                && task.value.state != TaskState::Scheduled
                && enqueue_job(ports, &task.value).await
            {
                tracing::warn!(task = %task_key, holder = %stale.holder, "worker lease went stale; task re-queued");
                report.requeued += 1;
            }
        }
    }

    // Retention: recording files whose storage time passed, files and records.
    match relaycast_core::app::media::expire_due(ports, 100).await {
        Ok(n) => report.media_expired = n,
        Err(e) => tracing::warn!(error = %e, "media retention sweep failed"),
    }

    if purge {
        report.purged = ports.store.purge_expired().await?;
    }
    Ok(report)
}

async fn all_in_status(ctx: &Context, status: &str) -> Result<Vec<RelayTask>, AppError> {
    list_tasks(&ctx.ports, QueryIndex::Status(status.into())).await
}
