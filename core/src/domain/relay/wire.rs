//! Parsing a `forwardRequest.action` body into a typed [`ForwardRequest`].
//!
//! The body goes through `serde_json::Value` by hand rather than a derived `Deserialize`, so that
//! every refusal carries the seed's message naming the field. Decisions, for fields the seed
//! leaves open:
//!
//! - **Types are strict.** The seed types `cmd`, `start`, `end` and every `fops`/`extendParam`
//!   value as String and its examples send strings (`"cmd": "1"`), so a JSON number there is
//!   refused like any wrong type (`params start format is error`, `cmd가 잘못되었습니다`, …): it
//!   would otherwise hide client bugs (a float `1.5e12` for a timestamp) and diverge from clients
//!   written against the reference. The reverse (a string where an array or object is expected)
//!   is refused the same way.
//! - **Unknown fields are refused** with `params {field} format is error`, at every level: a typo
//!   (`"fps "`, `"wmgravity"`) silently ignored would be a task that runs differently from what
//!   its owner asked for.
//! - **`null` and `""` mean absent** for optional fields, since clients commonly send either for
//!   "not set"; for required fields they get the seed's "missing" message.
//! - Fields that a command ignores (e.g. `fops` on `cmd=2`) are accepted but not validated, so a
//!   client may resend its original body with another `cmd`.
//!
//! Checks that need the current time (`end` in the future) are in [`ForwardRequest::check_times`],
//! so parsing stays pure; [`parse_forward_request_at`] does both.

use serde_json::{Map, Value};

use super::types::*;
use super::{MAX_SOURCES, MAX_SRC_JSON_CHARS, MIN_INTERVAL_MS};
use crate::domain::error::RequestError;

/// The most tasks one request may carry: each becomes store writes and a job.
pub const MAX_LIST_ITEMS: usize = 100;
/// The largest body parsed: room for [`MAX_LIST_ITEMS`] tasks at the seed's src limit
/// (204,800 characters each, about 20 MB in all) with their other fields. The handler should
/// refuse longer bodies before reading them whole.
pub const MAX_BODY_BYTES: usize = 24 * 1024 * 1024;

const TOP_FIELDS: &[&str] = &["transcallbackurl", "cmd", "type", "list"];
const ITEM_FIELDS: &[&str] = &[
    "id",
    "src",
    "forward",
    "start",
    "end",
    "fops",
    "extendParam",
];
const SRC_FIELDS: &[&str] = &[
    "url",
    "wmImage",
    "wmGravity",
    "wmPosition",
    "relofftime",
    "pullStreamHeaders",
];
const FORWARD_FIELDS: &[&str] = &["url", "resetUrl"];
const FOPS_FIELDS: &[&str] = &[
    "bps",
    "res",
    "fps",
    "vcodec",
    "acodec",
    "bufferTime",
    "forced_gopInterval",
];
const EXTEND_FIELDS: &[&str] = &["waitCrtUrlFinish", "loop", "index", "autoSwitchBack"];
const HEADER_FIELDS: &[&str] = &["headerKey", "headerValue"];

/// A parsed and validated `forwardRequest.action`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardRequest {
    /// `type`.
    pub task_type: TaskType,
    /// `transcallbackurl`, where callbacks go.
    pub callback_url: Option<HttpUrl>,
    /// What to do.
    pub command: Command,
}

impl ForwardRequest {
    /// The `cmd` of the request.
    pub fn cmd(&self) -> Cmd {
        match self.command {
            Command::CreateTasks(_) => Cmd::Create,
            Command::StopTasks(_) => Cmd::Stop,
            Command::UpdateSources(_) => Cmd::Update,
            Command::ResumeTasks(_) => Cmd::Resume,
        }
    }

    /// The checks that depend on the time of the request (only `cmd=1` has times): `end` must be
    /// in the future (`params end plan is error!`) and, when `start` is omitted (the task starts
    /// now), at least five minutes away (`params start and end interval Too Brief!`).
    pub fn check_times(&self, now_ms: i64) -> Result<(), RequestError> {
        let Command::CreateTasks(tasks) = &self.command else {
            return Ok(());
        };
        for t in tasks {
            if let Some(end) = t.end_ms {
                if end <= now_ms {
                    return Err(RequestError::EndInPast);
                }
                if t.start_ms.is_none() && end - now_ms < MIN_INTERVAL_MS {
                    return Err(RequestError::IntervalTooBrief);
                }
            }
        }
        Ok(())
    }

    /// Every destination host of the request, for the account's host check.
    pub fn destination_hosts(&self) -> Vec<String> {
        match &self.command {
            Command::CreateTasks(ts) => ts
                .iter()
                .flat_map(|t| t.forwards.iter().map(|u| u.host().to_string()))
                .collect(),
            Command::ResumeTasks(ts) => ts
                .iter()
                .flat_map(|t| {
                    t.forwards
                        .iter()
                        .filter_map(|(_, r)| r.as_ref().map(|u| u.host().to_string()))
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The typed commands.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `cmd=1`: create (or replace: an existing id is stopped first) and start tasks.
    CreateTasks(Vec<NewRelayTask>),
    /// `cmd=2`: stop tasks or some of their destinations.
    StopTasks(Vec<StopTask>),
    /// `cmd=3`: replace the sources (and fops/extendParam) of running tasks.
    UpdateSources(Vec<UpdateSources>),
    /// `cmd=5`: resume stopped tasks, optionally replacing destinations.
    ResumeTasks(Vec<ResumeTask>),
}

/// One task of a `cmd=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRelayTask {
    /// `id`.
    pub id: TaskId,
    /// `src`, in order: the first is the primary, the others backups (live) or the playlist (video).
    pub sources: Vec<Source>,
    /// `forward`: distinct destinations.
    pub forwards: Vec<RtmpUrl>,
    /// `start`, Unix ms; `None` starts now.
    pub start_ms: Option<i64>,
    /// `end`, Unix ms; `None` runs until stopped or the source ends.
    pub end_ms: Option<i64>,
    /// `fops`.
    pub fops: Fops,
    /// `extendParam`.
    pub extend: ExtendParam,
}

/// One task of a `cmd=2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopTask {
    /// `id`.
    pub id: TaskId,
    /// The destinations to stop; empty means all of them.
    pub forwards: Vec<RtmpUrl>,
}

/// One task of a `cmd=3`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateSources {
    /// `id`.
    pub id: TaskId,
    /// The new `src` list.
    pub sources: Vec<Source>,
    /// The new `fops`.
    pub fops: Fops,
    /// The new `extendParam`.
    pub extend: ExtendParam,
}

/// One task of a `cmd=5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeTask {
    /// `id`.
    pub id: TaskId,
    /// The destinations as sent: `(url, resetUrl)`; a `resetUrl` replaces `url`.
    pub forwards: Vec<(RtmpUrl, Option<RtmpUrl>)>,
}

/// Parses and validates a body, then the time rules at `now_ms`. What a handler calls.
pub fn parse_forward_request_at(body: &[u8], now_ms: i64) -> Result<ForwardRequest, RequestError> {
    let req = parse_forward_request(body)?;
    req.check_times(now_ms)?;
    Ok(req)
}

/// Parses and validates a body, except for the rules that need the current time (see
/// [`ForwardRequest::check_times`]). Never panics, whatever the bytes.
pub fn parse_forward_request(body: &[u8]) -> Result<ForwardRequest, RequestError> {
    let body_err = || RequestError::field("body");
    if body.len() > MAX_BODY_BYTES {
        return Err(body_err());
    }
    let text = std::str::from_utf8(body).map_err(|_| body_err())?;
    let value: Value = serde_json::from_str(text).map_err(|_| body_err())?;
    let top = value.as_object().ok_or_else(body_err)?;
    check_known(top, TOP_FIELDS)?;

    let cmd = match top.get("cmd") {
        Some(Value::String(s)) => Cmd::parse(s)?,
        _ => return Err(RequestError::BadCmd),
    };
    let task_type = match top.get("type") {
        Some(Value::String(s)) => TaskType::parse(s)?,
        _ => return Err(RequestError::BadType),
    };
    let callback_url = opt_str(top, "transcallbackurl", || {
        RequestError::field("transcallbackurl")
    })?
    .map(|s| HttpUrl::parse(s, "transcallbackurl"))
    .transpose()?;

    let list = match top.get("list") {
        None | Some(Value::Null) => return Err(RequestError::EmptyList),
        Some(Value::Array(a)) if a.is_empty() => return Err(RequestError::EmptyList),
        Some(Value::Array(a)) if a.len() > MAX_LIST_ITEMS => {
            return Err(RequestError::field("list"))
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(RequestError::field("list")),
    };
    let mut items = Vec::with_capacity(list.len());
    let mut ids = std::collections::HashSet::new();
    for v in list {
        let item = v.as_object().ok_or_else(|| RequestError::field("list"))?;
        check_known(item, ITEM_FIELDS)?;
        let id = match item.get("id") {
            None | Some(Value::Null) => return Err(RequestError::EmptyId),
            Some(Value::String(s)) => TaskId::parse(s)?,
            Some(_) => return Err(RequestError::field("id")),
        };
        // Two entries for one id in one request would race each other.
        if !ids.insert(id.clone()) {
            return Err(RequestError::field("id"));
        }
        items.push((id, item));
    }

    let command = match cmd {
        Cmd::Create => Command::CreateTasks(
            items
                .into_iter()
                .map(|(id, m)| parse_create(id, m, task_type))
                .collect::<Result<_, _>>()?,
        ),
        Cmd::Stop => Command::StopTasks(
            items
                .into_iter()
                .map(|(id, m)| parse_stop(id, m))
                .collect::<Result<_, _>>()?,
        ),
        Cmd::Update => Command::UpdateSources(
            items
                .into_iter()
                .map(|(id, m)| parse_update(id, m, task_type))
                .collect::<Result<_, _>>()?,
        ),
        Cmd::Resume => Command::ResumeTasks(
            items
                .into_iter()
                .map(|(id, m)| parse_resume(id, m))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(ForwardRequest {
        task_type,
        callback_url,
        command,
    })
}

/// Refuses the first key (in key order, so the message is deterministic) not in `known`.
fn check_known(map: &Map<String, Value>, known: &[&str]) -> Result<(), RequestError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        // Bound what is echoed back: the name comes from the client.
        Some(k) => Err(RequestError::field(k.chars().take(64).collect::<String>())),
        None => Ok(()),
    }
}

/// An optional string: absent, `null` and `""` are `None`; another JSON type is `wrong()`.
fn opt_str<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    wrong: impl Fn() -> RequestError,
) -> Result<Option<&'a str>, RequestError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong()),
    }
}

/// An optional object: absent and `null` are `None`.
fn opt_obj<'a>(
    map: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, RequestError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(RequestError::field(field)),
    }
}

/// A 13-digit millisecond timestamp.
fn timestamp(
    map: &Map<String, Value>,
    field: &str,
    err: RequestError,
) -> Result<Option<i64>, RequestError> {
    match opt_str(map, field, || err.clone())? {
        None => Ok(None),
        Some(s) if s.len() == 13 => parse_digits(s, 13).map(|v| Some(v as i64)).ok_or(err),
        Some(_) => Err(err),
    }
}

fn parse_create(
    id: TaskId,
    item: &Map<String, Value>,
    ty: TaskType,
) -> Result<NewRelayTask, RequestError> {
    let sources = parse_sources(item.get("src"), ty)?;
    let forwards = match item.get("forward") {
        None | Some(Value::Null) => return Err(RequestError::EmptyForwardList),
        Some(Value::Array(a)) if a.is_empty() => return Err(RequestError::EmptyForwardList),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(RequestError::field("forward")),
    };
    // Each destination is a pusher, and its claim is written in the task's transaction.
    if forwards.len() > super::MAX_FORWARDS {
        return Err(RequestError::field("forward"));
    }
    let mut dests: Vec<RtmpUrl> = Vec::with_capacity(forwards.len());
    for f in forwards {
        let (url, _reset) = parse_forward(f)?;
        // The same destination twice would be two publishers fighting over one stream key.
        if dests.contains(&url) {
            return Err(RequestError::BadForward);
        }
        dests.push(url);
    }
    let start_ms = timestamp(item, "start", RequestError::BadStart)?;
    let end_ms = timestamp(item, "end", RequestError::BadEnd)?;
    if let (Some(s), Some(e)) = (start_ms, end_ms) {
        if e - s < MIN_INTERVAL_MS {
            return Err(RequestError::IntervalTooBrief);
        }
    }
    let fops = parse_fops(item)?;
    let extend = parse_extend(item, sources.len())?;
    check_watermark_codec(&sources, &fops)?;
    Ok(NewRelayTask {
        id,
        sources,
        forwards: dests,
        start_ms,
        end_ms,
        fops,
        extend,
    })
}

fn parse_stop(id: TaskId, item: &Map<String, Value>) -> Result<StopTask, RequestError> {
    let forwards = match item.get("forward") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|f| parse_forward(f).map(|(u, _)| u))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(RequestError::field("forward")),
    };
    Ok(StopTask { id, forwards })
}

fn parse_update(
    id: TaskId,
    item: &Map<String, Value>,
    ty: TaskType,
) -> Result<UpdateSources, RequestError> {
    let sources = parse_sources(item.get("src"), ty)?;
    let fops = parse_fops(item)?;
    let extend = parse_extend(item, sources.len())?;
    check_watermark_codec(&sources, &fops)?;
    Ok(UpdateSources {
        id,
        sources,
        fops,
        extend,
    })
}

fn parse_resume(id: TaskId, item: &Map<String, Value>) -> Result<ResumeTask, RequestError> {
    let forwards = match item.get("forward") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(parse_forward).collect::<Result<_, _>>()?,
        Some(_) => return Err(RequestError::field("forward")),
    };
    Ok(ResumeTask { id, forwards })
}

/// `{"url": ..., "resetUrl": ...}`.
fn parse_forward(v: &Value) -> Result<(RtmpUrl, Option<RtmpUrl>), RequestError> {
    let f = v.as_object().ok_or(RequestError::BadForward)?;
    check_known(f, FORWARD_FIELDS)?;
    let url = match f.get("url") {
        Some(Value::String(s)) => RtmpUrl::parse(s)?,
        _ => return Err(RequestError::BadForward),
    };
    let reset = opt_str(f, "resetUrl", || RequestError::field("resetUrl"))?
        .map(|s| RtmpUrl::parse(s).map_err(|_| RequestError::field("resetUrl")))
        .transpose()?;
    Ok((url, reset))
}

fn parse_sources(v: Option<&Value>, ty: TaskType) -> Result<Vec<Source>, RequestError> {
    let arr = match v {
        None | Some(Value::Null) => return Err(RequestError::EmptySrcList),
        Some(Value::Array(a)) if a.is_empty() => return Err(RequestError::EmptySrcList),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(RequestError::field("src")),
    };
    if arr.len() > MAX_SOURCES {
        return Err(RequestError::TooManySources);
    }
    // The seed counts the characters of the src array's content; its JSON text is that.
    let json_chars = v.map(|v| v.to_string().chars().count()).unwrap_or(0);
    if json_chars > MAX_SRC_JSON_CHARS {
        return Err(RequestError::SrcTooLong);
    }
    arr.iter().map(|s| parse_source(s, ty)).collect()
}

fn parse_source(v: &Value, ty: TaskType) -> Result<Source, RequestError> {
    let m = v.as_object().ok_or(RequestError::BadSrc)?;
    check_known(m, SRC_FIELDS)?;
    let url = match m.get("url") {
        Some(Value::String(s)) => SourceUrl::parse(s, ty)?,
        _ => return Err(RequestError::BadSrc),
    };
    let mut src = Source::new(url);
    src.wm_image = opt_str(m, "wmImage", || RequestError::field("wmImage"))?
        .map(WmImages::parse)
        .transpose()?;
    src.wm_gravity = opt_str(m, "wmGravity", || RequestError::field("wmGravity"))?
        .map(Gravity::parse)
        .transpose()?;
    src.wm_position = opt_str(m, "wmPosition", || RequestError::field("wmPosition"))?
        .map(WmPosition::parse)
        .transpose()?;
    // The seed says both at once is "unpredictable": refuse rather than pick one silently.
    if src.wm_gravity.is_some() && src.wm_position.is_some() {
        return Err(RequestError::field("wmPosition"));
    }
    src.relofftime = opt_str(m, "relofftime", || RequestError::BadRelOffTime)?
        .map(|s| RelOffTime::parse(s, ty))
        .transpose()?;
    src.pull_stream_headers = parse_headers(m.get("pullStreamHeaders"))?;
    Ok(src)
}

fn parse_headers(v: Option<&Value>) -> Result<Vec<PullHeader>, RequestError> {
    let err = || RequestError::field("pullStreamHeaders");
    let arr = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err()),
    };
    if v.map(|v| v.to_string().len()).unwrap_or(0) > PullHeader::MAX_TOTAL_BYTES {
        return Err(err());
    }
    arr.iter()
        .map(|h| {
            let h = h.as_object().ok_or_else(err)?;
            check_known(h, HEADER_FIELDS)?;
            match (h.get("headerKey"), h.get("headerValue")) {
                (Some(Value::String(k)), Some(Value::String(v))) => PullHeader::new(k, v),
                _ => Err(err()),
            }
        })
        .collect()
}

fn parse_fops(item: &Map<String, Value>) -> Result<Fops, RequestError> {
    let Some(m) = opt_obj(item, "fops")? else {
        return Ok(Fops::default());
    };
    check_known(m, FOPS_FIELDS)?;
    let s = |name: &'static str| opt_str(m, name, move || RequestError::field(name));
    let fops = Fops {
        bps: s("bps")?.map(Fops::parse_bps).transpose()?,
        res: s("res")?.map(Resolution::parse).transpose()?,
        fps: s("fps")?.map(Fops::parse_fps).transpose()?,
        vcodec: s("vcodec")?.map(VideoCodec::parse).transpose()?,
        acodec: s("acodec")?.map(AudioCodec::parse).transpose()?,
        buffer_time_s: s("bufferTime")?.map(Fops::parse_buffer_time).transpose()?,
        forced_gop_interval_ms: s("forced_gopInterval")?.map(Fops::parse_gop).transpose()?,
    };
    if fops.needs_video_encoder() && fops.vcodec.is_none() {
        return Err(RequestError::field("vcodec"));
    }
    Ok(fops)
}

fn parse_extend(
    item: &Map<String, Value>,
    source_count: usize,
) -> Result<ExtendParam, RequestError> {
    let Some(m) = opt_obj(item, "extendParam")? else {
        return Ok(ExtendParam::default());
    };
    check_known(m, EXTEND_FIELDS)?;
    let s = |name: &'static str| opt_str(m, name, move || RequestError::field(name));
    let wait_current_finish = match s("waitCrtUrlFinish")? {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(RequestError::field("waitCrtUrlFinish")),
    };
    let loop_count = s("loop")?
        .map(LoopCount::parse)
        .transpose()?
        .unwrap_or_default();
    let start_index = match s("index")? {
        None => None,
        Some(v) => Some(
            parse_digits(v, 3)
                .filter(|i| *i >= 1 && (*i as usize) <= source_count)
                .map(|i| i as u32)
                .ok_or_else(|| RequestError::field("index"))?,
        ),
    };
    let auto_switch_back_s = parse_auto_switch_back(m.get("autoSwitchBack"))?;
    Ok(ExtendParam {
        wait_current_finish,
        loop_count,
        start_index,
        auto_switch_back_s,
    })
}

/// `extendParam.autoSwitchBack` (a relaycast extension): seconds as an integer string or a JSON
/// integer, `0..=3600`; absent, `null`, `""` or `0` mean manual (`None`). Unlike the seed's
/// fields a number is accepted too, since the extension is documented as either.
fn parse_auto_switch_back(v: Option<&Value>) -> Result<Option<u32>, RequestError> {
    let err = || RequestError::field("autoSwitchBack");
    let secs = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => parse_digits(s, 4).ok_or_else(err)?,
        Some(Value::Number(n)) => n.as_u64().ok_or_else(err)?,
        Some(_) => return Err(err()),
    };
    match u32::try_from(secs) {
        Ok(0) => Ok(None),
        Ok(s) if s <= ExtendParam::MAX_AUTO_SWITCH_BACK_S => Ok(Some(s)),
        _ => Err(err()),
    }
}

/// A watermark is an overlay filter, which needs a re-encode with libx264 (seed: fops.vcodec).
fn check_watermark_codec(sources: &[Source], fops: &Fops) -> Result<(), RequestError> {
    if sources.iter().any(|s| s.wm_image.is_some()) && fops.vcodec != Some(VideoCodec::Libx264) {
        return Err(RequestError::field("vcodec"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed's example body, with usable destinations instead of its markdown-mangled ones.
    pub(crate) fn seed_body() -> Value {
        json!({
            "transcallbackurl": "http://example.com/api/callback",
            "cmd": "1",
            "type": "live",
            "list": [{
                "id": "task_unique_id_001",
                "src": [
                    {"url": "http://source.example.com/live/stream1.flv", "wmImage": "http://source.example.com/assets/logo.jpg", "wmGravity": "TOP_LEFT"},
                    {"url": "http://backup.example.com/live/stream1.flv"}
                ],
                "forward": [{"url": "rtmp://127.0.0.1:1935/live/output1"}, {"url": "rtmp://127.0.0.1:1935/live/output2"}],
                "start": "1495177025000",
                "end": "1495184225000",
                "fops": {"bps": "1200000", "res": "1280x720", "fps": "25", "vcodec": "libx264", "forced_gopInterval": "3000"},
                "extendParam": {"waitCrtUrlFinish": "1"}
            }]
        })
    }

    fn parse(v: &Value) -> Result<ForwardRequest, RequestError> {
        parse_forward_request(v.to_string().as_bytes())
    }

    /// `seed_body()` with `f` applied.
    fn with(f: impl FnOnce(&mut Value)) -> Result<ForwardRequest, RequestError> {
        let mut v = seed_body();
        f(&mut v);
        parse(&v)
    }

    fn msg(r: Result<ForwardRequest, RequestError>) -> String {
        r.expect_err("should be refused").msg()
    }

    #[test]
    fn a_full_list_of_tasks_at_the_src_limit_fits_the_body_cap() {
        // 60 sources of up to 4000 characters of padding, making the src JSON exactly the limit.
        let n = 60;
        let bare: Vec<Value> = (0..n)
            .map(|i| json!({"url": format!("http://127.0.0.1/{i:02}/")}))
            .collect();
        let mut left = MAX_SRC_JSON_CHARS - Value::Array(bare).to_string().chars().count();
        let src: Vec<Value> = (0..n)
            .map(|i| {
                let pad = left.min(4000);
                left -= pad;
                json!({"url": format!("http://127.0.0.1/{i:02}/{}", "a".repeat(pad))})
            })
            .collect();
        assert_eq!(
            (left, Value::Array(src.clone()).to_string().chars().count()),
            (0, MAX_SRC_JSON_CHARS)
        );
        let list: Vec<Value> = (0..MAX_LIST_ITEMS)
            .map(|i| json!({"id": format!("task{i:03}"), "src": src, "forward": [{"url": format!("rtmp://127.0.0.1:1935/live/out{i:03}")}]}))
            .collect();
        let body = json!({"transcallbackurl": "http://example.com/api/callback", "cmd": "1", "type": "live", "list": list}).to_string();
        assert!(
            body.len() > MAX_LIST_ITEMS * MAX_SRC_JSON_CHARS && body.len() <= MAX_BODY_BYTES,
            "{} bytes",
            body.len()
        );
        let req = parse_forward_request(body.as_bytes()).unwrap();
        let Command::CreateTasks(tasks) = &req.command else {
            panic!("not a create")
        };
        assert_eq!((tasks.len(), tasks[0].sources.len()), (MAX_LIST_ITEMS, n));
    }

    #[test]
    fn the_seed_example_parses_into_a_create() {
        let req = parse(&seed_body()).unwrap();
        assert_eq!(req.task_type, TaskType::Live);
        assert_eq!(
            req.callback_url.as_ref().map(HttpUrl::as_str),
            Some("http://example.com/api/callback")
        );
        let Command::CreateTasks(tasks) = &req.command else {
            panic!("not a create: {req:?}")
        };
        let t = &tasks[0];
        assert_eq!(t.id.as_str(), "task_unique_id_001");
        assert_eq!(t.sources.len(), 2);
        assert_eq!(t.sources[0].wm_gravity, Some(Gravity::TopLeft));
        assert_eq!(
            t.forwards.iter().map(RtmpUrl::as_str).collect::<Vec<_>>(),
            [
                "rtmp://127.0.0.1:1935/live/output1",
                "rtmp://127.0.0.1:1935/live/output2"
            ]
        );
        assert_eq!(
            (t.start_ms, t.end_ms),
            (Some(1495177025000), Some(1495184225000))
        );
        assert_eq!(
            t.fops.res,
            Some(Resolution {
                width: 1280,
                height: 720
            })
        );
        assert_eq!(t.fops.forced_gop_interval_ms, Some(3000));
        assert!(t.extend.wait_current_finish);
        assert_eq!(req.cmd(), Cmd::Create);
        assert_eq!(req.destination_hosts(), ["127.0.0.1", "127.0.0.1"]);
    }

    #[test]
    fn the_seed_example_is_in_the_past_now() {
        let req = parse(&seed_body()).unwrap();
        // Its end (2017) is long gone.
        assert_eq!(
            req.check_times(1_700_000_000_000),
            Err(RequestError::EndInPast)
        );
        assert_eq!(req.check_times(1495177025000), Ok(()));
        assert_eq!(
            parse_forward_request_at(seed_body().to_string().as_bytes(), 1_700_000_000_000),
            Err(RequestError::EndInPast)
        );
    }

    #[test]
    fn end_without_start_must_be_five_minutes_away() {
        let now = 1_700_000_000_000i64;
        let req = with(|v| {
            v["list"][0].as_object_mut().unwrap().remove("start");
            v["list"][0]["end"] = json!((now + 4 * 60_000).to_string());
        })
        .unwrap();
        assert_eq!(req.check_times(now), Err(RequestError::IntervalTooBrief));
        assert_eq!(req.check_times(now - 60_000), Ok(()));
    }

    #[test]
    fn body_level_garbage_names_the_body() {
        for body in [
            &b"\xff\xfe"[..],
            b"",
            b"{",
            b"[]",
            b"null",
            b"\"x\"",
            b"{\"cmd\":\"1\",}",
        ] {
            assert_eq!(
                parse_forward_request(body).unwrap_err().msg(),
                "params body format is error",
                "{body:?}"
            );
        }
    }

    #[test]
    fn cmd_and_type_must_be_valid_strings() {
        assert_eq!(msg(with(|v| v["cmd"] = json!("4"))), "cmd가 잘못되었습니다");
        assert_eq!(msg(with(|v| v["cmd"] = json!(1))), "cmd가 잘못되었습니다");
        assert_eq!(
            msg(with(|v| {
                v.as_object_mut().unwrap().remove("cmd");
            })),
            "cmd가 잘못되었습니다"
        );
        assert_eq!(
            msg(with(|v| v["type"] = json!("vod"))),
            "type이 잘못되었습니다"
        );
        assert_eq!(
            msg(with(|v| v["type"] = json!(null))),
            "type이 잘못되었습니다"
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        assert_eq!(
            msg(with(|v| v["extra"] = json!(1))),
            "params extra format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["srcs"] = json!([]))),
            "params srcs format is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["src"][1]["wmgravity"] = json!("CENTER")
            )),
            "params wmgravity format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"]["fps "] = json!("25"))),
            "params fps  format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["extendParam"]["loops"] = json!("2"))),
            "params loops format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["forward"][0]["key"] = json!("x"))),
            "params key format is error"
        );
    }

    #[test]
    fn wrong_json_types_are_refused_naming_the_field() {
        assert_eq!(
            msg(with(|v| v["list"][0]["start"] = json!(1495177025000i64))),
            "params start format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["end"] = json!(1495184225000i64))),
            "params end format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"]["bps"] = json!(1200000))),
            "params bps format is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["extendParam"]["waitCrtUrlFinish"] = json!(1)
            )),
            "params waitCrtUrlFinish format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["id"] = json!(7))),
            "params id format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"] = json!("x"))),
            "params list format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["src"] = json!("http://a/b"))),
            "params src format is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["forward"] = json!({"url": "rtmp://h/a"})
            )),
            "params forward format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"] = json!("x"))),
            "params fops format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["extendParam"] = json!([]))),
            "params extendParam format is error"
        );
        assert_eq!(
            msg(with(|v| v["transcallbackurl"] = json!(true))),
            "params transcallbackurl format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["src"][0]["url"] = json!(5))),
            "params src is error"
        );
    }

    #[test]
    fn missing_and_empty_required_parts_have_their_seed_messages() {
        assert_eq!(msg(with(|v| v["list"] = json!([]))), "list가 비어 있습니다");
        assert_eq!(
            msg(with(|v| {
                v.as_object_mut().unwrap().remove("list");
            })),
            "list가 비어 있습니다"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["id"] = json!(""))),
            "params id가 비어 있습니다"
        );
        assert_eq!(
            msg(with(|v| {
                v["list"][0].as_object_mut().unwrap().remove("id");
            })),
            "params id가 비어 있습니다"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["src"] = json!([]))),
            "params src list가 비어 있습니다"
        );
        assert_eq!(
            msg(with(|v| {
                v["list"][0].as_object_mut().unwrap().remove("src");
            })),
            "params src list가 비어 있습니다"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["src"][1] = json!({"url": ""}))),
            "params src is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["src"][1] = json!({}))),
            "params src is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["forward"] = json!([]))),
            "params forward list is null"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["forward"] = json!(null))),
            "params forward list is null"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["forward"][1] = json!({"url": ""}))),
            "params forward is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["forward"][1] = json!({"url": "http://h/x"})
            )),
            "params forward is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["forward"][1] =
                json!({"url": "rtmp://127.0.0.1:1935/live/output1"}))),
            "params forward is error"
        );
    }

    #[test]
    fn ids_are_checked_and_unique_per_request() {
        assert_eq!(
            msg(with(|v| v["list"][0]["id"] = json!("a".repeat(33)))),
            "params id format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["id"] = json!("x/../y"))),
            "params id format is error"
        );
        assert_eq!(
            msg(with(|v| {
                let t = v["list"][0].clone();
                v["list"].as_array_mut().unwrap().push(t);
            })),
            "params id format is error"
        );
    }

    #[test]
    fn source_limits() {
        let many: Vec<Value> = (0..801)
            .map(|i| json!({"url": format!("http://h/{i}.flv")}))
            .collect();
        assert_eq!(
            msg(with(|v| v["list"][0]["src"] = json!(many))),
            "params src num이 너무 많습니다"
        );
        let ok: Vec<Value> = (0..800)
            .map(|i| json!({"url": format!("http://h/{i}.flv")}))
            .collect();
        assert!(with(|v| {
            v["list"][0]["src"] = json!(ok);
            v["list"][0]["fops"] = json!({});
        })
        .is_ok());
        let long: Vec<Value> = (0..60)
            .map(|i| json!({"url": format!("http://h/{i}/{}", "a".repeat(3500))}))
            .collect();
        assert_eq!(
            msg(with(|v| v["list"][0]["src"] = json!(long))),
            "params src length is too long"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["src"][1]["url"] = json!("file:///etc/passwd")
            )),
            "params src is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["src"][1]["url"] = json!("concat:http://a/1|http://a/2")
            )),
            "params src is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["src"][1]["url"] = json!("http://h/a.flv -i /etc/passwd")
            )),
            "params src is error"
        );
    }

    #[test]
    fn start_and_end_are_13_digit_ms_five_minutes_apart() {
        assert_eq!(
            msg(with(|v| v["list"][0]["start"] = json!("149517702500"))),
            "params start format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["start"] = json!("1495177025000.0"))),
            "params start format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["end"] = json!("-495177025000"))),
            "params end format is error"
        );
        // Exactly five minutes is enough; a millisecond less is not.
        assert_eq!(
            msg(with(|v| v["list"][0]["end"] = json!("1495177324999"))).as_str(),
            "params start and end interval Too Brief!"
        );
        assert!(with(|v| v["list"][0]["end"] = json!("1495177325000")).is_ok());
        assert_eq!(
            msg(with(|v| v["list"][0]["end"] = json!("1495177000000"))),
            "params start and end interval Too Brief!"
        );
        // "" and null mean "not set".
        let req = with(|v| {
            v["list"][0]["start"] = json!("");
            v["list"][0]["end"] = json!(null);
        })
        .unwrap();
        let Command::CreateTasks(t) = req.command else {
            panic!()
        };
        assert_eq!((t[0].start_ms, t[0].end_ms), (None, None));
    }

    #[test]
    fn fops_rules() {
        assert_eq!(
            msg(with(|v| {
                v["list"][0]["fops"]
                    .as_object_mut()
                    .unwrap()
                    .remove("vcodec");
            })),
            "params vcodec format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"]["res"] = json!("1280X720"))),
            "params res format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"]["vcodec"] = json!("libvpx"))),
            "params vcodec format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"]["acodec"] = json!("aac"))),
            "params acodec format is error"
        );
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"]["bufferTime"] = json!("soon"))),
            "params bufferTime format is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["fops"]["forced_gopInterval"] = json!("0")
            )),
            "params forced_gopInterval format is error"
        );
        // The watermark needs libx264, even though libx265 is a valid codec otherwise.
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"]["vcodec"] = json!("libx265"))),
            "params vcodec format is error"
        );
        // Only audio, no watermark: no video encoder needed.
        let ok = with(|v| {
            v["list"][0]["src"][0]
                .as_object_mut()
                .unwrap()
                .remove("wmImage");
            v["list"][0]["fops"] = json!({"acodec": "libfaac", "bufferTime": "3"});
        })
        .unwrap();
        let Command::CreateTasks(t) = ok.command else {
            panic!()
        };
        assert_eq!(t[0].fops.acodec.map(AudioCodec::ffmpeg_name), Some("aac"));
    }

    #[test]
    fn watermark_rules() {
        assert_eq!(
            msg(with(|v| v["list"][0]["fops"] = json!({}))),
            "params vcodec format is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["src"][0]["wmPosition"] = json!("10%x10%")
            )),
            "params wmPosition format is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["src"][0]["wmGravity"] = json!("MIDDLE")
            )),
            "params wmGravity format is error"
        );
        assert_eq!(
            msg(with(
                |v| v["list"][0]["src"][0]["wmImage"] = json!("file:///x.png")
            )),
            "params wmImage format is error"
        );
        let ok = with(|v| {
            v["list"][0]["src"][0] = json!({"url": "rtmp://h/live/s", "wmImage": "http://a/1.png;https://b/2.png", "wmPosition": "30%x40%"});
        })
        .unwrap();
        let Command::CreateTasks(t) = ok.command else {
            panic!()
        };
        assert_eq!(
            t[0].sources[0].wm_position,
            Some(WmPosition {
                x_percent: 30,
                y_percent: 40
            })
        );
        assert_eq!(
            t[0].sources[0].wm_image.as_ref().map(|w| w.urls().len()),
            Some(2)
        );
    }

    #[test]
    fn relofftime_and_headers() {
        assert_eq!(
            msg(with(
                |v| v["list"][0]["src"][1]["relofftime"] = json!("30-60")
            )),
            "params relofftime is error"
        );
        assert!(with(|v| v["list"][0]["src"][1]["relofftime"] = json!("0-60")).is_ok());
        assert_eq!(
            msg(with(|v| v["list"][0]["src"][1]["relofftime"] = json!(60))),
            "params relofftime is error"
        );
        let h = json!([{"headerKey": "User-Agent", "headerValue": "MyCustomPlayer/1.0"}, {"headerKey": "Referer", "headerValue": "http://example.com"}]);
        let ok = with(|v| v["list"][0]["src"][1]["pullStreamHeaders"] = h).unwrap();
        let Command::CreateTasks(t) = ok.command else {
            panic!()
        };
        assert_eq!(t[0].sources[1].pull_stream_headers.len(), 2);
        for bad in [
            json!([{"headerKey": "X", "headerValue": "a\r\nb"}]),
            json!([{"headerKey": "X", "headerValue": "a,b"}]),
            json!([{"headerKey": "X"}]),
            json!([{"headerKey": "X", "headerValue": "v", "other": "y"}]),
            json!({"headerKey": "X", "headerValue": "v"}),
            json!([{"headerKey": "X", "headerValue": "v".repeat(2100)}]),
        ] {
            let m = msg(with(|v| {
                v["list"][0]["src"][1]["pullStreamHeaders"] = bad.clone()
            }));
            assert!(
                m == "params pullStreamHeaders format is error"
                    || m == "params other format is error",
                "{bad}: {m}"
            );
        }
    }

    #[test]
    fn extend_param_rules() {
        let video = |ext: Value| {
            with(|v| {
                v["type"] = json!("video");
                v["list"][0]["src"] = json!([{"url": "http://h/1.mp4"}, {"url": "http://h/2.mp4"}]);
                v["list"][0]["fops"] = json!({});
                v["list"][0]["extendParam"] = ext;
            })
        };
        let ok = video(json!({"loop": "-1", "index": "2", "waitCrtUrlFinish": "0"})).unwrap();
        let Command::CreateTasks(t) = ok.command else {
            panic!()
        };
        assert_eq!(
            t[0].extend,
            ExtendParam {
                wait_current_finish: false,
                loop_count: LoopCount::Forever,
                start_index: Some(2),
                auto_switch_back_s: None
            }
        );
        assert_eq!(
            msg(video(json!({"index": "3"}))),
            "params index format is error"
        );
        assert_eq!(
            msg(video(json!({"index": "0"}))),
            "params index format is error"
        );
        assert_eq!(
            msg(video(json!({"loop": "0"}))),
            "params loop format is error"
        );
        assert_eq!(
            msg(video(json!({"waitCrtUrlFinish": "2"}))),
            "params waitCrtUrlFinish format is error"
        );
        // A live-only source refused for video.
        assert_eq!(
            msg(with(|v| {
                v["type"] = json!("video");
                v["list"][0]["src"][1]["url"] = json!("rtmp://h/live/s");
            })),
            "params src is error"
        );
    }

    #[test]
    fn auto_switch_back_is_seconds_as_a_string_or_a_number() {
        let body = |value: Value| {
            with(|v| v["list"][0]["extendParam"] = json!({ "autoSwitchBack": value }))
        };
        let secs = |value: Value| match body(value).expect("accepted").command {
            Command::CreateTasks(t) => t[0].extend.auto_switch_back_s,
            _ => panic!("not a create"),
        };
        assert_eq!(secs(json!("10")), Some(10));
        assert_eq!(secs(json!(10)), Some(10));
        assert_eq!(secs(json!("1")), Some(1));
        assert_eq!(secs(json!(3600)), Some(3600));
        assert_eq!(secs(json!("3600")), Some(3600));
        // Absent or 0: manual, the seed's behaviour.
        for manual in [json!("0"), json!(0), json!(null), json!("")] {
            assert_eq!(secs(manual.clone()), None, "{manual}");
        }
        let Command::CreateTasks(t) = with(|v| v["list"][0]["extendParam"] = json!({}))
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(t[0].extend.auto_switch_back_s, None);
        for bad in [
            json!("3601"),
            json!(3601),
            json!(-1),
            json!("-1"),
            json!(1.5),
            json!("1.5"),
            json!(" 5"),
            json!("5s"),
            json!("10000"),
            json!(true),
            json!([5]),
            json!({}),
            json!(u64::MAX),
        ] {
            assert_eq!(
                msg(body(bad.clone())),
                "params autoSwitchBack format is error",
                "{bad}"
            );
        }
        // cmd=3 carries it too.
        let upd = with(|v| {
            v["cmd"] = json!("3");
            v["list"][0]["extendParam"] = json!({ "autoSwitchBack": "30" });
        })
        .unwrap();
        assert!(
            matches!(&upd.command, Command::UpdateSources(u) if u[0].extend.auto_switch_back_s == Some(30))
        );
        // Tasks stored before the field existed still load, as manual.
        let old: ExtendParam = serde_json::from_value(
            json!({"wait_current_finish": false, "loop_count": {"Times": 1}, "start_index": null}),
        )
        .unwrap();
        assert_eq!(old.auto_switch_back_s, None);
    }

    #[test]
    fn stop_update_and_resume_bodies() {
        let stop = parse(&json!({"cmd": "2", "type": "live", "list": [{"id": "t1", "forward": [{"url": "rtmp://127.0.0.1:1935/live/output1"}]}, {"id": "t2"}]})).unwrap();
        assert_eq!(
            stop.command,
            Command::StopTasks(vec![
                StopTask {
                    id: TaskId::parse("t1").unwrap(),
                    forwards: vec![RtmpUrl::parse("rtmp://127.0.0.1:1935/live/output1").unwrap()]
                },
                StopTask {
                    id: TaskId::parse("t2").unwrap(),
                    forwards: vec![]
                },
            ])
        );
        // The original body resent with cmd=2 stops it; its other fields are ignored.
        let resent = with(|v| v["cmd"] = json!("2")).unwrap();
        assert!(matches!(&resent.command, Command::StopTasks(s) if s[0].forwards.len() == 2));

        let upd = with(|v| v["cmd"] = json!("3")).unwrap();
        assert!(
            matches!(&upd.command, Command::UpdateSources(u) if u[0].sources.len() == 2 && u[0].extend.wait_current_finish)
        );
        assert_eq!(
            msg(parse(
                &json!({"cmd": "3", "type": "live", "list": [{"id": "t1"}]})
            )),
            "params src list가 비어 있습니다"
        );

        let res = parse(&json!({"cmd": "5", "type": "live", "list": [{"id": "t1", "forward": [{"url": "rtmp://h/a/1", "resetUrl": "rtmp://h/a/2"}], "fops": {"bps": "1"}}]})).unwrap();
        let Command::ResumeTasks(r) = &res.command else {
            panic!()
        };
        assert_eq!(
            r[0].forwards[0].1.as_ref().map(RtmpUrl::as_str),
            Some("rtmp://h/a/2")
        );
        assert_eq!(res.destination_hosts(), ["h"]);
        assert_eq!(
            msg(parse(
                &json!({"cmd": "5", "type": "live", "list": [{"id": "t1", "forward": [{"url": "rtmp://h/a/1", "resetUrl": "http://x/y"}]}]})
            )),
            "params resetUrl format is error"
        );
    }

    /// A tiny deterministic PRNG, so the garbage is the same on every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_never_panics() {
        let seed = seed_body().to_string().into_bytes();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let alphabet = b"{}[]\":,0123456789-.eE \\ntrufalsx\xff\xc3\xa9";
        for i in 0..20_000 {
            let mut body = seed.clone();
            match i % 4 {
                // Mutate a few bytes of a valid body.
                0 | 1 => {
                    for _ in 0..(1 + rng.next() % 4) {
                        let at = (rng.next() as usize) % body.len();
                        body[at] = alphabet[(rng.next() as usize) % alphabet.len()];
                    }
                }
                // Truncate it.
                2 => body.truncate((rng.next() as usize) % body.len()),
                // Pure noise.
                _ => {
                    body = (0..(rng.next() % 64))
                        .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                        .collect()
                }
            }
            let _ = parse_forward_request_at(&body, rng.next() as i64);
        }
        assert_eq!(
            parse_forward_request(&vec![b' '; MAX_BODY_BYTES + 1]),
            Err(RequestError::field("body"))
        );
        // Deep nesting is refused, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_forward_request(deep.as_bytes()).is_err());
        // Values of every JSON type in every field.
        for val in [
            json!(null),
            json!(1),
            json!(-1.5),
            json!(true),
            json!("x"),
            json!([]),
            json!({}),
            json!([1]),
            json!({"a": 1}),
        ] {
            for path in ["cmd", "type", "list", "transcallbackurl"] {
                let _ = with(|v| v[path] = val.clone());
            }
            for path in [
                "id",
                "src",
                "forward",
                "start",
                "end",
                "fops",
                "extendParam",
            ] {
                let _ = with(|v| v["list"][0][path] = val.clone());
            }
            for path in [
                "url",
                "wmImage",
                "wmGravity",
                "wmPosition",
                "relofftime",
                "pullStreamHeaders",
            ] {
                let _ = with(|v| v["list"][0]["src"][0][path] = val.clone());
            }
            for cmd in ["2", "3", "5"] {
                let _ = with(|v| {
                    v["cmd"] = json!(cmd);
                    v["list"][0]["forward"] = val.clone();
                });
            }
        }
    }
}
