//! The live stream registry: which streams are being pushed now, and each stream's push
//! sessions. Kept by the push and stop events of every sender; the rules of what a push or a
//! stop does to a stream (and when it is a repeat of one already seen) live here, pure.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::{EventSource, ParsedEvent, StreamEventKind, StreamPath};
use crate::ports::{Entity, IndexKeys, Kind};

/// The session a stream is live with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    /// The push session id (CSS `sequence`, or ours for hooks).
    pub sequence: String,
    /// Who reported it.
    pub source: EventSource,
    /// The sender's connection id.
    pub client_id: Option<String>,
    /// The publisher's IP.
    pub client_ip: Option<String>,
    /// The ingest node's IP.
    pub node: Option<String>,
    /// The push URL's query string.
    pub params: String,
    /// When the push started, Unix ms.
    pub start_ms: i64,
}

/// One stream of an account: live or not, and the counters its events need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStream {
    /// The owning account.
    pub account: String,
    /// The stream.
    pub stream: StreamPath,
    /// The session it is live with, if any.
    pub live: Option<LiveSession>,
    /// The last outbox sequence number used for this stream's callbacks (keeps them in order).
    pub outbox_seq: u64,
    /// Sessions seen.
    pub sessions: u64,
    /// When the last event of the stream was stored, Unix ms.
    pub last_event_ms: i64,
    /// The last CSS sessions whose stop arrived before their push (a sender's retries can
    /// reorder them): such a late push must not leave the stream live for ever.
    #[serde(default)]
    pub stopped_early: Vec<String>,
}

/// How many early stops a stream remembers.
const MAX_STOPPED_EARLY: usize = 8;

/// A push session of a stream, kept after it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSession {
    /// The owning account.
    pub account: String,
    /// The stream.
    pub stream: StreamPath,
    /// The session's id.
    pub sequence: String,
    /// Who reported it.
    pub source: EventSource,
    /// The publisher's IP.
    pub client_ip: Option<String>,
    /// The push URL's query string.
    pub params: String,
    /// Unix ms.
    pub start_ms: i64,
    /// Unix ms, once stopped.
    pub stop_ms: Option<i64>,
    /// `stop_ms - start_ms`.
    pub duration_ms: Option<i64>,
    /// Why it stopped.
    pub stop_reason: Option<String>,
    /// SCHEMAS.md §2.3's `errcode`, when the sender gave one.
    pub errcode: Option<i64>,
}

/// How long ended sessions are kept.
pub const SESSION_RETENTION_MS: i64 = 30 * 24 * 3_600_000;

impl StreamSession {
    /// The key of the sessions index of a stream (its sessions share it as their status).
    pub fn index_of(account: &str, stream: &StreamPath) -> String {
        format!("{account}/{}", stream.joined())
    }

    fn opened(account: &str, stream: &StreamPath, live: &LiveSession) -> Self {
        Self {
            account: account.to_string(),
            stream: stream.clone(),
            sequence: live.sequence.clone(),
            source: live.source,
            client_ip: live.client_ip.clone(),
            params: live.params.clone(),
            start_ms: live.start_ms,
            stop_ms: None,
            duration_ms: None,
            stop_reason: None,
            errcode: None,
        }
    }

    fn closed(mut self, stop_ms: i64, reason: String, errcode: Option<i64>) -> Self {
        self.stop_ms = Some(stop_ms);
        self.duration_ms = Some((stop_ms - self.start_ms).max(0));
        self.stop_reason = Some(reason);
        self.errcode = errcode;
        self
    }
}

impl Entity for StreamSession {
    const KIND: Kind = Kind("stream_session");

    fn key(&self) -> String {
        format!(
            "{}/{}",
            Self::index_of(&self.account, &self.stream),
            self.sequence
        )
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: Some(Self::index_of(&self.account, &self.stream)),
            time_ms: Some(self.start_ms),
        }
    }

    fn expires_at_ms(&self) -> Option<i64> {
        self.stop_ms.map(|t| t + SESSION_RETENTION_MS)
    }
}

/// What an event does to its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A repeat of something already applied, or a stop of a session we do not know from a
    /// sender that would have told us of its start: acknowledge, store nothing.
    Repeat,
    /// Apply: store the event, and these session records.
    Apply {
        /// Sessions written by this event (opened, closed, or both when a push replaces one).
        sessions: Vec<StreamSession>,
        /// The push duration for a stop that closed a session.
        duration_ms: Option<i64>,
    },
}

/// Why a stop happened, from SCHEMAS.md §2.3's `errcode` table.
pub fn stop_reason(errcode: Option<i64>, errmsg: Option<&str>, source: EventSource) -> String {
    if let Some(msg) = errmsg.filter(|m| !m.is_empty() && *m != "ok") {
        return msg.to_string();
    }
    match (source, errcode) {
        (_, Some(1..=4)) => "client closed the stream".into(),
        (_, Some(5 | 9 | 11 | 24)) => "internal error".into(),
        (_, Some(6 | 23)) => "RTMP protocol error".into(),
        (_, Some(7)) => "frame larger than the configured maximum".into(),
        (_, Some(8 | 20)) => "no data for a long time".into(),
        (_, Some(10)) => "proxy received a stop command".into(),
        (_, Some(12..=17)) => "network error".into(),
        (_, Some(18)) => "refused by the ingest (account, domain, auth or limits)".into(),
        (_, Some(19)) => "third-party authentication failed".into(),
        (_, Some(21)) => "stopped by the API or replaced by a new push".into(),
        (EventSource::NginxRtmp | EventSource::Srs, _) => "publisher stopped".into(),
        _ => "unknown".into(),
    }
}

/// errcode 21 / 102: replaced by a new push (SCHEMAS.md §2.3).
const REPLACED_ERRCODE: i64 = 21;

impl LiveStream {
    /// The store key of a stream.
    pub fn store_key(account: &str, stream: &StreamPath) -> String {
        format!("{account}/{}", stream.joined())
    }

    /// A stream not seen before.
    pub fn new(account: &str, stream: StreamPath) -> Self {
        Self {
            account: account.to_string(),
            stream,
            live: None,
            outbox_seq: 0,
            sessions: 0,
            last_event_ms: 0,
            stopped_early: Vec::new(),
        }
    }

    /// The status index value of a live stream of `account`.
    pub fn live_index(account: &str) -> String {
        format!("live:{account}")
    }

    fn same_session(live: &LiveSession, event: &ParsedEvent) -> bool {
        match (&event.sequence, event.source) {
            (Some(seq), EventSource::Css) => *seq == live.sequence,
            (None, EventSource::Css) => live.source == EventSource::Css,
            _ => live.source == event.source && live.client_id == event.client_id,
        }
    }

    /// Applies `event` (received at `now_ms`) to the stream. For hook events, which have no
    /// session id, this is where a push gets one and a stop learns it; the event's identity is
    /// then the session, so a hook sent twice is a repeat.
    pub fn admit(&mut self, event: &mut ParsedEvent, now_ms: i64) -> Admission {
        let at = event.event_time_ms.unwrap_or(now_ms);
        let hook = event.source != EventSource::Css;
        let admission =
            match event.kind {
                StreamEventKind::Publish => {
                    if self
                        .live
                        .as_ref()
                        .is_some_and(|l| Self::same_session(l, event))
                    {
                        return Admission::Repeat;
                    }
                    if event
                        .sequence
                        .as_ref()
                        .is_some_and(|s| self.stopped_early.contains(s))
                    {
                        // Its stop came first: pass the event on, but the stream is not live.
                        self.last_event_ms = now_ms;
                        return Admission::Apply {
                            sessions: Vec::new(),
                            duration_ms: None,
                        };
                    }
                    let mut sessions = Vec::new();
                    if let Some(old) = self.live.take() {
                        sessions.push(
                            StreamSession::opened(&self.account, &self.stream, &old).closed(
                                at,
                                "replaced by a new push".into(),
                                Some(REPLACED_ERRCODE),
                            ),
                        );
                    }
                    let sequence = event
                        .sequence
                        .clone()
                        .unwrap_or_else(|| hook_sequence(event, now_ms));
                    let live = LiveSession {
                        sequence: sequence.clone(),
                        source: event.source,
                        client_id: event.client_id.clone(),
                        client_ip: event.client_ip.clone(),
                        node: event.node.clone(),
                        params: event.params.clone(),
                        start_ms: at,
                    };
                    sessions.push(StreamSession::opened(&self.account, &self.stream, &live));
                    self.live = Some(live);
                    self.sessions += 1;
                    if hook {
                        event.sequence = Some(sequence.clone());
                        event.identity = vec!["publish".into(), self.stream.joined(), sequence];
                    }
                    Admission::Apply {
                        sessions,
                        duration_ms: None,
                    }
                }
                StreamEventKind::Unpublish => match self.live.take() {
                    Some(live) if Self::same_session(&live, event) => {
                        let reason =
                            stop_reason(event.errcode, event.errmsg.as_deref(), event.source);
                        let closed = StreamSession::opened(&self.account, &self.stream, &live)
                            .closed(at, reason, event.errcode);
                        let duration = closed.duration_ms;
                        event.sequence = Some(live.sequence.clone());
                        if hook {
                            event.identity =
                                vec!["unpublish".into(), self.stream.joined(), live.sequence];
                        }
                        Admission::Apply {
                            sessions: vec![closed],
                            duration_ms: duration,
                        }
                    }
                    other => {
                        self.live = other;
                        // A CSS stop of a session we never saw start is still an event to pass on
                        // (the event id keeps it once); a hook's is a repeat of a stop applied.
                        if hook {
                            return Admission::Repeat;
                        }
                        if let Some(seq) = event
                            .sequence
                            .clone()
                            .filter(|s| !self.stopped_early.contains(s))
                        {
                            self.stopped_early.push(seq);
                            if self.stopped_early.len() > MAX_STOPPED_EARLY {
                                self.stopped_early.remove(0);
                            }
                        }
                        Admission::Apply {
                            sessions: Vec::new(),
                            duration_ms: None,
                        }
                    }
                },
                StreamEventKind::Update => {
                    if !self
                        .live
                        .as_ref()
                        .is_some_and(|l| Self::same_session(l, event))
                    {
                        return Admission::Repeat;
                    }
                    Admission::Apply {
                        sessions: Vec::new(),
                        duration_ms: None,
                    }
                }
                _ => Admission::Apply {
                    sessions: Vec::new(),
                    duration_ms: None,
                },
            };
        self.last_event_ms = now_ms;
        admission
    }

    /// The next outbox sequence number of the stream's callbacks.
    pub fn next_outbox_seq(&mut self) -> u64 {
        self.outbox_seq += 1;
        self.outbox_seq
    }

    /// The stream as `GET /v1/streams` shows it.
    pub fn to_wire(&self) -> serde_json::Value {
        let live = self.live.as_ref();
        serde_json::json!({
            "DomainName": self.stream.domain,
            "AppName": self.stream.app,
            "StreamName": self.stream.stream,
            "Live": live.is_some(),
            "Sequence": live.map(|l| l.sequence.clone()),
            "StartTimeMs": live.map(|l| l.start_ms),
            "ClientIp": live.and_then(|l| l.client_ip.clone()),
            "Node": live.and_then(|l| l.node.clone()),
            "StreamParam": live.map(|l| l.params.clone()),
            "Source": live.map(|l| l.source.as_str()),
            "Sessions": self.sessions,
        })
    }
}

/// A session id for a push reported by a hook: unique per push (the connection id and the
/// time it was admitted), 19 decimal digits like CSS's `sequence`.
fn hook_sequence(event: &ParsedEvent, now_ms: i64) -> String {
    let mut h = Sha256::new();
    h.update(event.source.as_str());
    h.update(event.client_id.as_deref().unwrap_or_default());
    h.update(now_ms.to_be_bytes());
    h.update(rand::random::<u64>().to_be_bytes());
    let bytes: [u8; 8] = h.finalize()[..8].try_into().expect("8 bytes");
    (u64::from_be_bytes(bytes) % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000).to_string()
}

impl StreamSession {
    /// The session as the API shows it.
    pub fn to_wire(&self) -> serde_json::Value {
        serde_json::json!({
            "Sequence": self.sequence,
            "Source": self.source.as_str(),
            "ClientIp": self.client_ip,
            "StreamParam": self.params,
            "StartTimeMs": self.start_ms,
            "StopTimeMs": self.stop_ms,
            "DurationMs": self.duration_ms,
            "StopReason": self.stop_reason,
            "Errcode": self.errcode,
        })
    }
}

impl Entity for LiveStream {
    const KIND: Kind = Kind("live_stream");

    fn key(&self) -> String {
        Self::store_key(&self.account, &self.stream)
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: self.live.as_ref().map(|_| Self::live_index(&self.account)),
            time_ms: Some(
                self.live
                    .as_ref()
                    .map_or(self.last_event_ms, |l| l.start_ms),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(kind: StreamEventKind, client: &str) -> ParsedEvent {
        ParsedEvent {
            kind,
            source: EventSource::NginxRtmp,
            stream: StreamPath::parse("d.com", "live", "s").unwrap(),
            client_id: Some(client.into()),
            client_ip: Some("10.0.0.1".into()),
            node: None,
            params: String::new(),
            event_time_ms: None,
            sequence: None,
            errcode: None,
            errmsg: None,
            payload: Default::default(),
            identity: vec![],
        }
    }

    fn css(kind: StreamEventKind, seq: &str) -> ParsedEvent {
        ParsedEvent {
            source: EventSource::Css,
            client_id: None,
            sequence: Some(seq.into()),
            ..hook(kind, "")
        }
    }

    #[test]
    fn a_hook_push_opens_a_session_once_and_its_stop_closes_it() {
        let mut s = LiveStream::new("a", StreamPath::parse("d.com", "live", "s").unwrap());
        let mut p = hook(StreamEventKind::Publish, "7");
        assert!(
            matches!(s.admit(&mut p, 1_000), Admission::Apply { ref sessions, .. } if sessions.len() == 1)
        );
        let seq = p.sequence.clone().unwrap();
        assert_eq!(seq.len(), 19);
        assert_eq!(
            s.admit(&mut hook(StreamEventKind::Publish, "7"), 1_500),
            Admission::Repeat,
            "same connection again"
        );
        let mut stop = hook(StreamEventKind::Unpublish, "7");
        match s.admit(&mut stop, 61_000) {
            Admission::Apply {
                sessions,
                duration_ms,
            } => {
                assert_eq!(duration_ms, Some(60_000));
                assert_eq!(
                    sessions[0].stop_reason.as_deref(),
                    Some("publisher stopped")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(stop.sequence.as_deref(), Some(seq.as_str()));
        assert!(s.live.is_none());
        assert_eq!(
            s.admit(&mut hook(StreamEventKind::Unpublish, "7"), 62_000),
            Admission::Repeat
        );
        // A later push on a reused connection id is a new session.
        assert!(matches!(
            s.admit(&mut hook(StreamEventKind::Publish, "7"), 70_000),
            Admission::Apply { .. }
        ));
        assert_eq!(s.sessions, 2);
    }

    #[test]
    fn a_new_push_replaces_the_live_one_and_css_stops_match_by_sequence() {
        let mut s = LiveStream::new("a", StreamPath::parse("d.com", "live", "s").unwrap());
        s.admit(&mut css(StreamEventKind::Publish, "1"), 0);
        assert_eq!(
            s.admit(&mut css(StreamEventKind::Publish, "1"), 5),
            Admission::Repeat
        );
        match s.admit(&mut css(StreamEventKind::Publish, "2"), 10) {
            Admission::Apply { sessions, .. } => {
                assert_eq!(sessions.len(), 2);
                assert_eq!(sessions[0].errcode, Some(21));
            }
            other => panic!("{other:?}"),
        }
        // The stop of the replaced session does not end the live one.
        assert!(
            matches!(s.admit(&mut css(StreamEventKind::Unpublish, "1"), 20), Admission::Apply { ref sessions, .. } if sessions.is_empty())
        );
        assert_eq!(s.live.as_ref().unwrap().sequence, "2");
        // A stop that overtook its push: the late push does not make the stream live.
        s.admit(&mut css(StreamEventKind::Unpublish, "3"), 21);
        assert!(
            matches!(s.admit(&mut css(StreamEventKind::Publish, "3"), 22), Admission::Apply { ref sessions, .. } if sessions.is_empty())
        );
        assert_eq!(s.live.as_ref().unwrap().sequence, "2");
        let mut stop = css(StreamEventKind::Unpublish, "2");
        stop.errcode = Some(8);
        match s.admit(&mut stop, 30) {
            Admission::Apply { sessions, .. } => assert_eq!(
                sessions[0].stop_reason.as_deref(),
                Some("no data for a long time")
            ),
            other => panic!("{other:?}"),
        }
    }
}
