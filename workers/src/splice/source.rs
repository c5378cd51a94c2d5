//! The source side of a task: one supervisor that pulls the task's sources one at a time
//! (walking the ordered list on failure) and feeds a [`Splicer`], whoever consumes it.
//!
//! A source failover, a manual switch, or a VOD item ending only replaces the ingest: the
//! splicer's subscribers see one continuous timeline. The same splice carries the playout
//! features:
//! - [`SourceSupervisor::replace_sources`] (`cmd=3`): the new list's first item is pulled
//!   beside the current source and takes over at its keyframe ([`ApplyAt::Now`]), or when
//!   the current VOD item ends ([`ApplyAt::AfterCurrentItem`]);
//! - VOD playlists (every source [`SourceKind::Vod`]): items in order, paced in real time,
//!   [`SourceSpec::loops`] passes from [`SourceSpec::start_index`], each item cut to its
//!   [`IngestSpec::window`] (`relofftime`); a failing item is reported and skipped;
//! - hot standby ([`SourceSpec::hot_standby`]): a natively pulled next source kept connected
//!   beside the running one, replayed from its latest keyframe on a failover;
//! - the slate ([`SourceSpec::slate`], [`super::slate`]): while every live source is down the
//!   subscribers get black (or an image) and silence at the stream's format, until a source is
//!   back or the slate times out;
//! - [`SourceSpec::switch_back_after`]: automatic return to the primary.
//!
//! Consumers subscribe to [`SourceSupervisor::splicer`] with their own
//! [`SubscribeOptions`]: a relay session's pushers, or a recorder's file sinks, which never
//! drop, see the switches and gaps, and leave the slate out.
//!
//! ```no_run
//! use relaycast_workers::ingest::IngestSpec;
//! use relaycast_workers::splice::source::{SourceSpec, SourceSupervisor};
//! use relaycast_workers::splice::splicer::{SpliceItem, SubscribeOptions};
//!
//! # async fn record() -> Result<(), relaycast_workers::splice::source::SourceError> {
//! let spec = SourceSpec::new(vec![IngestSpec::live("rtmp://origin.example/live/main")]);
//! let source = SourceSupervisor::start(spec, |event| println!("{event:?}"))?;
//! let mut sink = source.subscribe(SubscribeOptions::file_sink());
//! while let Some(item) = sink.recv_item().await {
//!     match item {
//!         SpliceItem::Tag(tag) => { /* write it */ let _ = tag; }
//!         SpliceItem::Switch(_) | SpliceItem::Gap(_) => { /* e.g. an HLS discontinuity */ }
//!     }
//! #   break;
//! }
//! source.stop().await;
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ingest::{
    egress, Ingest, IngestError, IngestEvent, IngestProgress, IngestSpec, SourceKind,
};
use crate::media::flv::FlvTag;
use crate::splice::slate::{self, SlateConfig};
use crate::splice::splicer::{
    Origin, Splicer, SplicerConfig, SubscribeOptions, Subscription, VideoShape,
};

/// How long an ingest gets to exit after SIGINT before its group is killed.
pub(crate) const INGEST_STOP_DEADLINE: Duration = Duration::from_secs(2);

/// Errors of the source supervisor's API. Invalid sources are the caller's fault;
/// [`SourceError::Stopped`] means the supervisor is gone.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A supervisor needs at least one source.
    #[error("at least one source is needed")]
    NoSources,
    /// A source was refused.
    #[error("source {index}: {source}")]
    InvalidSource {
        /// Position in the source list.
        index: usize,
        /// Why.
        source: IngestError,
    },
    /// `switch_to_source` with an index past the source list.
    #[error("source index {index} out of range (the list has {len} sources)")]
    SourceOutOfRange {
        /// Requested index.
        index: usize,
        /// Number of sources.
        len: usize,
    },
    /// The supervisor has stopped.
    #[error("the source supervisor has stopped")]
    Stopped,
}

/// How often a VOD playlist is played (the seeds' `extendParam.loop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    /// This many passes (the seeds allow 1..=100).
    Count(u32),
    /// Until stopped (`loop=-1`).
    Infinite,
}

impl Loops {
    /// Maps the seeds' `loop` value: `-1` is infinite, `1..=100` a count, anything else
    /// `None` (the caller refuses it).
    pub fn from_seed(value: i64) -> Option<Loops> {
        match value {
            -1 => Some(Loops::Infinite),
            1..=100 => u32::try_from(value).ok().map(Loops::Count),
            _ => None,
        }
    }
}

/// When a source-list replacement (`cmd=3`) takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAt {
    /// At once: the new list's first item starts next to the current source and replaces
    /// it at its first keyframe (`waitCrtUrlFinish=0`).
    Now,
    /// When the current VOD item has played to its end (`waitCrtUrlFinish=1`). A live
    /// source has no end, so for live it means [`ApplyAt::Now`].
    AfterCurrentItem,
}

/// Playlist, replacement and slate events, in order, on [`SourceSpec::playout_events`].
/// (They are a channel of their own so that code matching [`SourceEvent`] exhaustively keeps
/// compiling.) Map to the seed's callbacks: `ItemFailed` → code 4, `ItemStarted` and
/// `SourcesReplaced` → code 5, `SourcesExhausted` → code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayoutEvent {
    /// A VOD item started playing.
    ItemStarted {
        /// Position in the current source list (0-based).
        index: usize,
        /// Pass over the playlist, from 1.
        loop_number: u32,
    },
    /// A VOD item could not be played (HTTP 404, unreadable, broke off); the next one plays.
    ItemFailed {
        /// Position in the current source list (0-based).
        index: usize,
        /// ffmpeg's reason.
        reason: String,
    },
    /// A `replace_sources` took effect: the supervisor now ingests the new list.
    SourcesReplaced {
        /// Length of the new list.
        sources: usize,
        /// The item it started with (0-based).
        index: usize,
    },
    /// Every source is down: the subscribers get the slate.
    SlateStarted,
    /// The slate stopped (a source is back, or the supervisor ends).
    SlateEnded,
    /// Every source failed for good (slate timeout, or every playlist item failed in a row);
    /// `Finished` follows.
    SourcesExhausted {
        /// Why.
        reason: String,
    },
    /// The supervisor ended; the same reason as [`SourceEvent::Finished`]. Always last.
    Finished {
        /// Why, for the task's state.
        cause: FinishCause,
        /// Why, in words.
        reason: String,
    },
}

/// Why a supervisor ended, see [`PlayoutEvent::Finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishCause {
    /// [`SourceSupervisor::stop`] (or the handle was dropped).
    Stopped,
    /// The playlist played its passes (`loop` reached).
    PlaylistFinished,
    /// A live `relofftime` duration is over.
    Duration,
    /// Every source failed for good (after [`PlayoutEvent::SourcesExhausted`]).
    SourcesExhausted,
    /// The last live source ended cleanly (an HTTP-FLV stream closed by its origin).
    SourceEnded,
}

/// What to pull, and how to fail over.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Ordered sources: primary first, then backups (or playlist items for VOD).
    pub sources: Vec<IngestSpec>,
    /// No tag from a running source for this long means it is down. Default 3 s.
    pub stall_timeout: Duration,
    /// A newly started source must produce its first tag within this. Default 10 s.
    pub startup_timeout: Duration,
    /// Pause after every source failed in a row, before starting over. Default 1 s.
    pub retry_delay: Duration,
    /// No tag for this long starts the next source in standby (when there is one), so a
    /// failover at `stall_timeout` does not also wait for ffmpeg's startup and a keyframe.
    /// Default 1 s.
    pub standby_after: Duration,
    /// Live with backups: when the next source is pulled natively
    /// ([`IngestSpec::native_rtmp_url`]: no process, only its latest GOP held in memory),
    /// keep it connected beside the running source all along, so a failover replays from
    /// its latest keyframe at once instead of waiting for a connection and a keyframe.
    /// A standby that fails is retried every `retry_delay`, quietly. Default true.
    pub hot_standby: bool,
    /// A running live source quiet for this long while its hot standby has a keyframe and
    /// is delivering (a tag in the last 500 ms) is taken as down, before `stall_timeout`:
    /// a network problem on our side would silence both. Adaptive: a source whose delivery
    /// jitters gets 1.5 × the largest gap between its tags over the last 10 s when that is
    /// more (at most 3/4 of `stall_timeout`), so its usual pauses are no failover. Default
    /// 400 ms (the standby's GOP is replayed from its keyframe at once, so destinations
    /// see about that long without a new frame); `None` waits for `stall_timeout` in every case.
    pub standby_failover_after: Option<Duration>,
    /// Splicer tunables.
    pub splicer: SplicerConfig,
    /// VOD playlists (every source [`SourceKind::Vod`]): how many passes. Default one.
    pub loops: Loops,
    /// VOD playlists: the item the first pass starts with, 0-based (the seeds' 1-based
    /// `index` minus one); later passes start at the first item. Past the end means the
    /// last item. Default 0.
    pub start_index: usize,
    /// What to send while every live source is down; `None` = nothing (subscribers idle
    /// while the sources are retried). Default a black slate for 5 min. Only used once the
    /// stream has had a picture.
    pub slate: Option<SlateConfig>,
    /// Live: once the supervisor runs on a backup, go back to the primary (source 0) when it
    /// has delivered data for this long without a break (it is pulled beside the backup
    /// meanwhile). `None` = stay on the backup until told otherwise. Default `None`.
    pub switch_back_after: Option<Duration>,
    /// Where [`PlayoutEvent`]s go. Default `None`.
    pub playout_events: Option<mpsc::UnboundedSender<PlayoutEvent>>,
    /// Let every source (replacements included) reach addresses inside the operator's
    /// network: the operator's `allow_private_targets`. A relay session sets it from
    /// its own flag. Default false.
    pub allow_private_targets: bool,
}

impl SourceSpec {
    /// A spec with default timings.
    pub fn new(sources: Vec<IngestSpec>) -> Self {
        SourceSpec {
            sources,
            stall_timeout: Duration::from_secs(3),
            startup_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_secs(1),
            standby_after: Duration::from_secs(1),
            hot_standby: true,
            standby_failover_after: Some(DEFAULT_STANDBY_FAILOVER),
            splicer: SplicerConfig::default(),
            loops: Loops::Count(1),
            start_index: 0,
            slate: Some(SlateConfig::default()),
            switch_back_after: None,
            playout_events: None,
            allow_private_targets: false,
        }
    }
}

/// What happened on the source side, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// The first source was started.
    Started,
    /// A source failed (stalled, exited, never produced data).
    SourceFailed {
        /// Position in the source list.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The ingest moved to another source (failover, manual switch, next VOD item).
    SwitchedSource {
        /// Previous source.
        from: usize,
        /// New source.
        to: usize,
    },
    /// The supervisor ended (stopped, or the last VOD item ended).
    Finished {
        /// Why.
        reason: String,
    },
}

/// Where a supervisor's [`SourceEvent`]s go: called on the supervisor's task, so it must not
/// block (send on a channel).
type EventSink = Box<dyn Fn(SourceEvent) + Send + Sync>;

/// State of the current source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// ffmpeg started, no tag yet.
    Starting,
    /// Tags flowing.
    Running,
    /// Between a failure and the next attempt.
    Retrying,
    /// Every source is down; the subscribers get the slate while the sources are retried.
    Slate,
    /// The supervisor is over.
    Stopped,
}

/// A snapshot of the source side.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    /// Index of the source being ingested.
    pub current_source: usize,
    /// Its state.
    pub source_state: SourceState,
    /// Source switches so far (failovers and manual switches).
    pub switches: u64,
    /// Input bitrate over the last second, kbit/s (from the tags, all codecs).
    pub bitrate_kbps: f64,
    /// Video frames per second over the last second.
    pub fps: f64,
    /// Position on the output timeline, ms.
    pub position_ms: u32,
    /// The current ingest ffmpeg's last progress line (its own time, speed, frames).
    pub source_progress: Option<IngestProgress>,
    /// Length of the current source list (changes with `replace_sources`).
    pub sources: usize,
    /// VOD playlists: the current pass, from 1.
    pub loop_number: u32,
}

/// A new source list waiting to take effect.
struct Replacement {
    sources: Vec<IngestSpec>,
    loops: Option<Loops>,
    start_index: Option<usize>,
}

impl Replacement {
    /// The seed: after a list update the relay starts over from the first URL, unless the
    /// update names a start index.
    fn first_index(&self) -> usize {
        self.start_index
            .unwrap_or(0)
            .min(self.sources.len().saturating_sub(1))
    }
}

enum Order {
    Switch(usize),
    Replace(Replacement, ApplyAt),
    SetLoops(Loops),
    Stop,
}

struct Shared {
    status: Mutex<SourceStatus>,
    /// Length of the source list the supervisor works on (for `switch_to_source` checks).
    n_sources: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to a running source supervisor. Dropping it without [`SourceSupervisor::stop`]
/// still ends it: the supervisor sees its order channel close and stops the ingest.
pub struct SourceSupervisor {
    orders: mpsc::Sender<Order>,
    shared: Arc<Shared>,
    splicer: Splicer,
    allow_private_targets: bool,
    task: Option<JoinHandle<()>>,
}

impl SourceSupervisor {
    /// Validates `spec` and starts the first source; `events` hears what happens. Must be
    /// called inside a Tokio runtime.
    pub fn start(
        mut spec: SourceSpec,
        events: impl Fn(SourceEvent) + Send + Sync + 'static,
    ) -> Result<SourceSupervisor, SourceError> {
        validate_sources(&spec.sources)?;
        for s in &mut spec.sources {
            s.allow_private_targets = spec.allow_private_targets;
        }
        let splicer = Splicer::new(spec.splicer.clone());
        let shared = Arc::new(Shared {
            status: Mutex::new(SourceStatus {
                current_source: 0,
                source_state: SourceState::Starting,
                switches: 0,
                bitrate_kbps: 0.0,
                fps: 0.0,
                position_ms: 0,
                source_progress: None,
                sources: spec.sources.len(),
                loop_number: 1,
            }),
            n_sources: AtomicUsize::new(spec.sources.len()),
        });
        let (orders, order_rx) = mpsc::channel(8);
        let allow_private_targets = spec.allow_private_targets;
        let deadline = live_deadline(&spec.sources);
        let supervisor = Supervisor {
            spec,
            splicer: splicer.clone(),
            shared: shared.clone(),
            events: Box::new(events),
            orders: order_rx,
            deadline,
            after_item: None,
            loop_number: 1,
        };
        let task = tokio::spawn(supervisor.run());
        Ok(SourceSupervisor {
            orders,
            shared,
            splicer,
            allow_private_targets,
            task: Some(task),
        })
    }

    /// The splicer this supervisor feeds: the one timeline of the task.
    pub fn splicer(&self) -> &Splicer {
        &self.splicer
    }

    /// A new consumer of the timeline, see [`Splicer::subscribe_with`].
    pub fn subscribe(&self, options: SubscribeOptions) -> Subscription {
        self.splicer.subscribe_with(options)
    }

    /// Whether the supervisor has ended (its order channel is closed).
    pub fn is_stopped(&self) -> bool {
        self.orders.is_closed()
    }

    /// Switches the ingest to source `index` (e.g. back to the primary); the new source
    /// continues the same timeline.
    pub async fn switch_to_source(&self, index: usize) -> Result<(), SourceError> {
        let len = self.shared.n_sources.load(Ordering::Relaxed);
        if index >= len {
            return Err(SourceError::SourceOutOfRange { index, len });
        }
        self.orders
            .send(Order::Switch(index))
            .await
            .map_err(|_| SourceError::Stopped)
    }

    /// Replaces the source list (`cmd=3`): the new list's first item is pulled beside the
    /// current source and takes over at its first keyframe, on the same timeline (as a
    /// failover does). A playlist starts its pass count over. See [`ApplyAt`] for `when`.
    pub async fn replace_sources(
        &self,
        sources: Vec<IngestSpec>,
        when: ApplyAt,
    ) -> Result<(), SourceError> {
        self.replace_playlist(sources, None, None, when).await
    }

    /// Changes a playlist's loop count alone (a `cmd=3` that changes only `extendParam.loop`):
    /// the pass under way counts as the first of the new count (the seed), the item playing
    /// is not interrupted.
    pub async fn set_loops(&self, loops: Loops) -> Result<(), SourceError> {
        self.orders
            .send(Order::SetLoops(loops))
            .await
            .map_err(|_| SourceError::Stopped)
    }

    /// [`SourceSupervisor::replace_sources`] that also sets the playlist's `loops` and
    /// 0-based `start_index` (a `cmd=3` carrying `extendParam.loop` / `index`). `loops: None`
    /// keeps the current count; `start_index: None` starts at the new list's first item.
    /// Either way the pass count starts over (the seed: the current item is not counted).
    pub async fn replace_playlist(
        &self,
        mut sources: Vec<IngestSpec>,
        loops: Option<Loops>,
        start_index: Option<usize>,
        when: ApplyAt,
    ) -> Result<(), SourceError> {
        validate_sources(&sources)?;
        for s in &mut sources {
            s.allow_private_targets = self.allow_private_targets;
        }
        let r = Replacement {
            sources,
            loops,
            start_index,
        };
        self.orders
            .send(Order::Replace(r, when))
            .await
            .map_err(|_| SourceError::Stopped)
    }

    /// A snapshot of the source side.
    pub fn status(&self) -> SourceStatus {
        let mut st = lock(&self.shared.status).clone();
        st.position_ms = self.splicer.stats().last_timestamp;
        st
    }

    /// Stops gracefully: the ingest gets SIGINT (then SIGKILL), the splicer closes (every
    /// subscription drains and ends) and `Finished` is emitted.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    /// [`SourceSupervisor::stop`] for an owner that cannot give the handle away.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.orders.send(Order::Stop).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

pub(crate) fn validate_sources(sources: &[IngestSpec]) -> Result<(), SourceError> {
    if sources.is_empty() {
        return Err(SourceError::NoSources);
    }
    for (index, s) in sources.iter().enumerate() {
        s.args()
            .map_err(|source| SourceError::InvalidSource { index, source })?;
    }
    Ok(())
}

/// When a live supervisor must end: the first `relofftime` (`0-N`) of its sources is a relay
/// duration for the whole run, whichever source is on (as the control plane's model has
/// it).
fn live_deadline(sources: &[IngestSpec]) -> Option<Instant> {
    if sources.first()?.kind != SourceKind::Live {
        return None;
    }
    let len = sources.iter().find_map(|s| s.window)?.length()?;
    Some(Instant::now() + len)
}

/// How one ingest run ended.
enum Outcome {
    Stop,
    /// The current source failed; `next` is a candidate ingest (standby or manual switch)
    /// already running, to be adopted instead of starting the next source from scratch.
    Failed {
        reason: String,
        next: Option<Candidate>,
    },
    /// A manual switch: restart on this source (no candidate could be prepared).
    Switch(usize),
    /// A manual switch whose new source is already producing: adopt it.
    Adopt(Candidate),
    /// A VOD item played to its end.
    Ended,
    /// A replacement list to start the plain way (its candidate could not take over).
    Replace(Replacement),
    /// A live `relofftime` duration is over.
    Deadline,
    /// Every source failed for good.
    Exhausted(String),
}

/// Why a candidate ingest runs next to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CandidateRole {
    /// The current source went quiet: the next one warms up in case it does not come back.
    Standby,
    /// A manual switch: adopt it as soon as it has a keyframe (make before break).
    Switch,
    /// The primary, pulled beside a backup: adopt it once it has been healthy for
    /// `switch_back_after`.
    Probe,
}

/// A second ingest started before the current one is dropped, so a switch does not wait
/// for ffmpeg's startup and the keyframe (2-3 s on a live source).
struct Candidate {
    index: usize,
    role: CandidateRole,
    ingest: Ingest,
    /// Latest metadata and sequence headers, then the tags since the latest keyframe.
    headers: Vec<FlvTag>,
    gop: Vec<FlvTag>,
    started: Instant,
    /// When its first tag arrived.
    first_tag: Option<Instant>,
    /// When its latest tag arrived.
    last_tag: Option<Instant>,
    /// A replacement source list that takes effect when this candidate is adopted.
    replaces: Option<Replacement>,
}

/// Pause between attempts to pull the primary beside a backup (`switch_back_after`).
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// A standby whose latest tag is this recent is delivering.
const STANDBY_FLOWING: Duration = Duration::from_millis(500);

/// [`SourceSpec::standby_failover_after`] by default.
pub const DEFAULT_STANDBY_FAILOVER: Duration = Duration::from_millis(400);

/// How far back a source's inter-tag gaps count for its quiet failover threshold.
const GAP_WINDOW: Duration = Duration::from_secs(10);

/// How long a source may be quiet, while its hot standby delivers, before it is taken as
/// down: the configured `after`, or 1.5 × `recent_gap` (the largest gap between its tags
/// over [`GAP_WINDOW`], the current quiet spell not included) when that is more, so a source
/// whose delivery jitters is not failed over for its usual pauses. The adaptive part is
/// capped at 3/4 of the stall timeout: past that the quiet failover would be no earlier than
/// the plain stall.
fn quiet_threshold(after: Duration, stall: Duration, recent_gap: Duration) -> Duration {
    after.max((recent_gap * 3 / 2).min(stall * 3 / 4))
}

/// The largest gap between a source's consecutive tags over the last [`GAP_WINDOW`]: a
/// monotonic queue (arrival times ascending, gaps strictly descending), so the largest gap in
/// the window is its first entry that is not too old.
#[derive(Debug, Default)]
struct RecentGaps {
    q: VecDeque<(Instant, Duration)>,
}

impl RecentGaps {
    /// A tag arrived at `at`, `gap` after the one before.
    fn push(&mut self, at: Instant, gap: Duration) {
        while self.q.back().is_some_and(|&(_, g)| g <= gap) {
            self.q.pop_back();
        }
        while self
            .q
            .front()
            .is_some_and(|&(t, _)| at.saturating_duration_since(t) > GAP_WINDOW)
        {
            self.q.pop_front();
        }
        self.q.push_back((at, gap));
    }

    /// The largest gap that ended within [`GAP_WINDOW`] before `now` (zero when none).
    fn max_at(&self, now: Instant) -> Duration {
        self.q
            .iter()
            .find(|&&(t, _)| now.saturating_duration_since(t) <= GAP_WINDOW)
            .map_or(Duration::ZERO, |&(_, g)| g)
    }
}

/// At most this many tags are held for a candidate (a long GOP is cut, not buffered).
const CANDIDATE_MAX_TAGS: usize = 2_000;

impl Candidate {
    fn start(index: usize, role: CandidateRole, spec: &IngestSpec) -> Result<Self, IngestError> {
        Ok(Candidate {
            index,
            role,
            ingest: Ingest::start(spec)?,
            headers: Vec::new(),
            gop: Vec::new(),
            started: Instant::now(),
            first_tag: None,
            last_tag: None,
            replaces: None,
        })
    }

    fn has_keyframe(&self) -> bool {
        !self.gop.is_empty()
    }

    fn buffer(&mut self, tag: FlvTag) {
        let now = Instant::now();
        self.first_tag.get_or_insert(now);
        self.last_tag = Some(now);
        if tag.is_metadata() || tag.is_sequence_header() {
            let same_kind = |t: &FlvTag| {
                (t.is_metadata() && tag.is_metadata())
                    || (t.is_video_sequence_header() && tag.is_video_sequence_header())
                    || (t.is_audio_sequence_header() && tag.is_audio_sequence_header())
            };
            self.headers.retain(|t| !same_kind(t));
            self.headers.push(tag);
        } else if tag.is_key_picture() {
            self.gop.clear();
            self.gop.push(tag);
        } else if !self.gop.is_empty() && self.gop.len() < CANDIDATE_MAX_TAGS {
            self.gop.push(tag);
        }
    }

    /// Buffered tags in order: headers, then the GOP.
    fn take_buffer(&mut self) -> Vec<FlvTag> {
        let mut v = std::mem::take(&mut self.headers);
        v.append(&mut self.gop);
        v
    }

    fn stop(self) {
        tokio::spawn(self.ingest.stop(INGEST_STOP_DEADLINE));
    }
}

/// The next event of an optional ingest; pending for ever when there is none.
async fn ingest_next(i: &mut Option<Ingest>) -> Option<IngestEvent> {
    match i {
        Some(i) => i.next().await,
        None => std::future::pending().await,
    }
}

/// The next event of an optional candidate; pending for ever when there is none, so it can
/// sit in a `select!`.
async fn candidate_next(c: &mut Option<Candidate>) -> Option<IngestEvent> {
    match c {
        Some(c) => c.ingest.next().await,
        None => std::future::pending().await,
    }
}

struct Supervisor {
    spec: SourceSpec,
    splicer: Splicer,
    shared: Arc<Shared>,
    events: EventSink,
    orders: mpsc::Receiver<Order>,
    /// End of a live `relofftime` duration.
    deadline: Option<Instant>,
    /// A replacement waiting for the current VOD item to end.
    after_item: Option<Replacement>,
    /// Current pass over a playlist, from 1.
    loop_number: u32,
}

/// Where the supervisor's walk over the sources is: the source to run next and the failure
/// counts that tell when everything is down.
struct Walk {
    index: usize,
    /// The source that ran last (`None` before the first).
    previous: Option<usize>,
    /// A candidate that takes over as the next source.
    adopted: Option<Candidate>,
    /// Sources that failed in a row without ever producing a tag.
    dead_in_a_row: usize,
    /// Of those, the ones the egress guard refused: retrying them cannot help.
    refused_in_a_row: usize,
    /// Playlist items that failed in a row without producing a tag.
    items_failed: usize,
}

impl Walk {
    fn new(index: usize) -> Self {
        Walk {
            index,
            previous: None,
            adopted: None,
            dead_in_a_row: 0,
            refused_in_a_row: 0,
            items_failed: 0,
        }
    }
}

/// How the supervisor ends, and why in words.
type Finish = (FinishCause, String);

/// After a source's run: go on with the walk, or finish.
type Step = ControlFlow<Finish>;

fn stopped() -> Finish {
    (FinishCause::Stopped, "stopped".to_string())
}

fn duration_reached() -> Finish {
    (
        FinishCause::Duration,
        "relay duration (relofftime) reached".to_string(),
    )
}

/// Rolling one-second rate meter over the tags.
struct Meter {
    since: Instant,
    bytes: u64,
    frames: u64,
}

impl Meter {
    fn new() -> Self {
        Meter {
            since: Instant::now(),
            bytes: 0,
            frames: 0,
        }
    }
}

/// ffmpeg names the URL in its errors; URLs often carry credentials (user info, tokens in the
/// query), and failure reasons go to logs and callbacks.
fn redact_reason(reason: &str, spec: &IngestSpec) -> String {
    reason.replace(&spec.url, &spec.redacted_url())
}

/// Sleeps until `at`, or for ever when there is no such time (for `select!` branches).
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    fn emit(&self, ev: SourceEvent) {
        (self.events)(ev);
    }

    fn playout(&self, ev: PlayoutEvent) {
        if let Some(tx) = &self.spec.playout_events {
            let _ = tx.send(ev);
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut SourceStatus)) {
        f(&mut lock(&self.shared.status));
    }

    /// Whether the session plays a VOD playlist (items end and the next one follows).
    fn is_playlist(&self) -> bool {
        self.spec.sources.iter().all(|s| s.kind == SourceKind::Vod)
    }

    fn first_index(&self) -> usize {
        self.spec
            .start_index
            .min(self.spec.sources.len().saturating_sub(1))
    }

    /// Makes `r` the source list; returns the index to start with.
    fn apply_replacement(&mut self, r: Replacement) -> usize {
        let start = r.first_index();
        let n = r.sources.len();
        self.spec.sources = r.sources;
        if let Some(l) = r.loops {
            self.spec.loops = l;
        }
        if let Some(i) = r.start_index {
            self.spec.start_index = i;
        }
        // The seed: after a list update the current item does not count as a pass.
        self.loop_number = 1;
        self.deadline = live_deadline(&self.spec.sources);
        self.shared.n_sources.store(n, Ordering::Relaxed);
        self.set_status(|s| s.sources = n);
        tracing::info!(sources = n, start, "source list replaced");
        self.playout(PlayoutEvent::SourcesReplaced {
            sources: n,
            index: start,
        });
        start
    }

    /// A new loop count; the pass under way counts as the first (the seed).
    fn set_loops(&mut self, loops: Loops) {
        self.spec.loops = loops;
        self.loop_number = 1;
        self.set_status(|s| s.loop_number = 1);
    }

    /// The playlist item after `index`, or why the playlist is over.
    fn next_item(&mut self, index: usize) -> Result<usize, String> {
        if let Some(r) = self.after_item.take() {
            return Ok(self.apply_replacement(r));
        }
        let n = self.spec.sources.len();
        if index + 1 < n {
            return Ok(index + 1);
        }
        let more = match self.spec.loops {
            Loops::Infinite => true,
            Loops::Count(c) => self.loop_number < c,
        };
        if !more {
            return Err("playlist finished".to_string());
        }
        self.loop_number += 1;
        Ok(0)
    }

    #[tracing::instrument(name = "source_supervisor", skip_all)]
    async fn run(mut self) {
        let mut walk = Walk::new(self.first_index());
        let finish = loop {
            self.announce(&mut walk);
            let playlist = self.is_playlist();
            let (outcome, produced) = self.run_source(walk.index, walk.adopted.take()).await;
            walk.previous = Some(walk.index);
            if let ControlFlow::Break(finish) =
                self.next_step(&mut walk, outcome, produced, playlist).await
            {
                break finish;
            }
        };
        self.splicer.close();
        self.set_status(|s| s.source_state = SourceState::Stopped);
        let (cause, reason) = finish;
        self.playout(PlayoutEvent::Finished {
            cause,
            reason: reason.clone(),
        });
        self.emit(SourceEvent::Finished { reason });
    }

    /// Before a source runs: takes up an adopted candidate's replacement list, tells what
    /// starts (first source, a switch, the next playlist item) and resets the status.
    fn announce(&mut self, walk: &mut Walk) {
        if let Some(c) = walk.adopted.as_mut() {
            if let Some(r) = c.replaces.take() {
                self.apply_replacement(r);
            }
            walk.index = c.index;
        }
        let index = walk.index;
        match walk.previous {
            None => self.emit(SourceEvent::Started),
            Some(from) if from != index || walk.dead_in_a_row == 0 => {
                self.emit(SourceEvent::SwitchedSource { from, to: index });
                self.set_status(|s| s.switches += 1);
                metrics::counter!("relaycast_relay_source_switches_total").increment(1);
            }
            Some(_) => {}
        }
        if self.is_playlist() {
            self.playout(PlayoutEvent::ItemStarted {
                index,
                loop_number: self.loop_number,
            });
        }
        let loop_number = self.loop_number;
        self.set_status(|s| {
            s.current_source = index;
            s.source_state = SourceState::Starting;
            s.source_progress = None;
            s.loop_number = loop_number;
            // Rates of the previous source would be stale.
            s.bitrate_kbps = 0.0;
            s.fps = 0.0;
        });
    }

    /// What follows a source's run: the next source to run, or how the supervisor ends.
    async fn next_step(
        &mut self,
        walk: &mut Walk,
        outcome: Outcome,
        produced: bool,
        playlist: bool,
    ) -> Step {
        match outcome {
            Outcome::Stop => ControlFlow::Break(stopped()),
            Outcome::Deadline => ControlFlow::Break(duration_reached()),
            Outcome::Exhausted(reason) => ControlFlow::Break(self.exhausted(reason)),
            Outcome::Switch(to) => {
                walk.dead_in_a_row = 0;
                walk.index = to;
                ControlFlow::Continue(())
            }
            Outcome::Adopt(c) => {
                walk.dead_in_a_row = 0;
                walk.refused_in_a_row = 0;
                walk.adopted = Some(c);
                ControlFlow::Continue(())
            }
            Outcome::Replace(r) => {
                walk.dead_in_a_row = 0;
                walk.refused_in_a_row = 0;
                walk.items_failed = 0;
                walk.index = self.apply_replacement(r);
                ControlFlow::Continue(())
            }
            Outcome::Ended if playlist => {
                walk.items_failed = 0;
                self.advance_playlist(walk)
            }
            Outcome::Failed { reason, next } if playlist => {
                self.item_failed(walk, reason, next, produced)
            }
            Outcome::Ended => {
                walk.dead_in_a_row = 0;
                if walk.index + 1 >= self.spec.sources.len() {
                    return ControlFlow::Break((
                        FinishCause::SourceEnded,
                        "last source ended".to_string(),
                    ));
                }
                walk.index += 1;
                ControlFlow::Continue(())
            }
            Outcome::Failed { reason, next } => {
                self.live_source_failed(walk, reason, next, produced).await
            }
        }
    }

    /// Reports `reason` as every source failing for good.
    fn exhausted(&self, reason: String) -> Finish {
        self.playout(PlayoutEvent::SourcesExhausted {
            reason: reason.clone(),
        });
        (FinishCause::SourcesExhausted, reason)
    }

    /// The next playlist item, or the playlist's end.
    fn advance_playlist(&mut self, walk: &mut Walk) -> Step {
        match self.next_item(walk.index) {
            Ok(i) => {
                walk.index = i;
                ControlFlow::Continue(())
            }
            Err(reason) => ControlFlow::Break((FinishCause::PlaylistFinished, reason)),
        }
    }

    /// A playlist item failed: reported and skipped; every item failing in a row ends it.
    fn item_failed(
        &mut self,
        walk: &mut Walk,
        reason: String,
        next: Option<Candidate>,
        produced: bool,
    ) -> Step {
        let n = self.spec.sources.len();
        let index = walk.index;
        let reason = redact_reason(&reason, &self.spec.sources[index]);
        tracing::warn!(index, %reason, "playlist item failed");
        metrics::counter!("relaycast_relay_item_failures_total").increment(1);
        self.playout(PlayoutEvent::ItemFailed { index, reason });
        if let Some(c) = next {
            // A manual switch was warming up: it plays next.
            walk.items_failed = 0;
            walk.adopted = Some(c);
            return ControlFlow::Continue(());
        }
        walk.items_failed = if produced { 0 } else { walk.items_failed + 1 };
        if walk.items_failed >= n && self.after_item.is_none() {
            return ControlFlow::Break(
                self.exhausted(format!("every playlist item failed ({n} in a row)")),
            );
        }
        self.advance_playlist(walk)
    }

    /// A live source failed: the next one runs (a warm candidate at once); once every source
    /// is down, the slate or a pause before starting over.
    async fn live_source_failed(
        &mut self,
        walk: &mut Walk,
        reason: String,
        next: Option<Candidate>,
        produced: bool,
    ) -> Step {
        let n = self.spec.sources.len();
        let index = walk.index;
        let reason = redact_reason(&reason, &self.spec.sources[index]);
        tracing::warn!(index, %reason, "source failed");
        metrics::counter!("relaycast_relay_source_failures_total").increment(1);
        self.emit(SourceEvent::SourceFailed {
            index,
            reason: reason.clone(),
        });
        if let Some(c) = next {
            walk.dead_in_a_row = 0;
            walk.adopted = Some(c);
            return ControlFlow::Continue(());
        }
        walk.dead_in_a_row = if produced { 1 } else { walk.dead_in_a_row + 1 };
        walk.refused_in_a_row = if !produced && egress::is_refusal(&reason) {
            walk.refused_in_a_row + 1
        } else {
            0
        };
        walk.index = (index + 1) % n;
        if walk.refused_in_a_row >= n {
            return ControlFlow::Break(
                self.exhausted(format!("every source was refused; {reason}")),
            );
        }
        if walk.dead_in_a_row < n {
            return ControlFlow::Continue(());
        }
        self.all_sources_down(walk, n).await
    }

    /// Everything is down. With a picture to keep, the slate holds the subscribers while
    /// the sources are retried; without, a pause before starting over, obeying orders
    /// meanwhile.
    async fn all_sources_down(&mut self, walk: &mut Walk, n: usize) -> Step {
        if let Some(cfg) = self
            .spec
            .slate
            .clone()
            .filter(|_| self.splicer.has_output())
        {
            return match self.run_slate(&cfg, walk.index).await {
                Outcome::Adopt(c) => {
                    walk.dead_in_a_row = 0;
                    walk.adopted = Some(c);
                    ControlFlow::Continue(())
                }
                Outcome::Deadline => ControlFlow::Break(duration_reached()),
                Outcome::Exhausted(reason) => ControlFlow::Break(self.exhausted(reason)),
                _ => ControlFlow::Break(stopped()),
            };
        }
        self.set_status(|s| s.source_state = SourceState::Retrying);
        tokio::select! {
            order = self.orders.recv() => match order {
                Some(Order::Switch(to)) if to < n => {
                    walk.index = to;
                    walk.dead_in_a_row = 0;
                }
                Some(Order::Switch(_)) => {}
                Some(Order::Replace(r, _)) => {
                    walk.index = self.apply_replacement(r);
                    walk.dead_in_a_row = 0;
                }
                Some(Order::SetLoops(l)) => self.set_loops(l),
                Some(Order::Stop) | None => return ControlFlow::Break(stopped()),
            },
            _ = tokio::time::sleep(self.spec.retry_delay) => {}
            _ = sleep_until_opt(self.deadline) => return ControlFlow::Break(duration_reached()),
        }
        ControlFlow::Continue(())
    }

    /// Every source is down: feeds the slate to the splicer and retries the sources (from
    /// `index`, one candidate at a time, `retry_delay` apart) until one has a keyframe, which
    /// is returned to be adopted ([`Outcome::Adopt`]). Ends with [`Outcome::Exhausted`] after
    /// the slate timeout, or [`Outcome::Stop`] / [`Outcome::Deadline`].
    async fn run_slate(&mut self, cfg: &SlateConfig, mut index: usize) -> Outcome {
        let shape = self.splicer.video_shape().unwrap_or(VideoShape {
            width: 1280,
            height: 720,
            fps: 25.0,
        });
        let mut slate = slate::start(cfg, shape);
        tracing::info!(?shape, "every source is down: slate");
        self.splicer.begin(Origin::Slate);
        self.set_status(|s| {
            s.source_state = SourceState::Slate;
            s.bitrate_kbps = 0.0;
            s.fps = 0.0;
        });
        self.playout(PlayoutEvent::SlateStarted);
        let started = Instant::now();
        let give_up = started + cfg.timeout;
        let mut candidate: Option<Candidate> = None;
        let mut next_try = Instant::now() + self.spec.retry_delay;
        let outcome = loop {
            let n = self.spec.sources.len();
            let cand_deadline = candidate
                .as_ref()
                .map(|c| c.started + self.spec.startup_timeout);
            tokio::select! {
                order = self.orders.recv() => match order {
                    Some(Order::Switch(to)) if to < n => {
                        if let Some(c) = candidate.take() { c.stop(); }
                        index = to;
                        next_try = Instant::now();
                    }
                    Some(Order::Switch(_)) => {}
                    Some(Order::Replace(r, _)) => {
                        if let Some(c) = candidate.take() { c.stop(); }
                        index = self.apply_replacement(r);
                        next_try = Instant::now();
                    }
                    Some(Order::SetLoops(l)) => self.set_loops(l),
                    Some(Order::Stop) | None => break Outcome::Stop,
                },
                _ = tokio::time::sleep_until(give_up.into()) => {
                    break Outcome::Exhausted(format!(
                        "every source failed; slate for {:?} without a source coming back",
                        cfg.timeout
                    ));
                }
                _ = sleep_until_opt(self.deadline) => break Outcome::Deadline,
                _ = tokio::time::sleep_until(next_try.into()), if candidate.is_none() => {
                    match Candidate::start(index, CandidateRole::Switch, &self.spec.sources[index]) {
                        Ok(c) => candidate = Some(c),
                        Err(e) => {
                            tracing::debug!(index, error = %e, "cannot start a source during the slate");
                            index = (index + 1) % n;
                            next_try = Instant::now() + self.spec.retry_delay;
                        }
                    }
                }
                _ = sleep_until_opt(cand_deadline), if candidate.is_some() => {
                    if let Some(c) = candidate.take() { c.stop(); }
                    index = (index + 1) % n;
                    next_try = Instant::now() + self.spec.retry_delay;
                }
                ev = candidate_next(&mut candidate) => match ev {
                    Some(IngestEvent::Tag(tag)) => {
                        if let Some(c) = candidate.as_mut() {
                            c.buffer(tag);
                            if c.has_keyframe() {
                                if let Some(c) = candidate.take() {
                                    break Outcome::Adopt(c);
                                }
                            }
                        }
                    }
                    Some(IngestEvent::Progress(_)) => {}
                    Some(IngestEvent::Exited { .. }) | None => {
                        if let Some(c) = candidate.take() { c.stop(); }
                        index = (index + 1) % n;
                        next_try = Instant::now() + self.spec.retry_delay;
                    }
                },
                ev = ingest_next(&mut slate) => match ev {
                    Some(IngestEvent::Tag(tag)) => self.splicer.push(tag),
                    Some(IngestEvent::Progress(_)) => {}
                    Some(IngestEvent::Exited { reason, .. }) => {
                        tracing::error!(%reason, "slate ffmpeg exited");
                        slate = None;
                    }
                    None => slate = None,
                },
            }
        };
        if let Some(c) = candidate.take() {
            c.stop();
        }
        if let Some(s) = slate.take() {
            tokio::spawn(s.stop(INGEST_STOP_DEADLINE));
        }
        tracing::info!(after = ?started.elapsed(), "slate ended");
        self.playout(PlayoutEvent::SlateEnded);
        outcome
    }

    /// Runs one source until it fails, ends, or an order arrives, with at most one candidate
    /// ingest beside it. Returns whether the source produced any tag.
    async fn run_source(&mut self, index: usize, adopted: Option<Candidate>) -> (Outcome, bool) {
        let mut run = match self.open_source(index, adopted) {
            Ok(run) => run,
            Err(reason) => return (Outcome::Failed { reason, next: None }, false),
        };
        let outcome = loop {
            let t = run.timers(&self.spec);
            let step = tokio::select! {
                order = self.orders.recv() => self.on_order(&mut run, order),
                _ = tokio::time::sleep_until(t.deadline.into()) => Some(run.stalled(t.wait)),
                _ = tokio::time::sleep_until(t.standby_at.into()), if t.want_standby => {
                    self.start_standby(&mut run);
                    None
                }
                _ = sleep_until_opt(self.deadline) => Some(Outcome::Deadline),
                _ = sleep_until_opt(t.quiet_failover_at), if t.quiet_failover_at.is_some() => run.quiet_failover(),
                _ = sleep_until_opt(t.probe_at), if t.probe_at.is_some() => {
                    self.start_probe(&mut run);
                    None
                }
                _ = sleep_until_opt(t.probe_ready), if t.probe_ready.is_some() => self.on_probe_ready(&mut run),
                _ = tokio::time::sleep_until(t.switch_deadline.unwrap_or(t.deadline).into()), if t.switch_deadline.is_some() => {
                    self.on_switch_timeout(&mut run)
                }
                ev = candidate_next(&mut run.candidate) => self.on_candidate_event(&mut run, ev),
                ev = run.ingest.next() => self.on_ingest_event(&mut run, ev),
            };
            if let Some(outcome) = step {
                break outcome;
            }
        };
        let produced = run.produced;
        run.finish(&outcome).await;
        (outcome, produced)
    }

    /// Starts source `index` (or takes over the adopted candidate, replaying its buffer onto
    /// the timeline); why not, when it cannot start.
    fn open_source(
        &mut self,
        index: usize,
        adopted: Option<Candidate>,
    ) -> Result<SourceRun, String> {
        let n = self.spec.sources.len();
        let kind = self.spec.sources[index].kind;
        let (ingest, prebuffer, produced) = match adopted {
            Some(mut c) => {
                let produced = c.has_keyframe();
                let buf = c.take_buffer();
                (c.ingest, buf, produced)
            }
            None => (
                Ingest::start(&self.spec.sources[index]).map_err(|e| e.to_string())?,
                Vec::new(),
                false,
            ),
        };
        self.splicer.begin(Origin::Source(index));
        for tag in prebuffer {
            self.splicer.push(tag);
        }
        if produced {
            self.set_status(|s| s.source_state = SourceState::Running);
        }
        // A live task's backup may be a file (looping): failover rules apply on it too.
        let live_session = !self.is_playlist();
        // While the primary is probed for a switch back, the probe is the second pull.
        let hot = self.spec.hot_standby
            && n > 1
            && live_session
            && (self.spec.switch_back_after.is_none() || index == 0)
            && self.spec.sources[(index + 1) % n]
                .native_rtmp_url()
                .is_some();
        let now = Instant::now();
        Ok(SourceRun {
            index,
            n,
            kind,
            ingest,
            produced,
            last_tag: now,
            seen_tag: false,
            gaps: RecentGaps::default(),
            candidate: None,
            standby_tried: false,
            meter: Meter::new(),
            next_probe: now + PROBE_INTERVAL.max(self.spec.retry_delay),
            live_session,
            hot,
            hot_retry_at: now,
            quiet_checked: None,
        })
    }

    /// An order while a source runs. A switch or a replacement starts its source as a
    /// candidate beside the current one (make before break).
    fn on_order(&mut self, run: &mut SourceRun, order: Option<Order>) -> Option<Outcome> {
        let n = run.n;
        match order {
            Some(Order::Switch(to)) if to >= n => {
                tracing::warn!(to, n, "switch to a source that is not in the list; ignored");
            }
            Some(Order::Switch(_))
                if run.candidate.as_ref().is_some_and(|c| c.replaces.is_some()) =>
            {
                tracing::warn!("switch during a source replacement; ignored");
            }
            Some(Order::Switch(to)) if to == run.index => run.drop_candidate(),
            Some(Order::Replace(r, ApplyAt::AfterCurrentItem)) if run.kind == SourceKind::Vod => {
                self.after_item = Some(r);
            }
            Some(Order::Replace(r, _)) => return run.prepare_replacement(r),
            Some(Order::Switch(to)) => return self.prepare_switch(run, to),
            Some(Order::SetLoops(l)) => self.set_loops(l),
            Some(Order::Stop) | None => return Some(Outcome::Stop),
        }
        None
    }

    /// A manual switch to `to`: adopt a candidate of it that has a keyframe, keep warming
    /// one that has not, or start one.
    fn prepare_switch(&self, run: &mut SourceRun, to: usize) -> Option<Outcome> {
        match run.candidate.take() {
            Some(c) if c.index == to && c.has_keyframe() => return Some(Outcome::Adopt(c)),
            Some(mut c) if c.index == to => {
                // Already warming up as a standby: keep it, adopt at its keyframe.
                c.role = CandidateRole::Switch;
                c.started = Instant::now();
                run.candidate = Some(c);
            }
            other => {
                if let Some(c) = other {
                    c.stop();
                }
                match Candidate::start(to, CandidateRole::Switch, &self.spec.sources[to]) {
                    Ok(c) => run.candidate = Some(c),
                    // Cannot even start it: switch the plain way and let it fail there.
                    Err(_) => return Some(Outcome::Switch(to)),
                }
            }
        }
        None
    }

    /// The running source went quiet (or, hot, it is time to retry the standby): start the
    /// next source beside it.
    fn start_standby(&self, run: &mut SourceRun) {
        run.standby_tried = true;
        let to = (run.index + 1) % run.n;
        if let Ok(c) = Candidate::start(to, CandidateRole::Standby, &self.spec.sources[to]) {
            if run.hot {
                tracing::debug!(from = run.index, to, "hot standby on the next source");
            } else {
                tracing::info!(
                    from = run.index,
                    to,
                    "source quiet, warming up the next one"
                );
            }
            run.candidate = Some(c);
        }
        run.hot_retry_at = Instant::now() + self.spec.retry_delay;
    }

    /// Time to pull the primary beside the backup, for a switch back.
    fn start_probe(&self, run: &mut SourceRun) {
        run.next_probe = Instant::now() + PROBE_INTERVAL.max(self.spec.retry_delay);
        if let Ok(c) = Candidate::start(0, CandidateRole::Probe, &self.spec.sources[0]) {
            run.candidate = Some(c);
        }
    }

    /// The probed primary has had data for the clear time: switch back if it is still
    /// delivering.
    fn on_probe_ready(&self, run: &mut SourceRun) -> Option<Outcome> {
        let stall = self.spec.stall_timeout;
        match run.candidate.take() {
            // Data, but not lately: not healthy. Try again later.
            Some(c) if c.last_tag.is_none_or(|t| t.elapsed() > stall) => c.stop(),
            Some(c) if c.has_keyframe() => {
                tracing::info!(from = run.index, "primary healthy again: switching back");
                return Some(Outcome::Adopt(c));
            }
            // Healthy but no keyframe yet: adopt at the keyframe.
            Some(mut c) => {
                c.role = CandidateRole::Switch;
                c.started = Instant::now();
                run.candidate = Some(c);
            }
            None => {}
        }
        None
    }

    /// A switch (or replacement) candidate had no keyframe within the startup timeout.
    fn on_switch_timeout(&self, run: &mut SourceRun) -> Option<Outcome> {
        if let Some(mut c) = run.candidate.take() {
            if let Some(r) = c.replaces.take() {
                // The new list does not start in time: switch to it the plain way
                // (it fails over within itself, then the slate).
                c.stop();
                return Some(Outcome::Replace(r));
            }
            self.emit(SourceEvent::SourceFailed {
                index: c.index,
                reason: format!("no keyframe within {:?}", self.spec.startup_timeout),
            });
            c.stop();
        }
        None
    }

    /// The candidate's ingest produced an event: buffer its tags (a switch is adopted at its
    /// keyframe), or see it end.
    fn on_candidate_event(&self, run: &mut SourceRun, ev: Option<IngestEvent>) -> Option<Outcome> {
        let reason = match ev {
            Some(IngestEvent::Tag(tag)) => {
                let c = run.candidate.as_mut()?;
                c.buffer(tag);
                if c.role == CandidateRole::Switch && c.has_keyframe() {
                    return run.candidate.take().map(Outcome::Adopt);
                }
                return None;
            }
            Some(IngestEvent::Progress(_)) => return None,
            Some(IngestEvent::Exited { reason, .. }) => reason,
            None => "no exit status".to_string(),
        };
        let mut c = run.candidate.take()?;
        if let Some(r) = c.replaces.take() {
            c.stop();
            return Some(Outcome::Replace(r));
        }
        if c.role == CandidateRole::Probe {
            // The primary is still down: try again later, quietly.
            tracing::debug!(%reason, "primary probe failed");
        } else if run.hot && c.role == CandidateRole::Standby {
            // A backup that is not up (yet): not news while the running source is fine.
            tracing::debug!(%reason, "hot standby ended");
            run.hot_retry_at = Instant::now() + self.spec.retry_delay;
        } else {
            self.emit(SourceEvent::SourceFailed {
                index: c.index,
                reason: format!("ingest ended: {reason}"),
            });
        }
        c.stop();
        None
    }

    /// The running source's ingest produced an event.
    fn on_ingest_event(&self, run: &mut SourceRun, ev: Option<IngestEvent>) -> Option<Outcome> {
        match ev {
            Some(IngestEvent::Tag(tag)) => {
                self.on_tag(run, tag);
                None
            }
            Some(IngestEvent::Progress(p)) => {
                self.set_status(|s| s.source_progress = Some(p));
                None
            }
            Some(IngestEvent::Exited { success, reason }) => Some(run.exited(success, reason)),
            None => Some(Outcome::Failed {
                reason: "ingest ended without an exit status".into(),
                next: None,
            }),
        }
    }

    /// A tag of the running source: onto the timeline, and into the watchdog and the meter.
    fn on_tag(&self, run: &mut SourceRun, tag: FlvTag) {
        if !run.produced {
            run.produced = true;
            self.set_status(|s| s.source_state = SourceState::Running);
        }
        let now = Instant::now();
        if run.seen_tag {
            run.gaps
                .push(now, now.saturating_duration_since(run.last_tag));
        }
        run.seen_tag = true;
        run.last_tag = now;
        run.standby_tried = false;
        if !run.hot
            && run
                .candidate
                .as_ref()
                .is_some_and(|c| c.role == CandidateRole::Standby)
        {
            // The source came back: the standby is not needed.
            run.drop_candidate();
        }
        run.meter.bytes += tag.data.len() as u64;
        if tag.is_video_frame() {
            run.meter.frames += 1;
        }
        self.splicer.push(tag);
        let dt = run.meter.since.elapsed();
        if dt >= Duration::from_secs(1) {
            let secs = dt.as_secs_f64();
            let (kbps, fps) = (
                run.meter.bytes as f64 * 8.0 / 1000.0 / secs,
                run.meter.frames as f64 / secs,
            );
            self.set_status(|s| {
                s.bitrate_kbps = kbps;
                s.fps = fps;
            });
            run.meter = Meter::new();
        }
    }
}

/// One source's run: its ingest, at most one candidate beside it, and the watchdog state.
struct SourceRun {
    index: usize,
    /// Length of the source list.
    n: usize,
    kind: SourceKind,
    ingest: Ingest,
    /// Whether the source has produced a tag (an adopted candidate with a keyframe has).
    produced: bool,
    /// Only tags move the watchdog: ffmpeg keeps printing progress while its input hangs.
    last_tag: Instant,
    /// Whether a tag arrived in this run (`last_tag` is then that tag's, not the start's).
    seen_tag: bool,
    /// The gaps between this run's tags, for its quiet failover threshold.
    gaps: RecentGaps,
    candidate: Option<Candidate>,
    /// A standby is tried once per quiet spell, not restarted in a loop.
    standby_tried: bool,
    meter: Meter,
    next_probe: Instant,
    /// Failover rules apply (not a VOD playlist).
    live_session: bool,
    /// The next source is natively pulled and kept connected beside this one.
    hot: bool,
    hot_retry_at: Instant,
    /// The quiet spell (by its last tag) already checked against the standby.
    quiet_checked: Option<Instant>,
}

/// When each of a source run's timers fires, from its state at one turn of its loop.
struct Timers {
    /// No tag for this long fails the source (startup or stall timeout).
    wait: Duration,
    deadline: Instant,
    standby_at: Instant,
    want_standby: bool,
    /// A switch candidate's keyframe deadline.
    switch_deadline: Option<Instant>,
    /// Pull the primary beside the backup (switch back).
    probe_at: Option<Instant>,
    /// Fail over early: the source is quiet while its warm standby is not.
    quiet_failover_at: Option<Instant>,
    /// The probed primary has been healthy for the clear time.
    probe_ready: Option<Instant>,
}

impl SourceRun {
    fn timers(&self, spec: &SourceSpec) -> Timers {
        let wait = if self.produced {
            spec.stall_timeout
        } else {
            spec.startup_timeout
        };
        let standby_at = if self.hot {
            self.hot_retry_at
        } else {
            self.last_tag + spec.standby_after
        };
        // A VOD item going quiet is not replaced by the next item: items play in order.
        let want_standby = self.produced
            && self.n > 1
            && self.live_session
            && self.candidate.is_none()
            && (self.hot || !self.standby_tried);
        let switch_deadline = self
            .candidate
            .as_ref()
            .filter(|c| c.role == CandidateRole::Switch)
            .map(|c| c.started + spec.startup_timeout);
        let probe_at = match spec.switch_back_after {
            Some(_)
                if self.index != 0
                    && self.live_session
                    && self.produced
                    && self.candidate.is_none() =>
            {
                Some(self.next_probe)
            }
            _ => None,
        };
        let quiet_failover_at = match (spec.standby_failover_after, self.candidate.as_ref()) {
            (Some(after), Some(c))
                if self.hot
                    && c.role == CandidateRole::Standby
                    && c.has_keyframe()
                    && self.quiet_checked != Some(self.last_tag) =>
            {
                Some(self.last_tag + self.quiet_after(after, spec.stall_timeout))
            }
            _ => None,
        };
        let probe_ready = match (spec.switch_back_after, self.candidate.as_ref()) {
            (Some(clear), Some(c)) if c.role == CandidateRole::Probe => {
                c.first_tag.map(|t| t + clear)
            }
            _ => None,
        };
        Timers {
            wait,
            deadline: self.last_tag + wait,
            standby_at,
            want_standby,
            switch_deadline,
            probe_at,
            quiet_failover_at,
            probe_ready,
        }
    }

    /// This source's quiet failover threshold now, see [`quiet_threshold`].
    fn quiet_after(&self, after: Duration, stall: Duration) -> Duration {
        quiet_threshold(after, stall, self.gaps.max_at(Instant::now()))
    }

    fn drop_candidate(&mut self) {
        if let Some(c) = self.candidate.take() {
            c.stop();
        }
    }

    /// No tag for `wait`. Hands over any candidate, even one still starting: restarting that
    /// source from scratch would only lose time.
    fn stalled(&mut self, wait: Duration) -> Outcome {
        Outcome::Failed {
            reason: format!("no data from the source for {wait:?}"),
            next: self.candidate.take(),
        }
    }

    /// The source has been quiet for its threshold ([`quiet_threshold`] of
    /// `standby_failover_after`) while its standby has a keyframe: it is down if the standby
    /// is delivering (else our own network is at fault).
    fn quiet_failover(&mut self) -> Option<Outcome> {
        self.quiet_checked = Some(self.last_tag);
        let flowing = self
            .candidate
            .as_ref()
            .and_then(|c| c.last_tag)
            .is_some_and(|t| t.elapsed() < STANDBY_FLOWING);
        if !flowing {
            return None;
        }
        let quiet = self.last_tag.elapsed();
        tracing::debug!(?quiet, recent_gap = ?self.gaps.max_at(Instant::now()), "quiet while the standby delivers");
        Some(Outcome::Failed {
            reason: format!("no data from the source for {quiet:.1?} while the backup delivers"),
            next: self.candidate.take(),
        })
    }

    /// A replacement list (`cmd=3`): its first item starts as a candidate that takes over at
    /// its keyframe, or the plain way when it cannot start.
    fn prepare_replacement(&mut self, r: Replacement) -> Option<Outcome> {
        self.drop_candidate();
        let start = r.first_index();
        match Candidate::start(start, CandidateRole::Switch, &r.sources[start]) {
            Ok(mut c) => {
                c.replaces = Some(r);
                self.candidate = Some(c);
                None
            }
            Err(_) => Some(Outcome::Replace(r)),
        }
    }

    /// The running ingest exited. A VOD item that played to its end hands over to a warm
    /// replacement or switch, or ends; anything else is a failure.
    fn exited(&mut self, success: bool, reason: String) -> Outcome {
        if success && self.kind == SourceKind::Vod && self.produced {
            match self.candidate.take() {
                // A replacement (or switch) was warming up: it plays next.
                Some(c) if c.has_keyframe() && c.role != CandidateRole::Standby => {
                    return Outcome::Adopt(c)
                }
                Some(mut c) => {
                    let r = c.replaces.take();
                    c.stop();
                    if let Some(r) = r {
                        return Outcome::Replace(r);
                    }
                }
                None => {}
            }
            return Outcome::Ended;
        }
        Outcome::Failed {
            reason: format!("ingest ended: {reason}"),
            next: self.candidate.take(),
        }
    }

    /// Ends the run: the candidate stops, and the ingest (gracefully on a stop order).
    async fn finish(mut self, outcome: &Outcome) {
        self.drop_candidate();
        if matches!(outcome, Outcome::Stop) {
            // A stop order is graceful: wait until ffmpeg has exited (or been killed).
            self.ingest.stop(INGEST_STOP_DEADLINE).await;
        } else {
            // Stopping may take up to the deadline; do it off the critical path so the next
            // source starts at once (the old ffmpeg no longer feeds the splicer).
            tokio::spawn(self.ingest.stop(INGEST_STOP_DEADLINE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn recent_gaps_keep_the_largest_in_the_window() {
        let t0 = Instant::now();
        let mut g = RecentGaps::default();
        assert_eq!(g.max_at(t0), Duration::ZERO);
        g.push(t0, 40 * MS);
        g.push(t0 + 100 * MS, 300 * MS);
        g.push(t0 + 200 * MS, 20 * MS);
        assert_eq!(g.max_at(t0 + 300 * MS), 300 * MS);
        // A smaller, later gap outlives the big one.
        g.push(t0 + 5 * GAP_WINDOW / 10, 100 * MS);
        assert_eq!(g.max_at(t0 + GAP_WINDOW + 50 * MS), 300 * MS);
        assert_eq!(g.max_at(t0 + GAP_WINDOW + 150 * MS), 100 * MS);
        assert_eq!(g.max_at(t0 + 2 * GAP_WINDOW), Duration::ZERO);
        // Entries stay few: the queue holds descending gaps only.
        for i in 0..1_000u32 {
            g.push(t0 + GAP_WINDOW * 3 + i * 20 * MS, 40 * MS);
        }
        assert_eq!(g.q.len(), 1);
    }

    #[test]
    fn quiet_threshold_follows_the_jitter_within_bounds() {
        let stall = Duration::from_secs(3);
        let after = DEFAULT_STANDBY_FAILOVER;
        // A steady source: the configured threshold.
        assert_eq!(quiet_threshold(after, stall, 40 * MS), after);
        // A source that pauses up to 340 ms: 1.5 times that.
        assert_eq!(quiet_threshold(after, stall, 340 * MS), 510 * MS);
        // Never as late as the stall timeout.
        assert_eq!(
            quiet_threshold(after, stall, Duration::from_secs(5)),
            stall * 3 / 4
        );
        // A configured threshold above the cap stays as configured.
        assert_eq!(
            quiet_threshold(Duration::from_millis(2800), stall, Duration::ZERO),
            Duration::from_millis(2800)
        );
    }
}
