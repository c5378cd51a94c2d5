//! A recording session: one recording driven by the recorder holding its lease. It pulls the
//! source through the relay's own source side (ingest, splicer, [`SourceSupervisor`]), as a
//! subscriber that never drops, sees gaps and leaves the slate out; cuts the timeline into
//! parts per format ([`FormatSink`]); stores each part and the progress that names it; and
//! finalizes files as they close. A session taking over a recording another recorder left
//! finalizes that one's files first and continues its HLS playlist.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use relaycast_core::app::callbacks::ConfigCache;
use relaycast_core::app::media::snapshot_taken;
use relaycast_core::app::recording::{finish_recording, save_progress, update_recording};
use relaycast_core::config::Settings;
use relaycast_core::domain::recording::media::Snapshot;
use relaycast_core::domain::recording::progress::{OpenFile, Part, RecordingProgress};
use relaycast_core::domain::recording::{RecordFormat, Recording, RecordingMode, RecordingState};
use relaycast_core::ports::{Entity, Ports, TypedStore};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::finalize::finalize_file;
use super::sink::{FormatSink, SinkStep, StartGate};
use super::snapshot::{decode_jpeg, SnapshotFrame, SnapshotPicker};
use super::{writer_for, RecorderError};
use crate::ingest::IngestSpec;
use crate::media::flv::FlvTag;
use crate::splice::source::{SourceSpec, SourceSupervisor};
use crate::splice::splicer::{OnLag, SpliceItem, SubscribeOptions};

/// How often stop conditions are checked.
const TICK: Duration = Duration::from_millis(250);
/// Without a resume timeout, a source silent this long ends the recording.
const MIN_IDLE_END: Duration = Duration::from_secs(5);
/// A source that has produced nothing for this long since the session started ends it.
const NOTHING_YET_END: Duration = Duration::from_secs(60);
/// After a stream's stop event, wait this long for tags still in flight.
const STOP_GRACE_MS: i64 = 300;
/// A file sink's backlog past this many bytes ends the recording visibly rather than
/// holding unbounded memory (a disk that stopped keeping up).
const MAX_BACKLOG_BYTES: u64 = 256 * 1024 * 1024;

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The recording is over and its files are finalized.
    Finished,
    /// Another recorder holds the recording now; nothing more was written.
    LeaseLost,
    /// Told to drain: the part in progress is stored and the recording left for the next
    /// recorder, unfinished.
    HandedOver,
}

/// What a session needs from its worker.
#[derive(Clone)]
pub struct SessionContext {
    /// The ports.
    pub ports: Ports,
    /// The operator's settings.
    pub settings: Arc<Settings>,
    /// The ffmpeg binary (ingests, MP4 remux).
    pub ffmpeg: PathBuf,
    /// Reach loopback sources (tests and benchmarks only).
    pub on_loopback: bool,
    /// Callback templates as this process last read them (snapshot notices).
    pub config_cache: Arc<ConfigCache>,
}

/// The progress record and its version, written compare-and-set: a write that fails means
/// another recorder took over.
struct Tracked {
    progress: RecordingProgress,
    version: Option<u64>,
}

impl Tracked {
    async fn save(&mut self, ports: &Ports) -> Result<bool, RecorderError> {
        match save_progress(ports, &self.progress, self.version).await? {
            Some(v) => {
                self.version = Some(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Runs `recording` under the lease whose fencing token is `token`. `control` carries the
/// recording's record as the API changes it; `lease_lost` fires when a heartbeat finds the
/// lease gone; `drain` hands the recording over.
pub async fn run(
    ctx: SessionContext,
    recording: Recording,
    mut control: watch::Receiver<Recording>,
    token: u64,
    lease_lost: CancellationToken,
    drain: CancellationToken,
) -> Result<SessionEnd, RecorderError> {
    let ports = &ctx.ports;
    let key = recording.key();
    let mut tracked = match ports.store.load::<RecordingProgress>(&key).await? {
        Some(v) => Tracked {
            progress: v.value,
            version: Some(v.version),
        },
        None => Tracked {
            progress: RecordingProgress::new(&recording),
            version: None,
        },
    };
    if tracked.progress.lease_token > token {
        return Ok(SessionEnd::LeaseLost);
    }
    let resumed = tracked.progress.generation > 0;
    tracked.progress.lease_token = token;
    tracked.progress.generation += 1;
    // What the previous recorder had open ends here, except the HLS playlist, which goes on.
    let (hls, others): (Vec<OpenFile>, Vec<OpenFile>) = std::mem::take(&mut tracked.progress.open)
        .into_iter()
        .partition(|f| f.format == RecordFormat::Hls);
    tracked.progress.open = hls;
    tracked.progress.closing.extend(others);
    if !tracked.save(ports).await? {
        return Ok(SessionEnd::LeaseLost);
    }
    if resumed {
        tracing::info!(recording = %recording.id, generation = tracked.progress.generation, "recording taken over; continuing it");
    }
    update_recording(ports, &key, |r| {
        let pending = r.state == RecordingState::Pending;
        if pending {
            r.state = RecordingState::Recording;
        }
        pending
    })
    .await?;
    let mut session = Session {
        ctx: ctx.clone(),
        recording,
        tracked,
        sinks: Vec::new(),
        seq: 0,
    };
    if !session.finalize_closing().await? {
        return Ok(SessionEnd::LeaseLost);
    }
    let end = session.record(&mut control, &lease_lost, &drain).await?;
    match end {
        Recorded::LeaseLost => return Ok(SessionEnd::LeaseLost),
        Recorded::Drained => return Ok(SessionEnd::HandedOver),
        Recorded::Ended(error) => {
            let open = std::mem::take(&mut session.tracked.progress.open);
            session.tracked.progress.closing.extend(open);
            if !session.tracked.save(ports).await? || !session.finalize_closing().await? {
                return Ok(SessionEnd::LeaseLost);
            }
            let files = session.tracked.progress.finalized.clone();
            finish_recording(ports, &key, &files, error).await?;
            tracing::info!(recording = %session.recording.id, files = files.len(), "recording finished");
        }
    }
    Ok(SessionEnd::Finished)
}

enum Recorded {
    Ended(Option<String>),
    LeaseLost,
    Drained,
}

struct Session {
    ctx: SessionContext,
    recording: Recording,
    tracked: Tracked,
    sinks: Vec<FormatSink>,
    /// Parts stored by this session, which names them apart.
    seq: u64,
}

impl Session {
    /// Why the recording should end now, if it should.
    fn due_to_end(&self, now: i64, last_media_ms: Option<i64>, started_ms: i64) -> Option<String> {
        let r = &self.recording;
        if r.state == RecordingState::Finished || r.stop_requested_ms.is_some() {
            return Some("stopped".into());
        }
        if r.end_time_ms.is_some_and(|end| end <= now) {
            return Some("end time reached".into());
        }
        let resume_ms = i64::from(r.spec.resume_timeout_secs) * 1000;
        if r.mode == RecordingMode::Auto {
            if let Some(stopped) = r.stream_stopped_ms {
                if now >= stopped + resume_ms.max(STOP_GRACE_MS)
                    && last_media_ms.is_none_or(|m| m <= stopped + STOP_GRACE_MS)
                {
                    return Some("stream ended".into());
                }
            }
        }
        let idle_limit = resume_ms.max(MIN_IDLE_END.as_millis() as i64);
        match last_media_ms {
            Some(last) if now - last >= idle_limit => {
                Some("source silent past the resume timeout".into())
            }
            None if now - started_ms >= (NOTHING_YET_END.as_millis() as i64).max(idle_limit) => {
                Some("the source produced nothing".into())
            }
            _ => None,
        }
    }

    async fn record(
        &mut self,
        control: &mut watch::Receiver<Recording>,
        lease_lost: &CancellationToken,
        drain: &CancellationToken,
    ) -> Result<Recorded, RecorderError> {
        let ports = self.ctx.ports.clone();
        let started_ms = ports.clock.now_ms();
        if let Some(reason) = self
            .due_to_end(started_ms, None, started_ms)
            .filter(|r| r != "the source produced nothing")
        {
            tracing::info!(recording = %self.recording.id, %reason, "recording ends before it starts");
            return Ok(Recorded::Ended(None));
        }
        for f in &self.recording.spec.formats {
            let mut sink = FormatSink::new(
                f.format,
                writer_for(f.format),
                Some(u64::from(f.max_file_secs) * 1000),
            );
            if let Some(open) = self
                .tracked
                .progress
                .open
                .iter()
                .find(|o| o.format == f.format)
            {
                sink.resume(open.duration_ms());
            }
            self.sinks.push(sink);
        }
        let mut ingest = IngestSpec::live(self.recording.source_url.clone());
        ingest.ffmpeg_path = self.ctx.ffmpeg.clone();
        let mut spec = SourceSpec::new(vec![ingest]);
        spec.slate = None;
        spec.allow_private_targets =
            self.ctx.settings.allow_private_targets || self.ctx.on_loopback;
        let id = self.recording.id.clone();
        let supervisor = SourceSupervisor::start(
            spec,
            move |event| tracing::debug!(recording = %id, ?event, "recording source"),
        )
        .map_err(|e| RecorderError::Source(e.to_string()))?;
        let mut options = SubscribeOptions::file_sink();
        options.on_lag = OnLag::NeverDrop {
            max_backlog_bytes: Some(MAX_BACKLOG_BYTES),
        };
        let mut sub = supervisor.subscribe(options);
        let mut tick = tokio::time::interval(TICK);
        let mut last_media_ms: Option<i64> = None;
        let mut gate = StartGate::new();
        let mut snapshots = self
            .recording
            .spec
            .snapshot_interval_secs
            .map(|s| SnapshotPicker::new(Duration::from_secs(u64::from(s))));
        let mut snapshot_running: Option<tokio::task::JoinHandle<()>> = None;
        let outcome = loop {
            tokio::select! {
                biased;
                _ = lease_lost.cancelled() => break Recorded::LeaseLost,
                _ = drain.cancelled() => {
                    match self.flush_all().await? {
                        true => break Recorded::Drained,
                        false => break Recorded::LeaseLost,
                    }
                }
                changed = control.changed() => {
                    if changed.is_ok() {
                        self.recording = control.borrow_and_update().clone();
                    }
                }
                _ = tick.tick() => {
                    if let Some(reason) = self.due_to_end(ports.clock.now_ms(), last_media_ms, started_ms) {
                        tracing::info!(recording = %self.recording.id, %reason, "recording ends");
                        // A source that never delivered is a failed recording, not an empty one.
                        let error = last_media_ms.is_none().then(|| format!("{reason} ({})", relaycast_core::domain::relay::types::redact_url(&self.recording.source_url)));
                        break self.end_with(error).await?;
                    }
                }
                item = sub.recv_item() => match item {
                    Some(SpliceItem::Tag(tag)) => {
                        last_media_ms = Some(ports.clock.now_ms());
                        for tag in gate.pass(tag) {
                            if let Some(frame) = snapshots.as_mut().and_then(|p| p.observe(&tag)) {
                                // One at a time: a decode still running skips this one.
                                if snapshot_running.as_ref().is_none_or(|h| h.is_finished()) {
                                    snapshot_running = Some(tokio::spawn(take_snapshot(self.ctx.clone(), self.recording.clone(), frame)));
                                }
                            }
                            if !self.feed(&tag).await? {
                                break;
                            }
                        }
                        if self.tracked.version.is_none() {
                            break Recorded::LeaseLost;
                        }
                    }
                    Some(SpliceItem::Gap(gap)) => tracing::info!(recording = %self.recording.id, wall_ms = gap.wall.as_millis() as u64, "source came back; the recording continues"),
                    Some(SpliceItem::Switch(_)) => {}
                    None => {
                        let error = sub.overflowed().then(|| "the recording fell too far behind its source".to_string());
                        break self.end_with(error).await?;
                    }
                },
            }
        };
        supervisor.stop().await;
        Ok(outcome)
    }

    /// Gives a tag to every sink and stores what they cut; `false` when the lease was lost.
    async fn feed(&mut self, tag: &FlvTag) -> Result<bool, RecorderError> {
        for i in 0..self.sinks.len() {
            if self.sinks[i].is_disabled() {
                continue;
            }
            let steps = match self.sinks[i].push(tag) {
                Ok(steps) => steps,
                Err(e) => {
                    // The stream cannot go into this format (e.g. AAC of MP3 audio): the other
                    // formats go on; this one keeps what it has.
                    tracing::warn!(recording = %self.recording.id, format = self.sinks[i].format.as_str(), error = %e, "format dropped from the recording");
                    metrics::counter!("relaycast_record_format_errors_total").increment(1);
                    self.sinks[i].disable();
                    continue;
                }
            };
            if !self.apply(i, steps).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn end_with(&mut self, error: Option<String>) -> Result<Recorded, RecorderError> {
        Ok(if self.flush_all().await? {
            Recorded::Ended(error)
        } else {
            Recorded::LeaseLost
        })
    }

    /// Stores every sink's part in progress; `false` when the lease was lost.
    async fn flush_all(&mut self) -> Result<bool, RecorderError> {
        for i in 0..self.sinks.len() {
            let steps = match self.sinks[i].flush() {
                Ok(steps) => steps,
                Err(e) => {
                    tracing::warn!(recording = %self.recording.id, error = %e, "last part of a format lost");
                    continue;
                }
            };
            if !self.apply(i, steps).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Carries out a sink's steps; `false` when the lease was lost (a progress write failed;
    /// `tracked.version` is then `None`).
    async fn apply(&mut self, sink: usize, steps: Vec<SinkStep>) -> Result<bool, RecorderError> {
        let ports = self.ctx.ports.clone();
        let format = self.sinks[sink].format;
        for step in steps {
            match step {
                SinkStep::Part {
                    body,
                    init,
                    discontinuity,
                } => {
                    let now = ports.clock.now_ms();
                    let progress = &mut self.tracked.progress;
                    let index = match progress.open.iter().position(|f| f.format == format) {
                        Some(i) => i,
                        None => {
                            let next = next_file_index(progress, format);
                            let (video_codec, resolution) = self.sinks[sink].video_info();
                            progress.open.push(OpenFile {
                                format,
                                index: next,
                                start_ms: now - body.duration_ms as i64,
                                end_ms: now,
                                parts: Vec::new(),
                                video_codec,
                                resolution,
                            });
                            progress.open.len() - 1
                        }
                    };
                    let generation = progress.generation;
                    let file_index = progress.open[index].index;
                    let dir = format!(
                        "{}/{}/{:04}",
                        self.recording.object_prefix(),
                        format.as_str(),
                        file_index
                    );
                    self.seq += 1;
                    let (init_key, init_bytes) = match init {
                        Some(init) => {
                            let key = format!("{dir}/g{generation}_{:06}_init.mp4", self.seq);
                            let size = init.len() as u64;
                            ports.objects.put_bytes(&key, init, "video/mp4").await?;
                            (Some(key), size)
                        }
                        None => (None, 0),
                    };
                    let key = format!(
                        "{dir}/g{generation}_{:06}.{}",
                        self.seq,
                        part_extension(format)
                    );
                    let bytes = body.bytes.len() as u64;
                    ports
                        .objects
                        .put_bytes(&key, body.bytes, "application/octet-stream")
                        .await?;
                    let file = &mut self.tracked.progress.open[index];
                    if file.video_codec.is_none() {
                        (file.video_codec, file.resolution) = self.sinks[sink].video_info();
                    }
                    file.end_ms = now;
                    file.parts.push(Part {
                        key,
                        bytes,
                        duration_ms: body.duration_ms,
                        discontinuity,
                        init_key,
                        init_bytes,
                    });
                    if format == RecordFormat::Hls {
                        self.tracked.progress.timeline_ms += body.duration_ms;
                    }
                    metrics::counter!("relaycast_record_parts_total", "format" => format.as_str())
                        .increment(1);
                    if !self.tracked.save(&ports).await? {
                        self.tracked.version = None;
                        return Ok(false);
                    }
                }
                SinkStep::CloseFile => {
                    let progress = &mut self.tracked.progress;
                    if let Some(i) = progress.open.iter().position(|f| f.format == format) {
                        let file = progress.open.remove(i);
                        progress.closing.push(file);
                        if !self.tracked.save(&ports).await? || !self.finalize_closing().await? {
                            self.tracked.version = None;
                            return Ok(false);
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Finalizes every closing file, oldest first, recording each in the progress; `false`
    /// when the lease was lost.
    async fn finalize_closing(&mut self) -> Result<bool, RecorderError> {
        while let Some(file) = self.tracked.progress.closing.first().cloned() {
            let key =
                finalize_file(&self.ctx.ports, &self.ctx.ffmpeg, &self.recording, &file).await?;
            let progress = &mut self.tracked.progress;
            progress.closing.remove(0);
            progress.finalized.extend(key);
            if !self.tracked.save(&self.ctx.ports).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Decodes, stores and notices one snapshot; a failure is logged and costs only it.
async fn take_snapshot(ctx: SessionContext, recording: Recording, frame: SnapshotFrame) {
    let taken_ms = ctx.ports.clock.now_ms();
    let jpeg = match decode_jpeg(&ctx.ffmpeg, &frame).await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(recording = %recording.id, error = %e, "snapshot not taken");
            return;
        }
    };
    let (width, height) = frame.size.unwrap_or((0, 0));
    let key = Snapshot::object_key(
        &recording.object_prefix(),
        recording.stream_id(),
        taken_ms,
        width,
        height,
    );
    let size = jpeg.len() as u64;
    if let Err(e) = ctx.ports.objects.put_bytes(&key, jpeg, "image/jpeg").await {
        tracing::warn!(recording = %recording.id, error = %e, "snapshot not stored");
        return;
    }
    let snapshot = Snapshot {
        stream: recording.stream.clone(),
        stream_id: recording.stream_id().to_string(),
        stream_param: recording.stream_param.clone(),
        object_key: key.clone(),
        size,
        width,
        height,
        taken_ms,
    };
    match snapshot_taken(
        &ctx.ports,
        &ctx.settings,
        &ctx.config_cache,
        &recording.account,
        &snapshot,
    )
    .await
    {
        Ok(notices) => {
            metrics::counter!("relaycast_snapshots_total").increment(1);
            tracing::debug!(recording = %recording.id, key = %key, notices, "snapshot taken");
        }
        Err(e) => tracing::warn!(recording = %recording.id, error = %e, "snapshot not noticed"),
    }
}

fn next_file_index(progress: &RecordingProgress, format: RecordFormat) -> u32 {
    let used = progress
        .closing
        .iter()
        .chain(progress.open.iter())
        .filter(|f| f.format == format)
        .map(|f| f.index + 1)
        .max()
        .unwrap_or(0);
    let finalized = progress
        .finalized
        .iter()
        .filter(|k| k.ends_with(&format!(".{}", format.extension())))
        .count() as u32;
    used.max(finalized)
}

fn part_extension(format: RecordFormat) -> &'static str {
    match format {
        RecordFormat::Hls | RecordFormat::Mp4 => "m4s",
        RecordFormat::Flv => "flv",
        RecordFormat::Aac => "aac",
    }
}
