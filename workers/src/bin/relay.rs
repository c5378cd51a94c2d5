//! `relay`: a standalone relay worker process. It loads the same settings as `relaycast up`, opens
//! the embedded store and queue of the data directory (which a `relaycast up --roles api,...`
//! may share on the same machine), takes relay jobs until SIGINT or SIGTERM, then drains: its
//! tasks are stopped, re-queued and their leases released, so another worker takes them up at
//! once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use relaycast_core::adapters::{open_embedded, prepare_data_dir, EmbeddedError};
use relaycast_core::config::{ConfigError, LogFormat, Settings};
use relaycast_core::ports::SystemClock;
use relaycast_workers::relay::worker::RelayWorker;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// A relaycast relay worker on the embedded store and queue of a data directory.
#[derive(Parser)]
#[command(name = "relay", version, about, long_about = None)]
struct Cli {
    /// TOML config file, the same as `relaycast up --config`. Settings not in it take their
    /// defaults; RELAYCAST_* environment variables override it (RELAYCAST_DATA_DIR, …).
    #[arg(long, env = "RELAYCAST_CONFIG")]
    config: Option<PathBuf>,
}

/// Why the worker could not start or stopped with an error; each message is one line.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("{0}")]
    Runtime(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref(), std::env::vars()) {
        Ok(settings) => settings,
        Err(e) => return fail(&e.into()),
    };
    init_logging(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&RelayError::Runtime(format!("cannot start the async runtime: {e}"))),
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(settings: Settings) -> Result<(), RelayError> {
    prepare_data_dir(&settings.data_dir)?;
    let embedded = open_embedded(&settings, Arc::new(SystemClock))?;
    let settings = Arc::new(settings);
    let stop_signal = shutdown_signal()?;
    let shutdown = CancellationToken::new();
    let worker = RelayWorker::new(embedded.ports, settings.clone(), shutdown.clone());
    tracing::info!(worker = %worker.worker_id, data_dir = %settings.data_dir.display(), "relay up");
    let mut running = tokio::spawn(worker.run());

    tokio::select! {
        _ = stop_signal => {}
        joined = &mut running => {
            // The worker only returns once told to stop: anything else is a failure.
            return Err(RelayError::Runtime(match joined {
                Ok(()) => "the relay worker stopped unexpectedly".into(),
                Err(e) => format!("the relay worker failed: {e}"),
            }));
        }
    }

    tracing::info!("relay draining");
    shutdown.cancel();
    let drain = Duration::from_millis(settings.timing.drain_timeout_ms);
    match tokio::time::timeout(drain, &mut running).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(RelayError::Runtime(format!("the relay worker failed while draining: {e}"))),
        Err(_) => {
            tracing::warn!(timeout_ms = settings.timing.drain_timeout_ms, "drain timed out; aborting");
            running.abort();
        }
    }
    tracing::info!("relay stopped");
    Ok(())
}

fn fail(e: &RelayError) -> ExitCode {
    eprintln!("relay: error: {e}");
    ExitCode::from(match e {
        RelayError::Config(_) => 2,
        _ => 1,
    })
}

/// Logs to stderr as `relaycast up` does: `log_filter` and `log_format` from the settings.
fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// SIGINT or SIGTERM, listened for from the moment this is called (not from the first poll), so
/// a signal sent once the worker says it is up is never missed.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, RelayError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| RelayError::Runtime(format!("cannot listen for {name}: {e}")))
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
