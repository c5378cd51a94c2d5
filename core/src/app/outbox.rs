//! Moving stored outbox entries into the callbacks queue.

use std::time::Duration;

use crate::domain::outbox::{DeliveryState, OutboxEntry, CALLBACK_QUEUE};
use crate::ports::{
    Condition, Entity, Ports, Query, QueryIndex, StoreError, TypedStore, Versioned,
};

/// Why the outbox could not be moved along.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] crate::ports::QueueError),
}

/// Queues a delivery for a pending entry and marks it queued. Producers call this right after
/// the transaction that stored the entry (for low latency); [`queue_pending`] sweeps whatever a
/// crash left pending.
pub async fn queue_entry(ports: &Ports, entry: Versioned<OutboxEntry>) -> Result<(), OutboxError> {
    if entry.value.state != DeliveryState::Pending {
        return Ok(());
    }
    ports
        .queue
        .send(CALLBACK_QUEUE, &entry.value.id, Duration::ZERO)
        .await?;
    let mut queued = entry.value;
    queued.state = DeliveryState::Queued;
    match ports
        .store
        .save(&queued, Condition::Version(entry.version))
        .await
    {
        // Somebody else queued it meanwhile: the duplicate message is dropped on delivery.
        Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How long the producer has to queue an entry itself before the sweep does it: sweeping
/// younger entries would race the producer and send every notice twice.
pub const SWEEP_GRACE_MS: i64 = 5_000;

/// Queues every entry left pending for longer than [`SWEEP_GRACE_MS`] (a producer crashed
/// between storing and queueing it), oldest first; returns how many.
pub async fn queue_pending(ports: &Ports, limit: usize) -> Result<usize, OutboxError> {
    let mut query = Query::new(
        OutboxEntry::KIND,
        QueryIndex::Status(DeliveryState::Pending.as_str().into()),
    );
    query.time_to_ms = Some(ports.clock.now_ms() - SWEEP_GRACE_MS + 1);
    query.limit = limit.clamp(1, 1000);
    let (entries, _) = ports.store.query_typed::<OutboxEntry>(query).await?;
    let count = entries.len();
    for entry in entries {
        queue_entry(ports, entry).await?;
    }
    Ok(count)
}
