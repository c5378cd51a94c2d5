//! A relay session: one relay task's data plane.
//!
//! One supervisor task owns the ingest (one ffmpeg at a time, walking the ordered sources on
//! failure) and feeds the splicer; one [`Pusher`] per destination publishes the splicer's
//! timeline. A source failover, a manual switch, or a VOD item ending only replaces the
//! ingest: pusher connections stay up and see one continuous timeline.
//!
//! These types are local to the workers; the control plane maps its task model onto
//! [`SessionSpec`] and [`SessionEvent`].
//!
//! ```no_run
//! use relaycast_workers::ingest::IngestSpec;
//! use relaycast_workers::session::{RelaySession, SessionEvent, SessionSpec};
//!
//! # async fn relay() -> Result<(), relaycast_workers::session::SessionError> {
//! let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
//! let spec = SessionSpec::new(
//!     vec![
//!         IngestSpec::live("rtmp://origin.example/live/main"),   // primary
//!         IngestSpec::live("rtmp://backup.example/live/main"),   // backup
//!     ],
//!     vec!["rtmp://cdn-a.example/app/key?auth=x".into(), "rtmp://cdn-b.example/live/k".into()],
//! );
//! let session = RelaySession::start(spec, events_tx)?;
//! session.add_destination("rtmp://cdn-c.example/live/k")?;
//! session.stop_destination("rtmp://cdn-b.example/live/k").await?;
//! session.switch_to_source(0).await?; // back to the primary, same connections
//! println!("{:?}", session.status());
//! while let Some(ev) = events.recv().await {
//!     if let SessionEvent::SourceFailed { index, reason } = &ev {
//!         eprintln!("source {index} failed: {reason}");
//!     }
//! #   break;
//! }
//! session.stop().await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::flv::FlvTag;
use crate::ingest::{Ingest, IngestError, IngestEvent, IngestProgress, IngestSpec, SourceKind};
use crate::pusher::{Pusher, PusherConfig, PusherError, PusherEvent, PusherStatus, RtmpUrl};
use crate::splicer::{Splicer, SplicerConfig};

/// How long an ingest gets to exit after SIGINT before its group is killed.
const INGEST_STOP_DEADLINE: Duration = Duration::from_secs(2);

/// Errors of the session API. Invalid sources and destinations are the caller's fault;
/// [`SessionError::Stopped`] means the session is gone.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A session needs at least one source.
    #[error("a relay session needs at least one source")]
    NoSources,
    /// A source was refused.
    #[error("source {index}: {source}")]
    InvalidSource {
        /// Position in the source list.
        index: usize,
        /// Why.
        source: IngestError,
    },
    /// A destination URL was refused.
    #[error(transparent)]
    InvalidDestination(PusherError),
    /// The destination is already being relayed to.
    #[error("destination {0} is already in this session")]
    DuplicateDestination(String),
    /// No such destination in this session.
    #[error("destination {0} is not in this session")]
    UnknownDestination(String),
    /// `switch_to_source` with an index past the source list.
    #[error("source index {index} out of range (the session has {len} sources)")]
    SourceOutOfRange {
        /// Requested index.
        index: usize,
        /// Number of sources.
        len: usize,
    },
    /// The session has stopped.
    #[error("the relay session has stopped")]
    Stopped,
}

/// What to relay.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Ordered sources: primary first, then backups (or playlist items for VOD).
    pub sources: Vec<IngestSpec>,
    /// Destination RTMP URLs.
    pub destinations: Vec<String>,
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
    /// Pusher tunables (backoff etc.).
    pub pusher: PusherConfig,
    /// Splicer tunables.
    pub splicer: SplicerConfig,
}

impl SessionSpec {
    /// A spec with default timings.
    pub fn new(sources: Vec<IngestSpec>, destinations: Vec<String>) -> Self {
        SessionSpec {
            sources,
            destinations,
            stall_timeout: Duration::from_secs(3),
            startup_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_secs(1),
            standby_after: Duration::from_secs(1),
            pusher: PusherConfig::default(),
            splicer: SplicerConfig::default(),
        }
    }
}

/// What happened in a session, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
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
    /// A destination failed; its pusher retries with backoff on its own.
    DestinationFailed {
        /// Destination URL.
        url: String,
        /// Why.
        reason: String,
        /// Whether the destination is at fault rather than relaycast.
        destination_error: bool,
    },
    /// A destination publishes again after a failure.
    DestinationRecovered {
        /// Destination URL.
        url: String,
    },
    /// The session ended (stopped, or the last VOD item ended).
    Finished {
        /// Why.
        reason: String,
    },
}

/// State of the current source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// ffmpeg started, no tag yet.
    Starting,
    /// Tags flowing.
    Running,
    /// Between a failure and the next attempt.
    Retrying,
    /// The session is over.
    Stopped,
}

/// A snapshot of a session.
#[derive(Debug, Clone)]
pub struct SessionStatus {
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
    /// One entry per destination.
    pub destinations: Vec<PusherStatus>,
}

enum Order {
    Switch(usize),
    Stop,
}

struct Shared {
    status: Mutex<SessionStatus>,
    pushers: Mutex<BTreeMap<String, Pusher>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to a running relay session. Dropping it without [`RelaySession::stop`] still ends
/// everything: the supervisor sees its order channel close and stops the ingest, and dropped
/// pushers cancel themselves.
pub struct RelaySession {
    orders: mpsc::Sender<Order>,
    shared: Arc<Shared>,
    splicer: Splicer,
    pusher_config: PusherConfig,
    pusher_events: mpsc::UnboundedSender<PusherEvent>,
    n_sources: usize,
    supervisor: Option<JoinHandle<()>>,
}

impl RelaySession {
    /// Validates `spec`, starts the pushers and the first source. Must be called inside a
    /// Tokio runtime.
    pub fn start(
        spec: SessionSpec,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<RelaySession, SessionError> {
        if spec.sources.is_empty() {
            return Err(SessionError::NoSources);
        }
        for (index, s) in spec.sources.iter().enumerate() {
            s.args()
                .map_err(|source| SessionError::InvalidSource { index, source })?;
        }
        let mut urls = Vec::new();
        for d in &spec.destinations {
            let u = RtmpUrl::parse(d).map_err(SessionError::InvalidDestination)?;
            if urls.iter().any(|x: &RtmpUrl| x.url == u.url) {
                return Err(SessionError::DuplicateDestination(u.url));
            }
            urls.push(u);
        }

        let splicer = Splicer::new(spec.splicer.clone());
        let shared = Arc::new(Shared {
            status: Mutex::new(SessionStatus {
                current_source: 0,
                source_state: SourceState::Starting,
                switches: 0,
                bitrate_kbps: 0.0,
                fps: 0.0,
                position_ms: 0,
                source_progress: None,
                destinations: Vec::new(),
            }),
            pushers: Mutex::new(BTreeMap::new()),
        });

        // Pusher events become session events on one forwarding task.
        let (pusher_events, mut pusher_rx) = mpsc::unbounded_channel::<PusherEvent>();
        let fwd = events.clone();
        tokio::spawn(async move {
            while let Some(ev) = pusher_rx.recv().await {
                let ev = match ev {
                    PusherEvent::Failed {
                        url,
                        reason,
                        destination_error,
                    } => SessionEvent::DestinationFailed {
                        url,
                        reason,
                        destination_error,
                    },
                    PusherEvent::Recovered { url } => SessionEvent::DestinationRecovered { url },
                };
                let _ = fwd.send(ev);
            }
        });

        // Pushers connect while the ingest starts, so the first keyframe finds them ready.
        {
            let mut pushers = lock(&shared.pushers);
            for u in urls {
                let p = Pusher::spawn(
                    u.clone(),
                    splicer.clone(),
                    spec.pusher.clone(),
                    Some(pusher_events.clone()),
                );
                pushers.insert(u.url, p);
            }
        }

        let (orders, order_rx) = mpsc::channel(8);
        let n_sources = spec.sources.len();
        let pusher_config = spec.pusher.clone();
        let supervisor = Supervisor {
            spec,
            splicer: splicer.clone(),
            shared: shared.clone(),
            events,
            orders: order_rx,
        };
        let supervisor = tokio::spawn(supervisor.run());
        Ok(RelaySession {
            orders,
            shared,
            splicer,
            pusher_config,
            pusher_events,
            n_sources,
            supervisor: Some(supervisor),
        })
    }

    /// Adds a destination; it gets the cached headers and starts at the next keyframe.
    pub fn add_destination(&self, url: &str) -> Result<(), SessionError> {
        if self.orders.is_closed() {
            return Err(SessionError::Stopped);
        }
        let u = RtmpUrl::parse(url).map_err(SessionError::InvalidDestination)?;
        let mut pushers = lock(&self.shared.pushers);
        if pushers.contains_key(&u.url) {
            return Err(SessionError::DuplicateDestination(u.url));
        }
        let p = Pusher::spawn(
            u.clone(),
            self.splicer.clone(),
            self.pusher_config.clone(),
            Some(self.pusher_events.clone()),
        );
        pushers.insert(u.url, p);
        Ok(())
    }

    /// Stops one destination (a clean `deleteStream`); the others are not touched.
    pub async fn stop_destination(&self, url: &str) -> Result<(), SessionError> {
        let p = lock(&self.shared.pushers)
            .remove(url)
            .ok_or_else(|| SessionError::UnknownDestination(url.to_string()))?;
        p.stop().await;
        Ok(())
    }

    /// Switches the ingest to source `index` (e.g. back to the primary). Pushers stay
    /// connected; the new source continues the same timeline.
    pub async fn switch_to_source(&self, index: usize) -> Result<(), SessionError> {
        if index >= self.n_sources {
            return Err(SessionError::SourceOutOfRange {
                index,
                len: self.n_sources,
            });
        }
        self.orders
            .send(Order::Switch(index))
            .await
            .map_err(|_| SessionError::Stopped)
    }

    /// A snapshot of the session.
    pub fn status(&self) -> SessionStatus {
        let mut st = lock(&self.shared.status).clone();
        st.position_ms = self.splicer.stats().last_timestamp;
        st.destinations = lock(&self.shared.pushers)
            .values()
            .map(Pusher::status)
            .collect();
        st
    }

    /// Stops gracefully: pushers send `deleteStream`, the ingest gets SIGINT (then SIGKILL),
    /// and `Finished` is emitted.
    pub async fn stop(mut self) {
        let pushers: Vec<Pusher> = std::mem::take(&mut *lock(&self.shared.pushers))
            .into_values()
            .collect();
        futures::future::join_all(pushers.into_iter().map(Pusher::stop)).await;
        let _ = self.orders.send(Order::Stop).await;
        if let Some(task) = self.supervisor.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RelaySession {
    fn drop(&mut self) {
        // Dropped pushers cancel themselves; the supervisor ends when `orders` closes.
        lock(&self.shared.pushers).clear();
    }
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
}

/// Why a candidate ingest runs next to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CandidateRole {
    /// The current source went quiet: the next one warms up in case it does not come back.
    Standby,
    /// A manual switch: adopt it as soon as it has a keyframe (make before break).
    Switch,
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
        })
    }

    fn has_keyframe(&self) -> bool {
        !self.gop.is_empty()
    }

    fn buffer(&mut self, tag: FlvTag) {
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

/// The next event of an optional candidate; pending for ever when there is none, so it can
/// sit in a `select!`.
async fn candidate_next(c: &mut Option<Candidate>) -> Option<IngestEvent> {
    match c {
        Some(c) => c.ingest.next().await,
        None => std::future::pending().await,
    }
}

struct Supervisor {
    spec: SessionSpec,
    splicer: Splicer,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<SessionEvent>,
    orders: mpsc::Receiver<Order>,
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

impl Supervisor {
    fn emit(&self, ev: SessionEvent) {
        let _ = self.events.send(ev);
    }

    fn set_status(&self, f: impl FnOnce(&mut SessionStatus)) {
        f(&mut lock(&self.shared.status));
    }

    #[tracing::instrument(name = "relay_session", skip_all)]
    async fn run(mut self) {
        let n = self.spec.sources.len();
        let mut index = 0usize;
        let mut previous: Option<usize> = None;
        let mut adopted: Option<Candidate> = None;
        // Sources that failed in a row without ever producing a tag.
        let mut dead_in_a_row = 0usize;
        let finish_reason = loop {
            if let Some(c) = &adopted {
                index = c.index;
            }
            match previous {
                None => self.emit(SessionEvent::Started),
                Some(from) if from != index || dead_in_a_row == 0 => {
                    self.emit(SessionEvent::SwitchedSource { from, to: index });
                    self.set_status(|s| s.switches += 1);
                    metrics::counter!("relaycast_relay_source_switches_total").increment(1);
                }
                Some(_) => {}
            }
            self.set_status(|s| {
                s.current_source = index;
                s.source_state = SourceState::Starting;
                s.source_progress = None;
                // Rates of the previous source would be stale.
                s.bitrate_kbps = 0.0;
                s.fps = 0.0;
            });
            let (outcome, produced) = self.run_source(index, adopted.take()).await;
            previous = Some(index);
            match outcome {
                Outcome::Stop => break "stopped".to_string(),
                Outcome::Switch(to) => {
                    dead_in_a_row = 0;
                    index = to;
                }
                Outcome::Adopt(c) => {
                    dead_in_a_row = 0;
                    adopted = Some(c);
                }
                Outcome::Ended => {
                    dead_in_a_row = 0;
                    if index + 1 >= n {
                        break "last source ended".to_string();
                    }
                    index += 1;
                }
                Outcome::Failed { reason, next } => {
                    tracing::warn!(index, %reason, "source failed");
                    metrics::counter!("relaycast_relay_source_failures_total").increment(1);
                    self.emit(SessionEvent::SourceFailed { index, reason });
                    if let Some(c) = next {
                        dead_in_a_row = 0;
                        adopted = Some(c);
                        continue;
                    }
                    dead_in_a_row = if produced { 1 } else { dead_in_a_row + 1 };
                    index = (index + 1) % n;
                    if dead_in_a_row >= n {
                        // Everything is down: wait a little before starting over, but keep
                        // obeying orders meanwhile.
                        self.set_status(|s| s.source_state = SourceState::Retrying);
                        tokio::select! {
                            order = self.orders.recv() => match order {
                                Some(Order::Switch(to)) => { index = to; dead_in_a_row = 0; }
                                Some(Order::Stop) | None => break "stopped".to_string(),
                            },
                            _ = tokio::time::sleep(self.spec.retry_delay) => {}
                        }
                    }
                }
            }
        };
        self.splicer.close();
        self.set_status(|s| s.source_state = SourceState::Stopped);
        self.emit(SessionEvent::Finished {
            reason: finish_reason,
        });
    }

    /// Runs one source until it fails, ends, or an order arrives, with at most one candidate
    /// ingest beside it. Returns whether the source produced any tag.
    async fn run_source(&mut self, index: usize, adopted: Option<Candidate>) -> (Outcome, bool) {
        let n = self.spec.sources.len();
        let kind = self.spec.sources[index].kind;
        let (mut ingest, prebuffer, mut produced) = match adopted {
            Some(mut c) => {
                let produced = c.has_keyframe();
                let buf = c.take_buffer();
                (c.ingest, buf, produced)
            }
            None => match Ingest::start(&self.spec.sources[index]) {
                Ok(i) => (i, Vec::new(), false),
                Err(e) => {
                    return (
                        Outcome::Failed {
                            reason: e.to_string(),
                            next: None,
                        },
                        false,
                    )
                }
            },
        };
        self.splicer.begin_source();
        for tag in prebuffer {
            self.splicer.push(tag);
        }
        if produced {
            self.set_status(|s| s.source_state = SourceState::Running);
        }
        let mut last_tag = Instant::now();
        let mut candidate: Option<Candidate> = None;
        // A standby is tried once per quiet spell, not restarted in a loop.
        let mut standby_tried = false;
        let mut meter = Meter::new();
        let outcome = loop {
            // Only tags move the watchdog: ffmpeg keeps printing progress while its input hangs.
            let wait = if produced {
                self.spec.stall_timeout
            } else {
                self.spec.startup_timeout
            };
            let deadline = last_tag + wait;
            let standby_at = last_tag + self.spec.standby_after;
            let want_standby = produced && n > 1 && candidate.is_none() && !standby_tried;
            let switch_deadline = candidate
                .as_ref()
                .filter(|c| c.role == CandidateRole::Switch)
                .map(|c| c.started + self.spec.startup_timeout);
            tokio::select! {
                order = self.orders.recv() => match order {
                    Some(Order::Switch(to)) if to == index => {
                        if let Some(c) = candidate.take() { c.stop(); }
                    }
                    Some(Order::Switch(to)) => {
                        match candidate.take() {
                            Some(c) if c.index == to && c.has_keyframe() => break Outcome::Adopt(c),
                            Some(mut c) if c.index == to => {
                                // Already warming up as a standby: keep it, adopt at its keyframe.
                                c.role = CandidateRole::Switch;
                                c.started = Instant::now();
                                candidate = Some(c);
                            }
                            other => {
                                if let Some(c) = other { c.stop(); }
                                match Candidate::start(to, CandidateRole::Switch, &self.spec.sources[to]) {
                                    Ok(c) => candidate = Some(c),
                                    // Cannot even start it: switch the plain way and let it fail there.
                                    Err(_) => break Outcome::Switch(to),
                                }
                            }
                        }
                    }
                    Some(Order::Stop) | None => break Outcome::Stop,
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    // Hand over any candidate, even one still starting: restarting that
                    // source from scratch would only lose time.
                    let next = candidate.take();
                    break Outcome::Failed {
                        reason: format!("no data from the source for {wait:?}"),
                        next,
                    };
                }
                _ = tokio::time::sleep_until(standby_at.into()), if want_standby => {
                    standby_tried = true;
                    let to = (index + 1) % n;
                    if let Ok(c) = Candidate::start(to, CandidateRole::Standby, &self.spec.sources[to]) {
                        tracing::info!(from = index, to, "source quiet, warming up the next one");
                        candidate = Some(c);
                    }
                }
                _ = tokio::time::sleep_until(switch_deadline.unwrap_or(deadline).into()), if switch_deadline.is_some() => {
                    if let Some(c) = candidate.take() {
                        self.emit(SessionEvent::SourceFailed {
                            index: c.index,
                            reason: format!("no keyframe within {:?}", self.spec.startup_timeout),
                        });
                        c.stop();
                    }
                }
                ev = candidate_next(&mut candidate) => match ev {
                    Some(IngestEvent::Tag(tag)) => {
                        if let Some(c) = candidate.as_mut() {
                            c.buffer(tag);
                            if c.role == CandidateRole::Switch && c.has_keyframe() {
                                if let Some(c) = candidate.take() {
                                    break Outcome::Adopt(c);
                                }
                            }
                        }
                    }
                    Some(IngestEvent::Progress(_)) => {}
                    ended @ (Some(IngestEvent::Exited { .. }) | None) => {
                        let reason = match ended {
                            Some(IngestEvent::Exited { reason, .. }) => reason,
                            _ => "no exit status".to_string(),
                        };
                        if let Some(c) = candidate.take() {
                            self.emit(SessionEvent::SourceFailed {
                                index: c.index,
                                reason: format!("ingest ffmpeg exited: {reason}"),
                            });
                            c.stop();
                        }
                    }
                },
                ev = ingest.next() => match ev {
                    Some(IngestEvent::Tag(tag)) => {
                        if !produced {
                            produced = true;
                            self.set_status(|s| s.source_state = SourceState::Running);
                        }
                        last_tag = Instant::now();
                        standby_tried = false;
                        if candidate.as_ref().is_some_and(|c| c.role == CandidateRole::Standby) {
                            // The source came back: the standby is not needed.
                            if let Some(c) = candidate.take() { c.stop(); }
                        }
                        meter.bytes += tag.data.len() as u64;
                        if tag.is_video_frame() {
                            meter.frames += 1;
                        }
                        self.splicer.push(tag);
                        let dt = meter.since.elapsed();
                        if dt >= Duration::from_secs(1) {
                            let secs = dt.as_secs_f64();
                            let (kbps, fps) = (meter.bytes as f64 * 8.0 / 1000.0 / secs, meter.frames as f64 / secs);
                            self.set_status(|s| { s.bitrate_kbps = kbps; s.fps = fps; });
                            meter = Meter::new();
                        }
                    }
                    Some(IngestEvent::Progress(p)) => self.set_status(|s| s.source_progress = Some(p)),
                    Some(IngestEvent::Exited { success, reason }) => {
                        if success && kind == SourceKind::Vod && produced {
                            if let Some(c) = candidate.take() { c.stop(); }
                            break Outcome::Ended;
                        }
                        let next = candidate.take();
                        break Outcome::Failed { reason: format!("ingest ffmpeg exited: {reason}"), next };
                    }
                    None => break Outcome::Failed { reason: "ingest ended without an exit status".into(), next: None },
                },
            }
        };
        if let Some(c) = candidate.take() {
            c.stop();
        }
        if matches!(outcome, Outcome::Stop) {
            // A stop order is graceful: wait until ffmpeg has exited (or been killed).
            ingest.stop(INGEST_STOP_DEADLINE).await;
        } else {
            // Stopping may take up to the deadline; do it off the critical path so the next
            // source starts at once (the old ffmpeg no longer feeds the splicer).
            tokio::spawn(ingest.stop(INGEST_STOP_DEADLINE));
        }
        (outcome, produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_bad_specs() {
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(matches!(
            RelaySession::start(SessionSpec::new(vec![], vec![]), tx.clone()),
            Err(SessionError::NoSources)
        ));
        let spec = SessionSpec::new(
            vec![
                IngestSpec::live("rtmp://h/live/a"),
                IngestSpec::live("file:///etc/passwd"),
            ],
            vec![],
        );
        assert!(matches!(
            RelaySession::start(spec, tx.clone()),
            Err(SessionError::InvalidSource { index: 1, .. })
        ));
        let spec = SessionSpec::new(
            vec![IngestSpec::live("rtmp://h/live/a")],
            vec!["rtmp://d/live/x".into(), "rtmp://d/live/x".into()],
        );
        assert!(matches!(
            RelaySession::start(spec, tx.clone()),
            Err(SessionError::DuplicateDestination(_))
        ));
        let spec = SessionSpec::new(
            vec![IngestSpec::live("rtmp://h/live/a")],
            vec!["udp://x".into()],
        );
        assert!(matches!(
            RelaySession::start(spec, tx),
            Err(SessionError::InvalidDestination(_))
        ));
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9)
    }

    /// Every source down: each failure is reported, the session cycles through the sources
    /// with a pause, and a stop during the pause ends it promptly.
    #[tokio::test]
    async fn all_sources_down_cycles_and_stops() {
        if !std::path::Path::new(crate::ingest::DEFAULT_FFMPEG).exists() {
            eprintln!("SKIP: no ffmpeg");
            return;
        }
        let src = |p: u16| IngestSpec::live(format!("rtmp://127.0.0.1:{p}/live/x"));
        let mut spec = SessionSpec::new(vec![src(closed_port()), src(closed_port())], vec![]);
        spec.retry_delay = Duration::from_secs(30);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = RelaySession::start(spec, tx).expect("start");
        let mut seen = Vec::new();
        let ok = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = rx.recv().await {
                seen.push(ev);
                if seen
                    .iter()
                    .filter(|e| matches!(e, SessionEvent::SourceFailed { .. }))
                    .count()
                    == 2
                {
                    break;
                }
            }
        })
        .await;
        assert!(ok.is_ok(), "events: {seen:?}");
        assert_eq!(seen[0], SessionEvent::Started);
        assert!(matches!(
            seen[1],
            SessionEvent::SourceFailed { index: 0, .. }
        ));
        assert_eq!(seen[2], SessionEvent::SwitchedSource { from: 0, to: 1 });
        assert!(matches!(
            seen[3],
            SessionEvent::SourceFailed { index: 1, .. }
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(session.status().source_state, SourceState::Retrying);
        let t = Instant::now();
        session.stop().await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "stop waited out the retry delay"
        );
        let mut rest = Vec::new();
        while let Ok(e) = rx.try_recv() {
            rest.push(e);
        }
        assert!(
            matches!(rest.last(), Some(SessionEvent::Finished { .. })),
            "{rest:?}"
        );
    }
}
