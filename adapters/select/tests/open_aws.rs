//! `open_ports` on settings with `[aws]`: against moto's server, a missing table, queue or
//! bucket is named in a clear error; once `provision` made them, the ports work.

use std::sync::Arc;
use std::time::Duration;

use relaycast_adapters::{open_ports, OpenError};
use relaycast_aws::moto::{provision, MotoServer};
use relaycast_core::config::Settings;
use relaycast_core::ports::{Condition, Kind, ManualClock, Record};
use serde_json::json;
use tokio::io::AsyncReadExt;

async fn open_error(settings: &Settings) -> String {
    match open_ports(settings, Arc::new(ManualClock::starting_now())).await {
        Err(e @ OpenError::Aws(relaycast_aws::AwsError::Open { .. })) => {
            let msg = e.to_string();
            assert!(msg.contains("does not exist"), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
            msg
        }
        Err(other) => panic!("expected AwsError::Open, got {other}"),
        Ok(_) => panic!("opened on missing resources"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_settings_open_the_aws_ports_and_name_what_is_missing() {
    let server = MotoServer::start();
    let aws = server.settings(&format!("open-{}", std::process::id()));
    let settings = Settings {
        aws: Some(aws.clone()),
        ..Default::default()
    };
    let sdk = relaycast_aws::sdk_config(&aws).await;

    let msg = open_error(&settings).await;
    assert!(
        msg.contains("DynamoDB table") && msg.contains(&aws.table),
        "{msg}"
    );
    relaycast_aws::store::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &aws.table)
        .await
        .unwrap();
    let msg = open_error(&settings).await;
    assert!(
        msg.contains("SQS queue") && msg.contains(&format!("{}relay-jobs", aws.queue_prefix)),
        "{msg}"
    );
    provision(&aws, settings.queue.max_receives).await.unwrap();

    let opened = open_ports(&settings, Arc::new(ManualClock::starting_now()))
        .await
        .unwrap();
    assert!(opened.local_objects.is_none(), "playback is S3's on AWS");
    let ports = opened.ports;

    let record = Record::new(Kind("task"), "t1", json!({ "id": "t1" }));
    assert_eq!(ports.store.put(record, Condition::Absent).await.unwrap(), 1);
    assert_eq!(
        ports.store.version(Kind("task"), "t1").await.unwrap(),
        Some(1)
    );

    let id = ports
        .queue
        .send("relay-jobs", "job", Duration::ZERO)
        .await
        .unwrap();
    let got = ports
        .queue
        .receive(
            "relay-jobs",
            1,
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(
        (got[0].id.as_str(), got[0].body.as_str()),
        (id.as_str(), "job")
    );
    ports
        .queue
        .ack("relay-jobs", &got[0].receipt)
        .await
        .unwrap();

    ports
        .objects
        .put_bytes(
            "rec/a.flv",
            bytes::Bytes::from_static(b"FLV"),
            "video/x-flv",
        )
        .await
        .unwrap();
    let mut reader = ports.objects.get("rec/a.flv").await.unwrap().unwrap();
    let mut body = Vec::new();
    reader.body.read_to_end(&mut body).await.unwrap();
    assert_eq!(body, b"FLV");
}

/// The bucket is checked too, and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named() {
    let server = MotoServer::start();
    let aws = server.settings(&format!("nobucket-{}", std::process::id()));
    let sdk = relaycast_aws::sdk_config(&aws).await;
    relaycast_aws::store::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &aws.table)
        .await
        .unwrap();
    relaycast_aws::queue::create_queues(
        &aws_sdk_sqs::Client::new(&sdk),
        &aws.queue_prefix,
        relaycast_core::ports::queue::QUEUES,
        5,
    )
    .await
    .unwrap();
    let settings = Settings {
        aws: Some(aws.clone()),
        ..Default::default()
    };
    let msg = open_error(&settings).await;
    assert!(
        msg.contains("S3 bucket") && msg.contains(&aws.bucket),
        "{msg}"
    );
}
