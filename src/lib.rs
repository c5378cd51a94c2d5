//! The relaycast host: one process that runs the function handlers behind an HTTP server, the
//! background loops and the in-process workers, on the embedded adapters (`relaycast up`).

pub mod host;
pub mod http;
pub mod telemetry;

pub use host::{Host, HostError, RunningHost};
