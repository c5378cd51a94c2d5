//! Cloud recording end to end: `relaycast up` with a real nginx-rtmp origin whose `on_publish`
//! hooks reach relaycast, ffmpeg publishers, ffprobe on the files through relaycast's playback
//! URLs, and a real HTTP receiver of the record notices.

#[path = "../workers/tests/support/mod.rs"]
mod media;
#[path = "support/recording.rs"]
mod recording;
mod support;

use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use recording::{Rig, RECORD_KEY};
use serde_json::{json, Value};
use support::{assert_relaycast_signature, eventually, Received, RelaycastProcess};

const TEMPLATE_KEY: &str = "cbkey-456";

fn css_sign(key: &str, t: i64) -> String {
    hex::encode(Md5::digest(format!("{key}{t}").as_bytes()))
}

fn assert_signed(r: &Received, key: &str) {
    let t = r.body["t"].as_i64().expect("t");
    assert_eq!(
        r.body["sign"],
        css_sign(key, t),
        "sign = md5(CallbackKey + t): {}",
        r.raw
    );
    assert_relaycast_signature(r, key);
}

/// GETs `url` with an optional `Range`; returns status, headers and body.
async fn get(url: &str, range: Option<&str>) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let client = reqwest::Client::new();
    let mut req = client.get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_bound_domain_records_hls_and_mp4_that_play_from_the_playback_url() {
    let rig = Rig::start("all").await;
    // The domain's callback template gets the record notices too.
    let cb = rig
        .api
        .v1_ok("POST", "/v1/callback-templates", &[], Some(json!({ "TemplateName": "cb", "RecordNotifyUrl": rig.receiver.url, "SnapshotNotifyUrl": rig.receiver.url, "CallbackKey": TEMPLATE_KEY })))
        .await["TemplateId"]
        .as_u64()
        .unwrap();
    rig.api
        .v1_ok(
            "POST",
            "/v1/callback-rules",
            &[],
            Some(json!({ "DomainName": "ingest.test", "TemplateId": cb })),
        )
        .await;
    let params = json!({ "HlsParam": { "Enable": 1 }, "Mp4Param": { "Enable": 1, "RecordInterval": 3600 }, "SnapshotParam": { "Enable": 1, "Interval": 5 } });
    let template = rig.template("hlsmp4", params).await;
    rig.bind("hooked", template).await;

    let publisher = rig.publish("cam1");
    let published = Instant::now();
    let recording = eventually(
        "the automatic recording",
        Duration::from_secs(10),
        || async {
            let list = rig.api.v1_ok("GET", "/v1/recordings", &[], None).await;
            list["Recordings"]
                .as_array()
                .and_then(|r| r.first().cloned())
        },
    )
    .await;
    assert_eq!(
        (recording["Mode"].as_str(), recording["StreamName"].as_str()),
        (Some("auto"), Some("cam1")),
        "{recording}"
    );
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(published.elapsed())).await;
    drop(publisher);
    let stopped = Instant::now();

    // Two files, each noticed to the template's RecordNotifyUrl and to the domain's template.
    let notices = rig.wait_notices("cam1", 4, Duration::from_secs(20)).await;
    let latency = stopped.elapsed();
    assert_eq!(
        notices.len(),
        4,
        "{:?}",
        notices.iter().map(|n| &n.raw).collect::<Vec<_>>()
    );
    let mut formats: Vec<&str> = notices
        .iter()
        .map(|n| n.body["file_format"].as_str().unwrap())
        .collect();
    formats.sort();
    assert_eq!(formats, ["hls", "hls", "mp4", "mp4"]);
    let by_key = |key: &str| {
        notices
            .iter()
            .filter(|n| {
                (key == RECORD_KEY)
                    == (n.body["sign"] == css_sign(RECORD_KEY, n.body["t"].as_i64().unwrap()))
            })
            .count()
    };
    assert_eq!(
        (by_key(RECORD_KEY), by_key(TEMPLATE_KEY)),
        (2, 2),
        "one notice per file to each endpoint"
    );
    for n in &notices {
        let key = if n.body["sign"] == css_sign(RECORD_KEY, n.body["t"].as_i64().unwrap()) {
            RECORD_KEY
        } else {
            TEMPLATE_KEY
        };
        assert_signed(n, key);
        assert_eq!(
            (
                n.body["app"].as_str(),
                n.body["appname"].as_str(),
                n.body["record_temp_id"].as_str()
            ),
            (
                Some("ingest.test"),
                Some("hooked"),
                Some(template.to_string().as_str())
            ),
            "{}",
            n.raw
        );
    }
    eprintln!("stream end to record callback: {latency:?}");
    assert!(
        latency < Duration::from_secs(6),
        "record callback {latency:?} after the stream ended"
    );

    for n in notices
        .iter()
        .filter(|n| n.body["sign"] == css_sign(RECORD_KEY, n.body["t"].as_i64().unwrap()))
    {
        let url = n.body["video_url"].as_str().unwrap();
        let probe = media::probe_file(url);
        assert!(
            probe.decode_errors.is_empty(),
            "{url}: {:?}",
            probe.decode_errors
        );
        assert_eq!(probe.codecs, ["h264", "aac"], "{url}");
        // 20 s published; the recording starts at the first keyframe after the pull connected
        // (GOP 2 s).
        assert!(
            (17.0..=21.0).contains(&probe.duration),
            "{url}: {}",
            probe.duration
        );
        assert!(
            (probe.duration - n.body["duration"].as_f64().unwrap()).abs() <= 1.0,
            "{}",
            n.raw
        );
        if n.body["file_format"] == "mp4" {
            let (status, headers, body) = get(url, Some("bytes=0-99")).await;
            assert_eq!(status, 206);
            assert_eq!(body.len(), 100);
            assert_eq!(&body[4..8], b"ftyp");
            assert_eq!(headers["content-type"], "video/mp4");
            let total = n.body["file_size"].as_u64().unwrap();
            assert_eq!(
                headers["content-range"],
                format!("bytes 0-99/{total}").as_str()
            );
            let (status, _, tail) = get(url, Some("bytes=-10")).await;
            assert_eq!((status, tail.len()), (206, 10));
            assert_eq!(get(url, Some(&format!("bytes={total}-"))).await.0, 416);
        } else {
            let (status, headers, body) = get(url, None).await;
            assert_eq!(
                (status, headers["content-type"].to_str().unwrap()),
                (200, "application/vnd.apple.mpegurl")
            );
            let playlist = String::from_utf8(body).unwrap();
            let segment = playlist.lines().find(|l| !l.starts_with('#')).unwrap();
            assert!(
                segment.starts_with("/objects/") && segment.contains("sig="),
                "{playlist}"
            );
            let base = url.split("/objects/").next().unwrap();
            assert_eq!(get(&format!("{base}{segment}"), None).await.0, 200);
        }
    }
    // A snapshot every 5 s: JPEGs of the stream's size, noticed as event 200.
    let snapshots: Vec<Received> = rig
        .receiver
        .received()
        .into_iter()
        .filter(|r| r.body["event_type"] == 200 && r.body["stream_id"] == "cam1")
        .collect();
    assert!(
        (2..=5).contains(&snapshots.len()),
        "{} snapshots in 20 s",
        snapshots.len()
    );
    let shot = &snapshots[0];
    assert_signed(shot, TEMPLATE_KEY);
    assert_eq!(
        (shot.body["width"].as_u64(), shot.body["height"].as_u64()),
        (Some(320), Some(240)),
        "{}",
        shot.raw
    );
    assert!(
        shot.body["pic_url"]
            .as_str()
            .unwrap()
            .contains("/cam1-screenshot-")
            && shot.body["pic_url"]
                .as_str()
                .unwrap()
                .ends_with("-320x240.jpg"),
        "{}",
        shot.raw
    );
    let (status, headers, jpeg) = get(shot.body["pic_full_url"].as_str().unwrap(), None).await;
    assert_eq!(
        (
            status,
            headers["content-type"].to_str().unwrap(),
            &jpeg[..2]
        ),
        (200, "image/jpeg", &[0xff, 0xd8][..])
    );
    assert_eq!(jpeg.len() as u64, shot.body["file_size"].as_u64().unwrap());

    // The media library lists both files of the stream, each once.
    let found = rig.search(json!({ "StreamIds": ["cam1"] })).await;
    assert_eq!(found["TotalCount"], 2, "{found}");
    let done = rig
        .api
        .v1_ok(
            "GET",
            &format!("/v1/recordings/{}", recording["TaskId"].as_str().unwrap()),
            &[],
            None,
        )
        .await;
    assert_eq!(done["Recording"]["Status"], "finished", "{done}");
}

/// The seed's shortest `RecordInterval` (60 s) splits a long stream into files of that length,
/// each starting on a keyframe; HLS is never split. The publisher sends two seconds of stream
/// a second, so that about 2½ minutes of stream take 76 s: files are cut by stream time.
#[tokio::test]
async fn a_long_stream_is_split_into_files_of_the_record_interval_each_on_a_keyframe() {
    let rig = Rig::start("all").await;
    let template = rig
        .template(
            "split60",
            json!({ "HlsParam": { "Enable": 1 }, "Mp4Param": { "Enable": 1, "RecordInterval": 60 } }),
        )
        .await;
    rig.bind("hooked", template).await;
    let publisher = rig.publish_at_rate("long", 2);
    tokio::time::sleep(Duration::from_secs(76)).await;
    drop(publisher);

    // About 150 s of stream, less the start (the pull connecting, then a keyframe): two MP4
    // files of 60 s (cut at the next keyframe, GOP 2 s) and the rest, and one HLS playlist.
    rig.wait_notices("long", 4, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let notices = rig.notices("long");
    let of = |format: &str| {
        let mut files: Vec<((i64, i64), f64)> = notices
            .iter()
            .filter(|n| {
                n.body["file_format"] == format
                    && n.body["sign"] == css_sign(RECORD_KEY, n.body["t"].as_i64().unwrap())
            })
            .map(|n| {
                let url = n.body["video_url"].as_str().unwrap().to_string();
                let probe = media::probe_file(&url);
                assert!(
                    probe.decode_errors.is_empty(),
                    "{url}: {:?}",
                    probe.decode_errors
                );
                assert_eq!(probe.codecs, ["h264", "aac"], "{url}");
                assert!(
                    media::first_video_frame_is_key(&url),
                    "{url} starts on a keyframe"
                );
                (
                    (
                        n.body["start_time"].as_i64().unwrap(),
                        n.body["start_time_usec"].as_i64().unwrap_or(0),
                    ),
                    probe.duration,
                )
            })
            .collect();
        files.sort_by_key(|f| f.0);
        files.into_iter().map(|(_, d)| d).collect::<Vec<f64>>()
    };
    let (mp4, hls) = (of("mp4"), of("hls"));
    assert_eq!(
        (mp4.len(), hls.len()),
        (3, 1),
        "mp4 {mp4:?}, hls {hls:?}: {:?}",
        notices.iter().map(|n| &n.raw).collect::<Vec<_>>()
    );
    for d in &mp4[..2] {
        assert!(
            (59.5..=62.5).contains(d),
            "a full file is the interval up to the next keyframe: {mp4:?}"
        );
    }
    let recorded: f64 = mp4.iter().sum();
    assert!(
        (recorded - hls[0]).abs() <= 2.0 && recorded >= 125.0,
        "the MP4 files hold the whole recording: {mp4:?} against the playlist's {hls:?}"
    );
}

#[tokio::test]
async fn a_drop_within_the_resume_timeout_is_one_file_and_a_longer_one_two() {
    let rig = Rig::start("all").await;
    let patient = rig.template("resume30", json!({ "HlsParam": { "Enable": 1 }, "HlsSpecialParam": { "FlowContinueDuration": 30 } })).await;
    let hasty = rig.template("resume3", json!({ "HlsParam": { "Enable": 1 }, "HlsSpecialParam": { "FlowContinueDuration": 3 } })).await;
    for (stream, template) in [("cam2", patient), ("cam3", hasty)] {
        rig.api.v1_ok("POST", "/v1/record-rules", &[], Some(json!({ "DomainName": "ingest.test", "AppName": "hooked", "StreamName": stream, "TemplateId": template }))).await;
    }
    let (mut cam2, mut cam3) = (rig.publish("cam2"), rig.publish("cam3"));
    tokio::time::sleep(Duration::from_secs(8)).await;
    cam2.kill();
    cam3.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cam2 = rig.publish("cam2");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cam3 = rig.publish("cam3");
    tokio::time::sleep(Duration::from_secs(8)).await;
    drop((cam2, cam3));
    // cam2's recording is still within its 30 s: stop it through the API.
    let active = rig.api.v1_ok("GET", "/v1/recordings", &[], None).await;
    let cam2_recordings: Vec<&Value> = active["Recordings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["StreamName"] == "cam2")
        .collect();
    assert_eq!(
        cam2_recordings.len(),
        1,
        "one recording across the drop: {active}"
    );
    rig.api
        .v1_ok(
            "DELETE",
            &format!(
                "/v1/recordings/{}",
                cam2_recordings[0]["TaskId"].as_str().unwrap()
            ),
            &[],
            None,
        )
        .await;

    let cam2_files = rig.wait_notices("cam2", 1, Duration::from_secs(20)).await;
    let cam3_files = rig.wait_notices("cam3", 2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        rig.notices("cam2").len(),
        1,
        "one playlist across a 5 s drop"
    );
    assert_eq!(
        rig.notices("cam3").len(),
        2,
        "a drop past the resume timeout ends the file"
    );
    let probe = media::probe_file(cam2_files[0].body["video_url"].as_str().unwrap());
    assert!(probe.decode_errors.is_empty(), "{:?}", probe.decode_errors);
    // 8 s + 11 s published, without the 5 s away (and the GOP the recorder waits for at start).
    assert!(
        (15.0..=20.5).contains(&probe.duration),
        "{}",
        probe.duration
    );
    for file in cam3_files {
        let probe = media::probe_file(file.body["video_url"].as_str().unwrap());
        assert!((4.0..=9.5).contains(&probe.duration), "{}", probe.duration);
    }
}

#[tokio::test]
async fn a_recorder_killed_mid_stream_loses_at_most_a_segment_and_the_next_one_continues() {
    let rig = Rig::start("api,notifier,scheduler").await;
    let data = rig.dir.path();
    let config = data.join("relaycast.toml");
    let recorder = |_: ()| {
        let env = [
            ("RELAYCAST_TIMING__LEASE_TTL_MS", "3000"),
            ("RELAYCAST_TIMING__LEASE_HEARTBEAT_MS", "1000"),
            ("RELAYCAST_QUEUE__VISIBILITY_TIMEOUT_MS", "5000"),
        ];
        RelaycastProcess::start(
            &data.join("data"),
            &env,
            &["--config", config.to_str().unwrap(), "--roles", "recorder"],
        )
    };
    let mut first = recorder(());
    let template = rig.template("crash", json!({ "HlsParam": { "Enable": 1 }, "Mp4Param": { "Enable": 1, "RecordInterval": 3600 } })).await;
    rig.bind("hooked", template).await;
    let publisher = rig.publish("cam4");
    tokio::time::sleep(Duration::from_secs(13)).await;
    first.kill9();
    let killed = Instant::now();
    let _second = recorder(());
    tokio::time::sleep(Duration::from_secs(14)).await;
    drop(publisher);
    let published = killed.elapsed() + Duration::from_secs(13);

    // The dead recorder's MP4 is finalized by the next one; the HLS playlist goes on.
    let notices = rig.wait_notices("cam4", 3, Duration::from_secs(30)).await;
    let of = |format: &str| {
        notices
            .iter()
            .filter(|n| n.body["file_format"] == format)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (of("hls").len(), of("mp4").len()),
        (1, 2),
        "{:?}",
        notices.iter().map(|n| &n.raw).collect::<Vec<_>>()
    );
    let hls = media::probe_file(of("hls")[0].body["video_url"].as_str().unwrap());
    assert!(hls.decode_errors.is_empty(), "{:?}", hls.decode_errors);
    // Lost: the segment in progress at the kill (at most 4 s of media and a GOP), and the
    // seconds no recorder ran (lease time-out, take-over, the next keyframe).
    let lost = published.as_secs_f64() - hls.duration;
    eprintln!(
        "published {published:?}, HLS {} s, lost {lost:.1} s",
        hls.duration
    );
    assert!(lost <= 4.0 + 2.0 + 6.0, "{lost}");
    let mut mp4: Vec<f64> = of("mp4")
        .iter()
        .map(|n| media::probe_file(n.body["video_url"].as_str().unwrap()).duration)
        .collect();
    mp4.sort_by(f64::total_cmp);
    assert!(
        mp4[0] >= 6.0 && mp4[1] >= 6.0,
        "both MP4 files play: {mp4:?}"
    );
    let playlist = String::from_utf8(
        get(of("hls")[0].body["video_url"].as_str().unwrap(), None)
            .await
            .2,
    )
    .unwrap();
    assert!(
        playlist.contains("#EXT-X-DISCONTINUITY"),
        "the take-over is a discontinuity: {playlist}"
    );
}

#[tokio::test]
async fn specific_recording_by_record_id_search_delete_namespaces_and_retention() {
    let rig = Rig::start("all").await;
    let ns5 = rig
        .template(
            "ns5",
            json!({ "Mp4Param": { "Enable": 1, "VodSubAppId": 5, "StorageTime": 4 } }),
        )
        .await;
    let ns0 = rig
        .template("ns0", json!({ "FlvParam": { "Enable": 1 } }))
        .await;
    let publisher = rig.publish("cam5");
    let mut ids = Vec::new();
    for (template, record_id) in [(ns5, "1001_rex"), (ns0, "1002_amy")] {
        let body = json!({ "DomainName": "ingest.test", "AppName": "hooked", "StreamName": "cam5", "TemplateId": template, "RecordId": record_id });
        ids.push(
            rig.api
                .v1_ok("POST", "/v1/recordings", &[], Some(body))
                .await["TaskId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // 10 s of recording: a file of 4 s or more leaves room for the job pickup, the pull and the
    // first keyframe (GOP 2 s) on a loaded machine.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for id in &ids {
        rig.api
            .v1_ok("DELETE", &format!("/v1/recordings/{id}"), &[], None)
            .await;
    }
    let notices = rig.wait_notices("cam5", 2, Duration::from_secs(20)).await;
    drop(publisher);
    for n in &notices {
        let url = n.body["video_url"].as_str().unwrap();
        let (prefix, format) = if n.body["file_format"] == "mp4" {
            ("1001_rex_main_", "mp4")
        } else {
            ("1002_amy_main_", "flv")
        };
        assert!(
            url.contains(&format!("/{prefix}")) && url.contains(&format!(".{format}?")),
            "the seed's file name: {url}"
        );
        let duration = media::probe_file(url).duration;
        assert!(
            duration >= 4.0,
            "{url}: {duration} s of 10 s recorded; {}",
            n.raw
        );
    }
    // Namespaces never mix.
    let in5 = rig
        .search(json!({ "SubAppId": 5, "NamePrefixes": ["1001_rex_main_"] }))
        .await;
    assert_eq!(in5["TotalCount"], 1, "{in5}");
    assert_eq!(
        rig.search(json!({ "NamePrefixes": ["1001_rex"] })).await["TotalCount"],
        0,
        "namespace 0 does not list namespace 5"
    );
    let in0 = rig
        .search(
            json!({ "Text": "amy", "Sort": { "Field": "CreateTime", "Order": "Asc" }, "Limit": 5 }),
        )
        .await;
    assert_eq!(in0["TotalCount"], 1, "{in0}");
    let flv = &in0["MediaInfoSet"][0];
    assert_eq!(
        flv["BasicInfo"]["SourceInfo"]["LiveRecordInfo"]["StreamId"],
        "cam5"
    );
    // DeleteMedia: the record and the file go.
    let file_id = flv["FileId"].as_str().unwrap();
    let url = flv["BasicInfo"]["MediaUrl"].as_str().unwrap().to_string();
    assert_eq!(get(&url, None).await.0, 200);
    rig.api
        .v1_ok("DELETE", &format!("/v1/media/{file_id}"), &[], None)
        .await;
    assert_eq!(get(&url, None).await.0, 404);
    let (status, body) = rig
        .api
        .v1("GET", &format!("/v1/media/{file_id}"), &[], None)
        .await;
    assert_eq!(
        (status, body["Response"]["Error"]["Code"].as_str()),
        (404, Some("ResourceNotFound")),
        "{body}"
    );
    // Retention: StorageTime 4 s, then the file and its record are gone.
    let mp4 = &in5["MediaInfoSet"][0];
    let mp4_url = mp4["BasicInfo"]["MediaUrl"].as_str().unwrap().to_string();
    let mp4_id = mp4["FileId"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    loop {
        let (status, body) = rig
            .api
            .v1(
                "GET",
                &format!("/v1/media/{mp4_id}"),
                &[("SubAppId", "5")],
                None,
            )
            .await;
        if status == 404 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let log: Vec<String> = rig
                .relaycast
                .stderr_text()
                .lines()
                .filter(|l| l.contains("media") || l.contains("scheduler") || l.contains("WARN"))
                .map(str::to_string)
                .collect();
            panic!(
                "the MP4 past its storage time is still there: {body}\n{}",
                log.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("deleted {:?} after the search", t0.elapsed());
    // Its playback URL lived no longer than the file (403 once it expired); the file itself is
    // gone from the disk.
    assert!(matches!(get(&mp4_url, None).await.0, 403 | 404));
    let stored = rig
        .dir
        .path()
        .join("data/objects/objects")
        .join(mp4["BasicInfo"]["StoragePath"].as_str().unwrap());
    assert!(!stored.exists(), "{} still exists", stored.display());
}

#[tokio::test]
async fn bad_recording_requests_are_refused_and_store_nothing() {
    let svc = support::Service::start(&[("RELAYCAST_ALLOW_PRIVATE_TARGETS", "false")]);
    let api = svc.api();
    let template = api
        .v1_ok(
            "POST",
            "/v1/record-templates",
            &[],
            Some(json!({ "TemplateName": "t", "Mp4Param": { "Enable": 1 } })),
        )
        .await["TemplateId"]
        .as_u64()
        .unwrap();
    let now = support::now_ms() / 1000;
    let cases = [
        (
            json!({ "SourceUrl": "rtmp://10.1.2.3/live/x", "TemplateId": template }),
            "InvalidParameterValue",
            "private",
        ),
        (
            json!({ "SourceUrl": "rtmp://127.0.0.1/live/x", "TemplateId": template }),
            "InvalidParameterValue",
            "private",
        ),
        (
            json!({ "SourceUrl": "file:///etc/passwd", "TemplateId": template }),
            "InvalidParameterValue",
            "SourceUrl",
        ),
        (
            json!({ "SourceUrl": "rtmp://example.com/live/x", "TemplateId": template, "RecordId": "../../x" }),
            "InvalidParameterValue",
            "RecordId",
        ),
        (
            json!({ "DomainName": "ingest.test", "StreamName": "..", "TemplateId": template }),
            "InvalidParameterValue",
            "StreamName",
        ),
        (
            json!({ "SourceUrl": "rtmp://example.com/live/x", "TemplateId": template, "EndTime": now - 10 }),
            "InvalidParameterValue",
            "EndTime",
        ),
        (
            json!({ "SourceUrl": "rtmp://example.com/live/x", "TemplateId": template, "EndTime": now + 2 * 86_400 }),
            "InvalidParameterValue",
            "EndTime",
        ),
        (
            json!({ "SourceUrl": "rtmp://example.com/live/x" }),
            "MissingParameter",
            "TemplateId",
        ),
        (
            json!({ "SourceUrl": "rtmp://example.com/live/x", "TemplateId": 999_999 }),
            "ResourceNotFound",
            "",
        ),
        (
            json!({ "DomainName": "nope.test", "StreamName": "x", "TemplateId": template }),
            "ResourceNotFound",
            "",
        ),
        (
            json!({ "SourceUrl": "rtmp://example.com/live/x", "TemplateId": template, "Shell": "; rm -rf /" }),
            "UnknownParameter",
            "Shell",
        ),
    ];
    for (body, code, mention) in cases {
        let (status, answer) = api
            .v1("POST", "/v1/recordings", &[], Some(body.clone()))
            .await;
        let error = &answer["Response"]["Error"];
        assert!(
            status >= 400 && error["Code"].as_str().is_some_and(|c| c.starts_with(code)),
            "{body} -> {status} {answer}"
        );
        assert!(
            error["Message"].as_str().unwrap().contains(mention),
            "{body} -> {answer}"
        );
    }
    let listed = api.v1_ok("GET", "/v1/recordings", &[], None).await;
    assert_eq!(listed["TotalNum"], 0, "nothing stored: {listed}");
}
