//! `recorder`: a standalone recorder worker process on the embedded store and queue of a data
//! directory (see `relaycast_workers::standalone`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use relaycast_workers::standalone::{self, WorkerKind};

/// A relaycast recorder worker on the embedded store and queue of a data directory.
#[derive(Parser)]
#[command(name = "recorder", version, about, long_about = None)]
struct Cli {
    /// TOML config file, the same as `relaycast up --config`. Settings not in it take their
    /// defaults; RELAYCAST_* environment variables override it (RELAYCAST_DATA_DIR, …).
    #[arg(long, env = "RELAYCAST_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    standalone::main(WorkerKind::Recorder, Cli::parse().config.as_deref())
}
