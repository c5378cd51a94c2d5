//! `forwardQueryByPage.action` end to end (seed 001, "Task Query"): exact `id`, fuzzy `src` and
//! `forward`, paging, the required criterion, and the response shape, against a real
//! `relaycast up` (and one in-process host where a worker's report is needed).

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::*;

fn dest(name: &str) -> String {
    format!("rtmp://127.0.0.1:1935/live/{name}")
}

/// Creates one live task `id` pushing to `dest(id)`, from `src` when given.
async fn create(api: &Api, id: &str, src: Option<&str>) {
    let mut body = live_body(id, &[&dest(id)], None);
    if let Some(src) = src {
        body["list"][0]["src"] = json!([{"url": src}]);
    }
    let (status, answer) = api.forward(&body).await;
    assert_accepted(status, &answer);
}

fn ids(page: &Value) -> Vec<String> {
    page["list"]
        .as_array()
        .unwrap_or_else(|| panic!("no list: {page}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// The seed's query answer: `total`, `pageNo`, `pageSize` numbers and `list` items of nine
/// string fields, times as `YYYY-MM-DD HH:MM:SS` or empty; plus, only while a worker reports on
/// the task, relaycast's one extension object `relay` (see [`assert_relay_shape`]).
fn assert_page_shape(page: &Value) {
    let mut keys: Vec<&str> = page
        .as_object()
        .unwrap_or_else(|| panic!("{page}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["list", "pageNo", "pageSize", "total"], "{page}");
    for k in ["total", "pageNo", "pageSize"] {
        assert!(page[k].is_u64(), "{k} is not a number: {page}");
    }
    for item in page["list"].as_array().unwrap() {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "relay")
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cmd",
                "code",
                "endTime",
                "forward",
                "id",
                "msg",
                "src",
                "startTime",
                "type"
            ],
            "{item}"
        );
        if let Some(relay) = item.get("relay") {
            assert_relay_shape(relay);
        }
        for k in &keys {
            assert!(item[*k].is_string(), "{k} is not a string: {item}");
        }
        for k in ["startTime", "endTime"] {
            let t = item[k].as_str().unwrap();
            let ok = t.is_empty()
                || (t.len() == 19
                    && t.bytes().enumerate().all(|(i, b)| match i {
                        4 | 7 => b == b'-',
                        10 => b == b' ',
                        13 | 16 => b == b':',
                        _ => b.is_ascii_digit(),
                    }));
            assert!(ok, "{k} = {t:?}");
        }
        let src: Value = serde_json::from_str(item["src"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("src is not JSON ({e}): {item}"));
        assert!(src.is_array(), "{item}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_matches_exactly() {
    let svc = Service::start(&[]);
    let api = svc.api();
    for id in ["task_1", "task_10", "Task_1", "task_1-b"] {
        create(&api, id, None).await;
    }
    let (status, page) = api.query(&[("id", "task_1")]).await;
    assert_eq!(status, 200, "{page}");
    assert_page_shape(&page);
    assert_eq!(
        (page["total"].as_u64(), ids(&page)),
        (Some(1), vec!["task_1".to_string()])
    );
    let (_, page) = api.query(&[("id", "task_")]).await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["list"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{page}"
    );
    // Another account sees none of it.
    let (_, page) = svc.api_as(OTHER).query(&[("id", "task_1")]).await;
    assert_eq!(page["total"], 0, "{page}");
    // An id that cannot exist is a client bug, refused naming the field.
    for bad in ["a:b", &"a".repeat(33)] {
        let (status, answer) = api.query(&[("id", bad)]).await;
        assert_refused(status, &answer, 400, "1001", "params id format is error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn src_and_forward_match_fuzzily_and_together() {
    let svc = Service::start(&[]);
    let api = svc.api();
    create(&api, "cam1", Some("rtmp://127.0.0.1:1/studio/cam1")).await;
    create(&api, "cam2", Some("rtmp://127.0.0.1:1/studio/cam2")).await;
    create(
        &api,
        "news",
        Some("http://127.0.0.1:2/news/main.flv?token=a&b=c"),
    )
    .await;
    let found = |params: Vec<(&'static str, String)>| {
        let api = api.clone();
        async move {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, page) = api.query(&p).await;
            assert_eq!(status, 200, "{p:?}: {page}");
            assert_page_shape(&page);
            let mut got = ids(&page);
            got.sort();
            assert_eq!(page["total"].as_u64(), Some(got.len() as u64), "{page}");
            got
        }
    };
    assert_eq!(
        found(vec![("src", "studio".into())]).await,
        ["cam1", "cam2"]
    );
    assert_eq!(found(vec![("src", "cam2".into())]).await, ["cam2"]);
    // Values with URL syntax travel percent-encoded and match as written.
    assert_eq!(
        found(vec![("src", "main.flv?token=a&b=c".into())]).await,
        ["news"]
    );
    assert_eq!(found(vec![("forward", dest("news"))]).await, ["news"]);
    assert_eq!(
        found(vec![("forward", "rtmp://127.0.0.1:1935/live/cam".into())]).await,
        ["cam1", "cam2"]
    );
    assert_eq!(
        found(vec![("forward", "127.0.0.1".into())]).await,
        ["cam1", "cam2", "news"]
    );
    // src matches sources only, forward destinations only.
    assert!(found(vec![("src", "/live/cam1".into())]).await.is_empty());
    assert!(found(vec![("forward", "studio".into())]).await.is_empty());
    // Every criterion given must hold.
    assert_eq!(
        found(vec![("src", "studio".into()), ("forward", "cam2".into())]).await,
        ["cam2"]
    );
    assert!(found(vec![("id", "cam1".into()), ("src", "news".into())])
        .await
        .is_empty());
    assert_eq!(
        found(vec![("id", "news".into()), ("forward", "live".into())]).await,
        ["news"]
    );
    // Matching is case-sensitive substring matching: nothing else.
    assert!(found(vec![("src", "STUDIO".into())]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_default_to_100_and_never_exceed_it() {
    let svc = Service::start(&[]);
    let api = svc.api();
    // 100 tasks in one request (so one creation time), then 5 newer ones.
    let list: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("old{i:03}"), "src": [{"url": "rtmp://127.0.0.1:1/live/pg"}], "forward": [{"url": dest(&format!("old{i:03}"))}]}))
        .collect();
    let (status, answer) = api
        .forward(&json!({"cmd": "1", "type": "live", "list": list}))
        .await;
    assert_accepted(status, &answer);
    for i in 0..5 {
        create(&api, &format!("new{i}"), Some("rtmp://127.0.0.1:1/live/pg")).await;
    }
    let page = |params: Vec<(&'static str, String)>| {
        let api = api.clone();
        async move {
            let mut p: Vec<(&str, &str)> = vec![("src", "live/pg")];
            p.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
            api.query(&p).await
        }
    };

    let (status, first) = page(vec![]).await;
    assert_eq!(status, 200, "{first}");
    assert_page_shape(&first);
    assert_eq!(
        (
            first["total"].as_u64(),
            first["pageNo"].as_u64(),
            first["pageSize"].as_u64()
        ),
        (Some(105), Some(1), Some(100))
    );
    let first_ids = ids(&first);
    assert_eq!(first_ids.len(), 100);
    // Newest first: the five newer tasks lead.
    assert!(
        first_ids[..5].iter().all(|id| id.starts_with("new")),
        "{first_ids:?}"
    );
    let (_, second) = page(vec![("pageNo", "2".into())]).await;
    assert_eq!(
        (
            second["total"].as_u64(),
            second["pageNo"].as_u64(),
            ids(&second).len()
        ),
        (Some(105), Some(2), 5)
    );
    let (_, past) = page(vec![("pageNo", "3".into())]).await;
    assert_eq!((past["total"].as_u64(), ids(&past).len()), (Some(105), 0));
    let (_, full) = page(vec![("pageSize", "100".into())]).await;
    assert_eq!(ids(&full), first_ids);

    // Small pages cover every task exactly once, in the same order.
    let mut all = Vec::new();
    for no in 1..=15 {
        let (status, p) = page(vec![("pageNo", no.to_string()), ("pageSize", "7".into())]).await;
        assert_eq!(
            (status, p["pageSize"].as_u64(), p["pageNo"].as_u64()),
            (200, Some(7), Some(no)),
            "{p}"
        );
        all.extend(ids(&p));
    }
    assert_eq!(all.len(), 105);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 105);
    assert_eq!(all[..100], first_ids[..]);
    assert_eq!(all[100..], ids(&second)[..]);

    // Above 100, pageSize is capped at 100 (the seed: default 100, max 100), not refused.
    for size in ["101", "500", "99999999999"] {
        let (status, capped) = page(vec![("pageSize", size.into())]).await;
        assert_eq!(status, 200, "pageSize={size}: {capped}");
        assert_page_shape(&capped);
        assert_eq!(
            (
                capped["total"].as_u64(),
                capped["pageNo"].as_u64(),
                capped["pageSize"].as_u64()
            ),
            (Some(105), Some(1), Some(100)),
            "pageSize={size}"
        );
        assert_eq!(ids(&capped), first_ids, "pageSize={size}");
    }
    let (_, rest) = page(vec![("pageNo", "2".into()), ("pageSize", "500".into())]).await;
    assert_eq!(
        (rest["pageSize"].as_u64(), ids(&rest)),
        (Some(100), ids(&second))
    );

    for (name, value) in [
        ("pageSize", "0"),
        ("pageSize", "-1"),
        ("pageSize", "-500"),
        ("pageSize", "ten"),
        ("pageNo", "0"),
        ("pageNo", "1.5"),
    ] {
        let (status, answer) = page(vec![(name, value.to_string())]).await;
        assert_refused(
            status,
            &answer,
            400,
            "1001",
            &format!("params {name} format is error"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_one_of_id_src_forward_is_required() {
    let svc = Service::start(&[]);
    let api = svc.api();
    create(&api, "present", None).await;
    let msg = "params id, src, forward not exist or empty";
    for params in [
        vec![],
        vec![("pageNo", "1"), ("pageSize", "10")],
        vec![("id", ""), ("src", ""), ("forward", "")],
        vec![("ids", "present")],
    ] {
        let (status, answer) = api.query(&params).await;
        assert_refused(status, &answer, 400, "1001", msg);
    }
    // Other parameters (a cache-buster) are ignored.
    let (status, page) = api.query(&[("id", "present"), ("_", "12345")]).await;
    assert_eq!((status, page["total"].as_u64()), (200, Some(1)), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_has_the_seed_shape_through_a_task_life() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    let mut body = future_seed_body(&rx.url);
    body["list"][0]["id"] = json!("life");
    let (status, answer) = api.forward(&body).await;
    assert_accepted(status, &answer);

    // Scheduled: nothing happened yet.
    let (status, page) = api.query(&[("id", "life")]).await;
    assert_eq!(status, 200);
    assert_page_shape(&page);
    let item = &page["list"][0];
    assert_eq!(item["type"], "live");
    assert_eq!(
        serde_json::from_str::<Value>(item["src"].as_str().unwrap()).unwrap(),
        body["list"][0]["src"]
    );
    let fields = |i: &Value| {
        [
            i["cmd"].clone(),
            i["code"].clone(),
            i["msg"].clone(),
            i["startTime"].clone(),
            i["endTime"].clone(),
        ]
    };
    assert_eq!(
        fields(item),
        [json!("1"), json!(""), json!(""), json!(""), json!("")]
    );

    // Stopped: the stop's code and message, and its time as endTime (Beijing time by default).
    let (status, answer) = api.forward(&cmd_body("2", "life", json!({}), None)).await;
    assert_accepted(status, &answer);
    let stop = rx.wait_for("life", 1).await.remove(0);
    let (_, page) = api.query(&[("id", "life")]).await;
    assert_page_shape(&page);
    let end = format_time(stop["event_time"].as_i64().unwrap(), 8 * 3600);
    assert_eq!(
        fields(&page["list"][0]),
        [
            json!("2"),
            json!("1"),
            json!("푸시 스트림 성공"),
            json!(""),
            json!(end)
        ]
    );
    // Resumed: cmd 5, no end any more.
    let (status, answer) = api.forward(&cmd_body("5", "life", json!({}), None)).await;
    assert_accepted(status, &answer);
    let (_, page) = api.query(&[("id", "life")]).await;
    assert_eq!(page["list"][0]["cmd"], "5");
    assert_eq!(page["list"][0]["endTime"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_follow_the_configured_utc_offset() {
    let svc = Service::start(&[("RELAYCAST_DISPLAY_UTC_OFFSET", "-05:30")]);
    let api = svc.api();
    let rx = CallbackReceiver::start().await;
    let (status, answer) = api
        .forward(&live_body("tz", &[&dest("tz")], Some(&rx.url)))
        .await;
    assert_accepted(status, &answer);
    let (status, answer) = api.forward(&cmd_body("2", "tz", json!({}), None)).await;
    assert_accepted(status, &answer);
    let stop = rx.wait_for("tz", 1).await.remove(0);
    let item = api.task("tz").await.unwrap();
    assert_eq!(
        item["endTime"],
        format_time(stop["event_time"].as_i64().unwrap(), -(5 * 3600 + 30 * 60))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_task_shows_its_start_and_calls_back_0() {
    use relaycast_core::app::relay::apply_to_task;
    use relaycast_core::domain::relay::state::Action;
    use relaycast_core::domain::relay::types::TaskId;

    let h = InProcess::start().await;
    let rx = CallbackReceiver::start().await;
    let (status, answer) = h
        .api
        .forward(&live_body("pushing", &[&dest("pushing")], Some(&rx.url)))
        .await;
    assert_accepted(status, &answer);
    // What a relay worker reports once the first destination publishes.
    let host = h.host();
    let id = TaskId::parse("pushing").unwrap();
    apply_to_task(&host.ports, &host.settings, ACME.0, &id, Action::Started)
        .await
        .unwrap()
        .expect("the task exists");

    let cb = rx.wait_for("pushing", 1).await.remove(0);
    assert_eq!(
        (cb["code"].as_str(), cb["msg"].as_str(), cb["cmd"].as_str()),
        (Some("0"), Some("푸시 시작!"), Some("1"))
    );
    assert_eq!(cb["forwardurl"], dest("pushing"));
    assert_eq!(cb["event_time"].as_i64(), Some(h.now_ms()));
    let (status, page) = h.api.query(&[("id", "pushing")]).await;
    assert_eq!(status, 200);
    assert_page_shape(&page);
    let item = &page["list"][0];
    assert_eq!(
        (item["code"].as_str(), item["msg"].as_str()),
        (Some("0"), Some("푸시 시작!"))
    );
    assert_eq!(item["startTime"], format_time(h.now_ms(), 8 * 3600));
    assert_eq!(item["endTime"], "");
    h.stop().await;
}

/// The `relay` extension object: `state`, `currentSrc`, `bitrateKbps`, `fps`, `positionMs`,
/// and `forward` entries of `url`, `state`, `reconnects`.
fn assert_relay_shape(relay: &Value) {
    let mut keys: Vec<&str> = relay
        .as_object()
        .unwrap_or_else(|| panic!("relay is not an object: {relay}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bitrateKbps",
            "currentSrc",
            "forward",
            "fps",
            "positionMs",
            "state"
        ],
        "{relay}"
    );
    assert!(
        relay["state"].is_string()
            && relay["bitrateKbps"].is_f64()
            && relay["fps"].is_f64()
            && relay["positionMs"].is_u64(),
        "{relay}"
    );
    assert!(
        relay["currentSrc"].is_u64() || relay["currentSrc"].is_null(),
        "{relay}"
    );
    for f in relay["forward"]
        .as_array()
        .unwrap_or_else(|| panic!("{relay}"))
    {
        let mut keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["reconnects", "state", "url"], "{relay}");
        assert!(
            f["url"].is_string() && f["state"].is_string() && f["reconnects"].is_u64(),
            "{relay}"
        );
    }
}

/// What a worker writes back (its heartbeat's report) is in the query's `relay` object while the
/// task runs, next to the seed's fields, and gone once it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_shows_the_workers_report_in_relay() {
    use relaycast_core::app::relay::{apply_to_task, record_run_stats};
    use relaycast_core::domain::relay::state::Action;
    use relaycast_core::domain::relay::task::{ForwardStats, RunStats};
    use relaycast_core::domain::relay::types::TaskId;

    let h = InProcess::start().await;
    let (a, b) = (dest("report-a"), dest("report-b"));
    let (status, answer) = h.api.forward(&live_body("report", &[&a, &b], None)).await;
    assert_accepted(status, &answer);
    let host = h.host();
    let id = TaskId::parse("report").unwrap();
    // Starting, nothing reported: the seed's nine fields only.
    let item = h.api.task("report").await.unwrap();
    assert!(item.get("relay").is_none(), "{item}");

    apply_to_task(&host.ports, &host.settings, ACME.0, &id, Action::Started)
        .await
        .unwrap()
        .expect("the task exists");
    let stats = RunStats {
        bitrate_bps: Some(1_600_000),
        fps: Some(25.0),
        position_ms: Some(4_200),
        reported_at_ms: Some(h.now_ms()),
        current_source: Some(0),
        forwards: vec![
            ForwardStats {
                url: a.clone(),
                state: "publishing".into(),
                reconnects: 0,
            },
            ForwardStats {
                url: b.clone(),
                state: "backoff".into(),
                reconnects: 2,
            },
        ],
    };
    record_run_stats(&host.ports, ACME.0, &id, stats, 1)
        .await
        .unwrap();
    let (status, page) = h.api.query(&[("id", "report")]).await;
    assert_eq!(status, 200);
    assert_page_shape(&page);
    let item = &page["list"][0];
    assert_eq!(
        item["relay"],
        json!({
            "state": "running",
            "currentSrc": 0,
            "bitrateKbps": 1600.0,
            "fps": 25.0,
            "positionMs": 4200,
            "forward": [
                {"url": a, "state": "publishing", "reconnects": 0},
                {"url": b, "state": "backoff", "reconnects": 2},
            ]
        }),
        "{item}"
    );
    assert_eq!(
        (item["code"].as_str(), item["cmd"].as_str()),
        (Some("0"), Some("1"))
    );

    // cmd=2 of one destination: it shows as stopped.
    let (status, answer) = h
        .api
        .forward(&cmd_body(
            "2",
            "report",
            json!({"forward": [{"url": b}]}),
            None,
        ))
        .await;
    assert_accepted(status, &answer);
    let item = h.api.task("report").await.unwrap();
    assert_eq!(item["relay"]["forward"][1]["state"], "stopped", "{item}");
    assert_eq!(item["relay"]["forward"][0]["state"], "publishing", "{item}");

    // Stopped: the report leaves the answer, and a late report does not bring it back.
    let (status, answer) = h
        .api
        .forward(&cmd_body("2", "report", json!({}), None))
        .await;
    assert_accepted(status, &answer);
    record_run_stats(
        &host.ports,
        ACME.0,
        &id,
        RunStats {
            reported_at_ms: Some(h.now_ms()),
            ..RunStats::default()
        },
        1,
    )
    .await
    .unwrap();
    let (_, page) = h.api.query(&[("id", "report")]).await;
    assert_page_shape(&page);
    assert!(page["list"][0].get("relay").is_none(), "{page}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_query_parameters_are_a_400_naming_the_field_or_an_answer_never_a_500() {
    let svc = Service::start(&[]);
    let api = svc.api();
    create(&api, "odd", None).await;
    let long = "x".repeat(5000);
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![("id", "é")], 400, Some("params id format is error")),
        (vec![("id", "a\0b")], 400, Some("params id format is error")),
        (
            vec![("src", &long)],
            400,
            Some("params src format is error"),
        ),
        (
            vec![("forward", &long)],
            400,
            Some("params forward format is error"),
        ),
        (vec![("src", "%")], 200, None),
        (vec![("src", "\u{0}")], 200, None),
        (vec![("forward", "' OR 1=1 --")], 200, None),
        (vec![("src", "odd"), ("pageNo", "1000000")], 200, None),
        (
            vec![("src", "odd"), ("pageNo", "1000001")],
            400,
            Some("params pageNo format is error"),
        ),
        (
            vec![("src", "odd"), ("pageNo", "99999999999999999999")],
            400,
            Some("params pageNo format is error"),
        ),
        (
            vec![("src", "odd"), ("pageSize", " 10")],
            400,
            Some("params pageSize format is error"),
        ),
        // A repeated parameter: the first counts.
        (vec![("id", "odd"), ("id", "x:y")], 200, None),
    ];
    for (params, want, msg) in &cases {
        let (status, answer) = api.query(params).await;
        assert_eq!(status, *want, "{params:?}: {answer}");
        match msg {
            Some(m) => assert_refused(status, &answer, 400, "1001", m),
            None => assert_page_shape(&answer),
        }
    }
    let (_, page) = api.query(&[("id", "odd"), ("id", "x:y")]).await;
    assert_eq!(page["total"], 1, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_used_randoms_survive_a_restart() {
    let mut svc = Service::start(&[]);
    let api = svc.api();
    create(&api, "durable", None).await;
    let r = Api::fresh_r();
    let pairs = vec![
        ("n".to_string(), ACME.0.to_string()),
        ("r".to_string(), r.clone()),
        ("k".to_string(), api.sign(&r)),
        ("id".to_string(), "durable".to_string()),
    ];
    assert_eq!(api.query_signed_as(&pairs).await.0, 200);
    let before = api.task("durable").await.unwrap();

    svc.restart();
    let api = svc.api();
    assert_eq!(api.task("durable").await, Some(before));
    let (status, answer) = api.query_signed_as(&pairs).await;
    assert_refused(status, &answer, 403, "1002", "random is repeat");
    // And the destination is still taken.
    let rx = CallbackReceiver::start().await;
    let (status, answer) = api
        .forward(&live_body("late", &[&dest("durable")], Some(&rx.url)))
        .await;
    assert_accepted(status, &answer);
    assert_eq!(rx.wait_for("late", 1).await[0]["code"], "91");
}
