//! The relay: one source side, many RTMP destinations.
//!
//! - [`pusher`]: a Rust-native RTMP publisher per destination, on a splicer subscription;
//! - [`session`]: a relay session, a [`SourceSupervisor`](crate::splice::source::SourceSupervisor)
//!   plus its pushers;
//! - [`reconcile`]: what a running session must do for its task record (pure, no I/O);
//! - [`playout`]: a task's playlist settings mapped onto a session;
//! - [`worker`]: takes relay jobs, holds leases, drives sessions from the task record.
//!
//! Uses `splice` (and below it `ingest` and `media`).

pub mod playout;
pub mod pusher;
pub mod reconcile;
pub mod session;
pub mod worker;
