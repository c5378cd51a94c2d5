//! The relay control API (seed 001, CDNetworks "Live Ingest & Forwarding"): request parsing and
//! validation ([`wire`]), the typed values it produces ([`types`]), the stored task ([`task`]),
//! its state machine ([`state`]), callbacks and query items ([`events`]), and the query rules
//! ([`query`]).

pub mod events;
pub mod plan;
pub mod query;
pub mod state;
pub mod task;
pub mod types;
pub mod wire;

pub use types::*;

/// The most sources a task may have (seed: `params src num이 너무 많습니다`).
pub const MAX_SOURCES: usize = 800;
/// Destinations per task (the seed sets no limit; each one is a pusher and a claim written with
/// the task, so a bound keeps one task's transaction within the store's limit).
pub const MAX_FORWARDS: usize = 50;
/// The longest the `src` array may be, in characters of its JSON (seed: 204,800).
pub const MAX_SRC_JSON_CHARS: usize = 204_800;
/// The shortest `end - start` (seed: five minutes).
pub const MIN_INTERVAL_MS: i64 = 5 * 60 * 1000;
/// How long after a stop `cmd=5` may resume a task (seed: 48 hours).
pub const RESUME_WINDOW_MS: i64 = 48 * 60 * 60 * 1000;

pub use events::{CallbackCode, CallbackPayload, QueryItem, TaskEvent, TimeFormat};
pub use plan::{plan, Effects};
pub use query::{paginate, run_query, QueryFilter, QueryPage, QueryParams};
pub use state::{
    Action, ConsoleStatus, Decision, DestState, PlaybackPosition, StopCause, StopKind, TaskState,
    TransitionError,
};
pub use task::{conflicting_destination, Destination, RelayTask};
pub use wire::{
    parse_forward_request, parse_forward_request_at, Command, ForwardRequest, NewRelayTask,
    ResumeTask, StopTask, UpdateSources,
};
