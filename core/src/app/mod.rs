//! Use cases that combine the domain with the ports; shared by every function and worker so
//! each rule is written once. Errors of this layer are [`AppError`]; the edges map them to the
//! wire (HTTP answers, queue acks).

pub mod auth;
pub mod callbacks;
pub mod media;
pub mod outbox;
pub mod record_templates;
pub mod recording;
pub mod relay;
#[cfg(any(test, feature = "contract-tests"))]
pub mod scenarios;

use crate::domain::RequestError;
use crate::ports::{QueueError, StoreError};

/// What can go wrong in a use case.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request breaks a rule; the message is the seed's.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Concurrent writers kept winning a compare-and-set.
    #[error("too much contention on {0}")]
    Contention(String),
    /// A worker wrote with the fencing token of a lease another worker has taken over since.
    #[error("{key} is run under lease token {current} now; a write with token {token} is refused")]
    StaleHolder {
        key: String,
        token: u64,
        current: u64,
    },
}

impl From<outbox::OutboxError> for AppError {
    fn from(e: outbox::OutboxError) -> Self {
        match e {
            outbox::OutboxError::Store(e) => Self::Store(e),
            outbox::OutboxError::Queue(e) => Self::Queue(e),
        }
    }
}
