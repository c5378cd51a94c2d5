//! `recordings`: object-created notices (in-process locally, an S3 event through SQS on AWS)
//! become media records and record notices (`app::media::handle_object_created`). A notice is
//! acknowledged once handled; one that fails comes back after its visibility timeout.

use std::time::Duration;

use relaycast_core::app::media::{handle_object_created, MediaError, NoticeOutcome};
use relaycast_core::domain::recording::{ObjectCreated, OBJECT_NOTICE_QUEUE};
use relaycast_core::ports::queue;
use tokio_util::sync::CancellationToken;

use crate::Context;

/// Handles one notice message body (a queue message, or a Lambda's SQS record): the
/// recorder's own [`ObjectCreated`] or the bucket's S3 event notification, each object in it in
/// turn. A body that is no notice at all is dropped with a warning: another try cannot mend it.
pub async fn handle(ctx: &Context, body: &str) -> Result<Vec<NoticeOutcome>, MediaError> {
    let notices = match ObjectCreated::parse_notice(body) {
        Ok(notices) => notices,
        Err(e) => {
            tracing::warn!(body, error = %e, "malformed object notice dropped");
            return Ok(Vec::new());
        }
    };
    let mut outcomes = Vec::with_capacity(notices.len());
    for notice in &notices {
        outcomes.push(
            handle_object_created(&ctx.ports, &ctx.settings, &ctx.config_cache, notice).await?,
        );
    }
    Ok(outcomes)
}

/// Takes notices until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) {
    let visibility = Duration::from_millis(ctx.settings.queue.visibility_timeout_ms);
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            r = ctx.ports.queue.receive(OBJECT_NOTICE_QUEUE, 10, visibility, queue::MAX_WAIT) => r,
        };
        let messages = match received {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "object notice receive failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        for message in messages {
            match handle(&ctx, &message.body).await {
                Ok(outcomes) => {
                    tracing::debug!(?outcomes, "object notice handled");
                    if let Err(e) = ctx
                        .ports
                        .queue
                        .ack(OBJECT_NOTICE_QUEUE, &message.receipt)
                        .await
                    {
                        tracing::warn!(error = %e, "object notice ack failed; it will come back");
                    }
                }
                Err(e) => {
                    tracing::warn!(body = %message.body, error = %e, "object notice failed; will retry")
                }
            }
        }
    }
}
