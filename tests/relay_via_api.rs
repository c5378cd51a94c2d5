//! The whole product on the wire: tasks created through the control API are relayed by the
//! worker of a running `relaycast up` through a real nginx-rtmp, checked with ffprobe and
//! nginx-rtmp's stat page, and reported through callbacks.

mod support;
#[path = "../workers/tests/support/mod.rs"]
mod media;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, write_config, Api, CallbackReceiver, RelaycastProcess, ACME};

/// A `relaycast up` with every role, quick timings, and the test accounts.
fn start_relaycast(dir: &tempfile::TempDir, extra_env: &[(&str, &str)]) -> RelaycastProcess {
    let config = write_config(dir.path());
    let mut env = vec![
        ("RELAYCAST_TIMING__SCHEDULER_TICK_MS", "200"),
        ("RELAYCAST_TIMING__LEASE_TTL_MS", "3000"),
        ("RELAYCAST_TIMING__LEASE_HEARTBEAT_MS", "1000"),
        ("RELAYCAST_QUEUE__VISIBILITY_TIMEOUT_MS", "5000"),
        ("RELAYCAST_LOG_FILTER", "info"),
    ];
    env.extend_from_slice(extra_env);
    RelaycastProcess::start(&dir.path().join("data"), &env, &["--config", config.to_str().unwrap()])
}

fn create_body(id: &str, sources: &[String], forwards: &[String], callback: &str) -> Value {
    json!({
        "transcallbackurl": callback,
        "cmd": "1",
        "type": "live",
        "list": [{
            "id": id,
            "src": sources.iter().map(|u| json!({ "url": u })).collect::<Vec<_>>(),
            "forward": forwards.iter().map(|u| json!({ "url": u })).collect::<Vec<_>>(),
        }]
    })
}

async fn playable(url: String, within: Duration) -> Option<(media::Probe, Duration)> {
    tokio::task::spawn_blocking(move || media::wait_playable(&url, within)).await.unwrap()
}

async fn codes(receiver: &CallbackReceiver, id: &str) -> Vec<String> {
    receiver.bodies_for(id).iter().map(|b| b["code"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_through_the_api_relays_to_three_destinations_and_stops_one_by_one() {
    if let Some(reason) = media::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let nginx = media::Nginx::start();
    let _publisher = media::Publisher::start(&nginx.url("src"));
    assert!(nginx.wait_publishing("src", Duration::from_secs(10)).is_some(), "test source not up");

    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir, &[]);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let forwards: Vec<String> = ["out1", "out2", "out3"].iter().map(|n| nginx.url(n)).collect();
    let created = Instant::now();
    let (status, body) = api.forward(&create_body("live1", &[nginx.url("src")], &forwards, &receiver.url)).await;
    assert_eq!((status, body["http_code"].as_str()), (200, Some("200")), "{body}");

    // All three destinations play the source's codecs.
    let players: Vec<_> = forwards.iter().map(|u| tokio::spawn(playable(u.clone(), Duration::from_secs(15)))).collect();
    for (url, player) in forwards.iter().zip(players) {
        let (probe, _) = player.await.unwrap().unwrap_or_else(|| panic!("{url} never became playable"));
        assert_eq!(probe.video_codec.as_deref(), Some("h264"), "{url}");
        assert_eq!(probe.audio_codec.as_deref(), Some("aac"), "{url}");
        assert_eq!((probe.width, probe.height), (1280, 720), "{url}");
    }
    eprintln!("create to all three destinations playable: {:?}", created.elapsed());

    // Callback 0 (started) arrives, and the query shows it with a start time.
    eventually("callback 0", Duration::from_secs(10), || async { codes(&receiver, "live1").await.contains(&"0".to_string()).then_some(()) }).await;
    let item = api.task("live1").await.expect("task");
    assert_eq!(item["code"], "0");
    assert_ne!(item["startTime"], "");

    // Stop one destination: the other two keep their publishing connection.
    let before: Vec<_> = ["out1", "out2"].iter().map(|n| nginx.stream(n).and_then(|s| s.publisher).expect("publishing")).collect();
    let stop_one = json!({ "cmd": "2", "type": "live", "list": [{ "id": "live1", "forward": [{ "url": forwards[2] }] }] });
    assert_eq!(api.forward(&stop_one).await.0, 200);
    let out3_gone = eventually("out3 unpublished", Duration::from_secs(10), || async {
        nginx.stream("out3").is_none_or(|s| s.publisher.is_none()).then_some(())
    });
    out3_gone.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, earlier) in ["out1", "out2"].iter().zip(before) {
        let now = nginx.stream(name).and_then(|s| s.publisher).unwrap_or_else(|| panic!("{name} lost its publisher"));
        assert_eq!(now.id, earlier.id, "{name} reconnected");
        assert!(now.time_ms > earlier.time_ms, "{name} uptime must grow");
    }
    let item = api.task("live1").await.expect("task");
    assert!(!item["forward"].as_str().unwrap_or_default().contains("out3") || item["code"] == "1", "{item}");

    // Stop the rest: every destination is released and callback 1 arrives.
    let stop_all = json!({ "cmd": "2", "type": "live", "list": [{ "id": "live1" }] });
    assert_eq!(api.forward(&stop_all).await.0, 200);
    eventually("all destinations released", Duration::from_secs(10), || async {
        ["out1", "out2"].iter().all(|n| nginx.stream(n).is_none_or(|s| s.publisher.is_none())).then_some(())
    })
    .await;
    eventually("callback 1", Duration::from_secs(10), || async { codes(&receiver, "live1").await.contains(&"1".to_string()).then_some(()) }).await;
    // No ingest ffmpeg outlives the task: relaycast has no child process left.
    let pid = relaycast.child.id().to_string();
    eventually("no ffmpeg child of relaycast", Duration::from_secs(5), || async {
        let children = std::process::Command::new("pgrep").args(["-P", &pid]).output().map(|o| o.stdout).unwrap_or_default();
        children.iter().all(|b| b.is_ascii_whitespace()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_hands_its_task_to_the_next_one() {
    if let Some(reason) = media::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let nginx = media::Nginx::start();
    let _publisher = media::Publisher::start(&nginx.url("src"));
    assert!(nginx.wait_publishing("src", Duration::from_secs(10)).is_some(), "test source not up");

    let dir = tempfile::tempdir().unwrap();
    let mut first = start_relaycast(&dir, &[]);
    let api = Api::new(&format!("http://{}", first.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;
    let forwards = vec![nginx.url("k1")];
    assert_eq!(api.forward(&create_body("survivor", &[nginx.url("src")], &forwards, &receiver.url)).await.0, 200);
    playable(forwards[0].clone(), Duration::from_secs(15)).await.expect("relayed before the kill");

    // SIGKILL: no drain, the lease is left to go stale. The ingest ffmpeg dies with its parent's
    // pipe, so the destination loses its publisher.
    first.kill9();
    eventually("destination released after the kill", Duration::from_secs(15), || async {
        nginx.stream("k1").is_none_or(|s| s.publisher.is_none()).then_some(())
    })
    .await;

    let second = start_relaycast(&dir, &[]);
    let restarted = Instant::now();
    let (probe, _) = playable(forwards[0].clone(), Duration::from_secs(30)).await.expect("the next process picks the task up");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    eprintln!("restart to playable again: {:?} (lease TTL 3 s)", restarted.elapsed());
    let api = Api::new(&format!("http://{}", second.addr), ACME.0, ACME.1);
    let item = api.task("survivor").await.expect("task");
    assert!(["0", ""].contains(&item["code"].as_str().unwrap_or("?")), "{item}");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_a_running_id_moves_the_relay_to_the_new_destination() {
    if let Some(reason) = media::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let nginx = media::Nginx::start();
    let _publisher = media::Publisher::start(&nginx.url("src"));
    assert!(nginx.wait_publishing("src", Duration::from_secs(10)).is_some(), "test source not up");
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir, &[]);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let (first, second) = (nginx.url("first"), nginx.url("second"));
    assert_eq!(api.forward(&create_body("moving", &[nginx.url("src")], std::slice::from_ref(&first), &receiver.url)).await.0, 200);
    playable(first.clone(), Duration::from_secs(15)).await.expect("first destination");
    assert_eq!(api.forward(&create_body("moving", &[nginx.url("src")], std::slice::from_ref(&second), &receiver.url)).await.0, 200);
    playable(second.clone(), Duration::from_secs(15)).await.expect("the new task runs");
    eventually("old destination released", Duration::from_secs(10), || async {
        nginx.stream("first").is_none_or(|s| s.publisher.is_none()).then_some(())
    })
    .await;
    // The old run's end (1) is reported before the new run's start (0).
    eventually("1 then 0", Duration::from_secs(10), || async {
        let c = codes(&receiver, "moving").await;
        (c.iter().filter(|x| *x == "0").count() == 2 && c.contains(&"1".to_string())).then_some(())
    })
    .await;
}

/// Serves `png` at `/logo.png` (404 elsewhere) on 127.0.0.1; counts requests.
async fn serve_png(png: Vec<u8>) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let png = std::sync::Arc::new(png);
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let png = png.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 2048];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = String::from_utf8_lossy(&got).starts_with("GET /logo.png ");
                let (status, body): (&str, &[u8]) = if ok { ("200 OK", &png) } else { ("404 Not Found", b"no") };
                let head = format!("HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body).await;
            });
        }
    });
    (port, hits, task)
}

/// A transcoding task with a watermark, through the API and the worker: the destination plays
/// 640x360 25 fps H.264 with the red PNG at the top-left; a task whose watermark is a 404 fails
/// with callback 2 naming the watermark, and no ffmpeg is started for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermarked_transcode_task_through_the_api() {
    if let Some(reason) = media::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let png_path = tmp.path().join("wm.png");
    let made = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "color=c=red:s=96x48", "-frames:v", "1"])
        .arg(&png_path)
        .status()
        .unwrap();
    assert!(made.success());
    let (port, hits, server) = serve_png(std::fs::read(&png_path).unwrap()).await;

    let nginx = media::Nginx::start();
    let _publisher = media::Publisher::start(&nginx.url("src"));
    assert!(nginx.wait_publishing("src", Duration::from_secs(10)).is_some(), "test source not up");
    let dir = tempfile::tempdir().unwrap();
    // The worker's temp files go to a directory of this test, to see them come and go.
    let worker_tmp = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir, &[("TMPDIR", worker_tmp.path().to_str().unwrap())]);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;
    let wm_dirs = || std::fs::read_dir(worker_tmp.path()).map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("relaycast-wm-")).count()).unwrap_or(0);

    let task = |id: &str, image: &str, out: &str| {
        json!({
            "transcallbackurl": receiver.url,
            "cmd": "1",
            "type": "live",
            "list": [{
                "id": id,
                "src": [{ "url": nginx.url("src"), "wmImage": format!("http://127.0.0.1:{port}/{image}"), "wmGravity": "TOP_LEFT" }],
                "forward": [{ "url": nginx.url(out) }],
                "fops": { "bps": "800000", "res": "640x360", "fps": "25", "vcodec": "libx264", "forced_gopInterval": "1000" }
            }]
        })
    };
    let (status, body) = api.forward(&task("wm1", "logo.png", "wmout")).await;
    assert_eq!((status, body["http_code"].as_str()), (200, Some("200")), "{body}");
    let (probe, took) = playable(nginx.url("wmout"), Duration::from_secs(20)).await.expect("watermarked destination playable");
    eprintln!("watermarked task: {probe:?} playable {took:?} after the create");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!((probe.width, probe.height), (640, 360));
    assert!((probe.fps - 25.0).abs() < 0.5, "fps {}", probe.fps);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the image is fetched once");
    assert_eq!(wm_dirs(), 1, "the running session holds its watermark files");
    // The top-left 96x48 box (10 px margin) is the red PNG.
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-rw_timeout", "10000000", "-i", &nginx.url("wmout")])
        .args(["-frames:v", "1", "-vf", "crop=80:32:18:18", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    assert_eq!(out.stdout.len(), 80 * 32 * 3);
    let red = out.stdout.chunks_exact(3).filter(|p| p[0] > 180 && p[1] < 80 && p[2] < 80).count();
    assert!(red > 80 * 32 * 9 / 10, "watermark missing: {red} red pixels");
    eventually("callback 0", Duration::from_secs(10), || async { codes(&receiver, "wm1").await.contains(&"0".to_string()).then_some(()) }).await;

    let (status, _) = api.forward(&task("wm2", "missing.png", "wmout2")).await;
    assert_eq!(status, 200);
    eventually("callback 2 for the 404 watermark", Duration::from_secs(15), || async {
        receiver.bodies_for("wm2").into_iter().find(|b| b["code"] == "2").map(|b| b["msg"].as_str().unwrap_or_default().to_string())
    })
    .await;
    let failed = receiver.bodies_for("wm2").into_iter().find(|b| b["code"] == "2").unwrap();
    eprintln!("404 watermark: {failed}");
    assert!(failed["msg"].as_str().unwrap_or_default().contains("watermark"), "{failed}");

    let stop = json!({ "cmd": "2", "type": "live", "list": [{ "id": "wm1" }] });
    assert_eq!(api.forward(&stop).await.0, 200);
    eventually("callback 1", Duration::from_secs(10), || async { codes(&receiver, "wm1").await.contains(&"1".to_string()).then_some(()) }).await;
    eventually("watermark files deleted with the session", Duration::from_secs(10), || async { (wm_dirs() == 0).then_some(()) }).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vod_playlist_with_loop_2_plays_six_items_then_calls_back_1() {
    if let Some(reason) = media::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let files = tempfile::tempdir().unwrap();
    for name in ["a.mp4", "b.mp4", "c.mp4"] {
        media::mp4_file(files.path(), name, "320x240", 2);
    }
    let server = media::FileServer::start(files.path().to_path_buf()).await;
    let nginx = media::Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir, &[]);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let body = json!({
        "transcallbackurl": receiver.url,
        "cmd": "1",
        "type": "video",
        "list": [{
            "id": "carousel",
            "src": [
                { "url": server.url("a.mp4") },
                // relofftime trims the second item to its second 1..2.
                { "url": server.url("b.mp4"), "relofftime": "1-2" },
                { "url": server.url("c.mp4") },
            ],
            "forward": [{ "url": nginx.url("channel") }],
            "extendParam": { "loop": "2" }
        }]
    });
    let started = Instant::now();
    let (status, answer) = api.forward(&body).await;
    assert_eq!(status, 200, "{answer}");
    // 0 (started, with the first item), 5 for each of the 5 items after it, then 1 when the
    // second pass ends.
    eventually("the playlist's end (1)", Duration::from_secs(40), || async {
        codes(&receiver, "carousel").await.contains(&"1".to_string()).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    let codes = codes(&receiver, "carousel").await;
    assert_eq!(codes.iter().filter(|c| *c == "5").count(), 5, "{codes:?}");
    assert_eq!(codes.first().map(String::as_str), Some("0"), "{codes:?}");
    assert_eq!(codes.last().map(String::as_str), Some("1"), "{codes:?}");
    // 2 passes of 2 s + 1 s + 2 s, paced in real time.
    assert!(elapsed >= Duration::from_secs(9), "played too fast: {elapsed:?}");
    let item = api.task("carousel").await.expect("task");
    assert_eq!(item["code"], "1");
    assert_ne!(item["endTime"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_destination_is_given_up_with_3_while_the_other_plays_on() {
    if let Some(reason) = media::skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let nginx = media::Nginx::start();
    let _publisher = media::Publisher::start(&nginx.url("src"));
    assert!(nginx.wait_publishing("src", Duration::from_secs(10)).is_some(), "test source not up");
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir, &[("RELAYCAST_TIMING__PUSH_GIVE_UP_MS", "2000")]);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let dead = format!("rtmp://127.0.0.1:{}/live/nobody", media::free_port());
    let alive = nginx.url("alive");
    let forwards = [alive.clone(), dead.clone()];
    assert_eq!(api.forward(&create_body("half", &[nginx.url("src")], &forwards, &receiver.url)).await.0, 200);
    playable(alive.clone(), Duration::from_secs(15)).await.expect("the reachable destination plays");
    let before = nginx.stream("alive").and_then(|s| s.publisher).expect("publishing");
    let failure = eventually("callback 3", Duration::from_secs(20), || async {
        receiver.bodies_for("half").into_iter().find(|b| b["code"] == "3")
    })
    .await;
    assert_eq!(failure["forwardurl"], dead.as_str(), "{failure}");
    assert_eq!(failure["msg"], "푸시 스트림 실패!");
    let after = nginx.stream("alive").and_then(|s| s.publisher).expect("still publishing");
    assert_eq!(after.id, before.id, "the reachable destination kept its connection");
    let item = api.task("half").await.expect("task");
    assert_eq!(item["forward"], alive.as_str(), "the query lists the destination still pushed to: {item}");
}
