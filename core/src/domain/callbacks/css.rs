//! Tencent CSS event callbacks (SCHEMAS.md §2): reading the signed JSON events CSS sends, and
//! writing the payload we send to a callback template's URL.

use serde_json::{json, Map, Value};

use super::event::{EventSource, ParsedEvent, StreamEvent, StreamEventKind, StreamPath};
use super::InboundError;

/// The signature fields of a CSS event, checked once the account's callback key is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CssAuth {
    /// The signature's expiry time, Unix seconds.
    pub t: i64,
    /// `md5(key + t)`.
    pub sign: String,
}

/// The app when an event names none (CSS's default AppName).
pub const DEFAULT_APP: &str = "live";

fn first_str<'a>(body: &'a Map<String, Value>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| body.get(*n).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

fn int_field(body: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, InboundError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(InboundError::Field {
            field: name,
            reason: "not an integer".into(),
        }),
        // CSS documents some numbers as strings (`push_duration`, `t` in some samples).
        Some(Value::String(s)) => {
            s.trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| InboundError::Field {
                    field: name,
                    reason: "not an integer".into(),
                })
        }
        Some(_) => Err(InboundError::Field {
            field: name,
            reason: "not an integer".into(),
        }),
    }
}

fn string_field(body: &Map<String, Value>, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads one CSS event: its kind, stream, times and ids, and the signature to check.
pub fn parse_css_event(body: &[u8]) -> Result<(ParsedEvent, CssAuth), InboundError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| InboundError::Malformed(format!("not JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(InboundError::Malformed("not a JSON object".into()));
    };
    let event_type = int_field(&body, "event_type")?.ok_or(InboundError::Field {
        field: "event_type",
        reason: "missing".into(),
    })?;
    let kind = StreamEventKind::from_css_event_type(event_type)
        .ok_or_else(|| InboundError::UnknownEvent(format!("event_type {event_type}")))?;
    let t = int_field(&body, "t")?.ok_or(InboundError::Field {
        field: "t",
        reason: "missing".into(),
    })?;
    let sign = first_str(&body, &["sign"])
        .ok_or(InboundError::Field {
            field: "sign",
            reason: "missing".into(),
        })?
        .to_string();
    body.remove("t");
    body.remove("sign");

    // Push domain, app and stream: §2.3–2.5 use app/appname/stream_id, 317 camelCase, 321
    // domain/path.
    let domain = first_str(&body, &["app", "domain"]).ok_or(InboundError::Field {
        field: "app",
        reason: "the push domain is missing".into(),
    })?;
    let app = first_str(&body, &["appname", "path"])
        .map(|a| a.trim_matches('/'))
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_APP);
    let stream = first_str(&body, &["stream_id", "streamId", "channel_id", "channelId"]).ok_or(
        InboundError::Field {
            field: "stream_id",
            reason: "missing".into(),
        },
    )?;
    let stream = StreamPath::parse(domain, app, stream)?;

    let event_time_s = match kind {
        StreamEventKind::Record => int_field(&body, "end_time")?,
        StreamEventKind::Snapshot => int_field(&body, "create_time")?,
        StreamEventKind::Porn => int_field(&body, "sendTime")?,
        StreamEventKind::PushException => int_field(&body, "data_time")?.map(|ms| ms / 1000),
        _ => int_field(&body, "event_time")?,
    };
    let parsed = ParsedEvent {
        kind,
        source: EventSource::Css,
        stream,
        client_id: None,
        client_ip: string_field(&body, "user_ip"),
        node: string_field(&body, "node"),
        params: string_field(&body, "stream_param").unwrap_or_default(),
        event_time_ms: event_time_s.map(|s| s.saturating_mul(1000)),
        sequence: string_field(&body, "sequence"),
        errcode: int_field(&body, "errcode")?,
        errmsg: string_field(&body, "errmsg"),
        // The event without its signature is its identity: a retry with a fresh `t` is the
        // same event. serde_json's map is ordered, so this text is canonical.
        identity: vec![Value::Object(body.clone()).to_string()],
        payload: body,
    };
    Ok((parsed, CssAuth { t, sign }))
}

/// The CSS payload (SCHEMAS.md §2) of `event`, without `t` and `sign` (added at each delivery
/// attempt, since `t` is an expiry time) and with our `event_id`. An event CSS sent us is
/// forwarded with every field it had; events of other senders get the fields of §2.3–2.5.
pub fn render_css_payload(event: &StreamEvent) -> Option<Map<String, Value>> {
    let event_type = event.kind.css_event_type()?;
    let mut out = if event.source == EventSource::Css {
        event.payload.clone()
    } else {
        hook_payload(event)
    };
    out.insert("event_type".into(), json!(event_type));
    out.insert("event_id".into(), json!(event.id));
    Some(out)
}

fn hook_payload(event: &StreamEvent) -> Map<String, Value> {
    let s = &event.stream;
    let secs = event.event_time_ms / 1000;
    let mut out = Map::new();
    out.insert("app".into(), json!(s.domain));
    out.insert("appname".into(), json!(s.app));
    out.insert("stream_id".into(), json!(s.stream));
    out.insert("channel_id".into(), json!(s.stream));
    out.insert("stream_param".into(), json!(event.params));
    match event.kind {
        StreamEventKind::Publish | StreamEventKind::Unpublish => {
            out.insert("event_time".into(), json!(secs));
            out.insert(
                "sequence".into(),
                json!(event.sequence.clone().unwrap_or_default()),
            );
            out.insert("node".into(), json!(event.node.clone().unwrap_or_default()));
            out.insert(
                "user_ip".into(),
                json!(event.client_ip.clone().unwrap_or_default()),
            );
            out.insert("errcode".into(), json!(event.errcode.unwrap_or(0)));
            out.insert(
                "errmsg".into(),
                json!(event.errmsg.clone().unwrap_or_else(|| "ok".into())),
            );
            out.insert("width".into(), json!(0));
            out.insert("height".into(), json!(0));
            if event.kind == StreamEventKind::Unpublish {
                out.insert(
                    "push_duration".into(),
                    json!(event.duration_ms.unwrap_or(0).to_string()),
                );
            }
        }
        StreamEventKind::Record => {
            let file = event
                .payload
                .get("path")
                .or_else(|| event.payload.get("file"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let format = file
                .rsplit_once('.')
                .map(|(_, ext)| ext.to_ascii_lowercase())
                .unwrap_or_default();
            out.insert(
                "file_format".into(),
                json!(if format == "m3u8" {
                    "hls".to_string()
                } else {
                    format
                }),
            );
            out.insert("end_time".into(), json!(secs));
            out.insert("video_url".into(), json!(file));
            out.insert(
                "task_id".into(),
                json!(event.sequence.clone().unwrap_or_default()),
            );
        }
        _ => {
            out.insert("event_time".into(), json!(secs));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str = r#"{"app":"test.domain.com","appid":12345678,"appname":"live","channel_id":"test_stream","errcode":0,"errmsg":"ok",
 "event_time":1703731478,"event_type":1,"height":0,"idc_id":34,"node":"42.81.194.37","sequence":"2210464508206756938",
 "set_id":2,"sign":"df49","stream_id":"test_stream","stream_param":"stream_param=test","t":1703732078,
 "user_ip":"1.1.1.1","width":0}"#;

    #[test]
    fn reads_the_documented_push_event() {
        let (e, auth) = parse_css_event(PUSH.as_bytes()).unwrap();
        assert_eq!(e.kind, StreamEventKind::Publish);
        assert_eq!(e.stream.joined(), "test.domain.com/live/test_stream");
        assert_eq!(e.sequence.as_deref(), Some("2210464508206756938"));
        assert_eq!(e.event_time_ms, Some(1_703_731_478_000));
        assert_eq!(e.client_ip.as_deref(), Some("1.1.1.1"));
        assert_eq!(
            auth,
            CssAuth {
                t: 1703732078,
                sign: "df49".into()
            }
        );
        assert!(!e.payload.contains_key("sign") && !e.payload.contains_key("t"));
    }

    #[test]
    fn a_resent_event_with_a_new_signature_has_the_same_identity() {
        let (a, _) = parse_css_event(PUSH.as_bytes()).unwrap();
        let again = PUSH
            .replace("\"t\":1703732078", "\"t\":1703739999")
            .replace("df49", "beef");
        let (b, _) = parse_css_event(again.as_bytes()).unwrap();
        assert_eq!(a.identity, b.identity);
        let other = PUSH.replace("2210464508206756938", "1");
        assert_ne!(
            a.identity,
            parse_css_event(other.as_bytes()).unwrap().0.identity
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(matches!(
            parse_css_event(b"{"),
            Err(InboundError::Malformed(_))
        ));
        assert!(matches!(
            parse_css_event(b"[1]"),
            Err(InboundError::Malformed(_))
        ));
        assert!(matches!(
            parse_css_event(br#"{"event_type":999,"t":1,"sign":"x"}"#),
            Err(InboundError::UnknownEvent(_))
        ));
        assert!(matches!(
            parse_css_event(br#"{"event_type":1,"sign":"x","app":"a.com","stream_id":"s"}"#),
            Err(InboundError::Field { field: "t", .. })
        ));
        assert!(matches!(
            parse_css_event(br#"{"event_type":1,"t":1,"sign":"x","stream_id":"s"}"#),
            Err(InboundError::Field { field: "app", .. })
        ));
        assert!(matches!(
            parse_css_event(br#"{"event_type":"x","t":1,"sign":"x"}"#),
            Err(InboundError::Field {
                field: "event_type",
                ..
            })
        ));
    }

    #[test]
    fn porn_and_exception_events_name_their_stream_their_own_way() {
        let porn = br#"{"event_type":317,"t":9,"sign":"s","app":"d.com","appname":"live","streamId":"s1","img":"http://x/i.jpg","type":[1],"confidence":90,"normalScore":1,"hotScore":1,"pornScore":90,"screenshotTime":1,"sendTime":2}"#;
        assert_eq!(
            parse_css_event(porn).unwrap().0.stream.joined(),
            "d.com/live/s1"
        );
        let exc = br#"{"event_type":321,"t":9,"sign":"s","domain":"d.com","path":"/live","stream_id":"s2","data_time":5000,"abnormal_event":[]}"#;
        let (e, _) = parse_css_event(exc).unwrap();
        assert_eq!(
            (e.stream.joined(), e.event_time_ms),
            ("d.com/live/s2".into(), Some(5000))
        );
    }
}
