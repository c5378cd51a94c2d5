//! The domain: relay tasks, templates, events; the rules of the seeds; the task state machine.
pub mod lease;
pub mod targets;
pub mod outbox;
