//! The `Queue` port: named at-least-once queues with SQS semantics.
//!
//! - `send` with an optional delay: the message becomes visible after it;
//! - `receive` hides each returned message for a visibility timeout; a message not acknowledged
//!   by then is delivered again (at-least-once: consumers must be idempotent);
//! - `ack` deletes a message by the receipt of its latest delivery; `extend` pushes its
//!   visibility out while work goes on (a long relay job heartbeats this way);
//! - each message counts its receives; a message received more than the queue's
//!   `max_receives` times moves to the dead-letter queue [`dead_letter_queue`]`(name)` instead of
//!   being delivered again.
//!
//! What differs between backends, and so is all a consumer may count on:
//! - acknowledging a stale receipt (the message was acknowledged already, or delivered again
//!   since) fails with [`QueueError::StaleReceipt`] on the embedded queue but may succeed on SQS,
//!   which accepts an old receipt of a message it still holds or deleted lately; either way
//!   the message is not delivered again once its latest delivery was acknowledged;
//! - [`Queue::stats`] are approximate on SQS (its counters lag by a second or so);
//! - SQS counts delays, visibility timeouts and long polls in whole seconds: its adapter rounds
//!   each up, so a consumer must not rely on sub-second timing;
//! - on SQS the queues are made by the stack (`infra/relaycast.yaml`) or `create_queues`, not
//!   at first use; every name in [`QUEUES`] must exist there.

use std::time::Duration;

use async_trait::async_trait;

/// The name of the dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}-dlq")
}

/// Queue names must be SQS-compatible: 1..=80 of `[A-Za-z0-9_-]`.
pub fn validate_queue_name(queue: &str) -> Result<(), QueueError> {
    let ok = !queue.is_empty()
        && queue.len() <= 80
        && queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(QueueError::Invalid(format!(
            "queue name {queue:?} must be 1-80 characters of A-Z a-z 0-9 - _"
        )))
    }
}

/// The largest message body, in bytes: SQS's 256 KiB, less 1 KiB kept for the message
/// attributes an adapter adds itself (SQS counts them in its limit; the SQS adapter's long-delay
/// hops carry three).
pub const MAX_MESSAGE_BYTES: usize = 255 * 1024;

/// The longest delay a `send` accepts. SQS itself delays a message by at most 15 minutes; its
/// adapter keeps longer ones as a chain of re-sends (see `relaycast_aws::queue`), and 12 hours
/// bounds that chain at 48 hops while covering every retry schedule and timer the service
/// queues.
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 60 * 60);

/// The longest visibility timeout a `receive` or `extend` accepts (SQS's limit).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// The port's limits on a `send`, which every adapter checks first: the queue name, the body's
/// size ([`MAX_MESSAGE_BYTES`]) and the delay ([`MAX_DELAY`]).
pub fn check_send(queue: &str, body: &str, delay: Duration) -> Result<(), QueueError> {
    validate_queue_name(queue)?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(QueueError::Invalid(format!(
            "message body of {} bytes exceeds {MAX_MESSAGE_BYTES} bytes",
            body.len()
        )));
    }
    if delay > MAX_DELAY {
        return Err(QueueError::Invalid(format!(
            "delay {delay:?} exceeds {MAX_DELAY:?}"
        )));
    }
    Ok(())
}

/// The port's limits on a `receive`: the queue name, 1..=10 messages, the visibility
/// ([`check_visibility`]) and the long poll ([`MAX_WAIT`]).
pub fn check_receive(
    queue: &str,
    max: usize,
    visibility: Duration,
    wait: Duration,
) -> Result<(), QueueError> {
    validate_queue_name(queue)?;
    if !(1..=10).contains(&max) {
        return Err(QueueError::Invalid(format!(
            "max must be 1..=10, got {max}"
        )));
    }
    check_visibility(visibility)?;
    if wait > MAX_WAIT {
        return Err(QueueError::Invalid(format!(
            "wait {wait:?} exceeds {MAX_WAIT:?}"
        )));
    }
    Ok(())
}

/// The port's limit on a visibility timeout ([`MAX_VISIBILITY`]), of `receive` and `extend`.
pub fn check_visibility(visibility: Duration) -> Result<(), QueueError> {
    if visibility > MAX_VISIBILITY {
        return Err(QueueError::Invalid(format!(
            "visibility timeout {visibility:?} exceeds {MAX_VISIBILITY:?}"
        )));
    }
    Ok(())
}

/// Every queue the service uses, by the constants its producers and consumers name them with.
/// The AWS stack makes each (with its dead-letter queue); opening the AWS adapters checks they
/// exist, and the host's metrics watch their depth.
pub const QUEUES: &[&str] = &[
    crate::app::relay::RELAY_QUEUE,
    crate::app::recording::RECORD_QUEUE,
    crate::domain::outbox::CALLBACK_QUEUE,
    crate::domain::recording::OBJECT_NOTICE_QUEUE,
];

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Stable across deliveries.
    pub id: String,
    /// Names this delivery; pass it to `ack`/`extend`. A later delivery invalidates it.
    pub receipt: String,
    /// The body as sent.
    pub body: String,
    /// How many times the message has been received, this delivery included (1 on the first).
    pub receive_count: u32,
    /// When it was sent, in Unix ms.
    pub sent_at_ms: i64,
}

/// Approximate counts of a queue, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Ready to be received now.
    pub visible: u64,
    /// Received and not yet acknowledged nor timed out.
    pub in_flight: u64,
    /// Sent with a delay that has not passed yet.
    pub delayed: u64,
}

/// What can go wrong with a queue.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The receipt does not name the latest delivery of a message still in the queue (it was
    /// acknowledged, or delivered again after its visibility timed out).
    #[error("receipt is no longer valid: {0}")]
    StaleReceipt(String),
    /// The request itself is invalid (bad name, body too large).
    #[error("invalid queue request: {0}")]
    Invalid(String),
    /// The backend failed.
    #[error("queue backend error: {0}")]
    Backend(String),
}

/// The longest long poll a `receive` may ask for (SQS's limit).
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// Named at-least-once queues. See the module documentation for the semantics every adapter
/// gives (checked by `core/src/ports/contract.rs`, run by `adapters/embedded/tests/contract_sqlite.rs`
/// and `adapters/aws/tests/contract_sqs.rs`). A message whose `send` returned `Ok` is durable.
/// The embedded queues exist implicitly; SQS's are made beforehand (see the module documentation).
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Enqueues `body`, visible after `delay` (at most [`MAX_DELAY`]). Returns its id, which
    /// every delivery of the message carries.
    async fn send(&self, queue: &str, body: &str, delay: Duration) -> Result<String, QueueError>;

    /// Enqueues every one of `bodies` as [`Queue::send`] would, in order, all visible after
    /// `delay`; returns their ids in order. All of them are durable when it returns `Ok`; on an
    /// error some may have been sent (a producer's outbox covers that, as for one `send`). The
    /// embedded queue writes them in one operation of its group commit; the default sends one
    /// by one.
    async fn send_batch(
        &self,
        queue: &str,
        bodies: &[String],
        delay: Duration,
    ) -> Result<Vec<String>, QueueError> {
        let mut ids = Vec::with_capacity(bodies.len());
        for body in bodies {
            ids.push(self.send(queue, body, delay).await?);
        }
        Ok(ids)
    }

    /// Up to `max` (1..=10) visible messages, each then hidden for `visibility` (at most
    /// [`MAX_VISIBILITY`]). Waits up to
    /// `wait` (at most [`MAX_WAIT`]) for one to arrive when none is visible (long polling);
    /// returns empty after that.
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes the message of this delivery. A receipt that is not the latest delivery's is
    /// [`QueueError::StaleReceipt`], or `Ok` on SQS (see the module documentation).
    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError>;

    /// Acknowledges every one of `receipts` as [`Queue::ack`] would; returns each one's result
    /// in order (a stale receipt fails alone). The embedded queue deletes them in one operation
    /// of its group commit; the default acknowledges one by one.
    async fn ack_batch(&self, queue: &str, receipts: &[String]) -> Vec<Result<(), QueueError>> {
        let mut results = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            results.push(self.ack(queue, receipt).await);
        }
        results
    }

    /// Hides the message of this delivery for `visibility` from now.
    async fn extend(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError>;

    /// Approximate counts.
    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError>;
}
