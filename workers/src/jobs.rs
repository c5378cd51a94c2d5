//! The job loop the relay and recorder workers share: receive one job at a time from the
//! worker's queue, hand it to the worker, acknowledge it once handled. A job whose handling fails
//! is not acknowledged, so it comes back after its visibility timeout; a queue that fails to
//! answer is retried after a second. The loop returns once `shutdown` is cancelled, leaving the
//! worker to drain.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

use relaycast_core::ports::{queue, Queue, ReceivedMessage};
use tokio_util::sync::CancellationToken;

/// Takes jobs from `queue_name` until `shutdown`; `after_each` runs after every receive (for
/// gauges).
pub async fn take_jobs<H, Fut, O, E>(
    queue: &dyn Queue,
    queue_name: &str,
    visibility: Duration,
    shutdown: &CancellationToken,
    mut handle: H,
    mut after_each: impl FnMut(),
) where
    H: FnMut(ReceivedMessage) -> Fut,
    Fut: Future<Output = Result<O, E>>,
    O: Debug,
    E: Display,
{
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = queue.receive(queue_name, 1, visibility, queue::MAX_WAIT) => r,
        };
        match received {
            Ok(messages) => {
                for message in messages {
                    let (body, receipt, receives) = (
                        message.body.clone(),
                        message.receipt.clone(),
                        message.receive_count,
                    );
                    match handle(message).await {
                        Ok(outcome) => {
                            tracing::info!(queue = queue_name, job = %body, ?outcome, receive = receives, "job handled");
                            if let Err(e) = queue.ack(queue_name, &receipt).await {
                                tracing::warn!(queue = queue_name, error = %e, "job ack failed; it will come back");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(queue = queue_name, job = %body, error = %e, "job failed; it will come back")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(queue = queue_name, error = %e, "job queue receive failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
            }
        }
        after_each();
    }
}
