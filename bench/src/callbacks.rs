//! The callbacks capability under load, against the machine's own ceiling, in one run:
//!
//! 1. **baseline**: the raw SQLite single-commit ceiling (`writes::raw_commits`: rusqlite, WAL,
//!    `synchronous=FULL`, one small insert + commit per op, sequential) on a file in the same
//!    directory as the service's data dir;
//! 2. **inbound**: a release `relaycast up` child (roles api, notifier, scheduler) with a
//!    callback template bound to a domain; signed CSS push events (`event_type` 1, a new
//!    `stream_id` and `sequence` each) POSTed to `/callbacks/css` with N in flight for a fixed
//!    window (closed loop), then at a fixed rate (open loop, latency from the moment each event
//!    was due); every 200 `{"code":0}` is an event durably stored, checked afterwards against
//!    the service's own counter;
//!    **inbound-alone** is the same closed loop against a service without the notifier role
//!    (api, scheduler), whose deliveries stay queued, as when the notifier runs elsewhere;
//! 3. **repeats** (a correctness check, not a figure): every event posted twice at once, with a
//!    fresh `t`; the store must hold each once and the receiver get each once;
//! 4. **outbound**: events queued while no notifier runs, then a notifier started on the same
//!    data; deliveries per second counted at an in-process receiver (distinct event ids), once
//!    with the healthy receiver alone and once with a dead receiver (a server that accepts and
//!    never answers, or a port where nothing listens) taking its share of the events.
//!
//! Every window records the relaycast process's CPU (its CPU-time clock) and PSS, the bench's
//! own CPU (it shares the machine), and the load average.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use serde_json::{json, Value};

use crate::api::percentile;
use crate::record::emit;
use crate::relay::{free_port, process_cpu_s, process_pss_uss_kb, process_rss_kb, Proc};

const ACCOUNT: &str = "bench";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const CALLBACK_KEY: &str = "bench-callback-key";
const HEALTHY_DOMAIN: &str = "push.bench.example";
const DEAD_DOMAIN: &str = "dead.bench.example";

/// Options of `relaycast-bench callbacks`.
#[derive(Debug, Clone, clap::Args)]
pub struct CallbacksOptions {
    /// Parts to run, comma-separated: baseline, inbound, inbound-alone, open-loop, repeats,
    /// outbound.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "baseline,inbound,inbound-alone,open-loop,repeats,outbound"
    )]
    pub phases: Vec<String>,
    /// Sequential commits of the raw SQLite ceiling (about 3 s on this machine).
    #[arg(long, default_value_t = 20_000)]
    pub raw_commits: usize,
    /// Events in flight of the closed-loop inbound windows, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64,128")]
    pub concurrency: Vec<usize>,
    /// Seconds of each measuring window.
    #[arg(long, default_value_t = 10)]
    pub window: u64,
    /// Events per second of the open-loop window.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// Distinct events of the repeats check (each posted twice; at most 1000).
    #[arg(long, default_value_t = 1_000)]
    pub repeat_events: usize,
    /// Events queued for the healthy receiver before each outbound window.
    #[arg(long, default_value_t = 20_000)]
    pub outbound_events: usize,
    /// Share of all queued events that go to the dead receiver in the second outbound run
    /// (0: no such run).
    #[arg(long, default_value_t = 0.5)]
    pub dead_share: f64,
    /// The dead receiver: stall (accepts and never answers) or refused (nothing listens).
    #[arg(long, default_value = "stall")]
    pub dead: String,
    /// `callbacks.concurrency` of the service (default: its own).
    #[arg(long)]
    pub notifier_concurrency: Option<usize>,
    /// `callbacks.endpoint_concurrency` of the service (default: its own).
    #[arg(long)]
    pub endpoint_concurrency: Option<usize>,
    /// Record every window with `perf record -e cpu-clock -g -p <relaycast>` into this
    /// directory.
    #[arg(long)]
    pub perf_dir: Option<PathBuf>,
    /// The relaycast binary (default: `relaycast` next to this binary).
    #[arg(long)]
    pub relaycast_bin: Option<PathBuf>,
    /// Directory for temporary files (the data dirs and the raw ceiling's file): the bench's `--dir`.
    #[arg(skip)]
    pub dir: Option<PathBuf>,
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn own_cpu_s() -> f64 {
    process_cpu_s(std::process::id()).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// The service under test
// ---------------------------------------------------------------------------------------------

/// A `relaycast up` child on a data dir of its own, with the bench account; its `/v1` calls
/// are signed ([`Service::v1`]). The record bench's callback phase runs one too.
pub(crate) struct Service {
    pub(crate) base: String,
    proc: Proc,
    seq: AtomicU64,
    pub(crate) client: reqwest::Client,
}

/// What a [`Service`] is started with besides its roles.
pub(crate) struct ServiceConfig {
    /// Lines of the config file's `[callbacks]` table.
    pub(crate) callbacks: String,
    /// `RELAYCAST_LOG_FILTER`.
    pub(crate) log_filter: &'static str,
    /// `RELAYCAST_LOG_FORMAT`: `text` or `json`.
    pub(crate) log_format: &'static str,
}

impl ServiceConfig {
    /// The callbacks bench's service: the notifier's concurrency options, warnings only.
    fn of(opts: &CallbacksOptions) -> ServiceConfig {
        let mut callbacks = String::new();
        if let Some(c) = opts.notifier_concurrency {
            callbacks.push_str(&format!("concurrency = {c}\n"));
        }
        if let Some(c) = opts.endpoint_concurrency {
            callbacks.push_str(&format!("endpoint_concurrency = {c}\n"));
        }
        ServiceConfig {
            callbacks,
            log_filter: "warn",
            log_format: "text",
        }
    }
}

impl Service {
    /// Starts `relaycast up` with `roles` on `data` (created if missing; reused across restarts).
    async fn start(
        bin: &Path,
        dir: &Path,
        roles: &str,
        opts: &CallbacksOptions,
    ) -> Result<Service> {
        Self::start_with(bin, dir, roles, &ServiceConfig::of(opts)).await
    }

    /// Starts `relaycast up` with `roles` and `config` in `dir` (its config file, its log
    /// `relaycast.log` and its data dir `data`, created if missing and reused across restarts);
    /// returns once `/healthz` answers.
    pub(crate) async fn start_with(
        bin: &Path,
        dir: &Path,
        roles: &str,
        config: &ServiceConfig,
    ) -> Result<Service> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("relaycast.toml");
        std::fs::write(
            &config_path,
            format!(
                "allow_private_targets = true\n\n[callbacks]\n{}\n[[accounts]]\nname = \"{ACCOUNT}\"\nkey = \"{KEY}\"\ncall_limit = {}\n",
                config.callbacks,
                u32::MAX
            ),
        )?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(bin);
        cmd.arg("up")
            .arg("--config")
            .arg(&config_path)
            .arg("--roles")
            .arg(roles)
            .env("RELAYCAST_HTTP_ADDR", &addr)
            .env("RELAYCAST_DATA_DIR", dir.join("data"))
            .env("RELAYCAST_LOG_FILTER", config.log_filter)
            .env("RELAYCAST_LOG_FORMAT", config.log_format);
        let log = Self::log_path(dir);
        let proc = Proc::spawn("relaycast up", &mut cmd, &log)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(512)
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut svc = Service {
            base: format!("http://{addr}"),
            proc,
            seq: AtomicU64::new(0),
            client,
        };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if !svc.proc.running() {
                bail!("relaycast exited early; see {}", log.display());
            }
            if let Ok(r) = svc.client.get(format!("{}/healthz", svc.base)).send().await {
                if r.status() == 200 {
                    return Ok(svc);
                }
            }
            if Instant::now() > until {
                bail!("relaycast not healthy in 30 s; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log of the service started in `dir`.
    pub(crate) fn log_path(dir: &Path) -> PathBuf {
        dir.join("relaycast.log")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGTERM, then SIGKILL of the tree after `within`.
    pub(crate) async fn stop(mut self, within: Duration) {
        if self.proc.running() {
            // SAFETY: kill(2) only sends a signal.
            unsafe {
                libc::kill(self.proc.pid() as i32, libc::SIGTERM);
            }
            let until = Instant::now() + within;
            while self.proc.running() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.proc.kill();
    }

    /// A signed `/v1` call; returns `Response`.
    pub(crate) async fn v1(
        &self,
        method: reqwest::Method,
        path: &str,
        extra: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let r = format!(
            "cb{}x{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let k = hex::encode(Md5::digest(format!("{r}{KEY}").as_bytes()));
        let url = format!("{}{path}?n={ACCOUNT}&r={r}&k={k}{extra}", self.base);
        let mut req = self.client.request(method.clone(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 200 {
            bail!("{method} {path} answered {status}: {v}");
        }
        Ok(v["Response"].clone())
    }

    /// A template sending push and stop events to `url`, bound to `domain`.
    async fn bind(&self, domain: &str, url: &str) -> Result<u64> {
        let t = self
            .v1(
                reqwest::Method::POST,
                "/v1/callback-templates",
                "",
                Some(json!({ "TemplateName": domain.replace('.', "_"), "StreamBeginNotifyUrl": url, "StreamEndNotifyUrl": url, "CallbackKey": CALLBACK_KEY })),
            )
            .await?;
        let id = t["TemplateId"].as_u64().context("TemplateId")?;
        self.v1(
            reqwest::Method::POST,
            "/v1/callback-rules",
            "",
            Some(json!({ "DomainName": domain, "TemplateId": id })),
        )
        .await?;
        Ok(id)
    }

    /// The sum of every series of a counter on `/metrics` (0 when it has none yet).
    async fn counter(&self, name: &str) -> Result<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum())
    }
}

// ---------------------------------------------------------------------------------------------
// Receivers
// ---------------------------------------------------------------------------------------------

/// The healthy receiver: answers 200 at once; notes the first arrival of every event id, and
/// (when started with [`Receiver::start_keeping_bodies`]) every POST's arrival and body.
#[derive(Default)]
struct ReceiverState {
    first: Mutex<HashMap<String, Instant>>,
    posts: AtomicU64,
    /// `None`: bodies are not kept (the outbound windows take tens of thousands).
    bodies: Option<Mutex<Vec<(Instant, Value)>>>,
}

pub(crate) struct Receiver {
    /// Where to POST: `http://127.0.0.1:PORT/cb`.
    pub(crate) url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Result<Receiver> {
        Self::start_on(ReceiverState::default()).await
    }

    /// A receiver that also keeps every POST's arrival instant and JSON body
    /// ([`Receiver::bodies`]).
    pub(crate) async fn start_keeping_bodies() -> Result<Receiver> {
        Self::start_on(ReceiverState {
            bodies: Some(Mutex::new(Vec::new())),
            ..Default::default()
        })
        .await
    }

    async fn start_on(state: ReceiverState) -> Result<Receiver> {
        use axum::routing::post;
        let state = Arc::new(state);
        let s = state.clone();
        let app = axum::Router::new().route(
            "/cb",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let s = s.clone();
                    async move {
                        let at = Instant::now();
                        s.posts.fetch_add(1, Ordering::Relaxed);
                        if let Some(id) = headers
                            .get("x-relaycast-event-id")
                            .and_then(|v| v.to_str().ok())
                        {
                            s.first
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(id.to_string())
                                .or_insert(at);
                        }
                        if let Some(bodies) = &s.bodies {
                            let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            bodies
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((at, v));
                        }
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/cb", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url, state, task })
    }

    /// Every POST so far (arrival, JSON body or null), in arrival order; empty unless
    /// started with [`Receiver::start_keeping_bodies`].
    pub(crate) fn bodies(&self) -> Vec<(Instant, Value)> {
        self.state
            .bodies
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    fn distinct(&self) -> usize {
        self.state
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn posts(&self) -> u64 {
        self.state.posts.load(Ordering::Relaxed)
    }

    /// First arrivals, sorted.
    fn arrivals(&self) -> Vec<Instant> {
        let mut v: Vec<Instant> = self
            .state
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .copied()
            .collect();
        v.sort();
        v
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The dead receiver: `stall` accepts connections and never answers (each attempt holds its
/// delivery slot for the whole callback timeout); `refused`: a port nothing listens on.
struct DeadReceiver {
    url: String,
    connections: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DeadReceiver {
    async fn start(kind: &str) -> Result<DeadReceiver> {
        let connections = Arc::new(AtomicU64::new(0));
        match kind {
            "refused" => {
                let port = free_port()?;
                Ok(DeadReceiver {
                    url: format!("http://127.0.0.1:{port}/cb"),
                    connections,
                    task: None,
                })
            }
            "stall" => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}/cb", listener.local_addr()?);
                let c = connections.clone();
                let task = tokio::spawn(async move {
                    while let Ok((mut sock, _)) = listener.accept().await {
                        c.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            use tokio::io::AsyncReadExt;
                            let mut buf = [0u8; 4096];
                            while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                        });
                    }
                });
                Ok(DeadReceiver {
                    url,
                    connections,
                    task: Some(task),
                })
            }
            other => bail!("--dead must be stall or refused, not {other}"),
        }
    }
}

impl Drop for DeadReceiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A CSS push event as SCHEMAS.md §2.3 shows it (the shape of `tests/callbacks.rs`), signed
/// with `sign = md5(CallbackKey + t)`. `event_time` is fixed by the caller so that a repeat
/// (with a fresh `t`) is the same event.
fn css_push(domain: &str, stream: &str, sequence: u64, event_time: i64, t: i64) -> Vec<u8> {
    let sign = hex::encode(Md5::digest(format!("{CALLBACK_KEY}{t}").as_bytes()));
    json!({
        "app": domain, "appid": 12345678, "appname": "live", "channel_id": stream, "stream_id": stream,
        "errcode": 0, "errmsg": "ok", "event_time": event_time, "event_type": 1,
        "node": "42.81.194.37", "sequence": sequence.to_string(), "user_ip": "1.1.1.1", "stream_param": "a=b",
        "width": 0, "height": 0, "t": t, "sign": sign,
    })
    .to_string()
    .into_bytes()
}

/// What one POST came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Answer {
    /// 200 `{"code":0}`: stored.
    Stored,
    /// Any other HTTP status (or a 200 with another body: 0).
    Status(u16),
    /// No answer (connection error or timeout).
    Failed,
}

async fn post_event(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Answer {
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if status == 200
                && serde_json::from_str::<Value>(&text).ok() == Some(json!({ "code": 0 }))
            {
                Answer::Stored
            } else if status == 200 {
                Answer::Status(0)
            } else {
                Answer::Status(status)
            }
        }
        Err(_) => Answer::Failed,
    }
}

fn answers_json(counts: &HashMap<Answer, u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (a, n) in counts {
        let k = match a {
            Answer::Stored => "200".to_string(),
            Answer::Status(0) => "200 other body".to_string(),
            Answer::Status(s) => s.to_string(),
            Answer::Failed => "no answer".to_string(),
        };
        m.insert(k, json!(n));
    }
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------
// Measuring a window
// ---------------------------------------------------------------------------------------------

/// CPU, PSS and load of a window: started with [`Meter::start`], read with [`Meter::finish`].
struct Meter {
    pid: u32,
    started: Instant,
    cpu0: f64,
    own0: f64,
    load0: Option<String>,
    pss: Arc<Mutex<Vec<(u64, u64)>>>,
    sampler: tokio::task::JoinHandle<()>,
    perf: Option<(std::process::Child, PathBuf)>,
}

impl Meter {
    fn start(pid: u32, perf_dir: Option<&Path>, name: &str) -> Meter {
        let pss = Arc::new(Mutex::new(Vec::new()));
        let p = pss.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let (pss, _) = process_pss_uss_kb(pid);
                let rss = process_rss_kb(pid);
                if pss > 0 {
                    p.lock().unwrap_or_else(|e| e.into_inner()).push((pss, rss));
                }
            }
        });
        let perf = perf_dir.and_then(|d| {
            let file = d.join(format!("perf-{name}.data"));
            let child = Command::new("perf")
                .args([
                    "record",
                    "-q",
                    "-e",
                    "cpu-clock",
                    "-F",
                    "999",
                    "-g",
                    "-p",
                    &pid.to_string(),
                    "-o",
                ])
                .arg(&file)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| eprintln!("# perf record not started: {e}"))
                .ok()?;
            Some((child, file))
        });
        Meter {
            pid,
            started: Instant::now(),
            cpu0: process_cpu_s(pid).unwrap_or(0.0),
            own0: own_cpu_s(),
            load0: crate::record::loadavg(),
            pss,
            sampler,
            perf,
        }
    }

    /// `{relaycast_cpu_pct, relaycast_pss_mb (median, max), bench_cpu_pct, loadavg_*}`.
    fn finish(mut self) -> Value {
        let secs = self.started.elapsed().as_secs_f64();
        let cpu = process_cpu_s(self.pid).unwrap_or(0.0) - self.cpu0;
        let own = own_cpu_s() - self.own0;
        self.sampler.abort();
        let mut samples = self.pss.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (pss, _) = process_pss_uss_kb(self.pid);
        if pss > 0 {
            samples.push((pss, process_rss_kb(self.pid)));
        }
        if samples.is_empty() {
            samples.push((0, 0));
        }
        let mut p: Vec<u64> = samples.iter().map(|s| s.0).collect();
        p.sort();
        let mut r: Vec<u64> = samples.iter().map(|s| s.1).collect();
        r.sort();
        let mb = |kb: u64| r2(kb as f64 / 1024.0);
        let mut perf_file = None;
        if let Some((mut child, file)) = self.perf.take() {
            // SAFETY: kill(2) only sends a signal; perf writes its file on SIGINT.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
            perf_file = Some(file.display().to_string());
        }
        json!({
            "window_s": r2(secs),
            "relaycast_cpu_pct_of_one_core": r2(cpu / secs * 100.0),
            "relaycast_pss_mb_median": mb(p[p.len() / 2]), "relaycast_pss_mb_max": mb(*p.last().unwrap_or(&0)),
            "relaycast_rss_mb_median": mb(r[r.len() / 2]),
            "bench_cpu_pct_of_one_core": r2(own / secs * 100.0),
            "loadavg_start": self.load0, "loadavg_end": crate::record::loadavg(),
            "perf_data": perf_file,
        })
    }
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(obj), Value::Object(more)) = (a.as_object_mut(), b) {
        obj.extend(more);
    }
    a
}

fn lat_json(sorted: &[Duration]) -> Value {
    let max = sorted
        .last()
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    json!({ "p50_ms": r2(percentile(sorted, 0.50)), "p99_ms": r2(percentile(sorted, 0.99)), "max_ms": r2(max) })
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

struct Ctx {
    bin: PathBuf,
    dir: tempfile::TempDir,
    opts: CallbacksOptions,
    raw: Option<f64>,
    runs: AtomicU64,
}

impl Ctx {
    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!(
            "{name}-{}",
            self.runs.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn ratio(&self, rate: f64) -> Value {
        self.raw
            .map(|r| json!((rate / r * 1000.0).round() / 1000.0))
            .unwrap_or(Value::Null)
    }

    /// A fresh full service (api, notifier, scheduler) with the healthy receiver bound.
    async fn fresh(&self, name: &str) -> Result<(Service, Receiver)> {
        self.fresh_with(name, "api,notifier,scheduler").await
    }

    /// A fresh service with `roles` and the healthy receiver bound.
    async fn fresh_with(&self, name: &str, roles: &str) -> Result<(Service, Receiver)> {
        let receiver = Receiver::start().await?;
        let svc = Service::start(&self.bin, &self.data(name), roles, &self.opts).await?;
        svc.bind(HEALTHY_DOMAIN, &receiver.url).await?;
        Ok((svc, receiver))
    }
}

/// In-flight cap of the open loop.
const MAX_IN_FLIGHT: usize = 1024;
/// How long the open loop waits for answers after its last send.
const OPEN_LOOP_DRAIN_S: u64 = 30;

/// Unique stream names across the whole run.
static STREAM: AtomicU64 = AtomicU64::new(0);

fn next_stream() -> (String, u64) {
    let n = STREAM.fetch_add(1, Ordering::Relaxed);
    (format!("cam{}-{n}", std::process::id()), n + 1_000_000)
}

/// `concurrency` workers POST new push events for `window`; returns (latencies of the events
/// stored within the window, answers of everything sent, stored in all).
async fn closed_loop(
    svc: &Service,
    domain: &'static str,
    concurrency: usize,
    window: Duration,
) -> Result<(Vec<Duration>, HashMap<Answer, u64>, u64)> {
    let url = format!("{}/callbacks/css", svc.base);
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url) = (svc.client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut answers: HashMap<Answer, u64> = HashMap::new();
            let mut stored_late = 0u64;
            while Instant::now() < deadline {
                let (stream, seq) = next_stream();
                let now = now_s();
                let body = css_push(domain, &stream, seq, now, now + 600);
                let t = Instant::now();
                let a = post_event(&client, &url, body).await;
                let done = Instant::now();
                *answers.entry(a).or_default() += 1;
                if a == Answer::Stored {
                    if done <= deadline {
                        lat.push(done - t);
                    } else {
                        stored_late += 1;
                    }
                }
            }
            (lat, answers, stored_late)
        }));
    }
    let mut lat = Vec::new();
    let mut answers: HashMap<Answer, u64> = HashMap::new();
    let mut stored = 0;
    for t in tasks {
        let (l, a, late) = t.await?;
        stored += l.len() as u64 + late;
        lat.extend(l);
        for (k, v) in a {
            *answers.entry(k).or_default() += v;
        }
    }
    lat.sort();
    Ok((lat, answers, stored))
}

/// Checks that the service stored exactly the events it acknowledged.
async fn check_stored(svc: &Service, acknowledged: u64) -> Result<Value> {
    let stored = svc.counter("relaycast_stream_events_total").await?;
    let repeated = svc
        .counter("relaycast_stream_events_repeated_total")
        .await?;
    let ok = stored as u64 == acknowledged && repeated == 0.0;
    if !ok {
        eprintln!("# WARNING: {acknowledged} events acknowledged, the service counted {stored} stored and {repeated} repeated");
    }
    Ok(
        json!({ "acknowledged": acknowledged, "service_stored_counter": stored, "service_repeated_counter": repeated, "stored_matches": ok }),
    )
}

/// The inbound windows with the notifier delivering meanwhile (`roles` api, notifier,
/// scheduler), or, with `alone`, of a service that only takes events (api, scheduler: their
/// deliveries stay queued for a notifier, as on AWS, where the callbacks function takes events
/// and the notifier runs apart).
async fn phase_inbound(ctx: &Ctx, alone: bool) -> Result<()> {
    let window = Duration::from_secs(ctx.opts.window);
    let (roles, figure) = if alone {
        (
            "api,scheduler",
            "inbound: CSS push events stored (closed loop), no notifier in the process",
        )
    } else {
        (
            "api,notifier,scheduler",
            "inbound: CSS push events stored (closed loop)",
        )
    };
    for &c in &ctx.opts.concurrency {
        let (svc, receiver) = ctx.fresh_with("inbound", roles).await?;
        // A short warm-up on the same service (connections, caches), not counted.
        closed_loop(&svc, HEALTHY_DOMAIN, c, Duration::from_secs(1)).await?;
        let before = svc.counter("relaycast_stream_events_total").await? as u64;
        let meter = Meter::start(
            svc.pid(),
            ctx.opts.perf_dir.as_deref(),
            &format!("inbound-c{c}"),
        );
        let (lat, answers, stored) = closed_loop(&svc, HEALTHY_DOMAIN, c, window).await?;
        let m = meter.finish();
        let rate = lat.len() as f64 / window.as_secs_f64();
        let check = check_stored(&svc, before + stored).await?;
        let line = json!({
            "bench": "callbacks", "figure": figure, "roles": roles, "concurrency": c,
            "stored_in_window": lat.len(), "events_per_s": rate.round(), "vs_raw_commit": ctx.ratio(rate),
            "answers": answers_json(&answers), "delivered_meanwhile": receiver.distinct(), "check": check,
        });
        emit(&merge(merge(line, lat_json(&lat)), m));
        println!(
            "# callbacks inbound ({roles}), {c} in flight: {rate:.0} events/s, p50 {:.1} ms, p99 {:.1} ms ({} delivered meanwhile)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            receiver.distinct()
        );
        svc.stop(Duration::from_secs(10)).await;
    }
    Ok(())
}

async fn phase_open_loop(ctx: &Ctx) -> Result<()> {
    let rate = ctx.opts.rate.max(1);
    let (svc, receiver) = ctx.fresh("open-loop").await?;
    closed_loop(&svc, HEALTHY_DOMAIN, 16, Duration::from_secs(1)).await?;
    let before = svc.counter("relaycast_stream_events_total").await? as u64;
    let url = format!("{}/callbacks/css", svc.base);
    let n = rate * ctx.opts.window;
    let meter = Meter::start(svc.pid(), ctx.opts.perf_dir.as_deref(), "open-loop");
    let t0 = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::with_capacity(n as usize);
    let mut late_sends = 0u64;
    // At most this many in flight (connections): when the service falls that far behind, the
    // next sends wait, and their time from due still counts that wait.
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    for i in 0..n {
        let due = t0 + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        if tokio::time::Instant::now() > due + Duration::from_millis(5) {
            late_sends += 1;
        }
        let (client, url) = (svc.client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (stream, seq) = next_stream();
            let now = now_s();
            let body = css_push(HEALTHY_DOMAIN, &stream, seq, now, now + 600);
            let sent = tokio::time::Instant::now();
            let a = post_event(&client, &url, body).await;
            let done = tokio::time::Instant::now();
            drop(permit);
            (a, done - due, done - sent)
        }));
    }
    let send_window = t0.elapsed();
    let drain_limit = tokio::time::Instant::now() + Duration::from_secs(OPEN_LOOP_DRAIN_S);
    let mut from_due = Vec::new();
    let mut from_send = Vec::new();
    let mut answers: HashMap<Answer, u64> = HashMap::new();
    let mut unanswered = 0u64;
    for mut t in tasks {
        match tokio::time::timeout_at(drain_limit, &mut t).await {
            Ok(r) => {
                let (a, d, s) = r?;
                *answers.entry(a).or_default() += 1;
                if a == Answer::Stored {
                    from_due.push(d);
                    from_send.push(s);
                }
            }
            Err(_) => {
                t.abort();
                unanswered += 1;
            }
        }
    }
    let all_done = t0.elapsed();
    let m = meter.finish();
    from_due.sort();
    from_send.sort();
    // Percentiles over every event sent: one not stored (refused, or not answered within the
    // drain limit) ranks above every stored one (the figure is then null: "not met").
    let rank = |p: f64| -> Value {
        let total = n as usize;
        let idx = ((total as f64 - 1.0) * p).round() as usize;
        from_due
            .get(idx)
            .map(|d| json!(r2(d.as_secs_f64() * 1000.0)))
            .unwrap_or(Value::Null)
    };
    let (p50, p99) = (rank(0.50), rank(0.99));
    let check = if unanswered == 0 {
        check_stored(&svc, before + from_due.len() as u64).await?
    } else {
        json!("not checked: some events unanswered")
    };
    let line = json!({
        "bench": "callbacks", "figure": "inbound: open loop, time to the 200", "target_events_per_s": rate, "events": n,
        "sent_over_s": r2(send_window.as_secs_f64()), "answers_waited_for_s": r2(all_done.as_secs_f64()),
        "stored_per_s_achieved": (from_due.len() as f64 / all_done.as_secs_f64()).round(), "late_sends_over_5ms": late_sends,
        "max_in_flight": MAX_IN_FLIGHT, "unanswered_within_drain_limit": unanswered, "drain_limit_s": OPEN_LOOP_DRAIN_S,
        "answers": answers_json(&answers), "from_send": lat_json(&from_send), "delivered_meanwhile": receiver.distinct(), "check": check,
        "latency_from": "the moment each event was due (open loop: a slow answer delays nothing else)",
        "p50_ms": p50, "p99_ms": p99, "max_ms": if unanswered == 0 { json!(r2(from_due.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0))) } else { Value::Null },
        "answered_p50_ms": r2(percentile(&from_due, 0.5)), "answered_p99_ms": r2(percentile(&from_due, 0.99)),
    });
    emit(&merge(line, m));
    println!(
        "# callbacks open loop at {rate}/s: p50 {p50} ms, p99 {p99} ms (null: beyond {OPEN_LOOP_DRAIN_S} s); {} of {n} stored, {late_sends} sends late, {unanswered} unanswered",
        from_due.len()
    );
    svc.stop(Duration::from_secs(10)).await;
    Ok(())
}

/// Each event posted twice at the same moment (the second with a fresh `t`, as a sender's
/// retry): stored once, delivered once.
async fn phase_repeats(ctx: &Ctx) -> Result<()> {
    let n = ctx.opts.repeat_events.clamp(1, 1000);
    let (svc, receiver) = ctx.fresh("repeats").await?;
    let url = format!("{}/callbacks/css", svc.base);
    let next = Arc::new(AtomicU64::new(0));
    let event_time = now_s();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, url, next) = (svc.client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers: HashMap<Answer, u64> = HashMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return answers;
                }
                let stream = format!("rep{}-{i}", std::process::id());
                let t = now_s() + 600;
                let a = css_push(HEALTHY_DOMAIN, &stream, i, event_time, t);
                let b = css_push(HEALTHY_DOMAIN, &stream, i, event_time, t + 1);
                let (x, y) =
                    tokio::join!(post_event(&client, &url, a), post_event(&client, &url, b));
                *answers.entry(x).or_default() += 1;
                *answers.entry(y).or_default() += 1;
            }
        }));
    }
    let mut answers: HashMap<Answer, u64> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await? {
            *answers.entry(k).or_default() += v;
        }
    }
    let until = Instant::now() + Duration::from_secs(60);
    while receiver.distinct() < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give late duplicates a moment to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored = svc.counter("relaycast_stream_events_total").await?;
    let repeated = svc
        .counter("relaycast_stream_events_repeated_total")
        .await?;
    let listed = svc
        .v1(reqwest::Method::GET, "/v1/streams", "&Limit=1000", None)
        .await?["TotalNum"]
        .as_u64()
        .unwrap_or(0);
    let ok = stored as usize == n
        && repeated as usize == n
        && listed as usize == n
        && receiver.distinct() == n
        && receiver.posts() as usize == n
        && answers.get(&Answer::Stored).copied().unwrap_or(0) as usize == 2 * n;
    emit(&json!({
        "bench": "callbacks", "figure": "repeats: each event posted twice at once", "events": n, "posts": 2 * n,
        "answers": answers_json(&answers), "service_stored_counter": stored, "service_repeated_counter": repeated,
        "v1_streams_total": listed, "receiver_distinct_events": receiver.distinct(), "receiver_posts": receiver.posts(), "ok": ok,
    }));
    println!(
        "# callbacks repeats: {n} events posted twice: stored {stored}, repeats {repeated}, listed {listed}, delivered {} distinct in {} posts: {}",
        receiver.distinct(),
        receiver.posts(),
        if ok { "ok" } else { "MISMATCH" }
    );
    svc.stop(Duration::from_secs(10)).await;
    if !ok {
        bail!("repeats check failed");
    }
    Ok(())
}

/// Queues `healthy` + `dead` events with no notifier running, then starts the notifier on the
/// same data and counts deliveries at the healthy receiver.
async fn outbound_run(ctx: &Ctx, healthy: usize, dead: usize) -> Result<()> {
    let receiver = Receiver::start().await?;
    let dead_rx = if dead > 0 {
        Some(DeadReceiver::start(&ctx.opts.dead).await?)
    } else {
        None
    };
    let dir = ctx.data("outbound");
    let svc = Service::start(&ctx.bin, &dir, "api", &ctx.opts).await?;
    svc.bind(HEALTHY_DOMAIN, &receiver.url).await?;
    if let Some(d) = &dead_rx {
        svc.bind(DEAD_DOMAIN, &d.url).await?;
    }
    // Interleave: every k-th event goes to the dead receiver, so its share is spread over the
    // whole queue as a fleet's would be.
    let total = healthy + dead;
    let url = format!("{}/callbacks/css", svc.base);
    let next = Arc::new(AtomicU64::new(0));
    let fill_started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, next) = (svc.client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    return failed;
                }
                // Event i is dead when floor((i+1)*dead/total) > floor(i*dead/total).
                let is_dead = (i + 1) * dead / total > i * dead / total;
                let domain = if is_dead { DEAD_DOMAIN } else { HEALTHY_DOMAIN };
                let (stream, seq) = next_stream();
                let now = now_s();
                if post_event(
                    &client,
                    &url,
                    css_push(domain, &stream, seq, now, now + 600),
                )
                .await
                    != Answer::Stored
                {
                    failed += 1;
                }
            }
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await?;
    }
    if failed > 0 {
        bail!("{failed} of {total} events were not stored while filling the queue");
    }
    let fill_s = fill_started.elapsed().as_secs_f64();
    svc.stop(Duration::from_secs(10)).await;

    // The notifier on the same data: a burst of `total` queued deliveries.
    let started = Instant::now();
    let svc = Service::start(&ctx.bin, &dir, "api,notifier,scheduler", &ctx.opts).await?;
    let meter_name = if dead > 0 {
        "outbound-dead"
    } else {
        "outbound-healthy"
    };
    let meter = Meter::start(svc.pid(), ctx.opts.perf_dir.as_deref(), meter_name);
    let window = Duration::from_secs(ctx.opts.window);
    let give_up = started + window + Duration::from_secs(120);
    // Wait for the first delivery, then one window (or until every healthy event arrived).
    while receiver.distinct() == 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = receiver
        .arrivals()
        .first()
        .copied()
        .unwrap_or_else(Instant::now);
    let window_end = first + window;
    while receiver.distinct() < healthy && Instant::now() < window_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = meter.finish();
    let arrivals = receiver.arrivals();
    let end = window_end.min(Instant::now());
    let in_window = arrivals.iter().filter(|a| **a <= end).count();
    let span = (end - first).as_secs_f64().max(1e-3);
    let rate = in_window as f64 / span;
    // Per-second counts, to show the shape (a burst that then starves shows here).
    let mut per_s = vec![0u64; span.ceil() as usize];
    for a in arrivals.iter().filter(|a| **a <= end) {
        let s = ((*a - first).as_secs_f64() as usize).min(per_s.len().saturating_sub(1));
        if let Some(slot) = per_s.get_mut(s) {
            *slot += 1;
        }
    }
    // Then the rest of the healthy backlog, for the time to drain it all.
    while receiver.distinct() < healthy && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = (receiver.distinct() >= healthy)
        .then(|| (receiver.arrivals().last().copied().unwrap_or(first) - started).as_secs_f64());
    let dead_conns = dead_rx
        .as_ref()
        .map(|d| d.connections.load(Ordering::Relaxed));
    let figure = if dead > 0 {
        "outbound: healthy deliveries/s with a dead receiver"
    } else {
        "outbound: healthy deliveries/s, healthy receiver alone"
    };
    let line = json!({
        "bench": "callbacks", "figure": figure, "healthy_events": healthy, "dead_events": dead, "dead_receiver": dead_rx.as_ref().map(|_| ctx.opts.dead.clone()),
        "fill_s": r2(fill_s), "fill_events_per_s": (total as f64 / fill_s).round(),
        "delivered_in_window": in_window, "deliveries_per_s": rate.round(), "vs_raw_commit": ctx.ratio(rate),
        "per_second": per_s, "first_delivery_after_start_s": r2((first - started).as_secs_f64()),
        "all_healthy_delivered_after_s": drained.map(r2), "receiver_posts": receiver.posts(), "receiver_distinct": receiver.distinct(),
        "dead_connections": dead_conns,
        "notifier_concurrency": ctx.opts.notifier_concurrency, "endpoint_concurrency": ctx.opts.endpoint_concurrency,
    });
    emit(&merge(line, m));
    println!(
        "# callbacks outbound ({figure}): {rate:.0} deliveries/s over {span:.1} s; all {healthy} healthy delivered after {}",
        drained.map(|d| format!("{d:.1} s")).unwrap_or_else(|| "(not all within the limit)".into())
    );
    svc.stop(Duration::from_secs(10)).await;
    Ok(())
}

async fn phase_outbound(ctx: &Ctx) -> Result<()> {
    let healthy = ctx.opts.outbound_events.max(1);
    outbound_run(ctx, healthy, 0).await?;
    let share = ctx.opts.dead_share.clamp(0.0, 0.95);
    if share > 0.0 {
        let dead = ((healthy as f64) * share / (1.0 - share)).round() as usize;
        outbound_run(ctx, healthy, dead.max(1)).await?;
    }
    Ok(())
}

/// Runs the phases asked for.
pub async fn bench_callbacks(opts: CallbacksOptions) -> Result<()> {
    let bin = crate::relay::bench_bin(opts.relaycast_bin.as_deref(), "relaycast", "-p relaycast")?;
    if let Some(d) = &opts.perf_dir {
        std::fs::create_dir_all(d)?;
    }
    let dir = crate::temp_dir(opts.dir.as_deref())?;
    emit(&json!({ "bench": "callbacks", "figure": "machine",
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_string())),
        "relaycast_bin": bin.display().to_string(), "data_dir": dir.path().display().to_string(),
        "notifier_concurrency": opts.notifier_concurrency, "endpoint_concurrency": opts.endpoint_concurrency }));
    let mut ctx = Ctx {
        bin,
        dir,
        opts: opts.clone(),
        raw: None,
        runs: AtomicU64::new(0),
    };
    for phase in &opts.phases {
        emit(
            &json!({ "bench": "callbacks", "figure": "phase start", "phase": phase, "utc": crate::record::utc_now().1, "loadavg": crate::record::loadavg() }),
        );
        match phase.as_str() {
            "baseline" => {
                let dir = ctx.dir.path().to_path_buf();
                let n = opts.raw_commits;
                let rate =
                    tokio::task::spawn_blocking(move || crate::writes::raw_commits(Some(&dir), n))
                        .await??;
                // The first ceiling of the run is the one every ratio uses.
                ctx.raw.get_or_insert(rate);
            }
            "inbound" => phase_inbound(&ctx, false).await?,
            "inbound-alone" => phase_inbound(&ctx, true).await?,
            "open-loop" => phase_open_loop(&ctx).await?,
            "repeats" => phase_repeats(&ctx).await?,
            "outbound" => phase_outbound(&ctx).await?,
            other => {
                bail!("unknown phase {other} (baseline, inbound, inbound-alone, open-loop, repeats, outbound)")
            }
        }
        emit(
            &json!({ "bench": "callbacks", "figure": "phase end", "phase": phase, "utc": crate::record::utc_now().1, "loadavg": crate::record::loadavg() }),
        );
    }
    Ok(())
}
