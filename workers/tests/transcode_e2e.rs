//! End-to-end transcoding: a 1280x720 25 fps source on a private nginx-rtmp, relayed through a
//! session whose ingest transcodes to 640x360 with a PNG watermark fetched from an in-process
//! HTTP server on 127.0.0.1 (private targets allowed). ffprobe checks the destination (codec,
//! size, rate, keyframe spacing, the watermark's pixels), and the transcode's CPU and RSS are
//! measured against a plain ffmpeg running the same transcode.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relaycast_core::domain::relay::types::{Fops, Gravity, Resolution, Source, SourceUrl, TaskType, VideoCodec, WmImages};
use relaycast_workers::ingest::IngestSpec;
use relaycast_workers::session::{RelaySession, SessionSpec};
use relaycast_workers::transcode::{self, WatermarkFetcher, Watermarks};
use support::{ChildGuard, Nginx, Publisher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Serialises the tests of this file: each encodes video on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serves `body` at every path; counts requests.
async fn serve_png(body: Vec<u8>) -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
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
                let head = format!("HTTP/1.0 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n", body.len());
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
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "color=c=red:s=96x48", "-frames:v", "1"])
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
        .args(["-v", "error", "-rw_timeout", "10000000", "-select_streams", "v", "-read_intervals", &format!("%+{secs}")])
        .args(["-show_entries", "frame=key_frame,best_effort_timestamp_time", "-of", "csv=p=0"])
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

/// Mean RGB of a `w`x`h` box at (`x`,`y`) of one decoded frame of `url`.
fn mean_rgb(url: &str, x: u32, y: u32, w: u32, h: u32) -> Option<[f64; 3]> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-rw_timeout", "10000000", "-i", url])
        .args(["-frames:v", "1", "-vf", &format!("crop={w}:{h}:{x}:{y}"), "-pix_fmt", "rgb24", "-f", "rawvideo", "-"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let px = out.stdout;
    if px.len() != (w * h * 3) as usize {
        return None;
    }
    let mut sum = [0f64; 3];
    for c in px.chunks_exact(3) {
        for i in 0..3 {
            sum[i] += f64::from(c[i]);
        }
    }
    let n = f64::from(w * h);
    Some([sum[0] / n, sum[1] / n, sum[2] / n])
}

/// CPU ticks (user + system) and RSS (kB) of process `pid`.
fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks, rss))
}

/// Children of this process whose command line contains `needle`.
fn child_with(needle: &str) -> Option<u32> {
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(i) = stat.rfind(')') else { continue };
        let ppid = stat[i + 2..].split_whitespace().nth(1).unwrap_or("");
        if ppid != me {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle) {
            return Some(pid);
        }
    }
    None
}

/// CPU in % of one core and peak RSS in MB of each pid over `window`.
fn measure(pids: &[u32], window: Duration) -> Vec<(f64, f64)> {
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let start: Vec<_> = pids.iter().map(|p| proc_usage(*p).map(|u| u.0).unwrap_or(0)).collect();
    let mut peak = vec![0u64; pids.len()];
    let t = Instant::now();
    while t.elapsed() < window {
        for (i, p) in pids.iter().enumerate() {
            if let Some((_, rss)) = proc_usage(*p) {
                peak[i] = peak[i].max(rss);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let secs = t.elapsed().as_secs_f64();
    pids.iter()
        .enumerate()
        .map(|(i, p)| {
            let end = proc_usage(*p).map(|u| u.0).unwrap_or(start[i]);
            ((end - start[i]) as f64 / hz / secs * 100.0, peak[i] as f64 / 1024.0)
        })
        .collect()
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

/// 1280x720 → 640x360 25 fps, 1 s GOP, PNG watermark bottom-right: the destination shows it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcodes_with_a_watermark_and_costs_what_plain_ffmpeg_costs() {
    require_nginx_rtmp!();
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let (port, hits, server) = serve_png(make_png(tmp.path())).await;
    let nginx = Nginx::start();
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx.wait_publishing("src", Duration::from_secs(10)).expect("source published");

    let mut source = Source::new(SourceUrl::parse(&nginx.url("src"), TaskType::Live).expect("src"));
    source.wm_image = Some(WmImages::parse(&format!("http://127.0.0.1:{port}/logo.png")).expect("wm"));
    source.wm_gravity = Some(Gravity::BottomRight);
    let fops = Fops {
        vcodec: Some(VideoCodec::Libx264),
        bps: Some(800_000),
        res: Some(Resolution { width: 640, height: 360 }),
        fps: Some(25.0),
        forced_gop_interval_ms: Some(1000),
        ..Fops::default()
    };
    transcode::check_encoders(std::path::Path::new("/usr/bin/ffmpeg"), &fops).await.expect("encoders");
    // The operator's default refuses the loopback image; tests allow private targets.
    let strict = WatermarkFetcher::new(false).expect("client");
    assert!(Watermarks::fetch(&strict, std::slice::from_ref(&source)).await.is_err());
    let fetcher = WatermarkFetcher::new(true).expect("client");
    let watermarks = Watermarks::fetch(&fetcher, &[source.clone(), source.clone()]).await.expect("watermark fetched");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once");
    let wm_dir = watermarks.dir().expect("dir").to_path_buf();
    let mut ingest = IngestSpec::live(source.url.as_str());
    transcode::apply(&mut ingest, &fops, &source, &watermarks).expect("apply");
    drop(watermarks);
    let plain_args = ingest.args().expect("args");

    let dest = nginx.url("t1");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(SessionSpec::on_loopback(vec![ingest], vec![dest.clone()]), tx).expect("session");
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
    let inside = mean_rgb(&dest, 640 - 96 - 10 + 8, 360 - 48 - 10 + 8, 80, 32).expect("frame");
    eprintln!("watermark box mean RGB {inside:?}");
    assert!(inside[0] > 180.0 && inside[1] < 80.0 && inside[2] < 80.0, "watermark not there: {inside:?}");

    let keys = keyframe_times(&dest, 6);
    let gaps: Vec<f64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("keyframes at {keys:?}, gaps {gaps:?}");
    assert!(gaps.len() >= 3, "too few keyframes: {keys:?}");
    assert!(gaps.iter().all(|g| (g - 1.0).abs() < 0.1), "GOP not 1 s: {gaps:?}");

    // Cost of the relay's transcode: the ingest ffmpeg plus this process (splicer, pusher).
    let window = Duration::from_secs(20);
    let ingest_pid = child_with("-filter_complex").expect("ingest ffmpeg");
    let ours = measure(&[ingest_pid, std::process::id()], window);
    eprintln!(
        "relaycast transcode 640x360 + watermark: ingest ffmpeg {:.1} % CPU {:.0} MB RSS; relaycast process {:.1} % CPU {:.0} MB RSS",
        ours[0].0, ours[0].1, ours[1].0, ours[1].1
    );
    assert!(wm_dir.exists(), "watermark files live as long as the session");
    session.stop().await;

    // The same transcode by a plain ffmpeg pushing to nginx itself. The session's files are
    // gone with it: the plain ffmpeg gets its own copy of the PNG.
    let png_copy = tmp.path().join("wm.png");
    let session_png = wm_dir.join("wm0.png").to_string_lossy().into_owned();
    let plain_args_fixed: Vec<String> = plain_args.iter().map(|a| a.replace(&session_png, &png_copy.to_string_lossy())).collect();
    let mut plain = Command::new("ffmpeg");
    plain.args(["-loglevel", "error"]).args(&plain_args_fixed).arg(nginx.url("plain")).stdin(Stdio::null()).stdout(Stdio::null());
    let mut child = ChildGuard::spawn("plain ffmpeg", &mut plain).expect("plain ffmpeg");
    support::wait_playable(&nginx.url("plain"), Duration::from_secs(20)).expect("plain playable");
    let theirs = measure(&[child.pid()], window);
    eprintln!("plain ffmpeg same transcode: {:.1} % CPU {:.0} MB RSS", theirs[0].0, theirs[0].1);
    child.kill();

    // And without the watermark (the DESIGN baseline's "transcode to 640x360").
    let mut bare = IngestSpec::live(source.url.as_str());
    transcode::apply(&mut bare, &fops, &Source::new(source.url.clone()), &Watermarks::default()).expect("apply");
    let mut plain = Command::new("ffmpeg");
    plain.args(["-loglevel", "error"]).args(bare.args().expect("args")).arg(nginx.url("bare")).stdin(Stdio::null()).stdout(Stdio::null());
    let mut child = ChildGuard::spawn("plain ffmpeg", &mut plain).expect("plain ffmpeg");
    support::wait_playable(&nginx.url("bare"), Duration::from_secs(20)).expect("bare playable");
    let bare_cost = measure(&[child.pid()], window);
    eprintln!("plain ffmpeg same transcode without watermark: {:.1} % CPU {:.0} MB RSS", bare_cost[0].0, bare_cost[0].1);
    child.kill();

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
    require_nginx_rtmp!();
    let _serial = SERIAL.lock().await;
    let source = Source::new(SourceUrl::parse("rtmp://127.0.0.1/live/x", TaskType::Live).expect("src"));
    let vorbis = Fops { acodec: Some(relaycast_core::domain::relay::types::AudioCodec::Libvorbis), ..Fops::default() };
    let mut spec = IngestSpec::live(source.url.as_str());
    let e = transcode::apply(&mut spec, &vorbis, &source, &Watermarks::default()).expect_err("refused");
    eprintln!("refused: {e}");

    let nginx = Nginx::start();
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx.wait_publishing("src", Duration::from_secs(10)).expect("source published");
    let source = Source::new(SourceUrl::parse(&nginx.url("src"), TaskType::Live).expect("src"));
    let fops = Fops {
        vcodec: Some(VideoCodec::Libx264),
        acodec: Some(relaycast_core::domain::relay::types::AudioCodec::Libmp3lame),
        forced_gop_interval_ms: Some(1500),
        ..Fops::default()
    };
    transcode::check_encoders(std::path::Path::new("/usr/bin/ffmpeg"), &fops).await.expect("encoders");
    let mut ingest = IngestSpec::live(source.url.as_str());
    transcode::apply(&mut ingest, &fops, &source, &Watermarks::default()).expect("apply");
    let dest = nginx.url("mp3");
    let (tx, _rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(SessionSpec::on_loopback(vec![ingest], vec![dest.clone()]), tx).expect("session");
    let (probe, took) = support::wait_playable(&dest, Duration::from_secs(20)).expect("destination playable");
    eprintln!("mp3 variant: {probe:?} playable after {took:?}");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"));
    assert_eq!(probe.audio_codec.as_deref(), Some("mp3"));
    assert_eq!((probe.width, probe.height), (1280, 720));
    assert!((probe.fps - 25.0).abs() < 0.5, "fps {}", probe.fps);
    let keys = keyframe_times(&dest, 8);
    let gaps: Vec<f64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("keyframes at {keys:?}, gaps {gaps:?}");
    assert!(gaps.len() >= 2, "too few keyframes: {keys:?}");
    assert!(gaps.iter().all(|g| (g - 1.5).abs() < 0.1), "GOP not 1.5 s: {gaps:?}");
    session.stop().await;
    drop(_publisher);
    drop(nginx);
    assert_no_leftovers();
}
