//! `relaycast up` as a user runs it: health, metrics, and one clear line for every bad start.

mod support;

use support::{free_port, run_relaycast, RelaycastProcess};

#[tokio::test]
async fn up_serves_health_and_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let relaycast = RelaycastProcess::start(&dir.path().join("data"), &[], &[]);
    let client = reqwest::Client::new();

    let health: serde_json::Value = client.get(relaycast.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");

    let metrics = client.get(relaycast.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("relaycast_queue_visible_messages{queue=\"relay-jobs\"}"), "{text}");
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
    assert_ne!(code, 0, "must fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line expected: {stderr}");
    assert!(lines[0].starts_with("relaycast: error:"), "{stderr}");
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
    let (code, _, err) = run_relaycast(&["up", "--config", config_s], &[("RELAYCAST_DATA_DIR", data_s)]);
    assert_one_line_failure(code, &err, "relaycast.toml");

    // An unknown key.
    std::fs::write(&config, "http_adr = \"127.0.0.1:1\"\n").unwrap();
    let (code, _, err) = run_relaycast(&["up", "--config", config_s], &[("RELAYCAST_DATA_DIR", data_s)]);
    assert_one_line_failure(code, &err, "http_adr");

    // A missing config file.
    let (code, _, err) = run_relaycast(&["up", "--config", "/nonexistent/relaycast.toml"], &[]);
    assert_one_line_failure(code, &err, "/nonexistent/relaycast.toml");

    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let (code, _, err) = run_relaycast(
        &["up"],
        &[("RELAYCAST_DATA_DIR", data_s), ("RELAYCAST_HTTP_ADDR", busy_addr.as_str())],
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
        &[("RELAYCAST_DATA_DIR", bad_data.to_str().unwrap()), ("RELAYCAST_HTTP_ADDR", addr.as_str())],
    );
    assert_one_line_failure(code, &err, "data directory");

    // An unknown role.
    let (code, _, err) = run_relaycast(&["up", "--roles", "api,juggler"], &[("RELAYCAST_DATA_DIR", data_s)]);
    assert_one_line_failure(code, &err, "juggler");
}
