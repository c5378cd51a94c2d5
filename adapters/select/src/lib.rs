//! The one place a host picks its adapters: [`open_ports`] reads [`Settings`] and opens the
//! embedded set (SQLite file and a directory in `data_dir`) when nothing else is configured, or the
//! AWS set (DynamoDB, SQS, S3) when `[aws]` is. Each set is a cargo feature, so that a Lambda
//! function built with `aws` alone links no SQLite, and asking a binary for a set it was built
//! without is an error that says so.

use std::sync::Arc;

use relaycast_core::config::Settings;
use relaycast_core::ports::{Clock, Ports};

/// Why the adapters could not be opened. Each message is one line naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The settings ask for an adapter set this binary was built without.
    #[error("this binary was built without the {0} adapters (cargo feature `{0}` of relaycast-adapters)")]
    NotBuilt(&'static str),
    /// The embedded adapters failed to open.
    #[cfg(feature = "embedded")]
    #[error(transparent)]
    Embedded(#[from] relaycast_embedded::EmbeddedError),
    /// The AWS adapters failed to open.
    #[cfg(feature = "aws")]
    #[error(transparent)]
    Aws(#[from] relaycast_aws::AwsError),
}

/// The adapters a process runs on.
#[derive(Clone)]
pub struct Opened {
    /// Every port, for handlers and workers.
    pub ports: Ports,
    /// The local object directory, which the host serves under `/objects/` (it checks the
    /// playback signatures); `None` on AWS, where playback URLs are presigned S3 URLs.
    #[cfg(feature = "embedded")]
    pub local_objects: Option<Arc<relaycast_embedded::DirObjectStore>>,
}

/// Which adapter set `settings` ask for.
pub fn backend_name(settings: &Settings) -> &'static str {
    if settings.aws.is_some() {
        "aws"
    } else {
        "embedded"
    }
}

/// Opens the adapter set `settings` name (see the crate documentation). The embedded set first
/// creates `data_dir` and proves it writable; the AWS set first proves that the stack's table,
/// queues and bucket exist, so that a long-lived process on a wrong stack stops at once, naming
/// what is missing.
pub async fn open_ports(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Opened, OpenError> {
    match &settings.aws {
        Some(aws) => open_aws(settings, aws, clock, true).await,
        None => open_embedded(settings, clock),
    }
}

/// [`open_ports`] for a Lambda function's init, which every cold start waits for: the AWS set's
/// clients are built and no round trip is made (a missing resource fails the first invocation
/// that needs it, with the service's error). The embedded set opens as in [`open_ports`].
pub async fn open_ports_for_cold_start(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<Opened, OpenError> {
    match &settings.aws {
        Some(aws) => open_aws(settings, aws, clock, false).await,
        None => open_embedded(settings, clock),
    }
}

#[cfg(feature = "aws")]
async fn open_aws(
    settings: &Settings,
    aws: &relaycast_core::config::AwsSettings,
    clock: Arc<dyn Clock>,
    check_existence: bool,
) -> Result<Opened, OpenError> {
    let checks = if check_existence {
        relaycast_aws::Checks::Existence
    } else {
        relaycast_aws::Checks::None
    };
    let ports = relaycast_aws::open_aws(aws, clock, settings.queue.max_receives, checks).await?;
    Ok(Opened {
        ports,
        #[cfg(feature = "embedded")]
        local_objects: None,
    })
}

#[cfg(not(feature = "aws"))]
async fn open_aws(
    _settings: &Settings,
    _aws: &relaycast_core::config::AwsSettings,
    _clock: Arc<dyn Clock>,
    _check_existence: bool,
) -> Result<Opened, OpenError> {
    Err(OpenError::NotBuilt("aws"))
}

#[cfg(feature = "embedded")]
fn open_embedded(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Opened, OpenError> {
    relaycast_embedded::prepare_data_dir(&settings.data_dir)?;
    let embedded = relaycast_embedded::open_embedded(settings, clock)?;
    Ok(Opened {
        ports: embedded.ports,
        local_objects: Some(embedded.objects),
    })
}

#[cfg(not(feature = "embedded"))]
fn open_embedded(_settings: &Settings, _clock: Arc<dyn Clock>) -> Result<Opened, OpenError> {
    Err(OpenError::NotBuilt("embedded"))
}
