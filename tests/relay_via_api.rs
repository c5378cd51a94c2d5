//! The whole product on the wire: tasks created through the control API are relayed by the
//! worker of a running `relaycast up` through a real nginx-rtmp, checked with ffprobe and
//! nginx-rtmp's stat page, and reported through callbacks.

#[path = "../workers/tests/support/mod.rs"]
mod media;
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, write_config, Api, CallbackReceiver, RelaycastProcess, ACME};

/// The queue's visibility timeout in these tests: a relay task that is not started on the
/// first delivery of its message waits at least this long for the next one.
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(5);

/// A `relaycast up` with every role, quick timings, and the test accounts.
fn start_relaycast(dir: &tempfile::TempDir, extra_env: &[(&str, &str)]) -> RelaycastProcess {
    let config = write_config(dir.path());
    let visibility = VISIBILITY_TIMEOUT.as_millis().to_string();
    let mut env = vec![
        ("RELAYCAST_TIMING__SCHEDULER_TICK_MS", "200"),
        ("RELAYCAST_TIMING__LEASE_TTL_MS", "3000"),
        ("RELAYCAST_TIMING__LEASE_HEARTBEAT_MS", "1000"),
        (
            "RELAYCAST_QUEUE__VISIBILITY_TIMEOUT_MS",
            visibility.as_str(),
        ),
        ("RELAYCAST_LOG_FILTER", "info"),
    ];
    env.extend_from_slice(extra_env);
    RelaycastProcess::start(
        &dir.path().join("data"),
        &env,
        &["--config", config.to_str().unwrap()],
    )
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
    tokio::task::spawn_blocking(move || media::wait_playable(&url, within))
        .await
        .unwrap()
}

async fn codes(receiver: &CallbackReceiver, id: &str) -> Vec<String> {
    receiver
        .bodies_for(id)
        .iter()
        .map(|b| b["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A publisher on `src` of a private nginx, a relaycast child with `env`, a signed client and a
/// callback receiver, for one test at a time (`media::heavy`).
struct SourceRig {
    nginx: media::Nginx,
    _publisher: media::Publisher,
    _dir: tempfile::TempDir,
    relaycast: RelaycastProcess,
    api: Api,
    receiver: CallbackReceiver,
    // Last: released after everything above is stopped.
    _heavy: media::HeavyGuard,
}

impl SourceRig {
    async fn start(env: &[(&str, &str)]) -> SourceRig {
        let heavy = media::heavy(&[]).await;
        let nginx = media::Nginx::start();
        let publisher = media::Publisher::start(&nginx.url("src"));
        assert!(
            nginx
                .wait_publishing("src", Duration::from_secs(10))
                .is_some(),
            "test source not up"
        );
        let dir = tempfile::tempdir().unwrap();
        let relaycast = start_relaycast(&dir, env);
        let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
        let receiver = CallbackReceiver::start().await;
        SourceRig {
            nginx,
            _publisher: publisher,
            _dir: dir,
            relaycast,
            api,
            receiver,
            _heavy: heavy,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_through_the_api_relays_to_three_destinations_and_stops_one_by_one() {
    let rig = SourceRig::start(&[]).await;
    let SourceRig {
        nginx,
        relaycast,
        api,
        receiver,
        ..
    } = rig;

    let forwards: Vec<String> = ["out1", "out2", "out3"]
        .iter()
        .map(|n| nginx.url(n))
        .collect();
    let created = Instant::now();
    let (status, body) = api
        .forward(&create_body(
            "live1",
            &[nginx.url("src")],
            &forwards,
            &receiver.url,
        ))
        .await;
    assert_eq!(
        (status, body["http_code"].as_str()),
        (200, Some("200")),
        "{body}"
    );

    // All three destinations are published to on the first delivery of the task: before a
    // redelivery could have come (about 0.1 s on an idle machine).
    eventually(
        "three destinations publishing",
        Duration::from_secs(10),
        || async {
            ["out1", "out2", "out3"]
                .iter()
                .all(|n| {
                    nginx
                        .stream(n)
                        .is_some_and(|s| s.publisher.is_some() && s.bytes_in > 0)
                })
                .then_some(())
        },
    )
    .await;
    let publishing = created.elapsed();
    eprintln!("create to all three destinations publishing: {publishing:?}");
    assert!(
        publishing < VISIBILITY_TIMEOUT,
        "destinations took {publishing:?}"
    );
    // An RTMP source relayed as is is pulled natively: relaycast runs no ffmpeg for it.
    let pid = relaycast.child.id();
    let children = media::child_pids(pid);
    assert!(
        children.is_empty(),
        "relaycast runs child processes for a copy relay: {children:?}"
    );

    // All three destinations play the source's codecs.
    let players: Vec<_> = forwards
        .iter()
        .map(|u| tokio::spawn(playable(u.clone(), Duration::from_secs(15))))
        .collect();
    for (url, player) in forwards.iter().zip(players) {
        let (probe, _) = player
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{url} never became playable"));
        assert_eq!(probe.video_codec.as_deref(), Some("h264"), "{url}");
        assert_eq!(probe.audio_codec.as_deref(), Some("aac"), "{url}");
        assert_eq!((probe.width, probe.height), (1280, 720), "{url}");
    }
    eprintln!(
        "create to all three destinations playable: {:?}",
        created.elapsed()
    );

    // Callback 0 (started) arrives, and the query shows it with a start time.
    eventually("callback 0", Duration::from_secs(10), || async {
        codes(&receiver, "live1")
            .await
            .contains(&"0".to_string())
            .then_some(())
    })
    .await;
    let item = api.task("live1").await.expect("task");
    assert_eq!(item["code"], "0");
    assert_ne!(item["startTime"], "");

    // Stop one destination: the other two keep their publishing connection.
    let before: Vec<_> = ["out1", "out2"]
        .iter()
        .map(|n| {
            nginx
                .stream(n)
                .and_then(|s| s.publisher)
                .expect("publishing")
        })
        .collect();
    let stop_one = json!({ "cmd": "2", "type": "live", "list": [{ "id": "live1", "forward": [{ "url": forwards[2] }] }] });
    assert_eq!(api.forward(&stop_one).await.0, 200);
    let out3_gone = eventually("out3 unpublished", Duration::from_secs(10), || async {
        nginx
            .stream("out3")
            .is_none_or(|s| s.publisher.is_none())
            .then_some(())
    });
    out3_gone.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, earlier) in ["out1", "out2"].iter().zip(before) {
        let now = nginx
            .stream(name)
            .and_then(|s| s.publisher)
            .unwrap_or_else(|| panic!("{name} lost its publisher"));
        assert_eq!(now.id, earlier.id, "{name} reconnected");
        assert!(now.time_ms > earlier.time_ms, "{name} uptime must grow");
    }
    let item = api.task("live1").await.expect("task");
    assert!(
        !item["forward"]
            .as_str()
            .unwrap_or_default()
            .contains("out3")
            || item["code"] == "1",
        "{item}"
    );

    // Stop the rest: every destination is released and callback 1 arrives.
    let stop_all = json!({ "cmd": "2", "type": "live", "list": [{ "id": "live1" }] });
    assert_eq!(api.forward(&stop_all).await.0, 200);
    eventually(
        "all destinations released",
        Duration::from_secs(10),
        || async {
            ["out1", "out2"]
                .iter()
                .all(|n| nginx.stream(n).is_none_or(|s| s.publisher.is_none()))
                .then_some(())
        },
    )
    .await;
    eventually("callback 1", Duration::from_secs(10), || async {
        codes(&receiver, "live1")
            .await
            .contains(&"1".to_string())
            .then_some(())
    })
    .await;
    // Nothing outlives the task: relaycast has no child process left.
    eventually(
        "no ffmpeg child of relaycast",
        Duration::from_secs(5),
        || async { media::child_pids(pid).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_hands_its_task_to_the_next_one() {
    let _heavy = media::heavy(&[]).await;
    let nginx = media::Nginx::start();
    let _publisher = media::Publisher::start(&nginx.url("src"));
    assert!(
        nginx
            .wait_publishing("src", Duration::from_secs(10))
            .is_some(),
        "test source not up"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut first = start_relaycast(&dir, &[]);
    let api = Api::new(&format!("http://{}", first.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;
    let forwards = vec![nginx.url("k1")];
    assert_eq!(
        api.forward(&create_body(
            "survivor",
            &[nginx.url("src")],
            &forwards,
            &receiver.url
        ))
        .await
        .0,
        200
    );
    playable(forwards[0].clone(), Duration::from_secs(15))
        .await
        .expect("relayed before the kill");

    // SIGKILL: no drain, the lease is left to go stale. The ingest ffmpeg dies with its parent's
    // pipe, so the destination loses its publisher.
    first.kill9();
    eventually(
        "destination released after the kill",
        Duration::from_secs(15),
        || async {
            nginx
                .stream("k1")
                .is_none_or(|s| s.publisher.is_none())
                .then_some(())
        },
    )
    .await;

    let second = start_relaycast(&dir, &[]);
    let restarted = Instant::now();
    let (probe, _) = playable(forwards[0].clone(), Duration::from_secs(30))
        .await
        .expect("the next process picks the task up");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    eprintln!(
        "restart to playable again: {:?} (lease TTL 3 s)",
        restarted.elapsed()
    );
    let api = Api::new(&format!("http://{}", second.addr), ACME.0, ACME.1);
    let item = api.task("survivor").await.expect("task");
    assert!(
        ["0", ""].contains(&item["code"].as_str().unwrap_or("?")),
        "{item}"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_a_running_id_moves_the_relay_to_the_new_destination() {
    let rig = SourceRig::start(&[]).await;
    let SourceRig {
        nginx,
        api,
        receiver,
        ..
    } = rig;

    let (first, second) = (nginx.url("first"), nginx.url("second"));
    assert_eq!(
        api.forward(&create_body(
            "moving",
            &[nginx.url("src")],
            std::slice::from_ref(&first),
            &receiver.url
        ))
        .await
        .0,
        200
    );
    playable(first.clone(), Duration::from_secs(15))
        .await
        .expect("first destination");
    assert_eq!(
        api.forward(&create_body(
            "moving",
            &[nginx.url("src")],
            std::slice::from_ref(&second),
            &receiver.url
        ))
        .await
        .0,
        200
    );
    playable(second.clone(), Duration::from_secs(15))
        .await
        .expect("the new task runs");
    eventually(
        "old destination released",
        Duration::from_secs(10),
        || async {
            nginx
                .stream("first")
                .is_none_or(|s| s.publisher.is_none())
                .then_some(())
        },
    )
    .await;
    // The old run's end (1) is reported before the new run's start (0).
    eventually("1 then 0", Duration::from_secs(10), || async {
        let c = codes(&receiver, "moving").await;
        (c.iter().filter(|x| *x == "0").count() == 2 && c.contains(&"1".to_string())).then_some(())
    })
    .await;
}

/// Serves `png` at `/logo.png` (404 elsewhere) on 127.0.0.1; counts requests.
async fn serve_png(
    png: Vec<u8>,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
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
                let (status, body): (&str, &[u8]) = if ok {
                    ("200 OK", &png)
                } else {
                    ("404 Not Found", b"no")
                };
                let head = format!(
                    "HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
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
    let _heavy = media::heavy(&[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let png_path = tmp.path().join("wm.png");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=96x48",
            "-frames:v",
            "1",
        ])
        .arg(&png_path)
        .status()
        .unwrap();
    assert!(made.success());
    let (port, hits, server) = serve_png(std::fs::read(&png_path).unwrap()).await;

    let nginx = media::Nginx::start();
    let _publisher = media::Publisher::start(&nginx.url("src"));
    assert!(
        nginx
            .wait_publishing("src", Duration::from_secs(10))
            .is_some(),
        "test source not up"
    );
    let dir = tempfile::tempdir().unwrap();
    // The worker's temp files go to a directory of this test, to see them come and go.
    let worker_tmp = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir, &[("TMPDIR", worker_tmp.path().to_str().unwrap())]);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;
    let wm_dirs = || {
        std::fs::read_dir(worker_tmp.path())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("relaycast-wm-"))
                    .count()
            })
            .unwrap_or(0)
    };

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
    assert_eq!(
        (status, body["http_code"].as_str()),
        (200, Some("200")),
        "{body}"
    );
    let (probe, took) = playable(nginx.url("wmout"), Duration::from_secs(20))
        .await
        .expect("watermarked destination playable");
    eprintln!("watermarked task: {probe:?} playable {took:?} after the create");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!((probe.width, probe.height), (640, 360));
    assert!((probe.fps - 25.0).abs() < 0.5, "fps {}", probe.fps);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the image is fetched once"
    );
    assert_eq!(
        wm_dirs(),
        1,
        "the running session holds its watermark files"
    );
    // The top-left 96x48 box (10 px margin) is the red PNG.
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-rw_timeout",
            "10000000",
            "-i",
            &nginx.url("wmout"),
        ])
        .args([
            "-frames:v",
            "1",
            "-vf",
            "crop=80:32:18:18",
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ])
        .output()
        .unwrap();
    assert_eq!(out.stdout.len(), 80 * 32 * 3);
    let red = out
        .stdout
        .chunks_exact(3)
        .filter(|p| p[0] > 180 && p[1] < 80 && p[2] < 80)
        .count();
    assert!(
        red > 80 * 32 * 9 / 10,
        "watermark missing: {red} red pixels"
    );
    eventually("callback 0", Duration::from_secs(10), || async {
        codes(&receiver, "wm1")
            .await
            .contains(&"0".to_string())
            .then_some(())
    })
    .await;

    let (status, _) = api.forward(&task("wm2", "missing.png", "wmout2")).await;
    assert_eq!(status, 200);
    eventually(
        "callback 2 for the 404 watermark",
        Duration::from_secs(15),
        || async {
            receiver
                .bodies_for("wm2")
                .into_iter()
                .find(|b| b["code"] == "2")
                .map(|b| b["msg"].as_str().unwrap_or_default().to_string())
        },
    )
    .await;
    let failed = receiver
        .bodies_for("wm2")
        .into_iter()
        .find(|b| b["code"] == "2")
        .unwrap();
    eprintln!("404 watermark: {failed}");
    assert!(
        failed["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("watermark"),
        "{failed}"
    );

    let stop = json!({ "cmd": "2", "type": "live", "list": [{ "id": "wm1" }] });
    assert_eq!(api.forward(&stop).await.0, 200);
    eventually("callback 1", Duration::from_secs(10), || async {
        codes(&receiver, "wm1")
            .await
            .contains(&"1".to_string())
            .then_some(())
    })
    .await;
    eventually(
        "watermark files deleted with the session",
        Duration::from_secs(10),
        || async { (wm_dirs() == 0).then_some(()) },
    )
    .await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vod_playlist_with_loop_2_plays_six_items_then_calls_back_1() {
    let _heavy = media::heavy(&[]).await;
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
    eventually(
        "the playlist's end (1)",
        Duration::from_secs(40),
        || async {
            codes(&receiver, "carousel")
                .await
                .contains(&"1".to_string())
                .then_some(())
        },
    )
    .await;
    let elapsed = started.elapsed();
    let codes = codes(&receiver, "carousel").await;
    assert_eq!(codes.iter().filter(|c| *c == "5").count(), 5, "{codes:?}");
    assert_eq!(codes.first().map(String::as_str), Some("0"), "{codes:?}");
    assert_eq!(codes.last().map(String::as_str), Some("1"), "{codes:?}");
    // 2 passes of 2 s + 1 s + 2 s, paced in real time.
    assert!(
        elapsed >= Duration::from_secs(9),
        "played too fast: {elapsed:?}"
    );
    let item = api.task("carousel").await.expect("task");
    assert_eq!(item["code"], "1");
    assert_ne!(item["endTime"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_destination_is_given_up_with_3_while_the_other_plays_on() {
    let rig = SourceRig::start(&[("RELAYCAST_TIMING__PUSH_GIVE_UP_MS", "2000")]).await;
    let SourceRig {
        nginx,
        api,
        receiver,
        ..
    } = rig;

    let dead = format!("rtmp://127.0.0.1:{}/live/nobody", media::free_port());
    let alive = nginx.url("alive");
    let forwards = [alive.clone(), dead.clone()];
    assert_eq!(
        api.forward(&create_body(
            "half",
            &[nginx.url("src")],
            &forwards,
            &receiver.url
        ))
        .await
        .0,
        200
    );
    playable(alive.clone(), Duration::from_secs(15))
        .await
        .expect("the reachable destination plays");
    let before = nginx
        .stream("alive")
        .and_then(|s| s.publisher)
        .expect("publishing");
    let failure = eventually("callback 3", Duration::from_secs(20), || async {
        receiver
            .bodies_for("half")
            .into_iter()
            .find(|b| b["code"] == "3")
    })
    .await;
    assert_eq!(failure["forwardurl"], dead.as_str(), "{failure}");
    assert_eq!(failure["msg"], "푸시 스트림 실패!");
    let after = nginx
        .stream("alive")
        .and_then(|s| s.publisher)
        .expect("still publishing");
    assert_eq!(
        after.id, before.id,
        "the reachable destination kept its connection"
    );
    let item = api.task("half").await.expect("task");
    assert_eq!(
        item["forward"],
        alive.as_str(),
        "the query lists the destination still pushed to: {item}"
    );
}

/// ffprobes `url` until its video is `size`, or `within` runs out; the time it took.
async fn wait_size(url: &str, size: (u32, u32), within: Duration) -> Option<Duration> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(p) = media::ffprobe(&url, Duration::from_secs(5)) {
                if (p.width, p.height) == size {
                    return Some(start.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    })
    .await
    .unwrap()
}

/// nginx-rtmp's id of the client publishing `name`.
fn publisher_id(nginx: &media::Nginx, name: &str) -> u64 {
    nginx
        .stream(name)
        .and_then(|s| s.publisher)
        .map(|p| p.id)
        .unwrap_or_else(|| panic!("{name} has no publisher"))
}

/// The query's `relay` object of task `id` (relaycast's extension), once present.
async fn relay_status(api: &support::Api, id: &str) -> Option<Value> {
    api.task(id)
        .await
        .and_then(|item| item.get("relay").cloned())
}

/// While a relay to two destinations runs, the query shows what the worker writes back: the
/// source's bitrate and frame rate, a growing position, the source being relayed and both
/// destinations publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_shows_the_running_relays_figures() {
    let rig = SourceRig::start(&[]).await;
    let SourceRig {
        nginx,
        api,
        receiver,
        ..
    } = rig;

    let forwards = vec![nginx.url("fig1"), nginx.url("fig2")];
    let (status, body) = api
        .forward(&create_body(
            "figures",
            &[nginx.url("src")],
            &forwards,
            &receiver.url,
        ))
        .await;
    assert_eq!(
        (status, body["http_code"].as_str()),
        (200, Some("200")),
        "{body}"
    );
    for url in &forwards {
        playable(url.clone(), Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{url} never became playable"));
    }
    // The worker reports every lease heartbeat (1 s here).
    let first = eventually(
        "a report with both destinations publishing",
        Duration::from_secs(15),
        || async {
            let relay = relay_status(&api, "figures").await?;
            let publishing = relay["forward"]
                .as_array()?
                .iter()
                .filter(|f| f["state"] == "publishing")
                .count();
            (relay["state"] == "running" && publishing == 2 && relay["bitrateKbps"].as_f64()? > 0.0)
                .then_some(relay)
        },
    )
    .await;
    eprintln!("relay status: {first}");
    assert_eq!(first["currentSrc"], 0, "{first}");
    let kbps = first["bitrateKbps"].as_f64().unwrap();
    assert!(kbps > 500.0, "bitrate {kbps} kbit/s: {first}");
    let fps = first["fps"].as_f64().unwrap();
    assert!((20.0..=30.0).contains(&fps), "fps {fps}: {first}");
    let urls: Vec<&str> = first["forward"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        forwards.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        first["forward"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["reconnects"] == 0),
        "{first}"
    );
    // The seed's fields are untouched beside it.
    let item = api.task("figures").await.unwrap();
    assert_eq!(
        (item["code"].as_str(), item["cmd"].as_str()),
        (Some("0"), Some("1")),
        "{item}"
    );

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = relay_status(&api, "figures").await.expect("still reported");
    let (p1, p2) = (
        first["positionMs"].as_u64().unwrap(),
        later["positionMs"].as_u64().unwrap(),
    );
    assert!(p2 > p1, "position must grow: {p1} then {p2}");
    assert!(
        later["forward"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["state"] == "publishing"),
        "{later}"
    );

    let stop = json!({ "cmd": "2", "type": "live", "list": [{ "id": "figures" }] });
    assert_eq!(api.forward(&stop).await.0, 200);
    eventually(
        "no report once stopped",
        Duration::from_secs(10),
        || async {
            api.task("figures")
                .await
                .filter(|i| i.get("relay").is_none() && i["code"] == "1")
                .map(|_| ())
        },
    )
    .await;
}

/// Starts a live relay of `[primary 1280x720, backup 640x360]` to `out`, kills the primary's
/// publisher and waits until `out` plays the backup; then restarts the primary publisher.
/// Returns the new primary publisher and `out`'s publisher id (which must never change).
async fn fail_over_to_the_backup(
    nginx: &media::Nginx,
    api: &support::Api,
    primary: &mut media::Publisher,
    body: &Value,
) -> (media::Publisher, u64) {
    let out = nginx.url("out");
    let (status, answer) = api.forward(body).await;
    assert_eq!(
        (status, answer["http_code"].as_str()),
        (200, Some("200")),
        "{answer}"
    );
    wait_size(&out, (1280, 720), Duration::from_secs(20))
        .await
        .expect("out plays the primary");
    let id = publisher_id(nginx, "out");

    primary.kill();
    let took = wait_size(&out, (640, 360), Duration::from_secs(20))
        .await
        .expect("out plays the backup");
    eprintln!("primary killed: out plays the backup after {took:?}");
    assert_eq!(
        publisher_id(nginx, "out"),
        id,
        "the destination reconnected on the failover"
    );
    let relay = eventually(
        "the query shows the backup",
        Duration::from_secs(10),
        || async {
            relay_status(api, "failover")
                .await
                .filter(|r| r["currentSrc"] == 1)
        },
    )
    .await;
    eprintln!("on the backup: {relay}");

    let back = media::Publisher::start_sized(&nginx.url("primary"), 1280, 720);
    assert!(
        nginx
            .wait_publishing("primary", Duration::from_secs(10))
            .is_some(),
        "primary not back"
    );
    (back, id)
}

/// A primary (1280x720) and a backup (640x360) publishing on a private nginx, a relaycast
/// child, a signed client and a callback receiver; `out` is the destination. One test at a
/// time (`media::heavy`).
struct FailoverRig {
    nginx: media::Nginx,
    primary: media::Publisher,
    _backup: media::Publisher,
    _dir: tempfile::TempDir,
    _relaycast: RelaycastProcess,
    api: Api,
    receiver: CallbackReceiver,
    out: String,
    // Last: released after everything above is stopped.
    _heavy: media::HeavyGuard,
}

impl FailoverRig {
    async fn start() -> FailoverRig {
        let heavy = media::heavy(&[]).await;
        let nginx = media::Nginx::start();
        let primary = media::Publisher::start_sized(&nginx.url("primary"), 1280, 720);
        let backup = media::Publisher::start_sized(&nginx.url("backup"), 640, 360);
        assert!(
            nginx
                .wait_publishing("primary", Duration::from_secs(10))
                .is_some(),
            "primary not up"
        );
        assert!(
            nginx
                .wait_publishing("backup", Duration::from_secs(10))
                .is_some(),
            "backup not up"
        );
        let dir = tempfile::tempdir().unwrap();
        let relaycast = start_relaycast(&dir, &[]);
        let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
        let receiver = CallbackReceiver::start().await;
        let out = nginx.url("out");
        FailoverRig {
            nginx,
            primary,
            _backup: backup,
            _dir: dir,
            _relaycast: relaycast,
            api,
            receiver,
            out,
            _heavy: heavy,
        }
    }
}

fn failover_body(nginx: &media::Nginx, callback: &str, extend: Option<Value>) -> Value {
    let mut body = create_body(
        "failover",
        &[nginx.url("primary"), nginx.url("backup")],
        &[nginx.url("out")],
        callback,
    );
    if let Some(extend) = extend {
        body["list"][0]["extendParam"] = extend;
    }
    body
}

/// The seed's manual switch back: after a failover to the backup, the relay stays there when
/// the primary returns, until a `cmd=3` re-sends the task's src list (primary first); then the
/// destination plays the primary again on the same publishing connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmd_3_with_the_same_sources_switches_back_to_the_primary_on_the_same_connection() {
    let rig = FailoverRig::start().await;
    let FailoverRig {
        nginx,
        mut primary,
        api,
        receiver,
        out,
        ..
    } = rig;

    let (_primary, id) = fail_over_to_the_backup(
        &nginx,
        &api,
        &mut primary,
        &failover_body(&nginx, &receiver.url, None),
    )
    .await;
    // Manual is the default: the primary is back, the relay stays on the backup.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let probe = media::ffprobe(&out, Duration::from_secs(5)).expect("out playable");
    assert_eq!(
        (probe.width, probe.height),
        (640, 360),
        "switched back without being told"
    );
    assert_eq!(
        relay_status(&api, "failover").await.expect("reported")["currentSrc"],
        1
    );

    let update = json!({
        "transcallbackurl": receiver.url,
        "cmd": "3",
        "type": "live",
        "list": [{ "id": "failover", "src": [{ "url": nginx.url("primary") }, { "url": nginx.url("backup") }] }]
    });
    let sent = Instant::now();
    let (status, answer) = api.forward(&update).await;
    assert_eq!(
        (status, answer["http_code"].as_str()),
        (200, Some("200")),
        "{answer}"
    );
    wait_size(&out, (1280, 720), Duration::from_secs(20))
        .await
        .expect("out plays the primary again");
    eprintln!("cmd=3 to the primary on out: {:?}", sent.elapsed());
    assert_eq!(
        publisher_id(&nginx, "out"),
        id,
        "the destination reconnected on the switch back"
    );
    eventually(
        "the query shows the primary",
        Duration::from_secs(10),
        || async {
            relay_status(&api, "failover")
                .await
                .filter(|r| r["currentSrc"] == 0 && r["forward"][0]["state"] == "publishing")
        },
    )
    .await;
    eventually(
        "callback 5 for the update",
        Duration::from_secs(10),
        || async {
            codes(&receiver, "failover")
                .await
                .contains(&"5".to_string())
                .then_some(())
        },
    )
    .await;
    let codes = codes(&receiver, "failover").await;
    assert!(
        !codes.iter().any(|c| c == "2" || c == "3"),
        "a failure was reported: {codes:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stat = nginx
        .stream("out")
        .and_then(|s| s.publisher)
        .expect("out still published");
    assert_eq!(stat.id, id, "the destination reconnected");
}

/// relaycast's `extendParam.autoSwitchBack`: once the primary is back and has delivered for the
/// configured seconds, the relay returns to it on its own, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_switch_back_returns_to_the_primary_on_its_own() {
    let rig = FailoverRig::start().await;
    let FailoverRig {
        nginx,
        mut primary,
        api,
        receiver,
        out,
        ..
    } = rig;

    // A bad value is refused with the seed's message shape.
    let mut bad = failover_body(
        &nginx,
        &receiver.url,
        Some(json!({ "autoSwitchBack": "3601" })),
    );
    bad["list"][0]["id"] = json!("bad");
    let (status, answer) = api.forward(&bad).await;
    assert_eq!(
        (status, answer["msg"].as_str()),
        (400, Some("params autoSwitchBack format is error")),
        "{answer}"
    );

    let body = failover_body(
        &nginx,
        &receiver.url,
        Some(json!({ "autoSwitchBack": "3" })),
    );
    let (_primary, id) = fail_over_to_the_backup(&nginx, &api, &mut primary, &body).await;
    let back = Instant::now();
    let took = wait_size(&out, (1280, 720), Duration::from_secs(30))
        .await
        .expect("out plays the primary again on its own");
    eprintln!(
        "primary back: out plays it again after {:?}",
        back.elapsed()
    );
    assert!(
        back.elapsed() >= Duration::from_secs(3),
        "switched back before the clear time: {took:?}"
    );
    assert_eq!(
        publisher_id(&nginx, "out"),
        id,
        "the destination reconnected on the switch back"
    );
    eventually(
        "the query shows the primary",
        Duration::from_secs(10),
        || async {
            relay_status(&api, "failover")
                .await
                .filter(|r| r["currentSrc"] == 0)
        },
    )
    .await;
    let codes = codes(&receiver, "failover").await;
    assert!(
        !codes.iter().any(|c| c == "2" || c == "3"),
        "a failure was reported: {codes:?}"
    );
}

/// A `type=video` playlist whose FIRST item is a 404 (before the task runs) and whose third is
/// one too: callback 4 for each, naming the file with the seed's message, and the playlist goes
/// on with the next item to its end (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_items_that_are_404_call_back_4_and_the_next_item_plays() {
    let _heavy = media::heavy(&[]).await;
    let files = tempfile::tempdir().unwrap();
    // Long enough for a probe to find an item on the air: a probe started between two items
    // waits for the next one, and on a busy machine ffprobe itself takes a few seconds.
    for name in ["b.mp4", "d.mp4"] {
        media::mp4_file(files.path(), name, "320x240", 6);
    }
    let server = media::FileServer::start(files.path().to_path_buf()).await;
    let nginx = media::Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let relaycast = start_relaycast(&dir, &[]);
    let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
    let receiver = CallbackReceiver::start().await;

    let (missing_a, missing_c) = (server.url("missing-a.mp4"), server.url("missing-c.mp4"));
    let body = json!({
        "transcallbackurl": receiver.url,
        "cmd": "1",
        "type": "video",
        "list": [{
            "id": "holes",
            "src": [{ "url": missing_a }, { "url": server.url("b.mp4") }, { "url": missing_c }, { "url": server.url("d.mp4") }],
            "forward": [{ "url": nginx.url("holes") }],
        }]
    });
    let (status, answer) = api.forward(&body).await;
    assert_eq!(status, 200, "{answer}");
    let (probe, _) = playable(nginx.url("holes"), Duration::from_secs(15))
        .await
        .expect("the next item plays");
    assert_eq!((probe.width, probe.height), (320, 240));
    eventually(
        "the playlist's end (1)",
        Duration::from_secs(30),
        || async {
            codes(&receiver, "holes")
                .await
                .contains(&"1".to_string())
                .then_some(())
        },
    )
    .await;
    let bodies = receiver.bodies_for("holes");
    let codes: Vec<&str> = bodies
        .iter()
        .map(|b| b["code"].as_str().unwrap_or_default())
        .collect();
    eprintln!("callbacks: {codes:?}");
    let warnings: Vec<&Value> = bodies.iter().filter(|b| b["code"] == "4").collect();
    assert_eq!(warnings.len(), 2, "{bodies:?}");
    assert_eq!(
        warnings[0]["msg"],
        format!("{missing_a}: 서버에서 404 반환"),
        "{}",
        warnings[0]
    );
    assert_eq!(
        warnings[1]["msg"],
        format!("{missing_c}: 서버에서 404 반환"),
        "{}",
        warnings[1]
    );
    assert!(codes.contains(&"0"), "{codes:?}");
    assert_eq!(codes.last(), Some(&"1"), "{codes:?}");
    assert!(!codes.contains(&"2"), "the task failed: {codes:?}");
    let item = api.task("holes").await.expect("task");
    assert_eq!(item["code"], "1", "{item}");
}
