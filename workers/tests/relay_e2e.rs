//! End-to-end relay tests on a private nginx-rtmp with real ffmpeg publishers, ingest and
//! ffprobe players. They run one at a time (`support::heavy`): each publisher encodes 720p
//! x264 and the machine is small, so parallel runs would only measure CPU contention.

mod support;

use std::time::{Duration, Instant};

use relaycast_workers::ingest::IngestSpec;
use relaycast_workers::media::flv::{FlvItem, FlvParser};
use relaycast_workers::relay::pusher::PusherState;
use relaycast_workers::relay::session::{RelaySession, SessionEvent, SessionSpec};
use support::{Nginx, Publisher};
use tokio::sync::mpsc;

fn wait_all_publishing(nginx: &Nginx, names: &[&str], within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        let stat = nginx.stat();
        let ok = names.iter().all(|n| {
            stat.iter()
                .any(|s| s.name == *n && s.publisher.is_some() && s.bytes_in > 50_000)
        });
        if ok {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn drain(rx: &mut mpsc::UnboundedReceiver<SessionEvent>) -> Vec<SessionEvent> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e);
    }
    v
}

fn assert_no_leftovers() {
    // Killed children are reaped by their owners; give the ingest stop a moment.
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

/// (a) One published source relayed to three destinations on the same nginx: all three are
/// playable with the source's codecs and size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_one_source_to_three_destinations() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");

    let dests: Vec<String> = ["a1", "a2", "a3"].iter().map(|n| nginx.url(n)).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(
        SessionSpec::on_loopback(vec![IngestSpec::live(nginx.url("src"))], dests.clone()),
        tx,
    )
    .expect("session starts");

    // Players wait on the destinations from the start (play before publish, as a viewer
    // who opened the page first), so their time is the relay's time to first frame.
    let probes = std::thread::scope(|s| {
        let players: Vec<_> = dests
            .iter()
            .map(|u| s.spawn(move || support::wait_playable(u, Duration::from_secs(10))))
            .collect();
        let publishing = wait_all_publishing(&nginx, &["a1", "a2", "a3"], Duration::from_secs(10));
        let probes: Vec<_> = players
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect();
        (publishing, probes)
    });
    let (publishing, probes) = probes;
    let publishing = publishing.expect("all three destinations publishing");
    eprintln!("(a) all 3 destinations publishing (stat) after {publishing:?}");
    for (url, p) in dests.iter().zip(&probes) {
        let (p, took) = p.clone().unwrap_or_else(|| panic!("{url} not playable"));
        eprintln!("(a) {url}: {p:?}, probed {took:?} after the session start");
        assert_eq!(p.video_codec.as_deref(), Some("h264"));
        assert_eq!(p.audio_codec.as_deref(), Some("aac"));
        assert_eq!((p.width, p.height), (1280, 720));
        assert!((p.fps - 25.0).abs() < 0.5, "fps {}", p.fps);
        assert!(took < Duration::from_secs(6), "slow first frame: {took:?}");
    }
    assert!(
        publishing < Duration::from_secs(5),
        "slow start: {publishing:?}"
    );

    let st = session.status();
    eprintln!(
        "(a) status: source {} {:?}, {:.0} kbit/s, {:.1} fps, position {} ms",
        st.current_source, st.source_state, st.bitrate_kbps, st.fps, st.position_ms
    );
    assert!((20.0..=30.0).contains(&st.fps), "fps {}", st.fps);
    assert!(st
        .destinations
        .iter()
        .all(|d| d.state == PusherState::Publishing));
    assert!(st
        .destinations
        .iter()
        .all(|d| d.reconnects == 0 && d.bytes_sent > 100_000));
    session.stop().await;
    let events = drain(&mut rx);
    assert_eq!(events.first(), Some(&SessionEvent::Started));
    assert!(matches!(events.last(), Some(SessionEvent::Finished { .. })));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SessionEvent::DestinationFailed { .. })),
        "{events:?}"
    );
    drop(_publisher);
    drop(nginx);
    assert_no_leftovers();
}

/// (b) Stopping one of three destinations leaves the other two on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_destination_leaves_the_others_alone() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");
    let dests: Vec<String> = ["b1", "b2", "b3"].iter().map(|n| nginx.url(n)).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(
        SessionSpec::on_loopback(vec![IngestSpec::live(nginx.url("src"))], dests.clone()),
        tx,
    )
    .expect("session starts");
    wait_all_publishing(&nginx, &["b1", "b2", "b3"], Duration::from_secs(10))
        .expect("all publishing");
    let before = nginx.stat();
    let get = |stat: &[support::StreamStat], n: &str| stat.iter().find(|s| s.name == n).cloned();

    session.stop_destination(&dests[1]).await.expect("stop b2");
    assert!(
        session.stop_destination(&dests[1]).await.is_err(),
        "already gone"
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = nginx.stat();
    for n in ["b1", "b3"] {
        let (b, a) = (
            get(&before, n).expect("before"),
            get(&after, n).expect("after"),
        );
        let (bp, ap) = (b.publisher.expect("pub"), a.publisher.expect("pub"));
        eprintln!(
            "(b) {n}: client {} -> {}, uptime {} -> {} ms, bytes_in {} -> {}",
            bp.id, ap.id, bp.time_ms, ap.time_ms, b.bytes_in, a.bytes_in
        );
        assert_eq!(bp.id, ap.id, "{n} reconnected");
        assert!(ap.time_ms >= bp.time_ms + 1500);
        assert!(a.bytes_in > b.bytes_in + 100_000);
    }
    let b2 = get(&after, "b2");
    assert!(
        b2.and_then(|s| s.publisher).is_none(),
        "b2 still publishing"
    );

    // A destination added to the running session starts with headers and a keyframe.
    let b4 = nginx.url("b4");
    session.add_destination(&b4).expect("add b4");
    assert!(session.add_destination(&b4).is_err(), "duplicate");
    let (p, took) = support::wait_playable(&b4, Duration::from_secs(10)).expect("b4 playable");
    eprintln!("(b) added destination playable after {took:?}: {p:?}");
    assert_eq!((p.width, p.height), (1280, 720));
    let st = session.status();
    assert_eq!(st.destinations.len(), 3);
    assert!(st.destinations.iter().all(|d| d.reconnects == 0));
    session.stop().await;
    assert!(!drain(&mut rx)
        .iter()
        .any(|e| matches!(e, SessionEvent::DestinationFailed { .. })));
    drop(_publisher);
    drop(nginx);
    assert_no_leftovers();
}

/// (c) The primary publisher dies: the session fails over to the backup (another stream
/// name, another resolution) without reconnecting any destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_failure_fails_over_to_backup_on_the_same_connections() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let mut primary = Publisher::start(&nginx.url("primary"));
    let _backup = Publisher::start_sized(&nginx.url("backup"), 640, 360);
    nginx
        .wait_publishing("primary", Duration::from_secs(10))
        .expect("primary published");
    nginx
        .wait_publishing("backup", Duration::from_secs(10))
        .expect("backup published");
    let dests: Vec<String> = ["c1", "c2"].iter().map(|n| nginx.url(n)).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = SessionSpec::on_loopback(
        vec![
            IngestSpec::live(nginx.url("primary")),
            IngestSpec::live(nginx.url("backup")),
        ],
        dests.clone(),
    );
    let stall = spec.source.stall_timeout;
    let session = RelaySession::start(spec, tx).expect("session starts");
    // A player stays on c1 through the failover and the switch back.
    let player = support::Player::start(&dests[0]);
    wait_all_publishing(&nginx, &["c1", "c2"], Duration::from_secs(10)).expect("publishing");
    let (p, _) = support::wait_playable(&dests[0], Duration::from_secs(10)).expect("playable");
    assert_eq!((p.width, p.height), (1280, 720));
    let before = nginx.stat();
    let pos_before = session.status().position_ms;

    primary.kill();
    let killed = Instant::now();
    // The origin tells its players that the publisher left, and the backup is already
    // pulled (hot standby): the session is on the backup long before the stall timeout.
    let mut switched = None;
    while killed.elapsed() < Duration::from_secs(10) {
        if session.status().current_source == 1 {
            switched = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let switched = switched.expect("switched to the backup");
    eprintln!("(c) on the backup {switched:?} after the primary was killed");
    // Without the origin's word and the standby it would take the stall timeout.
    assert!(
        switched < stall,
        "slow failover: {switched:?} (stall timeout {stall:?})"
    );
    // Playable from the backup: a player that connects now gets the backup's 640x360.
    let mut recovered = None;
    while killed.elapsed() < Duration::from_secs(15) {
        if let Some(p) = support::ffprobe(&dests[0], Duration::from_secs(5)) {
            if (p.width, p.height) == (640, 360) {
                recovered = Some(killed.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovered = recovered.expect("destination plays the backup");
    let st = session.status();
    eprintln!(
        "(c) playable from the backup {recovered:?} after the primary was killed; \
         source {} {:?}, position {} -> {} ms",
        st.current_source, st.source_state, pos_before, st.position_ms
    );
    assert_eq!(st.current_source, 1);
    let after = nginx.stat();
    for n in ["c1", "c2"] {
        let b = before
            .iter()
            .find(|s| s.name == n)
            .and_then(|s| s.publisher.clone());
        let a = after
            .iter()
            .find(|s| s.name == n)
            .and_then(|s| s.publisher.clone());
        let (b, a) = (b.expect("before"), a.expect("after"));
        eprintln!(
            "(c) {n}: client {} -> {}, uptime {} -> {} ms",
            b.id, a.id, b.time_ms, a.time_ms
        );
        assert_eq!(b.id, a.id, "{n} reconnected");
        assert!(a.time_ms > b.time_ms);
    }
    assert!(st.destinations.iter().all(|d| d.reconnects == 0));
    let events = drain(&mut rx);
    eprintln!("(c) events: {events:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, SessionEvent::SourceFailed { index: 0, .. })));
    assert!(events.contains(&SessionEvent::SwitchedSource { from: 0, to: 1 }));
    assert!(
        recovered < Duration::from_secs(8),
        "slow failover: {recovered:?}"
    );

    // Manual switch back to the (restarted) primary, still on the same connections.
    let mut primary = Publisher::start(&nginx.url("primary"));
    nginx
        .wait_publishing("primary", Duration::from_secs(10))
        .expect("primary back");
    let switch_at = Instant::now();
    session.switch_to_source(0).await.expect("switch");
    let mut back = None;
    while switch_at.elapsed() < Duration::from_secs(10) {
        if let Some(p) = support::ffprobe(&dests[1], Duration::from_secs(5)) {
            if (p.width, p.height) == (1280, 720) {
                back = Some(switch_at.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = back.expect("back on the primary");
    let last = nginx.stat();
    for n in ["c1", "c2"] {
        let b = before
            .iter()
            .find(|s| s.name == n)
            .and_then(|s| s.publisher.clone());
        let a = last
            .iter()
            .find(|s| s.name == n)
            .and_then(|s| s.publisher.clone());
        assert_eq!(
            b.map(|c| c.id),
            a.map(|c| c.id),
            "{n} reconnected on switch back"
        );
    }
    eprintln!("(c) back on the primary, playable after {back:?}");
    std::thread::sleep(Duration::from_secs(1));

    // What the player saw: one stream, no decoder error, monotonic timestamps without a
    // gap, and the resolution changing 720p -> 360p -> 720p.
    let (errors, flv) = player.finish();
    let mut parser = FlvParser::new();
    let mut tags = Vec::new();
    parser.push(&flv);
    while let Ok(Some(item)) = parser.next_item() {
        if let FlvItem::Tag(t) = item {
            tags.push(t);
        }
    }
    let frames: Vec<_> = tags.iter().filter(|t| t.is_video_frame()).collect();
    let headers = tags.iter().filter(|t| t.is_video_sequence_header()).count();
    let max_gap = frames
        .windows(2)
        .map(|w| i64::from(w[1].timestamp) - i64::from(w[0].timestamp))
        .max()
        .unwrap_or(0);
    let backwards = frames
        .windows(2)
        .filter(|w| w[1].timestamp < w[0].timestamp)
        .count();
    let span = frames.last().map(|t| t.timestamp).unwrap_or(0);
    eprintln!(
        "(c) player on c1: {} video frames over {span} ms, {headers} video sequence headers, \
         largest frame gap {max_gap} ms, {backwards} steps back, decoder errors: {:?}",
        frames.len(),
        errors.trim()
    );
    assert!(errors.trim().is_empty(), "decoder errors: {errors}");
    assert_eq!(backwards, 0);
    assert!(max_gap <= 200, "gap of {max_gap} ms in the output timeline");
    assert!(
        headers >= 3,
        "720p, 360p and 720p headers expected, got {headers}"
    );
    session.stop().await;
    primary.kill();
    drop(_backup);
    drop(nginx);
    assert_no_leftovers();
}

/// (c') The primary stalls without closing its connection (its encoder hangs): the session
/// sees the silence while the hot standby delivers, fails over in about 0.4 s on the same
/// destination connection, and the destination's player sees no step back and at most about
/// half a second without a new frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_primary_fails_over_while_its_connection_stays_open() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let primary = Publisher::start(&nginx.url("quiet"));
    let _backup = Publisher::start_sized(&nginx.url("spare"), 640, 360);
    for name in ["quiet", "spare"] {
        nginx
            .wait_publishing(name, Duration::from_secs(10))
            .expect("published");
    }
    let dest = nginx.url("q1");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = SessionSpec::on_loopback(
        vec![
            IngestSpec::live(nginx.url("quiet")),
            IngestSpec::live(nginx.url("spare")),
        ],
        vec![dest.clone()],
    );
    let stall = spec.source.stall_timeout;
    let session = RelaySession::start(spec, tx).expect("session starts");
    support::wait_playable(&dest, Duration::from_secs(10)).expect("playable");
    let before = nginx
        .stream("q1")
        .and_then(|s| s.publisher)
        .expect("publisher");
    let player = support::Player::start(&dest);
    assert!(
        player.wait_live(Duration::from_secs(10)),
        "the player got no frame"
    );
    let live = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    primary.freeze();
    let frozen = Instant::now();
    let mut switched = None;
    while frozen.elapsed() < Duration::from_secs(10) {
        if session.status().current_source == 1 {
            switched = Some(frozen.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The primary's publisher is still connected to its origin all along.
    assert!(nginx.stream("quiet").and_then(|s| s.publisher).is_some());
    let switched = switched.expect("switched to the backup");
    eprintln!("(c') on the backup {switched:?} after the primary froze");
    // The standby's data shows the silence after about 0.4 s; the stall timeout is what
    // the session would wait without it.
    assert!(
        switched < stall,
        "slow failover: {switched:?} (stall timeout {stall:?})"
    );
    let (p, _) = support::wait_playable(&dest, Duration::from_secs(10)).expect("playable");
    assert_eq!((p.width, p.height), (640, 360));
    let after = nginx
        .stream("q1")
        .and_then(|s| s.publisher)
        .expect("publisher");
    assert_eq!(before.id, after.id, "the destination reconnected");
    let events = drain(&mut rx);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::SourceFailed { index: 0, .. })),
        "{events:?}"
    );

    let (errors, flv, arrivals) = player.finish_timed();
    let mut parser = FlvParser::new();
    parser.push(&flv);
    let mut frames = Vec::new();
    while let Ok(Some(item)) = parser.next_item() {
        if let FlvItem::Tag(t) = item {
            if t.is_video_frame() {
                frames.push(t.timestamp);
            }
        }
    }
    let backwards = frames.windows(2).filter(|w| w[1] < w[0]).count();
    eprintln!(
        "(c') player: {} frames, {backwards} steps back, errors {:?}",
        frames.len(),
        errors.trim()
    );
    assert!(errors.trim().is_empty(), "decoder errors: {errors}");
    assert_eq!(backwards, 0);

    // The largest pause between video frames reaching the player, by the wall clock: the
    // failover's. Allowed: the 0.5 s plus the chain's own noise, measured on the same
    // run as the largest pause before the freeze beyond one frame interval (40 ms at 25 fps),
    // at most 100 ms: the player's arrivals pass through two nginx hops, the player ffmpeg
    // and its pipe, on a small shared machine.
    let steady: Vec<Instant> = arrivals
        .iter()
        .copied()
        .filter(|&t| t > live && t < frozen)
        .collect();
    let (steady_gap, _) = support::largest_gap(&steady);
    let noise = steady_gap
        .saturating_sub(Duration::from_millis(40))
        .min(Duration::from_millis(100));
    let timed: Vec<Instant> = arrivals.iter().copied().filter(|&t| t > live).collect();
    let (gap, at) = support::largest_gap(&timed);
    let at = at.map(|t| t.saturating_duration_since(frozen).as_secs_f64() - gap.as_secs_f64());
    eprintln!(
        "(c') player: largest gap between video frames {gap:?} (starting {at:.3?} s after the freeze), \
         {} frames timed; before the freeze at most {steady_gap:?}",
        timed.len()
    );
    assert!(timed.len() > 100, "too few frames timed: {}", timed.len());
    let allowed = Duration::from_millis(500) + noise;
    assert!(
        gap <= allowed,
        "the player waited {gap:?} for a frame (allowed {allowed:?})"
    );
    primary.thaw();
    session.stop().await;
    drop((primary, _backup));
    drop(nginx);
    assert_no_leftovers();
}

/// (c'') A primary whose delivery jitters (every read from its origin held back 0-300 ms, in
/// order) is not failed over, with the hot standby delivering beside it all along: the
/// quiet failover's threshold follows the gaps the source itself shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jittery_primary_does_not_fail_over() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let _primary = Publisher::start(&nginx.url("jittery"));
    let _backup = Publisher::start_sized(&nginx.url("steady"), 640, 360);
    for name in ["jittery", "steady"] {
        nginx
            .wait_publishing(name, Duration::from_secs(10))
            .expect("published");
    }
    let proxy = support::JitterProxy::start(nginx.rtmp_port, Duration::from_millis(300)).await;
    let dest = nginx.url("j1");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = SessionSpec::on_loopback(
        vec![
            IngestSpec::live(proxy.url("jittery")),
            IngestSpec::live(nginx.url("steady")),
        ],
        vec![dest.clone()],
    );
    let session = RelaySession::start(spec, tx).expect("session starts");
    let (p, _) = support::wait_playable(&dest, Duration::from_secs(15)).expect("playable");
    assert_eq!((p.width, p.height), (1280, 720), "starts on the primary");
    let before = nginx
        .stream("j1")
        .and_then(|s| s.publisher)
        .expect("publisher");
    let player = support::Player::start(&dest);
    assert!(
        player.wait_live(Duration::from_secs(10)),
        "the player got no frame"
    );
    let live = Instant::now();

    let start = Instant::now();
    let mut left_primary = None;
    let mut standby_seen = false;
    while start.elapsed() < Duration::from_secs(20) {
        if session.status().current_source != 0 && left_primary.is_none() {
            left_primary = Some(start.elapsed());
        }
        // The backup is pulled beside the primary (nginx counts its publisher and the
        // relay's standby): a quiet failover was possible all along.
        standby_seen |= nginx.stream("steady").is_some_and(|s| s.nclients >= 2);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = drain(&mut rx);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::SourceFailed { .. }))
        .collect();
    let (errors, _, arrivals) = player.finish_timed();
    let arrivals: Vec<Instant> = arrivals.into_iter().filter(|&t| t > live).collect();
    let (gap, _) = support::largest_gap(&arrivals);
    eprintln!(
        "(c'') jitter: largest pause at the relay's input {:?}; player: {} frames, largest gap {gap:?}; \
         left the primary {left_primary:?}, source failures {failed:?}",
        proxy.max_release_gap(),
        arrivals.len()
    );
    assert!(standby_seen, "the backup was never pulled as a hot standby");
    assert_eq!(
        left_primary, None,
        "the session left the jittery primary: {failed:?}"
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        proxy.max_release_gap() >= Duration::from_millis(100),
        "hardly any jitter"
    );
    let (p, _) = support::wait_playable(&dest, Duration::from_secs(10)).expect("still playable");
    assert_eq!((p.width, p.height), (1280, 720), "still the primary");
    let after = nginx
        .stream("j1")
        .and_then(|s| s.publisher)
        .expect("publisher");
    assert_eq!(before.id, after.id, "the destination reconnected");
    assert!(errors.trim().is_empty(), "decoder errors: {errors}");
    assert!(
        arrivals.len() > 300,
        "too few frames reached the player: {}",
        arrivals.len()
    );
    session.stop().await;
    drop(proxy);
    drop((_primary, _backup));
    drop(nginx);
    assert_no_leftovers();
}

/// (d) An unreachable destination keeps retrying with backoff and does not disturb a
/// reachable one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_destination_does_not_disturb_a_reachable_one() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");
    let closed = format!("rtmp://127.0.0.1:{}/live/nowhere", support::free_port());
    let good = nginx.url("d1");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(
        SessionSpec::on_loopback(
            vec![IngestSpec::live(nginx.url("src"))],
            vec![good.clone(), closed.clone()],
        ),
        tx,
    )
    .expect("session starts");
    let t = wait_all_publishing(&nginx, &["d1"], Duration::from_secs(10)).expect("d1 publishing");
    let (p, _) = support::wait_playable(&good, Duration::from_secs(10)).expect("d1 playable");
    assert_eq!((p.width, p.height), (1280, 720));
    let first = nginx.stream("d1").and_then(|s| s.publisher).expect("pub");
    std::thread::sleep(Duration::from_secs(3));
    let later = nginx.stream("d1").and_then(|s| s.publisher).expect("pub");
    assert_eq!(first.id, later.id);
    let st = session.status();
    let bad = st
        .destinations
        .iter()
        .find(|d| d.url == closed)
        .expect("bad destination listed");
    let ok = st
        .destinations
        .iter()
        .find(|d| d.url == good)
        .expect("good");
    eprintln!(
        "(d) d1 publishing after {t:?}; unreachable: {:?}, {} reconnects, last error {:?}; good: {:?}, {} bytes",
        bad.state, bad.reconnects, bad.last_error, ok.state, ok.bytes_sent
    );
    assert!(matches!(
        bad.state,
        PusherState::Backoff | PusherState::Connecting
    ));
    assert!(bad.reconnects >= 2);
    assert_eq!(ok.state, PusherState::Publishing);
    assert_eq!(ok.reconnects, 0);
    session.stop().await;
    let events = drain(&mut rx);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::DestinationFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "one failure event per outage: {events:?}");
    assert!(matches!(
        failed[0],
        SessionEvent::DestinationFailed { url, destination_error: true, .. } if *url == closed
    ));
    drop(_publisher);
    drop(nginx);
    assert_no_leftovers();
}

/// (e) A destination that goes away and comes back: its pusher fails, backs off, reconnects
/// and plays again from cached headers and a keyframe, while another destination stays on
/// its first connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_restart_reconnects_with_backoff() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");
    let remote = Nginx::start();
    let (rtmp_port, http_port) = (remote.rtmp_port, remote.http_port);
    let flaky = remote.url("e1");
    let steady = nginx.url("e2");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(
        SessionSpec::on_loopback(
            vec![IngestSpec::live(nginx.url("src"))],
            vec![flaky.clone(), steady.clone()],
        ),
        tx,
    )
    .expect("session starts");
    wait_all_publishing(&remote, &["e1"], Duration::from_secs(10)).expect("e1 publishing");
    wait_all_publishing(&nginx, &["e2"], Duration::from_secs(10)).expect("e2 publishing");
    let steady_id = nginx.stream("e2").and_then(|s| s.publisher).map(|c| c.id);

    drop(remote);
    let down = Instant::now();
    let mut failed = None;
    while down.elapsed() < Duration::from_secs(5) && failed.is_none() {
        failed = drain(&mut rx)
            .into_iter()
            .find(|e| matches!(e, SessionEvent::DestinationFailed { .. }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("(e) failure seen after {:?}: {failed:?}", down.elapsed());
    assert!(failed.is_some(), "no DestinationFailed");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let remote = Nginx::start_on(rtmp_port, http_port);
    let back = Instant::now();
    let mut recovered = false;
    while back.elapsed() < Duration::from_secs(10) && !recovered {
        recovered = drain(&mut rx)
            .iter()
            .any(|e| matches!(e, SessionEvent::DestinationRecovered { url } if *url == flaky));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "no DestinationRecovered");
    let (p, took) = support::wait_playable(&flaky, Duration::from_secs(10)).expect("playable");
    let st = session.status();
    let f = st
        .destinations
        .iter()
        .find(|d| d.url == flaky)
        .expect("flaky");
    let s2 = st
        .destinations
        .iter()
        .find(|d| d.url == steady)
        .expect("steady");
    eprintln!(
        "(e) recovered {:?} after the destination came back, playable {took:?} later ({p:?}); \
         reconnects {} / steady {}",
        back.elapsed(),
        f.reconnects,
        s2.reconnects
    );
    assert_eq!((p.width, p.height), (1280, 720));
    assert!(f.reconnects >= 1);
    assert_eq!(s2.reconnects, 0);
    assert_eq!(
        nginx.stream("e2").and_then(|s| s.publisher).map(|c| c.id),
        steady_id
    );
    session.stop().await;
    drop(remote);
    drop(_publisher);
    drop(nginx);
    assert_no_leftovers();
}

/// Writes a VOD test file: `secs` of testsrc2 at `size`, H.264 GOP 1 s + AAC.
fn vod_file(dir: &std::path::Path, name: &str, size: &str, secs: u32) -> String {
    let path = dir.join(name);
    let ok = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25"))
        .args(["-f", "lavfi", "-i", "sine=frequency=880:sample_rate=44100"])
        .args(["-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(&path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot write {name}");
    path.display().to_string()
}

/// (f) A VOD playlist of two items with different resolutions: both play one after the
/// other on one destination connection and one timeline, then the session finishes. What
/// nginx received is checked from its own recording (`record all`), which is then decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_items_play_back_to_back_on_one_connection() {
    let _heavy = support::heavy(&[]).await;
    let files = tempfile::tempdir().expect("temp dir");
    let first = vod_file(files.path(), "one.flv", "640x360", 3);
    let second = vod_file(files.path(), "two.flv", "320x240", 2);
    let nginx = Nginx::start();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let session = RelaySession::start(
        SessionSpec::on_loopback(
            vec![
                IngestSpec::local_file(first),
                IngestSpec::local_file(second),
            ],
            vec![nginx.rec_url("vod")],
        ),
        tx,
    )
    .expect("session starts");
    let mut events = Vec::new();
    let finished = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = rx.recv().await {
            let done = matches!(ev, SessionEvent::Finished { .. });
            events.push(ev);
            if done {
                break;
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert!(finished.is_ok(), "not finished: {events:?}");
    // The pushers unpublish at the end of the timeline; stop waits for them.
    session.stop().await;

    let recorded = nginx.recording("vod");
    let mut parser = FlvParser::new();
    parser.push(&recorded);
    let mut tags = Vec::new();
    while let Ok(Some(item)) = parser.next_item() {
        if let FlvItem::Tag(t) = item {
            tags.push(t);
        }
    }
    let frames: Vec<_> = tags.iter().filter(|t| t.is_video_frame()).collect();
    let backwards = frames
        .windows(2)
        .filter(|w| w[1].timestamp < w[0].timestamp)
        .count();
    let max_gap = frames
        .windows(2)
        .map(|w| w[1].timestamp.saturating_sub(w[0].timestamp))
        .max()
        .unwrap_or(0);
    let rec_path = files.path().join("received.flv");
    std::fs::write(&rec_path, &recorded).expect("write recording");
    let decode = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-nostdin", "-i"])
        .arg(&rec_path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg decode");
    let errors = String::from_utf8_lossy(&decode.stderr).to_string();
    eprintln!(
        "(f) finished after {took:?}; events {events:?}; nginx received {} frames, {}..{} ms, \
         {} video headers, largest gap {max_gap} ms, {backwards} steps back, decoder errors {:?}",
        frames.len(),
        frames.first().map(|t| t.timestamp).unwrap_or(0),
        frames.last().map(|t| t.timestamp).unwrap_or(0),
        tags.iter().filter(|t| t.is_video_sequence_header()).count(),
        errors.trim()
    );
    assert_eq!(events[0], SessionEvent::Started);
    assert!(events.contains(&SessionEvent::SwitchedSource { from: 0, to: 1 }));
    assert!(!events
        .iter()
        .any(|e| matches!(e, SessionEvent::SourceFailed { .. })));
    assert!(
        decode.status.success() && errors.trim().is_empty(),
        "{errors}"
    );
    assert_eq!(backwards, 0);
    assert!(max_gap <= 200);
    // Both items, every frame: 3 s + 2 s at 25 fps.
    assert_eq!(frames.len(), 125);
    assert_eq!(
        tags.iter().filter(|t| t.is_video_sequence_header()).count(),
        2
    );
    assert!(
        took >= Duration::from_secs(4),
        "-re: real time, not as fast as possible"
    );
    drop(nginx);
    assert_no_leftovers();
}

/// (g) An `rtmps://` destination: TLS (verified against a private CA) in front of
/// nginx-rtmp, next to a plain one; both playable. And an `rtmps://` source through the same
/// terminator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_destination_with_a_private_ca() {
    let _heavy = support::heavy(&[support::Peer::Openssl]).await;
    let certs = support::test_certs();
    let nginx = Nginx::start();
    let front = support::TlsFront::start(&certs, nginx.rtmp_port).await;
    let _publisher = Publisher::start(&nginx.url("src"));
    nginx
        .wait_publishing("src", Duration::from_secs(10))
        .expect("source published");

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(certs.ca.clone()))
        .expect("CA");
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let secure = format!("rtmps://127.0.0.1:{}/live/g1", front.port);
    let mut spec = SessionSpec::on_loopback(
        vec![IngestSpec::live(nginx.url("src"))],
        vec![secure.clone(), nginx.url("g2")],
    );
    spec.pusher.tls = Some(std::sync::Arc::new(tls));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(spec, tx).expect("session starts");
    let t = wait_all_publishing(&nginx, &["g1", "g2"], Duration::from_secs(10))
        .expect("both publishing");
    let (p, _) = support::wait_playable(&nginx.url("g1"), Duration::from_secs(10))
        .expect("rtmps destination playable");
    eprintln!("(g) rtmps and rtmp destinations publishing after {t:?}; g1 (via TLS): {p:?}");
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!((p.width, p.height), (1280, 720));
    let st = session.status();
    assert!(st.destinations.iter().all(|d| d.reconnects == 0));

    // The same destination without trusting the private CA is refused as a destination error.
    let mut spec = SessionSpec::on_loopback(
        vec![IngestSpec::live(nginx.url("src"))],
        vec![format!("rtmps://127.0.0.1:{}/live/g3", front.port)],
    );
    spec.pusher.backoff_initial = Duration::from_secs(5);
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let untrusting = RelaySession::start(spec, tx2).expect("session starts");
    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = rx2.recv().await {
            if let SessionEvent::DestinationFailed {
                reason,
                destination_error,
                ..
            } = ev
            {
                return Some((reason, destination_error));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("untrusted certificate refused");
    eprintln!("(g) without the CA: {failed:?}");
    assert!(failed.0.contains("tls"), "{}", failed.0);
    assert!(failed.1);
    untrusting.stop().await;

    // An `rtmps://` source: ffmpeg pulls it (no native TLS pull), its TLS tunnelled with
    // CONNECT through the worker's egress proxy.
    let (tx3, _rx3) = mpsc::unbounded_channel();
    let pulled = RelaySession::start(
        SessionSpec::on_loopback(
            vec![IngestSpec::live(format!(
                "rtmps://127.0.0.1:{}/live/src",
                front.port
            ))],
            vec![nginx.url("g4")],
        ),
        tx3,
    )
    .expect("session starts");
    let (p, _) = support::wait_playable(&nginx.url("g4"), Duration::from_secs(20))
        .expect("relayed from an rtmps source");
    assert_eq!((p.width, p.height), (1280, 720));
    pulled.stop().await;

    session.stop().await;
    assert!(!drain(&mut rx)
        .iter()
        .any(|e| matches!(e, SessionEvent::DestinationFailed { .. })));
    drop(front);
    drop(_publisher);
    drop(nginx);
    assert_no_leftovers();
}

/// Drains an ingest: (video frames, whether it exited successfully).
async fn run_ingest(spec: &IngestSpec, within: Duration) -> (usize, bool, String) {
    use relaycast_workers::ingest::{Ingest, IngestEvent};
    // The test's HTTP server is on 127.0.0.1.
    let spec = IngestSpec {
        allow_private_targets: true,
        ..spec.clone()
    };
    let mut ingest = Ingest::start(&spec).expect("ingest starts");
    let mut frames = 0;
    let outcome = tokio::time::timeout(within, async {
        while let Some(ev) = ingest.next().await {
            match ev {
                IngestEvent::Tag(t) if t.is_video_frame() => frames += 1,
                IngestEvent::Exited { success, reason } => return (success, reason),
                _ => {}
            }
        }
        (false, "no exit".to_string())
    })
    .await
    .unwrap_or((false, "timed out".to_string()));
    ingest.stop(Duration::from_secs(1)).await;
    (frames, outcome.0, outcome.1)
}

/// (h) A VOD HLS item over HTTP plays to its end; a playlist that points a segment at a local
/// file is refused by the protocol allow-list: nothing of the file reaches the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_hls_plays_and_a_playlist_cannot_reach_local_files() {
    let _heavy = support::heavy(&[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "3",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
        ])
        .args(["-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod"])
        .arg(dir.path().join("vod.m3u8"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot write the HLS VOD");
    let segment = dir.path().join("vod0.ts");
    assert!(segment.exists());
    let evil = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:1.0,\nfile://{}\n#EXT-X-ENDLIST\n",
        segment.display()
    );
    std::fs::write(dir.path().join("evil.m3u8"), evil).expect("write playlist");
    let server = support::FileServer::start(dir.path().to_path_buf()).await;

    let (frames, success, reason) = run_ingest(
        &IngestSpec::vod(server.url("vod.m3u8")),
        Duration::from_secs(20),
    )
    .await;
    eprintln!("(h) VOD HLS: {frames} frames, success {success}: {reason}");
    assert!(success, "{reason}");
    assert!(frames >= 70, "3 s at 25 fps expected, got {frames} frames");

    let (frames, success, reason) = run_ingest(
        &IngestSpec::vod(server.url("evil.m3u8")),
        Duration::from_secs(20),
    )
    .await;
    eprintln!("(h) file: segment: {frames} frames, success {success}: {reason}");
    assert_eq!(frames, 0, "a local file was read through the playlist");
    assert!(!success, "the ingest must fail");
}

/// (i) Several destinations get the same bytes: the splicer encodes each tag's RTMP chunks
/// once and every pusher writes them as they are. Three destinations of one VOD task, each
/// recorded by nginx (`record all`): from the first keyframe all three have, the recordings
/// hold the same audio and video messages (payloads and timestamp steps), to the end, and
/// each decodes without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_destinations_receive_identical_playable_streams() {
    let _heavy = support::heavy(&[]).await;
    let files = tempfile::tempdir().expect("temp dir");
    let item = vod_file(files.path(), "same.flv", "640x360", 4);
    let nginx = Nginx::start();
    let names = ["same1", "same2", "same3"];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = RelaySession::start(
        SessionSpec::on_loopback(
            vec![IngestSpec::local_file(item)],
            names.iter().map(|n| nginx.rec_url(n)).collect(),
        ),
        tx,
    )
    .expect("session starts");
    let finished = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, SessionEvent::Finished { .. }) {
                break;
            }
        }
    })
    .await;
    assert!(finished.is_ok(), "the VOD task did not finish");
    session.stop().await;
    // nginx closes a recording when its publisher leaves.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (is video, payload, timestamp) of every audio and video message of each recording.
    let mut recordings = Vec::new();
    for name in names {
        let flv = nginx.recording(name);
        let path = files.path().join(format!("{name}.flv"));
        std::fs::write(&path, &flv).expect("write recording");
        let decode = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-nostdin", "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg decode");
        let errors = String::from_utf8_lossy(&decode.stderr).to_string();
        assert!(
            decode.status.success() && errors.trim().is_empty(),
            "{name}: {errors}"
        );
        let mut parser = FlvParser::new();
        parser.push(&flv);
        let mut tags = Vec::new();
        while let Ok(Some(item)) = parser.next_item() {
            if let FlvItem::Tag(t) = item {
                if !t.is_metadata() {
                    tags.push(t);
                }
            }
        }
        recordings.push(tags);
    }
    // The first keyframe every recording holds: the latest of their first keyframes.
    let firsts: Vec<_> = recordings
        .iter()
        .map(|r| {
            r.iter()
                .find(|t| t.is_key_picture())
                .expect("a keyframe")
                .data
                .clone()
        })
        .collect();
    let common = firsts
        .iter()
        .find(|k| {
            recordings
                .iter()
                .all(|r| r.iter().any(|t| t.is_key_picture() && t.data == **k))
        })
        .expect("a keyframe in every recording")
        .clone();
    let tails: Vec<Vec<(bool, bytes::Bytes, u32)>> = recordings
        .iter()
        .map(|r| {
            let at = r
                .iter()
                .position(|t| t.is_key_picture() && t.data == common)
                .expect("aligned");
            // Audio may lead the keyframe by a few ms: align on the video.
            let base = r[at].timestamp;
            r[at..]
                .iter()
                .filter(|t| !t.is_sequence_header())
                .map(|t| {
                    (
                        t.is_video_frame(),
                        t.data.clone(),
                        t.timestamp.wrapping_sub(base),
                    )
                })
                .collect()
        })
        .collect();
    let frames = tails[0].iter().filter(|t| t.0).count();
    eprintln!(
        "(i) recordings of {:?} messages; {} from the common keyframe, {frames} video frames",
        recordings.iter().map(Vec::len).collect::<Vec<_>>(),
        tails[0].len()
    );
    assert!(frames >= 75, "at least 3 of the 4 s: {frames} frames");
    for (name, t) in names.iter().zip(&tails).skip(1) {
        assert_eq!(t.len(), tails[0].len(), "{name}: message count");
        for (i, (a, b)) in t.iter().zip(&tails[0]).enumerate() {
            assert_eq!(a, b, "{name}: message {i} differs");
        }
    }
    drop(nginx);
    assert_no_leftovers();
}
