//! `lambda-init`: a Lambda bootstrap binary's init time, as Lambda's cold start sees it: from
//! the process start to its first `GET …/invocation/next` on the Runtime API emulator (settings
//! read, AWS clients built, runtime loop entered). The binary runs against moto's server mode on
//! 127.0.0.1 with the stack's resources made there, so init does what it does on AWS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use relaycast_aws::moto::MotoServer;
use relaycast_functions::lambda_emulator::{Emulator, FunctionProcess};
use serde_json::json;

/// Options of `lambda-init`.
#[derive(clap::Args)]
pub struct LambdaInitOptions {
    /// The bootstrap binary (e.g. `target/release/relaycast-api`).
    #[arg(long)]
    pub bin: PathBuf,
    /// Cold starts to time.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Accounts the function is given, as the stack gives them to `api` (`RELAYCAST_ACCOUNTS`):
    /// that many accounts, each stored at init (one write each).
    #[arg(long, default_value_t = 0)]
    pub accounts: usize,
}

/// Times `runs` cold starts of the binary and reports the median and p90, in ms.
pub async fn bench_lambda_init(opts: LambdaInitOptions) -> Result<()> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bin = opts
        .bin
        .canonicalize()
        .with_context(|| format!("no bootstrap binary at {}", opts.bin.display()))?;
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "function".into());
    let moto = MotoServer::start();
    let aws = moto.settings("lambdainit");
    relaycast_aws::moto::provision(&aws, 5)
        .await
        .context("provisioning the stack on moto")?;
    let mut samples_ms = Vec::with_capacity(opts.runs);
    for run in 0..opts.runs {
        let emulator = Emulator::start().await;
        let mut env = emulator.lambda_env(&name);
        for (k, v) in [
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("RELAYCAST_AWS__ENDPOINT_URL", moto.endpoint()),
            ("RELAYCAST_AWS__TABLE", aws.table.clone()),
            ("RELAYCAST_AWS__QUEUE_PREFIX", aws.queue_prefix.clone()),
            ("RELAYCAST_AWS__BUCKET", aws.bucket.clone()),
            ("RELAYCAST_LOG_FILTER", "warn".to_string()),
        ] {
            env.push((k.to_string(), v));
        }
        if opts.accounts > 0 {
            env.push((
                "RELAYCAST_ACCOUNTS".to_string(),
                declared_accounts(opts.accounts),
            ));
        }
        let process = FunctionProcess::start(&bin, &env);
        let Some(ready) = emulator.first_next(Duration::from_secs(30)).await else {
            bail!(
                "run {run}: {name} never asked for an invocation; it printed:\n{}",
                process.output()
            );
        };
        samples_ms.push(ready.duration_since(process.started).as_secs_f64() * 1000.0);
    }
    samples_ms.sort_by(f64::total_cmp);
    let at = |q: f64| samples_ms[((samples_ms.len() - 1) as f64 * q).round() as usize];
    let (median, p90) = (at(0.5), at(0.9));
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    crate::record::emit(&json!({
        "bench": "lambda-init",
        "figure": "init_to_first_next",
        "function": name,
        "runs": opts.runs,
        "declared_accounts": opts.accounts,
        "median_ms": (median * 10.0).round() / 10.0,
        "p90_ms": (p90 * 10.0).round() / 10.0,
        "min_ms": (samples_ms[0] * 10.0).round() / 10.0,
        "max_ms": (samples_ms[samples_ms.len() - 1] * 10.0).round() / 10.0,
        "binary_bytes": size,
    }));
    println!(
        "# lambda-init {name}: process start to first next, {} runs: median {median:.1} ms, p90 {p90:.1} ms (binary {size} bytes)",
        opts.runs
    );
    Ok(())
}

/// `RELAYCAST_ACCOUNTS` with `n` accounts, in the TOML array form the stack's `Accounts`
/// parameter takes.
fn declared_accounts(n: usize) -> String {
    let accounts: Vec<String> = (0..n)
        .map(|i| format!("{{name = \"bench{i}\", key = \"{:032x}\"}}", i + 1))
        .collect();
    format!("[{}]", accounts.join(", "))
}
