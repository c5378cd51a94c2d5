//! The durable callback outbox. Every notice relaycast sends to a customer endpoint is first
//! stored here, in the same store transaction as the state change it reports, so a crash can
//! never lose it. The notifier then delivers it at least once with the seeds' retry schedule.
//!
//! Life of an entry: `pending` (stored) → `queued` (a delivery message is in the callbacks
//! queue) → `delivered` (the endpoint answered 200) or `failed` (retries used up). A crash
//! between queueing and marking `queued` only sends a duplicate message, which the notifier
//! drops because it re-reads the entry before each attempt.

use serde::{Deserialize, Serialize};

use crate::ports::{Entity, IndexKeys, Kind};

/// The queue that carries delivery attempts.
pub const CALLBACK_QUEUE: &str = "callbacks";

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Stored; no delivery message yet.
    Pending,
    /// A delivery message is queued or being worked on.
    Queued,
    /// The endpoint accepted it.
    Delivered,
    /// Every retry failed.
    Failed,
}

impl DeliveryState {
    /// The status index value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// How often and how many times a failed delivery is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Wait between attempts, ms.
    pub interval_ms: u64,
    /// Retries after the first attempt.
    pub retries: u32,
}

/// Which key signs a notice: the `X-Relaycast-Signature` header, and for CSS-form events also
/// the payload's `sign`/`t`, which are computed at each attempt because `t` is an expiry time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Signing {
    /// The account's secret key (relay task callbacks).
    #[default]
    Account,
    /// The `CallbackKey` of a callback template (store key `template`); the account's key
    /// signs the header when the template has none.
    CallbackTemplate {
        /// The template's store key.
        template: String,
        /// Add CSS's `t` and `sign` to the JSON body.
        css: bool,
    },
    /// The `CallbackKey` of the recording template a recording (store key `recording`) was
    /// started with: record notices to its `RecordNotifyUrl`, CSS-form; the account's key
    /// signs the header when the template had none.
    RecordingKey {
        /// The recording's store key.
        recording: String,
    },
}

/// One delivery attempt, for the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// When it started, Unix ms.
    pub at_ms: i64,
    /// The endpoint's HTTP status, when it answered.
    pub status: Option<u16>,
    /// How long it took, ms.
    pub latency_ms: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Attempts kept per entry (the last ones).
pub const MAX_LOGGED_ATTEMPTS: usize = 20;

/// One notice to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// `{account}:{stream}:{seq:020}`: entries of one stream (a task) sort in the order their
    /// state changes happened.
    pub id: String,
    /// The account the notice belongs to (its key signs the body).
    pub account: String,
    /// The customer endpoint.
    pub url: String,
    /// The exact JSON body to POST.
    pub body: String,
    /// The retry schedule.
    pub policy: RetryPolicy,
    /// Attempts made so far.
    pub attempts: u32,
    /// Where it is in its life.
    pub state: DeliveryState,
    /// When it was stored, Unix ms.
    pub created_ms: i64,
    /// When it was delivered or given up, Unix ms.
    pub finished_ms: Option<i64>,
    /// The last failure, for operators.
    pub last_error: Option<String>,
    /// The stable id receivers de-duplicate on (`X-Relaycast-Event-Id`); the entry id when the
    /// notice is not a stream event.
    #[serde(default)]
    pub event_id: Option<String>,
    /// What the event was (`publish`, `relay_task`, ...), for listings.
    #[serde(default)]
    pub event_kind: Option<String>,
    /// Which key signs it.
    #[serde(default)]
    pub signing: Signing,
    /// The last attempts.
    #[serde(default)]
    pub attempt_log: Vec<DeliveryAttempt>,
}

impl OutboxEntry {
    /// A new pending entry.
    pub fn new(
        account: &str,
        stream: &str,
        seq: u64,
        url: &str,
        body: String,
        policy: RetryPolicy,
        now_ms: i64,
    ) -> Self {
        Self {
            id: format!("{account}:{stream}:{seq:020}"),
            account: account.into(),
            url: url.into(),
            body,
            policy,
            attempts: 0,
            state: DeliveryState::Pending,
            created_ms: now_ms,
            finished_ms: None,
            last_error: None,
            event_id: None,
            event_kind: None,
            signing: Signing::Account,
            attempt_log: Vec::new(),
        }
    }

    /// The status index value of `account`'s dead letters.
    pub fn dead_letter_index(account: &str) -> String {
        format!("failed:{account}")
    }

    /// The id receivers de-duplicate on.
    pub fn stable_event_id(&self) -> &str {
        self.event_id.as_deref().unwrap_or(&self.id)
    }

    /// Adds an attempt to the log, keeping the last [`MAX_LOGGED_ATTEMPTS`].
    pub fn log_attempt(&mut self, attempt: DeliveryAttempt) {
        self.attempt_log.push(attempt);
        if self.attempt_log.len() > MAX_LOGGED_ATTEMPTS {
            self.attempt_log.remove(0);
        }
    }

    /// Sends a dead letter (or a delivered notice) again: back to pending with a fresh count of
    /// attempts; the log is kept.
    pub fn redrive(&mut self) {
        self.state = DeliveryState::Pending;
        self.attempts = 0;
        self.finished_ms = None;
    }

    /// The entry as the delivery log and dead-letter listings show it.
    pub fn to_wire(&self) -> serde_json::Value {
        serde_json::json!({
            "Id": self.id,
            "EventId": self.stable_event_id(),
            "EventKind": self.event_kind,
            "Url": self.url,
            "State": self.state.as_str(),
            "Attempts": self.attempts,
            "CreatedMs": self.created_ms,
            "FinishedMs": self.finished_ms,
            "LastError": self.last_error,
            "AttemptLog": self.attempt_log.iter().map(|a| serde_json::json!({
                "AtMs": a.at_ms, "Status": a.status, "LatencyMs": a.latency_ms, "Error": a.error,
            })).collect::<Vec<_>>(),
        })
    }

    /// Records a failed attempt; returns the delay before the next one, or `None` when the
    /// retries are used up (the entry is then `failed`).
    pub fn record_failure(&mut self, error: String, now_ms: i64) -> Option<u64> {
        self.attempts += 1;
        self.last_error = Some(error);
        if self.attempts > self.policy.retries {
            self.state = DeliveryState::Failed;
            self.finished_ms = Some(now_ms);
            None
        } else {
            Some(self.policy.interval_ms)
        }
    }

    /// Records the successful attempt.
    pub fn record_delivery(&mut self, now_ms: i64) {
        self.attempts += 1;
        self.state = DeliveryState::Delivered;
        self.finished_ms = Some(now_ms);
        self.last_error = None;
    }
}

impl Entity for OutboxEntry {
    const KIND: Kind = Kind("outbox");

    fn key(&self) -> String {
        self.id.clone()
    }

    // Dead letters are indexed per account, so listing an account's is a look-up, not a scan
    // of everybody's.
    fn index(&self) -> IndexKeys {
        let status = match self.state {
            DeliveryState::Failed => Self::dead_letter_index(&self.account),
            state => state.as_str().into(),
        };
        IndexKeys {
            account: Some(self.account.clone()),
            status: Some(status),
            time_ms: Some(self.created_ms),
        }
    }

    // Delivered entries are kept a week for the delivery log, dead letters a month for a
    // redrive; then they expire.
    fn expires_at_ms(&self) -> Option<i64> {
        let keep = if self.state == DeliveryState::Failed {
            30
        } else {
            7
        };
        self.finished_ms.map(|t| t + keep * 24 * 3_600_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_then_fails() {
        let policy = RetryPolicy {
            interval_ms: 120_000,
            retries: 2,
        };
        let mut e = OutboxEntry::new("acme", "t1", 7, "http://x/cb", "{}".into(), policy, 0);
        assert_eq!(e.id, "acme:t1:00000000000000000007");
        assert_eq!(e.record_failure("503".into(), 1), Some(120_000));
        assert_eq!(e.record_failure("503".into(), 2), Some(120_000));
        assert_eq!(e.record_failure("503".into(), 3), None);
        assert_eq!(e.state, DeliveryState::Failed);
        assert_eq!(e.attempts, 3);
    }
}
