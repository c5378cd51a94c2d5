//! The domain: relay tasks, templates, events; the rules of the seeds; the task state machine.
//!
//! Everything here is pure: no I/O, no clock reads (`now_ms` is always a parameter), so every
//! rule is unit-tested once here and the HTTP handlers stay thin (parse, call, map to the wire).

pub mod auth;
pub mod error;
pub mod relay;

pub use error::RequestError;
