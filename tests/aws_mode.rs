//! relaycast in AWS mode, end to end: `relaycast up` with `[aws]` settings runs the API, the
//! relay worker, the recorder and the `recordings` function on DynamoDB, SQS and S3 (moto's
//! server mode on 127.0.0.1). A task created through the API relays between real nginx-rtmp
//! endpoints; a recording lands in the S3 bucket, becomes a media record through the
//! `recordings` function, and plays from its presigned URL. Nothing is written to the data
//! directory's SQLite file: there is none.

#[path = "../workers/tests/support/mod.rs"]
mod media;
#[path = "support/recording.rs"]
mod recording;
mod support;

use std::time::{Duration, Instant};

use recording::Rig;
use relaycast_aws::moto::{provision, MotoServer};
use serde_json::json;
use support::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_and_a_recording_run_on_dynamodb_sqs_and_s3() {
    let moto = MotoServer::start();
    let aws = moto.settings("e2e");
    provision(&aws, 5).await.expect("provision moto");
    let endpoint = moto.endpoint();
    let env = [
        ("RELAYCAST_AWS__REGION", "us-east-1"),
        ("RELAYCAST_AWS__ENDPOINT_URL", endpoint.as_str()),
        ("RELAYCAST_AWS__TABLE", aws.table.as_str()),
        ("RELAYCAST_AWS__QUEUE_PREFIX", aws.queue_prefix.as_str()),
        ("RELAYCAST_AWS__BUCKET", aws.bucket.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let rig = Rig::start_with("all", &env).await;
    let health = reqwest::get(rig.relaycast.url("/healthz"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    eprintln!("healthz: {health}");

    // A relay: one pull from the origin's `live/src`, pushed to `live/out1`.
    let _source = media::Publisher::start(&rig.nginx.url("src"));
    assert!(
        rig.nginx
            .wait_publishing("src", Duration::from_secs(10))
            .is_some(),
        "test source not up"
    );
    let created = Instant::now();
    let body = json!({
        "transcallbackurl": rig.receiver.url,
        "cmd": "1",
        "type": "live",
        "list": [{
            "id": "aws1",
            "src": [{ "url": rig.nginx.url("src") }],
            "forward": [{ "url": rig.nginx.url("out1") }],
        }]
    });
    let (status, answer) = rig.api.forward(&body).await;
    assert_eq!(
        (status, answer["http_code"].as_str()),
        (200, Some("200")),
        "{answer}"
    );
    let out = rig.nginx.url("out1");
    let (probe, _) =
        tokio::task::spawn_blocking(move || media::wait_playable(&out, Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the relayed destination never became playable");
    eprintln!("create to destination playable: {:?}", created.elapsed());
    assert_eq!(
        (probe.video_codec.as_deref(), probe.audio_codec.as_deref()),
        (Some("h264"), Some("aac"))
    );
    eventually(
        "the task's started callback",
        Duration::from_secs(15),
        || async {
            rig.receiver
                .bodies_for("aws1")
                .iter()
                .any(|b| b["code"] == "0")
                .then_some(())
        },
    )
    .await;
    let task = rig
        .api
        .task("aws1")
        .await
        .expect("the task on the DynamoDB store");
    assert_eq!(task["code"], "0", "{task}");
    let (status, answer) = rig
        .api
        .forward(&json!({ "cmd": "2", "type": "live", "list": [{ "id": "aws1" }] }))
        .await;
    assert_eq!(status, 200, "{answer}");

    // A recording: the hooked app records MP4; the file goes to S3 and comes back as a media
    // record with a presigned playback URL on the bucket.
    let template = rig
        .template(
            "mp4",
            json!({ "Mp4Param": { "Enable": 1, "RecordInterval": 3600 } }),
        )
        .await;
    rig.bind("hooked", template).await;
    let publisher = rig.publish("cam1");
    let published = Instant::now();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(published.elapsed())).await;
    drop(publisher);
    let stopped = Instant::now();
    let notices = rig.wait_notices("cam1", 1, Duration::from_secs(30)).await;
    eprintln!("stream end to record callback: {:?}", stopped.elapsed());
    let url = notices[0].body["video_url"].as_str().unwrap().to_string();
    let object_prefix = format!("{endpoint}/{}/", aws.bucket);
    assert!(
        url.starts_with(&object_prefix) && url.contains("X-Amz-Signature="),
        "the playback URL is not a presigned URL of the bucket: {url}"
    );
    let probe = media::probe_file(&url);
    assert!(probe.decode_errors.is_empty(), "{:?}", probe.decode_errors);
    assert_eq!(probe.codecs, ["h264", "aac"], "{url}");
    assert!(
        (6.0..=12.0).contains(&probe.duration),
        "a 10 s stream recorded as {} s",
        probe.duration
    );
    let found = eventually("the media record", Duration::from_secs(10), || async {
        let found = rig.search(json!({ "StreamIds": ["cam1"] })).await;
        found["MediaInfoSet"]
            .as_array()
            .filter(|m| !m.is_empty())
            .cloned()
    })
    .await;
    let media_url = found[0]["BasicInfo"]["MediaUrl"].as_str().unwrap();
    assert!(media_url.starts_with(&object_prefix), "{media_url}");
    let got = reqwest::get(media_url).await.unwrap();
    assert_eq!(got.status(), 200, "GET {media_url}");

    // Everything above ran on the AWS adapters: the embedded store never opened.
    let data = rig.dir.path().join("data");
    assert!(
        !data
            .join(relaycast_embedded::embedded::DATABASE_FILE)
            .exists(),
        "relaycast opened a SQLite store in AWS mode"
    );
}
