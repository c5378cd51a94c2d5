//! Stream event callbacks (seed 002, SCHEMAS.md §2 and §4): the events ingest servers and cloud
//! services send us, the one internal [`StreamEvent`] they all become, the live stream registry,
//! the callback templates and rules that say where each event is delivered, and the signatures
//! on both directions.
//!
//! Inbound, three senders speak three dialects: Tencent CSS (signed JSON, [`css`]), nginx-rtmp
//! (form-encoded `on_*` hooks) and SRS (JSON HTTP hooks) ([`hooks`]). Each parser yields a
//! [`ParsedEvent`]; everything after that (idempotency, the registry, the outbox) is written once.

pub mod css;
pub mod event;
pub mod hooks;
pub mod publish_auth;
pub mod registry;
pub mod sign;
pub mod template;

pub use event::{EventSource, ParsedEvent, RetryClass, StreamEvent, StreamEventKind, StreamPath};

/// Why an inbound callback is refused. `Display` is the message the sender gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// The body is not the JSON object, or the form, the endpoint takes.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The body is larger than [`MAX_INBOUND_BODY_BYTES`].
    #[error("body larger than {} bytes", MAX_INBOUND_BODY_BYTES)]
    TooLarge,
    /// `event_type` (CSS) or `call`/`action` (hooks) is not one we know.
    #[error("unknown event: {0}")]
    UnknownEvent(String),
    /// A field is missing or has the wrong type or form; names it.
    #[error("field {field} is missing or invalid: {reason}")]
    Field { field: &'static str, reason: String },
    /// `sign` does not match `md5(CallbackKey + t)`.
    #[error("sign does not match")]
    BadSign,
    /// `t` is in the past (it is the signature's expiry time).
    #[error("t has expired")]
    Expired,
    /// No callback rule of any account binds the event's push domain (and app).
    #[error("no callback rule for push domain {0}")]
    UnknownDomain(String),
    /// The template bound to the domain has no `CallbackKey`, so the event cannot be checked.
    #[error("the callback template of push domain {0} has no CallbackKey; signed events cannot be checked")]
    NoCallbackKey(String),
    /// The hook token is missing, unknown or was rotated.
    #[error("hook token is missing or not valid")]
    BadToken,
    /// Publish authorization refused the stream.
    #[error("publish refused: {0}")]
    PublishRefused(String),
}

impl InboundError {
    /// The HTTP status the sender gets: 403 for authentication and authorization, 404 for an
    /// unknown domain, 413 for an oversize body (as the hosts' own body limit answers, so a
    /// body is refused alike whichever limit it passes), 400 for the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadSign
            | Self::Expired
            | Self::BadToken
            | Self::PublishRefused(_)
            | Self::NoCallbackKey(_) => 403,
            Self::UnknownDomain(_) => 404,
            Self::TooLarge => 413,
            _ => 400,
        }
    }

    /// A short stable code for the JSON answer and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge => "too_large",
            Self::UnknownEvent(_) => "unknown_event",
            Self::Field { .. } => "invalid_field",
            Self::BadSign => "bad_sign",
            Self::Expired => "expired",
            Self::UnknownDomain(_) => "unknown_domain",
            Self::NoCallbackKey(_) => "no_callback_key",
            Self::BadToken => "bad_token",
            Self::PublishRefused(_) => "publish_refused",
        }
    }
}

/// The largest inbound callback body accepted (1 MiB).
pub const MAX_INBOUND_BODY_BYTES: usize = 1024 * 1024;
