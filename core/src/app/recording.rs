//! Recording use cases: starting a recording (a record job on the queue), asking it to stop,
//! the stream events that drive automatic recording, and what a recorder writes back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record_templates::{get_domain, get_template, recording_binding, RecordError};
use super::AppError;
use crate::config::Settings;
use crate::domain::api_error::ApiRefusal;
use crate::domain::callbacks::StreamPath;
use crate::domain::callbacks::{StreamEvent, StreamEventKind};
use crate::domain::recording::progress::RecordingProgress;
use crate::domain::recording::request::{RecordSource, RecordTaskInput};
use crate::domain::recording::{Recording, RecordingMode, RecordingState};
use crate::ports::{
    Condition, Entity, Kind, Ports, Query, QueryIndex, StoreError, TypedStore, Versioned, Write,
};

/// The queue of record jobs.
pub const RECORD_QUEUE: &str = "record-jobs";

/// Prefix of recording leases.
pub const RECORD_LEASE_PREFIX: &str = "record:";

/// A record job: "a recorder should take this recording up". Recorders re-read the recording,
/// so the job carries only its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordJob {
    /// The owning account.
    pub account: String,
    /// The recording id.
    pub id: String,
}

impl RecordJob {
    /// The recording's store key.
    pub fn recording_key(&self) -> String {
        Recording::store_key(&self.account, &self.id)
    }
}

/// The lease resource of a recording.
pub fn record_lease_resource(recording_key: &str) -> String {
    format!("{RECORD_LEASE_PREFIX}{recording_key}")
}

/// Queues a record job; `false` (logged) when the queue refused it (the scheduler's sweep of
/// pending recordings queues it again).
pub async fn enqueue_record_job(ports: &Ports, recording: &Recording) -> bool {
    let job = RecordJob {
        account: recording.account.clone(),
        id: recording.id.clone(),
    };
    let body = serde_json::json!(job).to_string();
    match ports.queue.send(RECORD_QUEUE, &body, Duration::ZERO).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(recording = %recording.id, error = %e, "record job could not be queued");
            false
        }
    }
}

/// Why a recording could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The request breaks a rule (Tencent's code and message).
    #[error(transparent)]
    Refused(#[from] ApiRefusal),
    /// A recording with this id exists already.
    #[error("recording {0} exists already")]
    Exists(String),
    /// No such recording.
    #[error("recording {0} not found")]
    NotFound(String),
    /// A use case failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<StoreError> for RecordingError {
    fn from(e: StoreError) -> Self {
        RecordingError::App(e.into())
    }
}

impl From<RecordError> for RecordingError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Refused(r) => RecordingError::Refused(r),
            RecordError::Store(e) => e.into(),
        }
    }
}

/// A new recording id: 32 hex digits, time-ordered.
fn new_recording_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Specific recording (`POST /v1/recordings`): checks the request against the account's
/// template and domain, stores the recording and queues its job.
pub async fn create_specific_recording(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    input: RecordTaskInput,
) -> Result<Recording, RecordingError> {
    let template_id = input
        .template_id
        .ok_or_else(|| ApiRefusal::missing("TemplateId"))?;
    let template = get_template(ports, account, template_id).await?.value;
    let source = match input.source()? {
        RecordSource::Stream { stream, .. } => {
            let domain = get_domain(ports, account, &stream.domain).await?.value;
            let pull_url = domain.pull_url(&stream);
            RecordSource::Stream { stream, pull_url }
        }
        url => url,
    };
    let recording = input.into_recording(
        account,
        new_recording_id(),
        &template,
        source,
        settings.allow_private_targets,
        ports.clock.now_ms(),
    )?;
    Ok(start_recording(ports, recording).await?.value)
}

/// What a stream's push or stop means for automatic recording (seed 003): a push on a domain
/// bound to a template records the stream (or continues its recording within the resume
/// timeout); a stop starts the resume timeout of its recording, bound or not (unbinding
/// stops nothing in progress). Other events mean nothing here.
pub async fn on_stream_event(ports: &Ports, event: &StreamEvent) -> Result<(), RecordingError> {
    match event.kind {
        StreamEventKind::Publish => {
            let Some(binding) = recording_binding(ports, &event.stream).await? else {
                return Ok(());
            };
            let recording = Recording {
                account: binding.account.clone(),
                id: new_recording_id(),
                mode: RecordingMode::Auto,
                record_id: None,
                stream: Some(event.stream.clone()),
                source_url: binding.pull_url.clone(),
                stream_param: event.params.clone(),
                spec: binding.template.spec(),
                created_ms: ports.clock.now_ms(),
                end_time_ms: None,
                stop_requested_ms: None,
                stream_stopped_ms: None,
                state: RecordingState::Pending,
                error: None,
                files: Vec::new(),
            };
            on_stream_push(ports, recording).await?;
        }
        StreamEventKind::Unpublish => {
            if let Some(id) = on_stream_stop(ports, &event.stream).await? {
                tracing::info!(recording = %id, stream = %event.stream.joined(), "stream stopped; its recording ends after the resume timeout");
            }
        }
        _ => {}
    }
    Ok(())
}

/// Stores a new recording and queues its job.
pub async fn start_recording(
    ports: &Ports,
    recording: Recording,
) -> Result<Versioned<Recording>, RecordingError> {
    let version = match ports.store.save(&recording, Condition::Absent).await {
        Ok(v) => v,
        Err(StoreError::ConditionFailed { .. }) => {
            return Err(RecordingError::Exists(recording.id))
        }
        Err(e) => return Err(e.into()),
    };
    enqueue_record_job(ports, &recording).await;
    metrics::counter!("relaycast_recordings_started_total", "mode" => format!("{:?}", recording.mode).to_lowercase()).increment(1);
    tracing::info!(account = %recording.account, recording = %recording.id, source = %crate::domain::relay::types::redact_url(&recording.source_url), "recording started");
    Ok(Versioned {
        value: recording,
        version,
    })
}

/// Changes a stored recording with `change` (compare-and-set, retried); `None` when it does
/// not exist. `change` returns `false` to write nothing.
pub async fn update_recording(
    ports: &Ports,
    key: &str,
    mut change: impl FnMut(&mut Recording) -> bool,
) -> Result<Option<Versioned<Recording>>, StoreError> {
    for _ in 0..16 {
        let Some(mut current) = ports.store.load::<Recording>(key).await? else {
            return Ok(None);
        };
        if !change(&mut current.value) {
            return Ok(Some(current));
        }
        match ports
            .store
            .save(&current.value, Condition::Version(current.version))
            .await
        {
            Ok(version) => {
                return Ok(Some(Versioned {
                    value: current.value,
                    version,
                }))
            }
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Backend(format!(
        "recording {key} kept changing under a compare-and-set"
    )))
}

/// Asks a recording to stop; its recorder finalizes the files. Stopping a finished one is a
/// no-op.
pub async fn stop_recording(
    ports: &Ports,
    account: &str,
    id: &str,
) -> Result<Recording, RecordingError> {
    let now = ports.clock.now_ms();
    let key = Recording::store_key(account, id);
    let updated = update_recording(ports, &key, |r| {
        if r.state == RecordingState::Finished || r.stop_requested_ms.is_some() {
            return false;
        }
        r.stop_requested_ms = Some(now);
        true
    })
    .await?;
    updated
        .map(|v| v.value)
        .ok_or_else(|| RecordingError::NotFound(id.to_string()))
}

/// One recording of an account.
pub async fn get_recording(
    ports: &Ports,
    account: &str,
    id: &str,
) -> Result<Recording, RecordingError> {
    ports
        .store
        .load::<Recording>(&Recording::store_key(account, id))
        .await?
        .map(|v| v.value)
        .ok_or_else(|| RecordingError::NotFound(id.to_string()))
}

/// An account's unfinished recordings, oldest first.
pub async fn active_recordings(
    ports: &Ports,
    account: &str,
    limit: usize,
) -> Result<Vec<Recording>, StoreError> {
    let mut query = Query::new(
        Recording::KIND,
        QueryIndex::Status(Recording::active_status(account)),
    );
    query.limit = limit.clamp(1, 1000);
    Ok(ports
        .store
        .query_typed::<Recording>(query)
        .await?
        .0
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// Which recording a live stream is recorded by now (automatic recording): a push while it is
/// unfinished continues it (within the resume timeout), a stop starts its resume timeout.
/// Key: `{domain}/{app}/{stream}` (a push domain belongs to one account), so a stop finds the
/// recording even after its domain was unbound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecording {
    /// The account the stream's domain belongs to.
    pub account: String,
    /// The stream.
    pub stream: StreamPath,
    /// The recording.
    pub recording_id: String,
}

impl StreamRecording {
    /// The store key of `stream`'s pointer.
    pub fn store_key(stream: &StreamPath) -> String {
        stream.joined()
    }
}

impl Entity for StreamRecording {
    const KIND: Kind = Kind("stream_recording");

    fn key(&self) -> String {
        Self::store_key(&self.stream)
    }
}

/// What a push on a stream did to its automatic recording.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    /// A new recording was started (its id).
    Started(String),
    /// The stream's recording, still within its resume timeout, continues.
    Resumed(String),
}

/// A push on a stream whose domain is bound to a recording template: continues its unfinished
/// recording, or starts `new_recording` (stored with the stream's pointer in one transaction,
/// so two pushes racing start one recording).
pub async fn on_stream_push(
    ports: &Ports,
    new_recording: Recording,
) -> Result<PushOutcome, RecordingError> {
    let Some(stream) = new_recording.stream.clone() else {
        return Err(RecordingError::NotFound("stream".into()));
    };
    let account = new_recording.account.clone();
    let pointer_key = StreamRecording::store_key(&stream);
    for _ in 0..8 {
        let pointer = ports.store.load::<StreamRecording>(&pointer_key).await?;
        if let Some(p) = &pointer {
            let key = Recording::store_key(&account, &p.value.recording_id);
            let resumed = update_recording(ports, &key, |r| {
                if r.state == RecordingState::Finished || r.stop_requested_ms.is_some() {
                    return false;
                }
                r.stream_stopped_ms = None;
                true
            })
            .await?;
            if let Some(r) = resumed.filter(|r| {
                r.value.state != RecordingState::Finished && r.value.stop_requested_ms.is_none()
            }) {
                tracing::info!(recording = %r.value.id, stream = %stream.joined(), "push within the resume timeout; the recording continues");
                return Ok(PushOutcome::Resumed(r.value.id));
            }
        }
        let next = StreamRecording {
            account: account.clone(),
            stream: stream.clone(),
            recording_id: new_recording.id.clone(),
        };
        let condition = pointer
            .as_ref()
            .map_or(Condition::Absent, |p| Condition::Version(p.version));
        let writes = vec![
            Write::Put(new_recording.to_record()?, Condition::Absent),
            Write::Put(next.to_record()?, condition),
        ];
        match ports.store.transact(writes).await {
            Ok(_) => {
                enqueue_record_job(ports, &new_recording).await;
                metrics::counter!("relaycast_recordings_started_total", "mode" => "auto")
                    .increment(1);
                tracing::info!(account = %account, recording = %new_recording.id, stream = %stream.joined(), "automatic recording started");
                return Ok(PushOutcome::Started(new_recording.id));
            }
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RecordingError::App(AppError::Contention(pointer_key)))
}

/// A stream's stop: its automatic recording ends once the resume timeout passed without a
/// new push. Returns the recording it applies to.
pub async fn on_stream_stop(
    ports: &Ports,
    stream: &StreamPath,
) -> Result<Option<String>, StoreError> {
    let Some(pointer) = ports
        .store
        .load::<StreamRecording>(&StreamRecording::store_key(stream))
        .await?
    else {
        return Ok(None);
    };
    let now = ports.clock.now_ms();
    let key = Recording::store_key(&pointer.value.account, &pointer.value.recording_id);
    let updated = update_recording(ports, &key, |r| {
        if r.state == RecordingState::Finished || r.stream_stopped_ms.is_some() {
            return false;
        }
        r.stream_stopped_ms = Some(now);
        true
    })
    .await?;
    Ok(updated.map(|r| r.value.id))
}

/// Saves a recorder's progress if it still holds the recording (its token is the newest and
/// nobody wrote since `version`); `Ok(None)` when it lost it.
pub async fn save_progress(
    ports: &Ports,
    progress: &RecordingProgress,
    version: Option<u64>,
) -> Result<Option<u64>, StoreError> {
    let condition = version.map_or(Condition::Absent, Condition::Version);
    match ports.store.save(progress, condition).await {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Marks a recording finished (with `error` when it failed) and adds its files.
pub async fn finish_recording(
    ports: &Ports,
    key: &str,
    files: &[String],
    error: Option<String>,
) -> Result<(), StoreError> {
    update_recording(ports, key, |r| {
        if r.state == RecordingState::Finished {
            return false;
        }
        r.state = RecordingState::Finished;
        for f in files {
            if !r.files.contains(f) {
                r.files.push(f.clone());
            }
        }
        r.error = error.clone();
        true
    })
    .await?;
    Ok(())
}
