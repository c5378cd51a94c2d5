//! The notifier: delivers the callback outbox to customer endpoints, at least once, with the
//! seeds' retry schedule (HTTP POST of JSON; only a 200 within the timeout counts).

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use relaycast_core::app::callbacks::load_template;
use relaycast_core::app::outbox::{queue_pending, OutboxError};
use relaycast_core::domain::auth::{Account, SecretKey};
use relaycast_core::domain::callbacks::sign::{
    css_sign, relaycast_signature, CSS_SIGN_VALIDITY_SECS, EVENT_ID_HEADER, SIGNATURE_HEADER,
};
use relaycast_core::domain::outbox::{
    DeliveryAttempt, DeliveryState, OutboxEntry, Signing, CALLBACK_QUEUE,
};
use relaycast_core::domain::recording::Recording;
use relaycast_core::domain::targets::check_url_host;
use relaycast_core::guarded_dns::GuardedResolver;
use relaycast_core::ports::{
    queue, Condition, QueueError, ReceivedMessage, StoreError, TypedStore,
};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// Why a notifier step failed (the loop logs it and carries on).
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// The outbox sweep failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The guarded HTTP client could not be built.
    #[error("cannot build the callback HTTP client: {0}")]
    Client(String),
}

/// What happened to one delivery message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered 200.
    Delivered,
    /// It failed; another attempt is queued after the policy's interval.
    Retrying,
    /// It failed and no retry is left.
    GaveUp,
    /// The entry was already finished (a duplicate message) or is gone.
    Skipped,
    /// An earlier notice of the same task is not finished yet; tried again shortly.
    Waiting,
    /// Its endpoint has as many deliveries in flight as it may; tried again shortly.
    EndpointBusy,
}

/// What becomes of a delivery message once [`Notifier::attempt`] handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Nothing more to do for this entry (delivered, given up, finished already): delete it.
    Done,
    /// The entry needs another look after this wait (a retry on the seed's schedule, a
    /// predecessor still in flight, a busy endpoint).
    Later(Duration),
}

/// Entries the outbox sweep queues per look; a full batch is followed by the next at once.
pub const SWEEP_BATCH: usize = 500;

/// How long a notice waits for its predecessor before looking again.
const ORDER_WAIT: Duration = Duration::from_secs(1);

/// Deliveries in flight per endpoint (scheme, host, port), capped so that one dead or slow
/// receiver holds at most its own share of the notifier. A notice whose endpoint is at its cap
/// goes back to the queue for about as long as that endpoint's deliveries take: briefly for a
/// healthy endpoint, for half the callback timeout for one whose last attempt failed, so a dead
/// receiver's backlog does not churn the queue.
#[derive(Clone)]
struct EndpointSlots {
    cap: usize,
    timeout_ms: u64,
    slots: Arc<Mutex<HashMap<String, Endpoint>>>,
}

/// One endpoint's slots and how its last attempt went.
#[derive(Clone)]
struct Endpoint {
    slots: Arc<tokio::sync::Semaphore>,
    last_latency_ms: Arc<std::sync::atomic::AtomicU64>,
    last_failed: Arc<std::sync::atomic::AtomicBool>,
}

/// The shortest wait of a notice for a busy endpoint, ms.
const BUSY_WAIT_MIN_MS: u64 = 50;

fn endpoint_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_string())
}

impl EndpointSlots {
    fn endpoint(&self, url: &str) -> Endpoint {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Forget endpoints with nothing in flight so the map stays small.
        if slots.len() > 10_000 {
            let cap = self.cap;
            slots.retain(|_, e| e.slots.available_permits() < cap);
        }
        slots
            .entry(endpoint_of(url))
            .or_insert_with(|| Endpoint {
                slots: Arc::new(tokio::sync::Semaphore::new(self.cap)),
                last_latency_ms: Default::default(),
                last_failed: Default::default(),
            })
            .clone()
    }

    /// How long a notice waits before trying a busy endpoint again, ms (with jitter).
    fn busy_wait_ms(&self, endpoint: &Endpoint) -> u64 {
        use std::sync::atomic::Ordering;
        let base = if endpoint.last_failed.load(Ordering::Relaxed) {
            self.timeout_ms / 2
        } else {
            endpoint
                .last_latency_ms
                .load(Ordering::Relaxed)
                .saturating_mul(2)
        }
        .max(BUSY_WAIT_MIN_MS);
        base + rand::random::<u64>() % base
    }
}

impl Endpoint {
    fn record(&self, attempt: &Attempt) {
        use std::sync::atomic::Ordering;
        self.last_latency_ms
            .store(attempt.latency_ms, Ordering::Relaxed);
        self.last_failed
            .store(attempt.error.is_some(), Ordering::Relaxed);
    }
}

/// What one attempt came to.
struct Attempt {
    status: Option<u16>,
    error: Option<String>,
    latency_ms: u64,
}

/// The outbox id of the notice before `id` in its stream (`{account}:{stream}:{seq:020}`).
fn previous_entry_id(id: &str) -> Option<String> {
    let (stream, seq) = id.rsplit_once(':')?;
    let seq: u64 = seq.parse().ok()?;
    let previous = seq.checked_sub(1)?;
    Some(format!("{stream}:{previous:020}"))
}

/// Deletes the messages the delivery loop is done with, in batches (one `ack_batch` for the
/// receipts that gathered while the previous batch was deleted), from a task of its own. A
/// receipt lost in a crash only brings its message back after the visibility timeout, and a
/// finished entry's message is skipped.
#[derive(Clone)]
struct Acks {
    receipts: tokio::sync::mpsc::UnboundedSender<String>,
    stop: CancellationToken,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// Most receipts deleted in one batch.
const ACK_BATCH: usize = 100;

impl Acks {
    fn start(queue: Arc<dyn relaycast_core::ports::Queue>) -> Self {
        let (receipts, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(ACK_BATCH);
            loop {
                let more = tokio::select! {
                    n = rx.recv_many(&mut batch, ACK_BATCH) => n > 0,
                    // What is submitted by now is deleted; later receipts come back.
                    _ = stopped.cancelled() => {
                        while let Ok(receipt) = rx.try_recv() {
                            batch.push(receipt);
                        }
                        false
                    }
                };
                for chunk in batch.chunks(ACK_BATCH) {
                    for result in queue.ack_batch(CALLBACK_QUEUE, chunk).await {
                        match result {
                            Ok(()) => {}
                            // Its visibility ran out and it was received again: that delivery
                            // settles it.
                            Err(QueueError::StaleReceipt(_)) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "callback message not deleted; it comes back")
                            }
                        }
                    }
                }
                batch.clear();
                if !more {
                    break;
                }
            }
        });
        Self {
            receipts,
            stop,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    fn submit(&self, receipt: String) {
        // Refused only once stopped: the message comes back and is skipped.
        let _ = self.receipts.send(receipt);
    }

    /// Deletes what was submitted so far, then stops.
    async fn finish(self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Delivers the outbox.
#[derive(Clone)]
pub struct Notifier {
    ctx: Context,
    client: reqwest::Client,
    endpoints: EndpointSlots,
}

impl Notifier {
    /// A notifier whose HTTP client refuses internal addresses unless the operator allows them,
    /// gives up after the callback timeout and follows no redirect. Fails when that client
    /// cannot be built: a notifier without those guards must not run.
    pub fn new(ctx: Context) -> Result<Self, NotifierError> {
        let allow_private = ctx.settings.allow_private_targets;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(
                ctx.settings.timing.callback_timeout_ms,
            ))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!("relaycast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifierError::Client(e.to_string()))?;
        let endpoints = EndpointSlots {
            cap: ctx.settings.callbacks.endpoint_concurrency.max(1),
            timeout_ms: ctx.settings.timing.callback_timeout_ms,
            slots: Default::default(),
        };
        Ok(Self {
            ctx,
            client,
            endpoints,
        })
    }

    /// The context it delivers with.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Runs the sweep and the delivery loop until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let sweep_every =
            Duration::from_millis(self.ctx.settings.timing.scheduler_tick_ms.max(100));
        let sweeper = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // Producers queue their own entries; the sweep only picks up what a crash left
                // pending past the grace, so it needs no wake-up beyond its tick.
                loop {
                    match queue_pending(&this.ctx.ports, SWEEP_BATCH).await {
                        Ok(n) if n == SWEEP_BATCH => continue,
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "outbox sweep failed"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(sweep_every) => {},
                    }
                }
            })
        };
        // Deliveries run concurrently, up to a bound, and the loop never waits for a batch to
        // finish: a customer endpoint that stalls for its whole timeout holds up only its own
        // notices. Order within a task is kept by `deliver` (an entry waits for its predecessor).
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.ctx.settings.callbacks.concurrency.max(1),
        ));
        let acks = Acks::start(self.ctx.ports.queue.clone());
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_many_owned(1) => match p { Ok(p) => p, Err(_) => break },
            };
            drop(permit);
            let free = slots.available_permits().clamp(1, 10);
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                batch = self.receive(free) => batch,
            };
            match batch {
                Ok(messages) => {
                    for message in messages {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            break;
                        };
                        let (this, acks) = (self.clone(), acks.clone());
                        tokio::spawn(async move {
                            match this.attempt_and_resend(&message).await {
                                Ok(_) => acks.submit(message.receipt),
                                // Not deleted: it comes back after its visibility timeout.
                                Err(e) => {
                                    tracing::warn!(error = %e, "callback delivery step failed")
                                }
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "callbacks queue receive failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                    }
                }
            }
        }
        let _ = sweeper.await;
        acks.finish().await;
    }

    async fn receive(&self, max: usize) -> Result<Vec<ReceivedMessage>, QueueError> {
        // The message stays hidden for the whole attempt plus a margin, so a slow endpoint is
        // never sent the same notice twice at once.
        let timeout = self.ctx.settings.timing.callback_timeout_ms;
        let visibility = Duration::from_millis(timeout + timeout.min(10_000));
        self.ctx
            .ports
            .queue
            .receive(CALLBACK_QUEUE, max, visibility, queue::MAX_WAIT)
            .await
    }

    /// One attempt for one delivery message received from the queue port, which it then
    /// settles there: deleted when done with, or sent again with the wait and deleted.
    pub async fn deliver(&self, message: ReceivedMessage) -> Result<Outcome, NotifierError> {
        let outcome = self.attempt_and_resend(&message).await?;
        self.ctx
            .ports
            .queue
            .ack(CALLBACK_QUEUE, &message.receipt)
            .await?;
        Ok(outcome)
    }

    /// [`Notifier::attempt`], then the message sent again with the wait when it needs another
    /// look; what is left is deleting it.
    async fn attempt_and_resend(
        &self,
        message: &ReceivedMessage,
    ) -> Result<Outcome, NotifierError> {
        let (outcome, settle) = self.attempt(message).await?;
        if let Settle::Later(wait) = settle {
            // Sent before the delete: a crash between the two repeats an attempt, never loses one.
            self.ctx
                .ports
                .queue
                .send(CALLBACK_QUEUE, &message.body, wait)
                .await?;
        }
        Ok(outcome)
    }

    /// One attempt for one delivery message, leaving the message itself alone: the caller
    /// settles it as [`Settle`] says (the queue loop through the queue port, a Lambda host
    /// through its batch response).
    #[tracing::instrument(name = "deliver_callback", skip_all, fields(entry = %message.body, receive = message.receive_count))]
    pub async fn attempt(
        &self,
        message: &ReceivedMessage,
    ) -> Result<(Outcome, Settle), NotifierError> {
        let ports = &self.ctx.ports;
        let Some(stored) = ports.store.load::<OutboxEntry>(&message.body).await? else {
            return Ok((Outcome::Skipped, Settle::Done));
        };
        if matches!(
            stored.value.state,
            DeliveryState::Delivered | DeliveryState::Failed
        ) {
            return Ok((Outcome::Skipped, Settle::Done));
        }
        // Notices of one task go out in the order they happened: an entry whose predecessor is
        // still being delivered (or retried) waits for it.
        if let Some(previous) = previous_entry_id(&stored.value.id) {
            if let Some(prev) = ports.store.load::<OutboxEntry>(&previous).await? {
                if matches!(
                    prev.value.state,
                    DeliveryState::Pending | DeliveryState::Queued
                ) {
                    return Ok((Outcome::Waiting, Settle::Later(ORDER_WAIT)));
                }
            }
        }
        let endpoint = self.endpoints.endpoint(&stored.value.url);
        let Ok(_endpoint_slot) = endpoint.slots.clone().try_acquire_owned() else {
            let wait = self.endpoints.busy_wait_ms(&endpoint);
            return Ok((
                Outcome::EndpointBusy,
                Settle::Later(Duration::from_millis(wait)),
            ));
        };
        let started_ms = ports.clock.now_ms();
        let attempt = self.post(&stored.value).await;
        endpoint.record(&attempt);
        let result = attempt.error.clone().map_or(Ok(()), Err);
        let logged = DeliveryAttempt {
            at_ms: started_ms,
            status: attempt.status,
            latency_ms: attempt.latency_ms,
            error: attempt.error.clone(),
        };
        // Record the attempt on the latest version of the entry: the producer may have marked
        // it queued while we were posting, and losing that race must not leave it "queued"
        // for ever (its successors wait for it).
        let mut current = stored;
        let (entry, retry_in) = loop {
            let mut entry = current.value.clone();
            entry.log_attempt(logged.clone());
            let now = ports.clock.now_ms();
            let retry_in = match &result {
                Ok(()) => {
                    entry.record_delivery(now);
                    None
                }
                Err(error) => entry.record_failure(error.clone(), now),
            };
            match ports
                .store
                .save(&entry, Condition::Version(current.version))
                .await
            {
                Ok(_) => break (entry, retry_in),
                Err(StoreError::ConditionFailed { .. }) => {
                    match ports.store.load::<OutboxEntry>(&entry.id).await? {
                        Some(latest)
                            if matches!(
                                latest.value.state,
                                DeliveryState::Pending | DeliveryState::Queued
                            ) =>
                        {
                            current = latest
                        }
                        // A duplicate message's delivery finished it first.
                        _ => return Ok((Outcome::Skipped, Settle::Done)),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(match (&result, retry_in) {
            (Ok(()), _) => {
                metrics::counter!("relaycast_callbacks_total", "result" => "delivered")
                    .increment(1);
                tracing::info!(url = %entry.url, attempts = entry.attempts, "callback delivered");
                (Outcome::Delivered, Settle::Done)
            }
            (Err(error), Some(delay_ms)) => {
                metrics::counter!("relaycast_callbacks_total", "result" => "retry").increment(1);
                tracing::warn!(url = %entry.url, attempts = entry.attempts, %error, delay_ms, "callback failed; will retry");
                (
                    Outcome::Retrying,
                    Settle::Later(Duration::from_millis(delay_ms)),
                )
            }
            (Err(error), None) => {
                metrics::counter!("relaycast_callbacks_total", "result" => "failed").increment(1);
                tracing::error!(url = %entry.url, attempts = entry.attempts, %error, "callback failed; retries used up");
                (Outcome::GaveUp, Settle::Done)
            }
        })
    }

    /// The keys that sign `entry`: the header's, and CSS's `sign` when the body takes one.
    async fn signing_keys(
        &self,
        entry: &OutboxEntry,
    ) -> Result<(Option<SecretKey>, Option<SecretKey>), String> {
        let store = &self.ctx.ports.store;
        let account_key = || async {
            store
                .load::<Account>(&entry.account)
                .await
                .map(|a| a.map(|a| a.value.secret_key))
                .map_err(|e| e.to_string())
        };
        match &entry.signing {
            Signing::Account => Ok((account_key().await?, None)),
            Signing::CallbackTemplate { template, css } => {
                let key = load_template(&self.ctx.ports, &self.ctx.config_cache, template)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|t| t.callback_key);
                match key {
                    Some(k) => Ok((Some(k.clone()), css.then_some(k))),
                    None => Ok((account_key().await?, None)),
                }
            }
            Signing::RecordingKey { recording } => {
                let key = self
                    .ctx
                    .ports
                    .store
                    .load::<Recording>(recording)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|r| r.value.spec.callback_key);
                match key {
                    Some(k) => Ok((Some(k.clone()), Some(k))),
                    None => Ok((account_key().await?, None)),
                }
            }
        }
    }

    /// The exact bytes to send: the stored body, with CSS's `t` (an expiry time, so fresh at
    /// every attempt) and `sign` when the entry is a CSS-form event.
    fn body_for(entry: &OutboxEntry, css_key: Option<&SecretKey>, now_secs: i64) -> String {
        let Some(key) = css_key else {
            return entry.body.clone();
        };
        match serde_json::from_str::<serde_json::Value>(&entry.body) {
            Ok(serde_json::Value::Object(mut map)) => {
                let t = now_secs + CSS_SIGN_VALIDITY_SECS;
                map.insert("t".into(), serde_json::json!(t));
                map.insert("sign".into(), serde_json::json!(css_sign(key, t)));
                serde_json::Value::Object(map).to_string()
            }
            _ => entry.body.clone(),
        }
    }

    async fn post(&self, entry: &OutboxEntry) -> Attempt {
        let started = Instant::now();
        let fail = |status: Option<u16>, error: String| Attempt {
            status,
            error: Some(error),
            latency_ms: started.elapsed().as_millis() as u64,
        };
        let url = match url::Url::parse(&entry.url) {
            Ok(u) => u,
            Err(e) => return fail(None, format!("invalid callback url: {e}")),
        };
        if let Err(e) = check_url_host(&url, self.ctx.settings.allow_private_targets) {
            return fail(None, e.to_string());
        }
        let (header_key, css_key) = match self.signing_keys(entry).await {
            Ok(keys) => keys,
            Err(e) => return fail(None, format!("signing key unavailable: {e}")),
        };
        let now_secs = self.ctx.ports.clock.now_ms().div_euclid(1000);
        let body = Self::body_for(entry, css_key.as_ref(), now_secs);
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, entry.stable_event_id());
        if let Some(key) = &header_key {
            request = request.header(
                SIGNATURE_HEADER,
                relaycast_signature(key, now_secs, body.as_bytes()),
            );
        }
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let reason = if e.is_timeout() {
                    "no answer within the timeout".to_string()
                } else {
                    e.to_string()
                };
                return fail(None, reason);
            }
        };
        let status = response.status().as_u16();
        if response.status() == reqwest::StatusCode::OK {
            Attempt {
                status: Some(status),
                error: None,
                latency_ms: started.elapsed().as_millis() as u64,
            }
        } else {
            fail(Some(status), format!("endpoint answered HTTP {status}"))
        }
    }
}
