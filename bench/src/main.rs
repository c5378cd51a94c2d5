//! relaycast benchmark harness: throughput of the embedded adapters (SQLite queue and store) in a
//! temporary directory, with the durability settings `relaycast up` runs (WAL, synchronous=FULL,
//! one fsync per acknowledged write).
//!
//! Every figure is printed twice: one JSON line (for scripts and docs/PERFORMANCE.md) and one
//! human line.

mod api;
mod callbacks;
mod lambda_init;
mod record;
mod relay;
mod writes;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use relaycast_core::ports::{
    Clock, Condition, Kind, Queue, Record, Store, StoreError, SystemClock,
};
use relaycast_embedded::{SqliteQueue, SqliteStore};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "relaycast-bench",
    about = "Throughput of relaycast's embedded adapters and the relay data plane against ffmpeg"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Directory for the temporary database (default: the system temp dir). Put it on the disk
    /// you want to measure.
    #[arg(long, global = true)]
    dir: Option<std::path::PathBuf>,
    /// File the JSON lines are appended to (default: `docs/perf-data/<bench>-<date>-<commit>.jsonl`
    /// of the relaycast checkout the bench runs in).
    #[arg(long, global = true)]
    out: Option<std::path::PathBuf>,
    /// A word added to the default file name (`relay-<date>-<commit>-<tag>.jsonl`).
    #[arg(long, global = true)]
    tag: Option<String>,
    /// Print the JSON lines only; write no file.
    #[arg(long, global = true)]
    no_record: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Send N messages, then receive them in batches of 10 and ack each; once with one consumer,
    /// once with several concurrent consumers.
    Queue {
        /// Messages per run.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Consumers of the concurrent run.
        #[arg(long, default_value_t = 4)]
        consumers: usize,
    },
    /// The control API over HTTP: cmd=1 creates, exact-id queries and fuzzy-src queries, with
    /// throughput and p50/p99 latency.
    Api {
        /// Requests per figure.
        #[arg(long, default_value_t = 5_000)]
        requests: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Also run the creates on the AWS adapters, on moto's server mode on 127.0.0.1 (DynamoDB,
        /// SQS, S3), next to the same creates on the embedded ones.
        #[arg(long)]
        moto: bool,
    },
    /// The relay data plane against ffmpeg and nginx-rtmp baselines, side by side on this
    /// machine: CPU, RSS and PSS for N destinations (relaycast vs N separate `ffmpeg -c copy`
    /// vs one ffmpeg `tee` vs nginx-rtmp `push`), a transcode task against a plain ffmpeg doing
    /// the same transcode, time from create to first frame, failover gap and reconnects, added
    /// end-to-end delay; N copy relays at once in one service against nginx-rtmp pushing the
    /// same fan-out (density), and the idle service. Needs nginx with libnginx-mod-rtmp, ffmpeg,
    /// and a release `relaycast` binary.
    Relay {
        /// Measurements to run, comma-separated: cpu, transcode, first-frame, failover, delay,
        /// density, idle (the default runs the first five).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "cpu,transcode,first-frame,failover,delay"
        )]
        phases: Vec<String>,
        /// Destination counts of the cpu phase, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,3,10")]
        destinations: Vec<usize>,
        /// Destination counts of the transcode phase, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,10")]
        transcode_destinations: Vec<usize>,
        /// Rounds of the cpu phase (every destination count once per round).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Seconds of warm-up once every destination is publishing.
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Seconds of the CPU/RSS window (also the delay phase's recording time).
        #[arg(long, default_value_t = 20)]
        window: u64,
        /// Runs of the first-frame phase.
        #[arg(long, default_value_t = 3)]
        first_frame_runs: usize,
        /// Runs of the failover phase.
        #[arg(long, default_value_t = 2)]
        failover_runs: usize,
        /// `timing.source_stall_timeout_ms` for the relaycast under test (default: its own).
        #[arg(long)]
        stall_timeout_ms: Option<u64>,
        /// The relaycast binary (default: `relaycast` next to this binary).
        #[arg(long)]
        relaycast_bin: Option<std::path::PathBuf>,
        /// Task counts of the density phase, comma-separated; one window each, from scratch.
        /// Each task pulls one 500 kbit/s 360p stream and pushes it to 2 destinations.
        #[arg(long, value_delimiter = ',', default_value = "25,50,100")]
        density_tasks: Vec<usize>,
        /// Streams per density window with players on their source and both destinations
        /// (frames dropped and added delay are counted on these).
        #[arg(long, default_value_t = 4)]
        density_sample: usize,
        /// Run the density phase without the nginx-rtmp push contender (relaycast alone, for
        /// the most tasks the machine holds).
        #[arg(long)]
        density_relaycast_only: bool,
        /// Seconds of the idle phase's window.
        #[arg(long, default_value_t = 30)]
        idle_window: u64,
    },
    /// The cloud recorder against plain ffmpeg, side by side: ONE standalone `recorder`
    /// recording N streams as HLS + MP4 against N `ffmpeg -c copy` writing the same two outputs
    /// (CPU and PSS per recorded stream, bytes written), and the time from a stop request to
    /// the files being finalized; and (phase callback) the time from a stream's end plus its
    /// resume timeout to the record callback, through `relaycast up` with a hooked nginx-rtmp
    /// origin. Needs nginx with libnginx-mod-rtmp, ffmpeg, and a release `recorder` binary
    /// (cpu, finalize) or `relaycast` binary (callback).
    Record {
        /// Measurements to run, comma-separated: cpu, finalize, callback (the default runs the
        /// first two).
        #[arg(long, value_delimiter = ',', default_value = "cpu,finalize")]
        phases: Vec<String>,
        /// Stream counts of the cpu phase, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,10")]
        streams: Vec<usize>,
        /// Rounds of the cpu phase (every stream count once per round).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Seconds of warm-up once every recording has stored a part of each format.
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Seconds of the CPU/PSS window: a multiple of the recorder's 4 s part, or its bytes
        /// written (a part is stored when it is cut) count one part more or less per format.
        #[arg(long, default_value_t = 32)]
        window: u64,
        /// Runs of the finalize phase.
        #[arg(long, default_value_t = 2)]
        finalize_runs: usize,
        /// Length of the finalize phase's recording, seconds.
        #[arg(long, default_value_t = 60)]
        finalize_secs: u64,
        /// The recorder binary (default: `recorder` next to this binary).
        #[arg(long)]
        recorder_bin: Option<std::path::PathBuf>,
        /// Seconds each stream of the callback phase is published before it ends.
        #[arg(long, default_value_t = 20)]
        callback_secs: u64,
        /// Runs of the callback phase per resume timeout.
        #[arg(long, default_value_t = 3)]
        callback_runs: usize,
        /// Resume timeouts of the callback phase (`HlsSpecialParam.FlowContinueDuration`,
        /// seconds, 0–1800; 0: the stream's end ends the recording), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0,5")]
        callback_resume: Vec<u32>,
        /// The relaycast binary of the callback phase (default: `relaycast` next to this
        /// binary).
        #[arg(long)]
        relaycast_bin: Option<std::path::PathBuf>,
    },
    /// N conditional writes: insert-if-absent, then compare-and-set updates; once with one
    /// writer, once with several concurrent writers; plus a contended counter.
    StoreCas {
        /// Writes per phase.
        #[arg(long, default_value_t = 20_000)]
        ops: usize,
        /// Writers of the concurrent run.
        #[arg(long, default_value_t = 4)]
        writers: usize,
    },
    /// The callbacks capability against the raw SQLite commit ceiling of the same run: signed
    /// CSS push events into a `relaycast up` child (closed loop at N in flight, open loop at a
    /// fixed rate), a repeats check, and deliveries/s to an in-process receiver with and
    /// without a dead receiver; the service's CPU and PSS in every window.
    Callbacks(callbacks::CallbacksOptions),
    /// A Lambda bootstrap binary's init time (process start to its first request for an
    /// invocation) against the Runtime API emulator, on moto: median and p90 of N cold starts.
    /// Needs moto[server].
    LambdaInit(lambda_init::LambdaInitOptions),
    /// Every durable write path side by side against the raw SQLite single-commit ceiling of
    /// the same run: store events (`transact` of 4 puts) at several concurrencies, the same
    /// with a queue send on the embedded file, queue send+receive+ack, and API `cmd=1` creates
    /// at 16 in flight.
    Writes {
        /// Sequential raw commits of the ceiling (measured at the start and at the end).
        #[arg(long, default_value_t = 5_000)]
        raw_commits: usize,
        /// Events per concurrency.
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// Events in flight, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// Messages of the queue figure (0: skip).
        #[arg(long, default_value_t = 10_000)]
        queue_messages: usize,
        /// Creates of the API figure (0: skip).
        #[arg(long, default_value_t = 3_000)]
        api_requests: usize,
    },
}

/// Prints one figure as a JSON line and a human line.
fn report(
    bench: &str,
    figure: &str,
    workers: usize,
    ops: usize,
    elapsed: Duration,
    extra: serde_json::Value,
) {
    let secs = elapsed.as_secs_f64();
    let rate = ops as f64 / secs;
    let mut line = json!({
        "bench": bench,
        "figure": figure,
        "workers": workers,
        "ops": ops,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "ops_per_s": rate.round(),
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (line.as_object_mut(), extra) {
        obj.extend(more);
    }
    record::emit(&line);
    println!(
        "# {bench} {figure} ({workers} worker(s)): {ops} ops in {secs:.3} s = {rate:.0} ops/s"
    );
}

pub(crate) fn temp_dir(base: Option<&Path>) -> Result<tempfile::TempDir> {
    match base {
        Some(b) => tempfile::TempDir::new_in(b)
            .with_context(|| format!("creating a temp dir in {}", b.display())),
        None => tempfile::TempDir::new().context("creating a temp dir"),
    }
}

/// One queue round on a fresh file: `messages` sends spread over `workers` producers, then
/// `workers` consumers receiving batches of 10 and acking each. Returns (send time, receive+ack
/// time).
pub(crate) async fn queue_round(
    base: Option<&Path>,
    messages: usize,
    workers: usize,
) -> Result<(Duration, Duration)> {
    let dir = temp_dir(base)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("relaycast.db"), clock)?);
    let name = "bench";

    // Sends are spread over the same number of tasks as consumers, as producers would be.
    let started = Instant::now();
    let per = messages.div_ceil(workers);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let queue = Arc::clone(&queue);
        let n = per.min(messages.saturating_sub(w * per));
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                queue
                    .send(
                        name,
                        &format!("{{\"job\":{w},\"i\":{i},\"pad\":\"................................\"}}"),
                        Duration::ZERO,
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let send_time = started.elapsed();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let queue = Arc::clone(&queue);
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let batch = queue
                    .receive(name, 10, Duration::from_secs(60), Duration::ZERO)
                    .await?;
                if batch.is_empty() {
                    return anyhow::Ok(done);
                }
                for m in batch {
                    queue.ack(name, &m.receipt).await?;
                    done += 1;
                }
            }
        }));
    }
    let mut received = 0;
    for t in tasks {
        received += t.await??;
    }
    let recv_time = started.elapsed();
    if received != messages {
        bail!("received {received} of {messages} messages");
    }
    let stats = queue.stats(name).await?;
    if stats != Default::default() {
        bail!("queue not empty after the run: {stats:?}");
    }
    Ok((send_time, recv_time))
}

async fn bench_queue(base: Option<&Path>, messages: usize, consumers: usize) -> Result<()> {
    if messages == 0 || consumers == 0 {
        bail!("--messages and --consumers must be positive");
    }
    for workers in [1, consumers] {
        let (send_time, recv_time) = queue_round(base, messages, workers).await?;
        report("queue", "send", workers, messages, send_time, json!({}));
        report(
            "queue",
            "receive+ack",
            workers,
            messages,
            recv_time,
            json!({ "batch": 10 }),
        );
        report(
            "queue",
            "send+receive+ack",
            workers,
            messages,
            send_time + recv_time,
            json!({ "batch": 10 }),
        );
    }
    Ok(())
}

const KIND: Kind = Kind("bench");

/// The machine's ceiling for durable single writes through SQLite: the `sqlite3` command-line
/// tool committing `n` single-row inserts, each in its own transaction, with the pragmas
/// `relaycast up` uses (WAL, synchronous=FULL).
fn sqlite_baseline(base: Option<&Path>, n: usize) -> Result<()> {
    use std::io::Write;
    let dir = temp_dir(base)?;
    let mut sql = String::from("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(k TEXT PRIMARY KEY, v TEXT);\n");
    for i in 0..n {
        sql.push_str(&format!("INSERT INTO t VALUES('k{i}','x');\n"));
    }
    let started = Instant::now();
    let mut child = std::process::Command::new("sqlite3")
        .arg(dir.path().join("base.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("running sqlite3 (the command-line tool) for the baseline")?;
    child
        .stdin
        .take()
        .context("sqlite3 stdin")?
        .write_all(sql.as_bytes())?;
    if !child.wait()?.success() {
        bail!("sqlite3 failed");
    }
    report(
        "store-cas",
        "baseline: sqlite3 CLI single-insert commits",
        1,
        n,
        started.elapsed(),
        json!({ "tool": "sqlite3" }),
    );
    Ok(())
}

async fn bench_store(base: Option<&Path>, ops: usize, writers: usize) -> Result<()> {
    if ops == 0 || writers == 0 {
        bail!("--ops and --writers must be positive");
    }
    sqlite_baseline(base, 5_000)?;
    for workers in [1, writers] {
        let dir = temp_dir(base)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = Arc::new(SqliteStore::open(&dir.path().join("relaycast.db"), clock)?);
        let per = ops.div_ceil(workers);
        let ranges: Vec<_> = (0..workers)
            .map(|w| (w * per)..((w + 1) * per).min(ops))
            .collect();

        // Insert-if-absent, each writer on its own keys.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for range in ranges.clone() {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in range {
                    let r = Record::new(
                        KIND,
                        format!("task-{i:08}"),
                        json!({ "n": 0, "state": "created" }),
                    );
                    store.put(r, Condition::Absent).await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        report(
            "store-cas",
            "insert-if-absent",
            workers,
            ops,
            started.elapsed(),
            json!({}),
        );

        // Compare-and-set updates: read the version, write conditioned on it.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for range in ranges.clone() {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in range {
                    let key = format!("task-{i:08}");
                    let cur = store.get(KIND, &key).await?.context("record vanished")?;
                    let r = Record::new(KIND, key, json!({ "n": 1, "state": "running" }));
                    store.put(r, Condition::Version(cur.version)).await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        report(
            "store-cas",
            "get+compare-and-set",
            workers,
            ops,
            started.elapsed(),
            json!({}),
        );

        if workers > 1 {
            // All writers on one record: throughput of successful increments under conflicts.
            let n = (ops / 10).max(workers);
            store
                .put(
                    Record::new(KIND, "counter", json!({ "n": 0 })),
                    Condition::Absent,
                )
                .await?;
            let started = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..workers {
                let store = Arc::clone(&store);
                let mine = n / workers + usize::from(w < n % workers);
                tasks.push(tokio::spawn(async move {
                    let mut conflicts = 0usize;
                    for _ in 0..mine {
                        loop {
                            let cur = store
                                .get(KIND, "counter")
                                .await?
                                .context("counter vanished")?;
                            let next = cur.body.value()["n"].as_u64().unwrap_or(0) + 1;
                            match store
                                .put(
                                    Record::new(KIND, "counter", json!({ "n": next })),
                                    Condition::Version(cur.version),
                                )
                                .await
                            {
                                Ok(_) => break,
                                Err(StoreError::ConditionFailed { .. }) => conflicts += 1,
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    anyhow::Ok(conflicts)
                }));
            }
            let mut conflicts = 0;
            for t in tasks {
                conflicts += t.await??;
            }
            let elapsed = started.elapsed();
            let end = store
                .get(KIND, "counter")
                .await?
                .context("counter vanished")?;
            if end.body.value()["n"].as_u64() != Some(n as u64) {
                bail!("counter ended at {} instead of {n}", end.body.value()["n"]);
            }
            report(
                "store-cas",
                "contended-counter",
                workers,
                n,
                elapsed,
                json!({ "conflicts": conflicts }),
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let bench = match &cli.command {
        Command::Queue { .. } => "queue",
        Command::Api { .. } => "api",
        Command::Relay { .. } => "relay",
        Command::StoreCas { .. } => "store-cas",
        Command::Writes { .. } => "writes",
        Command::Callbacks(_) => "callbacks",
        Command::LambdaInit(_) => "lambda-init",
        Command::Record { .. } => "record",
    };
    record::start(bench, cli.out.clone(), cli.tag.as_deref(), cli.no_record)?;
    let result = run(cli).await;
    record::finish(result.is_ok());
    result
}

async fn run(cli: Cli) -> Result<()> {
    let base = cli.dir.as_deref();
    match cli.command {
        Command::Queue {
            messages,
            consumers,
        } => bench_queue(base, messages, consumers).await,
        Command::StoreCas { ops, writers } => bench_store(base, ops, writers).await,
        Command::Writes {
            raw_commits,
            events,
            concurrency,
            queue_messages,
            api_requests,
        } => {
            let opts = writes::WritesOptions {
                raw_commits,
                events,
                concurrency,
                queue_messages,
                api_requests,
            };
            writes::bench_writes(base, opts).await
        }
        Command::Api {
            requests,
            concurrency,
            moto: false,
        } => api::bench_api(base, requests, concurrency, false).await,
        Command::Api {
            requests,
            concurrency,
            moto: true,
        } => api::bench_api_backends(base, requests, concurrency).await,
        Command::LambdaInit(opts) => lambda_init::bench_lambda_init(opts).await,
        Command::Callbacks(mut opts) => {
            opts.dir = cli.dir.clone();
            callbacks::bench_callbacks(opts).await
        }
        Command::Record {
            phases,
            streams,
            rounds,
            warmup,
            window,
            finalize_runs,
            finalize_secs,
            recorder_bin,
            callback_secs,
            callback_runs,
            callback_resume,
            relaycast_bin,
        } => {
            let opts = relay::recording::RecordOptions {
                phases,
                streams,
                rounds,
                warmup,
                window,
                finalize_runs,
                finalize_secs,
                recorder_bin,
                callback_secs,
                callback_runs,
                callback_resume,
                relaycast_bin,
                dir: cli.dir.clone(),
            };
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || relay::recording::bench_record(opts, rt)).await?
        }
        Command::Relay {
            phases,
            destinations,
            transcode_destinations,
            rounds,
            warmup,
            window,
            first_frame_runs,
            failover_runs,
            stall_timeout_ms,
            relaycast_bin,
            density_tasks,
            density_sample,
            density_relaycast_only,
            idle_window,
        } => {
            let opts = relay::RelayOptions {
                phases,
                destinations,
                transcode_destinations,
                rounds,
                warmup,
                window,
                first_frame_runs,
                failover_runs,
                stall_timeout_ms,
                relaycast_bin,
                density_tasks,
                density_sample,
                density_relaycast_only,
                idle_window,
                dir: cli.dir.clone(),
            };
            tokio::task::spawn_blocking(move || relay::bench_relay(opts)).await?
        }
    }
}
