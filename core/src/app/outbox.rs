//! Moving stored outbox entries into the callbacks queue.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::outbox::{DeliveryState, OutboxEntry, CALLBACK_QUEUE};
use crate::ports::{
    Condition, Entity, Ports, Query, QueryIndex, StoreError, TypedStore, Versioned, Write,
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

/// Most entries queued in one batch: a store transaction's limit (DynamoDB's).
pub const QUEUE_BATCH: usize = 100;

/// Queues a delivery for a pending entry and marks it queued. Producers call this (or hand the
/// entry to an [`OutboxHandoff`]) right after the transaction that stored the entry, for low
/// latency; [`queue_pending`] sweeps whatever a crash left pending.
pub async fn queue_entry(ports: &Ports, entry: Versioned<OutboxEntry>) -> Result<(), OutboxError> {
    queue_entries(ports, vec![entry]).await
}

/// Queues a delivery for every pending one of `entries` and marks them queued, with one
/// `send_batch` and one transaction per [`QUEUE_BATCH`], so that a burst of producers costs two
/// writes instead of two each. Sent before marked: a crash between the two leaves them pending,
/// and the sweep sends them again (a duplicate message is dropped on delivery).
pub async fn queue_entries(
    ports: &Ports,
    mut entries: Vec<Versioned<OutboxEntry>>,
) -> Result<(), OutboxError> {
    entries.retain(|e| e.value.state == DeliveryState::Pending);
    for chunk in entries.chunks(QUEUE_BATCH) {
        let ids: Vec<String> = chunk.iter().map(|e| e.value.id.clone()).collect();
        ports
            .queue
            .send_batch(CALLBACK_QUEUE, &ids, Duration::ZERO)
            .await?;
        let queued: Vec<(OutboxEntry, u64)> = chunk
            .iter()
            .map(|e| {
                let mut queued = e.value.clone();
                queued.state = DeliveryState::Queued;
                (queued, e.version)
            })
            .collect();
        let marks = queued
            .iter()
            .map(|(q, v)| Ok(Write::Put(q.to_record()?, Condition::Version(*v))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        match ports.store.transact(marks).await {
            Ok(_) => {}
            // One of them moved on meanwhile (its message was delivered already), or the
            // batch is over a backend's transaction size: mark them one by one.
            Err(StoreError::ConditionFailed { .. } | StoreError::Invalid(_)) => {
                for (entry, version) in &queued {
                    match ports.store.save(entry, Condition::Version(*version)).await {
                        Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Hands stored outbox entries to [`queue_entries`] from a task of its own: a producer submits
/// an entry and answers its caller at once, and the entries submitted while one batch is being
/// queued form the next. Cheap to clone; the task starts with the first entry, on the runtime
/// of its caller. An entry it could not queue (the task gone, the queue failing) stays pending
/// for the outbox sweep.
#[derive(Clone, Default)]
pub struct OutboxHandoff {
    entries: Arc<OnceLock<mpsc::UnboundedSender<Versioned<OutboxEntry>>>>,
}

impl std::fmt::Debug for OutboxHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxHandoff")
            .field("started", &self.entries.get().is_some())
            .finish()
    }
}

impl OutboxHandoff {
    /// Queues `entry` soon, through `ports`.
    pub fn submit(&self, ports: &Ports, entry: Versioned<OutboxEntry>) {
        let entries = self.entries.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(hand_off(ports.clone(), rx));
            tx
        });
        if entries.send(entry).is_err() {
            tracing::warn!("callback not queued (the hand-off stopped); the outbox sweep will");
        }
    }
}

async fn hand_off(ports: Ports, mut entries: mpsc::UnboundedReceiver<Versioned<OutboxEntry>>) {
    let mut batch = Vec::with_capacity(QUEUE_BATCH);
    while entries.recv_many(&mut batch, QUEUE_BATCH).await > 0 {
        let n = batch.len();
        if let Err(e) = queue_entries(&ports, std::mem::take(&mut batch)).await {
            tracing::warn!(error = %e, entries = n, "callbacks not queued; the outbox sweep will");
        }
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
    queue_entries(ports, entries).await?;
    Ok(count)
}
