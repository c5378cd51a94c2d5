//! The AWS adapter set: [`DynamoStore`](store) for the `Store` port, [`SqsQueue`](queue) for the
//! `Queue` port, [`S3ObjectStore`](objects) for the `ObjectStore` port. Each passes the same port
//! contract suite (`relaycast_core::ports::contract`) as the embedded adapters, against moto's
//! server mode in the tests. The resources themselves (table, queues, bucket) are made by
//! `infra/relaycast.yaml`; [`provision`] makes the same ones for tests.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use relaycast_core::config::AwsSettings;

pub mod objects;
pub mod queue;
pub mod store;

#[cfg(feature = "moto")]
pub mod moto;

/// The SDK configuration of every client: the standard chain (environment, profile, the ECS or
/// Lambda role), with the region and endpoint of `settings` when they are set.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint.clone());
    }
    loader.load().await
}

/// Why the AWS adapters could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// A resource named by the settings is missing or unreachable.
    #[error("cannot open the AWS {what}: {reason}")]
    Open { what: &'static str, reason: String },
    /// A resource could not be created (tests and local development; deployments use the stack).
    #[error("cannot create the AWS {what}: {reason}")]
    Provision { what: &'static str, reason: String },
}

/// Opens the DynamoDB store, the SQS queues (dead-lettering after `max_receives`, as the stack's
/// redrive policies do) and the S3 object store that `settings` name.
pub async fn open_aws(
    settings: &AwsSettings,
    clock: std::sync::Arc<dyn relaycast_core::ports::Clock>,
    max_receives: u32,
) -> Result<relaycast_core::Ports, AwsError> {
    let _ = (settings, clock, max_receives);
    Err(AwsError::Open {
        what: "adapters",
        reason: "being written (issue 12)".into(),
    })
}
