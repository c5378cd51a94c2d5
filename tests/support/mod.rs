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
            if let Ok(status) = http_status(&self.url("/healthz")) {
                if status == 200 {
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

/// Minimal blocking HTTP GET returning the status, usable inside and outside a tokio runtime.
pub fn http_status(url: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12]).map_err(|e| e.to_string())?.parse().map_err(|_| "bad status".into())
}
