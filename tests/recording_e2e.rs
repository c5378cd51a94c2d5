//! Cloud recording end to end: `relaycast up` with a real nginx-rtmp origin whose `on_publish`
//! hooks reach relaycast, ffmpeg publishers, ffprobe on the files through relaycast's playback
//! URLs, and a real HTTP receiver of the record notices.

mod support;
#[path = "../workers/tests/support/mod.rs"]
mod media;

use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::{json, Value};
use support::{assert_relaycast_signature, eventually, write_config, Api, CallbackReceiver, Received, RelaycastProcess, ACME};

const RECORD_KEY: &str = "reckey123";
const TEMPLATE_KEY: &str = "cbkey-456";

fn start_relaycast(dir: &std::path::Path, roles: &str) -> RelaycastProcess {
    let config = write_config(dir);
    let env = [
        ("RELAYCAST_TIMING__SCHEDULER_TICK_MS", "200"),
        ("RELAYCAST_TIMING__LEASE_TTL_MS", "3000"),
        ("RELAYCAST_TIMING__LEASE_HEARTBEAT_MS", "1000"),
        ("RELAYCAST_QUEUE__VISIBILITY_TIMEOUT_MS", "5000"),
        ("RELAYCAST_LOG_FILTER", "info"),
    ];
    RelaycastProcess::start(&dir.join("data"), &env, &["--config", config.to_str().unwrap(), "--roles", roles])
}

/// The stack of one test: an nginx-rtmp origin hooked to relaycast, relaycast, a signed client
/// and a receiver of the record notices.
struct Rig {
    nginx: media::Nginx,
    relaycast: RelaycastProcess,
    api: Api,
    receiver: CallbackReceiver,
    dir: tempfile::TempDir,
    _heavy: media::HeavyGuard,
}

impl Rig {
    async fn start(roles: &str) -> Rig {
        let heavy = media::heavy(&[]).await;
        let dir = tempfile::tempdir().unwrap();
        let relaycast = start_relaycast(dir.path(), roles);
        let api = Api::new(&format!("http://{}", relaycast.addr), ACME.0, ACME.1);
        let hooks = api.v1_ok("GET", "/v1/hooks", &[], None).await;
        let nginx = media::Nginx::start_with_hooks(&format!("{}&domain=ingest.test", hooks["NginxRtmpUrl"].as_str().unwrap()));
        let receiver = CallbackReceiver::start().await;
        let pull = format!("rtmp://127.0.0.1:{}/{{app}}/{{stream}}", nginx.rtmp_port);
        api.v1_ok("POST", "/v1/domains", &[], Some(json!({ "DomainName": "ingest.test", "PullUrlTemplate": pull }))).await;
        Rig { nginx, relaycast, api, receiver, dir, _heavy: heavy }
    }

    /// A recording template with `params` (Tencent's fields) and the record callback.
    async fn template(&self, name: &str, params: Value) -> u64 {
        let mut body = json!({ "TemplateName": name, "RecordNotifyUrl": self.receiver.url, "CallbackKey": RECORD_KEY });
        body.as_object_mut().unwrap().extend(params.as_object().unwrap().clone());
        self.api.v1_ok("POST", "/v1/record-templates", &[], Some(body)).await["TemplateId"].as_u64().unwrap()
    }

    async fn bind(&self, app: &str, template: u64) {
        self.api.v1_ok("POST", "/v1/record-rules", &[], Some(json!({ "DomainName": "ingest.test", "AppName": app, "TemplateId": template }))).await;
    }

    fn publish(&self, stream: &str) -> media::Publisher {
        let p = media::Publisher::start_sized(&self.nginx.hooked_url(stream), 320, 240);
        assert!(self.nginx.wait_publishing(stream, Duration::from_secs(10)).is_some(), "{stream} not published");
        p
    }

    /// The record notices (event 100 with our `file_id`) of `stream` received so far.
    fn notices(&self, stream: &str) -> Vec<Received> {
        self.receiver.received().into_iter().filter(|r| r.body["event_type"] == 100 && r.body["stream_id"] == stream && r.body["task_id"].as_str().is_some_and(|t| !t.is_empty())).collect()
    }

    async fn wait_notices(&self, stream: &str, n: usize, within: Duration) -> Vec<Received> {
        eventually(&format!("{n} record notices of {stream}"), within, || async {
            let got = self.notices(stream);
            (got.len() >= n).then_some(got)
        })
        .await
    }

    async fn search(&self, body: Value) -> Value {
        self.api.v1_ok("POST", "/v1/media/search", &[], Some(body)).await
    }
}

fn css_sign(key: &str, t: i64) -> String {
    hex::encode(Md5::digest(format!("{key}{t}").as_bytes()))
}

fn assert_signed(r: &Received, key: &str) {
    let t = r.body["t"].as_i64().expect("t");
    assert_eq!(r.body["sign"], css_sign(key, t), "sign = md5(CallbackKey + t): {}", r.raw);
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
        .v1_ok("POST", "/v1/callback-templates", &[], Some(json!({ "TemplateName": "cb", "RecordNotifyUrl": rig.receiver.url, "CallbackKey": TEMPLATE_KEY })))
        .await["TemplateId"]
        .as_u64()
        .unwrap();
    rig.api.v1_ok("POST", "/v1/callback-rules", &[], Some(json!({ "DomainName": "ingest.test", "TemplateId": cb }))).await;
    let template = rig.template("hlsmp4", json!({ "HlsParam": { "Enable": 1 }, "Mp4Param": { "Enable": 1, "RecordInterval": 3600 } })).await;
    rig.bind("hooked", template).await;

    let publisher = rig.publish("cam1");
    let published = Instant::now();
    let recording = eventually("the automatic recording", Duration::from_secs(10), || async {
        let list = rig.api.v1_ok("GET", "/v1/recordings", &[], None).await;
        list["Recordings"].as_array().and_then(|r| r.first().cloned())
    })
    .await;
    assert_eq!((recording["Mode"].as_str(), recording["StreamName"].as_str()), (Some("auto"), Some("cam1")), "{recording}");
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(published.elapsed())).await;
    drop(publisher);
    let stopped = Instant::now();

    // Two files, each noticed to the template's RecordNotifyUrl and to the domain's template.
    let notices = rig.wait_notices("cam1", 4, Duration::from_secs(20)).await;
    let latency = stopped.elapsed();
    assert_eq!(notices.len(), 4, "{:?}", notices.iter().map(|n| &n.raw).collect::<Vec<_>>());
    let mut formats: Vec<&str> = notices.iter().map(|n| n.body["file_format"].as_str().unwrap()).collect();
    formats.sort();
    assert_eq!(formats, ["hls", "hls", "mp4", "mp4"]);
    let by_key = |key: &str| notices.iter().filter(|n| (key == RECORD_KEY) == (n.body["sign"] == css_sign(RECORD_KEY, n.body["t"].as_i64().unwrap()))).count();
    assert_eq!((by_key(RECORD_KEY), by_key(TEMPLATE_KEY)), (2, 2), "one notice per file to each endpoint");
    for n in &notices {
        let key = if n.body["sign"] == css_sign(RECORD_KEY, n.body["t"].as_i64().unwrap()) { RECORD_KEY } else { TEMPLATE_KEY };
        assert_signed(n, key);
        assert_eq!((n.body["app"].as_str(), n.body["appname"].as_str(), n.body["record_temp_id"].as_str()), (Some("ingest.test"), Some("hooked"), Some(template.to_string().as_str())), "{}", n.raw);
    }
    eprintln!("stream end to record callback: {latency:?}");
    assert!(latency < Duration::from_secs(6), "record callback {latency:?} after the stream ended");

    for n in notices.iter().filter(|n| n.body["sign"] == css_sign(RECORD_KEY, n.body["t"].as_i64().unwrap())) {
        let url = n.body["video_url"].as_str().unwrap();
        let probe = media::probe_file(url);
        assert!(probe.decode_errors.is_empty(), "{url}: {:?}", probe.decode_errors);
        assert_eq!(probe.codecs, ["h264", "aac"], "{url}");
        // 20 s published; the recording starts at the first keyframe after the pull connected
        // (GOP 2 s).
        assert!((17.0..=21.0).contains(&probe.duration), "{url}: {}", probe.duration);
        assert!((probe.duration - n.body["duration"].as_f64().unwrap()).abs() <= 1.0, "{}", n.raw);
        if n.body["file_format"] == "mp4" {
            let (status, headers, body) = get(url, Some("bytes=0-99")).await;
            assert_eq!(status, 206);
            assert_eq!(body.len(), 100);
            assert_eq!(&body[4..8], b"ftyp");
            assert_eq!(headers["content-type"], "video/mp4");
            let total = n.body["file_size"].as_u64().unwrap();
            assert_eq!(headers["content-range"], format!("bytes 0-99/{total}").as_str());
            let (status, _, tail) = get(url, Some("bytes=-10")).await;
            assert_eq!((status, tail.len()), (206, 10));
            assert_eq!(get(url, Some(&format!("bytes={total}-"))).await.0, 416);
        } else {
            let (status, headers, body) = get(url, None).await;
            assert_eq!((status, headers["content-type"].to_str().unwrap()), (200, "application/vnd.apple.mpegurl"));
            let playlist = String::from_utf8(body).unwrap();
            let segment = playlist.lines().find(|l| !l.starts_with('#')).unwrap();
            assert!(segment.starts_with("/objects/") && segment.contains("sig="), "{playlist}");
            let base = url.split("/objects/").next().unwrap();
            assert_eq!(get(&format!("{base}{segment}"), None).await.0, 200);
        }
    }
    // The media library lists both files of the stream, each once.
    let found = rig.search(json!({ "StreamIds": ["cam1"] })).await;
    assert_eq!(found["TotalCount"], 2, "{found}");
    let done = rig.api.v1_ok("GET", &format!("/v1/recordings/{}", recording["TaskId"].as_str().unwrap()), &[], None).await;
    assert_eq!(done["Recording"]["Status"], "finished", "{done}");
}
