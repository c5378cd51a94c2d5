//! The Lambda host of the functions (feature `lambda`): the glue every bootstrap binary
//! (`src/bin/*.rs`) shares. A binary's `main` is [`serve`] with two steps: build what its
//! handler needs from the [`Context`], then run the Runtime API loop around it.
//!
//! Init is the settings (`RELAYCAST_*` variables; `RELAYCAST_AWS__TABLE` and the like name the
//! stack's resources) and the AWS adapters' clients, nothing else: Lambda bills and waits for
//! it on every cold start, so no round trip proves the stack's resources (a missing one fails
//! the first invocation that needs it). The one exception is the accounts the settings declare
//! (the stack gives them to the `api` function only): one write each. An init that fails is
//! reported to the Runtime API's init-error endpoint before the process exits, so the
//! invocation fails with the reason instead of a bare "Runtime exited".
//!
//! Logs are JSON lines on stdout, which Lambda sends to CloudWatch Logs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{service_fn, LambdaEvent};
use relaycast_adapters::{open_ports_for_cold_start, OpenError};
use relaycast_core::app::outbox::queue_pending;
use relaycast_core::config::{ConfigError, Settings};
use relaycast_core::domain::outbox::CALLBACK_QUEUE;
use relaycast_core::ports::{ReceivedMessage, SystemClock};

use crate::notifier::{Notifier, NotifierError, Settle, SWEEP_BATCH};
use crate::Context;

/// Why a Lambda function could not start or its runtime loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// The `RELAYCAST_*` settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The adapters could not be opened (a missing table, queue or bucket; no credentials).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The declared accounts could not be stored.
    #[error("cannot store the declared accounts: {0}")]
    Accounts(String),
    /// The notifier could not be built.
    #[error(transparent)]
    Notifier(#[from] NotifierError),
    /// The Runtime API loop failed.
    #[error("the Lambda runtime stopped: {0}")]
    Runtime(lambda_runtime::Error),
}

impl LambdaError {
    /// The `errorType` reported to the Runtime API.
    pub fn error_type(&self) -> &'static str {
        match self {
            LambdaError::Config(_) => "Relaycast.ConfigError",
            LambdaError::Open(_) | LambdaError::Accounts(_) => "Relaycast.AdapterError",
            LambdaError::Notifier(_) => "Relaycast.NotifierError",
            LambdaError::Runtime(_) => "Relaycast.RuntimeError",
        }
    }
}

/// Runs one function: init (settings, adapters, then `prepare`), reporting a failure of it to
/// the Runtime API, then `run` on what `prepare` built until the runtime stops.
pub async fn serve<T, P, R, F>(prepare: P, run: R) -> Result<(), LambdaError>
where
    P: FnOnce(Context) -> Result<T, LambdaError>,
    R: FnOnce(T) -> F,
    F: Future<Output = Result<(), LambdaError>>,
{
    let prepared = match init().await.and_then(prepare) {
        Ok(prepared) => prepared,
        Err(e) => {
            tracing::error!(error = %e, "init failed");
            report_init_error(&e).await;
            return Err(e);
        }
    };
    run(prepared).await
}

async fn init() -> Result<Context, LambdaError> {
    let settings = Settings::load(None, std::env::vars());
    init_tracing(settings.as_ref().map_or("info", |s| s.log_filter.as_str()));
    let settings = Arc::new(settings?);
    let opened = open_ports_for_cold_start(&settings, Arc::new(SystemClock)).await?;
    // The accounts the settings declare (the stack passes them to the `api` function only).
    relaycast_core::app::auth::store_declared_accounts(&opened.ports, &settings.accounts)
        .await
        .map_err(|e| LambdaError::Accounts(e.to_string()))?;
    tracing::info!(
        backend = relaycast_adapters::backend_name(&settings),
        "function ready"
    );
    Ok(Context::new(opened.ports, settings))
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // `try_init`: a second call (none in the binaries) must not panic.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .try_init();
}

/// Posts `error` to `/runtime/init/error`. Best effort: the process exits with the error
/// whatever the answer, and Lambda reports an exit during init in any case.
async fn report_init_error(error: &LambdaError) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({
        "errorType": error.error_type(),
        "errorMessage": error.to_string(),
        "stackTrace": [],
    });
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot report the init error");
            return;
        }
    };
    let sent = client
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", error.error_type())
        .json(&body)
        .send()
        .await;
    if let Err(e) = sent {
        tracing::error!(error = %e, "cannot report the init error");
    }
}

/// API Gateway (HTTP API, payload format 2.0) to `router`: the same axum router `relaycast up`
/// serves, so both hosts answer alike.
pub async fn http(router: axum::Router) -> Result<(), LambdaError> {
    lambda_http::run(router).await.map_err(LambdaError::Runtime)
}

/// The notifier on its SQS event source: one delivery attempt per record, concurrently. The
/// answer lists in `batchItemFailures` the records that are not done with, so that only they
/// come back (the event source mapping needs `ReportBatchItemFailures`):
///
/// - delivered, given up or finished already: done, and Lambda deletes the message itself (the
///   notifier never acks the Lambda's receipt);
/// - to be tried again after a wait (a failed callback on the seed's schedule, a predecessor in
///   flight, a busy endpoint): the message is hidden for that wait and reported failed, so SQS
///   brings the same message back then. A message received `queue.max_receives` times (the
///   queue's `maxReceiveCount`) would be dead-lettered at its next receive although its entry
///   still has retries, so it is handed over instead: sent again with the wait (its count starts
///   anew) and reported done;
/// - our own failure (store, queue): reported failed, back after the visibility timeout.
pub async fn notifier(notifier: Notifier) -> Result<(), LambdaError> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let notifier = notifier.clone();
        async move {
            let attempts = event.payload.records.into_iter().map(|record| {
                let notifier = notifier.clone();
                async move {
                    let message = received(&record)?;
                    match notifier.attempt(&message).await {
                        Ok((_, Settle::Done)) => return None,
                        Ok((_, Settle::Later(wait))) => {
                            if come_back(&notifier, &message, wait).await {
                                return None;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(entry = %message.body, error = %e, "callback delivery step failed")
                        }
                    }
                    Some(message.id)
                }
            });
            let mut response = SqsBatchResponse::default();
            for failed in futures::future::join_all(attempts).await.into_iter().flatten() {
                response.add_failure(failed);
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
    .await
    .map_err(LambdaError::Runtime)
}

/// Makes a message of the Lambda's batch come back after `wait`: hidden that long, or, when
/// SQS would dead-letter it at its next receive, sent anew (then `true`: the batch item is done).
/// A failure only brings it back sooner (after the queue's visibility timeout).
async fn come_back(notifier: &Notifier, message: &ReceivedMessage, wait: Duration) -> bool {
    let ctx = notifier.context();
    let queue = &ctx.ports.queue;
    if message.receive_count >= ctx.settings.queue.max_receives {
        match queue.send(CALLBACK_QUEUE, &message.body, wait).await {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(entry = %message.body, error = %e, "callback message not handed over; it may be dead-lettered")
            }
        }
    }
    if let Err(e) = queue.extend(CALLBACK_QUEUE, &message.receipt, wait).await {
        tracing::warn!(entry = %message.body, error = %e, "callback message visibility not changed; it comes back after the queue's visibility timeout");
    }
    false
}

/// `recordings` on the object-notices queue, whose messages are the bucket's S3 event
/// notifications (and the recorder's own notices): every object of a record handled, the
/// records that failed reported in `batchItemFailures`.
pub async fn recordings(ctx: Context) -> Result<(), LambdaError> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let ctx = ctx.clone();
        async move {
            let mut response = SqsBatchResponse::default();
            // One at a time: a batch is at most ten notices, each a few store writes.
            for record in &event.payload.records {
                let Some(message) = received(record) else {
                    continue;
                };
                match crate::recordings::handle(&ctx, &message.body).await {
                    Ok(outcomes) => tracing::info!(?outcomes, "object notice handled"),
                    Err(e) => {
                        tracing::warn!(body = %message.body, error = %e, "object notice failed; will retry");
                        response.add_failure(message.id);
                    }
                }
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
    .await
    .map_err(LambdaError::Runtime)
}

/// The scheduler on an EventBridge schedule (every minute): one tick with the purge, then the
/// outbox sweep the notifier's loop runs locally (entries a crash left pending). Answers what
/// the tick did; a failed tick is a failed invocation, and the next minute tries again.
pub async fn scheduler(ctx: Context) -> Result<(), LambdaError> {
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| {
            let ctx = ctx.clone();
            async move {
                tracing::debug!(source = %event.payload.source, "scheduled tick");
                let report = crate::scheduler::run_tick(&ctx, true).await?;
                let queued = queue_pending(&ctx.ports, SWEEP_BATCH).await?;
                tracing::info!(?report, queued, "scheduler tick");
                Ok::<_, lambda_runtime::Error>(serde_json::json!({
                    "tick": report,
                    "outbox_queued": queued,
                }))
            }
        },
    ))
    .await
    .map_err(LambdaError::Runtime)
}

/// An SQS record as the queue port's [`ReceivedMessage`]; `None` (with a warning) for a record
/// without a message id, which cannot be reported back and so is left to the runtime.
fn received(record: &SqsMessage) -> Option<ReceivedMessage> {
    let Some(id) = record.message_id.clone() else {
        tracing::warn!("SQS record without a messageId ignored");
        return None;
    };
    let attribute = |name: &str| record.attributes.get(name).map(String::as_str);
    Some(ReceivedMessage {
        id,
        receipt: record.receipt_handle.clone().unwrap_or_default(),
        body: record.body.clone().unwrap_or_default(),
        receive_count: attribute("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        sent_at_ms: attribute("SentTimestamp")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}
