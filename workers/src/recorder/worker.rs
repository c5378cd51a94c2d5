//! The recorder worker: takes record jobs from the queue, holds a lease on each recording it
//! runs, renews it by heartbeat, feeds the session the recording's record as the API changes it
//! (a version check every 500 ms, the record read only when it changed), and on SIGTERM hands
//! its recordings over (parts stored, leases released, jobs re-queued) so another recorder
//! continues them at once. A recorder that dies stops renewing; the scheduler's reaper re-queues
//! its recordings and the next recorder takes them over from their progress.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relaycast_core::app::recording::{
    enqueue_record_job, finish_recording, record_lease_resource, RecordJob, RECORD_QUEUE,
};
use relaycast_core::app::AppError;
use relaycast_core::config::Settings;
use relaycast_core::domain::lease::{LeaseGuard, Leases};
use relaycast_core::domain::recording::progress::RecordingProgress;
use relaycast_core::domain::recording::{Recording, RecordingState};
use relaycast_core::ports::{Entity, Ports, ReceivedMessage, TypedStore};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::session::{self, SessionContext, SessionEnd};

/// What happened to one job message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The recording now runs here.
    Started,
    /// The recording is finished or gone.
    NothingToDo,
    /// Another recorder holds its lease.
    HeldElsewhere,
    /// Not a record job; dropped.
    Malformed,
}

/// Runs record jobs.
#[derive(Clone)]
pub struct RecorderWorker {
    ctx: SessionContext,
    leases: Leases,
    /// This recorder's identity in leases.
    pub worker_id: String,
    running: Arc<Mutex<HashMap<String, Running>>>,
    shutdown: CancellationToken,
}

struct Running {
    drain: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl RecorderWorker {
    /// A recorder over `ports`; `shutdown` drains it.
    pub fn new(ports: Ports, settings: Arc<Settings>, shutdown: CancellationToken) -> Self {
        let leases = Leases::new(
            ports.store.clone(),
            ports.clock.clone(),
            settings.timing.lease_ttl_ms,
        );
        let worker_id = format!(
            "recorder-{}-{}",
            std::process::id(),
            crate::process::instance_id()
        );
        let ffmpeg = PathBuf::from(crate::ingest::DEFAULT_FFMPEG);
        let ctx = SessionContext {
            ports,
            settings,
            ffmpeg,
            on_loopback: false,
            config_cache: Arc::default(),
        };
        Self {
            ctx,
            leases,
            worker_id,
            running: Arc::new(Mutex::new(HashMap::new())),
            shutdown,
        }
    }

    /// Lets sessions reach loopback sources (tests and benchmarks).
    pub fn on_loopback(mut self) -> Self {
        self.ctx.on_loopback = true;
        self
    }

    /// How many recordings run here now.
    pub fn running_recordings(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Takes jobs until shutdown, then drains.
    pub async fn run(self) {
        tracing::info!(worker = %self.worker_id, "recorder started");
        let visibility = Duration::from_millis(self.ctx.settings.queue.visibility_timeout_ms);
        let this = &self;
        crate::jobs::take_jobs(
            self.ctx.ports.queue.as_ref(),
            RECORD_QUEUE,
            visibility,
            &self.shutdown,
            |message| async move { this.try_execute_job(&message).await },
            || {
                metrics::gauge!("relaycast_recordings_running")
                    .set(this.running_recordings() as f64)
            },
        )
        .await;
        self.drain().await;
    }

    /// Handles one job message (the caller acknowledges it on `Ok`).
    pub async fn try_execute_job(&self, message: &ReceivedMessage) -> Result<JobOutcome, AppError> {
        let Ok(job) = serde_json::from_str::<RecordJob>(&message.body) else {
            return Ok(JobOutcome::Malformed);
        };
        let key = job.recording_key();
        let Some(recording) = self.ctx.ports.store.load::<Recording>(&key).await? else {
            return Ok(JobOutcome::NothingToDo);
        };
        if recording.value.state == RecordingState::Finished {
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
            .acquire(&record_lease_resource(&key), &self.worker_id)
            .await?
        else {
            return Ok(JobOutcome::HeldElsewhere);
        };
        let drain = self.shutdown.child_token();
        let runner = Runner {
            worker: self.clone(),
            key: key.clone(),
        };
        let done =
            tokio::spawn(runner.run(recording.value, recording.version, guard, drain.clone()));
        if let Ok(mut running) = self.running.lock() {
            running.insert(key, Running { drain, done });
        }
        Ok(JobOutcome::Started)
    }

    async fn drain(&self) {
        let running: Vec<(String, Running)> = self
            .running
            .lock()
            .map(|mut r| r.drain().collect())
            .unwrap_or_default();
        tracing::info!(recordings = running.len(), "recorder draining");
        for (_, r) in &running {
            r.drain.cancel();
        }
        for (_, r) in running {
            let _ = r.done.await;
        }
    }
}

struct Runner {
    worker: RecorderWorker,
    key: String,
}

impl Runner {
    async fn run(
        self,
        recording: Recording,
        version: u64,
        mut guard: LeaseGuard,
        drain: CancellationToken,
    ) {
        let ports = self.worker.ctx.ports.clone();
        let (control_tx, control) = watch::channel(recording.clone());
        let lease_lost = CancellationToken::new();
        let session_done = CancellationToken::new();
        let heartbeat = {
            let (worker, key, lease_lost, session_done) = (
                self.worker.clone(),
                self.key.clone(),
                lease_lost.clone(),
                session_done.clone(),
            );
            let mut guard_slot = guard.clone();
            tokio::spawn(async move {
                let timing = &worker.ctx.settings.timing;
                let mut beat =
                    tokio::time::interval(Duration::from_millis(timing.lease_heartbeat_ms));
                let mut watch = tokio::time::interval(Duration::from_millis(500));
                let mut seen = version;
                loop {
                    tokio::select! {
                        _ = session_done.cancelled() => break,
                        _ = beat.tick() => match worker.leases.renew(&mut guard_slot).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!(recording = %key, "lease lost; another recorder runs the recording");
                                lease_lost.cancel();
                                break;
                            }
                            Err(e) => tracing::warn!(recording = %key, error = %e, "lease renewal failed; retrying"),
                        },
                        _ = watch.tick() => {
                            let Ok(Some(v)) = worker.ctx.ports.store.version(Recording::KIND, &key).await else { continue };
                            if v != seen {
                                if let Ok(Some(r)) = worker.ctx.ports.store.load::<Recording>(&key).await {
                                    seen = r.version;
                                    let _ = control_tx.send(r.value);
                                }
                            }
                        }
                    }
                }
                guard_slot
            })
        };
        let token = guard.lease.token;
        let end = session::run(
            self.worker.ctx.clone(),
            recording,
            control,
            token,
            lease_lost.clone(),
            drain,
        )
        .await;
        session_done.cancel();
        if let Ok(g) = heartbeat.await {
            guard = g;
        }
        let requeue = match end {
            Ok(SessionEnd::Finished) => {
                let _ = self.worker.leases.release(guard).await;
                false
            }
            Ok(SessionEnd::HandedOver) => {
                let _ = self.worker.leases.release(guard).await;
                true
            }
            Ok(SessionEnd::LeaseLost) => false,
            Err(e) => {
                // A fault of ours or of the object store: the recording ends with what it has
                // rather than retrying forever on a poisoned input.
                tracing::error!(recording = %self.key, error = %e, "recording failed");
                // The files finalized before the fault stay listed on the recording.
                let files = match ports.store.load::<RecordingProgress>(&self.key).await {
                    Ok(Some(progress)) => progress.value.finalized,
                    _ => Vec::new(),
                };
                let _ = finish_recording(&ports, &self.key, &files, Some(e.to_string())).await;
                let _ = self.worker.leases.release(guard).await;
                false
            }
        };
        if let Ok(mut running) = self.worker.running.lock() {
            running.remove(&self.key);
        }
        if requeue {
            if let Ok(Some(r)) = ports.store.load::<Recording>(&self.key).await {
                if r.value.state != RecordingState::Finished {
                    enqueue_record_job(&ports, &r.value).await;
                }
            }
        }
    }
}
