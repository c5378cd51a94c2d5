//! The domain: relay tasks, templates, events; the rules of the seeds; the task state machine.
//!
//! Everything here is pure: no I/O, no clock reads (`now_ms` is always a parameter), so every
//! rule is unit-tested once here and the HTTP handlers stay thin (parse, call, map to the wire).
//! (`lease` is the one exception: the lease protocol over the `Store` port lives with its rules.)

pub mod api_error;
pub mod auth;
pub mod callbacks;
pub mod error;
pub mod lease;
pub mod outbox;
pub mod recording;
pub mod relay;
pub mod targets;

pub use error::RequestError;
