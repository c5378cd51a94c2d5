//! A `relaycast up` killed with SIGKILL while requests are being written and callbacks are in
//! flight loses nothing: every acknowledged write is there after a restart, and every callback
//! that was being delivered is delivered again once its visibility timeout passes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use md5::{Digest, Md5};
use support::RelaycastProcess;

const ACCOUNT: &str = "acme";
const KEY: &str = "0123456789abcdef0123456789abcdef";

fn signed(base: &str, path: &str, extra: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let r = format!("{}{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst) + 1_000_000);
    let k = hex::encode(Md5::digest(format!("{r}{KEY}").as_bytes()));
    format!("{base}{path}?n={ACCOUNT}&r={r}&k={k}{extra}")
}

async fn forward(client: &reqwest::Client, base: &str, body: serde_json::Value) -> Result<serde_json::Value, reqwest::Error> {
    client.post(signed(base, "/api/cdn/v2/forwardRequest.action", "")).json(&body).send().await?.json().await
}

fn create_body(id: &str, callback: &str) -> serde_json::Value {
    serde_json::json!({
        "transcallbackurl": callback,
        "cmd": "1",
        "type": "live",
        "list": [{ "id": id, "src": [{ "url": "rtmp://127.0.0.1:1/live/src" }], "forward": [{ "url": format!("rtmp://127.0.0.1:1/live/{id}") }] }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write_and_no_callback() {
    // A callback endpoint that stalls until told to answer.
    let answering = Arc::new(AtomicBool::new(false));
    // Every body that arrived, and those answered 200 (the only ones that count as delivered).
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::new(Mutex::new(Vec::new()));
    let delivered: Arc<Mutex<Vec<serde_json::Value>>> = Arc::new(Mutex::new(Vec::new()));
    let (a, rcv, dlv) = (answering.clone(), received.clone(), delivered.clone());
    let app = Router::new().route(
        "/cb",
        post(move |body: String| {
            let (a, rcv, dlv) = (a.clone(), rcv.clone(), dlv.clone());
            async move {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                rcv.lock().unwrap().push(json.clone());
                if !a.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                dlv.lock().unwrap().push(json);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relaycast.toml");
    std::fs::write(
        &config,
        format!("allow_private_targets = true\nroles = [\"api\", \"notifier\", \"scheduler\"]\n[[accounts]]\nname = \"{ACCOUNT}\"\nkey = \"{KEY}\"\ncall_limit = 100000\n[timing]\ncallback_timeout_ms = 1500\nother_callback_retry_interval_ms = 1000\nscheduler_tick_ms = 100\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap()];
    let mut first = RelaycastProcess::start(&data, &[], &args);
    let base = format!("http://{}", first.addr);
    let client = reqwest::Client::new();

    // Acknowledged writes: 20 tasks created, then stopped (each stop is a callback event).
    for i in 0..20 {
        let id = format!("stop{i}");
        assert_eq!(forward(&client, &base, create_body(&id, &callback)).await.unwrap()["http_code"], "200");
        let stop = serde_json::json!({ "transcallbackurl": callback, "cmd": "2", "type": "live", "list": [{ "id": id, "forward": [{ "url": format!("rtmp://127.0.0.1:1/live/{id}") }] }] });
        assert_eq!(forward(&client, &base, stop).await.unwrap()["http_code"], "200");
    }
    // Callbacks are now in flight at the stalled endpoint.
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no callback reached the endpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Writes under way at the moment of the kill.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, base, callback, acked) = (client.clone(), base.clone(), callback.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{w}n{i}");
                match forward(&client, &base, create_body(&id, &callback)).await {
                    Ok(json) if json["http_code"] == "200" => {
                        acked.lock().unwrap().insert(id);
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    first.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the writers should have been acknowledged a few times: {}", acked.len());
    assert!(delivered.lock().unwrap().is_empty(), "nothing was answered before the kill");

    // Restart on the same data directory; the endpoint now answers.
    answering.store(true, Ordering::SeqCst);
    let second = RelaycastProcess::start(&data, &[], &args);
    let base = format!("http://{}", second.addr);

    for id in &acked {
        let url = signed(&base, "/api/cdn/v2/forwardQueryByPage.action", &format!("&id={id}"));
        let page: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["total"], 1, "acknowledged task {id} lost: {page}");
    }

    // Every stop notice is delivered, including those in flight when the process died.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let by_id: BTreeMap<String, usize> = delivered.lock().unwrap().iter().filter(|e| e["code"] == "1").fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e["id"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            m
        });
        if (0..20).all(|i| by_id.contains_key(&format!("stop{i}"))) {
            break;
        }
        assert!(Instant::now() < deadline, "callbacks lost: {by_id:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The relay jobs of every acknowledged create are still queued (no relay worker runs here).
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let visible: f64 = metrics
        .lines()
        .find(|l| l.starts_with("relaycast_queue_visible_messages{queue=\"relay-jobs\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("relay-jobs gauge");
    assert!(visible as usize >= acked.len() + 20, "relay jobs lost: {visible} < {}", acked.len() + 20);
}
