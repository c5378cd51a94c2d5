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
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    pub fn spawn(data_dir: &Path, addr: &str, env: &[(&str, &str)], args: &[&str]) -> RelaycastProcess {
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
        RelaycastProcess { child, addr: addr.to_string(), data_dir: data_dir.to_path_buf(), stdout, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("relaycast exited early with {status}; stderr: {:?}", self.stderr.lock().unwrap());
            }
            if let Ok(resp) = reqwest::blocking_get(&self.url("/healthz")) {
                if resp == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "relaycast not healthy in time; stderr: {:?}", self.stderr.lock().unwrap());
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
}

impl Drop for RelaycastProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
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

/// Minimal blocking HTTP GET for readiness checks, without pulling a blocking client in.
pub mod reqwest {
    pub fn blocking_get(url: &str) -> Result<u16, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let client = ::reqwest::Client::builder()
                .timeout(std::time::Duration::from_millis(500))
                .build()
                .map_err(|e| e.to_string())?;
            client.get(url).send().await.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
        })
    }
}
