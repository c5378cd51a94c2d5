//! A real browser for the playback tests: Debian's headless Chromium, driven by its chromedriver
//! over the W3C WebDriver protocol. That protocol is a few JSON POSTs (new session, navigate,
//! execute an async script, delete the session), so it is spoken with `reqwest` rather than a
//! WebDriver crate. A test binary includes it with `#[path = "support/browser.rs"] mod browser;`.
//!
//! chromedriver runs in its own process group, and Chromium, which it starts, runs in that group
//! too: the group is killed when the [`Browser`] is dropped, so a failing test leaves no browser
//! behind.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The flags Chromium runs with. Root needs `--no-sandbox`; without the background-networking
/// flags (`--disable-background-networking`, `--disable-component-update`, `--disable-sync`)
/// it keeps calling Google's services and floods this closed network with refused connections;
/// the autoplay policy lets a script `play()` a video without a user's click.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
];

/// How long an async script may run before WebDriver gives up on it. The scripts of the tests
/// have deadlines of their own, shorter than this, so that they report what they saw.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with one WebDriver session; chromedriver and Chromium are killed on drop.
pub struct Browser {
    /// chromedriver, until it is killed and reaped (then its pid may belong to someone else).
    driver: Option<Child>,
    base: String,
    session: String,
    client: reqwest::Client,
    /// The profile (`--user-data-dir`) and chromedriver's log.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free 127.0.0.1 port and a Chromium session with
    /// [`CHROMIUM_ARGS`] and a fresh profile. Panics, naming what is missing, when Chromium or
    /// chromedriver is not installed.
    pub async fn start() -> Browser {
        let chromium = require("chromium", "chromium");
        let chromedriver = require("chromedriver", "chromium-driver");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let mut browser = Browser {
            driver: Some(driver),
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(SCRIPT_TIMEOUT + Duration::from_secs(10))
                .build()
                .unwrap(),
            dir,
        };
        browser.wait_ready(Duration::from_secs(10)).await;
        let profile = browser.dir.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let session = browser
            .call(
                "POST",
                "/session",
                json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": chromium, "args": args },
                } } }),
            )
            .await;
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {session}"))
            .to_string();
        browser
            .session_call(
                "POST",
                "/timeouts",
                json!({ "script": SCRIPT_TIMEOUT.as_millis() as u64 }),
            )
            .await;
        browser
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` as an async WebDriver script: it gets `args`, then the callback to call
    /// with its result, which is returned.
    pub async fn run_async(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Ends the session (Chromium quits), stops chromedriver and checks that no Chromium of this
    /// profile is left.
    pub async fn quit(mut self) {
        self.session_call("DELETE", "", json!({})).await;
        self.session.clear();
        self.kill();
        let profile = self.dir.path().join("profile");
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            // Zombies have no command line, so only a live Chromium of this profile matches.
            let left = Command::new("pgrep")
                .arg("-f")
                .arg(profile.as_os_str())
                .output()
                .expect("pgrep (procps)");
            if left.stdout.is_empty() {
                return;
            }
            assert!(
                Instant::now() < until,
                "Chromium still runs after the session ended: pids {}",
                String::from_utf8_lossy(&left.stdout).trim()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills chromedriver's process group (Chromium is in it) and reaps chromedriver.
    fn kill(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            relaycast_workers::process::kill_group(driver.id());
            let _ = driver.kill();
            let _ = driver.wait();
        }
    }

    async fn wait_ready(&mut self, within: Duration) {
        let until = Instant::now() + within;
        loop {
            if let Some(Ok(Some(status))) = self.driver.as_mut().map(Child::try_wait) {
                panic!("chromedriver exited with {status}: {}", self.log());
            }
            let ready = async {
                let resp = self
                    .client
                    .get(format!("{}/status", self.base))
                    .send()
                    .await
                    .ok()?;
                resp.json::<Value>().await.ok()?["value"]["ready"].as_bool()
            };
            if ready.await == Some(true) {
                return;
            }
            assert!(
                Instant::now() < until,
                "chromedriver not ready in {within:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    /// One WebDriver command; returns its `value`, or panics with the driver's error.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}; {}", self.log()));
        let status = resp.status();
        let answer: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {status}, not JSON: {e}"));
        let value = answer["value"].clone();
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {}: {}; {}",
            value["error"],
            value["message"],
            self.log()
        );
        value
    }

    /// The end of chromedriver's log, for failure messages.
    fn log(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        format!(
            "chromedriver log (end):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The path of `program` on `PATH`; panics naming the Debian package when it is not there.
fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "{program} is missing (Debian package {package}): `scripts/install-deps.sh test` installs it"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
