//! With the default `allow_private_targets = false`, nothing a user names reaches the operator's
//! own network: destinations the pushers could not use (or that are internal in a numeric
//! disguise) are refused at the API with the seed's `params forward is error`, and sources that
//! ffmpeg opens by a name that resolves to loopback (the machine's own host name) are refused
//! when ffmpeg connects (by the guarded egress proxy for HTTP-FLV, HLS, HTTPS and RTMPS, by
//! pinning for RTSP), with callback 2 naming the reason.

mod support;

use std::net::{TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{eventually, write_config, Api, RelaycastProcess, ACME, BULK};

/// A `relaycast up` with the default target policy and quick timings.
fn start_guarded(dir: &tempfile::TempDir) -> RelaycastProcess {
    let config = write_config(dir.path());
    let env = [
        ("RELAYCAST_ALLOW_PRIVATE_TARGETS", "false"),
        ("RELAYCAST_TIMING__SCHEDULER_TICK_MS", "200"),
        ("RELAYCAST_TIMING__SLATE_DURATION_MS", "2000"),
        ("RELAYCAST_LOG_FILTER", "info"),
    ];
    RelaycastProcess::start(
        &dir.path().join("data"),
        &env,
        &["--config", config.to_str().unwrap()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_a_pusher_cannot_use_or_internal_in_disguise_are_refused_at_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_guarded(&dir);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    for (i, forward) in [
        "rtmp://push.example.com/app",
        "rtmp://user:pw@push.example.com/live/key",
        "rtmp://push.example.com:0/live/key",
        "rtmp://0/live/x",
        "rtmp://0x7f.1/live/x",
        "rtmp://2130706433/live/x",
        "rtmp://127.1/live/x",
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({
            "cmd": "1", "type": "live",
            "list": [{ "id": format!("bad{i}"), "src": [{ "url": "rtmp://origin.example.com/live/a" }], "forward": [{ "url": forward }] }]
        });
        let (status, reply) = api.forward(&body).await;
        assert_eq!(
            (status, reply["http_code"].as_str()),
            (400, Some("1001")),
            "{forward}: {reply}"
        );
        assert_eq!(
            reply["msg"], "params forward is error",
            "{forward}: {reply}"
        );
    }
    // Sources in a numeric disguise are refused the same way, with the source's message.
    let body = json!({
        "cmd": "1", "type": "live",
        "list": [{ "id": "badsrc", "src": [{ "url": "rtsp://0/cam" }], "forward": [{ "url": "rtmp://push.example.com/live/key" }] }]
    });
    let (_, reply) = api.forward(&body).await;
    assert_eq!(
        (reply["http_code"].as_str(), reply["msg"].as_str()),
        (Some("1001"), Some("params src is error")),
        "{reply}"
    );
}

/// A TCP listener on 127.0.0.1 that counts the connections it gets (it answers nothing).
struct Counter {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Counter {
    fn start() -> Counter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Counter { port, accepted }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_ffmpeg_opens_by_the_own_host_name_never_reach_it() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let resolves_to_loopback = (host.as_str(), 80u16)
        .to_socket_addrs()
        .map(|mut a| a.all(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    assert!(
        !host.is_empty() && resolves_to_loopback,
        "this test needs the machine's host name ({host:?}) to resolve to loopback only, as /etc/hosts has it on Debian"
    );
    let origin = Counter::start();
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_guarded(&dir);
    // The account with a large call limit: the test polls the query.
    let api = Api::new(&format!("http://{}", relaycast.addr), BULK.0, BULK.1);
    let sources = [
        (
            "flvbyname",
            format!("http://{host}:{}/live/cam.flv", origin.port),
        ),
        (
            "hlsbyname",
            format!("http://{host}:{}/hls/cam.m3u8", origin.port),
        ),
        (
            "httpsbyname",
            format!("https://{host}:{}/hls/cam.m3u8", origin.port),
        ),
        (
            "rtmpsbyname",
            format!("rtmps://{host}:{}/live/cam", origin.port),
        ),
        ("rtspbyname", format!("rtsp://{host}:{}/cam", origin.port)),
    ];
    // The destination is named the same way (the pushers refuse it when they resolve it), so
    // that nothing in this test looks up a name outside /etc/hosts.
    for (id, src) in &sources {
        let forward = format!("rtmp://{host}:{}/live/{id}", origin.port);
        let body = json!({
            "cmd": "1", "type": "live",
            "list": [{ "id": id, "src": [{ "url": src }], "forward": [{ "url": forward }] }]
        });
        let (status, reply) = api.forward(&body).await;
        assert_eq!(
            (status, reply["http_code"].as_str()),
            (200, Some("200")),
            "the API sees only a name: {reply}"
        );
    }
    // The callback URL would have to be internal to reach this test, so the callback is read
    // where the query shows it: a task's `code` and `msg` are those of its last callback.
    for (id, _) in &sources {
        let task = eventually(
            &format!("{id} fails with callback 2"),
            Duration::from_secs(60),
            || async {
                tokio::time::sleep(Duration::from_millis(250)).await;
                api.task(id).await.filter(|t| t["code"] == "2")
            },
        )
        .await;
        let msg = task["msg"].as_str().unwrap_or_default();
        assert!(msg.starts_with("live_pull 실패:"), "{id}: {msg}");
        assert!(
            msg.contains(&format!("relaycast refused host {host}"))
                && msg.contains("private or internal address"),
            "{id}: callback 2 must name the reason: {msg}"
        );
    }
    assert_eq!(
        origin.accepted.load(Ordering::SeqCst),
        0,
        "a source by name reached the loopback origin"
    );
}
