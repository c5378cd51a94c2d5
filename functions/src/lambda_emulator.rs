//! A Lambda Runtime API emulator on 127.0.0.1 (feature `test-support`), for the bootstrap
//! binaries' tests and the init-time bench: the endpoints a custom runtime talks to
//! (`GET /2018-06-01/runtime/invocation/next`, `POST …/invocation/{id}/response`,
//! `POST …/invocation/{id}/error`, `POST /2018-06-01/runtime/init/error`), events handed out
//! in the order [`Emulator::invoke`] queued them, with the headers Lambda sends.
//!
//! [`FunctionProcess`] runs a bootstrap binary against it with the environment Lambda gives a
//! function, and kills it when dropped.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::sync::watch;

/// The Runtime API's version prefix.
const PREFIX: &str = "/2018-06-01/runtime";

/// What a function answered to one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `POST …/response`: the body, as JSON (a string when it is not JSON).
    Response(Value),
    /// `POST …/error`: the `Lambda-Runtime-Function-Error-Type` header and the body.
    Error(Reported),
}

/// An error a function reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// The `Lambda-Runtime-Function-Error-Type` header, when sent.
    pub error_type: Option<String>,
    /// The body (`{"errorType": …, "errorMessage": …}`), as JSON.
    pub body: Value,
}

#[derive(Default)]
struct Calls {
    queued: VecDeque<(String, Value)>,
    outcomes: HashMap<String, Outcome>,
    init_errors: Vec<Reported>,
    next_requests: Vec<Instant>,
    seq: u64,
}

type Shared = Arc<watch::Sender<Calls>>;

/// A running emulator; stops serving when dropped.
pub struct Emulator {
    addr: SocketAddr,
    calls: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Emulator {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start() -> Emulator {
        let calls: Shared = Arc::new(watch::Sender::new(Calls::default()));
        let router = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next))
            .route(
                &format!("{PREFIX}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
            .route(&format!("{PREFIX}/init/error"), post(init_error))
            .with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Runtime API emulator on 127.0.0.1");
        let addr = listener.local_addr().expect("emulator address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Emulator {
            addr,
            calls,
            server,
        }
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API`: `127.0.0.1:port`, no scheme.
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    /// The environment Lambda gives function `name` (runtime API, name, memory, version, log
    /// group and stream), pointed at this emulator.
    pub fn lambda_env(&self, name: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.runtime_api()),
            ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/01/01/[$LATEST]emulator".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Queues `event` for the next `next` request; returns its request id.
    pub fn invoke(&self, event: Value) -> String {
        let mut id = String::new();
        self.calls.send_modify(|c| {
            c.seq += 1;
            id = format!("00000000-0000-4000-8000-{:012}", c.seq);
            c.queued.push_back((id.clone(), event));
        });
        id
    }

    /// What the function answered to invocation `id`, once it has (`None` after `timeout`).
    pub async fn outcome(&self, id: &str, timeout: Duration) -> Option<Outcome> {
        self.wait(timeout, |c| c.outcomes.get(id).cloned()).await
    }

    /// [`Emulator::invoke`], then its [`Emulator::outcome`].
    pub async fn call(&self, event: Value, timeout: Duration) -> Option<Outcome> {
        let id = self.invoke(event);
        self.outcome(&id, timeout).await
    }

    /// The first error posted to `/init/error` (`None` after `timeout`).
    pub async fn init_error(&self, timeout: Duration) -> Option<Reported> {
        self.wait(timeout, |c| c.init_errors.first().cloned()).await
    }

    /// When the first `next` request arrived: the function finished its init (`None` after
    /// `timeout`).
    pub async fn first_next(&self, timeout: Duration) -> Option<Instant> {
        self.wait(timeout, |c| c.next_requests.first().copied())
            .await
    }

    async fn wait<T>(
        &self,
        timeout: Duration,
        mut found: impl FnMut(&Calls) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.calls.subscribe();
        let mut value = None;
        let _ = tokio::time::timeout(
            timeout,
            rx.wait_for(|c| {
                value = found(c);
                value.is_some()
            }),
        )
        .await;
        value
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Long-polls like Lambda: answers when an event is queued, never with "nothing".
async fn next(State(calls): State<Shared>) -> Response {
    let mut rx = calls.subscribe();
    calls.send_modify(|c| c.next_requests.push(Instant::now()));
    loop {
        let mut taken = None;
        calls.send_if_modified(|c| {
            taken = c.queued.pop_front();
            taken.is_some()
        });
        if let Some((id, event)) = taken {
            let deadline_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
                + 60_000;
            let headers = [
                ("Lambda-Runtime-Aws-Request-Id", id.clone()),
                ("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string()),
                (
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:relaycast".to_string(),
                ),
                (
                    "Lambda-Runtime-Trace-Id",
                    format!("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=1:{id}"),
                ),
                ("Content-Type", "application/json".to_string()),
            ];
            let mut response = event.to_string().into_response();
            for (name, value) in headers {
                if let Ok(value) = value.parse() {
                    response.headers_mut().insert(name, value);
                }
            }
            return response;
        }
        if rx.wait_for(|c| !c.queued.is_empty()).await.is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
}

fn reported(headers: &HeaderMap, body: &Bytes) -> Reported {
    Reported {
        error_type: headers
            .get("Lambda-Runtime-Function-Error-Type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: json_or_text(body),
    }
}

fn json_or_text(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

async fn response(
    State(calls): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    calls.send_modify(|c| {
        c.outcomes
            .insert(id, Outcome::Response(json_or_text(&body)));
    });
    accepted()
}

async fn error(
    State(calls): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    calls.send_modify(|c| {
        c.outcomes
            .insert(id, Outcome::Error(reported(&headers, &body)));
    });
    accepted()
}

async fn init_error(State(calls): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    calls.send_modify(|c| c.init_errors.push(reported(&headers, &body)));
    accepted()
}

/// A bootstrap binary started with an environment, its stdout and stderr collected; killed
/// when dropped.
pub struct FunctionProcess {
    child: Child,
    /// When the process was started.
    pub started: Instant,
    output: Arc<Mutex<String>>,
}

impl FunctionProcess {
    /// Starts `bin` with exactly `env` added to a cleared environment plus `PATH` (so nothing
    /// of the caller's AWS or relaycast configuration leaks in).
    pub fn start(bin: &Path, env: &[(String, String)]) -> FunctionProcess {
        let mut command = Command::new(bin);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(String::new()));
        // Drained on threads of their own: a full pipe would block the function.
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    output
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&text);
                }
            });
        }
        FunctionProcess {
            child,
            started,
            output,
        }
    }

    /// What it printed so far (stdout and stderr, interleaved).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Its exit status, waiting up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
