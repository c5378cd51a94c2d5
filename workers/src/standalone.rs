//! Standalone worker processes (`relay`, `recorder`): each loads the same settings as
//! `relaycast up`, opens the embedded store and queue of the data directory (which a
//! `relaycast up --roles api,...` may share on the same machine), takes its jobs until SIGINT or
//! SIGTERM, then drains: its work is stopped (or handed over), re-queued and its leases
//! released, so another worker takes it up at once.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::recorder::worker::RecorderWorker;
use crate::relay::worker::RelayWorker;
use relaycast_adapters::{open_ports, OpenError};
use relaycast_core::config::{ConfigError, LogFormat, Settings};
use relaycast_core::ports::SystemClock;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Why the worker could not start or stopped with an error; each message is one line.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Adapters(#[from] OpenError),
    #[error("{0}")]
    Runtime(String),
}

/// Which worker a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    /// Relay jobs.
    Relay,
    /// Record jobs.
    Recorder,
}

impl WorkerKind {
    fn name(self) -> &'static str {
        match self {
            WorkerKind::Relay => "relay",
            WorkerKind::Recorder => "recorder",
        }
    }
}

/// Runs a worker of `kind` with the settings of `config` (and `RELAYCAST_*`) until a signal.
pub fn main(kind: WorkerKind, config: Option<&Path>) -> ExitCode {
    let settings = match Settings::load(config, std::env::vars()) {
        Ok(settings) => settings,
        Err(e) => return fail(kind, &e.into()),
    };
    init_logging(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                kind,
                &WorkerError::Runtime(format!("cannot start the async runtime: {e}")),
            )
        }
    };
    match runtime.block_on(run(kind, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(kind, &e),
    }
}

async fn run(kind: WorkerKind, settings: Settings) -> Result<(), WorkerError> {
    let name = kind.name();
    let opened = open_ports(&settings, Arc::new(SystemClock)).await?;
    let settings = Arc::new(settings);
    let stop_signal = shutdown_signal()?;
    let shutdown = CancellationToken::new();
    let mut running = match kind {
        WorkerKind::Relay => {
            let worker = RelayWorker::new(opened.ports.clone(), settings.clone(), shutdown.clone());
            tracing::info!(worker = %worker.worker_id, backend = relaycast_adapters::backend_name(&settings), "relay up");
            tokio::spawn(worker.run())
        }
        WorkerKind::Recorder => {
            let worker =
                RecorderWorker::new(opened.ports.clone(), settings.clone(), shutdown.clone());
            tracing::info!(worker = %worker.worker_id, backend = relaycast_adapters::backend_name(&settings), "recorder up");
            tokio::spawn(worker.run())
        }
    };

    tokio::select! {
        _ = stop_signal => {}
        joined = &mut running => {
            // The worker only returns once told to stop: anything else is a failure.
            return Err(WorkerError::Runtime(match joined {
                Ok(()) => format!("the {name} worker stopped unexpectedly"),
                Err(e) => format!("the {name} worker failed: {e}"),
            }));
        }
    }

    tracing::info!("{name} draining");
    shutdown.cancel();
    let drain = Duration::from_millis(settings.timing.drain_timeout_ms);
    match tokio::time::timeout(drain, &mut running).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(WorkerError::Runtime(format!(
                "the {name} worker failed while draining: {e}"
            )))
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = settings.timing.drain_timeout_ms,
                "drain timed out; aborting"
            );
            running.abort();
        }
    }
    tracing::info!("{name} stopped");
    Ok(())
}

fn fail(kind: WorkerKind, e: &WorkerError) -> ExitCode {
    eprintln!("{}: error: {e}", kind.name());
    ExitCode::from(match e {
        WorkerError::Config(_) => 2,
        _ => 1,
    })
}

/// Logs to stderr as `relaycast up` does: `log_filter` and `log_format` from the settings.
fn init_logging(settings: &Settings) {
    let filter =
        EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// SIGINT or SIGTERM, listened for from the moment this is called (not from the first poll), so
/// a signal sent once the worker says it is up is never missed.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, WorkerError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| WorkerError::Runtime(format!("cannot listen for {name}: {e}")))
        };
        let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
        let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
