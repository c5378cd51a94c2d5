//! The callbacks capability end to end: a real `relaycast up`, real HTTP receivers on
//! 127.0.0.1 that fail, stall and close connections, and a real nginx-rtmp with its `on_*`
//! hooks pointed at relaycast.

#[path = "../workers/tests/support/mod.rs"]
mod media;
mod support;

use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::{json, Value};
use support::*;

const KEY: &str = "cbkey-123";
const DOMAIN: &str = "push.example.com";

fn now_s() -> i64 {
    now_ms() / 1000
}

fn css_sign(key: &str, t: i64) -> String {
    hex::encode(Md5::digest(format!("{key}{t}").as_bytes()))
}

/// A CSS push (1) or stop (0) event as SCHEMAS.md §2.3 shows it, signed with `key`.
fn css_event(event_type: i64, stream: &str, sequence: &str, key: &str) -> Value {
    let t = now_s() + 600;
    json!({
        "app": DOMAIN, "appid": 12345678, "appname": "live", "channel_id": stream, "stream_id": stream,
        "errcode": if event_type == 0 { 1 } else { 0 }, "errmsg": "ok", "event_time": now_s(), "event_type": event_type,
        "node": "42.81.194.37", "sequence": sequence, "user_ip": "1.1.1.1", "stream_param": "a=b",
        "width": 0, "height": 0, "t": t, "sign": css_sign(key, t),
    })
}

async fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_css(svc: &Service, event: &Value) -> (u16, Value) {
    post(
        &format!("{}/callbacks/css", svc.base()),
        "application/json",
        event.to_string().into_bytes(),
    )
    .await
}

/// A callback template sending every event kind to `url`, bound to `domain`; returns its id.
async fn bind(api: &Api, domain: &str, url: &str) -> u64 {
    let created = api
        .v1_ok(
            "POST",
            "/v1/callback-templates",
            &[],
            Some(json!({
                "TemplateName": "cb",
                "StreamBeginNotifyUrl": url, "StreamEndNotifyUrl": url, "RecordNotifyUrl": url,
                "SnapshotNotifyUrl": url, "PornCensorshipNotifyUrl": url, "CallbackKey": KEY,
            })),
        )
        .await;
    let id = created["TemplateId"].as_u64().unwrap();
    api.v1_ok(
        "POST",
        "/v1/callback-rules",
        &[],
        Some(json!({ "DomainName": domain, "TemplateId": id })),
    )
    .await;
    id
}

/// Checks what a receiver verifies: CSS's `sign` over a future `t`, and our HMAC header over
/// the raw body, in the few lines the documentation promises.
fn assert_signed(r: &Received, key: &str) {
    let t = r.body["t"].as_i64().expect("t");
    assert!(t > now_s(), "t is an expiry time in the future: {}", r.raw);
    assert_eq!(
        r.body["sign"],
        css_sign(key, t),
        "sign = md5(CallbackKey + t)"
    );
    assert_relaycast_signature(r, key);
    assert_eq!(
        r.event_id.as_deref(),
        r.body["event_id"].as_str(),
        "the event id is in the header and the body"
    );
}

fn of_type(receiver: &CallbackReceiver, event_type: i64, stream: &str) -> Vec<Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.body["event_type"] == event_type && r.body["stream_id"] == stream)
        .collect()
}

async fn live_names(api: &Api) -> Vec<String> {
    let v = api.v1_ok("GET", "/v1/streams", &[], None).await;
    v["Streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["StreamName"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn css_push_and_stop_are_stored_once_listed_and_forwarded_signed() {
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let receiver = CallbackReceiver::start().await;
    bind(&api, DOMAIN, &receiver.url).await;

    // The same push posted 12 times (as a sender retrying, each with a fresh t) is one event.
    for _ in 0..12 {
        let (status, body) =
            post_css(&svc, &css_event(1, "cam1", "2210464508206756938", KEY)).await;
        assert_eq!((status, body), (200, json!({"code": 0})));
    }
    eventually("the push callback", Duration::from_secs(10), || async {
        (!of_type(&receiver, 1, "cam1").is_empty()).then_some(())
    })
    .await;
    let streams = api.v1_ok("GET", "/v1/streams", &[], None).await;
    assert_eq!(streams["TotalNum"], 1, "{streams}");
    let s = &streams["Streams"][0];
    assert_eq!(
        (
            s["DomainName"].as_str(),
            s["AppName"].as_str(),
            s["StreamName"].as_str()
        ),
        (Some(DOMAIN), Some("live"), Some("cam1"))
    );
    assert_eq!(
        (
            s["ClientIp"].as_str(),
            s["Source"].as_str(),
            s["StreamParam"].as_str()
        ),
        (Some("1.1.1.1"), Some("css"), Some("a=b"))
    );

    for _ in 0..3 {
        assert_eq!(
            post_css(&svc, &css_event(0, "cam1", "2210464508206756938", KEY))
                .await
                .0,
            200
        );
    }
    eventually("the stop callback", Duration::from_secs(10), || async {
        (!of_type(&receiver, 0, "cam1").is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (pushes, stops) = (of_type(&receiver, 1, "cam1"), of_type(&receiver, 0, "cam1"));
    assert_eq!(
        (pushes.len(), stops.len()),
        (1, 1),
        "each event stored once and delivered once"
    );
    assert!(
        pushes[0].at <= stops[0].at,
        "the stop never overtakes its push"
    );
    for r in [&pushes[0], &stops[0]] {
        assert_signed(r, KEY);
        assert_eq!(r.body["sequence"], "2210464508206756938");
        assert_eq!(
            r.body["appid"], 12345678,
            "CSS fields are forwarded as received"
        );
    }
    assert_ne!(pushes[0].body["event_id"], stops[0].body["event_id"]);

    assert!(
        live_names(&api).await.is_empty(),
        "the stopped stream left the list"
    );
    let sessions = api
        .v1_ok(
            "GET",
            &format!("/v1/streams/{DOMAIN}/live/cam1/sessions"),
            &[],
            None,
        )
        .await;
    let session = &sessions["Sessions"][0];
    assert_eq!(
        sessions["Sessions"].as_array().unwrap().len(),
        1,
        "{sessions}"
    );
    assert_eq!(
        (session["Errcode"].as_i64(), session["StopReason"].as_str()),
        (Some(1), Some("client closed the stream"))
    );
    assert!(session["DurationMs"].as_i64().unwrap() >= 0 && session["StopTimeMs"].is_i64());

    let event_id = pushes[0].body["event_id"].as_str().unwrap();
    let log = api
        .v1_ok(
            "GET",
            "/v1/callbacks/deliveries",
            &[("event_id", event_id)],
            None,
        )
        .await;
    let delivery = &log["Deliveries"][0];
    assert_eq!(
        (delivery["State"].as_str(), delivery["Attempts"].as_u64()),
        (Some("delivered"), Some(1)),
        "{log}"
    );
    assert_eq!(delivery["AttemptLog"][0]["Status"], 200);
    let by_stream = api
        .v1_ok(
            "GET",
            "/v1/callbacks/deliveries",
            &[("domain", DOMAIN), ("app", "live"), ("stream", "cam1")],
            None,
        )
        .await;
    assert_eq!(
        by_stream["Deliveries"].as_array().unwrap().len(),
        2,
        "{by_stream}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_message_and_nothing_is_stored() {
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let receiver = CallbackReceiver::start().await;
    bind(&api, DOMAIN, &receiver.url).await;

    let mut wrong_sign = css_event(1, "x1", "1", KEY);
    wrong_sign["sign"] = json!(css_sign("not-the-key", wrong_sign["t"].as_i64().unwrap()));
    let mut expired = css_event(1, "x2", "2", KEY);
    let past = now_s() - 1;
    expired["t"] = json!(past);
    expired["sign"] = json!(css_sign(KEY, past));
    let mut unknown_type = css_event(1, "x3", "3", KEY);
    unknown_type["event_type"] = json!(999);
    let mut other_domain = css_event(1, "x4", "4", KEY);
    other_domain["app"] = json!("nobody.example.com");
    let huge = format!(
        "{{\"event_type\":1,\"pad\":\"{}\"}}",
        "a".repeat(1024 * 1024 + 10)
    );
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            wrong_sign.to_string().into_bytes(),
            403,
            "sign does not match",
        ),
        (expired.to_string().into_bytes(), 403, "t has expired"),
        (
            unknown_type.to_string().into_bytes(),
            400,
            "unknown event: event_type 999",
        ),
        (b"{\"event_type\":1,".to_vec(), 400, "malformed body"),
        (huge.into_bytes(), 413, "body larger than 1048576 bytes"),
        (
            other_domain.to_string().into_bytes(),
            404,
            "no callback rule for push domain nobody.example.com",
        ),
    ];
    for (body, status, msg) in cases {
        let (got, answer) = post(
            &format!("{}/callbacks/css", svc.base()),
            "application/json",
            body,
        )
        .await;
        assert_eq!(got, status, "{answer}");
        assert!(
            answer["msg"].as_str().unwrap().starts_with(msg),
            "{answer} should say {msg:?}"
        );
        assert_eq!(answer["code"], status);
    }

    // Hooks: no token, a wrong token, another account's token for a domain bound to this one,
    // and broken forms.
    let other_token = svc.api_as(OTHER).v1_ok("GET", "/v1/hooks", &[], None).await["HookToken"]
        .as_str()
        .unwrap()
        .to_string();
    let my_token = api.v1_ok("GET", "/v1/hooks", &[], None).await["HookToken"]
        .as_str()
        .unwrap()
        .to_string();
    let publish = b"call=publish&app=live&name=cam9&addr=127.0.0.1&clientid=1".to_vec();
    let hook = |q: String| format!("{}/callbacks/nginx-rtmp?{q}", svc.base());
    let form = "application/x-www-form-urlencoded";
    assert_eq!(
        post(&hook(format!("domain={DOMAIN}")), form, publish.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        post(
            &hook(format!("token=0000&domain={DOMAIN}")),
            form,
            publish.clone()
        )
        .await
        .0,
        403
    );
    let (status, answer) = post(
        &hook(format!("token={other_token}&domain={DOMAIN}")),
        form,
        publish.clone(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["msg"]
            .as_str()
            .unwrap()
            .contains("belongs to another account"),
        "{answer}"
    );
    let (status, answer) = post(
        &hook(format!("token={my_token}&domain={DOMAIN}")),
        form,
        b"call=connect&app=live&name=x".to_vec(),
    )
    .await;
    assert_eq!(
        (status, answer["msg"].as_str()),
        (400, Some("unknown event: call=connect"))
    );
    let (status, answer) = post(
        &hook(format!("token={my_token}&domain={DOMAIN}")),
        form,
        b"call=publish&app=live&name=a/b".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = post(
        &format!("{}/callbacks/srs?token={my_token}", svc.base()),
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, 400);

    // Rotating the token retires the old one.
    let rotated = api.v1_ok("POST", "/v1/hooks/rotate", &[], None).await["HookToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rotated, my_token);
    assert_eq!(
        post(
            &hook(format!("token={my_token}&domain={DOMAIN}")),
            form,
            publish.clone()
        )
        .await
        .0,
        403
    );

    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        live_names(&api).await.is_empty(),
        "nothing refused was stored"
    );
    assert!(
        receiver.received().is_empty(),
        "nothing refused was forwarded: {:?}",
        receiver.received()
    );

    // Template and rule validation, in Tencent's codes.
    let (status, v) = api
        .v1(
            "POST",
            "/v1/callback-templates",
            &[],
            Some(json!({"TemplateName": "x", "StreamBeginNotifyUrl": receiver.url, "Foo": 1})),
        )
        .await;
    assert_eq!(
        (status, v["Response"]["Error"]["Code"].as_str()),
        (400, Some("UnknownParameter")),
        "{v}"
    );
    let (status, v) = api
        .v1(
            "POST",
            "/v1/callback-templates",
            &[],
            Some(json!({"TemplateName": "x", "StreamBeginNotifyUrl": "ftp://a.example.com/x"})),
        )
        .await;
    assert_eq!(
        (status, v["Response"]["Error"]["Code"].as_str()),
        (400, Some("InvalidParameterValue")),
        "{v}"
    );
    assert!(v["Response"]["Error"]["Message"]
        .as_str()
        .unwrap()
        .starts_with("StreamBeginNotifyUrl"));
    let (status, v) = api
        .v1(
            "POST",
            "/v1/callback-rules",
            &[],
            Some(json!({"DomainName": DOMAIN, "TemplateId": 1})),
        )
        .await;
    assert_eq!(
        (status, v["Response"]["Error"]["Code"].as_str()),
        (409, Some("ResourceInUse")),
        "one rule per domain+app: {v}"
    );
    let (status, v) = api
        .v1("DELETE", "/v1/callback-templates/1", &[], None)
        .await;
    assert_eq!(
        (status, v["Response"]["Error"]["Code"].as_str()),
        (409, Some("FailedOperation.ConfInUsed")),
        "{v}"
    );
    let (status, v) = svc
        .api_as(OTHER)
        .v1(
            "POST",
            "/v1/callback-rules",
            &[],
            Some(json!({"DomainName": "x.example.com", "TemplateId": 1})),
        )
        .await;
    assert_eq!(
        (status, v["Response"]["Error"]["Code"].as_str()),
        (404, Some("ResourceNotFound.TemplateNotFound")),
        "templates are per account: {v}"
    );
    let (status, v) = Api::new(&svc.base(), "bulk", "wrong-key-wrong-key")
        .v1("GET", "/v1/streams", &[], None)
        .await;
    assert_eq!(
        (status, v["Response"]["Error"]["Code"].as_str()),
        (403, Some("AuthFailure")),
        "{v}"
    );
}

#[tokio::test]
async fn failing_receivers_get_the_seed_schedule_then_every_event_in_order() {
    let svc = Service::start(&[
        ("RELAYCAST_TIMING__STREAM_CALLBACK_RETRY_INTERVAL_MS", "400"),
        ("RELAYCAST_TIMING__CALLBACK_TIMEOUT_MS", "800"),
    ]);
    let api = svc.api_as(BULK);
    let receiver = CallbackReceiver::start().await;
    bind(&api, DOMAIN, &receiver.url).await;
    receiver.fail_next(2);
    assert_eq!(
        post_css(&svc, &css_event(1, "cam2", "77", KEY)).await.0,
        200
    );
    assert_eq!(
        post_css(&svc, &css_event(0, "cam2", "77", KEY)).await.0,
        200
    );
    let attempts = |n: usize| {
        let receiver = &receiver;
        async move {
            eventually(
                &format!("{n} attempts"),
                Duration::from_secs(15),
                || async {
                    let got = receiver.received();
                    (got.len() >= n).then_some(got)
                },
            )
            .await
        }
    };
    attempts(2).await;
    receiver.close_next(1);
    attempts(3).await;
    receiver.stall(true);
    attempts(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver.stall(false);
    let got = eventually("both events delivered", Duration::from_secs(15), || async {
        let got = receiver.received();
        (got.iter().filter(|r| r.answered == 200).count() >= 2).then_some(got)
    })
    .await;
    // Attempt 1 and 2: 500; 3: connection closed; 4: no answer within the timeout; 5: 200.
    let push: Vec<&Received> = got.iter().filter(|r| r.body["event_type"] == 1).collect();
    assert_eq!(
        push.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![500, 500, 0, 0, 200],
        "{push:?}"
    );
    for pair in push.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(380),
            "attempts come one interval apart, got {gap:?}"
        );
    }
    let stops: Vec<&Received> = got.iter().filter(|r| r.body["event_type"] == 0).collect();
    assert_eq!(
        stops.len(),
        1,
        "the stop waited for its push and then went once"
    );
    assert!(stops[0].at >= push[4].at);
    let log = api
        .v1_ok(
            "GET",
            "/v1/callbacks/deliveries",
            &[("event_id", push[0].body["event_id"].as_str().unwrap())],
            None,
        )
        .await;
    let statuses: Vec<Value> = log["Deliveries"][0]["AttemptLog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["Status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!(500), json!(500), Value::Null, Value::Null, json!(200)],
        "{log}"
    );
    // A stalled attempt fails at the timeout (800 ms), and the next one starts an interval
    // (400 ms) after that. Read from the delivery log, whose times are the notifier's own: when
    // the machine is loaded a request can reach the receiver well after it was started.
    let attempts = log["Deliveries"][0]["AttemptLog"].as_array().unwrap();
    let stalled = &attempts[3];
    assert!(
        stalled["LatencyMs"].as_u64().unwrap() >= 800,
        "the stalled attempt ended before the timeout: {stalled}"
    );
    let stall_gap = attempts[4]["AtMs"].as_i64().unwrap() - stalled["AtMs"].as_i64().unwrap();
    assert!(
        stall_gap >= 800 + 380,
        "a stalled attempt counts after the timeout: the next started {stall_gap} ms later"
    );
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven() {
    let svc = Service::start(&[
        ("RELAYCAST_TIMING__STREAM_CALLBACK_RETRY_INTERVAL_MS", "200"),
        ("RELAYCAST_TIMING__STREAM_CALLBACK_RETRIES", "2"),
    ]);
    let api = svc.api_as(BULK);
    let receiver = CallbackReceiver::start().await;
    bind(&api, DOMAIN, &receiver.url).await;
    receiver.fail_next(1000);
    assert_eq!(post_css(&svc, &css_event(1, "cam3", "5", KEY)).await.0, 200);
    let dead = eventually("a dead letter", Duration::from_secs(15), || async {
        let v = api
            .v1_ok("GET", "/v1/callbacks/dead-letters", &[], None)
            .await;
        let list = v["DeadLetters"].as_array().unwrap().clone();
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0]["Attempts"].as_u64(), dead[0]["State"].as_str()),
        (Some(3), Some("failed")),
        "{dead:?}"
    );
    assert_eq!(dead[0]["LastError"], "endpoint answered HTTP 500");
    assert_eq!(
        receiver.received().len(),
        3,
        "the first attempt and two retries"
    );
    assert!(svc
        .api_as(OTHER)
        .v1_ok("GET", "/v1/callbacks/dead-letters", &[], None)
        .await["DeadLetters"]
        .as_array()
        .unwrap()
        .is_empty());

    receiver.fail_next(0);
    let id = dead[0]["Id"].as_str().unwrap();
    let path = format!(
        "/v1/callbacks/dead-letters/{}/redrive",
        id.replace('/', "%2F").replace(':', "%3A")
    );
    let (status, v) = svc.api_as(OTHER).v1("POST", &path, &[], None).await;
    assert_eq!(status, 404, "another account cannot redrive it: {v}");
    api.v1_ok("POST", &path, &[], None).await;
    eventually("the redriven delivery", Duration::from_secs(10), || async {
        receiver
            .received()
            .iter()
            .any(|r| r.answered == 200)
            .then_some(())
    })
    .await;
    eventually("the dead letter gone", Duration::from_secs(5), || async {
        let v = api
            .v1_ok("GET", "/v1/callbacks/dead-letters", &[], None)
            .await;
        v["DeadLetters"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    let (status, _) = api.v1("POST", &path, &[], None).await;
    assert_eq!(status, 409, "a delivered callback is not a dead letter");
}

#[tokio::test]
async fn a_stalled_receiver_does_not_delay_another() {
    let svc = Service::start(&[
        ("RELAYCAST_TIMING__CALLBACK_TIMEOUT_MS", "10000"),
        ("RELAYCAST_CALLBACKS__ENDPOINT_CONCURRENCY", "2"),
    ]);
    let api = svc.api_as(BULK);
    let (stalled, healthy) = (
        CallbackReceiver::start().await,
        CallbackReceiver::start().await,
    );
    stalled.stall(true);
    bind(&api, DOMAIN, &stalled.url).await;
    bind(&api, "fast.example.com", &healthy.url).await;
    for i in 0..20 {
        assert_eq!(
            post_css(&svc, &css_event(1, &format!("slow{i}"), "1", KEY))
                .await
                .0,
            200
        );
    }
    let start = Instant::now();
    for i in 0..10 {
        let mut e = css_event(1, &format!("fast{i}"), "1", KEY);
        e["app"] = json!("fast.example.com");
        assert_eq!(post_css(&svc, &e).await.0, 200);
    }
    eventually(
        "the healthy receiver's 10 callbacks",
        Duration::from_secs(5),
        || async { (healthy.received().len() >= 10).then_some(()) },
    )
    .await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "healthy deliveries took {took:?}"
    );
    assert!(
        stalled.received().len() <= 2,
        "the stalled endpoint holds at most its cap: {}",
        stalled.received().len()
    );
    stalled.stall(false);
}

#[tokio::test]
async fn kill_9_with_events_acknowledged_and_deliveries_pending_loses_nothing() {
    let mut svc = Service::start(&[("RELAYCAST_TIMING__STREAM_CALLBACK_RETRY_INTERVAL_MS", "300")]);
    let receiver = CallbackReceiver::start().await;
    bind(&svc.api_as(BULK), DOMAIN, &receiver.url).await;
    receiver.fail_next(1_000_000);
    for i in 0..20 {
        assert_eq!(
            post_css(&svc, &css_event(1, &format!("k{i}"), "9", KEY))
                .await
                .0,
            200
        );
    }
    eventually("some failed attempts", Duration::from_secs(10), || async {
        (receiver.received().len() >= 5).then_some(())
    })
    .await;
    svc.restart();
    receiver.fail_next(0);
    let delivered = eventually(
        "all 20 events delivered after the restart",
        Duration::from_secs(30),
        || async {
            let ok: std::collections::HashSet<String> = receiver
                .received()
                .iter()
                .filter(|r| r.answered == 200)
                .map(|r| r.body["stream_id"].as_str().unwrap().to_string())
                .collect();
            (ok.len() == 20).then_some(ok)
        },
    )
    .await;
    assert_eq!(delivered.len(), 20);
    assert_eq!(
        live_names(&svc.api_as(BULK)).await.len(),
        20,
        "the registry survived the crash"
    );
}

#[tokio::test]
async fn nginx_rtmp_hooks_keep_the_registry_and_forward_css_callbacks() {
    let _heavy = media::heavy(&[]).await;
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let receiver = CallbackReceiver::start().await;
    bind(&api, "ingest.test", &receiver.url).await;
    let hooks = api.v1_ok("GET", "/v1/hooks", &[], None).await;
    let hook_url = format!(
        "{}&domain=ingest.test",
        hooks["NginxRtmpUrl"].as_str().unwrap()
    );
    assert!(hooks["NginxRtmpConfig"]
        .as_str()
        .unwrap()
        .contains("on_publish_done"));
    let nginx = media::Nginx::start_with_hooks(&hook_url);

    let mut cam = Some(media::Publisher::start_sized(
        &nginx.hooked_url("cam1"),
        320,
        240,
    ));
    eventually("cam1 in /v1/streams", Duration::from_secs(20), || async {
        live_names(&api)
            .await
            .contains(&"cam1".to_string())
            .then_some(())
    })
    .await;
    let push = eventually("the push callback", Duration::from_secs(10), || async {
        of_type(&receiver, 1, "cam1").into_iter().next()
    })
    .await;
    assert_signed(&push, KEY);
    assert_eq!(
        (
            push.body["app"].as_str(),
            push.body["appname"].as_str(),
            push.body["user_ip"].as_str()
        ),
        (Some("ingest.test"), Some("hooked"), Some("127.0.0.1"))
    );
    assert_eq!(push.body["sequence"].as_str().unwrap().len(), 19);

    cam.take();
    eventually(
        "cam1 gone from /v1/streams",
        Duration::from_secs(20),
        || async { (!live_names(&api).await.contains(&"cam1".to_string())).then_some(()) },
    )
    .await;
    let stop = eventually("the stop callback", Duration::from_secs(10), || async {
        of_type(&receiver, 0, "cam1").into_iter().next()
    })
    .await;
    assert_signed(&stop, KEY);
    assert_eq!(
        stop.body["sequence"], push.body["sequence"],
        "start and stop share the session id"
    );
    assert!(
        stop.body["push_duration"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    let record = eventually("the record callback", Duration::from_secs(10), || async {
        of_type(&receiver, 100, "cam1").into_iter().next()
    })
    .await;
    assert_eq!(record.body["file_format"], "flv", "{}", record.raw);
    let sessions = api
        .v1_ok(
            "GET",
            "/v1/streams/ingest.test/hooked/cam1/sessions",
            &[],
            None,
        )
        .await;
    assert_eq!(
        sessions["Sessions"][0]["StopReason"], "publisher stopped",
        "{sessions}"
    );

    // Publish authorization on: a stream not on the allow-list is refused by nginx-rtmp itself.
    api.v1_ok(
        "PUT",
        "/v1/publish-auth/ingest.test",
        &[],
        Some(json!({ "AllowedStreams": ["cam1"] })),
    )
    .await;
    let mut intruder = media::Publisher::start_sized(&nginx.hooked_url("intruder"), 320, 240);
    let refused = eventually(
        "ffmpeg's publish of an unknown stream refused",
        Duration::from_secs(15),
        || {
            let running = intruder.is_running();
            async move { (!running).then_some(()) }
        },
    );
    refused.await;
    assert!(
        nginx.stream("intruder").is_none(),
        "nginx-rtmp does not carry it"
    );
    assert!(!live_names(&api).await.contains(&"intruder".to_string()));
    assert!(of_type(&receiver, 1, "intruder").is_empty());
    let _allowed = media::Publisher::start_sized(&nginx.hooked_url("cam1"), 320, 240);
    eventually("cam1 allowed again", Duration::from_secs(20), || async {
        live_names(&api)
            .await
            .contains(&"cam1".to_string())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn srs_hooks_answer_code_0_and_feed_the_same_registry_and_callbacks() {
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let receiver = CallbackReceiver::start().await;
    bind(&api, "srs.example.com", &receiver.url).await;
    let url = api.v1_ok("GET", "/v1/hooks", &[], None).await["SrsUrl"]
        .as_str()
        .unwrap()
        .to_string();
    // The payloads of SRS 5's http_hooks; the domain comes from the vhost.
    let hook = |action: &str, extra: Value| {
        let mut body = json!({
            "server_id": "vid-0xk989d", "service_id": "plw5u4a3", "action": action, "client_id": "341w361a",
            "ip": "10.1.2.3", "vhost": "srs.example.com", "app": "live", "tcUrl": "rtmp://srs.example.com/live",
            "stream": "livestream", "param": "?txSecret=x", "stream_url": "/live/livestream", "stream_id": "vid-124q9y3",
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for _ in 0..3 {
        let (status, answer) = post(
            &url,
            "application/json",
            hook("on_publish", json!({})).to_string().into_bytes(),
        )
        .await;
        assert_eq!(
            (status, answer),
            (200, json!({"code": 0})),
            "SRS wants code 0 to allow the publish"
        );
    }
    assert_eq!(live_names(&api).await, vec!["livestream".to_string()]);
    let push = eventually("the push callback", Duration::from_secs(10), || async {
        of_type(&receiver, 1, "livestream").into_iter().next()
    })
    .await;
    assert_signed(&push, KEY);
    assert_eq!(
        (
            push.body["user_ip"].as_str(),
            push.body["stream_param"].as_str()
        ),
        (Some("10.1.2.3"), Some("txSecret=x"))
    );
    let dvr = hook(
        "on_dvr",
        json!({"cwd": "/usr/local/srs", "file": "./objs/nginx/html/live/livestream.1681.flv"}),
    );
    assert_eq!(
        post(&url, "application/json", dvr.to_string().into_bytes())
            .await
            .0,
        200
    );
    assert_eq!(
        post(
            &url,
            "application/json",
            hook("on_unpublish", json!({})).to_string().into_bytes()
        )
        .await
        .0,
        200
    );
    assert!(live_names(&api).await.is_empty());
    eventually(
        "stop and record callbacks",
        Duration::from_secs(10),
        || async {
            (!of_type(&receiver, 0, "livestream").is_empty()
                && !of_type(&receiver, 100, "livestream").is_empty())
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        of_type(&receiver, 1, "livestream").len(),
        1,
        "three identical on_publish hooks are one push"
    );
}

#[tokio::test]
async fn every_css_event_kind_goes_to_its_own_url() {
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let (begin, snapshot, porn) = (
        CallbackReceiver::start().await,
        CallbackReceiver::start().await,
        CallbackReceiver::start().await,
    );
    let id = api
        .v1_ok(
            "POST",
            "/v1/callback-templates",
            &[],
            Some(json!({"TemplateName": "split", "StreamBeginNotifyUrl": begin.url, "SnapshotNotifyUrl": snapshot.url, "PornCensorshipNotifyUrl": porn.url, "CallbackKey": KEY})),
        )
        .await["TemplateId"]
        .as_u64()
        .unwrap();
    api.v1_ok(
        "POST",
        "/v1/callback-rules",
        &[],
        Some(json!({"DomainName": DOMAIN, "AppName": "live", "TemplateId": id})),
    )
    .await;
    let listed = api.v1_ok("GET", "/v1/callback-rules", &[], None).await;
    assert_eq!(listed["Rules"][0]["AppName"], "live");
    assert!(
        listed["Rules"][0]["CreateTime"]
            .as_str()
            .unwrap()
            .ends_with("+08:00"),
        "{listed}"
    );
    let t = now_s() + 600;
    let signed = |mut v: Value| {
        v["t"] = json!(t);
        v["sign"] = json!(css_sign(KEY, t));
        v
    };
    let snap = signed(
        json!({"event_type": 200, "app": DOMAIN, "appname": "live", "stream_id": "s1", "channel_id": "s1", "create_time": now_s(),
        "file_size": 1234, "width": 640, "height": 352, "pic_url": "/2018-12-17/s1-screenshot-19-06-59-640x352.jpg", "pic_full_url": "http://x.example.com/a.jpg"}),
    );
    let flagged = signed(
        json!({"event_type": 317, "app": DOMAIN, "appname": "live", "streamId": "s1", "channelId": "s1", "img": "http://x.example.com/i.jpg",
        "type": [1], "confidence": 91, "normalScore": 2, "hotScore": 7, "pornScore": 91, "screenshotTime": now_s(), "sendTime": now_s()}),
    );
    let exception = signed(
        json!({"event_type": 321, "domain": DOMAIN, "path": "live", "stream_id": "s1", "appid": 1, "data_time": now_ms(),
        "report_interval": 60000, "abnormal_event": [{"type": 3, "count": 2, "detail": [], "type_desc_en": "Video timestamp jump"}]}),
    );
    for event in [&snap, &flagged, &exception, &snap] {
        assert_eq!(post_css(&svc, event).await, (200, json!({"code": 0})));
    }
    let s = eventually("the snapshot callback", Duration::from_secs(10), || async {
        snapshot.received().into_iter().next()
    })
    .await;
    assert_eq!(
        (s.body["event_type"].as_i64(), s.body["pic_url"].as_str()),
        (Some(200), snap["pic_url"].as_str())
    );
    assert_signed(&s, KEY);
    let p = eventually(
        "the porn detection callback",
        Duration::from_secs(10),
        || async { porn.received().into_iter().next() },
    )
    .await;
    assert_eq!(
        (p.body["event_type"].as_i64(), p.body["pornScore"].as_i64()),
        (Some(317), Some(91)),
        "stored and forwarded as is"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        snapshot.received().len(),
        1,
        "the repeated snapshot is one event"
    );
    assert!(
        begin.received().is_empty(),
        "no push happened; the exception has no URL in this template"
    );
}

/// A push whose automatic recording was not started when it was stored (here: its domain was
/// bound only afterwards, as after a crash between storing the push and starting the
/// recording) gets its recording from the sender's retry of the same push, and only one.
#[tokio::test]
async fn a_retried_push_starts_the_recording_its_first_delivery_missed() {
    let svc = Service::start(FAST_TIMING);
    let api = svc.api();
    bind(&api, DOMAIN, "http://127.0.0.1:9/unused").await;
    let push = css_event(1, "late1", "5550001", KEY);
    assert_eq!(post_css(&svc, &push).await.0, 200);
    let recordings = || async {
        api.v1_ok("GET", "/v1/recordings", &[], None).await["Recordings"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(recordings().await.is_empty(), "nothing is bound yet");

    api.v1_ok("POST", "/v1/domains", &[], Some(json!({ "DomainName": DOMAIN, "PullUrlTemplate": "rtmp://origin.example/{app}/{stream}" }))).await;
    let template = api
        .v1_ok(
            "POST",
            "/v1/record-templates",
            &[],
            Some(json!({ "TemplateName": "late", "FlvParam": { "Enable": 1 } })),
        )
        .await["TemplateId"]
        .as_u64()
        .unwrap();
    api.v1_ok(
        "POST",
        "/v1/record-rules",
        &[],
        Some(json!({ "DomainName": DOMAIN, "TemplateId": template })),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            post_css(&svc, &push).await.0,
            200,
            "a repeat is acknowledged"
        );
    }
    let listed = recordings().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0]["StreamName"].as_str(), listed[0]["Mode"].as_str()),
        (Some("late1"), Some("auto"))
    );
    let streams = live_names(&api).await;
    assert_eq!(
        streams.iter().filter(|s| *s == "late1").count(),
        1,
        "the push is stored once: {streams:?}"
    );
}
