//! Every durable write path side by side, in one run, against the machine's own ceiling:
//!
//! 1. the raw SQLite single-commit ceiling: rusqlite directly, the pragmas `relaycast up` uses
//!    (WAL, `synchronous=FULL`), one row inserted and committed per op, sequentially;
//! 2. inbound events through the store: one `Store::transact` of 4 puts per event (the task,
//!    its event, its outbox entry, a claim), at 1, 16 and 64 in flight, with p50/p99;
//! 3. the same event plus one queue send, on the embedded adapter set (store and queue on one
//!    file, as `relaycast up` opens them);
//! 4. the queue: send, then receive (batches of 10) and ack each, 1 and 16 workers;
//! 5. the forward API: `cmd=1` creates over HTTP at 16 in flight (see `api.rs`).
//!
//! Every figure carries `vs_raw_commit`: its rate over the ceiling measured in step 1.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relaycast_core::config::Settings;
use relaycast_core::ports::{Clock, Condition, IndexKeys, Kind, Record, Store, SystemClock, Write};
use relaycast_embedded::{open_embedded, SqliteStore};
use serde_json::json;

use crate::api::percentile;

/// Options of the `writes` bench.
pub struct WritesOptions {
    pub raw_commits: usize,
    pub events: usize,
    pub concurrency: Vec<usize>,
    pub queue_messages: usize,
    pub api_requests: usize,
}

fn emit(
    figure: &str,
    workers: usize,
    ops: usize,
    wall: Duration,
    latencies: &[Duration],
    raw: Option<f64>,
) -> f64 {
    let rate = ops as f64 / wall.as_secs_f64();
    let (p50, p99) = (percentile(latencies, 0.50), percentile(latencies, 0.99));
    let mut line = json!({
        "bench": "writes", "figure": figure, "workers": workers, "ops": ops,
        "seconds": (wall.as_secs_f64() * 1000.0).round() / 1000.0, "ops_per_s": rate.round(),
    });
    if !latencies.is_empty() {
        line["p50_ms"] = json!((p50 * 1000.0).round() / 1000.0);
        line["p99_ms"] = json!((p99 * 1000.0).round() / 1000.0);
    }
    if let Some(raw) = raw {
        line["vs_raw_commit"] = json!((rate / raw * 1000.0).round() / 1000.0);
    }
    crate::record::emit(&line);
    let ratio = raw
        .map(|r| format!(", {:.2}x raw commits", rate / r))
        .unwrap_or_default();
    let lat = if latencies.is_empty() {
        String::new()
    } else {
        format!(", p50 {p50:.2} ms, p99 {p99:.2} ms")
    };
    println!(
        "# writes {figure} ({workers} in flight): {ops} in {:.3} s = {rate:.0}/s{lat}{ratio}",
        wall.as_secs_f64()
    );
    rate
}

/// The raw ceiling: `n` sequential single-row insert + commit through rusqlite.
pub(crate) fn raw_commits(base: Option<&Path>, n: usize) -> Result<f64> {
    let dir = crate::temp_dir(base)?;
    let conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("no WAL: {mode}");
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL; CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT NOT NULL);",
    )?;
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)")?
            .execute(rusqlite::params![
                format!("k{i:08}"),
                "{\"state\":\"created\",\"pad\":\"................\"}"
            ])?;
        conn.execute_batch("COMMIT")?;
        latencies.push(t.elapsed());
    }
    let wall = started.elapsed();
    latencies.sort();
    Ok(emit(
        "raw sqlite: single-row insert + commit, sequential",
        1,
        n,
        wall,
        &latencies,
        None,
    ))
}

const TASKS: Kind = Kind("bench_tasks");
const EVENTS: Kind = Kind("bench_events");
const OUTBOX: Kind = Kind("bench_outbox");
const CLAIMS: Kind = Kind("bench_claims");

/// The 4 writes of inbound event `i` (unique in the run) issued by writer `w`: the task (one of
/// the writer's 64, replaced), and a new event, outbox entry and claim.
fn event_writes(w: usize, i: usize) -> Vec<Write> {
    let now = 1_700_000_000_000 + i as i64;
    let index = IndexKeys {
        account: Some(format!("acc{}", w % 4)),
        status: Some("running".into()),
        time_ms: Some(now),
    };
    let task = Record {
        index: index.clone(),
        ..Record::new(
            TASKS,
            format!("task-{w}-{}", i % 64),
            json!({
                "id": format!("task-{w}-{}", i % 64), "state": "running", "src": "rtmp://127.0.0.1/live/src",
                "forward": [{"url": "rtmp://127.0.0.1/live/out", "state": "pushing"}], "seq": i,
            }),
        )
    };
    let event = Record {
        index: index.clone(),
        ..Record::new(
            EVENTS,
            format!("ev-{i:08}"),
            json!({ "task": format!("task-{w}"), "code": "1", "at": now }),
        )
    };
    let outbox = Record {
        index: IndexKeys {
            account: None,
            status: Some("pending".into()),
            time_ms: Some(now),
        },
        ..Record::new(
            OUTBOX,
            format!("ob-{i:08}"),
            json!({ "url": "http://127.0.0.1:9/cb", "body": {"code": "1", "id": i} }),
        )
    };
    let claim = Record::new(
        CLAIMS,
        format!("cl-{i:08}"),
        json!({ "task": format!("task-{w}") }),
    );
    vec![
        Write::Put(task, Condition::Any),
        Write::Put(event, Condition::Absent),
        Write::Put(outbox, Condition::Absent),
        Write::Put(claim, Condition::Absent),
    ]
}

/// Runs `n` events over `workers` tasks, each event `op(w, i)`; returns sorted latencies and
/// the wall time.
async fn drive<F, Fut>(n: usize, workers: usize, op: F) -> Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(lat);
                }
                let t = Instant::now();
                op(w, i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = started.elapsed();
    all.sort();
    Ok((all, wall))
}

async fn store_events(base: Option<&Path>, events: usize, workers: usize, raw: f64) -> Result<()> {
    let dir = crate::temp_dir(base)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(SqliteStore::open(&dir.path().join("relaycast.db"), clock)?);
    let s = store.clone();
    let (lat, wall) = drive(events, workers, move |w, i| {
        let s = s.clone();
        async move {
            s.transact(event_writes(w, i)).await?;
            Ok(())
        }
    })
    .await?;
    emit(
        "store event: transact of 4 puts",
        workers,
        events,
        wall,
        &lat,
        Some(raw),
    );
    for i in [0, events - 1] {
        if store.get(CLAIMS, &format!("cl-{i:08}")).await?.is_none() {
            bail!("the claim of event {i} is missing");
        }
    }
    Ok(())
}

async fn embedded_events(
    base: Option<&Path>,
    events: usize,
    workers: usize,
    raw: f64,
) -> Result<()> {
    let dir = crate::temp_dir(base)?;
    let settings = Settings {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    relaycast_embedded::prepare_data_dir(&settings.data_dir)?;
    let ports = open_embedded(&settings, Arc::new(SystemClock))?.ports;
    let (store, queue) = (ports.store.clone(), ports.queue.clone());
    let (lat, wall) = drive(events, workers, move |w, i| {
        let (store, queue) = (store.clone(), queue.clone());
        async move {
            store.transact(event_writes(w, i)).await?;
            queue
                .send(
                    "bench-outbox",
                    &format!("{{\"outbox\":\"ob-{i:08}\"}}"),
                    Duration::ZERO,
                )
                .await?;
            Ok(())
        }
    })
    .await?;
    emit(
        "embedded event: transact of 4 puts + queue send (one file)",
        workers,
        events,
        wall,
        &lat,
        Some(raw),
    );
    let st = ports.queue.stats("bench-outbox").await?;
    if st.visible != events as u64 {
        bail!("{} of {events} messages queued", st.visible);
    }
    Ok(())
}

pub async fn bench_writes(base: Option<&Path>, o: WritesOptions) -> Result<()> {
    if o.raw_commits == 0 || o.events == 0 || o.concurrency.is_empty() {
        bail!("--raw-commits, --events and --concurrency must be positive");
    }
    let raw = raw_commits(base, o.raw_commits).context("raw SQLite ceiling")?;
    for &c in &o.concurrency {
        store_events(base, o.events, c, raw)
            .await
            .with_context(|| format!("store events at {c}"))?;
    }
    for &c in &o.concurrency {
        embedded_events(base, o.events, c, raw)
            .await
            .with_context(|| format!("embedded events at {c}"))?;
    }
    if o.queue_messages > 0 {
        for workers in [1, 16] {
            let (send, recv) = crate::queue_round(base, o.queue_messages, workers).await?;
            emit(
                "queue send+receive+ack, per message",
                workers,
                o.queue_messages,
                send + recv,
                &[],
                Some(raw),
            );
        }
    }
    if o.api_requests > 0 {
        crate::api::bench_api(base, o.api_requests, 16, true).await?;
    }
    // A second ceiling at the end tells how much the machine drifted during the run.
    raw_commits(base, o.raw_commits).context("raw SQLite ceiling (end of run)")?;
    Ok(())
}
