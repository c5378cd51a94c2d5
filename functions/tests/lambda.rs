//! The Lambda bootstrap binaries as Lambda runs them: each real binary started with a Lambda
//! function's environment against the Runtime API emulator on 127.0.0.1, on DynamoDB, SQS and S3
//! served by moto, answering the event shapes API Gateway (HTTP API, payload 2.0), SQS (with
//! S3 notifications in it) and EventBridge send.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use relaycast_aws::moto::MotoServer;
use relaycast_core::app::callbacks::{create_rule, create_template, live_streams};
use relaycast_core::config::{AwsSettings, Settings};
use relaycast_core::domain::auth::{Account, SecretKey};
use relaycast_core::domain::callbacks::StreamPath;
use relaycast_core::domain::outbox::{DeliveryState, OutboxEntry, RetryPolicy, CALLBACK_QUEUE};
use relaycast_core::domain::recording::media::MediaRecord;
use relaycast_core::domain::recording::{RecordFile, RecordFormat, OBJECT_NOTICE_QUEUE};
use relaycast_core::domain::relay::task::RelayTask;
use relaycast_core::domain::relay::types::TaskId;
use relaycast_core::ports::{
    Clock, Condition, Entity, Ports, ReceivedMessage, SystemClock, TypedStore,
};
use relaycast_functions::lambda_emulator::{Emulator, FunctionProcess, Outcome};
use serde_json::{json, Value};

const ACCOUNT: &str = "acme";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const CALLBACK_KEY: &str = "cbkey-123";
const DOMAIN: &str = "push.example.com";
const WAIT: Duration = Duration::from_secs(30);

/// moto with the stack's resources, and the test's own ports on them.
struct Stack {
    moto: MotoServer,
    aws: AwsSettings,
    ports: Ports,
    settings: Arc<Settings>,
}

/// `RELAYCAST_ACCOUNTS` as the stack passes it: a TOML array of account tables.
const DECLARED_ACCOUNTS: &str =
    r#"[{ name = "declared", key = "fedcba9876543210fedcba9876543210" }]"#;
const DECLARED_KEY: &str = "fedcba9876543210fedcba9876543210";

impl Stack {
    async fn start(tag: &str) -> Stack {
        let moto = MotoServer::start();
        let aws = moto.settings(tag);
        let settings = Settings {
            aws: Some(aws.clone()),
            allow_private_targets: true,
            ..Settings::default()
        };
        relaycast_aws::moto::provision(&aws, settings.queue.max_receives)
            .await
            .expect("provision the stack on moto");
        let ports = relaycast_aws::open_aws(
            &aws,
            Arc::new(SystemClock),
            settings.queue.max_receives,
            relaycast_aws::Checks::Existence,
        )
        .await
        .expect("open the AWS adapters on moto");
        let account = Account::new(ACCOUNT, SecretKey::new(KEY));
        ports.store.save(&account, Condition::Any).await.unwrap();
        Stack {
            moto,
            aws,
            ports,
            settings: Arc::new(settings),
        }
    }

    /// The environment of function `name`: Lambda's, moto's credentials and region, and the
    /// `RELAYCAST_*` settings naming the stack's resources, plus `extra`.
    fn env(
        &self,
        emulator: &Emulator,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut env = emulator.lambda_env(name);
        let aws = &self.aws;
        let endpoint = self.moto.endpoint();
        for (k, v) in [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("RELAYCAST_AWS__REGION", "us-east-1"),
            ("RELAYCAST_AWS__ENDPOINT_URL", endpoint.as_str()),
            ("RELAYCAST_AWS__TABLE", aws.table.as_str()),
            ("RELAYCAST_AWS__QUEUE_PREFIX", aws.queue_prefix.as_str()),
            ("RELAYCAST_AWS__BUCKET", aws.bucket.as_str()),
            ("RELAYCAST_ALLOW_PRIVATE_TARGETS", "true"),
            ("RELAYCAST_LOG_FILTER", "info"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            env.push((k.to_string(), v.to_string()));
        }
        env
    }
}

/// Starts the bootstrap binary `bin` as function `name` and waits for its first `next`.
async fn function(
    stack: &Stack,
    emulator: &Emulator,
    bin: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> FunctionProcess {
    let process = FunctionProcess::start(bin.as_ref(), &stack.env(emulator, name, extra));
    assert!(
        emulator.first_next(WAIT).await.is_some(),
        "{name} never asked for an invocation; it printed:\n{}",
        process.output()
    );
    process
}

async fn invoke(emulator: &Emulator, process: &FunctionProcess, event: Value) -> Value {
    match emulator.call(event, WAIT).await {
        Some(Outcome::Response(v)) => v,
        other => panic!(
            "expected a response, got {other:?}; the function printed:\n{}",
            process.output()
        ),
    }
}

/// An API Gateway HTTP API (payload format 2.0) event, as the `$default` route sends it.
fn apigw_event(method: &str, path: &str, query: &str, body: &str) -> Value {
    let query_map: serde_json::Map<String, Value> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "accept": "*/*",
            "content-length": body.len().to_string(),
            "content-type": "application/json",
            "host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "user-agent": "curl/8.5.0",
            "x-amzn-trace-id": "Root=1-6750a1b2-0123456789abcdef01234567",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https"
        },
        "queryStringParameters": query_map,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abcdef1234",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0"
            },
            "requestId": "CvQ0PjXsIAMEVwQ=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "03/Dec/2026:05:00:00 +0000",
            "timeEpoch": 1796274000000i64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// The HTTP answer inside a function's API Gateway response: status and JSON body.
fn http_answer(response: &Value) -> (u16, Value) {
    let status = response["statusCode"].as_u64().unwrap_or(0) as u16;
    let body = response["body"].as_str().unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into())),
    )
}

/// `n=…&r=…&k=…` with `k = md5(r + key)`.
fn signed_query(r: &str) -> String {
    let k = hex::encode(Md5::digest(format!("{r}{KEY}").as_bytes()));
    format!("n={ACCOUNT}&r={r}&k={k}")
}

/// An SQS event as the event source mapping sends it, one record per received message.
fn sqs_event(queue_arn: &str, messages: &[ReceivedMessage]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.id,
                "receiptHandle": m.receipt,
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "SentTimestamp": m.sent_at_ms.to_string(),
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": m.sent_at_ms.to_string()
                },
                "messageAttributes": {},
                "md5OfBody": hex::encode(Md5::digest(m.body.as_bytes())),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Receives every message of `queue` now visible, hidden for `visibility`.
async fn receive_all(ports: &Ports, queue: &str, visibility: Duration) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let batch = ports
            .queue
            .receive(queue, 10, visibility, Duration::from_secs(1))
            .await
            .unwrap();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// What the event source mapping does with a batch response: deletes every message not named
/// in `batchItemFailures`. Returns the ids named.
async fn settle_batch(
    ports: &Ports,
    queue: &str,
    batch: &[ReceivedMessage],
    response: &Value,
) -> Vec<String> {
    let failed: Vec<String> = response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures in {response}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect();
    for m in batch.iter().filter(|m| !failed.contains(&m.id)) {
        ports.queue.ack(queue, &m.receipt).await.unwrap();
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_a_signed_forward_request_and_refuses_a_body_over_the_limit() {
    let stack = Stack::start("lapi").await;
    let emulator = Emulator::start().await;
    let api = function(
        &stack,
        &emulator,
        env!("CARGO_BIN_EXE_relaycast-api"),
        "relaycast-api",
        &[
            ("RELAYCAST_HTTP__MAX_BODY_BYTES", "4096"),
            ("RELAYCAST_ACCOUNTS", DECLARED_ACCOUNTS),
        ],
    )
    .await;
    // The accounts the stack's `Accounts` parameter declares are stored at init.
    let declared = stack
        .ports
        .store
        .load::<Account>("declared")
        .await
        .unwrap()
        .expect("the declared account is stored at init");
    assert_eq!(declared.value.secret_key.expose(), DECLARED_KEY);

    let body = json!({
        "cmd": "1",
        "type": "live",
        "list": [{
            "id": "lambda-task-1",
            "src": [{"url": "rtmp://127.0.0.1:1/live/lambda"}],
            "forward": [{"url": "rtmp://127.0.0.1:1935/live/out"}],
        }]
    })
    .to_string();
    let event = apigw_event(
        "POST",
        "/api/cdn/v2/forwardRequest.action",
        &signed_query("lambda-r-1"),
        &body,
    );
    let (status, answer) = http_answer(&invoke(&emulator, &api, event).await);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["http_code"], "200", "{answer}");
    assert_eq!(answer["msg"], "작업 수신 성공!", "{answer}");
    let task = stack
        .ports
        .store
        .load::<RelayTask>(&RelayTask::store_key(
            ACCOUNT,
            &TaskId::parse("lambda-task-1").unwrap(),
        ))
        .await
        .unwrap();
    assert!(task.is_some(), "the task is stored in DynamoDB");

    // The query API on the same function finds it.
    let query = format!("{}&id=lambda-task-1", signed_query("lambda-r-2"));
    let event = apigw_event("GET", "/api/cdn/v2/forwardQueryByPage.action", &query, "");
    let (status, page) = http_answer(&invoke(&emulator, &api, event).await);
    assert_eq!(status, 200, "{page}");
    assert!(page.to_string().contains("lambda-task-1"), "{page}");

    // Over `http.max_body_bytes`: the seed's error body, 413, and nothing stored.
    let padded = json!({
        "cmd": "1", "type": "live",
        "list": [{"id": "lambda-task-2", "src": [{"url": "rtmp://127.0.0.1:1/live/x"}],
                  "forward": [{"url": "rtmp://127.0.0.1:1935/live/y"}]}],
        "pad": "x".repeat(5000),
    })
    .to_string();
    let event = apigw_event(
        "POST",
        "/api/cdn/v2/forwardRequest.action",
        &signed_query("lambda-r-3"),
        &padded,
    );
    let (status, answer) = http_answer(&invoke(&emulator, &api, event).await);
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["http_code"], "1001", "{answer}");
    assert_eq!(
        answer["msg"], "params body length is too long (at most 4096 bytes)",
        "{answer}"
    );
    assert!(answer["call_time"].is_i64(), "{answer}");
    assert!(stack
        .ports
        .store
        .load::<RelayTask>(&RelayTask::store_key(
            ACCOUNT,
            &TaskId::parse("lambda-task-2").unwrap()
        ))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_store_a_signed_css_push() {
    let stack = Stack::start("lcb").await;
    let template = create_template(
        &stack.ports,
        &stack.settings,
        ACCOUNT,
        serde_json::from_value(json!({
            "TemplateName": "cb",
            // Nobody listens: no notifier runs in this test.
            "StreamBeginNotifyUrl": "http://127.0.0.1:9/cb",
            "CallbackKey": CALLBACK_KEY,
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    create_rule(
        &stack.ports,
        ACCOUNT,
        serde_json::from_value(json!({ "DomainName": DOMAIN, "TemplateId": template.id })).unwrap(),
    )
    .await
    .unwrap();
    let emulator = Emulator::start().await;
    let callbacks = function(
        &stack,
        &emulator,
        env!("CARGO_BIN_EXE_relaycast-callbacks"),
        "relaycast-callbacks",
        &[],
    )
    .await;

    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = now_s + 600;
    let sign = hex::encode(Md5::digest(format!("{CALLBACK_KEY}{t}").as_bytes()));
    // A CSS push as SCHEMAS.md §2.3 shows it.
    let css = json!({
        "app": DOMAIN, "appid": 12345678, "appname": "live", "channel_id": "cam1", "stream_id": "cam1",
        "errcode": 0, "errmsg": "ok", "event_time": now_s, "event_type": 1,
        "node": "42.81.194.37", "sequence": "6774182466373541337", "user_ip": "1.1.1.1",
        "stream_param": "a=b", "width": 0, "height": 0, "t": t, "sign": sign,
    });
    let event = apigw_event("POST", "/callbacks/css", "", &css.to_string());
    let (status, answer) = http_answer(&invoke(&emulator, &callbacks, event).await);
    assert_eq!((status, answer), (200, json!({ "code": 0 })));
    let live = live_streams(&stack.ports, ACCOUNT, 10).await.unwrap();
    assert_eq!(
        live.iter().map(|s| s.stream.joined()).collect::<Vec<_>>(),
        vec![StreamPath::parse(DOMAIN, "live", "cam1").unwrap().joined()],
        "the push is stored: the stream is live"
    );

    // The API's routes are not this function's.
    let event = apigw_event("GET", "/api/cdn/v2/forwardQueryByPage.action", "", "");
    let (status, _) = http_answer(&invoke(&emulator, &callbacks, event).await);
    assert_eq!(status, 404);
}

/// An HTTP receiver on 127.0.0.1 answering `status`, counting what it gets.
async fn receiver(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_reports_exactly_the_failed_callback_and_brings_it_back_on_schedule() {
    let stack = Stack::start("lnot").await;
    let (ok_url, ok_got) = receiver(200).await;
    let (bad_url, bad_got) = receiver(500).await;
    let now = SystemClock.now_ms();
    let policy = RetryPolicy {
        interval_ms: 4_000,
        retries: 5,
    };
    let mut ids = Vec::new();
    for (stream, url) in [("ok", &ok_url), ("bad", &bad_url)] {
        let mut entry = OutboxEntry::new(
            ACCOUNT,
            stream,
            1,
            url,
            json!({"stream": stream}).to_string(),
            policy,
            now,
        );
        entry.state = DeliveryState::Queued;
        stack
            .ports
            .store
            .save(&entry, Condition::Absent)
            .await
            .unwrap();
        stack
            .ports
            .queue
            .send(CALLBACK_QUEUE, &entry.id, Duration::ZERO)
            .await
            .unwrap();
        ids.push(entry.id);
    }
    let batch = receive_all(&stack.ports, CALLBACK_QUEUE, Duration::from_secs(1)).await;
    assert_eq!(batch.len(), 2);
    let failing = batch.iter().find(|m| m.body == ids[1]).unwrap().id.clone();

    let emulator = Emulator::start().await;
    let notifier = function(
        &stack,
        &emulator,
        env!("CARGO_BIN_EXE_relaycast-notifier"),
        "relaycast-notifier",
        // As if the queue dead-lettered at the second receive: the second failure hands over.
        &[("RELAYCAST_QUEUE__MAX_RECEIVES", "2")],
    )
    .await;
    let arn = format!(
        "arn:aws:sqs:us-east-1:123456789012:{}{CALLBACK_QUEUE}",
        stack.aws.queue_prefix
    );
    let response = invoke(&emulator, &notifier, sqs_event(&arn, &batch)).await;
    let answered = tokio::time::Instant::now();
    let failed = settle_batch(&stack.ports, CALLBACK_QUEUE, &batch, &response).await;
    assert_eq!(failed, vec![failing.clone()], "{response}");
    assert_eq!(ok_got.lock().unwrap().len(), 1);
    assert_eq!(bad_got.lock().unwrap().len(), 1);
    let state = |id: String| {
        let store = stack.ports.store.clone();
        async move { store.load::<OutboxEntry>(&id).await.unwrap().unwrap().value }
    };
    assert_eq!(state(ids[0].clone()).await.state, DeliveryState::Delivered);
    let bad = state(ids[1].clone()).await;
    assert_eq!((bad.attempts, bad.state), (1, DeliveryState::Queued));

    // The failed one is hidden until its retry is due (4 s after the answer at the latest),
    // then comes back, alone. Timed from the answer: settling the batch on a loaded moto can
    // take a while.
    tokio::time::sleep_until(answered + Duration::from_millis(1_500)).await;
    assert!(
        receive_all(&stack.ports, CALLBACK_QUEUE, Duration::from_secs(30))
            .await
            .is_empty()
    );
    let mut back = Vec::new();
    for _ in 0..10 {
        back = receive_all(&stack.ports, CALLBACK_QUEUE, Duration::from_secs(30)).await;
        if !back.is_empty() {
            break;
        }
    }
    assert_eq!(
        back.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![failing]
    );
    assert_eq!(back[0].receive_count, 2);

    // It fails again at the receive SQS would dead-letter it after: handed over to a new
    // message instead, due after the wait, and its entry still has its retries.
    let response = invoke(&emulator, &notifier, sqs_event(&arn, &back)).await;
    let failed = settle_batch(&stack.ports, CALLBACK_QUEUE, &back, &response).await;
    assert!(failed.is_empty(), "{response}");
    assert_eq!(bad_got.lock().unwrap().len(), 2);
    let bad = state(ids[1].clone()).await;
    assert_eq!((bad.attempts, bad.state), (2, DeliveryState::Queued));
    let mut again = Vec::new();
    for _ in 0..10 {
        again = receive_all(&stack.ports, CALLBACK_QUEUE, Duration::from_secs(30)).await;
        if !again.is_empty() {
            break;
        }
    }
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].body.as_str(), again[0].receive_count),
        (ids[1].as_str(), 1)
    );
    assert_ne!(again[0].id, back[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_turns_an_s3_notification_into_a_media_record() {
    let stack = Stack::start("lrec").await;
    let now = SystemClock.now_ms();
    let key = "record/0/acme/rec-1/cam1_20261203.mp4";
    let file = RecordFile {
        object_key: key.into(),
        account: ACCOUNT.into(),
        recording_id: "rec-1".into(),
        record_id: None,
        stream: Some(StreamPath::parse(DOMAIN, "live", "cam1").unwrap()),
        stream_id: "cam1".into(),
        stream_param: String::new(),
        template_id: None,
        format: RecordFormat::Mp4,
        namespace: 0,
        name: "cam1_20261203".into(),
        start_ms: now - 60_000,
        end_ms: now - 1_000,
        duration_ms: 59_000,
        size: 1000,
        video_codec: Some("h264".into()),
        resolution: Some("1280x720".into()),
        expires_ms: None,
        parts: vec![],
    };
    stack.ports.store.save(&file, Condition::Any).await.unwrap();
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let meta = stack
        .ports
        .objects
        .put_bytes(key, bytes.into(), RecordFormat::Mp4.content_type())
        .await
        .unwrap();

    // What the bucket sends to the object-notices queue: its test event once, then the event.
    let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-03T05:00:00.000Z",
        "Bucket": stack.aws.bucket, "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"});
    let notification = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-03T05:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "object-notices",
               "bucket": {"name": stack.aws.bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": format!("arn:aws:s3:::{}", stack.aws.bucket)},
               "object": {"key": key, "size": meta.size, "eTag": "d41d8cd98f00b204e9800998ecf8427e", "sequencer": "0055AED6DCD90281E5"}}
    }]});
    for body in [test_event.to_string(), notification.to_string()] {
        stack
            .ports
            .queue
            .send(OBJECT_NOTICE_QUEUE, &body, Duration::ZERO)
            .await
            .unwrap();
    }
    let batch = receive_all(&stack.ports, OBJECT_NOTICE_QUEUE, Duration::from_secs(30)).await;
    assert_eq!(batch.len(), 2);

    let emulator = Emulator::start().await;
    let recordings = function(
        &stack,
        &emulator,
        env!("CARGO_BIN_EXE_relaycast-recordings"),
        "relaycast-recordings",
        &[],
    )
    .await;
    let arn = format!(
        "arn:aws:sqs:us-east-1:123456789012:{}{OBJECT_NOTICE_QUEUE}",
        stack.aws.queue_prefix
    );
    let response = invoke(&emulator, &recordings, sqs_event(&arn, &batch)).await;
    assert_eq!(response, json!({ "batchItemFailures": [] }));
    let media_key = MediaRecord::new(file.clone(), now).key();
    let media = stack
        .ports
        .store
        .load::<MediaRecord>(&media_key)
        .await
        .unwrap();
    let media = media.expect("the media record exists");
    assert_eq!(media.value.file.object_key, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_answers_a_scheduled_event_with_its_tick() {
    let stack = Stack::start("lsch").await;
    let emulator = Emulator::start().await;
    let scheduler = function(
        &stack,
        &emulator,
        env!("CARGO_BIN_EXE_relaycast-scheduler"),
        "relaycast-scheduler",
        &[],
    )
    .await;
    let event = json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-12-03T05:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/relaycast-scheduler"], "detail": {}
    });
    let response = invoke(&emulator, &scheduler, event).await;
    assert_eq!(response["tick"]["started"], 0, "{response}");
    assert_eq!(response["outbox_queued"], 0, "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_without_a_table_name_reports_its_init_error() {
    let stack = Stack::start("linit").await;
    let emulator = Emulator::start().await;
    let mut process = FunctionProcess::start(
        env!("CARGO_BIN_EXE_relaycast-api").as_ref(),
        &stack.env(&emulator, "relaycast-api", &[("RELAYCAST_AWS__TABLE", "")]),
    );
    let reported = emulator.init_error(WAIT).await.unwrap_or_else(|| {
        panic!(
            "no init error reported; the function printed:\n{}",
            process.output()
        )
    });
    assert_eq!(
        reported.error_type.as_deref(),
        Some("Relaycast.ConfigError")
    );
    assert_eq!(reported.body["errorType"], "Relaycast.ConfigError");
    let message = reported.body["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("aws.table"), "{message}");
    let status = process
        .wait_exit(WAIT)
        .expect("the function exits after its init error");
    assert!(!status.success());
    assert!(
        emulator.first_next(Duration::ZERO).await.is_none(),
        "it never asked for work"
    );
}

/// Init makes no round trip (every cold start waits for it), so a table the stack lacks is
/// found by the first invocation, which fails with an error and a log line naming the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_whose_table_is_missing_fails_its_first_invocation_naming_the_table() {
    let stack = Stack::start("lmiss").await;
    let emulator = Emulator::start().await;
    let api = function(
        &stack,
        &emulator,
        env!("CARGO_BIN_EXE_relaycast-api"),
        "relaycast-api",
        &[("RELAYCAST_AWS__TABLE", "no-such-table")],
    )
    .await;
    let query = format!("{}&id=t1", signed_query("lmiss-r-1"));
    let event = apigw_event("GET", "/api/cdn/v2/forwardQueryByPage.action", &query, "");
    let (status, answer) = http_answer(&invoke(&emulator, &api, event).await);
    assert!(status >= 500, "{status} {answer}");
    let deadline = std::time::Instant::now() + WAIT;
    while !api.output().contains("no-such-table") {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line names the missing table; the function printed:\n{}",
            api.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
