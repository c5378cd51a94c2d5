//! The AWS adapter set: [`DynamoStore`](store) for the `Store` port, [`SqsQueue`](queue) for the
//! `Queue` port, [`S3ObjectStore`](objects) for the `ObjectStore` port. Each passes the same port
//! contract suite (`relaycast_core::ports::contract`) as the embedded adapters, against moto's
//! server mode in the tests. The resources themselves (table, queues, bucket) are made by
//! `infra/relaycast.yaml`; `moto::provision` (feature `moto`) makes the same ones for tests.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use relaycast_core::config::AwsSettings;
use relaycast_core::ports::queue::QUEUES;

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

/// What [`open_aws`] proves before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// Every resource is looked up first (a few round trips, taken together), so that a long-lived
    /// process (`relaycast up`, a worker) on a wrong or unfinished stack stops at once, naming what
    /// is missing; a redrive policy that counts other than the settings' `max_receives` is logged.
    Existence,
    /// No round trip: the clients are built and nothing else. For a Lambda function, whose init
    /// every cold start waits for; a missing resource fails the first call that needs it, with the
    /// service's own error.
    None,
}

/// Opens the DynamoDB store, the SQS queues and the S3 object store that `settings` name. With
/// [`Checks::Existence`] it first checks that the table, every queue of [`QUEUES`] with its
/// dead-letter queue, and the bucket exist, and answers [`AwsError::Open`] naming the first one
/// missing. Expiry in the store follows `clock`; SQS keeps its own time. Dead-lettering is the
/// queues' redrive policy (the stack's, or [`queue::create_queues`]'s).
pub async fn open_aws(
    settings: &AwsSettings,
    clock: std::sync::Arc<dyn relaycast_core::ports::Clock>,
    max_receives: u32,
    checks: Checks,
) -> Result<relaycast_core::Ports, AwsError> {
    if settings.table.is_empty() {
        return Err(AwsError::Open {
            what: "DynamoDB table",
            reason: "no table name in the [aws] settings".into(),
        });
    }
    if settings.bucket.is_empty() {
        return Err(AwsError::Open {
            what: "S3 bucket",
            reason: "no bucket name in the [aws] settings".into(),
        });
    }
    let sdk = sdk_config(settings).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let queue = queue::SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        settings.queue_prefix.clone(),
    );
    let objects = objects::S3ObjectStore::new(
        objects::s3_client_from(&sdk, settings),
        settings.bucket.clone(),
    );
    if checks == Checks::Existence {
        check_resources(settings, &dynamodb, &queue, &objects, max_receives).await?;
    }
    let store = store::DynamoStore::new(dynamodb, settings.table.clone(), clock.clone());
    Ok(relaycast_core::Ports {
        store: std::sync::Arc::new(store),
        queue: std::sync::Arc::new(queue),
        objects: std::sync::Arc::new(objects),
        clock,
    })
}

/// [`Checks::Existence`]: the table, the queues with their dead-letter queues, and the bucket.
async fn check_resources(
    settings: &AwsSettings,
    dynamodb: &aws_sdk_dynamodb::Client,
    queue: &queue::SqsQueue,
    objects: &objects::S3ObjectStore,
    max_receives: u32,
) -> Result<(), AwsError> {
    // The checks are round trips of their own; taken together a start waits for the slowest
    // one, not for their sum. Their errors are reported in a fixed order
    // (table, queues, bucket), so what is named does not depend on which answered first.
    let table = async {
        dynamodb
            .describe_table()
            .table_name(&settings.table)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::Open {
                what: "DynamoDB table",
                reason: match e.as_service_error() {
                    Some(aws_sdk_dynamodb::operation::describe_table::DescribeTableError::ResourceNotFoundException(_)) => {
                        format!("{} does not exist (made by infra/relaycast.yaml)", settings.table)
                    }
                    _ => format!(
                        "{}: {}",
                        settings.table,
                        aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                    ),
                },
            })
    };
    let queues = async {
        queue.check_queues(QUEUES).await?;
        queue.warn_on_redrive_mismatch(QUEUES, max_receives).await;
        Ok(())
    };
    let (table, queues, bucket) = tokio::join!(table, queues, objects.check_bucket());
    table.and(queues).and(bucket)
}
