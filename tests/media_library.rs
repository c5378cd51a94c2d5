//! The media library end to end on a real `relaycast up` (in-process, on a manual clock so
//! create times and retention can be steered): recording files are written the way the
//! recorder writes them (the `RecordFile`, then the object, then an `ObjectCreated` notice on
//! the queue), become media records and signed record notices (event 100) to real HTTP
//! receivers on 127.0.0.1, and are searched, played (ranges, HLS), deleted and expired.

mod support;

use std::time::Duration;

use md5::{Digest as _, Md5};
use relaycast_core::domain::auth::SecretKey;
use relaycast_core::domain::callbacks::StreamPath;
use relaycast_core::domain::recording::{
    ObjectCreated, RecordFile, RecordFormat, Recording, RecordingMode, RecordingSpec,
    RecordingState, OBJECT_NOTICE_QUEUE,
};
use relaycast_core::ports::{Condition, Ports, TypedStore};
use serde_json::{json, Value};
use sha2::Sha256;
use support::*;

const DOMAIN: &str = "push.example.com";
const TEMPLATE_KEY: &str = "tplkey-123";
const RECORDING_KEY: &str = "reckey-456";

/// 20 hex digits of SHA-256 of the object key, computed here rather than by the product.
fn file_id_of(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..20].to_string()
}

fn iso(ms: i64) -> String {
    let t = format_time(ms, 0);
    format!("{}T{}Z", &t[..10], &t[11..])
}

fn css_sign(key: &str, t: i64) -> String {
    hex::encode(Md5::digest(format!("{key}{t}").as_bytes()))
}

fn recording(id: &str, notify_url: Option<&str>) -> Recording {
    Recording {
        account: BULK.0.into(),
        id: id.into(),
        mode: RecordingMode::Auto,
        record_id: None,
        stream: Some(StreamPath::parse(DOMAIN, "live", "cam1").unwrap()),
        source_url: "rtmp://127.0.0.1:1/live/cam1".into(),
        stream_param: "txSecret=abc".into(),
        spec: RecordingSpec {
            template_id: Some(5),
            formats: vec![],
            resume_timeout_secs: 0,
            namespace: 0,
            file_name_pattern: None,
            notify_url: notify_url.map(str::to_string),
            callback_key: Some(SecretKey::new(RECORDING_KEY)),
            snapshot_interval_secs: None,
        },
        created_ms: now_ms(),
        end_time_ms: None,
        stop_requested_ms: None,
        stream_stopped_ms: None,
        state: RecordingState::Finished,
        error: None,
        files: vec![],
    }
}

/// One file as the recorder leaves it.
struct File {
    key: String,
    name: &'static str,
    stream: &'static str,
    recording: &'static str,
    record_id: Option<&'static str>,
    format: RecordFormat,
    namespace: u64,
    expires_ms: Option<i64>,
    /// Other objects (HLS segments) with their bytes.
    parts: Vec<(String, Vec<u8>)>,
    bytes: Vec<u8>,
}

fn file(name: &'static str, stream: &'static str, format: RecordFormat, namespace: u64) -> File {
    File {
        key: format!(
            "record/{namespace}/bulk/rec-1/{name}.{}",
            format.extension()
        ),
        name,
        stream,
        recording: "rec-1",
        record_id: None,
        format,
        namespace,
        expires_ms: None,
        parts: vec![],
        bytes: (0..1000u32).map(|i| (i % 251) as u8).collect(),
    }
}

/// Writes the `RecordFile` (before the object, as the recorder does), the objects, and returns
/// the notice to send.
async fn write_file(ports: &Ports, f: &File) -> String {
    let now = ports.clock.now_ms();
    let record = RecordFile {
        object_key: f.key.clone(),
        account: BULK.0.into(),
        recording_id: f.recording.into(),
        record_id: f.record_id.map(str::to_string),
        stream: Some(StreamPath::parse(DOMAIN, "live", f.stream).unwrap()),
        stream_id: f.stream.into(),
        stream_param: "txSecret=abc".into(),
        template_id: Some(5),
        format: f.format,
        namespace: f.namespace,
        name: f.name.into(),
        start_ms: now - 60_123,
        end_ms: now - 1_456,
        duration_ms: 58_667,
        size: f.bytes.len() as u64 + f.parts.iter().map(|(_, b)| b.len() as u64).sum::<u64>(),
        video_codec: Some("h264".into()),
        resolution: Some("1280x720".into()),
        expires_ms: f.expires_ms,
        parts: f.parts.iter().map(|(k, _)| k.clone()).collect(),
    };
    ports.store.save(&record, Condition::Any).await.unwrap();
    for (key, bytes) in &f.parts {
        ports
            .objects
            .put_bytes(key, bytes.clone().into(), "video/iso.segment")
            .await
            .unwrap();
    }
    let meta = ports
        .objects
        .put_bytes(&f.key, f.bytes.clone().into(), f.format.content_type())
        .await
        .unwrap();
    serde_json::to_string(&ObjectCreated {
        key: f.key.clone(),
        size: meta.size,
    })
    .unwrap()
}

async fn notify(ports: &Ports, notice: &str) {
    ports
        .queue
        .send(OBJECT_NOTICE_QUEUE, notice, Duration::ZERO)
        .await
        .unwrap();
}

/// Waits for the media record of `key` (through the API) and returns its `MediaInfo`.
async fn wait_media(api: &Api, key: &str, namespace: u64) -> Value {
    let id = file_id_of(key);
    let ns = namespace.to_string();
    eventually(
        &format!("the media record of {key}"),
        Duration::from_secs(10),
        || async {
            let (status, v) = api
                .v1(
                    "GET",
                    &format!("/v1/media/{id}"),
                    &[("SubAppId", &ns)],
                    None,
                )
                .await;
            (status == 200).then(|| v["Response"]["MediaInfo"].clone())
        },
    )
    .await
}

async fn search(api: &Api, body: Value) -> (u64, Vec<String>) {
    let v = api.v1_ok("POST", "/v1/media/search", &[], Some(body)).await;
    let names = v["MediaInfoSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["BasicInfo"]["Name"].as_str().unwrap().to_string())
        .collect();
    (v["TotalCount"].as_u64().unwrap(), names)
}

fn events_for(receiver: &CallbackReceiver, file_id: &str) -> Vec<Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.body["event_type"] == 100 && r.body["file_id"] == file_id)
        .collect()
}

/// Waits until no callback is pending or queued: the test moves the manual clock, and a jump
/// while a delivery is in flight would make its queue message visible again (a legitimate
/// at-least-once repeat that the counts below would take for a second notice).
async fn settle(ports: &Ports) {
    use relaycast_core::domain::outbox::{DeliveryState, OutboxEntry};
    use relaycast_core::ports::{Entity, Query, QueryIndex};
    eventually(
        "every callback delivered",
        Duration::from_secs(10),
        || async {
            let mut open = 0;
            for state in [DeliveryState::Pending, DeliveryState::Queued] {
                open += ports
                    .store
                    .query(Query::new(
                        OutboxEntry::KIND,
                        QueryIndex::Status(state.as_str().into()),
                    ))
                    .await
                    .unwrap()
                    .records
                    .len();
            }
            (open == 0).then_some(())
        },
    )
    .await;
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_files_become_searchable_playable_deletable_media_with_signed_notices() {
    let h = InProcess::start().await;
    let ports = h.host().ports.clone();
    // An account with a call limit high enough for the polling below.
    let base = h.api.base.clone();
    let api = Api::new(&base, BULK.0, BULK.1);
    // Whole seconds, so CreateTime (ISO 8601, seconds) bounds are exact.
    let t0 = h.now_ms() / 1000 * 1000;
    h.clock.set_ms(t0);

    let from_recording = CallbackReceiver::start().await;
    let from_template = CallbackReceiver::start().await;
    let template = api
        .v1_ok("POST", "/v1/callback-templates", &[], Some(json!({"TemplateName": "rec", "RecordNotifyUrl": from_template.url, "CallbackKey": TEMPLATE_KEY})))
        .await;
    api.v1_ok(
        "POST",
        "/v1/callback-rules",
        &[],
        Some(json!({"DomainName": DOMAIN, "TemplateId": template["TemplateId"]})),
    )
    .await;
    ports
        .store
        .save(
            &recording("rec-1", Some(&from_recording.url)),
            Condition::Any,
        )
        .await
        .unwrap();

    // A: an MP4 of cam1; its notice arrives twice (a redelivery).
    let a = file("cam1_A", "cam1", RecordFormat::Mp4, 0);
    let notice = write_file(&ports, &a).await;
    notify(&ports, &notice).await;
    notify(&ports, &notice).await;
    let a_info = wait_media(&api, &a.key, 0).await;
    let a_id = file_id_of(&a.key);
    assert_eq!(a_info["FileId"], a_id);
    assert_eq!(a_info["BasicInfo"]["Name"], "cam1_A");
    assert_eq!(a_info["BasicInfo"]["CreateTime"], iso(t0));
    assert_eq!(a_info["BasicInfo"]["ExpireTime"], "9999-12-31T23:59:59Z");
    assert_eq!(a_info["BasicInfo"]["Type"], "mp4");
    assert_eq!(a_info["BasicInfo"]["Category"], "Video");
    assert_eq!(a_info["BasicInfo"]["StoragePath"], a.key);
    let live = &a_info["BasicInfo"]["SourceInfo"]["LiveRecordInfo"];
    assert_eq!(a_info["BasicInfo"]["SourceInfo"]["SourceType"], "Record");
    assert_eq!(
        (
            live["Domain"].as_str(),
            live["Path"].as_str(),
            live["StreamId"].as_str()
        ),
        (Some(DOMAIN), Some("live"), Some("cam1"))
    );
    assert_eq!(
        live["RecordStartTime"],
        iso(t0 - 61_000),
        "the start's whole second"
    );
    assert_eq!(
        (
            a_info["MetaData"]["Size"].as_u64(),
            a_info["MetaData"]["Width"].as_u64(),
            a_info["MetaData"]["Height"].as_u64()
        ),
        (Some(1000), Some(1280), Some(720))
    );

    // One event 100 to each receiver, signed with each one's key.
    let by_recording = eventually(
        "event 100 to the recording's RecordNotifyUrl",
        Duration::from_secs(10),
        || async { events_for(&from_recording, &a_id).pop() },
    )
    .await;
    let by_template = eventually(
        "event 100 to the template's RecordNotifyUrl",
        Duration::from_secs(10),
        || async { events_for(&from_template, &a_id).pop() },
    )
    .await;
    for (r, key) in [(&by_recording, RECORDING_KEY), (&by_template, TEMPLATE_KEY)] {
        let t = r.body["t"].as_i64().expect("t");
        assert!(
            t > now_ms() / 1000,
            "t is an expiry in the future: {}",
            r.raw
        );
        assert_eq!(
            r.body["sign"],
            css_sign(key, t),
            "sign = md5(key + t): {}",
            r.raw
        );
        assert_relaycast_signature(r, key);
        let b = &r.body;
        assert_eq!(
            (
                b["app"].as_str(),
                b["appname"].as_str(),
                b["stream_id"].as_str(),
                b["channel_id"].as_str()
            ),
            (Some(DOMAIN), Some("live"), Some("cam1"), Some("cam1"))
        );
        assert!(b["appid"].is_u64(), "appid is a number: {b}");
        assert_eq!(
            (
                b["file_format"].as_str(),
                b["task_id"].as_str(),
                b["record_temp_id"].as_str()
            ),
            (Some("mp4"), Some("rec-1"), Some("5"))
        );
        assert_eq!(
            (
                b["record_file_id"].as_str(),
                b["file_size"].as_u64(),
                b["duration"].as_i64()
            ),
            (Some(a_id.as_str()), Some(1000), Some(59))
        );
        assert_eq!(
            (b["start_time"].as_i64(), b["start_time_usec"].as_i64()),
            (Some((t0 - 60_123) / 1000), Some(877_000))
        );
        assert_eq!(
            (b["end_time"].as_i64(), b["end_time_usec"].as_i64()),
            (Some((t0 - 1_456) / 1000), Some(544_000))
        );
        assert_eq!(
            (b["stream_param"].as_str(), b["record_bps"].as_i64()),
            (Some("txSecret=abc"), Some(0))
        );
        let ext: Value = serde_json::from_str(
            b["callback_ext"]
                .as_str()
                .expect("callback_ext is a string"),
        )
        .unwrap();
        assert_eq!(
            ext,
            json!({"video_codec": "h264", "resolution": "1280x720", "session_id": "rec-1"})
        );
    }

    // Playback of the MP4 from the notice's video_url: ranges, HEAD, 416.
    let video_url = by_template.body["video_url"].as_str().unwrap().to_string();
    let ranged = http()
        .get(&video_url)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.headers()["content-range"], "bytes 0-99/1000");
    assert_eq!(ranged.headers()["content-type"], "video/mp4");
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &a.bytes[..100]);
    let tail = http()
        .get(&video_url)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &a.bytes[990..]);
    let head = http().head(&video_url).send().await.unwrap();
    assert_eq!(
        (
            head.status().as_u16(),
            head.headers()["content-length"].to_str().unwrap()
        ),
        (200, "1000")
    );
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    let whole = http().get(&video_url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &a.bytes[..]);
    let past = http()
        .get(&video_url)
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            past.status().as_u16(),
            past.headers()["content-range"].to_str().unwrap()
        ),
        (416, "bytes */1000")
    );

    // B: an HLS playlist of cam1 with its init and media segments as separate objects.
    settle(&ports).await;
    h.clock.set_ms(t0 + 60_000);
    let mut b = file("cam1_B", "cam1", RecordFormat::Hls, 0);
    let dir = "record/0/bulk/rec-1/cam1_B";
    b.parts = vec![
        (format!("{dir}/init.mp4"), b"init-segment".to_vec()),
        (format!("{dir}/seg-00001.m4s"), b"segment one".to_vec()),
        (format!("{dir}/seg-00002.m4s"), b"segment two".to_vec()),
    ];
    b.bytes = b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"cam1_B/init.mp4\"\n#EXTINF:2.0,\ncam1_B/seg-00001.m4s\n#EXTINF:2.0,\ncam1_B/seg-00002.m4s\n#EXT-X-ENDLIST\n".to_vec();
    notify(&ports, &write_file(&ports, &b).await).await;
    let b_info = wait_media(&api, &b.key, 0).await;
    assert_eq!(
        (
            b_info["BasicInfo"]["Type"].as_str(),
            b_info["MetaData"]["Container"].as_str()
        ),
        (Some("m3u8"), Some("hls"))
    );
    let playlist_url = b_info["BasicInfo"]["MediaUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let playlist = http().get(&playlist_url).send().await.unwrap();
    assert_eq!(playlist.status(), 200);
    assert_eq!(
        playlist.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let text = playlist.text().await.unwrap();
    let mut uris: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect();
    let map = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .expect("EXT-X-MAP kept");
    uris.insert(0, map.trim_end_matches('"').to_string());
    assert_eq!(uris.len(), 3, "{text}");
    for ((key, bytes), uri) in b.parts.iter().zip(&uris) {
        assert!(
            uri.starts_with(&format!("/objects/{key}?expires=")) && uri.contains("&sig="),
            "{uri} in {text}"
        );
        let got = http().get(format!("{base}{uri}")).send().await.unwrap();
        assert_eq!(got.status(), 200, "{uri}");
        let want_type = if key.ends_with(".m4s") {
            "video/iso.segment"
        } else {
            "video/mp4"
        };
        assert_eq!(got.headers()["content-type"], want_type);
        assert_eq!(got.bytes().await.unwrap().as_ref(), &bytes[..]);
    }
    let unsigned = http()
        .get(format!("{base}/objects/{dir}/seg-00001.m4s"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403, "segments need their signature");

    // C: an audio file of another stream and recording; D: in namespace 1.
    settle(&ports).await;
    h.clock.set_ms(t0 + 120_000);
    let mut c = file("lobby_C", "lobby", RecordFormat::Aac, 0);
    c.recording = "rec-2";
    c.record_id = Some("rid-frontdesk");
    notify(&ports, &write_file(&ports, &c).await).await;
    wait_media(&api, &c.key, 0).await;
    settle(&ports).await;
    h.clock.set_ms(t0 + 180_000);
    let d = file("cam1_D", "cam1", RecordFormat::Mp4, 1);
    notify(&ports, &write_file(&ports, &d).await).await;
    wait_media(&api, &d.key, 1).await;

    // Search: namespace 0 newest first by default.
    assert_eq!(
        search(&api, json!({})).await,
        (3, vec!["lobby_C".into(), "cam1_B".into(), "cam1_A".into()])
    );
    assert_eq!(
        search(&api, json!({"StreamIds": ["cam1"]})).await,
        (2, vec!["cam1_B".into(), "cam1_A".into()])
    );
    assert_eq!(
        search(
            &api,
            json!({"StreamIds": ["cam1", "lobby"], "Categories": ["Audio"]})
        )
        .await,
        (1, vec!["lobby_C".into()])
    );
    assert_eq!(
        search(&api, json!({"Text": "frontdesk"})).await,
        (1, vec!["lobby_C".into()]),
        "Text covers the record id"
    );
    assert_eq!(
        search(&api, json!({"Text": "CAM1"})).await.0,
        2,
        "Text is fuzzy"
    );
    assert_eq!(search(&api, json!({"NamePrefixes": ["cam1_"]})).await.0, 2);
    assert_eq!(
        search(&api, json!({"NamePrefixes": ["am1"]})).await.0,
        0,
        "a prefix is a prefix"
    );
    assert_eq!(
        search(&api, json!({"MediaTypes": ["m3u8"]})).await,
        (1, vec!["cam1_B".into()])
    );
    assert_eq!(
        search(&api, json!({"FileIds": [a_id]})).await,
        (1, vec!["cam1_A".into()])
    );
    let range = json!({"CreateTime": {"After": iso(t0 + 60_000), "Before": iso(t0 + 120_000)}});
    assert_eq!(
        search(&api, range).await,
        (1, vec!["cam1_B".into()]),
        "After inclusive, Before exclusive"
    );
    let asc = json!({"Sort": {"Field": "CreateTime", "Order": "Asc"}, "Offset": 1, "Limit": 1});
    assert_eq!(search(&api, asc).await, (3, vec!["cam1_B".into()]));
    let desc = json!({"Sort": {"Field": "CreateTime", "Order": "Desc"}, "Offset": 2, "Limit": 5});
    assert_eq!(search(&api, desc).await, (3, vec!["cam1_A".into()]));
    // Namespaces and accounts are isolated.
    assert_eq!(
        search(&api, json!({"SubAppId": 1})).await,
        (1, vec!["cam1_D".into()])
    );
    assert_eq!(search(&api, json!({"SubAppId": 2})).await.0, 0);
    let (status, _) = api
        .v1(
            "GET",
            &format!("/v1/media/{}", file_id_of(&d.key)),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 404, "namespace 1's file is not in namespace 0");
    let other = Api::new(&base, OTHER.0, OTHER.1);
    assert_eq!(
        search(&other, json!({})).await.0,
        0,
        "another account sees none of these"
    );
    // Refusals carry §5.1's codes.
    let refused = |body: Value| {
        let api = api.clone();
        async move {
            let (status, v) = api.v1("POST", "/v1/media/search", &[], Some(body)).await;
            (
                status,
                v["Response"]["Error"]["Code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    };
    let eleven: Vec<String> = (0..11).map(|i| format!("s{i}")).collect();
    assert_eq!(
        refused(json!({"StreamIds": eleven})).await,
        (400, "InvalidParameterValue.StreamIds".into())
    );
    assert_eq!(
        refused(json!({"Offset": 4999, "Limit": 2})).await,
        (400, "InvalidParameterValue.Offset".into())
    );
    assert_eq!(
        refused(json!({"CreateTime": {"After": "today"}})).await,
        (400, "InvalidParameterValue.StartTime".into())
    );
    assert_eq!(
        refused(json!({"Sort": {"Field": "Size", "Order": "Asc"}})).await,
        (400, "InvalidParameterValue.Sort".into())
    );

    // Each file was noticed once: the repeated notice of A sent nothing more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (b_id, c_id) = (file_id_of(&b.key), file_id_of(&c.key));
    assert_eq!(
        events_for(&from_recording, &a_id).len(),
        1,
        "one notice of A to the recording's URL"
    );
    assert_eq!(
        events_for(&from_template, &a_id).len(),
        1,
        "one notice of A to the template's URL"
    );
    assert_eq!(events_for(&from_recording, &b_id).len(), 1);
    assert_eq!(
        events_for(&from_recording, &c_id).len(),
        0,
        "rec-2 has no RecordNotifyUrl"
    );
    assert_eq!(events_for(&from_template, &c_id).len(), 1);
    assert_eq!(
        search(&api, json!({"FileIds": [a_id]})).await.0,
        1,
        "one media record of A"
    );

    // DeleteMedia: the files and the record go; a second delete is ResourceNotFound.
    let deleted = api
        .v1_ok("DELETE", &format!("/v1/media/{b_id}"), &[], None)
        .await;
    assert!(deleted["RequestId"].is_string());
    assert_eq!(
        http().get(&playlist_url).send().await.unwrap().status(),
        404,
        "the playlist is gone"
    );
    for (key, _) in &b.parts {
        assert!(
            ports.objects.get(key).await.unwrap().is_none(),
            "{key} is deleted with its playlist"
        );
    }
    let (status, v) = api.v1("GET", &format!("/v1/media/{b_id}"), &[], None).await;
    assert_eq!(
        (status, v["Response"]["Error"]["Code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (status, v) = api
        .v1("DELETE", &format!("/v1/media/{b_id}"), &[], None)
        .await;
    assert_eq!(
        (status, v["Response"]["Error"]["Code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (status, _) = api
        .v1(
            "DELETE",
            &format!("/v1/media/{}", file_id_of(&d.key)),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 404, "namespace 0 cannot delete namespace 1's file");
    assert_eq!(search(&api, json!({})).await.0, 2);

    // Retention: E is kept 30 s (StorageTime); once that passed the scheduler deletes it.
    settle(&ports).await;
    h.clock.set_ms(t0 + 240_000);
    let mut e = file("cam3_E", "cam3", RecordFormat::Mp4, 0);
    e.expires_ms = Some(t0 + 270_000);
    notify(&ports, &write_file(&ports, &e).await).await;
    let e_info = wait_media(&api, &e.key, 0).await;
    assert_eq!(e_info["BasicInfo"]["ExpireTime"], iso(t0 + 270_000));
    let e_url = e_info["BasicInfo"]["MediaUrl"]
        .as_str()
        .unwrap()
        .to_string();
    settle(&ports).await;
    h.clock.set_ms(t0 + 269_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        http().get(&e_url).send().await.unwrap().status(),
        200,
        "not due yet"
    );
    settle(&ports).await;
    h.clock.set_ms(t0 + 270_001);
    let e_id = file_id_of(&e.key);
    eventually("retention to delete E", Duration::from_secs(10), || async {
        let (status, _) = api.v1("GET", &format!("/v1/media/{e_id}"), &[], None).await;
        (status == 404).then_some(())
    })
    .await;
    assert!(
        ports.objects.get(&e.key).await.unwrap().is_none(),
        "its object is deleted"
    );
    assert!(
        ports
            .store
            .load::<RecordFile>(&e.key)
            .await
            .unwrap()
            .is_none(),
        "its recording file is deleted"
    );
    assert_eq!(
        search(&api, json!({})).await,
        (2, vec!["lobby_C".into(), "cam1_A".into()]),
        "the others are kept"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_about_other_objects_and_malformed_notices_are_dropped() {
    let h = InProcess::start().await;
    let ports = h.host().ports.clone();
    ports
        .objects
        .put_bytes("snapshots/x.jpg", b"jpeg".to_vec().into(), "image/jpeg")
        .await
        .unwrap();
    notify(&ports, r#"{"key":"snapshots/x.jpg","size":4}"#).await;
    notify(&ports, "not json").await;
    // Both are acknowledged (nothing is left to retry) and no media record is made.
    eventually("both notices handled", Duration::from_secs(10), || async {
        let stats = ports.queue.stats(OBJECT_NOTICE_QUEUE).await.unwrap();
        (stats.visible == 0 && stats.in_flight == 0).then_some(())
    })
    .await;
    let v = h
        .api
        .v1_ok("POST", "/v1/media/search", &[], Some(json!({})))
        .await;
    assert_eq!(v["TotalCount"], 0);
    h.stop().await;
}
