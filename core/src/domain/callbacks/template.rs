//! Callback templates and rules (SCHEMAS.md §4): per account, a template holds one URL per event
//! kind and a `CallbackKey`; a rule binds a template to a push domain and optionally an app.
//! The JSON of the `/v1` API uses Tencent's field names so a Tencent user recognizes them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::event::{parse_domain, parse_name, StreamEventKind};
use crate::domain::api_error::ApiRefusal;
use crate::domain::auth::SecretKey;
use crate::domain::targets::check_url_host;
use crate::ports::{Entity, IndexKeys, Kind};

/// Most templates per account (SCHEMAS.md §4.1).
pub const MAX_TEMPLATES: usize = 50;
const MAX_NAME_BYTES: usize = 255;
const MAX_DESCRIPTION_BYTES: usize = 1024;
const MAX_URL_BYTES: usize = 2048;
const MAX_KEY_BYTES: usize = 128;

/// The notify URLs of a template, one per kind of event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NotifyUrls {
    /// Push started (event 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_begin_notify_url: Option<String>,
    /// Push stopped (event 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_end_notify_url: Option<String>,
    /// Recording file (event 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_notify_url: Option<String>,
    /// Recording status (event 332).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_status_notify_url: Option<String>,
    /// Snapshot (event 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_notify_url: Option<String>,
    /// Porn detection (event 317).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub porn_censorship_notify_url: Option<String>,
    /// Push exception (event 321).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_exception_notify_url: Option<String>,
}

impl NotifyUrls {
    fn fields_mut(&mut self) -> [(&'static str, &mut Option<String>); 7] {
        [
            ("StreamBeginNotifyUrl", &mut self.stream_begin_notify_url),
            ("StreamEndNotifyUrl", &mut self.stream_end_notify_url),
            ("RecordNotifyUrl", &mut self.record_notify_url),
            ("RecordStatusNotifyUrl", &mut self.record_status_notify_url),
            ("SnapshotNotifyUrl", &mut self.snapshot_notify_url),
            (
                "PornCensorshipNotifyUrl",
                &mut self.porn_censorship_notify_url,
            ),
            (
                "PushExceptionNotifyUrl",
                &mut self.push_exception_notify_url,
            ),
        ]
    }

    /// The URL events of `kind` go to.
    pub fn for_kind(&self, kind: StreamEventKind) -> Option<&str> {
        match kind {
            StreamEventKind::Publish => self.stream_begin_notify_url.as_deref(),
            StreamEventKind::Unpublish => self.stream_end_notify_url.as_deref(),
            StreamEventKind::Record => self.record_notify_url.as_deref(),
            StreamEventKind::RecordStatus => self.record_status_notify_url.as_deref(),
            StreamEventKind::Snapshot => self.snapshot_notify_url.as_deref(),
            StreamEventKind::Porn => self.porn_censorship_notify_url.as_deref(),
            StreamEventKind::PushException => self.push_exception_notify_url.as_deref(),
            _ => None,
        }
    }
}

/// A template as the API takes it for a create (`TemplateName` required) or a modify (every
/// field optional; a field given as `""` is cleared).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CallbackTemplateInput {
    /// Up to 255 bytes of CJK, letters, digits, `_` and `-`.
    pub template_name: Option<String>,
    /// Up to 1024 bytes.
    pub description: Option<String>,
    /// Push started (event 1).
    pub stream_begin_notify_url: Option<String>,
    /// Push stopped (event 0).
    pub stream_end_notify_url: Option<String>,
    /// Recording file (event 100).
    pub record_notify_url: Option<String>,
    /// Recording status (event 332).
    pub record_status_notify_url: Option<String>,
    /// Snapshot (event 200).
    pub snapshot_notify_url: Option<String>,
    /// Porn detection (event 317).
    pub porn_censorship_notify_url: Option<String>,
    /// Push exception (event 321).
    pub push_exception_notify_url: Option<String>,
    /// Shared by every URL; `sign = md5(CallbackKey + t)`.
    pub callback_key: Option<String>,
}

impl CallbackTemplateInput {
    fn take_urls(&mut self) -> NotifyUrls {
        NotifyUrls {
            stream_begin_notify_url: self.stream_begin_notify_url.take(),
            stream_end_notify_url: self.stream_end_notify_url.take(),
            record_notify_url: self.record_notify_url.take(),
            record_status_notify_url: self.record_status_notify_url.take(),
            snapshot_notify_url: self.snapshot_notify_url.take(),
            porn_censorship_notify_url: self.porn_censorship_notify_url.take(),
            push_exception_notify_url: self.push_exception_notify_url.take(),
        }
    }
}

/// A stored callback template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackTemplate {
    /// The owning account.
    pub account: String,
    /// `TemplateId`, unique within the account.
    pub id: u64,
    /// `TemplateName`.
    pub name: String,
    /// `Description`.
    pub description: String,
    /// The notify URLs.
    pub urls: NotifyUrls,
    /// `CallbackKey`.
    pub callback_key: Option<SecretKey>,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms.
    pub updated_ms: i64,
}

/// Whether `s` is made of CJK, ASCII letters, digits, `_` and `-` (and spaces when
/// `allow_space`): Tencent's character set for template names and descriptions.
pub(crate) fn name_chars_ok(s: &str, allow_space: bool) -> bool {
    s.chars().all(|c| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-' || (allow_space && c == ' ') || is_cjk(c)
    })
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xAC00..=0xD7AF | 0x3040..=0x30FF)
}

/// Checks a notify URL: http or https, a host, no user info, not internal unless allowed.
pub fn check_notify_url(field: &str, raw: &str, allow_private: bool) -> Result<(), ApiRefusal> {
    if raw.len() > MAX_URL_BYTES {
        return Err(ApiRefusal::invalid(
            field,
            format!("longer than {MAX_URL_BYTES} bytes"),
        ));
    }
    let url =
        url::Url::parse(raw).map_err(|e| ApiRefusal::invalid(field, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiRefusal::invalid(
            field,
            "only http and https URLs are accepted",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiRefusal::invalid(
            field,
            "user info in the URL is not accepted",
        ));
    }
    check_url_host(&url, allow_private).map_err(|e| ApiRefusal {
        code: "InvalidParameter.UrlNotSafe",
        message: format!("{field}: {e}"),
        status: 400,
    })
}

impl CallbackTemplate {
    /// The store key of template `id` of `account`.
    pub fn store_key(account: &str, id: u64) -> String {
        format!("{account}/{id}")
    }

    /// A new template from a create request.
    pub fn create(
        account: &str,
        id: u64,
        input: CallbackTemplateInput,
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
            urls: NotifyUrls::default(),
            callback_key: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        t.modify(input, allow_private, now_ms)?;
        Ok(t)
    }

    /// Applies a modify request: given fields replace the stored ones (`""` clears a URL or the
    /// key); the result must still have at least one URL.
    pub fn modify(
        &mut self,
        mut input: CallbackTemplateInput,
        allow_private: bool,
        now_ms: i64,
    ) -> Result<(), ApiRefusal> {
        if let Some(name) = input.template_name.take() {
            if name.is_empty() || name.len() > MAX_NAME_BYTES || !name_chars_ok(&name, false) {
                return Err(ApiRefusal::invalid(
                    "TemplateName",
                    format!("1-{MAX_NAME_BYTES} bytes of CJK, letters, digits, _ and -"),
                ));
            }
            self.name = name;
        }
        if let Some(d) = input.description.take() {
            if d.len() > MAX_DESCRIPTION_BYTES || !name_chars_ok(&d, true) {
                return Err(ApiRefusal::invalid("Description", format!("up to {MAX_DESCRIPTION_BYTES} bytes of CJK, letters, digits, spaces, _ and -")));
            }
            self.description = d;
        }
        let mut urls = input.take_urls();
        for ((field, new), (_, stored)) in urls.fields_mut().into_iter().zip(self.urls.fields_mut())
        {
            match new.take() {
                None => {}
                Some(u) if u.is_empty() => *stored = None,
                Some(u) => {
                    check_notify_url(field, &u, allow_private)?;
                    *stored = Some(u);
                }
            }
        }
        if let Some(key) = input.callback_key {
            if key.is_empty() {
                self.callback_key = None;
            } else if key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiRefusal::invalid(
                    "CallbackKey",
                    format!("1-{MAX_KEY_BYTES} printable ASCII characters without spaces"),
                ));
            } else {
                self.callback_key = Some(SecretKey::new(key));
            }
        }
        if self.urls == NotifyUrls::default() {
            return Err(ApiRefusal::invalid(
                "StreamBeginNotifyUrl",
                "a template needs at least one notify URL",
            ));
        }
        self.updated_ms = now_ms;
        Ok(())
    }

    /// The template as the API shows it (SCHEMAS.md §4.2's CallBackTemplateInfo; the key is
    /// shown to its owner, as DescribeLiveCallbackTemplates does).
    pub fn to_wire(&self) -> Value {
        let mut v = json!({
            "TemplateId": self.id,
            "TemplateName": self.name,
            "Description": self.description,
            "CallbackKey": self.callback_key.as_ref().map(|k| k.expose()).unwrap_or_default(),
        });
        if let (Value::Object(map), Ok(Value::Object(urls))) =
            (&mut v, serde_json::to_value(&self.urls))
        {
            map.extend(urls);
        }
        v
    }
}

impl Entity for CallbackTemplate {
    const KIND: Kind = Kind("callback_template");

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

/// A rule as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CallbackRuleInput {
    /// The push domain.
    pub domain_name: Option<String>,
    /// The app; absent or `""` binds every app of the domain.
    pub app_name: Option<String>,
    /// The template.
    pub template_id: Option<u64>,
}

/// A stored rule: events of `domain` (and `app`, when set) go to template `template_id` of
/// `account`. Rules are global per domain+app, since an inbound CSS event names only its domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRule {
    /// The owning account.
    pub account: String,
    /// Lower-case push domain.
    pub domain: String,
    /// The app, `""` for every app.
    pub app: String,
    /// The template of `account`.
    pub template_id: u64,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms.
    pub updated_ms: i64,
}

impl CallbackRule {
    /// The store key of the rule for `domain` and `app` (`""` for every app).
    pub fn store_key(domain: &str, app: &str) -> String {
        format!("{domain}/{app}")
    }

    /// A rule from a create request (the template's existence is checked by the caller).
    pub fn parse(account: &str, input: CallbackRuleInput, now_ms: i64) -> Result<Self, ApiRefusal> {
        let domain = input
            .domain_name
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ApiRefusal::missing("DomainName"))?;
        let domain = parse_domain(&domain).map_err(|e| ApiRefusal::invalid("DomainName", e))?;
        let app = match input.app_name.filter(|a| !a.is_empty()) {
            Some(a) => parse_name("app", &a).map_err(|e| ApiRefusal::invalid("AppName", e))?,
            None => String::new(),
        };
        let template_id = input
            .template_id
            .ok_or_else(|| ApiRefusal::missing("TemplateId"))?;
        Ok(Self {
            account: account.to_string(),
            domain,
            app,
            template_id,
            created_ms: now_ms,
            updated_ms: now_ms,
        })
    }

    /// The rule as the API shows it (DescribeLiveCallbackRules).
    pub fn to_wire(&self, utc_offset_secs: i32) -> Value {
        json!({
            "DomainName": self.domain,
            "AppName": self.app,
            "TemplateId": self.template_id,
            "CreateTime": iso_time(self.created_ms, utc_offset_secs),
            "UpdateTime": iso_time(self.updated_ms, utc_offset_secs),
        })
    }
}

/// An ISO 8601 time with the offset, as Tencent shows rule times (`2022-05-16T10:59:38+08:00`).
pub fn iso_time(ms: i64, utc_offset_secs: i32) -> String {
    let offset = chrono::FixedOffset::east_opt(utc_offset_secs)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&offset)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default()
}

impl Entity for CallbackRule {
    const KIND: Kind = Kind("callback_rule");

    fn key(&self) -> String {
        Self::store_key(&self.domain, &self.app)
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

    fn input(json: &str) -> Result<CallbackTemplateInput, ApiRefusal> {
        serde_json::from_str(json).map_err(|e| ApiRefusal::from_json(&e))
    }

    #[test]
    fn a_template_takes_tencent_field_names_and_checks_them() {
        let t = CallbackTemplate::create(
            "acme",
            1,
            input(r#"{"TemplateName":"live_cb-1","StreamBeginNotifyUrl":"https://cb.example.com/begin","CallbackKey":"k1"}"#).unwrap(),
            false,
            5,
        )
        .unwrap();
        assert_eq!(
            t.urls.for_kind(StreamEventKind::Publish),
            Some("https://cb.example.com/begin")
        );
        assert_eq!(t.urls.for_kind(StreamEventKind::Unpublish), None);
        let wire = t.to_wire();
        assert_eq!(wire["TemplateId"], 1);
        assert_eq!(wire["StreamBeginNotifyUrl"], "https://cb.example.com/begin");
        assert_eq!(wire["CallbackKey"], "k1");
        assert!(format!("{t:?}").contains("***") && !format!("{t:?}").contains("k1"));
    }

    #[test]
    fn bad_templates_are_refused_with_the_field_named() {
        let refuse = |json: &str| match input(json) {
            Err(e) => e,
            Ok(i) => CallbackTemplate::create("a", 1, i, false, 0).unwrap_err(),
        };
        assert_eq!(
            refuse(r#"{"TemplateName":"x","StreamBeginNotifyUrl":"http://a.com","Foo":1}"#).code,
            "UnknownParameter"
        );
        assert_eq!(
            refuse(r#"{"StreamBeginNotifyUrl":"http://a.com"}"#).code,
            "MissingParameter"
        );
        assert_eq!(
            refuse(r#"{"TemplateName":"x"}"#).code,
            "InvalidParameterValue"
        );
        assert!(
            refuse(r#"{"TemplateName":"x","StreamEndNotifyUrl":"ftp://a.com/x"}"#)
                .message
                .contains("StreamEndNotifyUrl")
        );
        assert_eq!(
            refuse(r#"{"TemplateName":"x","RecordNotifyUrl":"http://127.0.0.1/x"}"#).code,
            "InvalidParameter.UrlNotSafe"
        );
        assert_eq!(
            refuse(r#"{"TemplateName":"bad name!","RecordNotifyUrl":"http://a.com/x"}"#)
                .message
                .split(':')
                .next(),
            Some("TemplateName")
        );
        assert_eq!(
            refuse(r#"{"TemplateName":"x","RecordNotifyUrl":"http://u:p@a.com/x"}"#).code,
            "InvalidParameterValue"
        );
        let ok = CallbackTemplate::create(
            "a",
            1,
            input(r#"{"TemplateName":"直播回调","RecordNotifyUrl":"http://127.0.0.1/x"}"#).unwrap(),
            true,
            0,
        );
        assert!(
            ok.is_ok(),
            "CJK names, and internal URLs when the operator allows them"
        );
    }

    #[test]
    fn modify_clears_with_empty_strings_but_keeps_one_url() {
        let mut t = CallbackTemplate::create("a", 1, input(r#"{"TemplateName":"x","RecordNotifyUrl":"http://a.com/r","SnapshotNotifyUrl":"http://a.com/s"}"#).unwrap(), false, 0).unwrap();
        t.modify(input(r#"{"RecordNotifyUrl":""}"#).unwrap(), false, 1)
            .unwrap();
        assert_eq!(t.urls.record_notify_url, None);
        assert!(t
            .modify(input(r#"{"SnapshotNotifyUrl":""}"#).unwrap(), false, 2)
            .is_err());
    }

    #[test]
    fn rules_need_a_domain_and_a_template() {
        let rule = |json: &str| CallbackRule::parse("a", serde_json::from_str(json).unwrap(), 0);
        let r =
            rule(r#"{"DomainName":"Push.Example.com","AppName":"live","TemplateId":3}"#).unwrap();
        assert_eq!(r.key(), "push.example.com/live");
        assert_eq!(
            rule(r#"{"DomainName":"push.example.com","TemplateId":3}"#)
                .unwrap()
                .key(),
            "push.example.com/"
        );
        assert_eq!(
            rule(r#"{"TemplateId":3}"#).unwrap_err().code,
            "MissingParameter"
        );
        assert_eq!(
            rule(r#"{"DomainName":"a b","TemplateId":3}"#)
                .unwrap_err()
                .code,
            "InvalidParameterValue"
        );
        assert_eq!(
            iso_time(1_652_669_978_000, 8 * 3600),
            "2022-05-16T10:59:38+08:00"
        );
    }
}
