//! The `relaycast` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use relaycast::{Host, HostError};
use relaycast_core::config::Settings;
use relaycast_core::ports::SystemClock;

/// Self-hostable live-stream relay, event-callback and cloud-recording service.
#[derive(Parser)]
#[command(name = "relaycast", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service on this machine: HTTP API, background loops and workers, with the
    /// embedded SQLite store and queue and a local object directory.
    Up {
        /// TOML config file. Settings not in it take their defaults; RELAYCAST_* environment
        /// variables override it (RELAYCAST_HTTP_ADDR, RELAYCAST_DATA_DIR, …).
        #[arg(long, env = "RELAYCAST_CONFIG")]
        config: Option<PathBuf>,
        /// Parts to run, comma-separated: api, notifier, scheduler, relay, workers (= relay), all.
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
        /// Listen address, e.g. 127.0.0.1:8080 (overrides the file and the environment).
        #[arg(long)]
        http_addr: Option<String>,
        /// Data directory (overrides the file and the environment).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("relaycast {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Up {
            config,
            roles,
            http_addr,
            data_dir,
        } => {
            let settings = match Settings::load(config.as_deref(), std::env::vars()) {
                Ok(mut s) => {
                    if let Some(roles) = roles {
                        s.roles = roles;
                    }
                    if let Some(addr) = http_addr {
                        s.http_addr = addr;
                    }
                    if let Some(dir) = data_dir {
                        s.data_dir = dir;
                    }
                    s
                }
                Err(e) => return fail(&HostError::Config(e)),
            };
            relaycast::telemetry::init_logging(&settings);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&HostError::Serve(e.to_string())),
            };
            let result = runtime.block_on(async {
                let host = Host::start(settings, Arc::new(SystemClock)).await?;
                host.run_until_signal().await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(e: &HostError) -> ExitCode {
    eprintln!("relaycast: error: {e}");
    ExitCode::from(match e {
        HostError::Config(_) => 2,
        _ => 1,
    })
}
