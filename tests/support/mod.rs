//! Test helpers: run `relaycast up` as a child process on a free port with a fresh data dir, or
//! in-process with an injectable clock.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `relaycast up` child process; killed on drop.
pub struct RelaycastProcess {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl RelaycastProcess {
    /// Starts `relaycast up` on a free port with `data_dir`, extra env and args, and waits until
    /// `/healthz` answers.
    pub fn start(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> RelaycastProcess {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut process = Self::spawn(data_dir, &addr, env, args);
        process.wait_healthy(Duration::from_secs(20));
        process
    }

    /// Starts without waiting for health.
    pub fn spawn(
        data_dir: &Path,
        addr: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> RelaycastProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
        cmd.arg("up").args(args);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RELAYCAST_HTTP_ADDR", addr)
            .env("RELAYCAST_DATA_DIR", data_dir)
            .env("RELAYCAST_LOG_FORMAT", "json");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn relaycast");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        pump(child.stdout.take().unwrap(), stdout.clone());
        pump(child.stderr.take().unwrap(), stderr.clone());
        RelaycastProcess {
            child,
            addr: addr.to_string(),
            data_dir: data_dir.to_path_buf(),
            stdout,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "relaycast exited early with {status}; stderr: {:?}",
                    self.stderr.lock().unwrap()
                );
            }
            if let Ok(status) = http_status(&self.url("/healthz")) {
                if status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "relaycast not healthy in time; stderr: {:?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

/// Lines of the service's output a failing test prints.
const LOG_TAIL_ON_FAILURE: usize = 300;

impl Drop for RelaycastProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that fails says why the service thinks it failed: the tail of its log goes
        // to the test's output, which the harness shows only for a failure.
        if std::thread::panicking() {
            for (name, lines) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                let lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                let from = lines.len().saturating_sub(LOG_TAIL_ON_FAILURE);
                eprintln!(
                    "--- relaycast {name} ({} lines, the last {} here) ---",
                    lines.len(),
                    lines.len() - from
                );
                for line in &lines[from..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn pump(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

/// Runs `relaycast` to completion and returns (exit code, stdout, stderr).
pub fn run_relaycast(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run relaycast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Minimal blocking HTTP GET returning the status, usable inside and outside a tokio runtime.
pub fn http_status(url: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|_| "bad status".into())
}

// ---------------------------------------------------------------------------------------------
// The relay control API as a client sees it: signed requests, a config with test accounts, a
// callback receiver, and polling instead of sleeping.
// ---------------------------------------------------------------------------------------------

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde_json::Value;

/// The API paths of seed 001.
pub const FORWARD_PATH: &str = "/api/cdn/v2/forwardRequest.action";
/// The task query path.
pub const QUERY_PATH: &str = "/api/cdn/v2/forwardQueryByPage.action";

/// The main test account: enabled, default limits, any destination host.
pub const ACME: (&str, &str) = ("acme", "0123456789abcdef0123456789abcdef");
/// A second enabled account, to show accounts do not see each other's tasks.
pub const OTHER: (&str, &str) = ("other", "fedcba9876543210fedcba9876543210");
/// An account whose API access is disabled.
pub const DISABLED: (&str, &str) = ("disabled", "00000000000000001111111111111111");
/// An account allowed 3 calls per window.
pub const LIMITED: (&str, &str) = ("limited", "22222222222222223333333333333333");
/// An account that may push to 127.0.0.1 only.
pub const RESTRICTED: (&str, &str) = ("restricted", "44444444444444445555555555555555");
/// An account with a call limit high enough for bulk tests.
pub const BULK: (&str, &str) = ("bulk", "66666666666666667777777777777777");

/// The seed's worked signature example: account `n` (the seed's example URL's), its secret key,
/// and the example's `r` and `k = md5(r + key)`.
pub const SEED_AUTH_EXAMPLE: SeedAuthExample = SeedAuthExample {
    n: "your_account",
    key: "012f37a3f2952",
    r: "1409284800",
    k: "b9fed80be752551834eec3e52fa94115",
};

/// See [`SEED_AUTH_EXAMPLE`].
pub struct SeedAuthExample {
    pub n: &'static str,
    pub key: &'static str,
    pub r: &'static str,
    pub k: &'static str,
}

impl SeedAuthExample {
    /// The account, enabled with the default limits, to push onto [`Settings::accounts`].
    ///
    /// [`Settings::accounts`]: relaycast_core::config::Settings::accounts
    pub fn account(&self) -> relaycast_core::config::AccountSettings {
        relaycast_core::config::AccountSettings {
            name: self.n.to_string(),
            key: relaycast_core::domain::auth::SecretKey::new(self.key),
            api_enabled: true,
            call_limit: 100,
            allowed_push_hosts: Vec::new(),
        }
    }

    /// The query pairs `n`, `r`, `k` exactly as in the seed's example URL.
    pub fn pairs(&self) -> Vec<(String, String)> {
        vec![
            ("n".into(), self.n.into()),
            ("r".into(), self.r.into()),
            ("k".into(), self.k.into()),
        ]
    }
}

/// Writes a config file declaring the test accounts, with private targets allowed (every peer
/// of these tests is on 127.0.0.1). Returns its path.
pub fn write_config(dir: &Path) -> PathBuf {
    let account = |(name, key): (&str, &str), extra: &str| {
        format!("[[accounts]]\nname = \"{name}\"\nkey = \"{key}\"\n{extra}\n")
    };
    let text = [
        "allow_private_targets = true\n".to_string(),
        account(ACME, ""),
        account(OTHER, ""),
        account(DISABLED, "api_enabled = false"),
        account(LIMITED, "call_limit = 3"),
        account(RESTRICTED, "allowed_push_hosts = [\"127.0.0.1\"]"),
        account(BULK, "call_limit = 100000"),
    ]
    .concat();
    let path = dir.join("relaycast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The environment every API test runs with: quick outbox sweeps and callback retries.
pub const FAST_TIMING: &[(&str, &str)] = &[
    ("RELAYCAST_TIMING__SCHEDULER_TICK_MS", "100"),
    ("RELAYCAST_TIMING__CALLBACK_RETRY_INTERVAL_MS", "500"),
    ("RELAYCAST_LOG_FILTER", "warn"),
];

/// A `relaycast up` child (API, notifier and scheduler; no relay worker, so no media flows) with
/// its own data directory, port and the test accounts.
pub struct Service {
    pub process: RelaycastProcess,
    pub config: PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts with [`FAST_TIMING`] plus `env`.
    pub fn start(env: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path());
        let mut all: Vec<(String, String)> = FAST_TIMING
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let process = Self::spawn(dir.path(), &config, &all);
        Service {
            process,
            config,
            env: all,
            _dir: dir,
        }
    }

    fn spawn(dir: &Path, config: &Path, env: &[(String, String)]) -> RelaycastProcess {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args = [
            "--config",
            config.to_str().unwrap(),
            "--roles",
            "api,notifier,scheduler",
        ];
        RelaycastProcess::start(&dir.join("data"), &env, &args)
    }

    /// Kills the process (SIGKILL) and starts a new one on the same data directory (and a new
    /// port: take new clients).
    pub fn restart(&mut self) {
        self.process.kill9();
        self.process = Self::spawn(self._dir.path(), &self.config, &self.env);
    }

    /// `http://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.process.addr)
    }

    /// A client signed as [`ACME`].
    pub fn api(&self) -> Api {
        self.api_as(ACME)
    }

    /// A client signed as `account`.
    pub fn api_as(&self, (name, key): (&str, &str)) -> Api {
        Api::new(&self.base(), name, key)
    }
}

/// A client of the control API signing every request with a fresh `r` and `k = md5(r + key)`.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub account: String,
    pub key: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, account: &str, key: &str) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Api {
            base: base.trim_end_matches('/').to_string(),
            account: account.to_string(),
            key: key.to_string(),
            client,
        }
    }

    /// A random string never used before by this test binary (at most 32 characters).
    pub fn fresh_r() -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "{}x{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst),
            nanos
        )
    }

    /// `md5(r + key)`, 32 lower-case hex digits.
    pub fn sign(&self, r: &str) -> String {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(format!("{r}{}", self.key).as_bytes()))
    }

    /// `n=…&r=…&k=…` with a fresh `r`.
    pub fn auth_pairs(&self) -> Vec<(String, String)> {
        let r = Self::fresh_r();
        let k = self.sign(&r);
        vec![
            ("n".into(), self.account.clone()),
            ("r".into(), r),
            ("k".into(), k),
        ]
    }

    fn url(&self, path: &str, pairs: &[(String, String)]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).unwrap();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url
    }

    /// `POST forwardRequest.action` with a JSON body.
    pub async fn forward(&self, body: &Value) -> (u16, Value) {
        self.forward_bytes(serde_json::to_vec(body).unwrap()).await
    }

    /// `POST forwardRequest.action` with raw bytes as the body.
    pub async fn forward_bytes(&self, body: Vec<u8>) -> (u16, Value) {
        self.forward_signed_as(&self.auth_pairs(), body).await
    }

    /// `POST forwardRequest.action` with exactly these query pairs (for the auth rows).
    pub async fn forward_signed_as(
        &self,
        pairs: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let req = self
            .client
            .post(self.url(FORWARD_PATH, pairs))
            .header("content-type", "application/json")
            .body(body);
        answer(req.send().await.expect("forwardRequest.action")).await
    }

    /// `GET forwardQueryByPage.action` with these parameters.
    pub async fn query(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let mut pairs = self.auth_pairs();
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.query_signed_as(&pairs).await
    }

    /// `GET forwardQueryByPage.action` with exactly these query pairs.
    pub async fn query_signed_as(&self, pairs: &[(String, String)]) -> (u16, Value) {
        answer(
            self.client
                .get(self.url(QUERY_PATH, pairs))
                .send()
                .await
                .expect("forwardQueryByPage.action"),
        )
        .await
    }

    /// A `/v1` call: `method` on `path` (with extra query `params`), signed, with a JSON body.
    pub async fn v1(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut pairs = self.auth_pairs();
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, self.url(path, &pairs));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        answer(req.send().await.expect("v1 call")).await
    }

    /// A `/v1` call that must succeed; returns `Response`.
    pub async fn v1_ok(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: Option<Value>,
    ) -> Value {
        let (status, v) = self.v1(method, path, params, body).await;
        assert_eq!(status, 200, "{method} {path}: {v}");
        assert!(v["Response"]["RequestId"].is_string(), "{v}");
        v["Response"].clone()
    }

    /// The query's item for `id`, or `None` when the query finds no task.
    pub async fn task(&self, id: &str) -> Option<Value> {
        let (status, page) = self.query(&[("id", id)]).await;
        assert_eq!(status, 200, "query id={id}: {page}");
        match page["total"].as_u64() {
            Some(0) => None,
            Some(1) => Some(page["list"][0].clone()),
            _ => panic!("query id={id} answered {page}"),
        }
    }
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls `f` until it returns `Some`, failing after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One POST the callback receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The body as sent.
    pub raw: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
    /// What the receiver answered (0 for a stalled request).
    pub answered: u16,
    /// The request's path and query.
    pub uri: String,
    /// The request's `Content-Type`.
    pub content_type: String,
    /// `X-Relaycast-Signature`, when sent.
    pub signature: Option<String>,
    /// `X-Relaycast-Event-Id`, when sent.
    pub event_id: Option<String>,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    failures_left: AtomicUsize,
    stall: AtomicBool,
    delay_ms: AtomicU64,
    closes_left: AtomicUsize,
}

/// A customer's callback endpoint: a real HTTP server on 127.0.0.1 recording every POSTed body;
/// it answers 200, or 500 to the next N requests, or closes the connection without an answer
/// to the next N, or stalls (never answers while stalling).
pub struct CallbackReceiver {
    /// Where to point `transcallbackurl`.
    pub url: String,
    state: Arc<ReceiverState>,
    server: tokio::task::JoinHandle<()>,
}

impl CallbackReceiver {
    pub async fn start() -> CallbackReceiver {
        use axum::routing::post;
        let state = Arc::new(ReceiverState::default());
        let s = state.clone();
        let app = axum::Router::new().route(
            "/cb",
            post(
                move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                    let s = s.clone();
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        };
                        let content_type = header("content-type").unwrap_or_default();
                        let (signature, event_id) = (
                            header("x-relaycast-signature"),
                            header("x-relaycast-event-id"),
                        );
                        let uri = uri.to_string();
                        let at = Instant::now();
                        let stalled = s.stall.load(Ordering::SeqCst);
                        let failed = !stalled
                            && s.failures_left
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        let closed = !stalled
                            && !failed
                            && s.closes_left
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        let answered = if stalled || closed {
                            0
                        } else if failed {
                            500
                        } else {
                            200
                        };
                        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
                        s.received.lock().unwrap().push(Received {
                            raw: body,
                            body: json,
                            at,
                            answered,
                            uri,
                            content_type,
                            signature,
                            event_id,
                        });
                        if closed {
                            // Dropping the connection mid-request: hyper closes it with no answer.
                            panic!("receiver closes this connection without answering");
                        }
                        if stalled {
                            tokio::time::sleep(Duration::from_secs(120)).await;
                        }
                        let delay = s.delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        axum::http::StatusCode::from_u16(if answered == 0 { 200 } else { answered })
                            .unwrap()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cb", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CallbackReceiver { url, state, server }
    }

    /// Answer 500 to the next `n` requests, then 200.
    pub fn fail_next(&self, n: usize) {
        self.state.failures_left.store(n, Ordering::SeqCst);
    }

    /// Close the connection without an answer on the next `n` requests.
    pub fn close_next(&self, n: usize) {
        self.state.closes_left.store(n, Ordering::SeqCst);
    }

    /// Stall (never answer) every request from now on, or stop stalling.
    pub fn stall(&self, on: bool) {
        self.state.stall.store(on, Ordering::SeqCst);
    }

    /// Take `ms` to answer each request (a slow endpoint that still answers in time).
    pub fn answer_after(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Every delivery attempt about task `id` so far, in arrival order (retries and duplicates
    /// included).
    pub fn attempts_for(&self, id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.body["id"] == id)
            .collect()
    }

    /// The distinct events received so far about task `id`, in order of first arrival: what a
    /// customer deduplicating at-least-once deliveries sees.
    pub fn bodies_for(&self, id: &str) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.attempts_for(id)
            .into_iter()
            .filter(|r| seen.insert(r.raw.clone()))
            .map(|r| r.body)
            .collect()
    }

    /// Waits until `n` distinct events about task `id` arrived and returns them (all that
    /// arrived, see [`CallbackReceiver::bodies_for`]).
    pub async fn wait_for(&self, id: &str, n: usize) -> Vec<Value> {
        eventually(
            &format!("{n} callback(s) about {id}; got {:?}", self.bodies_for(id)),
            Duration::from_secs(20),
            || async {
                let got = self.bodies_for(id);
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

/// Checks `X-Relaycast-Signature` as a receiver would, in the few lines the documentation
/// promises: `t=<secs>,v1=<hex HMAC-SHA256(key, "<t>." + raw body)>`, `t` recent.
pub fn assert_relaycast_signature(r: &Received, key: &str) {
    use hmac::Mac;
    let header = r
        .signature
        .as_deref()
        .expect("X-Relaycast-Signature is sent");
    let (t, v1) = header.split_once(',').expect("t=…,v1=…");
    let t = t.strip_prefix("t=").expect("t=");
    let age = now_ms() / 1000 - t.parse::<i64>().expect("t is a number");
    assert!(
        (0..300).contains(&age),
        "t is the time of sending: {header}"
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.raw).as_bytes());
    assert_eq!(
        v1.strip_prefix("v1=").expect("v1="),
        hex::encode(mac.finalize().into_bytes()),
        "HMAC-SHA256 over t.body"
    );
    assert!(
        r.event_id.as_deref().is_some_and(|id| !id.is_empty()),
        "X-Relaycast-Event-Id is sent"
    );
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `YYYY-MM-DD HH:MM:SS` of `ms` at `offset_s` east of UTC (the civil-from-days algorithm, so
/// the tests do not use the product's own formatter).
pub fn format_time(ms: i64, offset_s: i64) -> String {
    let secs = ms.div_euclid(1000) + offset_s;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The seed's example request body (`cmd=1`), verbatim except that its markdown-mangled
/// destinations are moved to 127.0.0.1 and its callback URL to `callback`. Its `start`/`end` are
/// the seed's (2017, so `end` is in the past).
pub fn seed_body(callback: &str) -> Value {
    serde_json::json!({
        "transcallbackurl": callback,
        "cmd": "1",
        "type": "live",
        "list": [{
            "id": "task_unique_id_001",
            "src": [
                {"url": "http://source.example.com/live/stream1.flv", "wmImage": "http://source.example.com/assets/logo.jpg", "wmGravity": "TOP_LEFT"},
                {"url": "http://backup.example.com/live/stream1.flv"}
            ],
            "forward": [{"url": "rtmp://127.0.0.1:1935/live/output1"}, {"url": "rtmp://127.0.0.1:1935/live/output2"}],
            "start": "1495177025000",
            "end": "1495184225000",
            "fops": {"bps": "1200000", "res": "1280x720", "fps": "25", "vcodec": "libx264", "forced_gopInterval": "3000"},
            "extendParam": {"waitCrtUrlFinish": "1"}
        }]
    })
}

/// [`seed_body`] with its window moved to the future: start in 1 h, end in 3 h.
pub fn future_seed_body(callback: &str) -> Value {
    let mut v = seed_body(callback);
    let now = now_ms();
    v["list"][0]["start"] = Value::String((now + 3_600_000).to_string());
    v["list"][0]["end"] = Value::String((now + 3 * 3_600_000).to_string());
    v
}

/// A `cmd=1` of one live task starting now: source `rtmp://127.0.0.1:1/live/{id}`, these
/// destinations, callbacks to `callback` when given.
pub fn live_body(id: &str, forwards: &[&str], callback: Option<&str>) -> Value {
    let mut v = serde_json::json!({
        "cmd": "1",
        "type": "live",
        "list": [{
            "id": id,
            "src": [{"url": format!("rtmp://127.0.0.1:1/live/{id}")}],
            "forward": forwards.iter().map(|f| serde_json::json!({"url": f})).collect::<Vec<_>>(),
        }]
    });
    if let Some(cb) = callback {
        v["transcallbackurl"] = Value::String(cb.to_string());
    }
    v
}

/// A `cmd` (2, 3 or 5) body for `id` with these list item fields besides the id.
pub fn cmd_body(cmd: &str, id: &str, item: Value, callback: Option<&str>) -> Value {
    let mut entry = item;
    entry["id"] = Value::String(id.to_string());
    let mut v = serde_json::json!({"cmd": cmd, "type": "live", "list": [entry]});
    if let Some(cb) = callback {
        v["transcallbackurl"] = Value::String(cb.to_string());
    }
    v
}

/// Asserts the seed's accepted answer: exactly `{"http_code":"200","msg":"작업 수신 성공!","call_time":<ms>}`.
pub fn assert_accepted(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(
        obj.keys().map(String::as_str).collect::<Vec<_>>(),
        ["call_time", "http_code", "msg"],
        "{body}"
    );
    assert_eq!(body["http_code"], "200", "{body}");
    assert_eq!(body["msg"], "작업 수신 성공!", "{body}");
    assert_ms(&body["call_time"]);
}

/// Asserts a refusal: this HTTP status, business code and exact message, and a `call_time`.
pub fn assert_refused(
    status: u16,
    body: &Value,
    want_status: u16,
    want_code: &str,
    want_msg: &str,
) {
    assert_eq!(
        (status, body["http_code"].as_str(), body["msg"].as_str()),
        (want_status, Some(want_code), Some(want_msg)),
        "{body}"
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{body}");
    assert_ms(&body["call_time"]);
}

/// A JSON integer of Unix ms, 13 digits.
pub fn assert_ms(v: &Value) {
    let ms = v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"));
    assert_eq!(ms.to_string().len(), 13, "{v}");
}

/// `relaycast up` in-process (API, notifier, scheduler) on a [`ManualClock`], for rules that
/// take hours to show: the test moves time instead of waiting.
///
/// [`ManualClock`]: relaycast_core::ports::ManualClock
pub struct InProcess {
    pub host: Option<relaycast::RunningHost>,
    pub clock: relaycast_core::ports::ManualClock,
    /// A client signed as [`ACME`].
    pub api: Api,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts with the test accounts and quick timings, the clock at the current time.
    pub async fn start() -> InProcess {
        Self::start_with(|_| {}).await
    }

    /// Same, with `tune` applied to the settings first.
    pub async fn start_with(tune: impl FnOnce(&mut relaycast_core::config::Settings)) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path());
        let mut settings =
            relaycast_core::config::Settings::load(Some(&config), Vec::new()).unwrap();
        settings.http_addr = "127.0.0.1:0".into();
        settings.data_dir = dir.path().join("data");
        settings.roles = vec!["api".into(), "notifier".into(), "scheduler".into()];
        settings.timing.scheduler_tick_ms = 100;
        settings.timing.callback_retry_interval_ms = 500;
        settings.timing.drain_timeout_ms = 2_000;
        tune(&mut settings);
        let clock = relaycast_core::ports::ManualClock::starting_now();
        let host = relaycast::Host::start(settings, Arc::new(clock.clone()))
            .await
            .unwrap();
        let api = Api::new(&format!("http://{}", host.addr), ACME.0, ACME.1);
        InProcess {
            host: Some(host),
            clock,
            api,
            _dir: dir,
        }
    }

    /// The running host (its ports and settings).
    pub fn host(&self) -> &relaycast::RunningHost {
        self.host.as_ref().unwrap()
    }

    /// The manual clock's time.
    pub fn now_ms(&self) -> i64 {
        use relaycast_core::ports::Clock;
        self.clock.now_ms()
    }

    /// Stops every part and waits for them.
    pub async fn stop(mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown().await;
        }
    }
}

impl RelaycastProcess {
    /// SIGTERM, then waits up to `within` for the exit: the graceful stop an orchestrator does.
    /// Returns the exit status, or `None` if it was still running (it is then killed).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        sigterm(self.child.id());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
