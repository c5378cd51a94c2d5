//! The one internal stream event every inbound dialect becomes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::InboundError;
use crate::ports::{Entity, IndexKeys, Kind};

/// What happened to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamEventKind {
    /// A publisher started pushing (CSS `event_type` 1, nginx-rtmp `publish`, SRS `on_publish`).
    Publish,
    /// The push stopped (CSS 0, nginx-rtmp `publish_done`, SRS `on_unpublish`).
    Unpublish,
    /// A recording file was written (CSS 100, nginx-rtmp `record_done`, SRS `on_dvr`).
    Record,
    /// A snapshot was taken (CSS 200).
    Snapshot,
    /// Porn detection flagged a frame (CSS 317): stored and forwarded, never analysed.
    Porn,
    /// The push had anomalies in an interval (CSS 321).
    PushException,
    /// A recording changed status (CSS 332).
    RecordStatus,
    /// A player started (nginx-rtmp `play`).
    Play,
    /// A player left (nginx-rtmp `play_done` / `done`).
    PlayDone,
    /// A periodic update of a running publish or play (nginx-rtmp `update_*`).
    Update,
    /// An HLS segment was written (SRS `on_hls`).
    HlsSegment,
}

impl StreamEventKind {
    /// The CSS `event_type` of this kind, for the kinds CSS has.
    pub fn css_event_type(self) -> Option<i64> {
        Some(match self {
            Self::Publish => 1,
            Self::Unpublish => 0,
            Self::Record => 100,
            Self::Snapshot => 200,
            Self::Porn => 317,
            Self::PushException => 321,
            Self::RecordStatus => 332,
            Self::Play | Self::PlayDone | Self::Update | Self::HlsSegment => return None,
        })
    }

    /// The kind of a CSS `event_type`.
    pub fn from_css_event_type(event_type: i64) -> Option<Self> {
        Some(match event_type {
            1 => Self::Publish,
            0 => Self::Unpublish,
            100 => Self::Record,
            200 => Self::Snapshot,
            317 => Self::Porn,
            321 => Self::PushException,
            332 => Self::RecordStatus,
            _ => return None,
        })
    }

    /// The retry schedule seed 002 gives this kind's callbacks.
    pub fn retry_class(self) -> RetryClass {
        match self {
            Self::Publish | Self::Unpublish | Self::Record | Self::Porn => {
                RetryClass::StreamLifecycle
            }
            _ => RetryClass::Other,
        }
    }

    /// The name used in logs, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Unpublish => "unpublish",
            Self::Record => "record",
            Self::Snapshot => "snapshot",
            Self::Porn => "porn",
            Self::PushException => "push_exception",
            Self::RecordStatus => "record_status",
            Self::Play => "play",
            Self::PlayDone => "play_done",
            Self::Update => "update",
            Self::HlsSegment => "hls_segment",
        }
    }
}

/// Seed 002's two retry schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Push, stop, record and porn events: every minute, 12 times.
    StreamLifecycle,
    /// Every other notice (snapshots, exceptions, relay tasks): every 2 minutes, 5 times.
    Other,
}

/// Who sent the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSource {
    /// Tencent CSS (or anything speaking its signed callback format).
    Css,
    /// nginx-rtmp's `on_*` hooks.
    NginxRtmp,
    /// SRS HTTP hooks.
    Srs,
    /// relaycast itself (recordings, snapshots of a later issue).
    Relaycast,
}

impl EventSource {
    /// The name used in logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Css => "css",
            Self::NginxRtmp => "nginx-rtmp",
            Self::Srs => "srs",
            Self::Relaycast => "relaycast",
        }
    }
}

/// Longest push domain, app and stream name accepted.
const MAX_DOMAIN: usize = 253;
const MAX_NAME: usize = 256;

/// A stream's address: push domain, app (the push path) and stream name, checked so that they
/// can be parts of store keys and URL paths (no `/`, `:`, spaces or control characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPath {
    /// The push domain (lower-case host name).
    pub domain: String,
    /// The app (AppName, the push path).
    pub app: String,
    /// The stream name (StreamName, `stream_id`).
    pub stream: String,
}

impl StreamPath {
    /// Checks and normalizes the three parts.
    pub fn parse(domain: &str, app: &str, stream: &str) -> Result<Self, InboundError> {
        Ok(Self {
            domain: parse_domain(domain)?,
            app: parse_name("app", app)?,
            stream: parse_name("stream", stream)?,
        })
    }

    /// `domain/app/stream`, the form used in store keys and URLs.
    pub fn joined(&self) -> String {
        format!("{}/{}/{}", self.domain, self.app, self.stream)
    }
}

/// Checks a push domain: a host name of letters, digits, `-`, `_` and `.`, lower-cased.
pub fn parse_domain(domain: &str) -> Result<String, InboundError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= MAX_DOMAIN
        && d.split('.').all(|l| !l.is_empty() && l.len() <= 63)
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(d)
    } else {
        Err(InboundError::Field {
            field: "domain",
            reason: format!("{domain:?} is not a host name"),
        })
    }
}

/// Checks an app or stream name: 1–256 of letters, digits and `_-.~!$&'()*+,;=@`.
pub fn parse_name(field: &'static str, name: &str) -> Result<String, InboundError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.~!$&'()*+,;=@".contains(&b))
        && name != "."
        && name != "..";
    if ok {
        Ok(name.to_string())
    } else {
        Err(InboundError::Field {
            field,
            reason: format!(
                "{name:?} is not a valid name (1-{MAX_NAME} of letters, digits and _-.~)"
            ),
        })
    }
}

/// An inbound event as a parser read it, before it is tied to an account.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    /// What happened.
    pub kind: StreamEventKind,
    /// Who said so.
    pub source: EventSource,
    /// The stream.
    pub stream: StreamPath,
    /// The sender's id of the publishing or playing connection (nginx-rtmp `clientid`, SRS
    /// `client_id`).
    pub client_id: Option<String>,
    /// The publisher's or player's IP.
    pub client_ip: Option<String>,
    /// The ingest node's IP (CSS `node`).
    pub node: Option<String>,
    /// The query string of the push URL.
    pub params: String,
    /// When it happened (Unix ms), when the sender says.
    pub event_time_ms: Option<i64>,
    /// The sender's push session id (CSS `sequence`); hooks have none.
    pub sequence: Option<String>,
    /// CSS `errcode` (stop reason) when given.
    pub errcode: Option<i64>,
    /// CSS `errmsg` when given.
    pub errmsg: Option<String>,
    /// The sender's fields as received (CSS body without `sign`/`t`; the hook's fields), kept
    /// so that what we forward carries everything the sender said.
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// What makes this event the same event when it is sent again (without the account, which
    /// the caller adds).
    pub identity: Vec<String>,
}

/// A stored stream event: a [`ParsedEvent`] tied to its account, with its stable id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// Stable id (32 hex digits of SHA-256 over the account and the event's identity): the same
    /// event sent again has the same id, which is how it is stored once.
    pub id: String,
    /// The account it belongs to.
    pub account: String,
    /// What happened.
    pub kind: StreamEventKind,
    /// Who said so.
    pub source: EventSource,
    /// The stream.
    pub stream: StreamPath,
    /// The push session it belongs to (CSS `sequence`, or ours for hooks).
    pub sequence: Option<String>,
    /// The connection id the sender gave.
    pub client_id: Option<String>,
    /// Publisher or player IP.
    pub client_ip: Option<String>,
    /// Ingest node IP.
    pub node: Option<String>,
    /// Push URL query string.
    pub params: String,
    /// When it happened, Unix ms (the sender's time, else when we received it).
    pub event_time_ms: i64,
    /// When we stored it, Unix ms.
    pub received_ms: i64,
    /// Stop reason code, when given.
    pub errcode: Option<i64>,
    /// Stop reason message, when given.
    pub errmsg: Option<String>,
    /// Push duration, for a stop that ends a session we saw start.
    pub duration_ms: Option<i64>,
    /// The sender's own fields.
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// The outbox entries it was handed to (for the delivery log).
    #[serde(default)]
    pub deliveries: Vec<String>,
}

/// How long stored events are kept (the delivery log and the de-duplication of senders that
/// retry; CSS retries for at most 24 minutes).
pub const EVENT_RETENTION_MS: i64 = 7 * 24 * 3_600_000;

impl StreamEvent {
    /// The stable id of `parsed` for `account`.
    pub fn id_of(account: &str, parsed: &ParsedEvent) -> String {
        let mut h = Sha256::new();
        for part in std::iter::once(account)
            .chain(std::iter::once(parsed.source.as_str()))
            .chain(parsed.identity.iter().map(String::as_str))
        {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The event `parsed` is for `account`, received at `now_ms`.
    pub fn new(account: &str, parsed: ParsedEvent, now_ms: i64) -> Self {
        Self {
            id: Self::id_of(account, &parsed),
            account: account.to_string(),
            kind: parsed.kind,
            source: parsed.source,
            stream: parsed.stream,
            sequence: parsed.sequence,
            client_id: parsed.client_id,
            client_ip: parsed.client_ip,
            node: parsed.node,
            params: parsed.params,
            event_time_ms: parsed.event_time_ms.unwrap_or(now_ms),
            received_ms: now_ms,
            errcode: parsed.errcode,
            errmsg: parsed.errmsg,
            duration_ms: None,
            payload: parsed.payload,
            deliveries: Vec::new(),
        }
    }
}

impl Entity for StreamEvent {
    const KIND: Kind = Kind("stream_event");

    fn key(&self) -> String {
        self.id.clone()
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: None,
            time_ms: Some(self.received_ms),
        }
    }

    fn expires_at_ms(&self) -> Option<i64> {
        Some(self.received_ms + EVENT_RETENTION_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_break_keys_or_paths_are_refused() {
        assert!(StreamPath::parse("Live.Example.com.", "live", "s-1_a.b~c").is_ok());
        assert_eq!(
            StreamPath::parse("Live.Example.com", "live", "x")
                .unwrap()
                .domain,
            "live.example.com"
        );
        for (d, a, s) in [
            ("a b", "live", "x"),
            ("ok.com", "li/ve", "x"),
            ("ok.com", "live", "a:b"),
            ("ok.com", "live", ""),
            ("ok.com", "..", "x"),
            ("", "live", "x"),
            ("ok.com", "live", "a\nb"),
        ] {
            assert!(StreamPath::parse(d, a, s).is_err(), "{d:?} {a:?} {s:?}");
        }
    }

    #[test]
    fn event_id_depends_on_account_source_and_identity_only() {
        let parsed = ParsedEvent {
            kind: StreamEventKind::Publish,
            source: EventSource::Css,
            stream: StreamPath::parse("d.com", "live", "s").unwrap(),
            client_id: None,
            client_ip: None,
            node: None,
            params: String::new(),
            event_time_ms: None,
            sequence: Some("1".into()),
            errcode: None,
            errmsg: None,
            payload: Default::default(),
            identity: vec!["1".into(), "abc".into()],
        };
        let a = StreamEvent::id_of("acme", &parsed);
        assert_eq!(a.len(), 32);
        assert_eq!(a, StreamEvent::id_of("acme", &parsed));
        assert_ne!(a, StreamEvent::id_of("other", &parsed));
        let mut moved = parsed.clone();
        moved.identity = vec!["1a".into(), "bc".into()];
        assert_ne!(
            a,
            StreamEvent::id_of("acme", &moved),
            "parts are length-prefixed"
        );
    }
}
