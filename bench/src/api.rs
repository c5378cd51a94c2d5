//! Throughput and latency of the control API over HTTP: a real `relaycast` host (the same code
//! `relaycast up` runs, API role only, embedded SQLite; with `--moto` also the AWS adapters on
//! moto) on 127.0.0.1, driven by concurrent signed requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use relaycast::Host;
use relaycast_core::config::{AccountSettings, AwsSettings, Settings};
use relaycast_core::ports::SystemClock;
use serde_json::json;

const ACCOUNT: &str = "bench";
const KEY: &str = "0123456789abcdef0123456789abcdef";

struct Signer {
    seq: AtomicU64,
}

impl Signer {
    fn url(&self, base: &str, path: &str, extra: &str) -> String {
        let r = format!("b{}", self.seq.fetch_add(1, Ordering::Relaxed));
        let k = hex::encode(Md5::digest(format!("{r}{KEY}").as_bytes()));
        format!("{base}{path}?n={ACCOUNT}&r={r}&k={k}{extra}")
    }
}

/// Runs `requests` calls of `make(i)` with `concurrency` in flight; returns sorted latencies and
/// the wall time.
async fn drive<F, Fut>(
    requests: usize,
    concurrency: usize,
    make: F,
) -> Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (make, next) = (make.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= requests {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                make(i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for w in workers {
        all.extend(w.await??);
    }
    let wall = started.elapsed();
    all.sort();
    Ok((all, wall))
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn report(figure: &str, concurrency: usize, latencies: &[Duration], wall: Duration) {
    let rate = latencies.len() as f64 / wall.as_secs_f64();
    let (p50, p99) = (percentile(latencies, 0.50), percentile(latencies, 0.99));
    crate::record::emit(
        &json!({ "bench": "api", "figure": figure, "concurrency": concurrency, "requests": latencies.len(),
                "req_per_s": rate.round(), "p50_ms": (p50 * 100.0).round() / 100.0, "p99_ms": (p99 * 100.0).round() / 100.0 }),
    );
    println!("# api {figure} (concurrency {concurrency}): {} requests, {rate:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms", latencies.len());
}

/// The settings of the bench's host: the API role only, the bench account, on the embedded
/// adapters in `dir` or on `aws`.
fn bench_settings(dir: &tempfile::TempDir, aws: Option<AwsSettings>) -> Settings {
    Settings {
        http_addr: "127.0.0.1:0".into(),
        data_dir: dir.path().join("data"),
        roles: vec!["api".into()],
        log_filter: "warn".into(),
        allow_private_targets: true,
        accounts: vec![AccountSettings {
            name: ACCOUNT.into(),
            key: relaycast_core::domain::auth::SecretKey::new(KEY),
            api_enabled: true,
            call_limit: u32::MAX,
            allowed_push_hosts: vec![],
        }],
        aws,
        ..Default::default()
    }
}

/// A bench host on 127.0.0.1 and a client signing as the bench account.
struct BenchHost {
    host: relaycast::RunningHost,
    base: String,
    client: reqwest::Client,
    signer: Arc<Signer>,
}

impl BenchHost {
    /// Starts the host on the embedded adapters in `dir`, or on `aws`.
    async fn start(
        dir: &tempfile::TempDir,
        aws: Option<AwsSettings>,
        concurrency: usize,
    ) -> Result<BenchHost> {
        let host = Host::start(bench_settings(dir, aws), Arc::new(SystemClock))
            .await
            .context("starting the host")?;
        Ok(BenchHost {
            base: format!("http://{}", host.addr),
            host,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(concurrency)
                .build()?,
            signer: Arc::new(Signer {
                seq: AtomicU64::new(0),
            }),
        })
    }

    /// `requests` signed `cmd=1` creates with `concurrency` in flight.
    async fn creates(
        &self,
        requests: usize,
        concurrency: usize,
    ) -> Result<(Vec<Duration>, Duration)> {
        creates(
            &self.client,
            &self.base,
            &self.signer,
            requests,
            concurrency,
        )
        .await
    }
}

async fn creates(
    client: &reqwest::Client,
    base: &str,
    signer: &Arc<Signer>,
    requests: usize,
    concurrency: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let (c, b, s) = (client.clone(), base.to_string(), signer.clone());
    drive(requests, concurrency, move |i| {
        let (c, b, s) = (c.clone(), b.clone(), s.clone());
        async move {
            let body = json!({"cmd": "1", "type": "live", "list": [{
                "id": format!("task{i}"),
                "src": [{"url": format!("rtmp://127.0.0.1:1935/live/src{i}")}],
                "forward": [{"url": format!("rtmp://127.0.0.1:1935/live/out{i}")}]
            }]});
            let resp: serde_json::Value = c
                .post(s.url(&b, "/api/cdn/v2/forwardRequest.action", ""))
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            if resp["http_code"] != "200" {
                bail!("create refused: {resp}");
            }
            Ok(())
        }
    })
    .await
}

/// `cmd=1` creates on the embedded adapters and on the AWS ones (moto's server mode on
/// 127.0.0.1: DynamoDB, SQS, S3), side by side in one run.
pub async fn bench_api_backends(
    base_dir: Option<&std::path::Path>,
    requests: usize,
    concurrency: usize,
) -> Result<()> {
    if requests == 0 || concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let moto = relaycast_aws::moto::MotoServer::start();
    let aws = moto.settings("bench");
    relaycast_aws::moto::provision(&aws, 5)
        .await
        .context("provisioning moto")?;
    for (figure, aws) in [("embedded", None), ("aws on moto", Some(aws))] {
        let dir = crate::temp_dir(base_dir)?;
        let bench = BenchHost::start(&dir, aws, concurrency)
            .await
            .with_context(|| format!("on the {figure} adapters"))?;
        let (lat, wall) = bench.creates(requests, concurrency).await?;
        report(&format!("cmd=1 create ({figure})"), concurrency, &lat, wall);
        bench.host.shutdown().await;
    }
    Ok(())
}

/// `cmd=1` creates, then exact-id queries and fuzzy-src queries over what was created.
/// With `creates_only`, stops after the creates (the `writes` bench).
pub async fn bench_api(
    base_dir: Option<&std::path::Path>,
    requests: usize,
    concurrency: usize,
    creates_only: bool,
) -> Result<()> {
    if requests == 0 || concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let dir = crate::temp_dir(base_dir)?;
    let bench = BenchHost::start(&dir, None, concurrency).await?;
    let (lat, wall) = bench.creates(requests, concurrency).await?;
    let BenchHost {
        host,
        base,
        client,
        signer,
    } = bench;
    report("cmd=1 create", concurrency, &lat, wall);
    if creates_only {
        host.shutdown().await;
        return Ok(());
    }

    let (c, b, s) = (client.clone(), base.clone(), signer.clone());
    let (lat, wall) = drive(requests, concurrency, move |i| {
        let (c, b, s) = (c.clone(), b.clone(), s.clone());
        async move {
            let url = s.url(
                &b,
                "/api/cdn/v2/forwardQueryByPage.action",
                &format!("&id=task{}", i % requests.max(1)),
            );
            let resp: serde_json::Value = c.get(url).send().await?.json().await?;
            if resp["total"] != 1 {
                bail!("query by id failed: {resp}");
            }
            Ok(())
        }
    })
    .await?;
    report("query by id", concurrency, &lat, wall);

    let fuzzy = (requests / 10).max(10);
    let (c, b, s) = (client.clone(), base.clone(), signer.clone());
    let (lat, wall) = drive(fuzzy, concurrency, move |i| {
        let (c, b, s) = (c.clone(), b.clone(), s.clone());
        async move {
            let url = s.url(
                &b,
                "/api/cdn/v2/forwardQueryByPage.action",
                &format!("&src=live/src{}&pageSize=10", i % 100),
            );
            let resp: serde_json::Value = c.get(url).send().await?.json().await?;
            if resp["total"].as_u64().unwrap_or(0) == 0 {
                bail!("fuzzy query found nothing: {resp}");
            }
            Ok(())
        }
    })
    .await?;
    report(
        &format!("query by src over {requests} tasks"),
        concurrency,
        &lat,
        wall,
    );

    host.shutdown().await;
    Ok(())
}
