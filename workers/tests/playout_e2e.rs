//! End-to-end tests of the playout features on a private nginx-rtmp: in-session source
//! replacement (`cmd=3`), VOD playlists served over HTTP (loops, `relofftime`, failing
//! items, replacement after the current item) and the slate while every source is down.
//! Destination continuity is checked from nginx-rtmp's own stat page (same publishing client
//! id) and what it received (`record all`, or a player that stays on the stream).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use relaycast_workers::ingest::{IngestSpec, TimeWindow};
use relaycast_workers::media::flv::{FlvItem, FlvParser, FlvTag};
use relaycast_workers::relay::session::{
    ApplyAt, FinishCause, Loops, PlayoutEvent, RelaySession, SessionEvent, SessionSpec,
    SlateConfig, SourceState,
};
use support::{mp4_file, FileServer, Nginx, Peer, Publisher};
use tokio::sync::mpsc;

fn tags_of(flv: &[u8]) -> Vec<FlvTag> {
    let mut parser = FlvParser::new();
    parser.push(flv);
    let mut tags = Vec::new();
    while let Ok(Some(item)) = parser.next_item() {
        if let FlvItem::Tag(t) = item {
            tags.push(t);
        }
    }
    tags
}

/// Video frames, steps back and the largest gap (ms) of a received FLV.
fn timeline(tags: &[FlvTag]) -> (usize, usize, u32, u32) {
    let frames: Vec<&FlvTag> = tags.iter().filter(|t| t.is_video_frame()).collect();
    let back = frames
        .windows(2)
        .filter(|w| w[1].timestamp < w[0].timestamp)
        .count();
    let gap = frames
        .windows(2)
        .map(|w| w[1].timestamp.saturating_sub(w[0].timestamp))
        .max()
        .unwrap_or(0);
    let span = frames.last().map(|t| t.timestamp).unwrap_or(0);
    (frames.len(), back, gap, span)
}

/// Decodes an FLV with ffmpeg; returns its error output.
fn decode_errors(dir: &Path, flv: &[u8]) -> String {
    let path = dir.join("received.flv");
    std::fs::write(&path, flv).expect("write recording");
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-nostdin", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg decode");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
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

fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e);
    }
    v
}

/// Waits until a playout event matching `f` arrives; returns everything received so far.
async fn wait_playout(
    rx: &mut mpsc::UnboundedReceiver<PlayoutEvent>,
    seen: &mut Vec<PlayoutEvent>,
    within: Duration,
    f: impl Fn(&PlayoutEvent) -> bool,
) -> bool {
    tokio::time::timeout(within, async {
        while let Some(ev) = rx.recv().await {
            let hit = f(&ev);
            seen.push(ev);
            if hit {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Probes `url` until its picture is `size`; returns how long that took.
fn wait_size(url: &str, size: (u32, u32), within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(p) = support::ffprobe(url, Duration::from_secs(5)) {
            if (p.width, p.height) == size {
                return Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Command lines of this process's ingest ffmpegs (recognised by their protocol whitelist).
fn ingest_children() -> Vec<String> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat[stat.rfind(')')? + 2..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (ppid == me && cmd.contains("protocol_whitelist")).then_some(cmd)
        })
        .collect()
}

fn publisher_id(nginx: &Nginx, name: &str) -> Option<u64> {
    nginx.stream(name).and_then(|s| s.publisher).map(|c| c.id)
}

/// (1) `cmd=3` on a live task: the source is replaced by another one while a player watches;
/// the destination keeps its publishing client, the player sees one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_live_source_keeps_the_destination_connection() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let _a = Publisher::start_sized(&nginx.url("old"), 640, 360);
    let _b = Publisher::start_sized(&nginx.url("new"), 320, 240);
    nginx
        .wait_publishing("old", Duration::from_secs(10))
        .expect("old source");
    nginx
        .wait_publishing("new", Duration::from_secs(10))
        .expect("new source");
    let dest = nginx.url("r1");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut spec =
        SessionSpec::on_loopback(vec![IngestSpec::live(nginx.url("old"))], vec![dest.clone()]);
    spec.source.playout_events = Some(ptx);
    let session = RelaySession::start(spec, tx).expect("session starts");
    let player = support::Player::start(&dest);
    wait_size(&dest, (640, 360), Duration::from_secs(10)).expect("old source on r1");
    let before = publisher_id(&nginx, "r1").expect("r1 publisher");

    let t = Instant::now();
    session
        .replace_sources(vec![IngestSpec::live(nginx.url("new"))], ApplyAt::Now)
        .await
        .expect("replace");
    let took = wait_size(&dest, (320, 240), Duration::from_secs(10)).expect("new source on r1");
    let after = publisher_id(&nginx, "r1").expect("r1 publisher");
    let st = session.status();
    let events = drain(&mut rx);
    let playout = drain(&mut prx);
    eprintln!(
        "(1) replaced: new source playable {took:?} after replace_sources ({:?} in total); \
         r1 client {before} -> {after}; reconnects {}; events {events:?}; playout {playout:?}",
        t.elapsed(),
        st.destinations[0].reconnects
    );
    assert_eq!(before, after, "r1 reconnected");
    assert_eq!(st.destinations[0].reconnects, 0);
    assert_eq!(st.sources, 1);
    assert!(playout.contains(&PlayoutEvent::SourcesReplaced {
        sources: 1,
        index: 0
    }));
    assert!(!events
        .iter()
        .any(|e| matches!(e, SessionEvent::SourceFailed { .. })));
    // The old source's ingest was stopped: nginx sees only its publisher on "old" and
    // the publisher plus one pull (ours) on "new". An RTMP copy source is pulled natively,
    // so no ingest ffmpeg runs at all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let clients = |name: &str| nginx.stream(name).map(|s| s.nclients);
    assert_eq!(clients("old"), Some(1), "the old source is still pulled");
    assert_eq!(clients("new"), Some(2), "the new source is not pulled once");
    assert!(ingest_children().is_empty(), "{:?}", ingest_children());
    assert!(took < Duration::from_secs(6), "slow replacement: {took:?}");

    let (errors, flv) = player.finish();
    let (frames, back, gap, span) = timeline(&tags_of(&flv));
    eprintln!(
        "(1) player: {frames} frames over {span} ms, largest gap {gap} ms, {back} steps back, \
         decoder errors {:?}",
        errors.trim()
    );
    assert!(errors.trim().is_empty(), "decoder errors: {errors}");
    assert_eq!(back, 0);
    assert!(gap <= 200, "gap of {gap} ms");
    session.stop().await;
    drop((_a, _b));
    drop(nginx);
    assert_no_leftovers();
}

/// (2) A 3-item MP4 playlist over HTTP with loop=2 and a `relofftime` on the second item:
/// six items in order on one connection and one timeline, then `Finished`; what nginx
/// recorded has the trimmed length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_playlist_loops_trims_and_finishes() {
    let _heavy = support::heavy(&[]).await;
    let files = tempfile::tempdir().expect("temp dir");
    mp4_file(files.path(), "a.mp4", "320x240", 2);
    mp4_file(files.path(), "b.mp4", "480x270", 3);
    mp4_file(files.path(), "c.mp4", "320x240", 2);
    let http = FileServer::start(files.path().to_path_buf()).await;
    let nginx = Nginx::start();
    let mut b = IngestSpec::vod(http.url("b.mp4"));
    b.window = Some(TimeWindow::parse("1-2").expect("window"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut spec = SessionSpec::on_loopback(
        vec![
            IngestSpec::vod(http.url("a.mp4")),
            b,
            IngestSpec::vod(http.url("c.mp4")),
        ],
        vec![nginx.rec_url("pl")],
    );
    spec.source.loops = Loops::Count(2);
    spec.source.playout_events = Some(ptx);
    let started = Instant::now();
    let session = RelaySession::start(spec, tx).expect("session starts");
    let mut playout = Vec::new();
    let finished = wait_playout(&mut prx, &mut playout, Duration::from_secs(25), |e| {
        matches!(e, PlayoutEvent::Finished { .. })
    })
    .await;
    let took = started.elapsed();
    let st = session.status();
    session.stop().await;
    let items: Vec<(usize, u32)> = playout
        .iter()
        .filter_map(|e| match e {
            PlayoutEvent::ItemStarted { index, loop_number } => Some((*index, *loop_number)),
            _ => None,
        })
        .collect();
    let rec = nginx.recording("pl");
    let tags = tags_of(&rec);
    let (frames, back, gap, span) = timeline(&tags);
    let errors = decode_errors(files.path(), &rec);
    eprintln!(
        "(2) finished {finished} after {took:?}; items {items:?}; playout {playout:?}; \
         nginx recorded {frames} frames over {span} ms, largest gap {gap} ms, {back} steps back, \
         {} video headers, pusher reconnects {}, decoder errors {errors:?}",
        tags.iter().filter(|t| t.is_video_sequence_header()).count(),
        st.destinations[0].reconnects
    );
    assert!(finished, "no Finished: {playout:?}");
    assert_eq!(items, vec![(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]);
    assert_eq!(
        playout.last(),
        Some(&PlayoutEvent::Finished {
            cause: FinishCause::PlaylistFinished,
            reason: "playlist finished".into()
        })
    );
    assert!(!playout
        .iter()
        .any(|e| matches!(e, PlayoutEvent::ItemFailed { .. })));
    let events = drain(&mut rx);
    assert!(matches!(events.last(), Some(SessionEvent::Finished { .. })));
    assert_eq!(st.destinations[0].reconnects, 0);
    assert!(errors.is_empty(), "decoder errors: {errors}");
    assert_eq!(back, 0);
    assert!(gap <= 200, "gap of {gap} ms");
    // 2 × (2 s + 1 s of the 3 s item + 2 s) at 25 fps = 250 frames; the trimmed item alone
    // would add 2 × 50 frames untrimmed.
    assert!((245..=256).contains(&frames), "{frames} frames");
    assert!((9_600..=10_400).contains(&span), "timeline {span} ms");
    assert!(
        took >= Duration::from_secs(9),
        "paced in real time: {took:?}"
    );
    drop(nginx);
    drop(http);
    assert_no_leftovers();
}

/// (3) A playlist item that is not there (HTTP 404) is reported and skipped; a replacement
/// with `AfterCurrentItem` waits for the current item's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_item_404_is_skipped_and_replacement_waits_for_the_item() {
    let _heavy = support::heavy(&[]).await;
    let files = tempfile::tempdir().expect("temp dir");
    mp4_file(files.path(), "a.mp4", "320x240", 2);
    mp4_file(files.path(), "c.mp4", "320x240", 2);
    let http = FileServer::start(files.path().to_path_buf()).await;
    let nginx = Nginx::start();
    let (tx, _rx) = mpsc::unbounded_channel();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut spec = SessionSpec::on_loopback(
        vec![
            IngestSpec::vod(http.url("a.mp4")),
            IngestSpec::vod(http.url("missing.mp4")),
            IngestSpec::vod(http.url("c.mp4")),
        ],
        vec![nginx.rec_url("pl404")],
    );
    spec.source.loops = Loops::Infinite;
    spec.source.playout_events = Some(ptx);
    let session = RelaySession::start(spec, tx).expect("session starts");
    let mut playout = Vec::new();
    // First pass: a, the 404, c.
    let third = wait_playout(&mut prx, &mut playout, Duration::from_secs(10), |e| {
        matches!(e, PlayoutEvent::ItemStarted { index: 2, .. })
    })
    .await;
    assert!(third, "{playout:?}");
    // During c: replace the list, effective when c ends.
    let asked = Instant::now();
    session
        .replace_sources(
            vec![IngestSpec::vod(http.url("a.mp4"))],
            ApplyAt::AfterCurrentItem,
        )
        .await
        .expect("replace");
    let replaced = wait_playout(&mut prx, &mut playout, Duration::from_secs(10), |e| {
        matches!(e, PlayoutEvent::SourcesReplaced { .. })
    })
    .await;
    let waited = asked.elapsed();
    // The new list plays once (the session's loops are kept: infinite), so just see it start.
    let restarted = wait_playout(&mut prx, &mut playout, Duration::from_secs(5), |e| {
        matches!(
            e,
            PlayoutEvent::ItemStarted {
                index: 0,
                loop_number: 1
            }
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = session.status();
    session.stop().await;
    playout.extend(drain(&mut prx));
    eprintln!("(3) replacement took effect {waited:?} after it was asked for; playout {playout:?}");
    assert!(replaced && restarted, "{playout:?}");
    let failed: Vec<_> = playout
        .iter()
        .filter(|e| matches!(e, PlayoutEvent::ItemFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{playout:?}");
    assert!(
        matches!(failed[0], PlayoutEvent::ItemFailed { index: 1, reason } if reason.contains("404")),
        "{failed:?}"
    );
    let order: Vec<&PlayoutEvent> = playout.iter().take(4).collect();
    assert_eq!(
        order[0],
        &PlayoutEvent::ItemStarted {
            index: 0,
            loop_number: 1
        }
    );
    assert_eq!(
        order[1],
        &PlayoutEvent::ItemStarted {
            index: 1,
            loop_number: 1
        }
    );
    assert!(matches!(
        order[2],
        PlayoutEvent::ItemFailed { index: 1, .. }
    ));
    assert_eq!(
        order[3],
        &PlayoutEvent::ItemStarted {
            index: 2,
            loop_number: 1
        }
    );
    // c had ~2 s to play when the replacement was asked for at its start.
    assert!(
        waited >= Duration::from_millis(1200),
        "did not wait for the item: {waited:?}"
    );
    assert_eq!(st.sources, 1);
    assert_eq!(st.destinations[0].reconnects, 0);
    drop(nginx);
    drop(http);
    assert_no_leftovers();
}

/// (4) Every source dies: the destination keeps its connection and gets the slate (a
/// player probing it sees video); the publisher comes back and its picture resumes on the
/// same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slate_holds_the_destination_until_the_source_returns() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let mut publisher = Publisher::start_sized(&nginx.url("src"), 640, 360);
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");
    let dest = nginx.url("s1");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut spec =
        SessionSpec::on_loopback(vec![IngestSpec::live(nginx.url("src"))], vec![dest.clone()]);
    spec.source.stall_timeout = Duration::from_millis(1500);
    spec.source.retry_delay = Duration::from_millis(500);
    spec.source.slate = Some(SlateConfig {
        timeout: Duration::from_secs(60),
        ..SlateConfig::default()
    });
    spec.source.playout_events = Some(ptx);
    let session = RelaySession::start(spec, tx).expect("session starts");
    let player = support::Player::start(&dest);
    wait_size(&dest, (640, 360), Duration::from_secs(10)).expect("source on s1");
    let id = publisher_id(&nginx, "s1").expect("s1 publisher");

    publisher.kill();
    let killed = Instant::now();
    let mut playout = Vec::new();
    let slate = wait_playout(&mut prx, &mut playout, Duration::from_secs(8), |e| {
        *e == PlayoutEvent::SlateStarted
    })
    .await;
    let slate_after = killed.elapsed();
    assert!(slate, "no slate: {playout:?}");
    assert_eq!(session.status().source_state, SourceState::Slate);
    // A player joining now gets the slate: video at the stream's size.
    let (p, probe_took) =
        support::wait_playable(&dest, Duration::from_secs(8)).expect("slate playable");
    let bytes0 = nginx.stream("s1").map(|s| s.bytes_in).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bytes1 = nginx.stream("s1").map(|s| s.bytes_in).unwrap_or(0);
    let during = publisher_id(&nginx, "s1").expect("s1 publisher during the slate");
    eprintln!(
        "(4) slate started {slate_after:?} after the publisher died; probe {p:?} in \
         {probe_took:?}; {} bytes/s into s1; client {id} -> {during}",
        bytes1 - bytes0
    );
    assert_eq!((p.width, p.height), (640, 360));
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert_eq!(id, during, "s1 reconnected for the slate");
    assert!(bytes1 > bytes0, "slate not flowing");

    // The publisher comes back (another size, to see whose picture it is).
    let _publisher = Publisher::start_sized(&nginx.url("src"), 320, 240);
    let back_at = Instant::now();
    let back = wait_size(&dest, (320, 240), Duration::from_secs(15)).expect("source back on s1");
    let ended = wait_playout(&mut prx, &mut playout, Duration::from_secs(2), |e| {
        *e == PlayoutEvent::SlateEnded
    })
    .await;
    let st = session.status();
    let after = publisher_id(&nginx, "s1").expect("s1 publisher after");
    let events = drain(&mut rx);
    eprintln!(
        "(4) source picture back {back:?} after the publisher restarted ({:?}); client {id} -> \
         {after}; reconnects {}; events {events:?}; playout {playout:?}",
        back_at.elapsed(),
        st.destinations[0].reconnects
    );
    assert!(ended, "{playout:?}");
    assert_eq!(id, after, "s1 reconnected");
    assert_eq!(st.destinations[0].reconnects, 0);
    assert_eq!(st.source_state, SourceState::Running);
    let (errors, flv) = player.finish();
    let tags = tags_of(&flv);
    let (frames, back_steps, gap, span) = timeline(&tags);
    eprintln!(
        "(4) player: {frames} frames over {span} ms, {} video headers, largest gap {gap} ms, \
         {back_steps} steps back, decoder errors {:?}",
        tags.iter().filter(|t| t.is_video_sequence_header()).count(),
        errors.trim()
    );
    assert!(errors.trim().is_empty(), "decoder errors: {errors}");
    assert_eq!(back_steps, 0);
    assert!(gap <= 200, "gap of {gap} ms");
    session.stop().await;
    drop((publisher, _publisher));
    drop(nginx);
    assert_no_leftovers();
}

/// (5) A live `relofftime` of `0-3` relays three seconds and finishes; a slate that runs out
/// reports that every source failed, then finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_window_and_slate_timeout_end_the_session() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let mut publisher = Publisher::start_sized(&nginx.url("src"), 320, 240);
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");

    let mut src = IngestSpec::live(nginx.url("src"));
    src.window = Some(TimeWindow::parse("0-3").expect("window"));
    let (tx, _rx) = mpsc::unbounded_channel();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut spec = SessionSpec::on_loopback(vec![src], vec![nginx.url("w1")]);
    spec.source.playout_events = Some(ptx);
    let t = Instant::now();
    let windowed = RelaySession::start(spec, tx).expect("session starts");
    let mut playout = Vec::new();
    let done = wait_playout(&mut prx, &mut playout, Duration::from_secs(8), |e| {
        matches!(e, PlayoutEvent::Finished { .. })
    })
    .await;
    let took = t.elapsed();
    windowed.stop().await;
    eprintln!("(5) live window 0-3 finished after {took:?}: {playout:?}");
    assert!(done);
    assert!(
        matches!(playout.last(), Some(PlayoutEvent::Finished { cause: FinishCause::Duration, reason }) if reason.contains("relofftime"))
    );
    assert!((Duration::from_millis(2900)..Duration::from_secs(5)).contains(&took));

    // The second part uses an image slate (operator-provided file).
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("slate.png");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "color=c=navy:s=160x120",
            "-frames:v",
            "1",
        ])
        .arg(&image)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot write the slate image");
    let (tx, _rx) = mpsc::unbounded_channel();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut spec = SessionSpec::on_loopback(
        vec![IngestSpec::live(nginx.url("src"))],
        vec![nginx.url("w2")],
    );
    // The slate runs long enough for a player to connect to it on a loaded machine; the
    // limits below follow from these two settings.
    let stall = Duration::from_millis(1500);
    let slate_timeout = Duration::from_secs(12);
    spec.source.stall_timeout = stall;
    spec.source.slate = Some(SlateConfig {
        timeout: slate_timeout,
        image: Some(image),
        ..SlateConfig::default()
    });
    spec.source.playout_events = Some(ptx);
    let session = RelaySession::start(spec, tx).expect("session starts");
    wait_size(&nginx.url("w2"), (320, 240), Duration::from_secs(10)).expect("w2 playable");
    publisher.kill();
    let killed = Instant::now();
    let mut playout = Vec::new();
    assert!(
        wait_playout(
            &mut prx,
            &mut playout,
            stall + Duration::from_secs(5),
            |e| { *e == PlayoutEvent::SlateStarted }
        )
        .await
    );
    // The image, scaled to the stream's size, is what a player gets now.
    let (p, _) = support::wait_playable(&nginx.url("w2"), slate_timeout - Duration::from_secs(2))
        .expect("image slate playable");
    assert_eq!((p.width, p.height), (320, 240));
    let done = wait_playout(
        &mut prx,
        &mut playout,
        slate_timeout + Duration::from_secs(10),
        |e| matches!(e, PlayoutEvent::Finished { .. }),
    )
    .await;
    let took = killed.elapsed();
    session.stop().await;
    eprintln!(
        "(5) image slate {p:?}; slate timeout: finished {took:?} after the publisher died: \
         {playout:?}"
    );
    assert!(done, "{playout:?}");
    assert_eq!(playout[0], PlayoutEvent::SlateStarted);
    assert_eq!(playout[1], PlayoutEvent::SlateEnded);
    assert!(matches!(playout[2], PlayoutEvent::SourcesExhausted { .. }));
    assert!(matches!(
        playout[3],
        PlayoutEvent::Finished {
            cause: FinishCause::SourcesExhausted,
            ..
        }
    ));
    // The slate ran its time after the stall was seen, and not much more.
    assert!(took >= slate_timeout, "{took:?}");
    assert!(
        took < stall + slate_timeout + Duration::from_secs(4),
        "{took:?}"
    );
    drop(publisher);
    drop(nginx);
    assert_no_leftovers();
}

/// (6) With `switch_back_after`, the session goes back to the primary by itself once it has
/// been up again for the clear time, on the same destination connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_back_to_the_primary_once_it_is_healthy() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let mut primary = Publisher::start_sized(&nginx.url("primary"), 640, 360);
    let backup = Publisher::start_sized(&nginx.url("backup"), 320, 240);
    nginx
        .wait_publishing("primary", Duration::from_secs(10))
        .expect("primary");
    nginx
        .wait_publishing("backup", Duration::from_secs(10))
        .expect("backup");
    let dest = nginx.url("sb");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut spec = SessionSpec::on_loopback(
        vec![
            IngestSpec::live(nginx.url("primary")),
            IngestSpec::live(nginx.url("backup")),
        ],
        vec![dest.clone()],
    );
    spec.source.stall_timeout = Duration::from_millis(1500);
    spec.source.switch_back_after = Some(Duration::from_secs(2));
    let session = RelaySession::start(spec, tx).expect("session starts");
    wait_size(&dest, (640, 360), Duration::from_secs(10)).expect("primary on sb");
    let id = publisher_id(&nginx, "sb").expect("sb publisher");
    primary.kill();
    wait_size(&dest, (320, 240), Duration::from_secs(10)).expect("backup on sb");
    assert_eq!(session.status().current_source, 1);
    let _primary = Publisher::start_sized(&nginx.url("primary"), 640, 360);
    let restarted = Instant::now();
    let back = wait_size(&dest, (640, 360), Duration::from_secs(15)).expect("primary back on sb");
    let st = session.status();
    let after = publisher_id(&nginx, "sb").expect("sb publisher after");
    let events = drain(&mut rx);
    eprintln!(
        "(6) primary picture back {back:?} after it restarted ({:?}); client {id} -> {after}; \
         events {events:?}",
        restarted.elapsed()
    );
    assert_eq!(st.current_source, 0);
    assert_eq!(id, after, "sb reconnected");
    assert_eq!(st.destinations[0].reconnects, 0);
    assert!(events.contains(&SessionEvent::SwitchedSource { from: 1, to: 0 }));
    session.stop().await;
    drop((primary, _primary, backup));
    drop(nginx);
    assert_no_leftovers();
}

/// (7) A playlist of local files started at its second item (`index=2`) with loop=2: the
/// first pass starts there, the second from the first item. No destination needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_start_index_applies_to_the_first_pass_only() {
    // One at a time too: the leftover check would see the other tests' processes.
    let _heavy = relaycast_workers::test_peers::heavy(&[Peer::Ffmpeg, Peer::Procps]).await;
    let files = tempfile::tempdir().expect("temp dir");
    for name in ["a.mp4", "b.mp4", "c.mp4"] {
        mp4_file(files.path(), name, "160x120", 1);
    }
    let item = |n: &str| IngestSpec::local_file(files.path().join(n).display().to_string());
    let (tx, _rx) = mpsc::unbounded_channel();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut spec =
        SessionSpec::on_loopback(vec![item("a.mp4"), item("b.mp4"), item("c.mp4")], vec![]);
    spec.source.loops = Loops::Count(2);
    spec.source.start_index = 1;
    spec.source.playout_events = Some(ptx);
    let session = RelaySession::start(spec, tx).expect("session starts");
    let mut playout = Vec::new();
    let done = wait_playout(&mut prx, &mut playout, Duration::from_secs(15), |e| {
        matches!(e, PlayoutEvent::Finished { .. })
    })
    .await;
    session.stop().await;
    let items: Vec<(usize, u32)> = playout
        .iter()
        .filter_map(|e| match e {
            PlayoutEvent::ItemStarted { index, loop_number } => Some((*index, *loop_number)),
            _ => None,
        })
        .collect();
    eprintln!("(7) {playout:?}");
    assert!(done);
    assert_eq!(items, vec![(1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]);
    assert_no_leftovers();
}

/// (8) Changing only the loop count of a running playlist: the pass under way counts as the
/// first, the item playing goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_loops_counts_the_current_pass() {
    let _heavy = relaycast_workers::test_peers::heavy(&[Peer::Ffmpeg, Peer::Procps]).await;
    let files = tempfile::tempdir().expect("temp dir");
    mp4_file(files.path(), "a.mp4", "160x120", 1);
    let item = IngestSpec::local_file(files.path().join("a.mp4").display().to_string());
    let (tx, _rx) = mpsc::unbounded_channel();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut spec = SessionSpec::on_loopback(vec![item], vec![]);
    spec.source.loops = Loops::Infinite;
    spec.source.playout_events = Some(ptx);
    let session = RelaySession::start(spec, tx).expect("session starts");
    let mut playout = Vec::new();
    // Into the second pass, then: two passes in all from now on.
    assert!(
        wait_playout(&mut prx, &mut playout, Duration::from_secs(5), |e| {
            matches!(e, PlayoutEvent::ItemStarted { loop_number: 2, .. })
        })
        .await
    );
    session.set_loops(Loops::Count(2)).await.expect("set loops");
    let done = wait_playout(&mut prx, &mut playout, Duration::from_secs(8), |e| {
        matches!(e, PlayoutEvent::Finished { .. })
    })
    .await;
    session.stop().await;
    let passes: Vec<u32> = playout
        .iter()
        .filter_map(|e| match e {
            PlayoutEvent::ItemStarted { loop_number, .. } => Some(*loop_number),
            _ => None,
        })
        .collect();
    eprintln!("(8) {playout:?}");
    assert!(done, "{playout:?}");
    // 1, 2 (under way when the count changed: now pass 1 of 2), then one more.
    assert_eq!(passes, vec![1, 2, 2]);
    assert!(matches!(
        playout.last(),
        Some(PlayoutEvent::Finished {
            cause: FinishCause::PlaylistFinished,
            ..
        })
    ));
    assert_no_leftovers();
}
