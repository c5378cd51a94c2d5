//! The HTTP hooks of self-hosted ingest servers: nginx-rtmp's `on_*` notifications
//! (form-encoded, told apart by `call`) and SRS's HTTP callbacks (JSON, told apart by
//! `action`). They cannot sign, so they are authenticated by a per-account hook token in the
//! hook URL (see `app::callbacks`); the push domain comes from that URL's `domain` parameter,
//! else from the `tcUrl` host or the SRS `vhost`.

use serde_json::{Map, Value};

use super::event::{parse_domain, EventSource, ParsedEvent, StreamEventKind, StreamPath};
use super::InboundError;

/// What the hook URL itself says about its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookOrigin {
    /// The push domain from the hook URL's `domain` query parameter.
    pub domain: Option<String>,
    /// The IP of the server that called the hook (the ingest node).
    pub sender_ip: Option<String>,
}

/// nginx-rtmp's own form fields; every other field is an argument of the client's URL.
const NGINX_FIELDS: &[&str] = &[
    "call",
    "addr",
    "clientid",
    "app",
    "name",
    "tcurl",
    "type",
    "flashver",
    "swfurl",
    "pageurl",
    "epoch",
    "path",
    "recorder",
    "time",
    "timestamp",
    "start",
    "duration",
    "reset",
];

fn host_of_tc_url(tc_url: &str) -> Option<String> {
    let url = url::Url::parse(tc_url).ok()?;
    url.host_str()
        .map(|h| h.trim_matches(['[', ']']).to_string())
}

fn resolve_domain(
    origin: &HookOrigin,
    fallbacks: &[Option<String>],
) -> Result<String, InboundError> {
    let domain = origin
        .domain
        .clone()
        .or_else(|| fallbacks.iter().flatten().find(|d| !d.is_empty()).cloned())
        .ok_or(InboundError::Field {
            field: "domain",
            reason: "give it in the hook URL (?domain=) or send a tcUrl".into(),
        })?;
    parse_domain(&domain)
}

/// Reads one nginx-rtmp notification (`application/x-www-form-urlencoded`).
pub fn parse_nginx_rtmp(body: &[u8], origin: &HookOrigin) -> Result<ParsedEvent, InboundError> {
    if std::str::from_utf8(body).is_err() {
        return Err(InboundError::Malformed("form is not UTF-8".into()));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    if pairs.is_empty() {
        return Err(InboundError::Malformed("empty form".into()));
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let call = get("call").ok_or(InboundError::Field {
        field: "call",
        reason: "missing".into(),
    })?;
    let kind = match call {
        "publish" => StreamEventKind::Publish,
        "publish_done" => StreamEventKind::Unpublish,
        "play" => StreamEventKind::Play,
        "play_done" | "done" => StreamEventKind::PlayDone,
        "record_done" => StreamEventKind::Record,
        "update_publish" | "update_play" => StreamEventKind::Update,
        other => return Err(InboundError::UnknownEvent(format!("call={other}"))),
    };
    let app = get("app").ok_or(InboundError::Field {
        field: "app",
        reason: "missing".into(),
    })?;
    let name = get("name").ok_or(InboundError::Field {
        field: "name",
        reason: "missing".into(),
    })?;
    let domain = resolve_domain(origin, &[get("tcurl").and_then(host_of_tc_url)])?;
    let stream = StreamPath::parse(&domain, app, name)?;
    let params = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            pairs
                .iter()
                .filter(|(k, _)| !NGINX_FIELDS.contains(&k.as_str())),
        )
        .finish();
    let client_id = get("clientid").map(str::to_string);
    let mut payload: Map<String, Value> = Map::new();
    for (k, v) in &pairs {
        payload.insert(k.clone(), Value::String(v.clone()));
    }
    let mut identity = vec![
        call.to_string(),
        stream.joined(),
        client_id.clone().unwrap_or_default(),
    ];
    if kind == StreamEventKind::Record {
        identity.push(get("path").unwrap_or_default().to_string());
    }
    if kind == StreamEventKind::Update {
        identity.push(get("time").unwrap_or_default().to_string());
    }
    Ok(ParsedEvent {
        kind,
        source: EventSource::NginxRtmp,
        stream,
        client_id,
        client_ip: get("addr").map(str::to_string),
        node: origin.sender_ip.clone(),
        params,
        event_time_ms: None,
        sequence: None,
        errcode: None,
        errmsg: None,
        payload,
        identity,
    })
}

/// SRS's name for "no vhost configured".
const SRS_DEFAULT_VHOST: &str = "__defaultVhost__";

/// Reads one SRS HTTP callback (JSON).
pub fn parse_srs(body: &[u8], origin: &HookOrigin) -> Result<ParsedEvent, InboundError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| InboundError::Malformed(format!("not JSON: {e}")))?;
    let Value::Object(payload) = value else {
        return Err(InboundError::Malformed("not a JSON object".into()));
    };
    let get = |name: &str| match payload.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let action = get("action").ok_or(InboundError::Field {
        field: "action",
        reason: "missing".into(),
    })?;
    let kind = match action.as_str() {
        "on_publish" => StreamEventKind::Publish,
        "on_unpublish" => StreamEventKind::Unpublish,
        "on_dvr" => StreamEventKind::Record,
        "on_hls" => StreamEventKind::HlsSegment,
        "on_play" => StreamEventKind::Play,
        "on_stop" => StreamEventKind::PlayDone,
        other => return Err(InboundError::UnknownEvent(format!("action={other}"))),
    };
    let app = get("app").ok_or(InboundError::Field {
        field: "app",
        reason: "missing".into(),
    })?;
    let name = get("stream").ok_or(InboundError::Field {
        field: "stream",
        reason: "missing".into(),
    })?;
    let vhost = get("vhost").filter(|v| v != SRS_DEFAULT_VHOST);
    let domain = resolve_domain(
        origin,
        &[vhost, get("tcUrl").and_then(|t| host_of_tc_url(&t))],
    )?;
    let stream = StreamPath::parse(&domain, &app, &name)?;
    let client_id = get("client_id");
    let mut identity = vec![
        action.clone(),
        stream.joined(),
        client_id.clone().unwrap_or_default(),
    ];
    if matches!(kind, StreamEventKind::Record | StreamEventKind::HlsSegment) {
        identity.push(get("file").unwrap_or_default());
        identity.push(get("seq_no").unwrap_or_default());
    }
    Ok(ParsedEvent {
        kind,
        source: EventSource::Srs,
        stream,
        client_id,
        client_ip: get("ip"),
        node: origin.sender_ip.clone(),
        params: get("param")
            .map(|p| p.trim_start_matches('?').to_string())
            .unwrap_or_default(),
        event_time_ms: None,
        sequence: None,
        errcode: None,
        errmsg: None,
        payload,
        identity,
    })
}

/// One query parameter of a push URL's query string (for publish authorization).
pub fn param<'a>(params: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    url::form_urlencoded::parse(params.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_nginx_rtmp_publish_with_url_arguments() {
        let body = b"app=live&flashver=FMLE&swfurl=&tcurl=rtmp%3A%2F%2Fingest.example.com%3A1935%2Flive&pageurl=&addr=10.0.0.9&clientid=7&call=publish&name=cam1&type=live&txSecret=abc&txTime=65A0";
        let e = parse_nginx_rtmp(body, &HookOrigin::default()).unwrap();
        assert_eq!(e.kind, StreamEventKind::Publish);
        assert_eq!(e.stream.joined(), "ingest.example.com/live/cam1");
        assert_eq!(e.client_id.as_deref(), Some("7"));
        assert_eq!(e.client_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(e.params, "txSecret=abc&txTime=65A0");
        let with_domain = HookOrigin {
            domain: Some("push.acme.com".into()),
            sender_ip: None,
        };
        assert_eq!(
            parse_nginx_rtmp(body, &with_domain).unwrap().stream.domain,
            "push.acme.com"
        );
    }

    #[test]
    fn refuses_unknown_calls_and_broken_forms() {
        let o = HookOrigin {
            domain: Some("d.com".into()),
            sender_ip: None,
        };
        assert!(matches!(
            parse_nginx_rtmp(b"call=connect&app=live&name=x", &o),
            Err(InboundError::UnknownEvent(_))
        ));
        assert!(matches!(
            parse_nginx_rtmp(b"", &o),
            Err(InboundError::Malformed(_))
        ));
        assert!(matches!(
            parse_nginx_rtmp(b"app=live&name=x", &o),
            Err(InboundError::Field { field: "call", .. })
        ));
        assert!(matches!(
            parse_nginx_rtmp(b"call=publish&app=live&name=x", &HookOrigin::default()),
            Err(InboundError::Field {
                field: "domain",
                ..
            })
        ));
        assert!(matches!(
            parse_nginx_rtmp(b"call=publish&app=live&name=a/b", &o),
            Err(InboundError::Field {
                field: "stream",
                ..
            })
        ));
    }

    #[test]
    fn reads_srs_hooks() {
        let body = br#"{"server_id":"vid-1","action":"on_publish","client_id":"341w361a","ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","tcUrl":"rtmp://srs.example.com/live","stream":"livestream","param":"?secret=x","stream_url":"/live/livestream","stream_id":"vid-2"}"#;
        let e = parse_srs(body, &HookOrigin::default()).unwrap();
        assert_eq!(
            (e.kind, e.stream.joined(), e.params.as_str()),
            (
                StreamEventKind::Publish,
                "srs.example.com/live/livestream".into(),
                "secret=x"
            )
        );
        let dvr = br#"{"action":"on_dvr","client_id":"1","ip":"1.2.3.4","vhost":"v.example.com","app":"live","stream":"s","file":"./objs/nginx/html/live/s.1.flv"}"#;
        assert_eq!(
            parse_srs(dvr, &HookOrigin::default())
                .unwrap()
                .stream
                .domain,
            "v.example.com"
        );
        assert!(matches!(
            parse_srs(
                br#"{"action":"on_connect","app":"a","stream":"s"}"#,
                &HookOrigin::default()
            ),
            Err(InboundError::UnknownEvent(_))
        ));
        assert!(matches!(
            parse_srs(b"not json", &HookOrigin::default()),
            Err(InboundError::Malformed(_))
        ));
    }
}
