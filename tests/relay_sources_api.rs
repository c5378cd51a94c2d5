//! Source kinds through the whole product: tasks created through the control API of a running
//! `relaycast up` pull a live HLS playlist, send `pullStreamHeaders` on the HTTP request, fall
//! back to a looping backup file, pull an RTSP camera (GStreamer's RTSP server), and leave no
//! ingest ffmpeg behind when the process is SIGKILLed. Everything runs on 127.0.0.1 against a
//! private nginx-rtmp (apps `live` and `hls`), checked with ffprobe and nginx-rtmp's stat page.
//! The tests run one at a time (`media::heavy`).

#[path = "../workers/tests/support/mod.rs"]
mod media;
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, write_config, Api, CallbackReceiver, RelaycastProcess, ACME};

/// A `relaycast up` with every role, quick timings, and the test accounts.
fn start_relaycast(dir: &tempfile::TempDir) -> RelaycastProcess {
    let config = write_config(dir.path());
    let env = [
        ("RELAYCAST_TIMING__SCHEDULER_TICK_MS", "200"),
        ("RELAYCAST_TIMING__LEASE_TTL_MS", "3000"),
        ("RELAYCAST_TIMING__LEASE_HEARTBEAT_MS", "1000"),
        ("RELAYCAST_QUEUE__VISIBILITY_TIMEOUT_MS", "5000"),
        ("RELAYCAST_LOG_FILTER", "info"),
    ];
    RelaycastProcess::start(
        &dir.path().join("data"),
        &env,
        &["--config", config.to_str().unwrap()],
    )
}

/// A `cmd=1` of one task of `kind` (`live` or `video`) with these `src` and `forward` entries.
fn create_body(
    kind: &str,
    id: &str,
    sources: Vec<Value>,
    forwards: &[&str],
    callback: &str,
) -> Value {
    json!({
        "transcallbackurl": callback,
        "cmd": "1",
        "type": kind,
        "list": [{
            "id": id,
            "src": sources,
            "forward": forwards.iter().map(|u| json!({ "url": u })).collect::<Vec<_>>(),
        }]
    })
}

/// ffprobes `url` until a probe satisfies `want` or `within` runs out; the last probe seen
/// (if any) is returned on failure for the message.
async fn probe_until(
    url: &str,
    within: Duration,
    want: impl Fn(&media::Probe) -> bool + Send + 'static,
) -> Result<(media::Probe, Duration), Option<media::Probe>> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < within {
            let left = within
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(500));
            if let Some(p) = media::ffprobe(&url, left.min(Duration::from_secs(8))) {
                if p.video_codec.is_some() && p.width > 0 && want(&p) {
                    return Ok((p, start.elapsed()));
                }
                if p.video_codec.is_some() {
                    last = Some(p);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last)
    })
    .await
    .unwrap()
}

/// The destination's publishing client, with the stream's bytes received so far.
fn publisher(nginx: &media::Nginx, name: &str) -> Option<(media::ClientStat, u64)> {
    nginx
        .stream(name)
        .and_then(|s| Some((s.publisher?, s.bytes_in)))
}

/// Asserts `name` is still published by the same client `id`, and that bytes keep arriving
/// (over `window`).
async fn assert_still_publishing(nginx: &media::Nginx, name: &str, id: u64, window: Duration) {
    let (first, bytes) =
        publisher(nginx, name).unwrap_or_else(|| panic!("{name} lost its publisher"));
    assert_eq!(first.id, id, "{name} reconnected");
    tokio::time::sleep(window).await;
    let (later, later_bytes) =
        publisher(nginx, name).unwrap_or_else(|| panic!("{name} lost its publisher"));
    assert_eq!(later.id, id, "{name} reconnected");
    assert!(later.time_ms > first.time_ms, "{name}: uptime must grow");
    assert!(
        later_bytes > bytes,
        "{name}: no bytes arrived in {window:?} ({bytes} -> {later_bytes})"
    );
}

async fn codes(receiver: &CallbackReceiver, id: &str) -> Vec<String> {
    receiver
        .bodies_for(id)
        .iter()
        .map(|b| b["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_hls_source_is_relayed_through_the_api_and_keeps_publishing() {
    let _heavy = media::heavy(&[]).await;
    let nginx = media::Nginx::start();
    let _camera = media::Publisher::start_sized(&nginx.hls_publish_url("cam1"), 640, 360);
    let began = Instant::now();
    nginx
        .wait_hls("cam1", 2, Duration::from_secs(30))
        .expect("nginx never served the HLS playlist");
    eprintln!("HLS playlist with 2 segments after {:?}", began.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let src = nginx.hls_playlist_url("cam1");
    let out = nginx.url("hlsout1");
    let created = Instant::now();
    let (status, body) = api
        .forward(&create_body(
            "live",
            "hls1",
            vec![json!({ "url": src })],
            &[&out],
            &receiver.url,
        ))
        .await;
    assert_eq!(
        (status, body["http_code"].as_str()),
        (200, Some("200")),
        "{body}"
    );

    let (probe, took) = probe_until(&out, Duration::from_secs(30), |_| true)
        .await
        .unwrap_or_else(|last| panic!("HLS relay never playable (last probe {last:?})"));
    eprintln!(
        "HLS source: create to destination playable {:?} ({took:?} of probing): {probe:?}",
        created.elapsed()
    );
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!(probe.audio_codec.as_deref(), Some("aac"));
    assert_eq!((probe.width, probe.height), (640, 360));

    // An HLS source needs an ffmpeg ingest (not the native RTMP pull), a child of relaycast.
    let ingests = media::processes_with_arg(&src);
    eprintln!(
        "ingest processes for {src}: {ingests:?} (relaycast pid {})",
        relaycast.child.id()
    );
    assert!(
        ingests
            .iter()
            .any(|&(_, ppid)| ppid == relaycast.child.id()),
        "no ffmpeg child of relaycast pulls {src}: {ingests:?}"
    );

    // It keeps publishing on the same connection, across many HLS segments.
    let (first, _) = publisher(&nginx, "hlsout1").expect("destination publishing");
    assert_still_publishing(&nginx, "hlsout1", first.id, Duration::from_secs(8)).await;
    let (probe, _) = probe_until(&out, Duration::from_secs(15), |_| true)
        .await
        .unwrap_or_else(|last| panic!("not playable later (last probe {last:?})"));
    assert_eq!(
        (probe.video_codec.as_deref(), probe.audio_codec.as_deref()),
        (Some("h264"), Some("aac"))
    );
    eventually("callback 0", Duration::from_secs(10), || async {
        codes(&receiver, "hls1")
            .await
            .contains(&"0".to_string())
            .then_some(())
    })
    .await;
    let bad: Vec<_> = receiver
        .bodies_for("hls1")
        .into_iter()
        .filter(|b| b["code"] != "0")
        .collect();
    assert!(
        bad.is_empty(),
        "unexpected callbacks while the HLS source is up: {bad:?}"
    );
    eprintln!(
        "HLS relay still on client {} after {:?}",
        first.id,
        created.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_stream_headers_reach_the_http_request_of_a_vod_item() {
    let _heavy = media::heavy(&[]).await;
    let files = tempfile::tempdir().unwrap();
    media::mp4_file(files.path(), "clip2.mp4", "320x240", 10);
    let server = media::FileServer::start(files.path().to_path_buf()).await;
    let nginx = media::Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let referer = "https://example.com/page";
    let src = json!({
        "url": server.url("clip2.mp4"),
        "pullStreamHeaders": [
            { "headerKey": "Referer", "headerValue": referer },
            { "headerKey": "X-Relay-Test", "headerValue": "token-42" },
        ],
    });
    let out = nginx.url("hdrout2");
    let created = Instant::now();
    let (status, body) = api
        .forward(&create_body(
            "video",
            "hdr2",
            vec![src],
            &[&out],
            &receiver.url,
        ))
        .await;
    assert_eq!(
        (status, body["http_code"].as_str()),
        (200, Some("200")),
        "{body}"
    );

    let (probe, _) = probe_until(&out, Duration::from_secs(20), |_| true)
        .await
        .unwrap_or_else(|last| panic!("VOD item never playable (last probe {last:?})"));
    eprintln!(
        "VOD item with pull headers: create to playable {:?}: {probe:?}",
        created.elapsed()
    );
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!(probe.audio_codec.as_deref(), Some("aac"));
    assert_eq!((probe.width, probe.height), (320, 240));

    let requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/clip2.mp4")
        .collect();
    eprintln!("requests for the item: {requests:#?}");
    assert!(
        !requests.is_empty(),
        "the file server saw no request for the item"
    );
    for r in &requests {
        assert_eq!(r.header("Referer"), Some(referer), "{r:?}");
        assert_eq!(r.header("X-Relay-Test"), Some("token-42"), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_backup_file_holds_the_destination_on_its_connection_after_the_primary_dies() {
    let _heavy = media::heavy(&[]).await;
    let files = tempfile::tempdir().unwrap();
    // 4 s long, and a different size from the primary's, to tell them apart on the wire.
    media::mp4_file(files.path(), "backup3.mp4", "320x240", 4);
    let server = media::FileServer::start(files.path().to_path_buf()).await;
    let nginx = media::Nginx::start();
    let mut camera = media::Publisher::start_sized(&nginx.url("primary3"), 640, 360);
    assert!(
        nginx
            .wait_publishing("primary3", Duration::from_secs(10))
            .is_some(),
        "test source not up"
    );
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let backup = server.url("backup3.mp4");
    let out = nginx.url("out3");
    let sources = vec![
        json!({ "url": nginx.url("primary3") }),
        json!({ "url": backup }),
    ];
    let (status, body) = api
        .forward(&create_body(
            "live",
            "loop3",
            sources,
            &[&out],
            &receiver.url,
        ))
        .await;
    assert_eq!(
        (status, body["http_code"].as_str()),
        (200, Some("200")),
        "{body}"
    );
    let (probe, _) = probe_until(&out, Duration::from_secs(20), |p| p.width == 640)
        .await
        .unwrap_or_else(|last| panic!("primary never relayed (last probe {last:?})"));
    assert_eq!(
        (probe.video_codec.as_deref(), probe.height),
        (Some("h264"), 360)
    );
    let (before, _) = publisher(&nginx, "out3").expect("destination publishing");

    camera.kill();
    let killed = Instant::now();
    let (probe, _) = probe_until(&out, Duration::from_secs(20), |p| {
        (p.width, p.height) == (320, 240)
    })
    .await
    .unwrap_or_else(|last| {
        panic!("the backup file never reached the destination (last probe {last:?})")
    });
    let failover = killed.elapsed();
    eprintln!("primary killed: destination plays the backup file after {failover:?}: {probe:?}");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!(probe.audio_codec.as_deref(), Some("aac"));
    let (now, _) =
        publisher(&nginx, "out3").expect("destination lost its publisher during the failover");
    assert_eq!(
        now.id, before.id,
        "the destination reconnected on the failover"
    );

    // Well past the 4 s file: it loops on the same connection.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_still_publishing(&nginx, "out3", before.id, Duration::from_secs(3)).await;
    let (probe, _) = probe_until(&out, Duration::from_secs(10), |p| {
        (p.width, p.height) == (320, 240)
    })
    .await
    .unwrap_or_else(|last| {
        panic!(
            "the backup no longer plays {:?} after the kill (last probe {last:?})",
            killed.elapsed()
        )
    });
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    let (after, _) = publisher(&nginx, "out3").expect("publishing");
    eprintln!(
        "{:?} after the kill: still client {} (up {} ms), {} request(s) for the backup file",
        killed.elapsed(),
        after.id,
        after.time_ms,
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/backup3.mp4")
            .count()
    );
    assert_eq!(after.id, before.id);
    let item = api.task("loop3").await.expect("task");
    assert_eq!(item["code"], "0", "the task must still be running: {item}");
    let codes = codes(&receiver, "loop3").await;
    assert!(
        !codes.contains(&"1".to_string()),
        "the task finished: {codes:?}"
    );
    eprintln!("callbacks: {codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ingest_ffmpeg_outlives_a_sigkilled_relaycast() {
    let _heavy = media::heavy(&[]).await;
    let files = tempfile::tempdir().unwrap();
    media::mp4_file(files.path(), "orphan4.mp4", "320x240", 30);
    let server = media::FileServer::start(files.path().to_path_buf()).await;
    let nginx = media::Nginx::start();
    let _camera = media::Publisher::start_sized(&nginx.hls_publish_url("cam4"), 640, 360);
    nginx
        .wait_hls("cam4", 2, Duration::from_secs(30))
        .expect("nginx never served the HLS playlist");
    let dir = tempfile::tempdir().unwrap();
    let mut relaycast = start_relaycast(&dir);
    let pid = relaycast.child.id();
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    // Two tasks, each on its own session thread, each with an ffmpeg ingest: a live HLS
    // source and a VOD MP4 item. Their source URLs (with this test's ports) are unique.
    let hls = nginx.hls_playlist_url("cam4");
    let mp4 = server.url("orphan4.mp4");
    let (outa, outb) = (nginx.url("orphan4a"), nginx.url("orphan4b"));
    assert_eq!(
        api.forward(&create_body(
            "live",
            "orphan4a",
            vec![json!({ "url": hls })],
            &[&outa],
            &receiver.url
        ))
        .await
        .0,
        200
    );
    assert_eq!(
        api.forward(&create_body(
            "video",
            "orphan4b",
            vec![json!({ "url": mp4 })],
            &[&outb],
            &receiver.url
        ))
        .await
        .0,
        200
    );
    for out in [&outa, &outb] {
        probe_until(out, Duration::from_secs(30), |_| true)
            .await
            .unwrap_or_else(|last| panic!("{out} never playable (last probe {last:?})"));
    }
    for src in [&hls, &mp4] {
        let procs = media::processes_with_arg(src);
        eprintln!("before the kill, processes pulling {src}: {procs:?} (relaycast pid {pid})");
        assert!(
            procs.iter().any(|&(_, ppid)| ppid == pid),
            "no ffmpeg child of relaycast pulls {src}: {procs:?}"
        );
    }

    relaycast.kill9();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(2);
    let left = loop {
        let left: Vec<_> = [&hls, &mp4]
            .iter()
            .flat_map(|src| media::processes_with_arg(src))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "after SIGKILL: {} ingest process(es) left after {:?}",
        left.len(),
        killed.elapsed()
    );
    for &(p, _) in &left {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        eprintln!("  left: pid {p}: {cmdline}");
        // Do not leak it into the next test even when this one fails.
        relaycast_workers::process::kill_group(p);
    }
    assert!(
        left.is_empty(),
        "ffmpeg outlived the SIGKILLed worker by 2 s: {left:?}"
    );
    eventually("destinations released", Duration::from_secs(15), || async {
        ["orphan4a", "orphan4b"]
            .iter()
            .all(|n| nginx.stream(n).is_none_or(|s| s.publisher.is_none()))
            .then_some(())
    })
    .await;
}

/// `fops.bufferTime` on an HLS source: the destination gets its first bytes only after the
/// buffer time, then plays on steadily from the buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_time_delays_an_hls_source_by_its_buffer_and_keeps_it_flowing() {
    let _heavy = media::heavy(&[]).await;
    let nginx = media::Nginx::start();
    let _camera = media::Publisher::start_sized(&nginx.hls_publish_url("cam2"), 640, 360);
    nginx
        .wait_hls("cam2", 2, Duration::from_secs(30))
        .expect("nginx never served the HLS playlist");
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let out = nginx.url("buffered");
    let mut body = create_body(
        "live",
        "buf1",
        vec![json!({ "url": nginx.hls_playlist_url("cam2") })],
        &[&out],
        &receiver.url,
    );
    body["list"][0]["fops"] = json!({ "bufferTime": "4" });
    let created = Instant::now();
    let (status, reply) = api.forward(&body).await;
    assert_eq!(
        (status, reply["http_code"].as_str()),
        (200, Some("200")),
        "{reply}"
    );
    let first_bytes = eventually(
        "first bytes at the destination",
        Duration::from_secs(30),
        || async {
            publisher(&nginx, "buffered")
                .filter(|(_, bytes)| *bytes > 0)
                .map(|_| created.elapsed())
        },
    )
    .await;
    eprintln!("bufferTime 4 s: create to the destination's first bytes {first_bytes:?}");
    assert!(
        first_bytes >= Duration::from_secs(4),
        "the buffer was not held: {first_bytes:?}"
    );
    let (probe, _) = probe_until(&out, Duration::from_secs(20), |_| true)
        .await
        .unwrap_or_else(|last| panic!("never playable (last probe {last:?})"));
    assert_eq!((probe.width, probe.height), (640, 360));
    let (client, _) = publisher(&nginx, "buffered").expect("publishing");
    assert_still_publishing(&nginx, "buffered", client.id, Duration::from_secs(6)).await;
}

/// SIGTERM drains: the worker stops its relay cleanly (the destination is unpublished, no
/// child is left), exits 0, and the task goes on from the next process on the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_relay_and_the_next_process_takes_the_task_over() {
    let _heavy = media::heavy(&[]).await;
    let nginx = media::Nginx::start();
    let _camera = media::Publisher::start(&nginx.url("drainsrc"));
    nginx
        .wait_publishing("drainsrc", Duration::from_secs(10))
        .expect("source up");
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_relaycast(&dir);
    let api = Api::new(&format!("http://{}", first.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;
    let out = nginx.url("drained");
    let body = create_body(
        "live",
        "drain1",
        vec![json!({ "url": nginx.url("drainsrc") })],
        &[&out],
        &receiver.url,
    );
    assert_eq!(api.forward(&body).await.0, 200);
    probe_until(&out, Duration::from_secs(15), |_| true)
        .await
        .expect("relaying before the SIGTERM");

    let pid = first.child.id();
    let asked = Instant::now();
    let status = first
        .terminate(Duration::from_secs(15))
        .expect("relaycast exits after SIGTERM");
    eprintln!("SIGTERM to exit: {:?}, {status}", asked.elapsed());
    assert!(status.success(), "exit status {status}");
    assert!(
        nginx
            .stream("drained")
            .is_none_or(|s| s.publisher.is_none()),
        "the destination is still published"
    );
    assert!(media::processes_with_arg(&nginx.url("drainsrc"))
        .iter()
        .all(|&(_, ppid)| ppid != pid));

    let second = start_relaycast(&dir);
    let restarted = Instant::now();
    probe_until(&out, Duration::from_secs(20), |_| true)
        .await
        .expect("the next process relays the task");
    eprintln!("next process to playable: {:?}", restarted.elapsed());
    let api = Api::new(&format!("http://{}", second.addr), ACME.0, ACME.1);
    let item = api.task("drain1").await.expect("task");
    assert_eq!(item["code"], "0", "{item}");
    // A drain is not the task's end: no callback 1.
    assert!(!codes(&receiver, "drain1").await.contains(&"1".to_string()));
}

/// A task's `end` stops the real relay: relaycast in-process on a manual clock relays to
/// nginx; when the clock passes `end`, the destination is unpublished and callback 1 comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_time_stops_the_media_and_calls_back_1() {
    let _heavy = media::heavy(&[]).await;
    let nginx = media::Nginx::start();
    let _camera = media::Publisher::start(&nginx.url("endsrc"));
    nginx
        .wait_publishing("endsrc", Duration::from_secs(10))
        .expect("source up");
    let h = support::InProcess::start_with(|s| s.roles = vec!["all".into()]).await;
    let receiver = CallbackReceiver::start().await;
    let out = nginx.url("ending");
    let t0 = h.now_ms();
    let mut body = create_body(
        "live",
        "end1",
        vec![json!({ "url": nginx.url("endsrc") })],
        &[&out],
        &receiver.url,
    );
    body["list"][0]["end"] = json!((t0 + 6 * 60_000).to_string());
    assert_eq!(h.api.forward(&body).await.0, 200);
    probe_until(&out, Duration::from_secs(15), |_| true)
        .await
        .expect("relaying before the end");
    eventually("callback 0", Duration::from_secs(10), || async {
        codes(&receiver, "end1")
            .await
            .contains(&"0".to_string())
            .then_some(())
    })
    .await;

    h.clock.advance_ms(6 * 60_000 + 1_000);
    let ended = Instant::now();
    eventually(
        "the destination unpublished at the end",
        Duration::from_secs(10),
        || async {
            nginx
                .stream("ending")
                .is_none_or(|s| s.publisher.is_none())
                .then_some(())
        },
    )
    .await;
    eprintln!("end time to destination unpublished: {:?}", ended.elapsed());
    eventually("callback 1", Duration::from_secs(10), || async {
        codes(&receiver, "end1")
            .await
            .contains(&"1".to_string())
            .then_some(())
    })
    .await;
    h.stop().await;
}

/// An RTMP server that accepts one publish and keeps every audio and video message it gets,
/// as FLV tags: a destination that speaks Enhanced RTMP, built on `rml_rtmp`'s server session.
/// nginx-rtmp 1.2 cannot stand in here: it neither plays out nor records Enhanced RTMP video
/// (it reads the frame type, which the Enhanced RTMP header bit makes 9 or 10, as a priority
/// and as "not a keyframe"), while the platforms that take HEVC (YouTube, for one) do.
struct EnhancedRtmpDestination {
    port: u16,
    tags: std::sync::Arc<std::sync::Mutex<Vec<relaycast_workers::media::flv::FlvTag>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EnhancedRtmpDestination {
    async fn start() -> Self {
        use relaycast_workers::media::flv::{FlvTag, TagType};
        use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
        use rml_rtmp::sessions::{
            ServerSession, ServerSessionConfig, ServerSessionEvent as E, ServerSessionResult as R,
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tags = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = tags.clone();
        let task = tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut hs = Handshake::new(PeerType::Server);
            let mut buf = vec![0u8; 65536];
            let mut pending = loop {
                let Ok(n) = sock.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                match hs.process_bytes(&buf[..n]) {
                    Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                        let _ = sock.write_all(&response_bytes).await;
                    }
                    Ok(HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    }) => {
                        let _ = sock.write_all(&response_bytes).await;
                        break remaining_bytes;
                    }
                    Err(_) => return,
                }
            };
            let Ok((mut session, initial)) = ServerSession::new(ServerSessionConfig::new()) else {
                return;
            };
            let mut queue: std::collections::VecDeque<R> = initial.into();
            loop {
                if !pending.is_empty() {
                    let Ok(results) = session.handle_input(&pending) else {
                        return;
                    };
                    pending.clear();
                    queue.extend(results);
                }
                let mut out = Vec::new();
                while let Some(r) = queue.pop_front() {
                    match r {
                        R::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                        R::RaisedEvent(
                            E::ConnectionRequested { request_id, .. }
                            | E::PublishStreamRequested { request_id, .. },
                        ) => {
                            if let Ok(more) = session.accept_request(request_id) {
                                queue.extend(more);
                            }
                        }
                        R::RaisedEvent(E::VideoDataReceived {
                            data, timestamp, ..
                        }) => {
                            keep.lock().unwrap().push(FlvTag::new(
                                TagType::Video,
                                timestamp.value,
                                data,
                            ));
                        }
                        R::RaisedEvent(E::AudioDataReceived {
                            data, timestamp, ..
                        }) => {
                            keep.lock().unwrap().push(FlvTag::new(
                                TagType::Audio,
                                timestamp.value,
                                data,
                            ));
                        }
                        _ => {}
                    }
                }
                if !out.is_empty() && sock.write_all(&out).await.is_err() {
                    return;
                }
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            }
        });
        EnhancedRtmpDestination { port, tags, task }
    }

    fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live/hevc", self.port)
    }

    fn tags(&self) -> Vec<relaycast_workers::media::flv::FlvTag> {
        self.tags.lock().unwrap().clone()
    }
}

impl Drop for EnhancedRtmpDestination {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `fops.vcodec = libx265` through the API: the ingest writes MPEG-TS (ffmpeg 5.1 cannot put
/// HEVC in FLV), relaycast turns it into Enhanced RTMP `hvc1` tags, and what the destination
/// received decodes with ffmpeg as 640x360 HEVC, every frame of it, the slate that follows
/// the source's death included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libx265_transcode_reaches_the_destination_as_hevc() {
    let _heavy = media::heavy(&[]).await;
    let nginx = media::Nginx::start();
    let mut camera = media::Publisher::start(&nginx.url("x265src"));
    nginx
        .wait_publishing("x265src", Duration::from_secs(10))
        .expect("source up");
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;
    let destination = EnhancedRtmpDestination::start().await;
    let mut body = create_body(
        "live",
        "x265",
        vec![json!({ "url": nginx.url("x265src") })],
        &[&destination.url()],
        &receiver.url,
    );
    body["list"][0]["fops"] = json!({ "vcodec": "libx265", "res": "640x360", "fps": "25", "bps": "600000", "forced_gopInterval": "1000" });
    let created = Instant::now();
    let (status, reply) = api.forward(&body).await;
    assert_eq!(
        (status, reply["http_code"].as_str()),
        (200, Some("200")),
        "{reply}"
    );
    let first = eventually(
        "HEVC frames at the destination",
        Duration::from_secs(20),
        || async {
            destination
                .tags()
                .iter()
                .any(|t| t.is_video_frame())
                .then(|| created.elapsed())
        },
    )
    .await;
    eprintln!("libx265: create to the first HEVC frame at the destination {first:?}");
    // Four seconds of the source's frames keep coming (a deadline, not a pace: x265 on a busy
    // 2-core machine may run a little behind real time).
    let frames = || {
        destination
            .tags()
            .iter()
            .filter(|t| t.is_video_frame())
            .count()
    };
    let flowing = Instant::now();
    let before = eventually(
        "100 HEVC frames from the source",
        Duration::from_secs(30),
        || async {
            let n = frames();
            (n >= 100).then_some(n)
        },
    )
    .await;
    eprintln!(
        "libx265: {before} frames {:?} after the first",
        flowing.elapsed()
    );
    // The source dies: after the stall timeout the slate keeps the destination fed, in HEVC
    // too, on the same connection: three more seconds of frames.
    camera.kill();
    let killed = Instant::now();
    eventually(
        "75 HEVC frames of the slate",
        Duration::from_secs(30),
        || async { (frames() >= before + 75).then_some(()) },
    )
    .await;
    eprintln!(
        "libx265: the slate's 75 frames {:?} after the source died",
        killed.elapsed()
    );
    let tags = destination.tags();
    let video: Vec<_> = tags.iter().filter(|t| t.is_video_frame()).collect();
    eprintln!(
        "libx265: {before} frames from the source, {} in all with the slate",
        video.len()
    );
    assert!(
        tags.iter()
            .filter(|t| t.tag_type == relaycast_workers::media::flv::TagType::Video)
            .all(|t| t.video_codec() == Some(12)),
        "not all video is HEVC"
    );
    assert!(
        tags.iter().any(|t| t.is_video_sequence_header()),
        "no HEVC sequence start"
    );
    assert!(
        tags.iter().any(|t| t.is_audio_sequence_header()),
        "no AAC header"
    );

    // Decode what arrived with ffmpeg, from its Annex B form.
    let path = dir.path().join("out.hevc");
    std::fs::write(
        &path,
        relaycast_workers::media::mpegts::annex_b_from_flv(&tags),
    )
    .unwrap();
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-f",
            "hevc",
            "-count_frames",
            "-select_streams",
            "v:0",
        ])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout).trim().to_string();
    eprintln!(
        "ffprobe of the received HEVC: {text} ({} video tags)",
        video.len()
    );
    let fields: Vec<&str> = text.split(',').collect();
    assert_eq!(
        fields.get(..3),
        Some(&["hevc", "640", "360"][..]),
        "{text}; {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let frames: usize = fields.get(3).and_then(|f| f.parse().ok()).unwrap_or(0);
    assert!(
        frames + 2 >= video.len(),
        "{frames} frames decoded of {}",
        video.len()
    );
    eventually("callback 0", Duration::from_secs(10), || async {
        codes(&receiver, "x265")
            .await
            .contains(&"0".to_string())
            .then_some(())
    })
    .await;
}

/// With `allow_private_targets` off, a source or destination whose NAME resolves inside the
/// operator's network (here the machine's own host name, which /etc/hosts maps to loopback) is
/// accepted by the API, which only sees the name, and refused where the connection is made:
/// nothing is pulled from or pushed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_resolve_inside_are_refused_when_connecting() {
    use std::net::ToSocketAddrs;
    let _heavy = media::heavy(&[]).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let loopback_only = (host.as_str(), 1935u16)
        .to_socket_addrs()
        .map(|mut a| a.all(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    // What the test is about; without it, it would test nothing.
    assert!(
        !host.is_empty() && loopback_only,
        "this test needs the machine's host name {host:?} to resolve to loopback only (Debian's /etc/hosts maps it to 127.0.1.1)"
    );
    let nginx = media::Nginx::start();
    let _camera = media::Publisher::start(&nginx.url("inside"));
    nginx
        .wait_publishing("inside", Duration::from_secs(10))
        .expect("source up");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let env = [
        ("RELAYCAST_ALLOW_PRIVATE_TARGETS", "false"),
        ("RELAYCAST_LOG_FILTER", "info"),
    ];
    let relaycast = RelaycastProcess::start(
        &dir.path().join("data"),
        &env,
        &["--config", config.to_str().unwrap()],
    );
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let by_name = |name: &str| format!("rtmp://{host}:{}/live/{name}", nginx.rtmp_port);

    // A source by name (the API cannot tell), destinations by name.
    let body = json!({
        "cmd": "1", "type": "live",
        "list": [{ "id": "inside", "src": [{ "url": by_name("inside") }], "forward": [{ "url": by_name("leak") }] }]
    });
    let (status, reply) = api.forward(&body).await;
    assert_eq!(
        (status, reply["http_code"].as_str()),
        (200, Some("200")),
        "{reply}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pulls = nginx.stream("inside").map(|s| s.nclients).unwrap_or(0);
    assert_eq!(
        pulls, 1,
        "the source was pulled (only its publisher should be there)"
    );
    assert!(
        nginx.stream("leak").is_none_or(|s| s.publisher.is_none()),
        "published to an internal destination"
    );
    let logs = relaycast.stdout_text() + &relaycast.stderr.lock().unwrap().join("\n");
    assert!(
        logs.contains("private") || logs.contains("internal"),
        "no refusal in the logs"
    );
}

/// A live HTTP-FLV source (ffmpeg itself serving `http://…/live.flv` to one client, as an
/// HTTP-FLV origin does): relayed to an RTMP destination, playable with the source's codecs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_http_flv_source_is_relayed() {
    let _heavy = media::heavy(&[]).await;
    let port = media::free_port();
    let src = format!("http://127.0.0.1:{port}/live/cam.flv");
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-c:a",
            "aac",
        ])
        .args(["-f", "flv", "-listen", "1"])
        .arg(&src);
    let _origin = media::ChildGuard::spawn("http-flv origin ffmpeg", &mut cmd)
        .expect("start the HTTP-FLV origin");
    let nginx = media::Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;
    let out = nginx.url("fromflv");
    let created = Instant::now();
    let (status, reply) = api
        .forward(&create_body(
            "live",
            "httpflv",
            vec![json!({ "url": src })],
            &[&out],
            &receiver.url,
        ))
        .await;
    assert_eq!(
        (status, reply["http_code"].as_str()),
        (200, Some("200")),
        "{reply}"
    );
    let (probe, _) = probe_until(&out, Duration::from_secs(20), |_| true)
        .await
        .unwrap_or_else(|last| panic!("never playable (last probe {last:?})"));
    eprintln!(
        "HTTP-FLV source: create to playable {:?}: {probe:?}",
        created.elapsed()
    );
    assert_eq!(
        (probe.video_codec.as_deref(), probe.audio_codec.as_deref()),
        (Some("h264"), Some("aac"))
    );
    assert_eq!((probe.width, probe.height), (480, 270));
    let (client, _) = publisher(&nginx, "fromflv").expect("publishing");
    assert_still_publishing(&nginx, "fromflv", client.id, Duration::from_secs(4)).await;
}

/// An RTSP source, as an IP camera serves one (GStreamer's RTSP server on 127.0.0.1: a 640x360
/// H.264 test pattern with AAC), pulled by two tasks created through the API at once: one
/// relays it as is, one transcodes it (`fops.vcodec = libx264`, 320x180). Both destinations
/// play what they should and keep publishing on their connection; each task pulls the camera
/// with its own ffmpeg, a child of relaycast, and stopping the tasks lets go of the camera.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_source_is_relayed_as_is_and_transcoded() {
    let _heavy = media::heavy(&[media::Peer::GstRtspServer]).await;
    let camera = media::RtspServer::start("cam", 640, 360);
    let src = camera.url();
    let nginx = media::Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let (copy_out, x264_out) = (nginx.url("rtspcopy"), nginx.url("rtspx264"));
    let copy = create_body(
        "live",
        "rtspcopy",
        vec![json!({ "url": src })],
        &[&copy_out],
        &receiver.url,
    );
    let mut x264 = create_body(
        "live",
        "rtspx264",
        vec![json!({ "url": src })],
        &[&x264_out],
        &receiver.url,
    );
    x264["list"][0]["fops"] = json!({ "vcodec": "libx264", "res": "320x180", "fps": "25", "bps": "400000", "forced_gopInterval": "1000" });
    let created = Instant::now();
    for body in [&copy, &x264] {
        let (status, reply) = api.forward(body).await;
        assert_eq!(
            (status, reply["http_code"].as_str()),
            (200, Some("200")),
            "{reply}"
        );
    }

    let (probe, _) = probe_until(&copy_out, Duration::from_secs(30), |_| true)
        .await
        .unwrap_or_else(|last| {
            let calls = receiver.bodies_for("rtspcopy");
            panic!("the copy relay never played (last probe {last:?}); callbacks {calls:?}; RTSP server log:\n{}", camera.log())
        });
    eprintln!(
        "RTSP copy: create to playable {:?}: {probe:?}",
        created.elapsed()
    );
    assert_eq!(
        (probe.video_codec.as_deref(), probe.audio_codec.as_deref()),
        (Some("h264"), Some("aac"))
    );
    assert_eq!((probe.width, probe.height), (640, 360));
    assert!((probe.fps - 25.0).abs() < 0.5, "fps {}", probe.fps);

    let (probe, _) = probe_until(&x264_out, Duration::from_secs(30), |p| {
        (p.width, p.height) == (320, 180)
    })
    .await
    .unwrap_or_else(|last| {
        panic!(
            "the transcode never played 320x180 (last probe {last:?}); RTSP server log:\n{}",
            camera.log()
        )
    });
    eprintln!(
        "RTSP transcode: create to playable {:?}: {probe:?}",
        created.elapsed()
    );
    assert_eq!(
        (probe.video_codec.as_deref(), probe.audio_codec.as_deref()),
        (Some("h264"), Some("aac"))
    );
    assert!((probe.fps - 25.0).abs() < 0.5, "fps {}", probe.fps);

    // RTSP needs an ffmpeg ingest: one per task, children of relaycast, on the camera's URL.
    let ingests: Vec<_> = media::processes_with_arg(&src)
        .into_iter()
        .filter(|&(_, ppid)| ppid == relaycast.child.id())
        .collect();
    assert_eq!(
        ingests.len(),
        2,
        "one ffmpeg child of relaycast per task should pull {src}: {ingests:?}"
    );

    for name in ["rtspcopy", "rtspx264"] {
        let (client, _) =
            publisher(&nginx, name).unwrap_or_else(|| panic!("{name} not publishing"));
        assert_still_publishing(&nginx, name, client.id, Duration::from_secs(4)).await;
    }
    eventually(
        "callback 0 for both tasks",
        Duration::from_secs(10),
        || async {
            let mut all = true;
            for id in ["rtspcopy", "rtspx264"] {
                all &= codes(&receiver, id).await.contains(&"0".to_string());
            }
            all.then_some(())
        },
    )
    .await;
    for id in ["rtspcopy", "rtspx264"] {
        let bad: Vec<_> = receiver
            .bodies_for(id)
            .into_iter()
            .filter(|b| b["code"] != "0")
            .collect();
        assert!(
            bad.is_empty(),
            "{id}: unexpected callbacks while the camera is up: {bad:?}"
        );
    }

    for id in ["rtspcopy", "rtspx264"] {
        let stop = json!({ "cmd": "2", "type": "live", "list": [{ "id": id }] });
        assert_eq!(api.forward(&stop).await.0, 200);
    }
    eventually(
        "the camera let go and both destinations released",
        Duration::from_secs(15),
        || async {
            let released = ["rtspcopy", "rtspx264"]
                .iter()
                .all(|n| nginx.stream(n).is_none_or(|s| s.publisher.is_none()));
            (released && media::processes_with_arg(&src).is_empty()).then_some(())
        },
    )
    .await;
}
