//! `relaycast up` as a user runs it: health, metrics, and one clear line for every bad start.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relaycast_core::config::Settings;
use relaycast_core::ports::{ObjectStore, SystemClock};
use support::{free_port, run_relaycast, Api, RelaycastProcess, ACME};

#[tokio::test]
async fn up_serves_health_and_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let relaycast = RelaycastProcess::start(&dir.path().join("data"), &[], &[]);
    let client = reqwest::Client::new();

    let health: serde_json::Value = client
        .get(relaycast.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let metrics = client.get(relaycast.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("relaycast_queue_visible_messages{queue=\"relay-jobs\"}"),
        "{text}"
    );
    assert!(text.contains("relaycast_http_requests_total"), "{text}");
}

#[test]
fn version_and_help() {
    let (code, out, _) = run_relaycast(&["version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("relaycast "));
    let (code, out, _) = run_relaycast(&["up", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("--config") && out.contains("--roles"), "{out}");
}

fn assert_one_line_failure(code: i32, stderr: &str, needle: &str) {
    assert_one_line_failure_of("relaycast", code, stderr, needle);
}

fn assert_one_line_failure_of(program: &str, code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "must fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line expected: {stderr}");
    assert!(
        lines[0].starts_with(&format!("{program}: error:")),
        "{stderr}"
    );
    assert!(lines[0].contains(needle), "{needle} not in {stderr}");
}

#[test]
fn bad_starts_fail_with_one_clear_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let config = dir.path().join("relaycast.toml");
    let config_s = config.to_str().unwrap();

    // A config file that does not parse.
    std::fs::write(&config, "http_addr = [\n").unwrap();
    let (code, _, err) = run_relaycast(
        &["up", "--config", config_s],
        &[("RELAYCAST_DATA_DIR", data_s)],
    );
    assert_one_line_failure(code, &err, "relaycast.toml");

    // An unknown key.
    std::fs::write(&config, "http_adr = \"127.0.0.1:1\"\n").unwrap();
    let (code, _, err) = run_relaycast(
        &["up", "--config", config_s],
        &[("RELAYCAST_DATA_DIR", data_s)],
    );
    assert_one_line_failure(code, &err, "http_adr");

    // A missing config file.
    let (code, _, err) = run_relaycast(&["up", "--config", "/nonexistent/relaycast.toml"], &[]);
    assert_one_line_failure(code, &err, "/nonexistent/relaycast.toml");

    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let (code, _, err) = run_relaycast(
        &["up"],
        &[
            ("RELAYCAST_DATA_DIR", data_s),
            ("RELAYCAST_HTTP_ADDR", busy_addr.as_str()),
        ],
    );
    assert_one_line_failure(code, &err, &busy_addr);

    assert!(!data.exists(), "nothing may be written by a failed start");

    // A data directory that cannot be created (its parent is a regular file).
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad_data = file.join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = run_relaycast(
        &["up"],
        &[
            ("RELAYCAST_DATA_DIR", bad_data.to_str().unwrap()),
            ("RELAYCAST_HTTP_ADDR", addr.as_str()),
        ],
    );
    assert_one_line_failure(code, &err, "data directory");

    // An unknown role.
    let (code, _, err) = run_relaycast(
        &["up", "--roles", "api,juggler"],
        &[("RELAYCAST_DATA_DIR", data_s)],
    );
    assert_one_line_failure(code, &err, "juggler");
}

/// A client that never goes through a proxy from the test's environment.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls `f` every 50 ms until it returns `Some`, panicking with `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn relaycast_config_env_var_chooses_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chosen.toml");
    std::fs::write(
        &config,
        format!(
            "roles = [\"api\"]\n[[accounts]]\nname = \"{}\"\nkey = \"{}\"\n",
            ACME.0, ACME.1
        ),
    )
    .unwrap();
    let config_s = config.to_str().unwrap();

    // The file is read: the account it declares can call the API, and with an account declared
    // no development account is created.
    let relaycast = RelaycastProcess::start(
        &dir.path().join("data"),
        &[("RELAYCAST_CONFIG", config_s)],
        &[],
    );
    let api = Api::new(&relaycast.url(""), ACME.0, ACME.1);
    assert_eq!(api.task("no-such-task").await, None);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !relaycast.stdout_text().contains("development account"),
        "{}",
        relaycast.stdout_text()
    );
    drop(relaycast);

    // A broken file named only by RELAYCAST_CONFIG fails the start, naming that file.
    let broken = dir.path().join("broken-by-env.toml");
    std::fs::write(&broken, "roles = [\n").unwrap();
    let data = dir.path().join("data2");
    let (code, _, err) = run_relaycast(
        &["up"],
        &[
            ("RELAYCAST_CONFIG", broken.to_str().unwrap()),
            ("RELAYCAST_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    assert_one_line_failure(code, &err, "broken-by-env.toml");
    assert!(!data.exists(), "nothing may be written by a failed start");
}

/// The key of a `development account created: n=dev key=…` line, if `stdout` has one.
fn dev_account_keys(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("development account created: n=dev key="))
        .map(|k| k.trim().to_string())
        .collect()
}

#[tokio::test]
async fn development_account_is_created_printed_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let mut first = RelaycastProcess::start(&data, &[], &["--roles", "api"]);
    let key = wait_for(
        "the development account line",
        Duration::from_secs(5),
        || dev_account_keys(&first.stdout_text()).pop(),
    );
    assert_eq!(key.len(), 32, "{key}");
    assert!(key.chars().all(|c| c.is_ascii_alphanumeric()), "{key}");
    assert_eq!(
        dev_account_keys(&first.stdout_text()).len(),
        1,
        "{}",
        first.stdout_text()
    );
    let api = Api::new(&first.url(""), "dev", &key);
    assert_eq!(api.task("no-such-task").await, None);
    first.kill9();

    // A second start on the same data directory prints no new account, and the stored key
    // still signs requests.
    let second = RelaycastProcess::start(&data, &[], &["--roles", "api"]);
    let api = Api::new(&second.url(""), "dev", &key);
    assert_eq!(api.task("no-such-task").await, None);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        dev_account_keys(&second.stdout_text()).is_empty(),
        "{}",
        second.stdout_text()
    );
    let wrong = Api::new(&second.url(""), "dev", "00000000000000000000000000000000");
    let (status, body) = wrong.query(&[("id", "no-such-task")]).await;
    assert!(
        status != 200 || body["http_code"] != "200",
        "a wrong key must be refused: {status} {body}"
    );
}

#[tokio::test]
async fn object_playback_urls_are_served_by_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relaycast = RelaycastProcess::start(&data, &[], &["--roles", "api"]);

    // The data directory's object store, opened the way every relaycast process opens it.
    let settings = Settings {
        data_dir: data.clone(),
        http_addr: relaycast.addr.clone(),
        ..Settings::default()
    };
    let objects =
        relaycast_embedded::embedded::open_object_store(&settings, Arc::new(SystemClock)).unwrap();
    let key = "recordings/dev/show1/part-0001.mp4";
    let body: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    objects
        .put_bytes(key, body.clone().into(), "video/mp4")
        .await
        .unwrap();

    let url = objects
        .playback_url(key, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        url.starts_with(&relaycast.url(&format!("/objects/{key}?"))),
        "{url}"
    );
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.headers()["content-type"], "video/mp4");
    assert_eq!(response.bytes().await.unwrap().as_ref(), body.as_slice());

    // A tampered signature, or none, is refused; a signed URL of a missing object is a 404.
    let flipped = if url.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &url[..url.len() - 1]);
    assert_eq!(client().get(&tampered).send().await.unwrap().status(), 403);
    assert_eq!(
        client()
            .get(relaycast.url(&format!("/objects/{key}")))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let missing = objects
        .playback_url("recordings/none.mp4", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(client().get(&missing).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn jobs_in_flight_is_on_metrics_when_the_relay_role_runs() {
    let dir = tempfile::tempdir().unwrap();
    let relaycast = RelaycastProcess::start(&dir.path().join("data"), &[], &["--roles", "relay"]);
    let client = client();
    // The worker sets the gauge after each receive (a receive waits up to 1 s for a job).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = client
            .get(relaycast.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("relaycast_jobs_in_flight{worker=\"relay\"} 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relaycast_jobs_in_flight never appeared: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The standalone `relay` worker (workers/src/bin/relay.rs).
// ---------------------------------------------------------------------------------------------

/// The `relay` binary of this build: next to `relaycast` in the target directory. It belongs to
/// another crate, so Cargo does not build it for these tests: `cargo build --workspace --bins`
/// (or `make test`) does.
fn relay_bin() -> PathBuf {
    let name = format!("relay{}", std::env::consts::EXE_SUFFIX);
    let relay = Path::new(env!("CARGO_BIN_EXE_relaycast")).with_file_name(name);
    assert!(
        relay.is_file(),
        "{} does not exist: build it first with `cargo build --workspace --bins` (or `cargo build -p relaycast-workers --bin relay`)",
        relay.display()
    );
    relay
}

/// `relay` with only PATH and `env` in its environment.
fn relay_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(relay_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run_relay(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = relay_command(args, env).output().expect("run relay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn relay_worker_with_a_bad_config_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("relay.toml");
    let config_s = config.to_str().unwrap();

    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlease_tttl_ms = 5\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let (code, _, err) = run_relay(&["--config", config_s], &[]);
    assert_eq!(code, 2, "{err}");
    assert_one_line_failure_of("relay", code, &err, "lease_tttl_ms");

    std::fs::write(&config, "data_dir = [\n").unwrap();
    let (code, _, err) = run_relay(&[], &[("RELAYCAST_CONFIG", config_s)]);
    assert_one_line_failure_of("relay", code, &err, "relay.toml");

    let (code, _, err) = run_relay(&["--config", "/nonexistent/relay.toml"], &[]);
    assert_one_line_failure_of("relay", code, &err, "/nonexistent/relay.toml");
    assert!(!data.exists(), "nothing may be written by a failed start");

    // A data directory that cannot be created (its parent is a regular file).
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad_data = file.join("data");
    let (code, _, err) = run_relay(&[], &[("RELAYCAST_DATA_DIR", bad_data.to_str().unwrap())]);
    assert_one_line_failure_of("relay", code, &err, "data directory");
}

/// Collects a child's output lines as they come.
fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let into = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
    lines
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn relay_worker_runs_on_the_data_dir_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlog_format = \"json\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();

    let mut cmd = relay_command(&["--config", config.to_str().unwrap()], &[]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn relay"));
    let stderr = collect_lines(child.0.stderr.take().unwrap());
    let text = || stderr.lock().unwrap().join("\n");

    wait_for("the relay worker to start", Duration::from_secs(20), || {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("relay exited early with {status}: {}", text());
        }
        text().contains("relay worker started").then_some(())
    });
    assert!(
        data.join("relaycast.db").is_file(),
        "the embedded store is in the data directory"
    );

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_for(
        "relay to exit after SIGTERM",
        Duration::from_secs(15),
        || child.0.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(0), "{status}: {}", text());
    std::thread::sleep(Duration::from_millis(100));
    assert!(text().contains("relay stopped"), "{}", text());
}
