//! Recording templates (SCHEMAS.md §3.1), push domains and record rules (§3.2): the `/v1`
//! control plane of recording. The JSON of the API uses Tencent's field names, as callback
//! templates do (`callbacks/template.rs`, the pattern this module follows).
//!
//! - [`RecordingTemplate`]: per account, numeric `TemplateId`, at most [`MAX_TEMPLATES`]; what
//!   to record (HLS, MP4, FLV, AAC), for how long files run and are kept, the namespace
//!   (`VodSubAppId`), file names, the resume timeout, the record callback (seed 004) and
//!   snapshots (our extension). [`RecordingTemplate::spec`] is the copy a recording runs with.
//! - [`RecordDomain`]: a push domain of one account and where the recorder pulls its streams
//!   from (`PullUrlTemplate`).
//! - [`RecordRule`]: binds a template to a domain, an app of it or one stream (one template
//!   per domain+app+stream, seed 003), stored under its three names so that finding the rule of
//!   a stream is four point reads ([`RecordRule::lookup_keys`]).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{FormatSpec, RecordFormat, RecordingSpec};
use crate::domain::api_error::ApiRefusal;
use crate::domain::auth::SecretKey;
use crate::domain::callbacks::event::{parse_domain, parse_name};
use crate::domain::callbacks::template::{check_notify_url, name_chars_ok};
use crate::domain::callbacks::StreamPath;
use crate::domain::relay::{RtmpUrl, SourceUrl, TaskType};
use crate::ports::{Entity, IndexKeys, Kind};

/// Most recording templates per account (SCHEMAS.md §3.1).
pub const MAX_TEMPLATES: usize = 50;
/// `RecordInterval`, seconds: 1–120 minutes per file (seed 004 says 1–120 min; the brief and
/// older SDKs give 60–7200 s, which is the same).
pub const RECORD_INTERVAL_SECS: RangeInclusive<i64> = 60..=7200;
/// `RecordInterval` when not given.
pub const DEFAULT_RECORD_INTERVAL_SECS: u32 = 1800;
/// `StorageTime`, seconds: 0–1500 days; 0 keeps files forever.
pub const STORAGE_TIME_SECS: RangeInclusive<i64> = 0..=129_600_000;
/// `HlsSpecialParam.FlowContinueDuration`, seconds; 0 = a drop ends the recording.
pub const FLOW_CONTINUE_SECS: RangeInclusive<i64> = 0..=1800;
/// `SnapshotParam.Interval`, seconds.
pub const SNAPSHOT_INTERVAL_SECS: RangeInclusive<i64> = 1..=3600;
/// `SnapshotParam.Interval` when not given.
pub const DEFAULT_SNAPSHOT_INTERVAL_SECS: u32 = 10;
/// The placeholders `VodFileName` may use: SCHEMAS.md §3.1's, plus `{RecordId}`, `{Domain}` and
/// `{AppName}` (which the file namer, [`super::file_name`], fills as well).
pub const VOD_FILE_NAME_PLACEHOLDERS: &[&str] = &[
    "StreamID",
    "StartYear",
    "StartMonth",
    "StartDay",
    "StartHour",
    "StartMinute",
    "StartSecond",
    "StartMillisecond",
    "EndYear",
    "EndMonth",
    "EndDay",
    "EndHour",
    "EndMinute",
    "EndSecond",
    "EndMillisecond",
    "RecordId",
    "Domain",
    "AppName",
];
/// The placeholders of a `PullUrlTemplate`.
pub const PULL_URL_PLACEHOLDERS: &[&str] = &["app", "stream"];
/// Schemes a `PullUrlTemplate` may use (live sources the recorder can pull).
pub const PULL_URL_SCHEMES: &[&str] = &["rtmp", "rtmps", "http", "https"];

const MAX_NAME_BYTES: usize = 255;
const MAX_DESCRIPTION_BYTES: usize = 1024;
const MAX_FILE_NAME_BYTES: usize = 256;
const MAX_PULL_URL_BYTES: usize = 2048;
/// Seed 004: "letters and digits, at most 32 characters".
const MAX_CALLBACK_KEY_CHARS: usize = 32;

fn invalid_parameter(code: &'static str, message: impl Into<String>) -> ApiRefusal {
    ApiRefusal {
        code,
        message: message.into(),
        status: 400,
    }
}

/// `value` of `field` if it is in `range`, else `InvalidParameterValue` naming both.
fn in_range(
    field: &str,
    value: i64,
    range: &RangeInclusive<i64>,
    unit: &str,
) -> Result<i64, ApiRefusal> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ApiRefusal::invalid(
            field,
            format!(
                "{value} is out of range {}-{}{unit}",
                range.start(),
                range.end()
            ),
        ))
    }
}

fn flag(field: &str, value: i64) -> Result<bool, ApiRefusal> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(ApiRefusal::invalid(field, format!("{other} is not 0 or 1"))),
    }
}

// ---- templates --------------------------------------------------------------------------------

/// One format's `RecordParam` as the API takes it (every field optional; on a modify, given
/// fields replace the stored ones). Numbers are read as signed so that a negative value is
/// refused with its range, not as a parse error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RecordParamInput {
    /// 0 or 1.
    pub enable: Option<i64>,
    /// Seconds per file, [`RECORD_INTERVAL_SECS`]; not used for HLS (one playlist per push).
    pub record_interval: Option<i64>,
    /// Seconds the files are kept, [`STORAGE_TIME_SECS`]; 0 = forever.
    pub storage_time: Option<i64>,
    /// The namespace (the seed's VOD sub-application). One per template: it sets the
    /// namespace of every format, and the values given in one request must agree.
    pub vod_sub_app_id: Option<i64>,
    /// The file name pattern ([`VOD_FILE_NAME_PLACEHOLDERS`]); `""` = the seed's naming. One per
    /// template, like `VodSubAppId`.
    pub vod_file_name: Option<String>,
}

/// `HlsSpecialParam` as the API takes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HlsSpecialParamInput {
    /// The resume timeout, seconds, [`FLOW_CONTINUE_SECS`].
    pub flow_continue_duration: Option<i64>,
}

/// `SnapshotParam` as the API takes it. A relaycast extension: Tencent configures snapshots in
/// separate snapshot templates; here a recording template can take a JPEG every `Interval`
/// seconds while it records.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SnapshotParamInput {
    /// 0 or 1.
    pub enable: Option<i64>,
    /// Seconds between snapshots, [`SNAPSHOT_INTERVAL_SECS`], default 10.
    pub interval: Option<i64>,
}

/// A template as the API takes it for a create (`TemplateName` required) or a modify (every
/// field optional; `""` clears a string).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RecordingTemplateInput {
    /// Up to 255 bytes of CJK, letters, digits, `_` and `-`.
    pub template_name: Option<String>,
    /// Up to 1024 bytes.
    pub description: Option<String>,
    /// HLS.
    pub hls_param: Option<RecordParamInput>,
    /// MP4.
    pub mp4_param: Option<RecordParamInput>,
    /// FLV.
    pub flv_param: Option<RecordParamInput>,
    /// AAC (audio only).
    pub aac_param: Option<RecordParamInput>,
    /// The resume timeout.
    pub hls_special_param: Option<HlsSpecialParamInput>,
    /// Snapshots while recording (relaycast extension).
    pub snapshot_param: Option<SnapshotParamInput>,
    /// Where record notices go (seed 004's record callback URL); http or https.
    pub record_notify_url: Option<String>,
    /// Signs the notices to `RecordNotifyUrl`: 1–32 letters and digits (seed 004).
    pub callback_key: Option<String>,
}

/// One format's stored parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatParams {
    /// `Enable`.
    pub enabled: bool,
    /// `RecordInterval`, seconds.
    pub record_interval_secs: u32,
    /// `StorageTime`, seconds; 0 = forever.
    pub storage_secs: u64,
}

impl Default for FormatParams {
    fn default() -> Self {
        Self {
            enabled: false,
            record_interval_secs: DEFAULT_RECORD_INTERVAL_SECS,
            storage_secs: 0,
        }
    }
}

/// The stored snapshot option (relaycast extension, see [`SnapshotParamInput`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotParams {
    /// `Enable`.
    pub enabled: bool,
    /// `Interval`, seconds.
    pub interval_secs: u32,
}

impl Default for SnapshotParams {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_secs: DEFAULT_SNAPSHOT_INTERVAL_SECS,
        }
    }
}

/// A stored recording template. Key: `{account}/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingTemplate {
    /// The owning account.
    pub account: String,
    /// `TemplateId`, unique within the account.
    pub id: u64,
    /// `TemplateName`.
    pub name: String,
    /// `Description`.
    pub description: String,
    /// `HlsParam`.
    pub hls: FormatParams,
    /// `Mp4Param`.
    pub mp4: FormatParams,
    /// `FlvParam`.
    pub flv: FormatParams,
    /// `AacParam`.
    pub aac: FormatParams,
    /// `VodSubAppId`, the one namespace of every format.
    pub namespace: u64,
    /// `VodFileName`, the one pattern of every format; `None` = the seed's naming.
    pub file_name_pattern: Option<String>,
    /// `HlsSpecialParam.FlowContinueDuration`, seconds.
    pub resume_timeout_secs: u32,
    /// `RecordNotifyUrl`.
    pub notify_url: Option<String>,
    /// `CallbackKey`.
    pub callback_key: Option<SecretKey>,
    /// `SnapshotParam`.
    pub snapshot: SnapshotParams,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms.
    pub updated_ms: i64,
}

/// The wire name of a format's parameters.
fn param_field(format: RecordFormat) -> &'static str {
    match format {
        RecordFormat::Hls => "HlsParam",
        RecordFormat::Mp4 => "Mp4Param",
        RecordFormat::Flv => "FlvParam",
        RecordFormat::Aac => "AacParam",
    }
}

/// Checks a `VodFileName`: at most 256 bytes, no control characters, and `{…}` only around the
/// placeholders of [`VOD_FILE_NAME_PLACEHOLDERS`] (a stray brace is refused too, since it would
/// reach the file name as is and likely hides a typo).
pub fn check_vod_file_name(field: &str, pattern: &str) -> Result<(), ApiRefusal> {
    let bad = |why: String| {
        invalid_parameter(
            "InvalidParameter.InvalidVodFileName",
            format!("{field}: {why}"),
        )
    };
    if pattern.len() > MAX_FILE_NAME_BYTES {
        return Err(bad(format!("longer than {MAX_FILE_NAME_BYTES} bytes")));
    }
    if pattern.chars().any(char::is_control) {
        return Err(bad("control characters are not accepted".into()));
    }
    for name in placeholders(pattern).map_err(bad)? {
        if !VOD_FILE_NAME_PLACEHOLDERS.contains(&name) {
            return Err(bad(format!(
                "{{{name}}} is not a placeholder; use {}",
                VOD_FILE_NAME_PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

/// The names between braces in `text`, or why the braces do not pair up.
fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    loop {
        let open = rest.find('{');
        let close = rest.find('}');
        match (open, close) {
            (None, None) => return Ok(names),
            (Some(o), Some(c)) if o < c => {
                let name = &rest[o + 1..c];
                if name.contains('{') {
                    return Err("unbalanced braces".into());
                }
                names.push(name);
                rest = &rest[c + 1..];
            }
            _ => return Err("unbalanced braces".into()),
        }
    }
}

/// `CallbackKey` as the API shows it: never in full. Keys of 12 characters or more show their
/// last 4 so an owner can tell which key is set; shorter ones show nothing of themselves.
pub fn mask_key(key: &SecretKey) -> String {
    let k = key.expose();
    let n = k.chars().count();
    if n >= 12 {
        format!("***{}", k.chars().skip(n - 4).collect::<String>())
    } else {
        "***".into()
    }
}

impl RecordingTemplate {
    /// The store key of template `id` of `account`.
    pub fn store_key(account: &str, id: u64) -> String {
        format!("{account}/{id}")
    }

    /// A format's parameters.
    pub fn format(&self, format: RecordFormat) -> &FormatParams {
        match format {
            RecordFormat::Hls => &self.hls,
            RecordFormat::Mp4 => &self.mp4,
            RecordFormat::Flv => &self.flv,
            RecordFormat::Aac => &self.aac,
        }
    }

    fn format_mut(&mut self, format: RecordFormat) -> &mut FormatParams {
        match format {
            RecordFormat::Hls => &mut self.hls,
            RecordFormat::Mp4 => &mut self.mp4,
            RecordFormat::Flv => &mut self.flv,
            RecordFormat::Aac => &mut self.aac,
        }
    }

    /// A new template from a create request (`TemplateName` required; formats not given are
    /// off, with the defaults).
    pub fn create(
        account: &str,
        id: u64,
        input: RecordingTemplateInput,
        allow_private: bool,
        now_ms: i64,
    ) -> Result<Self, ApiRefusal> {
        if input
            .template_name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(ApiRefusal::missing("TemplateName"));
        }
        let mut t = Self {
            account: account.to_string(),
            id,
            name: String::new(),
            description: String::new(),
            hls: FormatParams::default(),
            mp4: FormatParams::default(),
            flv: FormatParams::default(),
            aac: FormatParams::default(),
            namespace: 0,
            file_name_pattern: None,
            resume_timeout_secs: 0,
            notify_url: None,
            callback_key: None,
            snapshot: SnapshotParams::default(),
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        t.modify(input, allow_private, now_ms)?;
        Ok(t)
    }

    /// Applies a modify request: given fields replace the stored ones, field by field inside a
    /// format's parameters too (`{"FlvParam": {"Enable": 0}}` turns FLV off and keeps its
    /// interval); `""` clears `Description`, `VodFileName`, `RecordNotifyUrl` or `CallbackKey`.
    /// The result must still enable a format. A refusal changes nothing.
    pub fn modify(
        &mut self,
        input: RecordingTemplateInput,
        allow_private: bool,
        now_ms: i64,
    ) -> Result<(), ApiRefusal> {
        let mut t = self.clone();
        if let Some(name) = input.template_name {
            if name.is_empty() || name.len() > MAX_NAME_BYTES || !name_chars_ok(&name, false) {
                return Err(ApiRefusal::invalid(
                    "TemplateName",
                    format!("1-{MAX_NAME_BYTES} bytes of CJK, letters, digits, _ and -"),
                ));
            }
            t.name = name;
        }
        if let Some(d) = input.description {
            if d.len() > MAX_DESCRIPTION_BYTES || !name_chars_ok(&d, true) {
                return Err(ApiRefusal::invalid("Description", format!("up to {MAX_DESCRIPTION_BYTES} bytes of CJK, letters, digits, spaces, _ and -")));
            }
            t.description = d;
        }
        // One namespace and one file name pattern per template: RecordingSpec has one of each,
        // and a recording's formats land side by side. Values given in this request must agree.
        let mut namespace: Option<(&'static str, u64)> = None;
        let mut pattern: Option<(&'static str, String)> = None;
        let params = [
            (RecordFormat::Hls, input.hls_param),
            (RecordFormat::Mp4, input.mp4_param),
            (RecordFormat::Flv, input.flv_param),
            (RecordFormat::Aac, input.aac_param),
        ];
        for (format, given) in params {
            let Some(given) = given else { continue };
            let field = param_field(format);
            let stored = t.format_mut(format);
            if let Some(e) = given.enable {
                stored.enabled = flag(&format!("{field}.Enable"), e)?;
            }
            if let Some(i) = given.record_interval {
                stored.record_interval_secs = in_range(
                    &format!("{field}.RecordInterval"),
                    i,
                    &RECORD_INTERVAL_SECS,
                    " seconds",
                )? as u32;
            }
            if let Some(s) = given.storage_time {
                stored.storage_secs = in_range(
                    &format!("{field}.StorageTime"),
                    s,
                    &STORAGE_TIME_SECS,
                    " seconds (0 = forever)",
                )? as u64;
            }
            if let Some(id) = given.vod_sub_app_id {
                let id = in_range(&format!("{field}.VodSubAppId"), id, &(0..=i64::MAX), "")? as u64;
                match namespace {
                    Some((other, ns)) if ns != id => {
                        return Err(ApiRefusal::invalid(
                            "VodSubAppId",
                            format!("a template records every format to one namespace; {other} has {ns} and {field} has {id}"),
                        ))
                    }
                    _ => namespace = Some((field, id)),
                }
            }
            if let Some(name) = given.vod_file_name {
                check_vod_file_name(&format!("{field}.VodFileName"), &name)?;
                match &pattern {
                    Some((other, p)) if *p != name => {
                        return Err(ApiRefusal::invalid(
                            "VodFileName",
                            format!("a template names every format's files with one pattern; {other} has {p:?} and {field} has {name:?}"),
                        ))
                    }
                    _ => pattern = Some((field, name)),
                }
            }
        }
        if let Some((_, ns)) = namespace {
            t.namespace = ns;
        }
        if let Some((_, p)) = pattern {
            t.file_name_pattern = (!p.is_empty()).then_some(p);
        }
        if let Some(hls) = input.hls_special_param {
            if let Some(d) = hls.flow_continue_duration {
                t.resume_timeout_secs = in_range(
                    "HlsSpecialParam.FlowContinueDuration",
                    d,
                    &FLOW_CONTINUE_SECS,
                    " seconds",
                )? as u32;
            }
        }
        if let Some(s) = input.snapshot_param {
            if let Some(e) = s.enable {
                t.snapshot.enabled = flag("SnapshotParam.Enable", e)?;
            }
            if let Some(i) = s.interval {
                t.snapshot.interval_secs = in_range(
                    "SnapshotParam.Interval",
                    i,
                    &SNAPSHOT_INTERVAL_SECS,
                    " seconds",
                )? as u32;
            }
        }
        if let Some(url) = input.record_notify_url {
            if url.is_empty() {
                t.notify_url = None;
            } else {
                check_notify_url("RecordNotifyUrl", &url, allow_private)?;
                t.notify_url = Some(url);
            }
        }
        if let Some(key) = input.callback_key {
            let unchanged = t.callback_key.as_ref().is_some_and(|k| mask_key(k) == key);
            if unchanged {
                // The masked key a GET showed, sent back: keep the key.
            } else if key.is_empty() {
                t.callback_key = None;
            } else if key.chars().count() > MAX_CALLBACK_KEY_CHARS
                || !key.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(ApiRefusal::invalid(
                    "CallbackKey",
                    format!("1-{MAX_CALLBACK_KEY_CHARS} letters and digits"),
                ));
            } else {
                t.callback_key = Some(SecretKey::new(key));
            }
        }
        if !RecordFormat::ALL.iter().any(|f| t.format(*f).enabled) {
            return Err(ApiRefusal::invalid("HlsParam", "a template must enable at least one format (HlsParam, Mp4Param, FlvParam or AacParam)"));
        }
        t.updated_ms = now_ms;
        *self = t;
        Ok(())
    }

    /// What a recording started from this template runs with: a copy, so that editing or
    /// unbinding the template never changes a recording in progress (seed 003). Formats come
    /// in [`RecordFormat::ALL`]'s order, enabled ones only.
    pub fn spec(&self) -> RecordingSpec {
        RecordingSpec {
            template_id: Some(self.id),
            formats: RecordFormat::ALL
                .iter()
                .filter(|f| self.format(**f).enabled)
                .map(|f| {
                    let p = self.format(*f);
                    FormatSpec {
                        format: *f,
                        max_file_secs: p.record_interval_secs,
                        storage_secs: p.storage_secs,
                    }
                })
                .collect(),
            resume_timeout_secs: self.resume_timeout_secs,
            namespace: self.namespace,
            file_name_pattern: self.file_name_pattern.clone(),
            notify_url: self.notify_url.clone(),
            callback_key: self.callback_key.clone(),
            snapshot_interval_secs: self.snapshot.enabled.then_some(self.snapshot.interval_secs),
        }
    }

    /// The template as the API shows it (SCHEMAS.md §3.2's RecordTemplateInfo, the fields we
    /// have, plus `SnapshotParam`, `RecordNotifyUrl` and `CallbackKey`). The key is masked
    /// ([`mask_key`]): its owner set it and a recording notice proves it works.
    pub fn to_wire(&self) -> Value {
        let mut v = json!({
            "TemplateId": self.id,
            "TemplateName": self.name,
            "Description": self.description,
            "HlsSpecialParam": { "FlowContinueDuration": self.resume_timeout_secs },
            "SnapshotParam": { "Enable": u8::from(self.snapshot.enabled), "Interval": self.snapshot.interval_secs },
            "RecordNotifyUrl": self.notify_url.clone().unwrap_or_default(),
            "CallbackKey": self.callback_key.as_ref().map(mask_key).unwrap_or_default(),
        });
        if let Value::Object(map) = &mut v {
            for format in RecordFormat::ALL {
                let p = self.format(format);
                map.insert(
                    param_field(format).into(),
                    json!({
                        "Enable": u8::from(p.enabled),
                        "RecordInterval": p.record_interval_secs,
                        "StorageTime": p.storage_secs,
                        "VodSubAppId": self.namespace,
                        "VodFileName": self.file_name_pattern.clone().unwrap_or_default(),
                    }),
                );
            }
        }
        v
    }
}

impl Entity for RecordingTemplate {
    const KIND: Kind = Kind("record_template");

    fn key(&self) -> String {
        Self::store_key(&self.account, self.id)
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: None,
            time_ms: Some(self.created_ms),
        }
    }
}

// ---- domains ----------------------------------------------------------------------------------

/// A push domain as the API takes it (create: `DomainName` required; modify: `DomainName`, if
/// given, must be the domain of the path).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RecordDomainInput {
    /// The push domain.
    pub domain_name: Option<String>,
    /// Where the recorder pulls a stream of the domain, with `{app}` and `{stream}`
    /// (`rtmp://origin:1935/{app}/{stream}`); `""` clears it (nothing of the domain is then
    /// recorded automatically).
    pub pull_url_template: Option<String>,
}

/// A push domain of an account. Global key: the lower-case domain, so a domain belongs to one
/// account (as with callback rules, an inbound event names only its domain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordDomain {
    /// The owning account.
    pub account: String,
    /// The lower-case push domain.
    pub domain: String,
    /// `PullUrlTemplate`.
    pub pull_url_template: Option<String>,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms.
    pub updated_ms: i64,
}

/// Fills a pull URL template's `{app}` and `{stream}`.
pub fn fill_pull_url(template: &str, app: &str, stream: &str) -> String {
    template.replace("{app}", app).replace("{stream}", stream)
}

/// Checks a `PullUrlTemplate`: only `{app}` and `{stream}` (which it must contain, or every
/// stream would record the same source), and only after the host, so no stream name can choose
/// where the recorder connects; `rtmp`, `rtmps`, `http` or `https`. The URL filled for a sample
/// stream must pass the relay API's rules for sources ([`SourceUrl::parse`], and
/// [`RtmpUrl::parse_parts`] for RTMP, which the native pull uses) and, unless the operator
/// allows it, must not point at an internal host (as relay sources may not).
pub fn check_pull_url_template(raw: &str, allow_private: bool) -> Result<(), ApiRefusal> {
    const FIELD: &str = "PullUrlTemplate";
    if raw.len() > MAX_PULL_URL_BYTES {
        return Err(ApiRefusal::invalid(
            FIELD,
            format!("longer than {MAX_PULL_URL_BYTES} bytes"),
        ));
    }
    let names = placeholders(raw).map_err(|e| ApiRefusal::invalid(FIELD, e))?;
    if let Some(bad) = names.iter().find(|n| !PULL_URL_PLACEHOLDERS.contains(n)) {
        return Err(ApiRefusal::invalid(
            FIELD,
            format!("{{{bad}}} is not a placeholder; use {{app}} and {{stream}}"),
        ));
    }
    if !names.contains(&"stream") {
        return Err(ApiRefusal::invalid(FIELD, "must contain {stream}"));
    }
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| ApiRefusal::invalid(FIELD, "not a URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if !PULL_URL_SCHEMES.contains(&scheme.as_str()) {
        return Err(ApiRefusal::invalid(
            FIELD,
            "only rtmp, rtmps, http and https URLs are accepted",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('{') {
        return Err(ApiRefusal::invalid(
            FIELD,
            "placeholders may not be in the host or port",
        ));
    }
    let filled = fill_pull_url(raw, "live", "stream");
    let source = SourceUrl::parse(&filled, TaskType::Live)
        .map_err(|_| ApiRefusal::invalid(FIELD, "not a usable source URL with a host"))?;
    if scheme.starts_with("rtmp") {
        RtmpUrl::parse_parts(&filled).map_err(|e| ApiRefusal::invalid(FIELD, e))?;
    }
    if !allow_private && source.is_internal() {
        return Err(invalid_parameter(
            "InvalidParameter.UrlNotSafe",
            format!(
                "{FIELD}: host {} is a private or internal address",
                source.host()
            ),
        ));
    }
    Ok(())
}

impl RecordDomain {
    /// The store key of `domain` (lower case).
    pub fn store_key(domain: &str) -> String {
        domain.to_string()
    }

    /// A domain from a create request.
    pub fn create(
        account: &str,
        input: RecordDomainInput,
        allow_private: bool,
        now_ms: i64,
    ) -> Result<Self, ApiRefusal> {
        let domain = input
            .domain_name
            .clone()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ApiRefusal::missing("DomainName"))?;
        let domain = parse_domain(&domain).map_err(|e| {
            invalid_parameter(
                "InvalidParameter.DomainFormatError",
                format!("DomainName: {e}"),
            )
        })?;
        let mut d = Self {
            account: account.to_string(),
            domain,
            pull_url_template: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        d.modify(input, allow_private, now_ms)?;
        Ok(d)
    }

    /// Applies a modify request (`PullUrlTemplate` replaced, `""` clears it).
    pub fn modify(
        &mut self,
        input: RecordDomainInput,
        allow_private: bool,
        now_ms: i64,
    ) -> Result<(), ApiRefusal> {
        if let Some(name) = input.domain_name.filter(|d| !d.is_empty()) {
            if parse_domain(&name).ok().as_deref() != Some(self.domain.as_str()) {
                return Err(ApiRefusal::invalid(
                    "DomainName",
                    format!(
                        "{name:?} is not the domain being modified ({})",
                        self.domain
                    ),
                ));
            }
        }
        if let Some(t) = input.pull_url_template {
            if t.is_empty() {
                self.pull_url_template = None;
            } else {
                check_pull_url_template(&t, allow_private)?;
                self.pull_url_template = Some(t);
            }
        }
        self.updated_ms = now_ms;
        Ok(())
    }

    /// Where the recorder pulls `stream` from; `None` when the domain has no pull URL template.
    /// Stream names were checked by [`StreamPath::parse`] (no `/`, `?`, `#` or spaces), so
    /// filling them in cannot change the URL's host or shape.
    pub fn pull_url(&self, stream: &StreamPath) -> Option<String> {
        self.pull_url_template
            .as_deref()
            .map(|t| fill_pull_url(t, &stream.app, &stream.stream))
    }

    /// The domain as the API shows it.
    pub fn to_wire(&self, utc_offset_secs: i32) -> Value {
        json!({
            "DomainName": self.domain,
            "PullUrlTemplate": self.pull_url_template.clone().unwrap_or_default(),
            "CreateTime": beijing_style_time(self.created_ms, utc_offset_secs),
            "UpdateTime": beijing_style_time(self.updated_ms, utc_offset_secs),
        })
    }
}

impl Entity for RecordDomain {
    const KIND: Kind = Kind("record_domain");

    fn key(&self) -> String {
        Self::store_key(&self.domain)
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: None,
            time_ms: Some(self.created_ms),
        }
    }
}

// ---- rules ------------------------------------------------------------------------------------

/// A rule as the API takes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RecordRuleInput {
    /// The push domain (one of the account's [`RecordDomain`]s).
    pub domain_name: Option<String>,
    /// The app; absent or `""` = every app of the domain. (Tencent defaults to `live`; here the
    /// empty default binds the whole domain, as seed 003 describes a domain's template.)
    pub app_name: Option<String>,
    /// The stream; absent or `""` = every stream of the app (or domain).
    pub stream_name: Option<String>,
    /// The template.
    pub template_id: Option<u64>,
}

/// A stored rule: streams of `domain` (and `app`, and `stream`, when set) record with template
/// `template_id` of `account`. Key: `{domain}/{app}/{stream}`, so a stream's rule is found by
/// point reads, most specific first ([`RecordRule::lookup_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRule {
    /// The owning account (the domain's).
    pub account: String,
    /// Lower-case push domain.
    pub domain: String,
    /// The app, `""` for every app.
    pub app: String,
    /// The stream, `""` for every stream.
    pub stream: String,
    /// The template of `account`.
    pub template_id: u64,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms.
    pub updated_ms: i64,
}

impl RecordRule {
    /// The store key of the rule for `domain`, `app` and `stream` (`""` for any). The parts
    /// cannot contain `/` ([`parse_domain`], [`parse_name`]), so keys never collide.
    pub fn store_key(domain: &str, app: &str, stream: &str) -> String {
        format!("{domain}/{app}/{stream}")
    }

    /// The keys of the rules that can apply to `stream`, most specific first: the stream in its
    /// app, the stream name in any app, the app, the whole domain.
    pub fn lookup_keys(stream: &StreamPath) -> [String; 4] {
        let (d, a, s) = (
            stream.domain.as_str(),
            stream.app.as_str(),
            stream.stream.as_str(),
        );
        [
            Self::store_key(d, a, s),
            Self::store_key(d, "", s),
            Self::store_key(d, a, ""),
            Self::store_key(d, "", ""),
        ]
    }

    /// A rule from a create request (the domain's and template's existence are checked by the
    /// caller).
    pub fn parse(account: &str, input: RecordRuleInput, now_ms: i64) -> Result<Self, ApiRefusal> {
        let domain = input
            .domain_name
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ApiRefusal::missing("DomainName"))?;
        let domain = parse_domain(&domain).map_err(|e| {
            invalid_parameter(
                "InvalidParameter.DomainFormatError",
                format!("DomainName: {e}"),
            )
        })?;
        let app = optional_name("AppName", "app", input.app_name)?;
        let stream = optional_name("StreamName", "stream", input.stream_name)?;
        let template_id = input
            .template_id
            .ok_or_else(|| ApiRefusal::missing("TemplateId"))?;
        Ok(Self {
            account: account.to_string(),
            domain,
            app,
            stream,
            template_id,
            created_ms: now_ms,
            updated_ms: now_ms,
        })
    }

    /// The rule as the API shows it (DescribeLiveRecordRules: times as `2024-04-17 11:55:21` in
    /// the display offset, Beijing time by default).
    pub fn to_wire(&self, utc_offset_secs: i32) -> Value {
        json!({
            "DomainName": self.domain,
            "AppName": self.app,
            "StreamName": self.stream,
            "TemplateId": self.template_id,
            "CreateTime": beijing_style_time(self.created_ms, utc_offset_secs),
            "UpdateTime": beijing_style_time(self.updated_ms, utc_offset_secs),
        })
    }
}

/// An app or stream name that may be `""` (any).
pub fn optional_name(
    field: &str,
    kind: &'static str,
    name: Option<String>,
) -> Result<String, ApiRefusal> {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => parse_name(kind, &n).map_err(|e| ApiRefusal::invalid(field, e)),
        None => Ok(String::new()),
    }
}

/// A time as DescribeLiveRecordRules shows it: `2024-04-17 11:55:21`, in the given offset.
pub fn beijing_style_time(ms: i64, utc_offset_secs: i32) -> String {
    let offset = chrono::FixedOffset::east_opt(utc_offset_secs)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&offset)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

impl Entity for RecordRule {
    const KIND: Kind = Kind("record_rule");

    fn key(&self) -> String {
        Self::store_key(&self.domain, &self.app, &self.stream)
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: None,
            time_ms: Some(self.created_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<RecordingTemplateInput, ApiRefusal> {
        serde_json::from_str(json).map_err(|e| ApiRefusal::from_json(&e))
    }

    fn create(json: &str) -> Result<RecordingTemplate, ApiRefusal> {
        RecordingTemplate::create("acme", 7, input(json)?, false, 5)
    }

    fn refuse(json: &str) -> ApiRefusal {
        create(json).expect_err(json)
    }

    #[test]
    fn a_template_takes_tencent_field_names_and_gives_its_spec() {
        let t = create(
            r#"{"TemplateName":"录制-main_1","Description":"night show","HlsParam":{"Enable":1,"VodSubAppId":251195406},
                "FlvParam":{"Enable":1,"RecordInterval":2222,"StorageTime":2,"VodSubAppId":251195406,"VodFileName":"{StreamID}_{StartYear}{StartMonth}"},
                "Mp4Param":{"Enable":0,"RecordInterval":600},
                "HlsSpecialParam":{"FlowContinueDuration":300},"SnapshotParam":{"Enable":1},
                "RecordNotifyUrl":"https://cb.example.com/rec","CallbackKey":"abcdefgh12345678"}"#,
        )
        .unwrap();
        let spec = t.spec();
        assert_eq!(spec.template_id, Some(7));
        assert_eq!(
            spec.formats,
            vec![
                FormatSpec {
                    format: RecordFormat::Hls,
                    max_file_secs: DEFAULT_RECORD_INTERVAL_SECS,
                    storage_secs: 0
                },
                FormatSpec {
                    format: RecordFormat::Flv,
                    max_file_secs: 2222,
                    storage_secs: 2
                },
            ],
            "enabled formats only, in RecordFormat::ALL's order"
        );
        assert_eq!((spec.resume_timeout_secs, spec.namespace), (300, 251195406));
        assert_eq!(
            spec.file_name_pattern.as_deref(),
            Some("{StreamID}_{StartYear}{StartMonth}")
        );
        assert_eq!(
            spec.notify_url.as_deref(),
            Some("https://cb.example.com/rec")
        );
        assert_eq!(
            spec.callback_key.as_ref().map(SecretKey::expose),
            Some("abcdefgh12345678")
        );
        assert_eq!(
            spec.snapshot_interval_secs,
            Some(DEFAULT_SNAPSHOT_INTERVAL_SECS)
        );

        let wire = t.to_wire();
        assert_eq!(wire["TemplateId"], 7);
        assert_eq!(wire["FlvParam"]["RecordInterval"], 2222);
        assert_eq!(
            wire["Mp4Param"],
            json!({"Enable":0,"RecordInterval":600,"StorageTime":0,"VodSubAppId":251195406,"VodFileName":"{StreamID}_{StartYear}{StartMonth}"})
        );
        assert_eq!(wire["HlsSpecialParam"]["FlowContinueDuration"], 300);
        assert_eq!(
            wire["CallbackKey"], "***5678",
            "the key is never shown in full"
        );
        assert!(!wire.to_string().contains("abcdefgh"));
        assert!(!format!("{t:?}").contains("abcdefgh"), "nor printed");
    }

    #[test]
    fn ranges_are_checked_at_both_edges() {
        let with = |field: &str, value: i64| {
            format!(
                r#"{{"TemplateName":"t","HlsParam":{{"Enable":1}},"Mp4Param":{{"Enable":1,"{field}":{value}}}}}"#
            )
        };
        for (field, lo, hi) in [
            ("RecordInterval", 60, 7200),
            ("StorageTime", 0, 129_600_000),
        ] {
            assert!(create(&with(field, lo)).is_ok(), "{field}={lo}");
            assert!(create(&with(field, hi)).is_ok(), "{field}={hi}");
            for bad in [lo - 1, hi + 1] {
                let e = refuse(&with(field, bad));
                assert_eq!(e.code, "InvalidParameterValue", "{field}={bad}");
                assert!(
                    e.message.starts_with(&format!("Mp4Param.{field}:"))
                        && e.message.contains(&format!("{lo}-{hi}")),
                    "{}",
                    e.message
                );
            }
        }
        let resume = |v: i64| {
            format!(
                r#"{{"TemplateName":"t","AacParam":{{"Enable":1}},"HlsSpecialParam":{{"FlowContinueDuration":{v}}}}}"#
            )
        };
        assert_eq!(create(&resume(0)).unwrap().resume_timeout_secs, 0);
        assert_eq!(create(&resume(1800)).unwrap().resume_timeout_secs, 1800);
        assert!(refuse(&resume(1801))
            .message
            .contains("HlsSpecialParam.FlowContinueDuration"));
        assert!(refuse(&resume(-1)).message.contains("0-1800"));
        let snap = |v: i64| {
            format!(
                r#"{{"TemplateName":"t","AacParam":{{"Enable":1}},"SnapshotParam":{{"Enable":1,"Interval":{v}}}}}"#
            )
        };
        assert_eq!(
            create(&snap(1)).unwrap().spec().snapshot_interval_secs,
            Some(1)
        );
        assert_eq!(
            create(&snap(3600)).unwrap().spec().snapshot_interval_secs,
            Some(3600)
        );
        assert!(refuse(&snap(0)).message.contains("SnapshotParam.Interval"));
        assert!(refuse(&snap(3601)).message.contains("1-3600"));
        assert!(refuse(r#"{"TemplateName":"t","HlsParam":{"Enable":2}}"#)
            .message
            .contains("HlsParam.Enable"));
        assert_eq!(
            refuse(r#"{"TemplateName":"t","HlsParam":{"Enable":1,"VodSubAppId":-1}}"#).code,
            "InvalidParameterValue"
        );
    }

    #[test]
    fn names_formats_and_fields_are_checked() {
        assert_eq!(
            refuse(r#"{"HlsParam":{"Enable":1}}"#).code,
            "MissingParameter"
        );
        assert_eq!(
            refuse(r#"{"TemplateName":"","HlsParam":{"Enable":1}}"#).code,
            "MissingParameter"
        );
        for bad in ["bad name", "a/b", "x!", &"n".repeat(256)] {
            let e = refuse(&format!(
                r#"{{"TemplateName":"{bad}","HlsParam":{{"Enable":1}}}}"#
            ));
            assert!(e.message.starts_with("TemplateName:"), "{bad}: {e}");
        }
        assert!(create(&format!(
            r#"{{"TemplateName":"{}","HlsParam":{{"Enable":1}}}}"#,
            "n".repeat(255)
        ))
        .is_ok());
        let e = refuse(r#"{"TemplateName":"t"}"#);
        assert!(e.message.contains("at least one format"), "{e}");
        assert!(refuse(
            r#"{"TemplateName":"t","SnapshotParam":{"Enable":1},"HlsParam":{"Enable":0}}"#
        )
        .message
        .contains("at least one format"));
        assert_eq!(
            refuse(r#"{"TemplateName":"t","HlsParam":{"Enable":1},"Mp3Param":{"Enable":1}}"#).code,
            "UnknownParameter"
        );
        assert_eq!(
            refuse(r#"{"TemplateName":"t","HlsParam":{"Enable":1,"Procedure":"x"}}"#).code,
            "UnknownParameter"
        );
        assert_eq!(refuse(r#"{"TemplateName":"t","HlsParam":{"Enable":1},"RecordNotifyUrl":"http://10.0.0.1/x"}"#).code, "InvalidParameter.UrlNotSafe");
        assert!(refuse(
            r#"{"TemplateName":"t","HlsParam":{"Enable":1},"RecordNotifyUrl":"ftp://a.com/x"}"#
        )
        .message
        .starts_with("RecordNotifyUrl"));
        let ok = RecordingTemplate::create("a", 1, input(r#"{"TemplateName":"t","HlsParam":{"Enable":1},"RecordNotifyUrl":"http://10.0.0.1/x"}"#).unwrap(), true, 0);
        assert!(
            ok.is_ok(),
            "internal notify URLs when the operator allows them"
        );
        for bad in ["has space", "sym!", &"k".repeat(33)] {
            let e = refuse(&format!(
                r#"{{"TemplateName":"t","HlsParam":{{"Enable":1}},"CallbackKey":"{bad}"}}"#
            ));
            assert!(e.message.starts_with("CallbackKey:"), "{bad}: {e}");
        }
        assert!(create(&format!(
            r#"{{"TemplateName":"t","HlsParam":{{"Enable":1}},"CallbackKey":"{}"}}"#,
            "k".repeat(32)
        ))
        .is_ok());
    }

    #[test]
    fn file_names_take_only_the_listed_placeholders() {
        let with = |name: &str| {
            format!(r#"{{"TemplateName":"t","Mp4Param":{{"Enable":1,"VodFileName":"{name}"}}}}"#)
        };
        let all: String = VOD_FILE_NAME_PLACEHOLDERS
            .iter()
            .map(|p| format!("{{{p}}}_"))
            .collect();
        assert_eq!(
            create(&with(&all)).unwrap().file_name_pattern.as_deref(),
            Some(all.as_str())
        );
        assert_eq!(
            create(&with("plain-name"))
                .unwrap()
                .file_name_pattern
                .as_deref(),
            Some("plain-name")
        );
        assert_eq!(
            create(&with("")).unwrap().file_name_pattern,
            None,
            "\"\" is the seed's naming"
        );
        for bad in [
            "{StreamId}",
            "{RandomID}",
            "{StreamID",
            "StreamID}",
            "{{StreamID}}",
            "{}",
            "{Start{Year}}",
        ] {
            assert_eq!(
                refuse(&with(bad)).code,
                "InvalidParameter.InvalidVodFileName",
                "{bad}"
            );
        }
        assert_eq!(
            refuse(&with(&"x".repeat(257))).code,
            "InvalidParameter.InvalidVodFileName"
        );
    }

    #[test]
    fn one_namespace_and_one_file_name_per_template() {
        let e = refuse(
            r#"{"TemplateName":"t","HlsParam":{"Enable":1,"VodSubAppId":1},"Mp4Param":{"Enable":1,"VodSubAppId":2}}"#,
        );
        assert!(
            e.message.starts_with("VodSubAppId:")
                && e.message.contains("HlsParam has 1")
                && e.message.contains("Mp4Param has 2"),
            "{e}"
        );
        let e = refuse(
            r#"{"TemplateName":"t","HlsParam":{"Enable":1,"VodFileName":"a"},"FlvParam":{"Enable":1,"VodFileName":"b"}}"#,
        );
        assert!(e.message.starts_with("VodFileName:"), "{e}");
        // A format that names none takes the template's; a later value moves every format.
        let mut t = create(r#"{"TemplateName":"t","HlsParam":{"Enable":1,"VodSubAppId":5},"AacParam":{"Enable":1}}"#).unwrap();
        assert_eq!(t.spec().namespace, 5);
        t.modify(
            input(r#"{"AacParam":{"VodSubAppId":9}}"#).unwrap(),
            false,
            6,
        )
        .unwrap();
        assert_eq!(
            (
                t.spec().namespace,
                t.to_wire()["HlsParam"]["VodSubAppId"].as_u64()
            ),
            (9, Some(9))
        );
    }

    #[test]
    fn modify_merges_and_a_refusal_changes_nothing() {
        let mut t = create(r#"{"TemplateName":"t","FlvParam":{"Enable":1,"RecordInterval":600},"Mp4Param":{"Enable":1},"CallbackKey":"abcdefghijkl1234"}"#).unwrap();
        let before = t.clone();
        let e = t
            .modify(
                input(r#"{"TemplateName":"renamed","FlvParam":{"RecordInterval":59}}"#).unwrap(),
                false,
                9,
            )
            .unwrap_err();
        assert!(e.message.starts_with("FlvParam.RecordInterval"));
        assert_eq!(t, before, "nothing of a refused modify is applied");
        t.modify(input(r#"{"FlvParam":{"Enable":0}}"#).unwrap(), false, 9)
            .unwrap();
        assert_eq!(
            (t.flv.enabled, t.flv.record_interval_secs, t.updated_ms),
            (false, 600, 9),
            "only the given field changes"
        );
        assert!(
            t.modify(input(r#"{"Mp4Param":{"Enable":0}}"#).unwrap(), false, 10)
                .is_err(),
            "the last format cannot be turned off"
        );
        t.modify(input(r#"{"CallbackKey":"***1234"}"#).unwrap(), false, 11)
            .unwrap();
        assert_eq!(
            t.callback_key.as_ref().map(SecretKey::expose),
            Some("abcdefghijkl1234"),
            "the masked key sent back keeps the key"
        );
        t.modify(input(r#"{"CallbackKey":""}"#).unwrap(), false, 12)
            .unwrap();
        assert_eq!(t.callback_key, None);
    }

    fn domain(template: &str, allow_private: bool) -> Result<RecordDomain, ApiRefusal> {
        let input = RecordDomainInput {
            domain_name: Some("Push.Example.com".into()),
            pull_url_template: Some(template.into()),
        };
        RecordDomain::create("acme", input, allow_private, 0)
    }

    #[test]
    fn pull_url_templates_follow_the_source_rules() {
        let d = domain("rtmp://origin.example.com:1935/{app}/{stream}", false).unwrap();
        assert_eq!(d.domain, "push.example.com");
        let stream = StreamPath::parse("push.example.com", "live", "cam1").unwrap();
        assert_eq!(
            d.pull_url(&stream).as_deref(),
            Some("rtmp://origin.example.com:1935/live/cam1")
        );
        assert!(domain("https://origin.example.com/{app}/{stream}.flv?k=1", false).is_ok());
        assert!(domain("rtmps://origin.example.com/live/{stream}", false).is_ok());
        for bad in [
            "rtsp://origin.example.com/{app}/{stream}",
            "ftp://origin.example.com/{stream}",
            "rtmp://{app}.example.com/x/{stream}",
            "rtmp://origin.example.com:{app}/x/{stream}",
            "rtmp://origin.example.com/{app}/{stream}/{session}",
            "rtmp://origin.example.com/{app}/fixed",
            "rtmp://origin.example.com/{stream}",
            "rtmp://user:pw@origin.example.com/{app}/{stream}",
            "rtmp://origin.example.com/{app}/{stream",
            "not a url {stream}",
        ] {
            assert_eq!(
                domain(bad, false).unwrap_err().code,
                "InvalidParameterValue",
                "{bad}"
            );
        }
        for private in [
            "rtmp://127.0.0.1/{app}/{stream}",
            "rtmp://0x7f.1/{app}/{stream}",
            "http://169.254.169.254/{stream}",
            "rtmp://origin.internal/{app}/{stream}",
        ] {
            assert_eq!(
                domain(private, false).unwrap_err().code,
                "InvalidParameter.UrlNotSafe",
                "{private}"
            );
            assert!(
                domain(private, true).is_ok(),
                "{private} when the operator allows private targets"
            );
        }
        let no_name =
            RecordDomain::create("a", RecordDomainInput::default(), false, 0).unwrap_err();
        assert_eq!(no_name.code, "MissingParameter");
        let bad_name = RecordDomain::create(
            "a",
            RecordDomainInput {
                domain_name: Some("a b".into()),
                pull_url_template: None,
            },
            false,
            0,
        )
        .unwrap_err();
        assert_eq!(bad_name.code, "InvalidParameter.DomainFormatError");
        let mut d = domain("rtmp://origin.example.com/{app}/{stream}", false).unwrap();
        assert!(d
            .modify(
                RecordDomainInput {
                    domain_name: Some("other.com".into()),
                    pull_url_template: None
                },
                false,
                1
            )
            .is_err());
        d.modify(
            RecordDomainInput {
                domain_name: None,
                pull_url_template: Some(String::new()),
            },
            false,
            1,
        )
        .unwrap();
        assert_eq!(d.pull_url(&stream), None);
    }

    #[test]
    fn rules_are_keyed_by_their_three_names() {
        let rule = |json: &str| RecordRule::parse("a", serde_json::from_str(json).unwrap(), 0);
        assert_eq!(rule(r#"{"DomainName":"Push.Example.com","AppName":"live","StreamName":"cam1","TemplateId":3}"#).unwrap().key(), "push.example.com/live/cam1");
        assert_eq!(
            rule(r#"{"DomainName":"push.example.com","TemplateId":3}"#)
                .unwrap()
                .key(),
            "push.example.com//",
            "whole domain"
        );
        assert_eq!(rule(r#"{"DomainName":"push.example.com","AppName":"","StreamName":"cam1","TemplateId":3}"#).unwrap().key(), "push.example.com//cam1");
        assert_eq!(
            rule(r#"{"TemplateId":3}"#).unwrap_err().code,
            "MissingParameter"
        );
        assert_eq!(
            rule(r#"{"DomainName":"push.example.com"}"#)
                .unwrap_err()
                .code,
            "MissingParameter"
        );
        assert_eq!(
            rule(r#"{"DomainName":"a b","TemplateId":3}"#)
                .unwrap_err()
                .code,
            "InvalidParameter.DomainFormatError"
        );
        assert!(
            rule(r#"{"DomainName":"d.com","AppName":"a/b","TemplateId":3}"#)
                .unwrap_err()
                .message
                .starts_with("AppName")
        );
        assert!(
            rule(r#"{"DomainName":"d.com","StreamName":"..","TemplateId":3}"#)
                .unwrap_err()
                .message
                .starts_with("StreamName")
        );
        let stream = StreamPath::parse("d.com", "live", "cam1").unwrap();
        assert_eq!(
            RecordRule::lookup_keys(&stream),
            ["d.com/live/cam1", "d.com//cam1", "d.com/live/", "d.com//"].map(String::from)
        );
        assert_eq!(
            beijing_style_time(1_713_326_121_000, 8 * 3600),
            "2024-04-17 11:55:21"
        );
        let wire = rule(r#"{"DomainName":"d.com","TemplateId":3}"#)
            .unwrap()
            .to_wire(8 * 3600);
        assert_eq!(
            (
                wire["AppName"].as_str(),
                wire["StreamName"].as_str(),
                wire["CreateTime"].as_str()
            ),
            (Some(""), Some(""), Some("1970-01-01 08:00:00"))
        );
    }
}
