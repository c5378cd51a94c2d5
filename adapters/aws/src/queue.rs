//! [`SqsQueue`]: the [`Queue`] port on Amazon SQS.
//!
//! Queue `name` is the SQS queue `{prefix}{name}` (the prefix of [`AwsSettings::queue_prefix`]),
//! its dead-letter queue `{prefix}{name}-dlq` ([`dead_letter_queue`]); each URL is looked up once
//! (GetQueueUrl) and kept. The queues are made by `infra/relaycast.yaml`, or by
//! [`create_queues`] for tests and local development.
//!
//! - **Time is SQS's.** Delays, visibility timeouts and long polls are whole seconds on SQS, so
//!   each is rounded up to the next second; the injected clock plays no part. A message's
//!   `receive_count` and `sent_at_ms` are its `ApproximateReceiveCount` and `SentTimestamp`.
//! - **Dead letters** are SQS's own: the queue's redrive policy (`maxReceiveCount`) moves a
//!   message received too often to the dead-letter queue at the next receive. The number of
//!   receives is so the queue's, set where the queue is made.
//! - **Delays beyond SQS's 15 minutes** (up to the port's [`MAX_DELAY`]) are kept as hops: the
//!   message is sent with the longest delay SQS takes and a `relaycast-not-before` attribute
//!   (Unix ms). A receive that gets it before that time sends it on again with the rest of the
//!   delay (at most one more hop), carrying the first send's message id and send time in
//!   `relaycast-id` and `relaycast-sent-at`, then deletes the early copy; the consumer never
//!   sees it before its time, and sees the id `send` returned and the time it was sent. A hop
//!   runs only when someone receives from the queue (the consumers poll anyway); between hops
//!   the message counts as visible in [`Queue::stats`]. A copy re-sent but not deleted (a crash
//!   between the two) comes back after its visibility timeout and is sent on again, so the
//!   message may then arrive twice: at-least-once, as every delivery is.
//! - **Stale receipts.** SQS accepts an old receipt of a message it still holds (or deleted
//!   lately) and answers `Ok`, so [`Queue::ack`] of a stale receipt may succeed; a receipt SQS
//!   refuses is [`QueueError::StaleReceipt`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use relaycast_core::config::AwsSettings;
use relaycast_core::ports::queue::{self, check_receive, check_send, validate_queue_name};
use relaycast_core::ports::{
    dead_letter_queue, Clock, Queue, QueueError, QueueStats, ReceivedMessage, SystemClock,
};

use crate::AwsError;

/// The longest delay SQS gives one message, and so the longest hop.
pub const SQS_MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// SQS's longest queue name.
const MAX_SQS_NAME: usize = 80;
/// When a message delayed past [`SQS_MAX_DELAY`] is due, Unix ms.
const NOT_BEFORE: &str = "relaycast-not-before";
/// The message id of a hopping message's first send.
const FIRST_ID: &str = "relaycast-id";
/// The `SentTimestamp` of a hopping message's first send, Unix ms.
const FIRST_SENT_AT: &str = "relaycast-sent-at";
/// How long dead letters (and messages) are kept, as the stack keeps them: SQS's 14 days.
const RETENTION_SECONDS: &str = "1209600";
/// Error codes that name a receipt SQS does not take (acknowledged long ago, malformed, or
/// of another queue).
const STALE_CODES: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "InvalidIdFormat",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
];
/// Error codes of a request SQS refused as malformed: the caller's mistake, not the backend's.
const INVALID_CODES: &[&str] = &[
    "InvalidParameterValue",
    "InvalidAttributeValue",
    "InvalidAttributeName",
    "InvalidMessageContents",
    "InvalidParameterCombination",
    "MissingParameter",
    "ValidationError",
];

/// The [`Queue`] on SQS queues named `{prefix}{name}`. Cheap to share behind an `Arc`; the client
/// pools its connections.
pub struct SqsQueue {
    client: Client,
    prefix: String,
    urls: Mutex<HashMap<String, String>>,
    max_hop: Duration,
    /// Receives before dead-lettering of the queues made at first use, when they are made.
    create_missing: Option<u32>,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue")
            .field("prefix", &self.prefix)
            .field("max_hop", &self.max_hop)
            .finish_non_exhaustive()
    }
}

/// What a received SQS message is to the consumer.
enum Received {
    /// Due: deliver it.
    Due(ReceivedMessage),
    /// A hop of a long delay, due at `not_before` (Unix ms): send it on.
    Early { not_before: i64 },
}

impl SqsQueue {
    /// The queues `{prefix}{name}` through `client`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            urls: Mutex::new(HashMap::new()),
            max_hop: SQS_MAX_DELAY,
            create_missing: None,
        }
    }

    /// The queues of `settings`, with a client from [`crate::sdk_config`]. Makes no request: a
    /// missing queue shows at its first use, named ([`SqsQueue::check_queues`] looks first).
    pub async fn open(settings: &AwsSettings) -> Result<Self, AwsError> {
        let client = Client::new(&crate::sdk_config(settings).await);
        Ok(Self::new(client, settings.queue_prefix.clone()))
    }

    /// Hops of at most `hop` (1 s to [`SQS_MAX_DELAY`]) for long delays, instead of SQS's 15
    /// minutes: for tests, so that a chain of hops runs in seconds.
    pub fn with_max_hop(mut self, hop: Duration) -> Self {
        self.max_hop = hop.clamp(Duration::from_secs(1), SQS_MAX_DELAY);
        self
    }

    /// Makes a queue that does not exist at its first use (with its dead-letter queue,
    /// dead-lettering after `max_receives`), as the embedded queues exist implicitly: for tests
    /// and local development against moto. Deployments use the stack's queues.
    pub fn creating_missing(mut self, max_receives: u32) -> Self {
        self.create_missing = Some(max_receives);
        self
    }

    /// The SQS client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The SQS name of queue `name`.
    pub fn sqs_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Checks that each of `names` and its dead-letter queue exist, naming the first that does
    /// not.
    pub async fn check_queues(&self, names: &[&str]) -> Result<(), AwsError> {
        let queues = names
            .iter()
            .flat_map(|name| [name.to_string(), dead_letter_queue(name)]);
        // Looked up together; the first missing one in `names` order is the one named.
        let found = futures::future::join_all(queues.map(|queue| async move {
            self.url(&queue).await.map_err(|e| AwsError::Open {
                what: "SQS queue",
                reason: match e {
                    QueueError::Backend(msg) | QueueError::Invalid(msg) => msg,
                    other => other.to_string(),
                },
            })
        }))
        .await;
        found.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    /// Logs each of `names` whose redrive policy does not dead-letter after `max_receives`
    /// receives (the setting then has no effect: the queue's policy decides).
    pub async fn warn_on_redrive_mismatch(&self, names: &[&str], max_receives: u32) {
        futures::future::join_all(
            names
                .iter()
                .map(|name| self.warn_on_redrive(name, max_receives)),
        )
        .await;
    }

    async fn warn_on_redrive(&self, name: &str, max_receives: u32) {
        let Ok(url) = self.url(name).await else {
            return;
        };
        let policy = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .ok()
            .and_then(|out| {
                out.attributes()
                    .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy).cloned())
            });
        let counted = policy
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|p| {
                let n = &p["maxReceiveCount"];
                n.as_u64()
                    .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
            });
        if counted != Some(u64::from(max_receives)) {
            tracing::warn!(
                queue = %self.sqs_name(name),
                policy = ?policy,
                max_receives,
                "the queue's redrive policy decides when a message is dead-lettered, not queue.max_receives"
            );
        }
    }

    fn check_name(&self, queue: &str) -> Result<(), QueueError> {
        validate_queue_name(queue)?;
        if self.prefix.len() + queue.len() > MAX_SQS_NAME {
            return Err(QueueError::Invalid(format!(
                "queue name {queue:?} is too long: with the prefix {:?} it is over SQS's {MAX_SQS_NAME} characters",
                self.prefix
            )));
        }
        Ok(())
    }

    /// The URL of `queue`, looked up once.
    async fn url(&self, queue: &str) -> Result<String, QueueError> {
        if let Some(url) = self.urls.lock().unwrap().get(queue) {
            return Ok(url.clone());
        }
        let name = self.sqs_name(queue);
        let url = match self.lookup(&name).await {
            Ok(url) => url,
            Err(e) => match (e.as_service_error(), self.create_missing) {
                (Some(GetQueueUrlError::QueueDoesNotExist(_)), Some(max_receives)) => {
                    create_queues(&self.client, &self.prefix, &[queue], max_receives)
                        .await
                        .map_err(|e| QueueError::Backend(e.to_string()))?;
                    self.lookup(&name)
                        .await
                        .map_err(|e| backend("GetQueueUrl", &name, e))?
                }
                (Some(GetQueueUrlError::QueueDoesNotExist(_)), None) => {
                    return Err(QueueError::Backend(format!(
                        "SQS queue {name} does not exist (made by infra/relaycast.yaml)"
                    )))
                }
                _ => return Err(backend("GetQueueUrl", &name, e)),
            },
        };
        self.urls
            .lock()
            .unwrap()
            .insert(queue.to_string(), url.clone());
        Ok(url)
    }

    async fn lookup(&self, name: &str) -> Result<String, SdkError<GetQueueUrlError>> {
        let out = self.client.get_queue_url().queue_name(name).send().await?;
        Ok(out.queue_url.unwrap_or_default())
    }

    /// Sends `body` delayed by `delay_secs`, with message `attributes` (name, SQS data type,
    /// value).
    async fn send_raw(
        &self,
        queue: &str,
        url: &str,
        body: &str,
        delay_secs: i32,
        attributes: &[(&str, &str, String)],
    ) -> Result<String, QueueError> {
        let mut send = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(delay_secs);
        for (name, data_type, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type(*data_type)
                .string_value(value)
                .build()
                .map_err(|e| QueueError::Backend(e.to_string()))?;
            send = send.message_attributes(*name, value);
        }
        let out = send
            .send()
            .await
            .map_err(|e| map_error("SendMessage", &self.sqs_name(queue), e))?;
        out.message_id.ok_or_else(|| {
            QueueError::Backend(format!("SQS SendMessage on {queue}: no message id"))
        })
    }

    /// Sends an early hop of a long delay on towards `not_before`, then deletes it.
    async fn hop(
        &self,
        queue: &str,
        url: &str,
        m: &Message,
        not_before: i64,
    ) -> Result<(), QueueError> {
        let (first_id, first_sent_at) = first_send(m)?;
        let remaining = Duration::from_millis((not_before - SystemClock.now_ms()).max(0) as u64);
        let delay = whole_seconds(remaining.min(self.max_hop));
        // The first id is a string; SQS Number attributes take digits only, so it goes as a
        // String attribute.
        let attributes = [
            (NOT_BEFORE, "Number", not_before.to_string()),
            (FIRST_ID, "String", first_id),
            (FIRST_SENT_AT, "Number", first_sent_at.to_string()),
        ];
        self.send_raw(queue, url, m.body().unwrap_or_default(), delay, &attributes)
            .await?;
        // Sent on before the early copy goes, so a failure in between repeats, never loses.
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle().unwrap_or_default())
            .send()
            .await
            .map_err(|e| map_error("DeleteMessage", &self.sqs_name(queue), e))?;
        Ok(())
    }
}

/// Most entries of one SQS batch request.
const SQS_BATCH: usize = 10;
/// Most bytes of the bodies of one SQS batch request (SQS's 256 KiB for the whole request).
const SQS_BATCH_BYTES: usize = 256 * 1024;

/// `bodies` in SQS batches: at most [`SQS_BATCH`] each and [`SQS_BATCH_BYTES`] of bodies.
fn sqs_batches(bodies: &[String]) -> Vec<&[String]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        if i > start && (i - start == SQS_BATCH || bytes + body.len() > SQS_BATCH_BYTES) {
            batches.push(&bodies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        batches.push(&bodies[start..]);
    }
    batches
}

/// `d` in whole seconds, rounded up (SQS counts in seconds; never earlier than asked).
fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn backend<E, R>(op: &str, queue: &str, e: SdkError<E, R>) -> QueueError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    QueueError::Backend(format!(
        "SQS {op} on queue {queue}: {}",
        DisplayErrorContext(&e)
    ))
}

/// An SDK error as the port's: a receipt SQS refuses is stale, a request it refuses as
/// malformed is invalid, anything else is the backend's, with the operation and queue named.
fn map_error<E, R>(op: &str, queue: &str, e: SdkError<E, R>) -> QueueError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let code = e.as_service_error().and_then(|s| s.code());
    match code {
        Some(code) if STALE_CODES.contains(&code) => QueueError::StaleReceipt(format!(
            "SQS {op} on queue {queue}: {}",
            e.as_service_error()
                .and_then(|s| s.message())
                .unwrap_or(code)
        )),
        Some(code) if INVALID_CODES.contains(&code) => QueueError::Invalid(format!(
            "SQS {op} on queue {queue}: {code}: {}",
            e.as_service_error().and_then(|s| s.message()).unwrap_or("")
        )),
        _ => backend(op, queue, e),
    }
}

fn number_attribute(m: &Message, name: &str) -> Option<i64> {
    m.message_attributes()?
        .get(name)?
        .string_value()?
        .parse()
        .ok()
}

fn system_attribute(m: &Message, name: MessageSystemAttributeName) -> Result<i64, QueueError> {
    m.attributes()
        .and_then(|a| a.get(&name))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            QueueError::Backend(format!(
                "SQS message {} came without its {name} attribute",
                m.message_id().unwrap_or("?")
            ))
        })
}

/// The id and send time of a message's first send: its own, or those a hop carries.
fn first_send(m: &Message) -> Result<(String, i64), QueueError> {
    let id = m
        .message_attributes()
        .and_then(|a| a.get(FIRST_ID))
        .and_then(|v| v.string_value())
        .or(m.message_id())
        .unwrap_or_default()
        .to_string();
    let sent_at = match number_attribute(m, FIRST_SENT_AT) {
        Some(at) => at,
        None => system_attribute(m, MessageSystemAttributeName::SentTimestamp)?,
    };
    Ok((id, sent_at))
}

/// Whether `m` is due, and if so the delivery the consumer sees.
fn classify(m: &Message, now_ms: i64) -> Result<Received, QueueError> {
    if let Some(not_before) = number_attribute(m, NOT_BEFORE) {
        if not_before > now_ms {
            return Ok(Received::Early { not_before });
        }
    }
    let (id, sent_at_ms) = first_send(m)?;
    let receive_count = system_attribute(m, MessageSystemAttributeName::ApproximateReceiveCount)?;
    Ok(Received::Due(ReceivedMessage {
        id,
        receipt: m.receipt_handle().unwrap_or_default().to_string(),
        body: m.body().unwrap_or_default().to_string(),
        receive_count: u32::try_from(receive_count).unwrap_or(u32::MAX),
        sent_at_ms,
    }))
}

fn check_visibility(visibility: Duration) -> Result<i32, QueueError> {
    queue::check_visibility(visibility)?;
    Ok(whole_seconds(visibility))
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, queue: &str, body: &str, delay: Duration) -> Result<String, QueueError> {
        check_send(queue, body, delay)?;
        self.check_name(queue)?;
        let url = self.url(queue).await?;
        if delay <= self.max_hop {
            return self
                .send_raw(queue, &url, body, whole_seconds(delay), &[])
                .await;
        }
        let not_before = SystemClock.now_ms() + delay.as_millis() as i64;
        self.send_raw(
            queue,
            &url,
            body,
            whole_seconds(self.max_hop),
            &[(NOT_BEFORE, "Number", not_before.to_string())],
        )
        .await
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        check_receive(queue, max, visibility, wait)?;
        self.check_name(queue)?;
        let visibility_secs = whole_seconds(visibility);
        let url = self.url(queue).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let wait_secs =
                whole_seconds(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let out = self
                .client
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(max as i32)
                .visibility_timeout(visibility_secs)
                .wait_time_seconds(wait_secs)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_attribute_names(NOT_BEFORE)
                .message_attribute_names(FIRST_ID)
                .message_attribute_names(FIRST_SENT_AT)
                .send()
                .await
                .map_err(|e| map_error("ReceiveMessage", &self.sqs_name(queue), e))?;
            let now = SystemClock.now_ms();
            let mut got = Vec::new();
            let mut hopped = false;
            for m in out.messages() {
                match classify(m, now)? {
                    Received::Due(message) => got.push(message),
                    Received::Early { not_before } => {
                        hopped = true;
                        // The copy stays hidden for the visibility timeout and is sent on at
                        // its next receive; the receive itself goes on.
                        if let Err(e) = self.hop(queue, &url, m, not_before).await {
                            tracing::warn!(queue, error = %e, "cannot send a delayed message on; it comes back after its visibility timeout");
                        }
                    }
                }
            }
            // Only hops came: the poll was not over for the consumer, who asked to wait.
            if !got.is_empty() || !hopped || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
        }
    }

    async fn send_batch(
        &self,
        queue: &str,
        bodies: &[String],
        delay: Duration,
    ) -> Result<Vec<String>, QueueError> {
        for body in bodies {
            check_send(queue, body, delay)?;
        }
        self.check_name(queue)?;
        if delay > self.max_hop {
            // Hopping messages carry attributes of their own: one by one.
            let mut ids = Vec::with_capacity(bodies.len());
            for body in bodies {
                ids.push(self.send(queue, body, delay).await?);
            }
            return Ok(ids);
        }
        let url = self.url(queue).await?;
        let delay_secs = whole_seconds(delay);
        let mut ids = Vec::with_capacity(bodies.len());
        for chunk in sqs_batches(bodies) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body.as_str())
                        .delay_seconds(delay_secs)
                        .build()
                        .map_err(|e| QueueError::Backend(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| map_error("SendMessageBatch", &self.sqs_name(queue), e))?;
            if let Some(failed) = out.failed().first() {
                return Err(QueueError::Backend(format!(
                    "SQS SendMessageBatch on queue {}: {} of {} not sent, the first with {}: {}",
                    self.sqs_name(queue),
                    out.failed().len(),
                    chunk.len(),
                    failed.code(),
                    failed.message().unwrap_or("")
                )));
            }
            let mut sent: Vec<(usize, String)> = out
                .successful()
                .iter()
                .map(|e| {
                    (
                        e.id().parse().unwrap_or(usize::MAX),
                        e.message_id().to_string(),
                    )
                })
                .collect();
            sent.sort();
            if sent.len() != chunk.len() || sent.iter().enumerate().any(|(i, (id, _))| *id != i) {
                return Err(QueueError::Backend(format!(
                    "SQS SendMessageBatch on queue {}: answered for {} of {} messages",
                    self.sqs_name(queue),
                    sent.len(),
                    chunk.len()
                )));
            }
            ids.extend(sent.into_iter().map(|(_, id)| id));
        }
        Ok(ids)
    }

    async fn ack_batch(&self, queue: &str, receipts: &[String]) -> Vec<Result<(), QueueError>> {
        let every = |e: &QueueError| -> Vec<Result<(), QueueError>> {
            receipts.iter().map(|_| Err(e.clone())).collect()
        };
        if let Err(e) = self.check_name(queue) {
            return every(&e);
        }
        let url = match self.url(queue).await {
            Ok(url) => url,
            Err(e) => return every(&e),
        };
        let mut results: Vec<Result<(), QueueError>> = Vec::with_capacity(receipts.len());
        for chunk in receipts.chunks(SQS_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt.as_str())
                        .build()
                        .map_err(|e| QueueError::Backend(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>();
            let out = match entries {
                Ok(entries) => self
                    .client
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| map_error("DeleteMessageBatch", &self.sqs_name(queue), e)),
                Err(e) => Err(e),
            };
            match out {
                Ok(out) => {
                    let mut chunk_results: Vec<Result<(), QueueError>> = chunk
                        .iter()
                        .map(|_| {
                            Err(QueueError::Backend(format!(
                                "SQS DeleteMessageBatch on queue {}: no answer for this receipt",
                                self.sqs_name(queue)
                            )))
                        })
                        .collect();
                    for ok in out.successful() {
                        if let Some(r) = ok
                            .id()
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| chunk_results.get_mut(i))
                        {
                            *r = Ok(());
                        }
                    }
                    for failed in out.failed() {
                        let msg = format!(
                            "SQS DeleteMessageBatch on queue {}: {}: {}",
                            self.sqs_name(queue),
                            failed.code(),
                            failed.message().unwrap_or("")
                        );
                        let error = if STALE_CODES.contains(&failed.code()) {
                            QueueError::StaleReceipt(msg)
                        } else {
                            QueueError::Backend(msg)
                        };
                        if let Some(r) = failed
                            .id()
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| chunk_results.get_mut(i))
                        {
                            *r = Err(error);
                        }
                    }
                    results.extend(chunk_results);
                }
                Err(e) => results.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
        }
        results
    }

    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError> {
        self.check_name(queue)?;
        let url = self.url(queue).await?;
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| map_error("DeleteMessage", &self.sqs_name(queue), e))?;
        Ok(())
    }

    async fn extend(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.check_name(queue)?;
        let secs = check_visibility(visibility)?;
        let url = self.url(queue).await?;
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| map_error("ChangeMessageVisibility", &self.sqs_name(queue), e))?;
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        self.check_name(queue)?;
        let url = self.url(queue).await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| map_error("GetQueueAttributes", &self.sqs_name(queue), e))?;
        let count = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueStats {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

/// Makes each queue of `names` (`{prefix}{name}`) and its dead-letter queue, with a redrive
/// policy moving a message there after `max_receives` receives, as `infra/relaycast.yaml` makes
/// them; a name that is a dead-letter queue's itself is made alone. For tests and local
/// development: deployments use the stack's queues. Making a queue that exists with the same
/// attributes is fine.
pub async fn create_queues(
    client: &Client,
    prefix: &str,
    names: &[&str],
    max_receives: u32,
) -> Result<(), AwsError> {
    let fail = |name: &str, reason: String| AwsError::Provision {
        what: "SQS queue",
        reason: format!("{name}: {reason}"),
    };
    if max_receives == 0 {
        return Err(fail(prefix, "max_receives must be at least 1".into()));
    }
    for name in names {
        let dlq_name = if name.ends_with("-dlq") {
            format!("{prefix}{name}")
        } else {
            format!("{prefix}{}", dead_letter_queue(name))
        };
        if dlq_name.len() > MAX_SQS_NAME {
            return Err(fail(
                &dlq_name,
                format!("over SQS's {MAX_SQS_NAME} characters"),
            ));
        }
        let dlq_url = client
            .create_queue()
            .queue_name(&dlq_name)
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                RETENTION_SECONDS,
            )
            .send()
            .await
            .map_err(|e| fail(&dlq_name, DisplayErrorContext(&e).to_string()))?
            .queue_url
            .unwrap_or_default();
        if name.ends_with("-dlq") {
            continue;
        }
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| fail(&dlq_name, DisplayErrorContext(&e).to_string()))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| fail(&dlq_name, "no QueueArn".into()))?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": max_receives,
        });
        let queue_name = format!("{prefix}{name}");
        client
            .create_queue()
            .queue_name(&queue_name)
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                RETENTION_SECONDS,
            )
            .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
            .send()
            .await
            .map_err(|e| fail(&queue_name, DisplayErrorContext(&e).to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_ten_messages_and_256_kib_at_most() {
        let small: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        let sizes: Vec<usize> = sqs_batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<String> = (0..5).map(|_| "x".repeat(100 * 1024)).collect();
        let sizes: Vec<usize> = sqs_batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let one_each: Vec<String> = (0..2).map(|_| "x".repeat(255 * 1024)).collect();
        assert_eq!(sqs_batches(&one_each).len(), 2);
        assert!(sqs_batches(&[]).is_empty());
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(SQS_MAX_DELAY), 900);
    }

    #[test]
    fn a_hop_is_early_until_its_time_and_keeps_its_first_send() {
        let attr = |t: &str, v: &str| {
            MessageAttributeValue::builder()
                .data_type(t)
                .string_value(v)
                .build()
                .unwrap()
        };
        let m = Message::builder()
            .message_id("second-copy")
            .receipt_handle("r")
            .body("b")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
            .attributes(MessageSystemAttributeName::SentTimestamp, "2000")
            .message_attributes(NOT_BEFORE, attr("Number", "5000"))
            .message_attributes(FIRST_ID, attr("String", "first-copy"))
            .message_attributes(FIRST_SENT_AT, attr("Number", "1000"))
            .build();
        assert!(matches!(
            classify(&m, 4_999).unwrap(),
            Received::Early { not_before: 5_000 }
        ));
        match classify(&m, 5_000).unwrap() {
            Received::Due(d) => {
                assert_eq!(
                    (d.id.as_str(), d.sent_at_ms, d.receive_count),
                    ("first-copy", 1000, 1)
                )
            }
            Received::Early { .. } => panic!("due at its time"),
        }
        let plain = Message::builder()
            .message_id("plain")
            .receipt_handle("r")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .attributes(MessageSystemAttributeName::SentTimestamp, "7")
            .build();
        match classify(&plain, 0).unwrap() {
            Received::Due(d) => assert_eq!(
                (d.id.as_str(), d.sent_at_ms, d.receive_count),
                ("plain", 7, 3)
            ),
            Received::Early { .. } => panic!("no delay"),
        }
        let bare = Message::builder().message_id("bare").build();
        assert!(matches!(classify(&bare, 0), Err(QueueError::Backend(_))));
    }
}
