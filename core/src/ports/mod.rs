//! Ports: the capabilities relaycast needs from its environment, as traits.
//!
//! Every port has a contract test suite (`ports::contract`, feature `contract-tests`) written once
//! and run against every adapter (`core/src/ports/contract.rs`), so an adapter is only "done" when it
//! passes the same suite as the others.

pub mod clock;
#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
pub mod object_store;
pub mod queue;
pub mod store;

use std::sync::Arc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use object_store::{
    validate_object_key, ObjectMeta, ObjectReader, ObjectStore, ObjectStoreError,
};
pub use queue::{dead_letter_queue, Queue, QueueError, QueueStats, ReceivedMessage};
pub use store::{
    check_record, record_bytes, Condition, Entity, IndexKeys, Kind, Page, Query, QueryIndex,
    Record, RecordBody, Store, StoreError, TypedStore, Versioned, Write, MAX_RECORD_BYTES,
};

/// The set of adapters a process runs with, chosen once by the host and shared by every
/// handler and worker.
#[derive(Clone)]
pub struct Ports {
    /// Durable typed records: tasks, templates, events, media, idempotency keys, leases.
    pub store: Arc<dyn Store>,
    /// Named at-least-once queues: jobs and the callback outbox.
    pub queue: Arc<dyn Queue>,
    /// Recordings and snapshots.
    pub objects: Arc<dyn ObjectStore>,
    /// Time, injectable so tests can move it.
    pub clock: Arc<dyn Clock>,
}
