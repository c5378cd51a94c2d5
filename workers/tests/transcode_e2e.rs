//! End-to-end transcoding: a 1280x720 25 fps source on a private nginx-rtmp, relayed through a
//! session whose ingest transcodes to 640x360 with a PNG watermark fetched from an in-process
//! HTTP server on 127.0.0.1 (private targets allowed). ffprobe checks the destination (codec,
//! size, rate, keyframe spacing, the watermark's pixels). What the transcode costs is measured
//! by `relaycast-bench`, not here.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relaycast_core::domain::relay::types::{
    Fops, Gravity, Resolution, Source, SourceUrl, TaskType, VideoCodec, WmImages,
};
use relaycast_workers::ingest::transcode::{self, WatermarkFetcher, Watermarks};
use relaycast_workers::ingest::IngestSpec;
use relaycast_workers::relay::session::{RelaySession, SessionSpec};
use support::{Nginx, Publisher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Serves `body` at every path; counts requests.
async fn serve_png(body: Vec<u8>) -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    (port, hits, task)
}

/// A 96x48 opaque red PNG made by ffmpeg.
fn make_png(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("wm.png");
    let ok = Command::new("ffmpeg")
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
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "ffmpeg made the PNG");
    std::fs::read(&path).expect("png")
}

/// Key frame times (s) of the first `secs` seconds of `url`'s video.
fn keyframe_times(url: &str, secs: u32) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-select_streams",
            "v",
            "-read_intervals",
            &format!("%+{secs}"),
        ])
        .args([
            "-show_entries",
            "frame=key_frame,best_effort_timestamp_time",
            "-of",
            "csv=p=0",
        ])
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let key = f.next()?.trim() == "1";
            let t: f64 = f.next()?.trim().parse().ok()?;
            key.then_some(t)
        })
        .collect()
}

/// Mean RGB of a `w`x`h` box at (`x`,`y`) of one decoded frame of `url`; panics with ffmpeg's
/// error output when it cannot decode one.
fn mean_rgb(url: &str, x: u32, y: u32, w: u32, h: u32) -> [f64; 3] {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-rw_timeout",
            "10000000",
            "-i",
            url,
        ])
        .args([
            "-frames:v",
            "1",
            "-vf",
            &format!("crop={w}:{h}:{x}:{y}"),
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    let px = out.stdout;
    assert_eq!(
        px.len(),
        (w * h * 3) as usize,
        "no frame of {url} ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sum = [0f64; 3];
    for c in px.chunks_exact(3) {
        for i in 0..3 {
            sum[i] += f64::from(c[i]);
        }
    }
    let n = f64::from(w * h);
    [sum[0] / n, sum[1] / n, sum[2] / n]
}

fn assert_no_leftovers() {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let left = support::leftover_children();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 1280x720 → 640x360 25 fps, 1 s GOP, PNG watermark bottom-right: the destination shows it
/// all, and the watermark files live exactly as long as the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcodes_with_a_watermark() {
    let _heavy = support::heavy(&[]).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let (port, hits, server) = serve_png(make_png(tmp.path())).await;
    let nginx = Nginx::start();
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");

    let mut source = Source::new(SourceUrl::parse(&nginx.url("src"), TaskType::Live).expect("src"));
    source.wm_image =
        Some(WmImages::parse(&format!("http://127.0.0.1:{port}/logo.png")).expect("wm"));
    source.wm_gravity = Some(Gravity::BottomRight);
    let fops = Fops {
        vcodec: Some(VideoCodec::Libx264),
        bps: Some(800_000),
        res: Some(Resolution {
            width: 640,
            height: 360,
        }),
        fps: Some(25.0),
        forced_gop_interval_ms: Some(1000),
        ..Fops::default()
    };
    transcode::check_encoders(std::path::Path::new("/usr/bin/ffmpeg"), &fops)
        .await
        .expect("encoders");
    // The operator's default refuses the loopback image; tests allow private targets.
    let strict = WatermarkFetcher::new(false).expect("client");
    assert!(Watermarks::fetch(&strict, std::slice::from_ref(&source))
        .await
        .is_err());
    let fetcher = WatermarkFetcher::new(true).expect("client");
    let watermarks = Watermarks::fetch(&fetcher, &[source.clone(), source.clone()])
        .await
        .expect("watermark fetched");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once");
    let wm_dir = watermarks.dir().expect("dir").to_path_buf();
    let mut ingest = IngestSpec::live(source.url.as_str());
    transcode::apply(&mut ingest, &fops, &source, &watermarks).expect("apply");
    drop(watermarks);

    let dest = nginx.url("t1");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(
        SessionSpec::on_loopback(vec![ingest], vec![dest.clone()]),
        tx,
    )
    .expect("session");
    let Some((probe, took)) = support::wait_playable(&dest, Duration::from_secs(20)) else {
        while let Ok(e) = rx.try_recv() {
            eprintln!("session event: {e:?}");
        }
        panic!("destination not playable; status {:?}", session.status());
    };
    eprintln!("transcode: {probe:?} playable {took:?} after the session start");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!(probe.audio_codec.as_deref(), Some("aac"));
    assert_eq!((probe.width, probe.height), (640, 360));
    assert!((probe.fps - 25.0).abs() < 0.5, "fps {}", probe.fps);

    // The red 96x48 watermark at bottom-right with a 10 px margin; the pattern elsewhere.
    let inside = mean_rgb(&dest, 640 - 96 - 10 + 8, 360 - 48 - 10 + 8, 80, 32);
    eprintln!("watermark box mean RGB {inside:?}");
    assert!(
        inside[0] > 180.0 && inside[1] < 80.0 && inside[2] < 80.0,
        "watermark not there: {inside:?}"
    );

    let keys = keyframe_times(&dest, 6);
    let gaps: Vec<f64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("keyframes at {keys:?}, gaps {gaps:?}");
    assert!(gaps.len() >= 3, "too few keyframes: {keys:?}");
    assert!(
        gaps.iter().all(|g| (g - 1.0).abs() < 0.1),
        "GOP not 1 s: {gaps:?}"
    );

    assert!(
        wm_dir.exists(),
        "watermark files live as long as the session"
    );
    session.stop().await;
    assert!(!wm_dir.exists(), "watermark files deleted with the session");
    server.abort();
    drop(_publisher);
    drop(nginx);
    assert_no_leftovers();
}

/// `acodec=libmp3lame` with `vcodec=libx264` and a 1.5 s `forced_gopInterval` (the source has 2 s) but no `fps`: the
/// destination carries MP3 audio, keeps the source's size and rate, and keyframes follow the
/// time expression alone. `libvorbis` (no FLV/RTMP form) is refused before ffmpeg starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_audio_and_a_gop_by_time() {
    let _heavy = support::heavy(&[]).await;
    let source =
        Source::new(SourceUrl::parse("rtmp://127.0.0.1/live/x", TaskType::Live).expect("src"));
    let vorbis = Fops {
        acodec: Some(relaycast_core::domain::relay::types::AudioCodec::Libvorbis),
        ..Fops::default()
    };
    let mut spec = IngestSpec::live(source.url.as_str());
    let e =
        transcode::apply(&mut spec, &vorbis, &source, &Watermarks::default()).expect_err("refused");
    eprintln!("refused: {e}");

    let nginx = Nginx::start();
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");
    let source = Source::new(SourceUrl::parse(&nginx.url("src"), TaskType::Live).expect("src"));
    let fops = Fops {
        vcodec: Some(VideoCodec::Libx264),
        acodec: Some(relaycast_core::domain::relay::types::AudioCodec::Libmp3lame),
        forced_gop_interval_ms: Some(1500),
        ..Fops::default()
    };
    transcode::check_encoders(std::path::Path::new("/usr/bin/ffmpeg"), &fops)
        .await
        .expect("encoders");
    let mut ingest = IngestSpec::live(source.url.as_str());
    transcode::apply(&mut ingest, &fops, &source, &Watermarks::default()).expect("apply");
    let dest = nginx.url("mp3");
    let (tx, _rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(
        SessionSpec::on_loopback(vec![ingest], vec![dest.clone()]),
        tx,
    )
    .expect("session");
    let (probe, took) =
        support::wait_playable(&dest, Duration::from_secs(20)).expect("destination playable");
    eprintln!("mp3 variant: {probe:?} playable after {took:?}");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!(probe.audio_codec.as_deref(), Some("mp3"));
    assert_eq!((probe.width, probe.height), (1280, 720));
    assert!((probe.fps - 25.0).abs() < 0.5, "fps {}", probe.fps);
    let keys = keyframe_times(&dest, 8);
    let gaps: Vec<f64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("keyframes at {keys:?}, gaps {gaps:?}");
    assert!(gaps.len() >= 2, "too few keyframes: {keys:?}");
    assert!(
        gaps.iter().all(|g| (g - 1.5).abs() < 0.1),
        "GOP not 1.5 s: {gaps:?}"
    );
    session.stop().await;
    drop(_publisher);
    drop(nginx);
    assert_no_leftovers();
}
