//! Recording's control plane through a real `relaycast up`: recording templates, push domains
//! and record rules over signed `/v1` HTTP, and the look-up the recorder trigger makes
//! (`recording_binding`) on what the API stored.

mod support;

use relaycast_core::app::record_templates::recording_binding;
use relaycast_core::domain::callbacks::StreamPath;
use relaycast_core::domain::recording::RecordFormat;
use serde_json::{json, Value};
use support::*;

const DOMAIN: &str = "push.example.com";
const PULL: &str = "rtmp://origin.example.com:1935/{app}/{stream}";

fn template_body(name: &str) -> Value {
    json!({
        "TemplateName": name,
        "Description": "main show",
        "HlsParam": { "Enable": 1, "VodSubAppId": 251195406 },
        "FlvParam": { "Enable": 1, "RecordInterval": 2222, "StorageTime": 86400, "VodFileName": "{StreamID}_{StartYear}{StartMonth}{StartDay}" },
        "HlsSpecialParam": { "FlowContinueDuration": 300 },
        "SnapshotParam": { "Enable": 1, "Interval": 30 },
        "RecordNotifyUrl": "https://hooks.example.com/record",
        "CallbackKey": "recordkey12345678",
    })
}

async fn create_template(api: &Api, name: &str) -> u64 {
    api.v1_ok(
        "POST",
        "/v1/record-templates",
        &[],
        Some(template_body(name)),
    )
    .await["TemplateId"]
        .as_u64()
        .expect("TemplateId")
}

/// Asserts a refusal: the status, the envelope's code, and that the message names `field`.
fn assert_error(status: u16, v: &Value, want_status: u16, want_code: &str, field: &str) {
    assert_eq!(status, want_status, "{v}");
    let e = &v["Response"]["Error"];
    assert_eq!(e["Code"], want_code, "{v}");
    assert!(
        e["Message"].as_str().unwrap_or_default().contains(field),
        "message names {field}: {v}"
    );
    assert!(v["Response"]["RequestId"].is_string(), "{v}");
}

async fn templates(api: &Api) -> Vec<Value> {
    api.v1_ok("GET", "/v1/record-templates", &[], None).await["Templates"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn templates_are_created_listed_modified_and_deleted() {
    let svc = Service::start(&[]);
    let api = svc.api();
    assert!(templates(&api).await.is_empty());

    let id = create_template(&api, "录制-main").await;
    let listed = templates(&api).await;
    assert_eq!(listed.len(), 1);
    let t = api
        .v1_ok("GET", &format!("/v1/record-templates/{id}"), &[], None)
        .await["Template"]
        .clone();
    assert_eq!(listed[0], t);
    assert_eq!(
        (t["TemplateId"].as_u64(), t["TemplateName"].as_str()),
        (Some(id), Some("录制-main"))
    );
    assert_eq!(
        t["FlvParam"],
        json!({"Enable": 1, "RecordInterval": 2222, "StorageTime": 86400, "VodSubAppId": 251195406, "VodFileName": "{StreamID}_{StartYear}{StartMonth}{StartDay}"})
    );
    assert_eq!(t["Mp4Param"]["Enable"], 0);
    assert_eq!(
        t["HlsParam"]["RecordInterval"], 1800,
        "the default interval"
    );
    assert_eq!(t["HlsSpecialParam"]["FlowContinueDuration"], 300);
    assert_eq!(t["SnapshotParam"], json!({"Enable": 1, "Interval": 30}));
    assert_eq!(t["RecordNotifyUrl"], "https://hooks.example.com/record");
    assert_eq!(
        t["CallbackKey"], "***5678",
        "the key is never returned in full"
    );
    assert!(
        !svc.process.stdout_text().contains("recordkey"),
        "nor logged"
    );

    // Modify: given fields replace the stored ones, the rest stays.
    let m = api
        .v1_ok(
            "PUT",
            &format!("/v1/record-templates/{id}"),
            &[],
            Some(
                json!({"Mp4Param": {"Enable": 1, "RecordInterval": 60}, "FlvParam": {"Enable": 0}}),
            ),
        )
        .await;
    assert_eq!(
        (
            m["Template"]["Mp4Param"]["Enable"].as_u64(),
            m["Template"]["Mp4Param"]["RecordInterval"].as_u64()
        ),
        (Some(1), Some(60))
    );
    assert_eq!(
        (
            m["Template"]["FlvParam"]["Enable"].as_u64(),
            m["Template"]["FlvParam"]["RecordInterval"].as_u64()
        ),
        (Some(0), Some(2222))
    );
    let after_modify = templates(&api).await;

    // Out of range, at both edges: refused with the field and the range, nothing stored.
    let path = format!("/v1/record-templates/{id}");
    for (body, field) in [
        (
            json!({"Mp4Param": {"RecordInterval": 59}}),
            "Mp4Param.RecordInterval",
        ),
        (
            json!({"Mp4Param": {"RecordInterval": 7201}}),
            "Mp4Param.RecordInterval",
        ),
        (
            json!({"HlsParam": {"StorageTime": 129_600_001}}),
            "HlsParam.StorageTime",
        ),
        (
            json!({"HlsParam": {"StorageTime": -1}}),
            "HlsParam.StorageTime",
        ),
        (
            json!({"HlsSpecialParam": {"FlowContinueDuration": 1801}}),
            "FlowContinueDuration",
        ),
        (
            json!({"SnapshotParam": {"Interval": 0}}),
            "SnapshotParam.Interval",
        ),
        (
            json!({"HlsParam": {"Enable": 0}, "Mp4Param": {"Enable": 0}, "FlvParam": {"Enable": 0}}),
            "format",
        ),
        (
            json!({"HlsParam": {"VodSubAppId": 1}, "Mp4Param": {"VodSubAppId": 2}}),
            "VodSubAppId",
        ),
        (json!({"TemplateName": "no spaces"}), "TemplateName"),
        (json!({"CallbackKey": "not-alnum"}), "CallbackKey"),
    ] {
        let (status, v) = api.v1("PUT", &path, &[], Some(body.clone())).await;
        assert_error(status, &v, 400, "InvalidParameterValue", field);
        let mut create = template_body("t2");
        create
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let (status, v) = api
            .v1("POST", "/v1/record-templates", &[], Some(create))
            .await;
        assert_eq!(status, 400, "create with {body}: {v}");
    }
    let (status, v) = api
        .v1(
            "PUT",
            &path,
            &[],
            Some(json!({"AacParam": {"Enable": 1, "VodFileName": "{StreamID}_{RandomID}"}})),
        )
        .await;
    assert_error(
        status,
        &v,
        400,
        "InvalidParameter.InvalidVodFileName",
        "RandomID",
    );
    let (status, v) = api
        .v1(
            "POST",
            "/v1/record-templates",
            &[],
            Some(
                json!({"TemplateName": "x", "HlsParam": {"Enable": 1}, "Mp3Param": {"Enable": 1}}),
            ),
        )
        .await;
    assert_error(status, &v, 400, "UnknownParameter", "Mp3Param");
    let (status, v) = api
        .v1(
            "POST",
            "/v1/record-templates",
            &[],
            Some(json!({"HlsParam": {"Enable": 1}})),
        )
        .await;
    assert_error(status, &v, 400, "MissingParameter", "TemplateName");
    assert_eq!(
        templates(&api).await,
        after_modify,
        "refused requests store nothing"
    );

    // Accounts do not see each other's templates.
    let (status, v) = svc.api_as(OTHER).v1("GET", &path, &[], None).await;
    assert_error(
        status,
        &v,
        404,
        "ResourceNotFound.TemplateNotFound",
        &id.to_string(),
    );
    assert!(templates(&svc.api_as(OTHER)).await.is_empty());

    api.v1_ok("DELETE", &path, &[], None).await;
    assert!(templates(&api).await.is_empty());
    let (status, v) = api.v1("GET", &path, &[], None).await;
    assert_error(
        status,
        &v,
        404,
        "ResourceNotFound.TemplateNotFound",
        &id.to_string(),
    );
}

#[tokio::test]
async fn an_account_has_at_most_50_templates() {
    let svc = Service::start(&[]);
    let api = svc.api_as(BULK);
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(create_template(&api, &format!("t{i}")).await);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50, "every template has its own id");
    let (status, v) = api
        .v1(
            "POST",
            "/v1/record-templates",
            &[],
            Some(template_body("t50")),
        )
        .await;
    assert_error(status, &v, 409, "InternalError.ConfOutLimit", "50");
    assert_eq!(templates(&api).await.len(), 50);
}

#[tokio::test]
async fn domains_and_rules_bind_templates_and_keep_them_in_use() {
    let svc = Service::start(&[]);
    let api = svc.api();
    let t1 = create_template(&api, "domain-wide").await;
    let t2 = create_template(&api, "one-stream").await;

    let (status, v) = api
        .v1(
            "POST",
            "/v1/record-rules",
            &[],
            Some(json!({"DomainName": DOMAIN, "TemplateId": t1})),
        )
        .await;
    assert_error(status, &v, 404, "ResourceNotFound.DomainNotExist", DOMAIN);

    let d = api
        .v1_ok(
            "POST",
            "/v1/domains",
            &[],
            Some(json!({"DomainName": "Push.Example.com", "PullUrlTemplate": PULL})),
        )
        .await;
    assert_eq!(
        (
            d["Domain"]["DomainName"].as_str(),
            d["Domain"]["PullUrlTemplate"].as_str()
        ),
        (Some(DOMAIN), Some(PULL))
    );
    let (status, v) = api
        .v1(
            "POST",
            "/v1/domains",
            &[],
            Some(json!({"DomainName": DOMAIN})),
        )
        .await;
    assert_error(
        status,
        &v,
        409,
        "FailedOperation.DomainAlreadyExist",
        "exists already",
    );
    let (status, v) = svc
        .api_as(OTHER)
        .v1(
            "POST",
            "/v1/domains",
            &[],
            Some(json!({"DomainName": DOMAIN})),
        )
        .await;
    assert_error(
        status,
        &v,
        409,
        "FailedOperation.DomainAlreadyExist",
        "another account",
    );
    let (status, v) = svc
        .api_as(OTHER)
        .v1("GET", &format!("/v1/domains/{DOMAIN}"), &[], None)
        .await;
    assert_error(status, &v, 404, "ResourceNotFound.DomainNotExist", DOMAIN);
    let (status, v) = api.v1("POST", "/v1/domains", &[], Some(json!({"DomainName": "other.example.com", "PullUrlTemplate": "rtmp://origin.example.com/{app}/{session}"}))).await;
    assert_error(status, &v, 400, "InvalidParameterValue", "PullUrlTemplate");

    let domain_rule = api
        .v1_ok(
            "POST",
            "/v1/record-rules",
            &[],
            Some(json!({"DomainName": DOMAIN, "TemplateId": t1})),
        )
        .await["Rule"]
        .clone();
    assert_eq!(
        (
            domain_rule["AppName"].as_str(),
            domain_rule["StreamName"].as_str()
        ),
        (Some(""), Some("")),
        "\"\" = the whole domain"
    );
    api.v1_ok("POST", "/v1/record-rules", &[], Some(json!({"DomainName": DOMAIN, "AppName": "live", "StreamName": "cam1", "TemplateId": t2}))).await;
    let (status, v) = api.v1("POST", "/v1/record-rules", &[], Some(json!({"DomainName": DOMAIN, "AppName": "live", "StreamName": "cam1", "TemplateId": t1}))).await;
    assert_error(status, &v, 409, "FailedOperation.RuleAlreadyExist", "cam1");
    let (status, v) = api
        .v1(
            "POST",
            "/v1/record-rules",
            &[],
            Some(json!({"DomainName": DOMAIN, "AppName": "live", "TemplateId": 9999})),
        )
        .await;
    assert_error(status, &v, 400, "InvalidParameter.ConfNotFound", "9999");

    let rules = api.v1_ok("GET", "/v1/record-rules", &[], None).await["Rules"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rules.len(), 2, "{rules:?}");
    let specific = rules
        .iter()
        .find(|r| r["StreamName"] == "cam1")
        .expect("the stream's rule");
    assert_eq!(
        (
            specific["DomainName"].as_str(),
            specific["AppName"].as_str(),
            specific["TemplateId"].as_u64()
        ),
        (Some(DOMAIN), Some("live"), Some(t2))
    );
    for r in &rules {
        for field in ["CreateTime", "UpdateTime"] {
            let time = r[field].as_str().unwrap_or_default();
            assert!(
                time.len() == 19 && time.as_bytes()[10] == b' ',
                "{field} like 2024-04-17 11:55:21: {r}"
            );
        }
    }
    assert!(svc
        .api_as(OTHER)
        .v1_ok("GET", "/v1/record-rules", &[], None)
        .await["Rules"]
        .as_array()
        .unwrap()
        .is_empty());

    // Bound templates and domains with rules stay.
    let (status, v) = api
        .v1("DELETE", &format!("/v1/record-templates/{t2}"), &[], None)
        .await;
    assert_error(status, &v, 409, "FailedOperation.ConfInUsed", "cam1");
    let (status, v) = api
        .v1("DELETE", &format!("/v1/domains/{DOMAIN}"), &[], None)
        .await;
    assert_error(status, &v, 409, "FailedOperation.ConfInUsed", DOMAIN);

    // A rule is deleted by its exact three names; "" has to be said.
    let (status, v) = api
        .v1(
            "DELETE",
            "/v1/record-rules",
            &[("DomainName", DOMAIN), ("AppName", "live")],
            None,
        )
        .await;
    assert_error(status, &v, 400, "MissingParameter", "StreamName");
    let (status, v) = api
        .v1(
            "DELETE",
            "/v1/record-rules",
            &[
                ("DomainName", DOMAIN),
                ("AppName", "live"),
                ("StreamName", ""),
            ],
            None,
        )
        .await;
    assert_error(status, &v, 404, "ResourceNotFound.RuleNotFound", DOMAIN);
    api.v1_ok(
        "DELETE",
        "/v1/record-rules",
        &[
            ("DomainName", DOMAIN),
            ("AppName", "live"),
            ("StreamName", "cam1"),
        ],
        None,
    )
    .await;
    api.v1_ok("DELETE", &format!("/v1/record-templates/{t2}"), &[], None)
        .await;
    api.v1_ok(
        "DELETE",
        "/v1/record-rules",
        &[("DomainName", DOMAIN), ("AppName", ""), ("StreamName", "")],
        None,
    )
    .await;
    assert!(
        api.v1_ok("GET", "/v1/record-rules", &[], None).await["Rules"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The domain: modified, then deleted once no rule uses it.
    let m = api
        .v1_ok(
            "PUT",
            &format!("/v1/domains/{DOMAIN}"),
            &[],
            Some(json!({"PullUrlTemplate": "https://origin.example.com/{app}/{stream}.flv"})),
        )
        .await;
    assert_eq!(
        m["Domain"]["PullUrlTemplate"],
        "https://origin.example.com/{app}/{stream}.flv"
    );
    let listed = api.v1_ok("GET", "/v1/domains", &[], None).await["Domains"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(
        listed[0]["PullUrlTemplate"],
        "https://origin.example.com/{app}/{stream}.flv"
    );
    api.v1_ok("DELETE", &format!("/v1/domains/{DOMAIN}"), &[], None)
        .await;
    assert!(api.v1_ok("GET", "/v1/domains", &[], None).await["Domains"]
        .as_array()
        .unwrap()
        .is_empty());
    // Now free for another account.
    svc.api_as(OTHER)
        .v1_ok(
            "POST",
            "/v1/domains",
            &[],
            Some(json!({"DomainName": DOMAIN})),
        )
        .await;
}

#[tokio::test]
async fn internal_pull_and_notify_urls_are_refused_by_default() {
    let svc = Service::start(&[("RELAYCAST_ALLOW_PRIVATE_TARGETS", "false")]);
    let api = svc.api();
    for pull in [
        "rtmp://127.0.0.1:1935/{app}/{stream}",
        "rtmp://0x7f.1/{app}/{stream}",
        "http://10.0.0.8/{app}/{stream}.flv",
        "http://localhost/{stream}.flv",
    ] {
        let (status, v) = api
            .v1(
                "POST",
                "/v1/domains",
                &[],
                Some(json!({"DomainName": DOMAIN, "PullUrlTemplate": pull})),
            )
            .await;
        assert_error(
            status,
            &v,
            400,
            "InvalidParameter.UrlNotSafe",
            "PullUrlTemplate",
        );
    }
    assert!(
        api.v1_ok("GET", "/v1/domains", &[], None).await["Domains"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
    api.v1_ok(
        "POST",
        "/v1/domains",
        &[],
        Some(json!({"DomainName": DOMAIN, "PullUrlTemplate": PULL})),
    )
    .await;
    let (status, v) = api
        .v1(
            "PUT",
            &format!("/v1/domains/{DOMAIN}"),
            &[],
            Some(json!({"PullUrlTemplate": "rtmp://192.168.1.2/{app}/{stream}"})),
        )
        .await;
    assert_error(
        status,
        &v,
        400,
        "InvalidParameter.UrlNotSafe",
        "192.168.1.2",
    );
    assert_eq!(
        api.v1_ok("GET", &format!("/v1/domains/{DOMAIN}"), &[], None)
            .await["Domain"]["PullUrlTemplate"],
        PULL
    );

    let mut body = template_body("t");
    body["RecordNotifyUrl"] = json!("http://127.0.0.1:9/record");
    let (status, v) = api
        .v1("POST", "/v1/record-templates", &[], Some(body))
        .await;
    assert_error(
        status,
        &v,
        400,
        "InvalidParameter.UrlNotSafe",
        "RecordNotifyUrl",
    );
    assert!(templates(&api).await.is_empty());
}

#[tokio::test]
async fn recording_binding_finds_the_most_specific_rule_and_fills_the_pull_url() {
    let h = InProcess::start().await;
    let api = &h.api;
    let ports = &h.host().ports;
    let stream = |app: &str, name: &str| StreamPath::parse(DOMAIN, app, name).unwrap();
    let t_domain = create_template(api, "domain").await;
    let t_app = create_template(api, "app").await;
    let t_stream = create_template(api, "stream").await;

    // No domain, then a domain without a pull URL: nothing records.
    assert_eq!(
        recording_binding(ports, &stream("live", "cam1"))
            .await
            .unwrap(),
        None
    );
    api.v1_ok(
        "POST",
        "/v1/domains",
        &[],
        Some(json!({"DomainName": DOMAIN})),
    )
    .await;
    api.v1_ok(
        "POST",
        "/v1/record-rules",
        &[],
        Some(json!({"DomainName": DOMAIN, "TemplateId": t_domain})),
    )
    .await;
    assert_eq!(
        recording_binding(ports, &stream("live", "cam1"))
            .await
            .unwrap(),
        None,
        "no PullUrlTemplate"
    );
    api.v1_ok(
        "PUT",
        &format!("/v1/domains/{DOMAIN}"),
        &[],
        Some(json!({"PullUrlTemplate": PULL})),
    )
    .await;

    api.v1_ok(
        "POST",
        "/v1/record-rules",
        &[],
        Some(json!({"DomainName": DOMAIN, "AppName": "live", "TemplateId": t_app})),
    )
    .await;
    api.v1_ok("POST", "/v1/record-rules", &[], Some(json!({"DomainName": DOMAIN, "AppName": "live", "StreamName": "cam1", "TemplateId": t_stream}))).await;

    let b = recording_binding(ports, &stream("live", "cam1"))
        .await
        .unwrap()
        .expect("bound");
    assert_eq!(
        (b.account.as_str(), b.template.id, b.rule.stream.as_str()),
        (ACME.0, t_stream, "cam1"),
        "the stream's own rule first"
    );
    assert_eq!(b.pull_url, "rtmp://origin.example.com:1935/live/cam1");
    assert_eq!(b.domain.domain, DOMAIN);
    let spec = b.template.spec();
    assert_eq!(spec.template_id, Some(t_stream));
    assert_eq!(
        spec.formats.iter().map(|f| f.format).collect::<Vec<_>>(),
        vec![RecordFormat::Hls, RecordFormat::Flv]
    );
    assert_eq!(
        (
            spec.namespace,
            spec.resume_timeout_secs,
            spec.snapshot_interval_secs
        ),
        (251195406, 300, Some(30))
    );
    assert_eq!(
        spec.callback_key.as_ref().map(|k| k.expose()),
        Some("recordkey12345678"),
        "the recorder gets the key itself"
    );

    let b = recording_binding(ports, &stream("live", "cam2"))
        .await
        .unwrap()
        .expect("bound");
    assert_eq!(
        (b.template.id, b.rule.app.as_str(), b.pull_url.as_str()),
        (t_app, "live", "rtmp://origin.example.com:1935/live/cam2"),
        "then the app's"
    );
    let b = recording_binding(ports, &stream("studio", "cam1"))
        .await
        .unwrap()
        .expect("bound");
    assert_eq!(
        (b.template.id, b.pull_url.as_str()),
        (t_domain, "rtmp://origin.example.com:1935/studio/cam1"),
        "then the domain's"
    );
    assert_eq!(
        recording_binding(
            ports,
            &StreamPath::parse("elsewhere.example.com", "live", "cam1").unwrap()
        )
        .await
        .unwrap(),
        None
    );

    // Unbinding: the next push records with the next rule down; editing a template changes
    // what later recordings take, and a spec taken earlier is a copy.
    api.v1_ok(
        "DELETE",
        "/v1/record-rules",
        &[
            ("DomainName", DOMAIN),
            ("AppName", "live"),
            ("StreamName", "cam1"),
        ],
        None,
    )
    .await;
    let b = recording_binding(ports, &stream("live", "cam1"))
        .await
        .unwrap()
        .expect("bound");
    assert_eq!(b.template.id, t_app);
    api.v1_ok(
        "PUT",
        &format!("/v1/record-templates/{t_app}"),
        &[],
        Some(json!({"HlsSpecialParam": {"FlowContinueDuration": 0}})),
    )
    .await;
    let later = recording_binding(ports, &stream("live", "cam1"))
        .await
        .unwrap()
        .expect("bound")
        .template
        .spec();
    assert_eq!(
        (spec.resume_timeout_secs, later.resume_timeout_secs),
        (300, 0)
    );
    h.stop().await;
}
