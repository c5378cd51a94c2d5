//! A `relaycast up` killed with SIGKILL while requests are being written and callbacks are in
//! flight loses nothing: every acknowledged write is there after a restart, and every callback
//! that was being delivered is delivered again once its visibility timeout passes.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{eventually, write_config, Api, CallbackReceiver, RelaycastProcess, BULK};

fn create_body(id: &str, callback: &str) -> serde_json::Value {
    json!({
        "transcallbackurl": callback,
        "cmd": "1",
        "type": "live",
        "list": [{ "id": id, "src": [{ "url": "rtmp://127.0.0.1:1/live/src" }], "forward": [{ "url": format!("rtmp://127.0.0.1:1/live/{id}") }] }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write_and_no_callback() {
    let receiver = CallbackReceiver::start().await;
    receiver.stall(true);

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let env = [
        ("RELAYCAST_TIMING__CALLBACK_TIMEOUT_MS", "1500"),
        ("RELAYCAST_TIMING__CALLBACK_RETRY_INTERVAL_MS", "1000"),
        ("RELAYCAST_TIMING__SCHEDULER_TICK_MS", "100"),
        ("RELAYCAST_LOG_FILTER", "warn"),
    ];
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--roles",
        "api,notifier,scheduler",
    ];
    let mut first = RelaycastProcess::start(&data, &env, &args);
    let api = Api::new(&format!("http://{}", first.addr), BULK.0, BULK.1);

    // Acknowledged writes: 20 tasks created, then stopped (each stop is a callback event).
    for i in 0..20 {
        let id = format!("stop{i}");
        assert_eq!(
            api.forward(&create_body(&id, &receiver.url)).await.1["http_code"],
            "200"
        );
        let stop = json!({ "cmd": "2", "type": "live", "list": [{ "id": id }] });
        assert_eq!(api.forward(&stop).await.1["http_code"], "200");
    }
    // Callbacks are now in flight at the stalled endpoint.
    eventually("a callback in flight", Duration::from_secs(10), || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;

    // Writes under way at the moment of the kill.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (api, url, acked) = (api.clone(), receiver.url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{w}n{i}");
                let Ok(Ok(resp)) = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::spawn({
                        let (api, body) = (api.clone(), create_body(&id, &url));
                        async move { api.forward(&body).await }
                    }),
                )
                .await
                else {
                    return;
                };
                if resp.1["http_code"] != "200" {
                    return;
                }
                acked.lock().unwrap().insert(id);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    first.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "the writers should have been acknowledged a few times: {}",
        acked.len()
    );
    assert!(
        receiver.received().iter().all(|r| r.answered == 0),
        "nothing was answered before the kill"
    );

    // Restart on the same data directory; the endpoint now answers.
    receiver.stall(false);
    let second = RelaycastProcess::start(&data, &env, &args);
    let api = Api::new(&format!("http://{}", second.addr), BULK.0, BULK.1);
    for id in &acked {
        assert!(api.task(id).await.is_some(), "acknowledged task {id} lost");
    }

    // Every stop notice is delivered (answered 200), including those in flight at the kill.
    eventually(
        "every stop notice delivered",
        Duration::from_secs(30),
        || async {
            let delivered: BTreeSet<String> = receiver
                .received()
                .iter()
                .filter(|r| r.answered == 200 && r.body["code"] == "1")
                .filter_map(|r| r.body["id"].as_str().map(str::to_string))
                .collect();
            (0..20)
                .all(|i| delivered.contains(&format!("stop{i}")))
                .then_some(())
        },
    )
    .await;

    // The relay jobs of every acknowledged create are still queued (no relay worker runs here).
    let metrics = reqwest::get(format!("http://{}/metrics", second.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let visible: f64 = metrics
        .lines()
        .find(|l| l.starts_with("relaycast_queue_visible_messages{queue=\"relay-jobs\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("relay-jobs gauge");
    assert!(
        visible as usize >= acked.len() + 20,
        "relay jobs lost: {visible} < {}",
        acked.len() + 20
    );
}
