//! Recordings play in a real browser (issue 11): a bound domain records a live stream as MP4 and
//! HLS, and Debian's headless Chromium, driven over WebDriver, plays both from the playback URLs
//! of their media records, served by `relaycast up` under `/objects/*` (signed URLs, byte
//! ranges, rewritten `.m3u8` playlists).

#[path = "support/browser.rs"]
mod browser;
#[path = "../workers/tests/support/mod.rs"]
mod media;
#[path = "support/recording.rs"]
mod recording;
mod support;

use std::time::Duration;

use browser::Browser;
use recording::Rig;
use serde_json::{json, Value};
use support::eventually;

/// The publisher's picture size ([`Rig::publish`]).
const SIZE: (u64, u64) = (320, 240);

/// Plays `arguments[0]` in a new `<video muted>` of the page until `currentTime` passes 2 s, and
/// reports what the element shows then (`played`). With `arguments[1]` it then seeks to 1 s before
/// the end, waits for `seeked` (`seeked`) and for the end of the media (`ended`). On an error, a
/// refused `play()` or its own deadline it reports `failed` with the element's state instead, so
/// that a failure says what the browser saw.
const PLAY: &str = r#"
const [src, seek, done] = arguments;
const v = document.createElement('video');
v.muted = true;
v.preload = 'auto';
const state = () => ({
  currentTime: v.currentTime, duration: v.duration, videoWidth: v.videoWidth,
  videoHeight: v.videoHeight, readyState: v.readyState, networkState: v.networkState,
  error: v.error ? `${v.error.code} ${v.error.message}` : null,
});
const report = {};
let finished = false;
const finish = (extra) => {
  if (finished) return;
  finished = true;
  clearInterval(poll);
  clearTimeout(deadline);
  done(Object.assign(report, extra));
};
const deadline = setTimeout(() => finish({ failed: 'deadline', state: state() }), 20000);
v.addEventListener('error', () => finish({ failed: 'error event', state: state() }));
v.addEventListener('ended', () => { if (report.seeked) finish({ ended: state() }); });
const poll = setInterval(() => {
  if (report.played || v.currentTime <= 2) return;
  report.played = state();
  if (!seek) return finish({});
  v.addEventListener('seeked', () => { report.seeked = state(); }, { once: true });
  v.currentTime = v.duration - 1;
}, 50);
document.body.appendChild(v);
v.src = src;
v.play().catch((e) => finish({ failed: `play(): ${e}`, state: state() }));
"#;

/// Runs [`PLAY`] on `url`; panics with the browser's report when it did not play.
async fn play(browser: &Browser, url: &str, seek: bool) -> Value {
    let report = browser.run_async(PLAY, json!([url, seek])).await;
    eprintln!("Chromium on {url}: {report}");
    assert!(
        report.get("failed").is_none(),
        "Chromium did not play {url}: {report}"
    );
    report
}

/// Asserts that `state` (of [`PLAY`]) shows the stream's picture, and a duration within 1 s of
/// `duration`.
fn assert_shows_the_stream(what: &str, state: &Value, duration: f64) {
    assert_eq!(
        (state["videoWidth"].as_u64(), state["videoHeight"].as_u64()),
        (Some(SIZE.0), Some(SIZE.1)),
        "{what}: {state}"
    );
    let played = state["currentTime"].as_f64().unwrap();
    assert!(played > 2.0, "{what}: {state}");
    let shown = state["duration"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (shown - duration).abs() <= 1.0,
        "{what}: the browser's duration {shown} s, the recording's {duration} s: {state}"
    );
}

/// How many `206 Partial Content` answers `/objects/*` gave so far, from relaycast's `/metrics`.
async fn partial_answers(rig: &Rig) -> u64 {
    let metrics = reqwest::get(rig.relaycast.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("relaycast_http_requests_total{")
                && l.contains(r#"route="/objects/{*key}""#)
                && l.contains(r#"status="206""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The total of a VOD playlist's `#EXTINF` durations; panics when it is not a finished VOD
/// playlist (a browser would take a live one for a live stream).
fn playlist_duration(playlist: &str) -> f64 {
    assert!(
        playlist.contains("#EXT-X-ENDLIST"),
        "not a finished playlist: {playlist}"
    );
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.split(',').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn chromium_plays_the_mp4_and_the_hls_recording_from_their_playback_urls() {
    // The browser starts first: a missing Chromium fails the test before anything is recorded.
    let browser = Browser::start().await;
    let rig = Rig::start("all").await;
    let template = rig
        .template(
            "browser",
            json!({ "HlsParam": { "Enable": 1 }, "Mp4Param": { "Enable": 1, "RecordInterval": 3600 } }),
        )
        .await;
    rig.bind("hooked", template).await;
    let publisher = rig.publish("play1");
    // About 9 s: the recording starts at the first keyframe after the pull connected (GOP 2 s),
    // so the files hold 7 to 9 s, enough to play past 2 s and seek to 1 s before the end.
    tokio::time::sleep(Duration::from_secs(9)).await;
    drop(publisher);

    let records = eventually(
        "the MP4 and HLS media records of play1",
        Duration::from_secs(20),
        || async {
            let found = rig.search(json!({ "StreamIds": ["play1"] })).await;
            let set = found["MediaInfoSet"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (set.len() >= 2).then_some(set)
        },
    )
    .await;
    let record = |kind: &str| {
        let found: Vec<&Value> = records
            .iter()
            .filter(|r| r["BasicInfo"]["Type"] == kind)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} record: {records:?}");
        let url = found[0]["BasicInfo"]["MediaUrl"].as_str().unwrap();
        let duration = found[0]["MetaData"]["Duration"].as_f64().unwrap();
        assert!((6.0..=10.0).contains(&duration), "{}", found[0]);
        (url.to_string(), duration)
    };
    let (mp4, mp4_duration) = record("mp4");
    let (hls, hls_duration) = record("m3u8");

    // A page of relaycast's own origin: the media are then same-origin and no CORS is involved.
    browser.goto(&rig.relaycast.url("/healthz")).await;

    let ranges_before = partial_answers(&rig).await;
    let report = play(&browser, &mp4, true).await;
    assert_shows_the_stream("MP4", &report["played"], mp4_duration);
    // Chromium reads an MP4 in byte ranges (`bytes=0-` first), which `/objects/*` answers with
    // 206. A file this small it reads whole in that first range, so the seek below plays from
    // its buffer (a cold seek, with preload metadata on a fresh element, made no second request
    // either); explicit head, tail and unsatisfiable ranges are checked in `recording_e2e`.
    let ranges = partial_answers(&rig).await - ranges_before;
    assert!(
        ranges >= 1,
        "no range request of Chromium was answered with 206"
    );
    let seeked = &report["seeked"];
    let target = report["played"]["duration"].as_f64().unwrap() - 1.0;
    assert!(
        (seeked["currentTime"].as_f64().unwrap() - target).abs() <= 0.5,
        "seeked to {target} s: {report}"
    );
    assert!(
        report["ended"]["currentTime"].as_f64().unwrap() >= target,
        "played on to the end after the seek: {report}"
    );

    // This Chromium (Debian's 156) plays HLS natively: it says so, and the play below is real, so
    // no hls.js is needed. Were it to lose that, this fails here rather than passing on a shim.
    let can_play = browser
        .run_async(
            "arguments[0](document.createElement('video').canPlayType('application/vnd.apple.mpegurl'))",
            json!([]),
        )
        .await;
    assert!(
        matches!(can_play.as_str(), Some("maybe" | "probably")),
        "this Chromium does not play HLS natively (canPlayType {can_play}): use hls.js"
    );
    let playlist = reqwest::get(&hls).await.unwrap().text().await.unwrap();
    let listed = playlist_duration(&playlist);
    assert!(
        (listed - hls_duration).abs() <= 1.0,
        "the playlist lists {listed} s, the record says {hls_duration} s"
    );
    let report = play(&browser, &hls, false).await;
    assert_shows_the_stream("HLS", &report["played"], listed);

    browser.quit().await;
}
