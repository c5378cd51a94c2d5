//! A relay session: one relay task's data plane. A [`SourceSupervisor`] pulls the task's
//! sources onto one timeline; one [`Pusher`] per destination publishes it. A source failover,
//! a manual switch, or a VOD item ending only replaces the ingest: pusher connections stay up
//! and see one continuous timeline (see [`crate::splice::source`] for the playout features).
//!
//! These types are local to the workers; the control plane maps its task model onto
//! [`SessionSpec`] and [`SessionEvent`].
//!
//! ```no_run
//! use relaycast_workers::ingest::IngestSpec;
//! use relaycast_workers::relay::session::{RelaySession, SessionEvent, SessionSpec};
//!
//! # async fn relay() -> Result<(), relaycast_workers::relay::session::SessionError> {
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
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::ingest::{IngestError, IngestProgress, IngestSpec};
use crate::relay::pusher::{Pusher, PusherConfig, PusherEvent, PusherStatus, RtmpUrl};
pub use crate::splice::slate::SlateConfig;
pub use crate::splice::source::SourceSpec;
use crate::splice::source::{validate_sources, SourceError, SourceEvent, SourceSupervisor};
pub use crate::splice::source::{ApplyAt, FinishCause, Loops, PlayoutEvent, SourceState};
use crate::splice::splicer::{SubscribeOptions, Subscription};

fn destination(url: &str) -> Result<RtmpUrl, SessionError> {
    RtmpUrl::parse_parts(url).map_err(|reason| SessionError::InvalidDestination {
        url: url.to_string(),
        reason,
    })
}

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
    #[error("invalid destination URL: {reason}")]
    InvalidDestination {
        /// The URL as given (not in the message: it holds the stream key).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
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

impl From<SourceError> for SessionError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::NoSources => SessionError::NoSources,
            SourceError::InvalidSource { index, source } => {
                SessionError::InvalidSource { index, source }
            }
            SourceError::SourceOutOfRange { index, len } => {
                SessionError::SourceOutOfRange { index, len }
            }
            SourceError::Stopped => SessionError::Stopped,
        }
    }
}

/// What to relay: the source side, and the destinations.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Sources and how to fail over between them.
    pub source: SourceSpec,
    /// Destination RTMP URLs.
    pub destinations: Vec<String>,
    /// Pusher tunables (backoff etc.).
    pub pusher: PusherConfig,
    /// Let every source and destination of the session (replacements included) reach
    /// addresses inside the operator's network: the operator's `allow_private_targets`.
    /// Overrides the flags of `source` and `pusher`. Default false.
    pub allow_private_targets: bool,
}

impl SessionSpec {
    /// A spec with default timings.
    pub fn new(sources: Vec<IngestSpec>, destinations: Vec<String>) -> Self {
        SessionSpec {
            source: SourceSpec::new(sources),
            destinations,
            pusher: PusherConfig::default(),
            allow_private_targets: false,
        }
    }

    /// [`SessionSpec::new`] with private targets allowed: for tests and benchmarks whose
    /// sources and destinations run on 127.0.0.1.
    pub fn on_loopback(sources: Vec<IngestSpec>, destinations: Vec<String>) -> Self {
        SessionSpec {
            allow_private_targets: true,
            ..SessionSpec::new(sources, destinations)
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

impl From<SourceEvent> for SessionEvent {
    fn from(e: SourceEvent) -> Self {
        match e {
            SourceEvent::Started => SessionEvent::Started,
            SourceEvent::SourceFailed { index, reason } => {
                SessionEvent::SourceFailed { index, reason }
            }
            SourceEvent::SwitchedSource { from, to } => SessionEvent::SwitchedSource { from, to },
            SourceEvent::Finished { reason } => SessionEvent::Finished { reason },
        }
    }
}

impl From<PusherEvent> for SessionEvent {
    fn from(e: PusherEvent) -> Self {
        match e {
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
        }
    }
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
    /// Length of the current source list (changes with `replace_sources`).
    pub sources: usize,
    /// VOD playlists: the current pass, from 1.
    pub loop_number: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to a running relay session. Dropping it without [`RelaySession::stop`] still ends
/// everything: the supervisor sees its order channel close and stops the ingest, and dropped
/// pushers cancel themselves.
pub struct RelaySession {
    source: SourceSupervisor,
    pushers: Mutex<BTreeMap<String, Pusher>>,
    pusher_config: PusherConfig,
    pusher_events: mpsc::UnboundedSender<PusherEvent>,
}

impl RelaySession {
    /// Validates `spec`, starts the pushers and the first source. Must be called inside a
    /// Tokio runtime.
    pub fn start(
        mut spec: SessionSpec,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<RelaySession, SessionError> {
        // Sources are checked before destinations, and both before anything starts.
        validate_sources(&spec.source.sources)?;
        spec.pusher.allow_private_targets = spec.allow_private_targets;
        spec.source.allow_private_targets = spec.allow_private_targets;
        let mut urls = Vec::new();
        for d in &spec.destinations {
            let u = destination(d)?;
            if urls.iter().any(|x: &RtmpUrl| x == &u) {
                return Err(SessionError::DuplicateDestination(u.to_string()));
            }
            urls.push(u);
        }

        // Pusher events become session events on one forwarding task.
        let (pusher_events, mut pusher_rx) = mpsc::unbounded_channel::<PusherEvent>();
        let fwd = events.clone();
        tokio::spawn(async move {
            while let Some(ev) = pusher_rx.recv().await {
                let _ = fwd.send(ev.into());
            }
        });

        let source = SourceSupervisor::start(spec.source, move |ev| {
            let _ = events.send(ev.into());
        })?;
        let session = RelaySession {
            source,
            pushers: Mutex::new(BTreeMap::new()),
            pusher_config: spec.pusher,
            pusher_events,
        };
        // Pushers connect while the ingest starts, so the first keyframe finds them ready.
        {
            let mut pushers = lock(&session.pushers);
            for u in urls {
                pushers.insert(u.to_string(), session.spawn_pusher(u));
            }
        }
        Ok(session)
    }

    fn spawn_pusher(&self, url: RtmpUrl) -> Pusher {
        Pusher::spawn(
            url,
            self.source.splicer().clone(),
            self.pusher_config.clone(),
            Some(self.pusher_events.clone()),
        )
    }

    /// Adds a destination; it gets the cached headers and starts at the next keyframe.
    pub fn add_destination(&self, url: &str) -> Result<(), SessionError> {
        if self.source.is_stopped() {
            return Err(SessionError::Stopped);
        }
        let u = destination(url)?;
        let mut pushers = lock(&self.pushers);
        if pushers.contains_key(u.as_str()) {
            return Err(SessionError::DuplicateDestination(u.to_string()));
        }
        pushers.insert(u.to_string(), self.spawn_pusher(u));
        Ok(())
    }

    /// Stops one destination (a clean `deleteStream`); the others are not touched.
    pub async fn stop_destination(&self, url: &str) -> Result<(), SessionError> {
        let p = lock(&self.pushers)
            .remove(url)
            .ok_or_else(|| SessionError::UnknownDestination(url.to_string()))?;
        p.stop().await;
        Ok(())
    }

    /// Another consumer of the session's timeline (beside the pushers), with its own policy.
    pub fn subscribe(&self, options: SubscribeOptions) -> Subscription {
        self.source.subscribe(options)
    }

    /// Switches the ingest to source `index` (e.g. back to the primary). Pushers stay
    /// connected; the new source continues the same timeline.
    pub async fn switch_to_source(&self, index: usize) -> Result<(), SessionError> {
        Ok(self.source.switch_to_source(index).await?)
    }

    /// Replaces the source list (`cmd=3`) without touching any destination connection:
    /// the new list's first item is pulled beside the current source and takes over at its
    /// first keyframe, on the same timeline (as a failover does). A playlist starts its pass
    /// count over. See [`ApplyAt`] for `when`.
    pub async fn replace_sources(
        &self,
        sources: Vec<IngestSpec>,
        when: ApplyAt,
    ) -> Result<(), SessionError> {
        Ok(self.source.replace_sources(sources, when).await?)
    }

    /// Changes a playlist's loop count alone, see [`SourceSupervisor::set_loops`].
    pub async fn set_loops(&self, loops: Loops) -> Result<(), SessionError> {
        Ok(self.source.set_loops(loops).await?)
    }

    /// [`RelaySession::replace_sources`] that also sets the playlist's `loops` and 0-based
    /// `start_index`, see [`SourceSupervisor::replace_playlist`].
    pub async fn replace_playlist(
        &self,
        sources: Vec<IngestSpec>,
        loops: Option<Loops>,
        start_index: Option<usize>,
        when: ApplyAt,
    ) -> Result<(), SessionError> {
        Ok(self
            .source
            .replace_playlist(sources, loops, start_index, when)
            .await?)
    }

    /// A snapshot of the session.
    pub fn status(&self) -> SessionStatus {
        let s = self.source.status();
        SessionStatus {
            current_source: s.current_source,
            source_state: s.source_state,
            switches: s.switches,
            bitrate_kbps: s.bitrate_kbps,
            fps: s.fps,
            position_ms: s.position_ms,
            source_progress: s.source_progress,
            destinations: lock(&self.pushers).values().map(Pusher::status).collect(),
            sources: s.sources,
            loop_number: s.loop_number,
        }
    }

    /// Stops gracefully: pushers send `deleteStream`, the ingest gets SIGINT (then SIGKILL),
    /// and `Finished` is emitted.
    pub async fn stop(mut self) {
        let pushers: Vec<Pusher> = std::mem::take(&mut *lock(&self.pushers))
            .into_values()
            .collect();
        futures::future::join_all(pushers.into_iter().map(Pusher::stop)).await;
        self.source.shutdown().await;
    }
}

impl Drop for RelaySession {
    fn drop(&mut self) {
        // Dropped pushers cancel themselves; the supervisor ends when its orders close.
        lock(&self.pushers).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

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
            Err(SessionError::InvalidDestination { .. })
        ));
    }

    #[test]
    fn loops_from_the_seed() {
        assert_eq!(Loops::from_seed(-1), Some(Loops::Infinite));
        assert_eq!(Loops::from_seed(100), Some(Loops::Count(100)));
        for bad in [0, 101, -2] {
            assert_eq!(Loops::from_seed(bad), None);
        }
    }

    #[tokio::test]
    async fn replace_sources_validates() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut spec =
            SessionSpec::new(vec![IngestSpec::live("rtmp://127.0.0.1:9/live/a")], vec![]);
        spec.source.startup_timeout = Duration::from_secs(30);
        let session = RelaySession::start(spec, tx).expect("start");
        assert!(matches!(
            session.replace_sources(vec![], ApplyAt::Now).await,
            Err(SessionError::NoSources)
        ));
        assert!(matches!(
            session
                .replace_sources(vec![IngestSpec::vod("concat:a|b")], ApplyAt::Now)
                .await,
            Err(SessionError::InvalidSource { index: 0, .. })
        ));
        session.stop().await;
    }

    use crate::test_util::closed_port;

    /// Every source down: each failure is reported, the session cycles through the sources
    /// with a pause, and a stop during the pause ends it promptly.
    #[tokio::test]
    async fn all_sources_down_cycles_and_stops() {
        crate::require_peers!(Ffmpeg);
        let src = |p: u16| IngestSpec::live(format!("rtmp://127.0.0.1:{p}/live/x"));
        let mut spec = SessionSpec::new(vec![src(closed_port()), src(closed_port())], vec![]);
        spec.source.retry_delay = Duration::from_secs(30);
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
