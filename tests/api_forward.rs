//! `forwardRequest.action` end to end, as a customer sees it: a real `relaycast up` (API,
//! notifier, scheduler; no relay worker, so no media), signed requests over HTTP, and a real
//! callback endpoint. Seed 001: every row of the error table, bad input, every `cmd`, callbacks
//! and the 48 h resume rule.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A callback URL nobody listens on: for requests that must be refused before storing anything.
const NOWHERE: &str = "http://127.0.0.1:9/cb";

const DEST_A: &str = "rtmp://127.0.0.1:1935/live/a";
const DEST_B: &str = "rtmp://127.0.0.1:1935/live/b";
const DEST_C: &str = "rtmp://127.0.0.1:1935/live/c";

/// `base` with `f` applied.
fn with(base: &Value, f: impl FnOnce(&mut Value)) -> Value {
    let mut v = base.clone();
    f(&mut v);
    v
}

fn remove(v: &mut Value, key: &str) {
    v.as_object_mut().unwrap().remove(key);
}

/// The callback body of seed 001, field for field: `id`, `srcurl` and `forwardurl` as strings
/// (`srcurl` a JSON array in a string), `cmd`, `code`, `msg` strings, `event_time` 13-digit ms.
fn assert_callback_shape(cb: &Value) {
    let obj = cb
        .as_object()
        .unwrap_or_else(|| panic!("callback is not an object: {cb}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cmd",
            "code",
            "event_time",
            "forwardurl",
            "id",
            "msg",
            "srcurl"
        ],
        "{cb}"
    );
    for k in ["id", "srcurl", "forwardurl", "cmd", "code", "msg"] {
        assert!(cb[k].is_string(), "{k} is not a string: {cb}");
    }
    assert_ms(&cb["event_time"]);
    let src = cb["srcurl"].as_str().unwrap();
    if !src.is_empty() {
        let parsed: Value =
            serde_json::from_str(src).unwrap_or_else(|e| panic!("srcurl is not JSON ({e}): {cb}"));
        assert!(
            parsed
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s["url"].is_string())),
            "{cb}"
        );
    }
}

fn code_msg_cmd(cb: &Value) -> (&str, &str, &str) {
    (
        cb["code"].as_str().unwrap_or("?"),
        cb["msg"].as_str().unwrap_or("?"),
        cb["cmd"].as_str().unwrap_or("?"),
    )
}

/// Builds a `src` array whose compact JSON is exactly `chars` characters.
fn src_of_exactly(chars: usize) -> Value {
    let n = 60;
    let empty: Vec<Value> = (0..n)
        .map(|i| json!({"url": format!("http://127.0.0.1/{i:02}/")}))
        .collect();
    let mut left = chars - Value::Array(empty).to_string().chars().count();
    let list: Vec<Value> = (0..n)
        .map(|i| {
            let pad = left.min(4000);
            left -= pad;
            json!({"url": format!("http://127.0.0.1/{i:02}/{}", "a".repeat(pad))})
        })
        .collect();
    assert_eq!(left, 0);
    let v = Value::Array(list);
    assert_eq!(v.to_string().chars().count(), chars);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_400_row_of_the_seed_error_table() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let base = future_seed_body(NOWHERE);
    let now = now_ms();
    let start: i64 = base["list"][0]["start"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("start");
    let item = |f: &dyn Fn(&mut Value)| with(&base, |v| f(&mut v["list"][0]));
    let src0 = |f: &dyn Fn(&mut Value)| with(&base, |v| f(&mut v["list"][0]["src"][0]));
    let header = |value: &str| {
        src0(&|s| s["pullStreamHeaders"] = json!([{"headerKey": "X-Test", "headerValue": value}]))
    };
    let video = |relofftime: &str| {
        with(&base, |v| {
            v["type"] = json!("video");
            v["list"][0]["src"][1]["relofftime"] = json!(relofftime);
        })
    };
    let many: Vec<Value> = (0..801)
        .map(|i| json!({"url": format!("http://127.0.0.1/s/{i}.flv")}))
        .collect();

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "cmd 4",
            with(&base, |v| v["cmd"] = json!("4")),
            "cmd가 잘못되었습니다",
        ),
        (
            "cmd empty",
            with(&base, |v| v["cmd"] = json!("")),
            "cmd가 잘못되었습니다",
        ),
        (
            "cmd missing",
            with(&base, |v| remove(v, "cmd")),
            "cmd가 잘못되었습니다",
        ),
        (
            "type audio",
            with(&base, |v| v["type"] = json!("audio")),
            "type이 잘못되었습니다",
        ),
        (
            "type upper-case",
            with(&base, |v| v["type"] = json!("LIVE")),
            "type이 잘못되었습니다",
        ),
        (
            "type missing",
            with(&base, |v| remove(v, "type")),
            "type이 잘못되었습니다",
        ),
        (
            "list empty",
            with(&base, |v| v["list"] = json!([])),
            "list가 비어 있습니다",
        ),
        (
            "list null",
            with(&base, |v| v["list"] = Value::Null),
            "list가 비어 있습니다",
        ),
        (
            "list missing",
            with(&base, |v| remove(v, "list")),
            "list가 비어 있습니다",
        ),
        (
            "id empty",
            item(&|i| i["id"] = json!("")),
            "params id가 비어 있습니다",
        ),
        (
            "id missing",
            item(&|i| remove(i, "id")),
            "params id가 비어 있습니다",
        ),
        (
            "src empty",
            item(&|i| i["src"] = json!([])),
            "params src list가 비어 있습니다",
        ),
        (
            "src missing",
            item(&|i| remove(i, "src")),
            "params src list가 비어 있습니다",
        ),
        (
            "801 sources",
            item(&|i| i["src"] = json!(many)),
            "params src num이 너무 많습니다",
        ),
        (
            "src 204,801 characters",
            item(&|i| i["src"] = src_of_exactly(204_801)),
            "params src length is too long",
        ),
        (
            "src without url",
            src0(&|s| remove(s, "url")),
            "params src is error",
        ),
        (
            "src with an empty url",
            src0(&|s| s["url"] = json!("")),
            "params src is error",
        ),
        (
            "live relofftime 30-60",
            src0(&|s| s["relofftime"] = json!("30-60")),
            "params relofftime is error",
        ),
        (
            "live relofftime 0-0",
            src0(&|s| s["relofftime"] = json!("0-0")),
            "params relofftime is error",
        ),
        (
            "live relofftime 60",
            src0(&|s| s["relofftime"] = json!("60")),
            "params relofftime is error",
        ),
        (
            "video relofftime 60-30",
            video("60-30"),
            "params relofftime is error",
        ),
        (
            "video relofftime a-b",
            video("a-b"),
            "params relofftime is error",
        ),
        (
            "forward empty",
            item(&|i| i["forward"] = json!([])),
            "params forward list is null",
        ),
        (
            "forward missing",
            item(&|i| remove(i, "forward")),
            "params forward list is null",
        ),
        (
            "forward without url",
            item(&|i| i["forward"][1] = json!({})),
            "params forward is error",
        ),
        (
            "forward with an empty url",
            item(&|i| i["forward"][1] = json!({"url": ""})),
            "params forward is error",
        ),
        (
            "forward over http",
            item(&|i| i["forward"][1] = json!({"url": "http://127.0.0.1:1935/live/x"})),
            "params forward is error",
        ),
        (
            "forward over srt",
            item(&|i| i["forward"][1] = json!({"url": "srt://127.0.0.1:9000"})),
            "params forward is error",
        ),
        (
            "start 12 digits",
            item(&|i| i["start"] = json!((now / 10).to_string())),
            "params start format is error",
        ),
        (
            "start 14 digits",
            item(&|i| i["start"] = json!((now * 10).to_string())),
            "params start format is error",
        ),
        (
            "start not digits",
            item(&|i| i["start"] = json!("17000000000O0")),
            "params start format is error",
        ),
        (
            "end 12 digits",
            item(&|i| i["end"] = json!((now / 10).to_string())),
            "params end format is error",
        ),
        (
            "end 14 digits",
            item(&|i| i["end"] = json!((now * 10).to_string())),
            "params end format is error",
        ),
        (
            "the seed's own example: end in 2017",
            seed_body(NOWHERE),
            "params end plan is error!",
        ),
        (
            "end a second ago, no start",
            item(&|i| {
                remove(i, "start");
                i["end"] = json!((now - 1000).to_string());
            }),
            "params end plan is error!",
        ),
        // From the body's own start: `now` above may be a millisecond later than it.
        (
            "end - start = 5 min - 1 ms",
            item(&|i| i["end"] = json!((start + 299_999).to_string())),
            "params start and end interval Too Brief!",
        ),
        (
            "end before start",
            item(&|i| i["end"] = json!((start - 1_800_000).to_string())),
            "params start and end interval Too Brief!",
        ),
        (
            "no start, end in 4 min",
            item(&|i| {
                remove(i, "start");
                i["end"] = json!((now + 240_000).to_string());
            }),
            "params start and end interval Too Brief!",
        ),
        (
            "transcoding without vcodec",
            item(&|i| {
                remove(&mut i["src"][0], "wmImage");
                remove(&mut i["fops"], "vcodec");
            }),
            "params vcodec format is error",
        ),
        (
            "watermark with libx265",
            item(&|i| i["fops"]["vcodec"] = json!("libx265")),
            "params vcodec format is error",
        ),
        (
            "watermark without fops",
            item(&|i| remove(i, "fops")),
            "params vcodec format is error",
        ),
        (
            "wmGravity and wmPosition",
            src0(&|s| s["wmPosition"] = json!("30%x40%")),
            "params wmPosition format is error",
        ),
        (
            "pullStreamHeaders over 2 KB",
            header(&"v".repeat(2100)),
            "params pullStreamHeaders format is error",
        ),
        (
            "pullStreamHeaders with '",
            header("a'b"),
            "params pullStreamHeaders format is error",
        ),
        (
            "pullStreamHeaders with \"",
            header("a\"b"),
            "params pullStreamHeaders format is error",
        ),
        (
            "pullStreamHeaders with ;;",
            header("a;;b"),
            "params pullStreamHeaders format is error",
        ),
        (
            "pullStreamHeaders with ,",
            header("a,b"),
            "params pullStreamHeaders format is error",
        ),
        (
            "pullStreamHeaders with a newline",
            header("a\nb"),
            "params pullStreamHeaders format is error",
        ),
        (
            "res with upper-case X",
            item(&|i| i["fops"]["res"] = json!("1280X720")),
            "params res format is error",
        ),
    ];
    for (what, body, msg) in &cases {
        let (status, answer) = api.forward(body).await;
        assert_eq!(answer["msg"], *msg, "{what}: {answer}");
        assert_refused(status, &answer, 400, "1001", msg);
        let call_time = answer["call_time"].as_i64().unwrap();
        assert!(
            (call_time - now_ms()).abs() < 60_000,
            "{what}: call_time {call_time}"
        );
    }
    // Nothing of it was stored.
    assert_eq!(api.task("task_unique_id_001").await, None);
    let (_, page) = api.query(&[("forward", "127.0.0.1")]).await;
    assert_eq!(page["total"], 0, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_of_the_error_table_are_inclusive() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let now = now_ms();
    let one = |id: &str, f: &dyn Fn(&mut Value)| {
        let mut v = live_body(id, &[&format!("rtmp://127.0.0.1:1935/live/{id}")], None);
        f(&mut v["list"][0]);
        v
    };
    let exactly_800: Vec<Value> = (0..800)
        .map(|i| json!({"url": format!("http://127.0.0.1/s/{i}.flv")}))
        .collect();
    // The header array's JSON is exactly 2,048 bytes.
    let pad = 2048
        - json!([{"headerKey": "X-Pad", "headerValue": ""}])
            .to_string()
            .len();
    let accepted = [
        ("src800", one("src800", &|i| i["src"] = json!(exactly_800))),
        (
            "chars204800",
            one("chars204800", &|i| i["src"] = src_of_exactly(204_800)),
        ),
        (
            "live0to60",
            one("live0to60", &|i| i["src"][0]["relofftime"] = json!("0-60")),
        ),
        (
            "five_min",
            one("five_min", &|i| {
                i["start"] = json!((now + 60_000).to_string());
                i["end"] = json!((now + 60_000 + 300_000).to_string());
            }),
        ),
        (
            "hdr2048",
            one(
                "hdr2048",
                &|i| {
                    i["src"][0]["pullStreamHeaders"] =
                        json!([{"headerKey": "X-Pad", "headerValue": "v".repeat(pad)}])
                },
            ),
        ),
        (
            "hdr_seed",
            one("hdr_seed", &|i| {
                i["src"][0]["pullStreamHeaders"] = json!([{"headerKey": "User-Agent", "headerValue": "MyCustomPlayer/1.0"}, {"headerKey": "Referer", "headerValue": "http://example.com"}]);
            }),
        ),
        (
            "res_lower",
            one("res_lower", &|i| {
                i["fops"] = json!({"res": "1280x720", "vcodec": "libx264"})
            }),
        ),
        (
            "position_only",
            one("position_only", &|i| {
                i["src"][0]["wmImage"] = json!("http://127.0.0.1/logo.png");
                i["src"][0]["wmPosition"] = json!("30%x40%");
                i["fops"] = json!({"vcodec": "libx264"});
            }),
        ),
    ];
    for (id, body) in &accepted {
        let (status, answer) = api.forward(body).await;
        assert_accepted(status, &answer);
        assert!(api.task(id).await.is_some(), "{id} not stored");
    }
    let video = json!({"cmd": "1", "type": "video", "list": [{
        "id": "vod30to60",
        "src": [{"url": "http://127.0.0.1/a.mp4", "relofftime": "30-60"}],
        "forward": [{"url": "rtmp://127.0.0.1:1935/live/vod"}]
    }]});
    let (status, answer) = api.forward(&video).await;
    assert_accepted(status, &answer);
    assert_eq!(api.task("vod30to60").await.unwrap()["type"], "video");
    // One more byte of header is over the limit.
    let over =
        one(
            "hdr2049",
            &|i| {
                i["src"][0]["pullStreamHeaders"] =
                    json!([{"headerKey": "X-Pad", "headerValue": "v".repeat(pad + 1)}])
            },
        );
    let (status, answer) = api.forward(&over).await;
    assert_refused(
        status,
        &answer,
        400,
        "1001",
        "params pullStreamHeaders format is error",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_403_row_of_the_seed_error_table() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let body = serde_json::to_vec(&live_body("authtask", &[DEST_A], None)).unwrap();
    let pairs = |n: Option<&str>, r: Option<&str>, k: Option<&str>| -> Vec<(String, String)> {
        [("n", n), ("r", r), ("k", k)]
            .into_iter()
            .filter_map(|(name, v)| v.map(|v| (name.to_string(), v.to_string())))
            .collect()
    };
    let r = Api::fresh_r();
    let k = api.sign(&r);
    let (n, r, k) = (Some(ACME.0), Some(r.as_str()), Some(k.as_str()));
    let long_r = "r".repeat(33);
    let missing = "apiName, n, r, k not exist or empty";
    let lengths = "random.length gt 32 or key.length ne 32";
    type Case<'a> = (&'a str, Vec<(String, String)>, &'a str);
    let cases: Vec<Case> = vec![
        ("no n, r, k", vec![], missing),
        ("no n", pairs(None, r, k), missing),
        ("no r", pairs(n, None, k), missing),
        ("no k", pairs(n, r, None), missing),
        ("empty n", pairs(Some(""), r, k), missing),
        ("empty r", pairs(n, Some(""), k), missing),
        ("empty k", pairs(n, r, Some("")), missing),
        (
            "r of 33",
            pairs(n, Some(&long_r), Some(&api.sign(&long_r))),
            lengths,
        ),
        ("k of 31", pairs(n, r, Some(&k.unwrap()[..31])), lengths),
        (
            "k of 33",
            pairs(n, r, Some(&format!("{}0", k.unwrap()))),
            lengths,
        ),
        (
            "unknown account",
            pairs(Some("nobody"), r, k),
            "you do not have right to access this api",
        ),
        (
            "wrong k",
            pairs(n, r, Some("b9fed80be752551834eec3e52fa94115")),
            "k is error",
        ),
        (
            "k of another key",
            pairs(n, r, Some(&svc.api_as(OTHER).sign(r.unwrap()))),
            "k is error",
        ),
    ];
    for (what, q, msg) in &cases {
        let (status, answer) = api.forward_signed_as(q, body.clone()).await;
        assert_eq!(answer["msg"], *msg, "forward, {what}: {answer}");
        assert_refused(status, &answer, 403, "1002", msg);
        let mut q = q.clone();
        q.push(("id".into(), "authtask".into()));
        let (status, answer) = api.query_signed_as(&q).await;
        assert_eq!(answer["msg"], *msg, "query, {what}: {answer}");
        assert_refused(status, &answer, 403, "1002", msg);
    }

    // A disabled account, correctly signed.
    let disabled = svc.api_as(DISABLED);
    let (status, answer) = disabled
        .forward(&live_body("authtask", &[DEST_A], None))
        .await;
    assert_refused(
        status,
        &answer,
        403,
        "1002",
        "you do not have right to access this api",
    );
    let (status, answer) = disabled.query(&[("id", "authtask")]).await;
    assert_refused(
        status,
        &answer,
        403,
        "1002",
        "you do not have right to access this api",
    );

    // An r of exactly 32 characters is fine; used again, it is a replay.
    let r32 = format!("{:0>32}", Api::fresh_r());
    let signed = pairs(n, Some(&r32), Some(&api.sign(&r32)));
    let (status, answer) = api.forward_signed_as(&signed, body.clone()).await;
    assert_accepted(status, &answer);
    let (status, answer) = api.forward_signed_as(&signed, body.clone()).await;
    assert_refused(status, &answer, 403, "1002", "random is repeat");
    let mut replayed_query = signed.clone();
    replayed_query.push(("id".into(), "authtask".into()));
    let (status, answer) = api.query_signed_as(&replayed_query).await;
    assert_refused(status, &answer, 403, "1002", "random is repeat");

    // Three calls per window, then refused, whatever the endpoint.
    let limited = svc.api_as(LIMITED);
    for _ in 0..3 {
        let (status, answer) = limited.query(&[("id", "x")]).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = limited.query(&[("id", "x")]).await;
    assert_refused(
        status,
        &answer,
        403,
        "1002",
        "frequency is great than limitCount",
    );
    let (status, answer) = limited
        .forward(&live_body("limited1", &[DEST_B], None))
        .await;
    assert_refused(
        status,
        &answer,
        403,
        "1002",
        "frequency is great than limitCount",
    );

    // An account restricted to 127.0.0.1 pushing elsewhere.
    let restricted = svc.api_as(RESTRICTED);
    let elsewhere = live_body(
        "elsewhere",
        &[DEST_C, "rtmp://push.example.com/live/x"],
        None,
    );
    let (status, answer) = restricted.forward(&elsewhere).await;
    assert_refused(status, &answer, 403, "1002", "user and host not relation");
    assert_eq!(restricted.task("elsewhere").await, None);
    let (status, answer) = restricted
        .forward(&live_body("home", &[DEST_C], None))
        .await;
    assert_accepted(status, &answer);
    // Nor may a resume move a destination there.
    let stop = cmd_body("2", "home", json!({}), None);
    assert_accepted_pair(restricted.forward(&stop).await);
    let resume = cmd_body(
        "5",
        "home",
        json!({"forward": [{"url": DEST_C, "resetUrl": "rtmp://push.example.com/live/x"}]}),
        None,
    );
    let (status, answer) = restricted.forward(&resume).await;
    assert_refused(status, &answer, 403, "1002", "user and host not relation");
    assert_eq!(restricted.task("home").await.unwrap()["forward"], DEST_C);

    // Only the correctly signed request of ACME created anything, and only for ACME.
    assert!(api.task("authtask").await.is_some());
    assert_eq!(svc.api_as(OTHER).task("authtask").await, None);
}

fn assert_accepted_pair((status, body): (u16, Value)) {
    assert_accepted(status, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_naming_the_field_and_stores_nothing() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let base = live_body("badinput", &[DEST_A], Some(NOWHERE));
    let item = |f: &dyn Fn(&mut Value)| {
        serde_json::to_vec(&with(&base, |v| f(&mut v["list"][0]))).unwrap()
    };
    let top = |f: &dyn Fn(&mut Value)| serde_json::to_vec(&with(&base, f)).unwrap();
    let valid = serde_json::to_vec(&base).unwrap();
    let mut non_utf8 = valid.clone();
    let at = non_utf8
        .windows(9)
        .position(|w| w == b"badinput\"")
        .unwrap();
    non_utf8[at + 3] = 0xff;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty body", vec![], "params body format is error"),
        (
            "malformed JSON",
            b"{\"cmd\": \"1\", \"type\": \"live\", \"list\": [".to_vec(),
            "params body format is error",
        ),
        (
            "trailing garbage",
            [valid.as_slice(), b"}"].concat(),
            "params body format is error",
        ),
        (
            "a JSON array",
            b"[]".to_vec(),
            "params body format is error",
        ),
        ("non-UTF-8 bytes", non_utf8, "params body format is error"),
        (
            "cmd as a number",
            top(&|v| v["cmd"] = json!(1)),
            "cmd가 잘못되었습니다",
        ),
        (
            "type as a number",
            top(&|v| v["type"] = json!(1)),
            "type이 잘못되었습니다",
        ),
        (
            "list as a string",
            top(&|v| v["list"] = json!("x")),
            "params list format is error",
        ),
        (
            "list item as a string",
            top(&|v| v["list"] = json!(["x"])),
            "params list format is error",
        ),
        (
            "transcallbackurl as a bool",
            top(&|v| v["transcallbackurl"] = json!(true)),
            "params transcallbackurl format is error",
        ),
        (
            "transcallbackurl not a URL",
            top(&|v| v["transcallbackurl"] = json!("callback")),
            "params transcallbackurl format is error",
        ),
        (
            "id as a number",
            item(&|i| i["id"] = json!(7)),
            "params id format is error",
        ),
        (
            "id of 33 characters",
            item(&|i| i["id"] = json!("a".repeat(33))),
            "params id format is error",
        ),
        (
            "start as a number",
            item(&|i| i["start"] = json!(now_ms() + 3_600_000)),
            "params start format is error",
        ),
        (
            "end as a number",
            item(&|i| i["end"] = json!(now_ms() + 3_600_000)),
            "params end format is error",
        ),
        (
            "src as a string",
            item(&|i| i["src"] = json!("rtmp://127.0.0.1:1/live/x")),
            "params src format is error",
        ),
        (
            "src url as a number",
            item(&|i| i["src"][0]["url"] = json!(5)),
            "params src is error",
        ),
        (
            "forward as an object",
            item(&|i| i["forward"] = json!({"url": DEST_A})),
            "params forward format is error",
        ),
        (
            "fops as a string",
            item(&|i| i["fops"] = json!("libx264")),
            "params fops format is error",
        ),
        (
            "fops.bps as a number",
            item(&|i| i["fops"] = json!({"bps": 1200000, "vcodec": "libx264"})),
            "params bps format is error",
        ),
        (
            "extendParam as an array",
            item(&|i| i["extendParam"] = json!([])),
            "params extendParam format is error",
        ),
        (
            "waitCrtUrlFinish as a number",
            item(&|i| i["extendParam"] = json!({"waitCrtUrlFinish": 1})),
            "params waitCrtUrlFinish format is error",
        ),
        (
            "relofftime as a number",
            item(&|i| i["src"][0]["relofftime"] = json!(60)),
            "params relofftime is error",
        ),
        (
            "pullStreamHeaders as an object",
            item(&|i| {
                i["src"][0]["pullStreamHeaders"] = json!({"headerKey": "A", "headerValue": "b"})
            }),
            "params pullStreamHeaders format is error",
        ),
        (
            "unknown top-level field",
            top(&|v| v["priority"] = json!("high")),
            "params priority format is error",
        ),
        (
            "unknown list field",
            item(&|i| i["ttl"] = json!("5")),
            "params ttl format is error",
        ),
        (
            "unknown src field",
            item(&|i| i["src"][0]["wmgravity"] = json!("TOP_LEFT")),
            "params wmgravity format is error",
        ),
        (
            "unknown forward field",
            item(&|i| i["forward"][0]["key"] = json!("x")),
            "params key format is error",
        ),
        (
            "unknown fops field",
            item(&|i| i["fops"] = json!({"fps ": "25"})),
            "params fps  format is error",
        ),
        (
            "unknown extendParam field",
            item(&|i| i["extendParam"] = json!({"loops": "2"})),
            "params loops format is error",
        ),
    ];
    for (what, body, msg) in cases {
        let (status, answer) = api.forward_bytes(body).await;
        assert_ne!(status, 500, "{what}: {answer}");
        assert_eq!(answer["msg"], msg, "{what}: {answer}");
        assert_refused(status, &answer, 400, "1001", msg);
    }
    assert_eq!(api.task("badinput").await, None);
    // The same body, well-formed, is accepted.
    assert_accepted_pair(api.forward_bytes(valid).await);
    assert!(api.task("badinput").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_answers_the_seed_success_body_and_the_query_shows_the_task() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let body = future_seed_body(NOWHERE);
    let before = now_ms();
    let (status, answer) = api.forward(&body).await;
    let after = now_ms();
    assert_accepted(status, &answer);
    let call_time = answer["call_time"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&call_time),
        "{call_time} not in {before}..={after}"
    );

    let task = api
        .task("task_unique_id_001")
        .await
        .expect("the task is stored");
    assert_eq!(task["id"], "task_unique_id_001");
    assert_eq!(task["type"], "live");
    let src: Value = serde_json::from_str(task["src"].as_str().unwrap()).unwrap();
    assert_eq!(
        src, body["list"][0]["src"],
        "src echoes the request's sources"
    );
    let forward: Value = serde_json::from_str(task["forward"].as_str().unwrap()).unwrap();
    assert_eq!(
        forward, body["list"][0]["forward"],
        "two destinations are rendered as a JSON list"
    );
    assert_eq!(
        (
            task["cmd"].as_str(),
            task["startTime"].as_str(),
            task["endTime"].as_str()
        ),
        (Some("1"), Some(""), Some(""))
    );

    // A second, immediate task with one destination.
    assert_accepted_pair(api.forward(&live_body("now1", &[DEST_A], None)).await);
    let task = api.task("now1").await.unwrap();
    assert_eq!(
        task["forward"], DEST_A,
        "one destination is rendered as a plain URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_an_id_stops_the_old_task_first() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("again", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert!(
        rx.bodies_for("again").is_empty(),
        "creating is not a callback"
    );

    assert_accepted_pair(
        api.forward(&live_body(
            "again",
            &[DEST_B],
            Some(&format!("{}?token=a%2Fb&x=1", rx.url)),
        ))
        .await,
    );
    let cbs = rx.wait_for("again", 1).await;
    // POSTed as JSON to the old task's callback URL, exactly.
    let delivery = rx
        .received()
        .into_iter()
        .find(|r| r.body["id"] == "again")
        .unwrap();
    assert_eq!(
        (delivery.uri.as_str(), delivery.content_type.as_str()),
        ("/cb", "application/json")
    );
    // Signed with the account's key; the event id stays the same on every attempt.
    assert_relaycast_signature(&delivery, ACME.1);
    assert_callback_shape(&cbs[0]);
    assert_eq!(code_msg_cmd(&cbs[0]), ("1", "푸시 스트림 성공", "1"));
    assert_eq!(
        cbs[0]["forwardurl"], DEST_A,
        "the callback is about the old task"
    );
    let task = api.task("again").await.unwrap();
    assert_eq!(
        (task["forward"].as_str(), task["cmd"].as_str()),
        (Some(DEST_B), Some("1"))
    );
    // The new task's callbacks go to its own URL, query string and all.
    assert_accepted_pair(api.forward(&cmd_body("2", "again", json!({}), None)).await);
    rx.wait_for("again", 2).await;
    let delivery = rx
        .attempts_for("again")
        .into_iter()
        .find(|r| r.body["cmd"] == "2")
        .unwrap();
    assert_eq!(delivery.uri, "/cb?token=a%2Fb&x=1");
    assert_eq!(code_msg_cmd(&delivery.body), ("1", "푸시 스트림 성공", "2"));
    assert_eq!(delivery.body["forwardurl"], DEST_B);
    assert_accepted_pair(
        api.forward(&live_body("again", &[DEST_B], Some(&rx.url)))
            .await,
    );
    // The old destination is free again, the new one taken.
    assert_accepted_pair(
        api.forward(&live_body("other", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert!(api.task("other").await.is_some());
    assert_accepted_pair(
        api.forward(&live_body("third", &[DEST_B], Some(&rx.url)))
            .await,
    );
    let cbs = rx.wait_for("third", 1).await;
    assert_eq!(
        code_msg_cmd(&cbs[0]),
        ("91", "task repeat,task not start!", "1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_in_use_by_another_active_task_is_refused_with_91() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("first", &[DEST_A], Some(&rx.url)))
            .await,
    );
    // The seed answers 200 and reports the refusal through the callback.
    assert_accepted_pair(
        api.forward(&live_body("second", &[DEST_C, DEST_A], Some(&rx.url)))
            .await,
    );
    let cbs = rx.wait_for("second", 1).await;
    assert_callback_shape(&cbs[0]);
    assert_eq!(
        code_msg_cmd(&cbs[0]),
        ("91", "task repeat,task not start!", "1")
    );
    assert_eq!(
        api.task("second").await,
        None,
        "the refused task is not stored"
    );
    assert_eq!(api.task("first").await.unwrap()["forward"], DEST_A);
    assert!(rx.bodies_for("first").is_empty());

    // Once the first is stopped, its destination may be used.
    assert_accepted_pair(api.forward(&cmd_body("2", "first", json!({}), None)).await);
    assert_accepted_pair(
        api.forward(&live_body("second", &[DEST_C, DEST_A], Some(&rx.url)))
            .await,
    );
    assert!(api.task("second").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_a_subset_of_destinations_then_all() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("multi", &[DEST_A, DEST_B], Some(&rx.url)))
            .await,
    );

    let stop_a = cmd_body("2", "multi", json!({"forward": [{"url": DEST_A}]}), None);
    assert_accepted_pair(api.forward(&stop_a).await);
    let cbs = rx.wait_for("multi", 1).await;
    assert_callback_shape(&cbs[0]);
    assert_eq!(code_msg_cmd(&cbs[0]), ("1", "푸시 스트림 성공", "2"));
    assert_eq!(cbs[0]["forwardurl"], DEST_A);
    let task = api.task("multi").await.unwrap();
    assert_eq!(
        task["forward"], DEST_B,
        "the query shows the destination still pushed to"
    );
    assert_eq!(task["endTime"], "", "the task goes on");
    // The stopped destination is free for another task; the other one is not.
    assert_accepted_pair(
        api.forward(&live_body("takes_a", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert!(api.task("takes_a").await.is_some());

    // A destination the task does not have: "task not exists", nothing changes.
    assert_accepted_pair(
        api.forward(&cmd_body(
            "2",
            "multi",
            json!({"forward": [{"url": DEST_C}]}),
            None,
        ))
        .await,
    );
    let cbs = rx.wait_for("multi", 2).await;
    assert_eq!(code_msg_cmd(&cbs[1]), ("90", "task not exists", "2"));
    assert_eq!(api.task("multi").await.unwrap()["forward"], DEST_B);

    // Stop what is left, by resending the original forward list (the seed's advice).
    let stop_all = cmd_body(
        "2",
        "multi",
        json!({"forward": [{"url": DEST_A}, {"url": DEST_B}]}),
        None,
    );
    assert_accepted_pair(api.forward(&stop_all).await);
    let cbs = rx.wait_for("multi", 3).await;
    assert_eq!(code_msg_cmd(&cbs[2]), ("1", "푸시 스트림 성공", "2"));
    let task = api.task("multi").await.unwrap();
    assert_eq!(
        (
            task["cmd"].as_str(),
            task["code"].as_str(),
            task["msg"].as_str()
        ),
        (Some("2"), Some("1"), Some("푸시 스트림 성공"))
    );
    let ended = cbs[2]["event_time"].as_i64().unwrap();
    assert_eq!(
        task["endTime"],
        format_time(ended, 8 * 3600),
        "endTime is the stop, in +08:00"
    );

    // A stop without a forward list stops every destination.
    assert_accepted_pair(
        api.forward(&cmd_body("2", "takes_a", json!({}), None))
            .await,
    );
    let cbs = rx.wait_for("takes_a", 1).await;
    assert_eq!(
        (cbs[0]["code"].as_str(), cbs[0]["forwardurl"].as_str()),
        (Some("1"), Some(DEST_A))
    );
    assert_ne!(api.task("takes_a").await.unwrap()["endTime"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_an_unknown_id_call_back_90() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    let items = [
        ("2", json!({})),
        (
            "3",
            json!({"src": [{"url": "rtmp://127.0.0.1:1/live/new"}]}),
        ),
        ("5", json!({"forward": [{"url": DEST_A}]})),
    ];
    for (n, (cmd, item)) in items.iter().enumerate() {
        assert_accepted_pair(
            api.forward(&cmd_body(cmd, "ghost", item.clone(), Some(&rx.url)))
                .await,
        );
        let cbs = rx.wait_for("ghost", n + 1).await;
        assert_callback_shape(&cbs[n]);
        assert_eq!(code_msg_cmd(&cbs[n]), ("90", "task not exists", *cmd));
    }
    assert_eq!(api.task("ghost").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_replaces_the_sources_and_calls_back_5() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("upd", &[DEST_A], Some(&rx.url)))
            .await,
    );
    let new_src = json!([{"url": "rtmp://127.0.0.1:1/live/new"}, {"url": "http://127.0.0.1:2/live/backup.flv", "relofftime": "0-600"}]);
    assert_accepted_pair(
        api.forward(&cmd_body("3", "upd", json!({"src": new_src}), None))
            .await,
    );
    let cbs = rx.wait_for("upd", 1).await;
    assert_callback_shape(&cbs[0]);
    assert_eq!(code_msg_cmd(&cbs[0]), ("5", "리스트 업데이트 성공", "3"));
    assert_eq!(
        serde_json::from_str::<Value>(cbs[0]["srcurl"].as_str().unwrap()).unwrap(),
        new_src
    );
    assert_eq!(cbs[0]["forwardurl"], DEST_A);
    let task = api.task("upd").await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(task["src"].as_str().unwrap()).unwrap(),
        new_src
    );
    assert_eq!(
        (
            task["cmd"].as_str(),
            task["code"].as_str(),
            task["msg"].as_str()
        ),
        (Some("3"), Some("5"), Some("리스트 업데이트 성공"))
    );

    // An update with the other type is refused: its sources were checked against video's rules.
    let as_video = with(
        &cmd_body(
            "3",
            "upd",
            json!({"src": [{"url": "http://127.0.0.1/a.mp4"}]}),
            None,
        ),
        |v| v["type"] = json!("video"),
    );
    let (status, answer) = api.forward(&as_video).await;
    assert_refused(status, &answer, 400, "1001", "type이 잘못되었습니다");

    // A scheduled task that has not started cannot be updated (cancel and re-create, says the seed).
    let mut later = live_body("later", &[DEST_B], Some(&rx.url));
    later["list"][0]["start"] = json!((now_ms() + 3_600_000).to_string());
    assert_accepted_pair(api.forward(&later).await);
    assert_accepted_pair(
        api.forward(&cmd_body("3", "later", json!({"src": new_src}), None))
            .await,
    );
    let cbs = rx.wait_for("later", 1).await;
    assert_eq!(
        code_msg_cmd(&cbs[0]),
        ("91", "task repeat,task not start!", "3")
    );
    // A stopped one does not exist as far as cmd=3 is concerned.
    assert_accepted_pair(api.forward(&cmd_body("2", "upd", json!({}), None)).await);
    assert_accepted_pair(
        api.forward(&cmd_body("3", "upd", json!({"src": new_src}), None))
            .await,
    );
    let cbs = rx.wait_for("upd", 3).await;
    assert_eq!(code_msg_cmd(&cbs[2]), ("90", "task not exists", "3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_a_manually_stopped_task_with_a_reset_url() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("res", &[DEST_A, DEST_B], Some(&rx.url)))
            .await,
    );
    // Resuming a task that runs, with nothing stopped, is refused.
    assert_accepted_pair(api.forward(&cmd_body("5", "res", json!({}), None)).await);
    let cbs = rx.wait_for("res", 1).await;
    assert_eq!(
        code_msg_cmd(&cbs[0]),
        ("91", "task repeat,task not start!", "5")
    );

    assert_accepted_pair(api.forward(&cmd_body("2", "res", json!({}), None)).await);
    rx.wait_for("res", 2).await;
    let resume = cmd_body(
        "5",
        "res",
        json!({"forward": [{"url": DEST_A, "resetUrl": DEST_C}, {"url": DEST_B}], "fops": {"bps": "1"}}),
        None,
    );
    assert_accepted_pair(api.forward(&resume).await);
    let task = api.task("res").await.unwrap();
    let forward: Value = serde_json::from_str(task["forward"].as_str().unwrap()).unwrap();
    assert_eq!(forward, json!([{"url": DEST_C}, {"url": DEST_B}]));
    assert_eq!(
        (task["cmd"].as_str(), task["endTime"].as_str()),
        (Some("5"), Some(""))
    );
    // It is active again: its new destination is taken, the replaced one free.
    assert_accepted_pair(
        api.forward(&live_body("wants_c", &[DEST_C], Some(&rx.url)))
            .await,
    );
    let cbs = rx.wait_for("wants_c", 1).await;
    assert_eq!(cbs[0]["code"], "91");
    assert_accepted_pair(
        api.forward(&live_body("wants_a", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert!(api.task("wants_a").await.is_some());
    // A resume naming a destination the task does not have is refused.
    assert_accepted_pair(api.forward(&cmd_body("2", "res", json!({}), None)).await);
    assert_accepted_pair(
        api.forward(&cmd_body(
            "5",
            "res",
            json!({"forward": [{"url": DEST_A}]}),
            None,
        ))
        .await,
    );
    let cbs = rx.wait_for("res", 4).await;
    assert_eq!(code_msg_cmd(&cbs[3]), ("90", "task not exists", "5"));
    assert_eq!(
        api.task("res").await.unwrap()["cmd"],
        "2",
        "a refused resume changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_arrive_in_order_per_task_with_the_seed_shape() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    let body = with(&future_seed_body(&rx.url), |v| {
        let i = &mut v["list"][0];
        remove(i, "start");
        remove(i, "end");
    });
    assert_accepted_pair(api.forward(&body).await);
    let id = "task_unique_id_001";
    let (out1, out2) = (
        "rtmp://127.0.0.1:1935/live/output1",
        "rtmp://127.0.0.1:1935/live/output2",
    );
    let src2 = json!([{"url": "http://source.example.com/live/stream2.flv"}]);
    // Four changes back to back, without waiting for their callbacks.
    let requests = [
        cmd_body("3", id, json!({"src": src2}), None),
        cmd_body("2", id, json!({"forward": [{"url": out1}]}), None),
        cmd_body(
            "3",
            id,
            json!({"src": body["list"][0]["src"], "fops": {"vcodec": "libx264"}}),
            None,
        ),
        cmd_body("2", id, json!({}), None),
    ];
    for r in &requests {
        assert_accepted_pair(api.forward(r).await);
    }
    let cbs = rx.wait_for(id, 4).await;
    for cb in &cbs {
        assert_callback_shape(cb);
    }
    let seen: Vec<(&str, &str, &str)> = cbs
        .iter()
        .map(|c| {
            (
                c["cmd"].as_str().unwrap(),
                c["code"].as_str().unwrap(),
                c["forwardurl"].as_str().unwrap(),
            )
        })
        .collect();
    let both = serde_json::to_string(&json!([{"url": out1}, {"url": out2}])).unwrap();
    assert_eq!(
        seen,
        [
            ("3", "5", both.as_str()),
            ("2", "1", out1),
            ("3", "5", both.as_str()),
            ("2", "1", out2)
        ],
        "in the order they happened"
    );
    let times: Vec<i64> = cbs
        .iter()
        .map(|c| c["event_time"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(
        serde_json::from_str::<Value>(cbs[0]["srcurl"].as_str().unwrap()).unwrap(),
        src2
    );
    assert_eq!(
        serde_json::from_str::<Value>(cbs[3]["srcurl"].as_str().unwrap()).unwrap(),
        body["list"][0]["src"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_callback_is_delivered_again_after_the_retry_interval() {
    let svc = Service::start(&[("RELAYCAST_TIMING__CALLBACK_TIMEOUT_MS", "1000")]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("flaky", &[DEST_A], Some(&rx.url)))
            .await,
    );

    // A 500 first: the same event again after the retry interval (500 ms here).
    rx.fail_next(1);
    assert_accepted_pair(api.forward(&cmd_body("2", "flaky", json!({}), None)).await);
    let got = eventually(
        "a retry of the stop callback",
        Duration::from_secs(10),
        || async {
            let got = rx.attempts_for("flaky");
            (got.len() >= 2).then_some(got)
        },
    )
    .await;
    assert_eq!((got[0].answered, got[1].answered), (500, 200));
    assert_eq!(got[0].raw, got[1].raw, "the very same event");
    assert_eq!(code_msg_cmd(&got[0].body), ("1", "푸시 스트림 성공", "2"));
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(450), "retried after {gap:?}");

    // A stalled endpoint: no answer within the callback timeout (1 s) counts as a failure.
    rx.stall(true);
    assert_accepted_pair(
        api.forward(&cmd_body("2", "ghost", json!({}), Some(&rx.url)))
            .await,
    );
    let first = eventually("the stalled callback", Duration::from_secs(10), || async {
        rx.received().into_iter().find(|r| r.body["id"] == "ghost")
    })
    .await;
    rx.stall(false);
    let again = eventually(
        "a retry of the stalled callback",
        Duration::from_secs(10),
        || async { rx.attempts_for("ghost").into_iter().nth(1) },
    )
    .await;
    assert_eq!(first.raw, again.raw);
    assert_eq!(again.answered, 200);
    assert!(
        again.at - first.at >= Duration::from_millis(1400),
        "retried after {:?}",
        again.at - first.at
    );

    // Delivered means delivered: a later event arrives, and neither earlier one comes again.
    assert_accepted_pair(
        api.forward(&cmd_body("2", "barrier", json!({}), Some(&rx.url)))
            .await,
    );
    rx.wait_for("barrier", 1).await;
    assert_eq!(rx.attempts_for("flaky").len(), 2);
    assert_eq!(rx.attempts_for("ghost").len(), 2);
}

// ---- the 48 h resume rule, with the host in-process on a manual clock -----------------------

const HOUR_MS: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_refused_48_hours_after_the_stop_and_accepted_within() {
    let h = InProcess::start().await;
    let api = &h.api;
    let rx = CallbackReceiver::start().await;
    for (id, dest) in [("late", DEST_A), ("in_time", DEST_B), ("at_48h", DEST_C)] {
        assert_accepted_pair(api.forward(&live_body(id, &[dest], Some(&rx.url))).await);
        assert_accepted_pair(api.forward(&cmd_body("2", id, json!({}), None)).await);
        assert_eq!(
            code_msg_cmd(&rx.wait_for(id, 1).await[0]),
            ("1", "푸시 스트림 성공", "2")
        );
    }

    // 47 h 59 min 59 s later: resumed.
    h.clock.advance_ms(48 * HOUR_MS - 1000);
    assert_accepted_pair(
        api.forward(&cmd_body("5", "in_time", json!({}), None))
            .await,
    );
    assert_eq!(api.task("in_time").await.unwrap()["cmd"], "5");
    // Exactly 48 h: still resumable.
    h.clock.advance_ms(1000);
    assert_accepted_pair(api.forward(&cmd_body("5", "at_48h", json!({}), None)).await);
    assert_eq!(api.task("at_48h").await.unwrap()["cmd"], "5");
    // 48 h and 1 s: refused, reported as "task not exists".
    h.clock.advance_ms(1000);
    assert_accepted_pair(api.forward(&cmd_body("5", "late", json!({}), None)).await);
    let cbs = rx.wait_for("late", 2).await;
    assert_callback_shape(&cbs[1]);
    assert_eq!(code_msg_cmd(&cbs[1]), ("90", "task not exists", "5"));
    assert_eq!(cbs[1]["event_time"].as_i64(), Some(h.now_ms()));
    let late = api.task("late").await.unwrap();
    assert_eq!(
        (late["cmd"].as_str(), late["code"].as_str()),
        (Some("2"), Some("1")),
        "the refused resume changed nothing"
    );
    // The resumed tasks hold their destinations again; the expired one does not.
    assert_accepted_pair(
        api.forward(&live_body("wants_b", &[DEST_B], Some(&rx.url)))
            .await,
    );
    assert_eq!(rx.wait_for("wants_b", 1).await[0]["code"], "91");
    assert_accepted_pair(
        api.forward(&live_body("wants_a", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert!(api.task("wants_a").await.is_some());
    assert!(
        rx.bodies_for("in_time").len() == 1 && rx.bodies_for("at_48h").len() == 1,
        "an accepted resume sends no callback"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refusals_of_an_unknown_id_in_the_same_millisecond_are_both_called_back() {
    let h = InProcess::start_with(|s| s.timing.callback_timeout_ms = 1000).await;
    let rx = CallbackReceiver::start().await;
    // The endpoint is slow on the first callback; the clock stands still between the two
    // requests, as it may for a busy client (two requests in one millisecond).
    rx.stall(true);
    assert_accepted_pair(
        h.api
            .forward(&cmd_body("2", "ghost", json!({}), Some(&rx.url)))
            .await,
    );
    rx.wait_for("ghost", 1).await;
    rx.stall(false);
    assert_accepted_pair(
        h.api
            .forward(&cmd_body(
                "3",
                "ghost",
                json!({"src": [{"url": "rtmp://127.0.0.1:1/live/x"}]}),
                Some(&rx.url),
            ))
            .await,
    );
    // Both must eventually be answered 200 (time moves on so retries come due).
    let delivered = eventually(
        "a delivery of both callbacks",
        Duration::from_secs(10),
        || async {
            h.clock.advance_ms(100);
            let ok: Vec<String> = rx
                .received()
                .iter()
                .filter(|r| r.answered == 200)
                .map(|r| r.body["cmd"].as_str().unwrap_or("?").to_string())
                .collect();
            (ok.contains(&"2".to_string()) && ok.contains(&"3".to_string())).then_some(ok)
        },
    )
    .await;
    assert!(!delivered.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn callbacks_to_a_slow_endpoint_keep_their_order() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    // The endpoint answers every callback, in time, but takes 300 ms to do it.
    rx.answer_after(300);
    assert_accepted_pair(
        api.forward(&live_body("slow", &[DEST_A], Some(&rx.url)))
            .await,
    );
    let srcs: Vec<String> = (1..=5)
        .map(|i| format!("rtmp://127.0.0.1:1/live/v{i}"))
        .collect();
    for s in &srcs {
        assert_accepted_pair(
            api.forward(&cmd_body("3", "slow", json!({"src": [{"url": s}]}), None))
                .await,
        );
    }
    assert_accepted_pair(api.forward(&cmd_body("2", "slow", json!({}), None)).await);
    let cbs = rx.wait_for("slow", 6).await;
    let seen: Vec<String> = cbs
        .iter()
        .map(|c| match c["code"].as_str() {
            Some("5") => serde_json::from_str::<Value>(c["srcurl"].as_str().unwrap()).unwrap()[0]
                ["url"]
                .as_str()
                .unwrap()
                .to_string(),
            other => format!("code {}", other.unwrap_or("?")),
        })
        .collect();
    let mut want = srcs.clone();
    want.push("code 1".into());
    assert_eq!(
        seen, want,
        "callbacks of one task arrive in the order they happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_targets_are_refused_unless_the_operator_allows_them() {
    let svc = Service::start(&[("RELAYCAST_ALLOW_PRIVATE_TARGETS", "false")]);
    let api = svc.api();
    let public = json!({"cmd": "1", "type": "live", "list": [{
        "id": "public",
        "src": [{"url": "rtmp://src.example.com/live/x"}],
        "forward": [{"url": "rtmp://push.example.com/live/x"}]
    }]});
    let item = |f: &dyn Fn(&mut Value)| with(&public, |v| f(&mut v["list"][0]));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "loopback callback",
            with(&public, |v| {
                v["transcallbackurl"] = json!("http://127.0.0.1:9/cb")
            }),
            "params transcallbackurl format is error",
        ),
        (
            "localhost callback",
            with(&public, |v| {
                v["transcallbackurl"] = json!("http://localhost/cb")
            }),
            "params transcallbackurl format is error",
        ),
        (
            "private source",
            item(&|i| i["src"][0]["url"] = json!("rtmp://10.0.0.1/live/x")),
            "params src is error",
        ),
        (
            "metadata source",
            item(&|i| i["src"][0]["url"] = json!("http://169.254.169.254/latest/meta-data")),
            "params src is error",
        ),
        (
            "loopback destination",
            item(&|i| i["forward"][0]["url"] = json!("rtmp://127.0.0.1:1935/live/x")),
            "params forward is error",
        ),
        (
            "IPv6 loopback destination",
            item(&|i| i["forward"][0]["url"] = json!("rtmp://[::1]/live/x")),
            "params forward is error",
        ),
        (
            "private watermark",
            item(&|i| {
                i["src"][0]["wmImage"] = json!("http://192.168.1.1/logo.png");
                i["fops"] = json!({"vcodec": "libx264"});
            }),
            "params wmImage format is error",
        ),
    ];
    for (what, body, msg) in &cases {
        let (status, answer) = api.forward(body).await;
        assert_eq!(answer["msg"], *msg, "{what}: {answer}");
        assert_refused(status, &answer, 400, "1001", msg);
    }
    assert_eq!(api.task("public").await, None);
    assert_accepted_pair(api.forward(&public).await);
    let update = cmd_body(
        "3",
        "public",
        json!({"src": [{"url": "rtmp://172.16.0.1/live/x"}]}),
        None,
    );
    let (status, answer) = api.forward(&update).await;
    assert_refused(status, &answer, 400, "1001", "params src is error");
    assert_accepted_pair(api.forward(&cmd_body("2", "public", json!({}), None)).await);
    let resume = cmd_body(
        "5",
        "public",
        json!({"forward": [{"url": "rtmp://push.example.com/live/x", "resetUrl": "rtmp://127.0.0.1/live/x"}]}),
        None,
    );
    let (status, answer) = api.forward(&resume).await;
    assert_refused(status, &answer, 400, "1001", "params forward is error");
    assert_eq!(api.task("public").await.unwrap()["cmd"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_limits() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let item = |i: usize| json!({"id": format!("bulk{i}"), "src": [{"url": "rtmp://127.0.0.1:1/live/s"}], "forward": [{"url": format!("rtmp://127.0.0.1:1935/live/bulk{i}")}]});
    let body = |n: usize| json!({"cmd": "1", "type": "live", "list": (0..n).map(item).collect::<Vec<_>>()});
    let (status, answer) = api.forward(&body(101)).await;
    assert_refused(status, &answer, 400, "1001", "params list format is error");
    let twice = json!({"cmd": "1", "type": "live", "list": [item(1), item(1)]});
    let (status, answer) = api.forward(&twice).await;
    assert_refused(status, &answer, 400, "1001", "params id format is error");
    let same_dest = live_body("samedest", &[DEST_A, DEST_A], None);
    let (status, answer) = api.forward(&same_dest).await;
    assert_refused(status, &answer, 400, "1001", "params forward is error");
    let (_, page) = api.query(&[("id", "bulk1")]).await;
    assert_eq!(page["total"], 0, "{page}");
    assert_accepted_pair(api.forward(&body(100)).await);
    let (_, page) = api.query(&[("src", "live/s")]).await;
    assert_eq!(page["total"], 100, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_onto_a_destination_another_task_pushes_to_is_refused_with_91() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("owner", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert_accepted_pair(api.forward(&cmd_body("2", "owner", json!({}), None)).await);
    rx.wait_for("owner", 1).await;
    // While it is stopped, another task takes its destination.
    assert_accepted_pair(
        api.forward(&live_body("taker", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert!(api.task("taker").await.is_some());
    // Resuming it would be two publishers on one stream key.
    assert_accepted_pair(api.forward(&cmd_body("5", "owner", json!({}), None)).await);
    let cbs = rx.wait_for("owner", 2).await;
    assert_eq!(
        code_msg_cmd(&cbs[1]),
        ("91", "task repeat,task not start!", "5")
    );
    assert_eq!(api.task("owner").await.unwrap()["cmd"], "2");
    // So would moving a destination onto another task's with resetUrl.
    assert_accepted_pair(
        api.forward(&live_body("mover", &[DEST_B], Some(&rx.url)))
            .await,
    );
    assert_accepted_pair(api.forward(&cmd_body("2", "mover", json!({}), None)).await);
    rx.wait_for("mover", 1).await;
    let reset = cmd_body(
        "5",
        "mover",
        json!({"forward": [{"url": DEST_B, "resetUrl": DEST_A}]}),
        None,
    );
    assert_accepted_pair(api.forward(&reset).await);
    let cbs = rx.wait_for("mover", 2).await;
    assert_eq!(
        code_msg_cmd(&cbs[1]),
        ("91", "task repeat,task not start!", "5")
    );
    assert_eq!(api.task("mover").await.unwrap()["forward"], DEST_B);
    // A free destination resumes fine.
    let reset = cmd_body(
        "5",
        "mover",
        json!({"forward": [{"url": DEST_B, "resetUrl": DEST_C}]}),
        None,
    );
    assert_accepted_pair(api.forward(&reset).await);
    assert_eq!(api.task("mover").await.unwrap()["forward"], DEST_C);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_task_starts_at_its_start_and_ends_at_its_end() {
    use relaycast_core::domain::relay::state::TaskState;
    use relaycast_core::domain::relay::task::RelayTask;
    use relaycast_core::ports::TypedStore;

    let h = InProcess::start().await;
    let rx = CallbackReceiver::start().await;
    let t0 = h.now_ms();
    let mut body = live_body("sched", &[DEST_A], Some(&rx.url));
    body["list"][0]["start"] = json!((t0 + 60_000).to_string());
    body["list"][0]["end"] = json!((t0 + 11 * 60_000).to_string());
    assert_accepted_pair(h.api.forward(&body).await);
    let update = cmd_body(
        "3",
        "sched",
        json!({"src": [{"url": "rtmp://127.0.0.1:1/live/other"}]}),
        None,
    );
    // Not started yet: cmd=3 is refused.
    assert_accepted_pair(h.api.forward(&update).await);
    assert_eq!(
        code_msg_cmd(&rx.wait_for("sched", 1).await[0]),
        ("91", "task repeat,task not start!", "3")
    );

    // Its start comes: the scheduler hands it to the workers.
    h.clock.advance_ms(60_000);
    let store = h.host().ports.store.clone();
    eventually(
        "the scheduled task to start",
        Duration::from_secs(5),
        || async {
            let t = store.load::<RelayTask>("acme:sched").await.unwrap()?;
            (t.value.state == TaskState::Starting).then_some(())
        },
    )
    .await;
    assert_accepted_pair(h.api.forward(&update).await);
    assert_eq!(
        code_msg_cmd(&rx.wait_for("sched", 2).await[1]),
        ("5", "리스트 업데이트 성공", "3")
    );

    // Its end comes: stopped, with code 1, and it cannot be resumed past its end.
    h.clock.advance_ms(10 * 60_000);
    let end = rx.wait_for("sched", 3).await.remove(2);
    assert_eq!(
        (end["code"].as_str(), end["msg"].as_str()),
        (Some("1"), Some("푸시 스트림 성공"))
    );
    assert_eq!(end["event_time"].as_i64(), Some(h.now_ms()));
    let item = h.api.task("sched").await.unwrap();
    assert_eq!(
        (item["code"].as_str(), item["endTime"].as_str()),
        (Some("1"), Some(format_time(h.now_ms(), 8 * 3600).as_str()))
    );
    assert_accepted_pair(
        h.api
            .forward(&cmd_body("5", "sched", json!({}), None))
            .await,
    );
    assert_eq!(
        code_msg_cmd(&rx.wait_for("sched", 4).await[3]),
        ("91", "task repeat,task not start!", "5")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_limit_and_the_replay_window_reset_after_five_minutes() {
    let h = InProcess::start().await;
    let limited = Api::new(&h.api.base, LIMITED.0, LIMITED.1);
    // Start at the beginning of a 5-minute window, so the window does not turn mid-test.
    h.clock
        .set_ms(h.now_ms() - h.now_ms().rem_euclid(300_000) + 300_000);
    for _ in 0..3 {
        assert_eq!(limited.query(&[("id", "x")]).await.0, 200);
    }
    let (status, answer) = limited.query(&[("id", "x")]).await;
    assert_refused(
        status,
        &answer,
        403,
        "1002",
        "frequency is great than limitCount",
    );
    h.clock.advance_ms(299_999);
    let (status, answer) = limited.query(&[("id", "x")]).await;
    assert_refused(
        status,
        &answer,
        403,
        "1002",
        "frequency is great than limitCount",
    );
    h.clock.advance_ms(1);
    let (status, answer) = limited.query(&[("id", "x")]).await;
    assert_eq!(status, 200, "a new window: {answer}");

    // A used r is refused for five minutes, then forgotten.
    let api = &h.api;
    let r = Api::fresh_r();
    let mut pairs = vec![
        ("n".to_string(), ACME.0.to_string()),
        ("r".to_string(), r.clone()),
        ("k".to_string(), api.sign(&r)),
    ];
    pairs.push(("id".into(), "x".into()));
    assert_eq!(api.query_signed_as(&pairs).await.0, 200);
    h.clock.advance_ms(299_000);
    let (status, answer) = api.query_signed_as(&pairs).await;
    assert_refused(status, &answer, 403, "1002", "random is repeat");
    h.clock.advance_ms(1_001);
    let (status, answer) = api.query_signed_as(&pairs).await;
    assert_eq!(status, 200, "{answer}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_is_retried_as_configured_then_given_up() {
    let svc = Service::start(&[("RELAYCAST_TIMING__CALLBACK_RETRIES", "2")]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    rx.fail_next(3);
    assert_accepted_pair(
        api.forward(&cmd_body("2", "ghost", json!({}), Some(&rx.url)))
            .await,
    );
    // The first attempt and two retries, 500 ms apart, all answered 500.
    let attempts = eventually("three attempts", Duration::from_secs(10), || async {
        let got = rx.attempts_for("ghost");
        (got.len() >= 3).then_some(got)
    })
    .await;
    assert!(
        attempts
            .windows(2)
            .all(|w| w[0].raw == w[1].raw && w[1].at - w[0].at >= Duration::from_millis(450)),
        "{attempts:?}"
    );
    assert!(attempts.iter().all(|a| a.answered == 500));
    let last = attempts[2].clone();
    // No fourth attempt: wait well past the retry interval, until a later callback got through.
    assert_accepted_pair(
        api.forward(&cmd_body("2", "barrier", json!({}), Some(&rx.url)))
            .await,
    );
    rx.wait_for("barrier", 1).await;
    let quiet = Duration::from_millis(1500).saturating_sub(last.at.elapsed());
    tokio::time::sleep(quiet).await;
    assert_eq!(
        rx.attempts_for("ghost").len(),
        3,
        "given up after the configured retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_body_resent_with_cmd_2_stops_the_task() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    let mut body = future_seed_body(&rx.url);
    remove(&mut body["list"][0], "start");
    remove(&mut body["list"][0], "end");
    assert_accepted_pair(api.forward(&body).await);
    // The seed advises stopping with the forward list the task was created with: resend it all.
    let mut stop = seed_body(&rx.url);
    stop["cmd"] = json!("2");
    assert_accepted_pair(api.forward(&stop).await);
    let cbs = rx.wait_for("task_unique_id_001", 1).await;
    assert_eq!(code_msg_cmd(&cbs[0]), ("1", "푸시 스트림 성공", "2"));
    assert_ne!(api.task("task_unique_id_001").await.unwrap()["endTime"], "");
    // Stopping it again: it is no longer running.
    assert_accepted_pair(api.forward(&stop).await);
    let cbs = rx.wait_for("task_unique_id_001", 2).await;
    assert_eq!(code_msg_cmd(&cbs[1]), ("90", "task not exists", "2"));
    // Re-creating it with the same destinations is fine once it stopped, and so is
    // re-creating a running one with its own destinations (the old one stops first).
    assert_accepted_pair(api.forward(&body).await);
    assert_accepted_pair(api.forward(&body).await);
    let cbs = rx.wait_for("task_unique_id_001", 3).await;
    assert_eq!(code_msg_cmd(&cbs[2]), ("1", "푸시 스트림 성공", "1"));
    assert_eq!(cbs.len(), 3, "{cbs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn concurrent_creates_never_share_a_destination() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    // Twenty customers' requests race for one destination: one wins, the others get 91.
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let api = api.clone();
            let body = live_body(&format!("racer{i:02}"), &[DEST_A], Some(&rx.url));
            tokio::spawn(async move { api.forward(&body).await })
        })
        .collect();
    for r in racers {
        assert_accepted_pair(r.await.unwrap());
    }
    let (_, page) = api.query(&[("forward", DEST_A)]).await;
    assert_eq!(
        page["total"], 1,
        "exactly one task may push to {DEST_A}: {page}"
    );
    // (Delivery is at least once: count tasks, not callbacks.)
    let refused = eventually("19 refusals", Duration::from_secs(10), || async {
        let ids: BTreeSet<String> = rx
            .received()
            .iter()
            .filter(|r| r.body["code"] == "91")
            .map(|r| r.body["id"].to_string())
            .collect();
        (ids.len() >= 19).then_some(ids)
    })
    .await;
    assert_eq!(refused.len(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_resubmission_leaves_the_running_task_and_its_callbacks_alone() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("keeper", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert_accepted_pair(
        api.forward(&live_body("holder", &[DEST_B], Some(&rx.url)))
            .await,
    );
    // Resubmitting keeper onto holder's destination, without a transcallbackurl: refused.
    assert_accepted_pair(api.forward(&live_body("keeper", &[DEST_B], None)).await);
    let cbs = rx.wait_for("keeper", 1).await;
    assert_eq!(
        code_msg_cmd(&cbs[0]),
        ("91", "task repeat,task not start!", "1")
    );
    assert_eq!(
        api.task("keeper").await.unwrap()["forward"],
        DEST_A,
        "keeper runs on"
    );
    // Its callbacks still arrive.
    assert_accepted_pair(api.forward(&cmd_body("2", "keeper", json!({}), None)).await);
    let cbs = rx.wait_for("keeper", 2).await;
    assert_eq!(code_msg_cmd(&cbs[1]), ("1", "푸시 스트림 성공", "2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_http_is_never_a_500() {
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let seed = serde_json::to_vec(&future_seed_body(NOWHERE)).unwrap();
    // A tiny deterministic PRNG: the same garbage on every run.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"{}[]\":,0123456789-.eE \\ntrufalsx\xff\xc3\xa9";
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..300 {
        let mut body = seed.clone();
        match i % 3 {
            0 => {
                for _ in 0..(1 + next() % 4) {
                    let at = (next() as usize) % body.len();
                    body[at] = alphabet[(next() as usize) % alphabet.len()];
                }
            }
            1 => body.truncate((next() as usize) % body.len()),
            _ => {
                // Splice a random slice of the body somewhere else.
                let (a, b) = (
                    (next() as usize) % body.len(),
                    (next() as usize) % body.len(),
                );
                let (from, to) = (a.min(b), a.max(b));
                let slice = body[from..to].to_vec();
                let at = (next() as usize) % body.len();
                body.splice(at..at, slice);
            }
        }
        let (status, answer) = api.forward_bytes(body.clone()).await;
        assert!(
            status == 200 || status == 400,
            "{status} for {:?}: {answer}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            answer["http_code"].is_string() && answer["msg"].is_string(),
            "{answer}"
        );
        *outcomes
            .entry(answer["msg"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert!(
        outcomes.len() > 5,
        "the garbage should hit many rules: {outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_tasks_follow_their_own_rules() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    let body = json!({"transcallbackurl": rx.url, "cmd": "1", "type": "video", "list": [{
        "id": "a".repeat(32),
        "src": [{"url": "http://127.0.0.1/1.mp4", "relofftime": "30-60"}, {"url": "https://127.0.0.1/2.flv"}, {"url": "http://127.0.0.1/3.m3u8"}],
        "forward": [{"url": DEST_A}],
        "extendParam": {"loop": "-1", "index": "3", "waitCrtUrlFinish": "0"}
    }]});
    let item = |f: &dyn Fn(&mut Value)| with(&body, |v| f(&mut v["list"][0]));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a live-only source",
            item(&|i| i["src"][1]["url"] = json!("rtmp://127.0.0.1/live/x")),
            "params src is error",
        ),
        (
            "an index past the list",
            item(&|i| i["extendParam"]["index"] = json!("4")),
            "params index format is error",
        ),
        (
            "index 0",
            item(&|i| i["extendParam"]["index"] = json!("0")),
            "params index format is error",
        ),
        (
            "loop 0",
            item(&|i| i["extendParam"]["loop"] = json!("0")),
            "params loop format is error",
        ),
        (
            "waitCrtUrlFinish 2",
            item(&|i| i["extendParam"]["waitCrtUrlFinish"] = json!("2")),
            "params waitCrtUrlFinish format is error",
        ),
        (
            "an id of 33",
            item(&|i| i["id"] = json!("a".repeat(33))),
            "params id format is error",
        ),
    ];
    for (what, b, msg) in &cases {
        let (status, answer) = api.forward(b).await;
        assert_eq!(answer["msg"], *msg, "{what}: {answer}");
        assert_refused(status, &answer, 400, "1001", msg);
    }
    assert_accepted_pair(api.forward(&body).await);
    let id = "a".repeat(32);
    let task = api.task(&id).await.expect("an id of 32 characters is fine");
    assert_eq!(task["type"], "video");
    assert_eq!(
        serde_json::from_str::<Value>(task["src"].as_str().unwrap()).unwrap(),
        body["list"][0]["src"]
    );
    // cmd=3 with waitCrtUrlFinish, as the seed describes for VOD playlists.
    let update = json!({"cmd": "3", "type": "video", "list": [{"id": id, "src": [{"url": "http://127.0.0.1/4.mp4"}], "extendParam": {"waitCrtUrlFinish": "1"}}]});
    assert_accepted_pair(api.forward(&update).await);
    let cbs = rx.wait_for(&id, 1).await;
    assert_eq!(code_msg_cmd(&cbs[0]), ("5", "리스트 업데이트 성공", "3"));
    // And as a live update it is refused: the task is a video task.
    let live_update = with(&update, |v| v["type"] = json!("live"));
    let (status, answer) = api.forward(&live_update).await;
    assert_refused(status, &answer, 400, "1001", "type이 잘못되었습니다");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn concurrent_commands_on_one_task_are_all_answered_without_a_500() {
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("busy", &[DEST_A], Some(&rx.url)))
            .await,
    );
    let updates: Vec<_> = (0..10)
        .map(|i| {
            let api = api.clone();
            let body = cmd_body(
                "3",
                "busy",
                json!({"src": [{"url": format!("rtmp://127.0.0.1:1/live/u{i}")}]}),
                None,
            );
            tokio::spawn(async move { api.forward(&body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for u in updates {
        answers.push(u.await.unwrap());
    }
    let failed: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 10 failed: {failed:?}; log: {}",
        failed.len(),
        svc.process
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("request failed"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every update happened, each with its callback.
    let cbs = rx.wait_for("busy", 10).await;
    assert_eq!(cbs.len(), 10);
    assert!(cbs.iter().all(|c| c["code"] == "5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_create_retried_after_a_lost_race_does_not_stop_its_own_new_tasks() {
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let rx = CallbackReceiver::start().await;
    for round in 0..10 {
        let y = format!("y{round}");
        let x = format!("x{round}");
        assert_accepted_pair(
            api.forward(&live_body(
                &y,
                &[&format!("rtmp://127.0.0.1:1935/live/{y}")],
                Some(&rx.url),
            ))
            .await,
        );
        // One request creates x and replaces y while others keep changing y.
        let both = json!({"transcallbackurl": rx.url, "cmd": "1", "type": "live", "list": [
            {"id": x, "src": [{"url": "rtmp://127.0.0.1:1/live/s"}], "forward": [{"url": format!("rtmp://127.0.0.1:1935/live/{x}")}]},
            {"id": y, "src": [{"url": "rtmp://127.0.0.1:1/live/s"}], "forward": [{"url": format!("rtmp://127.0.0.1:1935/live/{y}")}]}
        ]});
        let mut racers = vec![{
            let api = api.clone();
            tokio::spawn(async move { api.forward(&both).await })
        }];
        for i in 0..4 {
            let api = api.clone();
            let body = cmd_body(
                "3",
                &y,
                json!({"src": [{"url": format!("rtmp://127.0.0.1:1/live/u{i}")}]}),
                None,
            );
            racers.push(tokio::spawn(async move { api.forward(&body).await }));
        }
        for r in racers {
            let _ = r.await.unwrap();
        }
    }
    // Let the callbacks of the last round arrive, then look: a task that was just created was
    // never stopped by the very request that created it.
    assert_accepted_pair(
        api.forward(&cmd_body("2", "barrier", json!({}), Some(&rx.url)))
            .await,
    );
    rx.wait_for("barrier", 1).await;
    let stopped_new: Vec<Value> = rx
        .received()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["id"].as_str().is_some_and(|i| i.starts_with('x')))
        .collect();
    assert!(stopped_new.is_empty(), "{stopped_new:?}");
}

#[tokio::test]
async fn a_task_no_worker_takes_up_in_time_calls_back_92() {
    // This service runs no relay worker: the task can never start.
    let svc = Service::start(&[("RELAYCAST_TIMING__START_TIMEOUT_MS", "500")]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("orphan", &[DEST_A], Some(&rx.url)))
            .await,
    );
    let cbs = rx.wait_for("orphan", 1).await;
    assert_callback_shape(&cbs[0]);
    assert_eq!(
        code_msg_cmd(&cbs[0]),
        ("92", "task start delivery failed!", "1")
    );
    let task = api.task("orphan").await.unwrap();
    assert_eq!(
        (task["code"].as_str(), task["msg"].as_str()),
        (Some("92"), Some("task start delivery failed!"))
    );
    // The destination is free again.
    assert_accepted_pair(
        api.forward(&live_body("next", &[DEST_A], Some(&rx.url)))
            .await,
    );
    assert!(rx.bodies_for("next").iter().all(|b| b["code"] != "91"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmd_3_naming_a_task_of_another_type_is_refused_whole_and_writes_nothing() {
    let h = InProcess::start().await;
    let api = &h.api;
    let rx = CallbackReceiver::start().await;
    assert_accepted_pair(
        api.forward(&live_body("mixlive", &[DEST_A], Some(&rx.url)))
            .await,
    );
    let video = json!({"transcallbackurl": rx.url, "cmd": "1", "type": "video", "list": [{
        "id": "mixvideo", "src": [{"url": "http://127.0.0.1/1.mp4"}], "forward": [{"url": DEST_B}]
    }]});
    assert_accepted_pair(api.forward(&video).await);
    let (live_before, video_before) = (
        api.task("mixlive").await.unwrap(),
        api.task("mixvideo").await.unwrap(),
    );

    // type=live, listing the live task first: the video task makes the whole request wrong.
    let update = json!({"cmd": "3", "type": "live", "list": [
        {"id": "mixlive", "src": [{"url": "rtmp://127.0.0.1:1/live/new"}]},
        {"id": "mixvideo", "src": [{"url": "rtmp://127.0.0.1:1/live/new2"}]}
    ]});
    let (status, answer) = api.forward(&update).await;
    assert_refused(status, &answer, 400, "1001", "type이 잘못되었습니다");

    // Neither task changed: the live task keeps its src, cmd and code.
    let live_after = api.task("mixlive").await.unwrap();
    assert_eq!(live_after, live_before);
    assert_eq!(
        serde_json::from_str::<Value>(live_after["src"].as_str().unwrap()).unwrap(),
        json!([{"url": "rtmp://127.0.0.1:1/live/mixlive"}])
    );
    assert_eq!(live_after["cmd"], "1");
    assert_eq!(api.task("mixvideo").await.unwrap(), video_before);

    // No callback 5 was queued: callbacks arrive in order per task, so the first one about
    // each task after the refusal is the stop that follows it.
    assert_accepted_pair(
        api.forward(&cmd_body("2", "mixlive", json!({}), None))
            .await,
    );
    assert_accepted_pair(
        api.forward(&with(&cmd_body("2", "mixvideo", json!({}), None), |v| {
            v["type"] = json!("video")
        }))
        .await,
    );
    for id in ["mixlive", "mixvideo"] {
        let cbs = rx.wait_for(id, 1).await;
        assert_eq!(
            code_msg_cmd(&cbs[0]),
            ("1", "푸시 스트림 성공", "2"),
            "{id}: {cbs:?}"
        );
        assert!(
            rx.bodies_for(id).iter().all(|cb| cb["code"] != "5"),
            "{id}: {:?}",
            rx.bodies_for(id)
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_worked_signature_example_is_accepted_over_http() {
    let seed = SEED_AUTH_EXAMPLE;
    let h = InProcess::start_with(|s| s.accounts.push(seed.account())).await;
    // The seed's exact n, r and k, as in its example URL.
    let body = serde_json::to_vec(&live_body("seedsigned", &[DEST_A], None)).unwrap();
    let (status, answer) = h.api.forward_signed_as(&seed.pairs(), body.clone()).await;
    assert_accepted(status, &answer);
    // The request really ran as that account.
    let own = Api::new(&h.api.base, seed.n, seed.key);
    assert_eq!(own.task("seedsigned").await.unwrap()["forward"], DEST_A);
    assert_eq!(
        h.api.task("seedsigned").await,
        None,
        "another account does not see it"
    );
    // The same r again is a replay, so the first call was checked, not waved through.
    let (status, answer) = h.api.forward_signed_as(&seed.pairs(), body).await;
    assert_refused(status, &answer, 403, "1002", "random is repeat");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_a_413_in_the_error_style_of_its_api() {
    let svc = Service::start(&[("RELAYCAST_HTTP__MAX_BODY_BYTES", "4096")]);
    let api = svc.api();
    let mut body = live_body("toolong", &[DEST_A], Some(NOWHERE));
    body["pad"] = json!("x".repeat(5000));
    let bytes = serde_json::to_vec(&body).unwrap();

    // Declared length, as most clients send it.
    let (status, answer) = api.forward_bytes(bytes.clone()).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["http_code"], "1001", "{answer}");
    assert_eq!(
        answer["msg"], "params body length is too long (at most 4096 bytes)",
        "{answer}"
    );
    assert_ms(&answer["call_time"]);

    // Chunked, with no length to check up front: refused the same way once 4096 bytes are in.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let pairs = api.auth_pairs();
    let mut url = reqwest::Url::parse(&format!("{}{FORWARD_PATH}", api.base)).unwrap();
    url.query_pairs_mut().extend_pairs(&pairs);
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["http_code"], "1001", "{answer}");

    // The other APIs answer in their own error shapes.
    let (status, answer) = api
        .v1(
            "POST",
            "/v1/callback-templates",
            &[],
            Some(json!({ "TemplateName": "x".repeat(5000) })),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        answer["Response"]["Error"]["Code"], "RequestSizeLimitExceeded",
        "{answer}"
    );
    let response = reqwest::Client::new()
        .post(format!("{}/callbacks/css", svc.base()))
        .body("x".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "too_large", "{answer}");

    // Nothing of the refused request was stored.
    let (status, page) = api.query(&[("id", "toolong")]).await;
    assert_eq!(status, 200, "{page}");
    assert!(!page.to_string().contains("\"toolong\""), "{page}");
}
