//! The relay worker: takes relay jobs from the queue, holds a lease on each task it runs, drives
//! a [`RelaySession`] from the task record (the desired state), and reports what happens as the
//! task's state changes (and so as the seed's callbacks).
//!
//! A job is acknowledged once its lease is taken: from then on the lease, not the message, says
//! who runs the task. A worker that dies stops renewing; the scheduler's reaper re-queues the
//! task and another worker takes it up. A worker that is told to drain (SIGTERM) stops its
//! sessions, re-queues their tasks and releases the leases, so nothing waits for a lease to go
//! stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relaycast_core::app::relay::{
    apply_as_holder, enqueue_job, record_run_stats, relay_lease_resource, RelayJob, RELAY_QUEUE,
};
use relaycast_core::app::AppError;
use relaycast_core::config::Settings;
use relaycast_core::domain::lease::{LeaseGuard, Leases};
use relaycast_core::domain::relay::state::{Action, TaskState};
use relaycast_core::domain::relay::task::{ForwardStats, RelayTask, RunStats};
use relaycast_core::domain::relay::types::{TaskId, TaskType};
use relaycast_core::ports::{Entity, Ports, ReceivedMessage, TypedStore};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ingest::transcode::{self, WatermarkFetcher, Watermarks};
use crate::ingest::{egress, IngestSpec, SourceKind};
use crate::relay::playout;
use crate::relay::pusher::PusherState;
use crate::relay::reconcile::{self, DownSince, PlayoutStep, RecordStep};
use crate::relay::session::{
    PlayoutEvent, RelaySession, SessionError, SessionEvent, SessionSpec, SessionStatus, SlateConfig,
};

/// What happened to one job message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The task now runs here.
    Started,
    /// The task needs no worker (stopped, expired, scheduled) or is gone.
    NothingToDo,
    /// Another worker holds the task's lease.
    HeldElsewhere,
    /// The message is not a relay job; dropped.
    Malformed,
}

/// Runs relay jobs.
#[derive(Clone)]
pub struct RelayWorker {
    ports: Ports,
    settings: Arc<Settings>,
    leases: Leases,
    /// This worker's identity in leases.
    pub worker_id: String,
    running: Arc<Mutex<HashMap<String, RunningTask>>>,
    shutdown: CancellationToken,
}

struct RunningTask {
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl RelayWorker {
    /// A worker over `ports`; `shutdown` drains it.
    pub fn new(ports: Ports, settings: Arc<Settings>, shutdown: CancellationToken) -> Self {
        let leases = Leases::new(
            ports.store.clone(),
            ports.clock.clone(),
            settings.timing.lease_ttl_ms,
        );
        let worker_id = format!(
            "relay-{}-{}",
            std::process::id(),
            crate::process::instance_id()
        );
        Self {
            ports,
            settings,
            leases,
            worker_id,
            running: Arc::new(Mutex::new(HashMap::new())),
            shutdown,
        }
    }

    /// How many tasks run here now.
    pub fn running_tasks(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Takes jobs until shutdown, then drains.
    pub async fn run(self) {
        tracing::info!(worker = %self.worker_id, "relay worker started");
        metrics::gauge!("relaycast_jobs_in_flight", "worker" => "relay").set(0.0);
        let visibility = Duration::from_millis(self.settings.queue.visibility_timeout_ms);
        let this = &self;
        crate::jobs::take_jobs(
            self.ports.queue.as_ref(),
            RELAY_QUEUE,
            visibility,
            &self.shutdown,
            |message| async move { this.try_execute_job(&message).await },
            || {
                metrics::gauge!("relaycast_jobs_in_flight", "worker" => "relay")
                    .set(this.running_tasks() as f64)
            },
        )
        .await;
        self.drain().await;
    }

    /// Handles one job message (the caller acknowledges it on `Ok`).
    pub async fn try_execute_job(&self, message: &ReceivedMessage) -> Result<JobOutcome, AppError> {
        let Ok(job) = serde_json::from_str::<RelayJob>(&message.body) else {
            return Ok(JobOutcome::Malformed);
        };
        let key = job.task_key();
        let Some(task) = self.ports.store.load::<RelayTask>(&key).await? else {
            return Ok(JobOutcome::NothingToDo);
        };
        if !task.value.state.is_active() || task.value.state == TaskState::Scheduled {
            return Ok(JobOutcome::NothingToDo);
        }
        if self
            .running
            .lock()
            .map(|r| r.contains_key(&key))
            .unwrap_or(false)
        {
            return Ok(JobOutcome::Started);
        }
        let Some(guard) = self
            .leases
            .acquire(&relay_lease_resource(&key), &self.worker_id)
            .await?
        else {
            return Ok(JobOutcome::HeldElsewhere);
        };
        let stop = self.shutdown.child_token();
        let runner = TaskRunner {
            worker: self.clone(),
            account: job.account.clone(),
            id: task.value.id.clone(),
            key: key.clone(),
            token: guard.lease.token,
        };
        let done = spawn_dedicated(runner.run(task.value, guard, stop.clone()));
        if let Ok(mut running) = self.running.lock() {
            running.insert(key, RunningTask { stop, done });
        }
        Ok(JobOutcome::Started)
    }

    async fn drain(&self) {
        let tasks: Vec<(String, RunningTask)> = self
            .running
            .lock()
            .map(|mut r| r.drain().collect())
            .unwrap_or_default();
        tracing::info!(tasks = tasks.len(), "relay worker draining");
        for (_, task) in &tasks {
            task.stop.cancel();
        }
        for (_, task) in tasks {
            let _ = task.done.await;
        }
    }
}

struct TaskRunner {
    worker: RelayWorker,
    account: String,
    id: TaskId,
    key: String,
    /// The fencing token of the lease this run holds; every write of the run carries it.
    token: u64,
}

/// What a run of a task keeps between events.
struct Run {
    /// The task record as last read or written.
    task: RelayTask,
    /// The version of the record `task` was last read at (0: read it again).
    version: u64,
    /// The revision of the sources the session runs.
    sources_revision: u64,
    /// The task's creation time: another means a `cmd=1` replaced it.
    generation: i64,
    down_since: DownSince,
    /// A destination that has not published for this long is given up (`push_give_up_ms`).
    give_up: Duration,
}

/// How a session of a task ended.
enum RunEnd {
    /// The task record no longer wants a worker (stopped, expired, superseded).
    TaskEnded,
    /// The lease was lost: another worker runs the task now.
    LeaseLost,
    /// The worker drains: hand the task to another worker.
    Draining,
    /// A `cmd=1` with the same id replaced the task: its run starts over from a new job.
    Superseded,
}

impl TaskRunner {
    async fn run(self, task: RelayTask, mut guard: LeaseGuard, stop: CancellationToken) {
        let end = self.supervise(task, &mut guard, &stop).await;
        let ports = &self.worker.ports;
        let requeue = match end {
            Ok(RunEnd::LeaseLost) | Err(AppError::StaleHolder { .. }) => {
                tracing::warn!(task = %self.key, "lease lost; another worker runs the task");
                false
            }
            Ok(RunEnd::Draining | RunEnd::Superseded) => {
                let _ = self.worker.leases.release(guard).await;
                true
            }
            Ok(RunEnd::TaskEnded) => {
                let _ = self.worker.leases.release(guard).await;
                false
            }
            Err(e) => {
                // Keep the lease: it goes stale and the reaper re-queues the task.
                tracing::error!(task = %self.key, error = %e, "relay task supervision failed");
                false
            }
        };
        if let Ok(mut running) = self.worker.running.lock() {
            running.remove(&self.key);
        }
        // Only once the lease is released and this worker no longer lists the task, so the new
        // job (on any worker, this one included) can take it up.
        if requeue {
            if let Ok(Some(task)) = ports.store.load::<RelayTask>(&self.key).await {
                if task.value.state.is_active() {
                    enqueue_job(ports, &task.value).await;
                }
            }
        }
    }

    async fn apply(&self, action: Action) -> Result<Option<RelayTask>, AppError> {
        let settings = &self.worker.settings;
        Ok(apply_as_holder(
            &self.worker.ports,
            settings,
            &self.account,
            &self.id,
            action,
            self.token,
        )
        .await?
        .map(|v| v.value))
    }

    /// Runs sessions for the task until it ends here: starts one, then answers the lease
    /// heartbeat, the record's changes and the session's events until the run is over.
    async fn supervise(
        &self,
        task: RelayTask,
        guard: &mut LeaseGuard,
        stop: &CancellationToken,
    ) -> Result<RunEnd, AppError> {
        let timing = &self.worker.settings.timing;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (playout_tx, mut playout) = mpsc::unbounded_channel();
        let Some((session, task)) = self
            .start_first_session(task, &events_tx, &playout_tx)
            .await?
        else {
            return Ok(RunEnd::TaskEnded);
        };
        let mut run = Run {
            version: 0,
            sources_revision: task.sources_revision,
            generation: task.created_ms,
            task,
            down_since: DownSince::new(),
            give_up: Duration::from_millis(timing.push_give_up_ms),
        };
        let mut heartbeat = tokio::time::interval(Duration::from_millis(timing.lease_heartbeat_ms));
        // The task record is re-read this often, so cmd=2/3 reach a running session quickly.
        let mut watch = tokio::time::interval(Duration::from_millis(500));
        let end = loop {
            let end = tokio::select! {
                _ = stop.cancelled() => Some(RunEnd::Draining),
                _ = heartbeat.tick() => self.on_heartbeat(&session, guard).await?,
                _ = watch.tick() => self.on_watch(&session, &mut run).await?,
                Some(event) = playout.recv() => self.on_playout(&mut run, event).await?,
                Some(event) = events.recv() => {
                    self.on_session_event(&mut run, event).await?;
                    None
                }
            };
            if let Some(end) = end {
                break end;
            }
        };
        session.stop().await;
        Ok(end)
    }

    /// Starts the task's session. A destination that cannot be used fails on its own
    /// (callback 3) and the session starts without it; anything else at start is the
    /// source's failure (callback 2). `None` when the task ended on the way.
    async fn start_first_session(
        &self,
        mut task: RelayTask,
        events: &mpsc::UnboundedSender<SessionEvent>,
        playout: &mpsc::UnboundedSender<PlayoutEvent>,
    ) -> Result<Option<(RelaySession, RelayTask)>, AppError> {
        loop {
            match self
                .start_session(&task, events.clone(), playout.clone())
                .await
            {
                Ok(s) => return Ok(Some((s, task))),
                Err(StartError::Destination { url, reason }) => {
                    let Some(recorded) = task
                        .active_destinations()
                        .find(|d| d.url.as_str() == url)
                        .map(|d| d.url.clone())
                    else {
                        self.apply(Action::SourceFailed { reason }).await?;
                        return Ok(None);
                    };
                    match self
                        .apply(Action::PushFailed {
                            url: recorded,
                            reason,
                        })
                        .await?
                    {
                        Some(t)
                            if t.state.is_active() && t.active_destinations().next().is_some() =>
                        {
                            task = t
                        }
                        _ => return Ok(None),
                    }
                }
                Err(StartError::Source(reason)) => {
                    self.apply(Action::SourceFailed { reason }).await?;
                    return Ok(None);
                }
            }
        }
    }

    /// Renews the lease and writes the run's figures back (the query's `relay` object).
    async fn on_heartbeat(
        &self,
        session: &RelaySession,
        guard: &mut LeaseGuard,
    ) -> Result<Option<RunEnd>, AppError> {
        if !self.worker.leases.renew(guard).await? {
            return Ok(Some(RunEnd::LeaseLost));
        }
        let stats = run_stats(&session.status(), self.worker.ports.clock.now_ms());
        record_run_stats(
            &self.worker.ports,
            &self.account,
            &self.id,
            stats,
            self.token,
        )
        .await?;
        Ok(None)
    }

    /// Re-reads the task record and reconciles the session with it ([`reconcile`]):
    /// destinations stopped or added, new sources, then what the pushers' states mean for
    /// the record.
    async fn on_watch(
        &self,
        session: &RelaySession,
        run: &mut Run,
    ) -> Result<Option<RunEnd>, AppError> {
        // The version first: the record (up to hundreds of KB of sources) is read and decoded
        // again only when somebody changed it.
        let Some(version) = self
            .worker
            .ports
            .store
            .version(RelayTask::KIND, &self.key)
            .await?
        else {
            return Ok(Some(RunEnd::TaskEnded));
        };
        if version != run.version {
            let Some(current) = self.worker.ports.store.load::<RelayTask>(&self.key).await? else {
                return Ok(Some(RunEnd::TaskEnded));
            };
            run.task = current.value;
            run.version = current.version;
            if !run.task.state.is_active() {
                return Ok(Some(RunEnd::TaskEnded));
            }
            if run.task.created_ms != run.generation {
                return Ok(Some(RunEnd::Superseded));
            }
        }
        // One snapshot per tick: each one clones every pusher's status under its lock.
        let status = session.status();
        let plan = reconcile::plan_session(&run.task, &status, run.sources_revision);
        for url in &plan.stop {
            let _ = session.stop_destination(url).await;
        }
        for url in &plan.add {
            let _ = session.add_destination(url);
        }
        if plan.replace_sources {
            run.sources_revision = run.task.sources_revision;
            if let Some(end) = self.replace_sources(session, &run.task).await? {
                return Ok(Some(end));
            }
        }
        // Only a destination stopped or added above makes the snapshot stale.
        let status = if plan.changes_destinations() {
            session.status()
        } else {
            status
        };
        for p in &status.destinations {
            for step in reconcile::destination_steps(
                &run.task,
                p,
                &mut run.down_since,
                Instant::now(),
                run.give_up,
            ) {
                if let Some(t) = self.record(session, step).await? {
                    run.task = t;
                }
            }
        }
        Ok(None)
    }

    /// New sources (cmd=3): swapped inside the session, now or after the current item;
    /// destination connections stay up. Sources that cannot be built fail the task.
    async fn replace_sources(
        &self,
        session: &RelaySession,
        task: &RelayTask,
    ) -> Result<Option<RunEnd>, AppError> {
        let sources = match self.build_sources(task).await {
            Ok(s) => s,
            Err(reason) => {
                self.apply(Action::SourceFailed { reason }).await?;
                return Ok(Some(RunEnd::TaskEnded));
            }
        };
        let (loops, index, when) = playout::replacement(task);
        if let Err(e) = session.replace_playlist(sources, loops, index, when).await {
            self.apply(Action::SourceFailed {
                reason: e.to_string(),
            })
            .await?;
            return Ok(Some(RunEnd::TaskEnded));
        }
        Ok(None)
    }

    /// Carries out one [`RecordStep`]; returns the updated record.
    async fn record(
        &self,
        session: &RelaySession,
        step: RecordStep,
    ) -> Result<Option<RelayTask>, AppError> {
        match step {
            RecordStep::Apply(action) => self.apply(action).await,
            RecordStep::GiveUp { url, reason } => {
                let _ = session.stop_destination(url.as_str()).await;
                self.apply(Action::PushFailed { url, reason }).await
            }
        }
    }

    async fn on_playout(
        &self,
        run: &mut Run,
        event: PlayoutEvent,
    ) -> Result<Option<RunEnd>, AppError> {
        if let PlayoutEvent::Finished { cause, reason } = &event {
            tracing::info!(task = %self.key, ?cause, %reason, "session finished");
        }
        match reconcile::on_playout_event(&run.task, event) {
            PlayoutStep::Nothing => Ok(None),
            PlayoutStep::Apply(action) => {
                if let Some(t) = self.apply(action).await? {
                    run.task = t;
                }
                Ok(None)
            }
            PlayoutStep::End(action) => {
                self.apply(action).await?;
                Ok(Some(RunEnd::TaskEnded))
            }
        }
    }

    async fn on_session_event(&self, run: &mut Run, event: SessionEvent) -> Result<(), AppError> {
        match &event {
            SessionEvent::SourceFailed { index, reason } => {
                tracing::warn!(task = %self.key, index, %reason, "source failed")
            }
            SessionEvent::SwitchedSource { from, to } => {
                tracing::info!(task = %self.key, from, to, "source switched")
            }
            SessionEvent::DestinationFailed { url, reason, .. } => {
                tracing::warn!(task = %self.key, %url, %reason, "destination failed")
            }
            SessionEvent::Started
            | SessionEvent::DestinationRecovered { .. }
            | SessionEvent::Finished { .. } => {}
        }
        if let Some(action) = reconcile::on_session_event(&run.task, &event) {
            if let Some(t) = self.apply(action).await? {
                run.task = t;
            }
        }
        Ok(())
    }

    /// The ingest of every source of the task: copy or transcode, watermarks fetched once,
    /// pull headers, and the playlist's `relofftime` windows.
    async fn build_sources(&self, task: &RelayTask) -> Result<Vec<IngestSpec>, String> {
        let settings = &self.worker.settings;
        let kind = if task.task_type == TaskType::Video {
            SourceKind::Vod
        } else {
            SourceKind::Live
        };
        // Before any ffmpeg starts: a missing encoder or a bad watermark fails the task with its
        // reason. Watermarks are fetched once per session; the specs keep their files.
        transcode::check_encoders(&settings.ffmpeg_path, &task.fops)
            .await
            .map_err(|e| e.to_string())?;
        let watermarks = if task.sources.iter().any(|s| s.wm_image.is_some()) {
            let fetcher =
                WatermarkFetcher::new(settings.allow_private_targets).map_err(|e| e.to_string())?;
            Watermarks::fetch(&fetcher, &task.sources)
                .await
                .map_err(|e| e.to_string())?
        } else {
            Watermarks::default()
        };
        let mut sources: Vec<IngestSpec> = task
            .sources
            .iter()
            .map(|s| {
                let mut spec = match kind {
                    SourceKind::Vod => IngestSpec::vod(s.url.as_str()),
                    SourceKind::Live => IngestSpec::live(s.url.as_str()),
                };
                spec.ffmpeg_path = settings.ffmpeg_path.clone();
                spec.allow_private_targets = settings.allow_private_targets;
                spec.headers = s
                    .pull_stream_headers
                    .iter()
                    .map(|h| (h.header_key.clone(), h.header_value.clone()))
                    .collect();
                transcode::apply(&mut spec, &task.fops, s, &watermarks)
                    .map_err(|e| e.to_string())?;
                Ok(spec)
            })
            .collect::<Result<_, String>>()?;
        playout::apply_sources(&mut sources, task);
        for spec in &mut sources {
            egress::pin(spec).await;
        }
        Ok(sources)
    }

    async fn start_session(
        &self,
        task: &RelayTask,
        events: mpsc::UnboundedSender<SessionEvent>,
        playout_events: mpsc::UnboundedSender<PlayoutEvent>,
    ) -> Result<RelaySession, StartError> {
        let settings = &self.worker.settings;
        let sources = self.build_sources(task).await.map_err(StartError::Source)?;
        let destinations = task
            .active_destinations()
            .map(|d| d.url.to_string())
            .collect();
        let mut spec = SessionSpec::new(sources, destinations);
        playout::apply_task(&mut spec.source, task);
        spec.source.stall_timeout = Duration::from_millis(settings.timing.source_stall_timeout_ms);
        spec.allow_private_targets = settings.allow_private_targets;
        spec.source.standby_failover_after = Some(settings.timing.standby_failover_ms)
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        // Every source down: destinations stay connected on a slate for the configured time
        // (platforms would otherwise end the broadcast), then the task fails.
        spec.source.slate = Some(SlateConfig {
            timeout: Duration::from_millis(settings.timing.slate_duration_ms),
            image: settings.slate_image.clone(),
            ffmpeg_path: settings.ffmpeg_path.clone(),
            hevc: task.fops.vcodec
                == Some(relaycast_core::domain::relay::types::VideoCodec::Libx265),
        });
        spec.source.playout_events = Some(playout_events);
        RelaySession::start(spec, events).map_err(|e| {
            let reason = e.to_string();
            match e {
                SessionError::InvalidDestination { url, .. }
                | SessionError::DuplicateDestination(url) => {
                    StartError::Destination { url, reason }
                }
                _ => StartError::Source(reason),
            }
        })
    }
}

/// Why a session did not start, told apart so that the destination's fault is reported as a
/// push failure (callback 3) and never as the source's.
enum StartError {
    /// The sources (or what prepares them: encoders, watermarks) failed.
    Source(String),
    /// A destination cannot be used.
    Destination { url: String, reason: String },
}

/// What the worker writes back every heartbeat (the query's `relay` object): rates, position,
/// the source being relayed and each pusher's state, from one session snapshot.
fn run_stats(status: &SessionStatus, now_ms: i64) -> RunStats {
    RunStats {
        bitrate_bps: Some((status.bitrate_kbps * 1000.0) as u64),
        fps: Some(status.fps),
        position_ms: Some(u64::from(status.position_ms)),
        reported_at_ms: Some(now_ms),
        current_source: Some(status.current_source),
        forwards: status
            .destinations
            .iter()
            .map(|p| ForwardStats {
                url: p.url.clone(),
                state: pusher_state_name(p.state).to_string(),
                reconnects: p.reconnects,
            })
            .collect(),
    }
}

/// A pusher state's name in the query's `relay.forward[].state`.
fn pusher_state_name(state: PusherState) -> &'static str {
    match state {
        PusherState::Connecting => "connecting",
        PusherState::Publishing => "publishing",
        PusherState::Backoff => "backoff",
        PusherState::Stopped => "stopped",
    }
}

/// ffmpeg output codec arguments for the task's `fops`, without watermarks (see
/// [`transcode::output_args`]): a copy unless a re-encode is asked for; an error for a codec
/// the FLV output cannot carry.
pub fn codec_args(task: &RelayTask) -> Result<Vec<String>, transcode::TranscodeError> {
    transcode::output_args(
        &task.fops,
        &[],
        transcode::Placement::Gravity(Default::default()),
    )
    .map(|o| o.codec_args)
}

/// How long a task's runtime waits, after the task, for the work it spawned to finish (an
/// ingest's gentle stop takes up to 2 s before its SIGKILL).
const DEDICATED_GRACE: Duration = Duration::from_secs(5);

/// Runs a task's whole supervision (session, ingest reads, pushers) on a single-threaded
/// runtime of its own thread. Why: per FLV tag the session wakes every pusher, and on the shared
/// multi-threaded runtime each such burst also unparks the other worker thread to steal some of
/// them, so a relay paid several context switches per tag. On one thread a tag costs one wake-up
/// (the pipe turning readable), as one ffmpeg `tee` would. The returned handle ends when the task
/// and what it spawned are done. Falls back to the shared runtime if the thread cannot be set up.
fn spawn_dedicated<F>(fut: F) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build a task runtime; using the shared one");
            return tokio::spawn(fut);
        }
    };
    // The future goes over a channel once the thread runs, so a failed spawn leaves it here.
    let (fut_tx, fut_rx) = std::sync::mpsc::sync_channel::<F>(1);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("relay-task".into())
        .spawn(move || {
            if let Ok(fut) = fut_rx.recv() {
                runtime.block_on(fut);
                // Fire-and-forget work (an ingest's SIGINT-then-SIGKILL stop) would be dropped with
                // the runtime: let it finish first, bounded.
                let handle = runtime.handle().clone();
                runtime.block_on(async move {
                    let until = tokio::time::Instant::now() + DEDICATED_GRACE;
                    while handle.metrics().num_alive_tasks() > 0
                        && tokio::time::Instant::now() < until
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
            }
            drop(runtime);
            let _ = done_tx.send(());
        });
    match spawned {
        Ok(_) => match fut_tx.send(fut) {
            Ok(()) => tokio::spawn(async move {
                let _ = done_rx.await;
            }),
            Err(std::sync::mpsc::SendError(fut)) => tokio::spawn(fut),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a task thread; using the shared runtime");
            // The closure (and its receiver) is gone; the future was never sent.
            tokio::spawn(fut)
        }
    }
}
