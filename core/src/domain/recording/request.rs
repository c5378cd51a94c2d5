//! Specific recording (seed 004): `POST /v1/recordings` takes Tencent's `CreateRecordTask`
//! fields (`DomainName`, `AppName`, `StreamName` or our `SourceUrl`, `TemplateId`, `RecordId`,
//! `EndTime` in Unix seconds) and becomes a [`Recording`] here, checked once for every host.

use serde::Deserialize;

use super::template::RecordingTemplate;
use super::{Recording, RecordingMode, RecordingState};
use crate::domain::api_error::ApiRefusal;
use crate::domain::callbacks::StreamPath;
use crate::domain::relay::{SourceUrl, TaskType};

/// Longest specific recording when `EndTime` is given, as Tencent's `CreateRecordTask` allows.
pub const MAX_TASK_SECS: i64 = 24 * 3600;
/// Longest `RecordId`.
pub const MAX_RECORD_ID: usize = 64;

/// The body of `POST /v1/recordings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RecordTaskInput {
    /// The push domain of the stream (with `AppName` and `StreamName`).
    pub domain_name: Option<String>,
    /// Its app; default `live`.
    pub app_name: Option<String>,
    /// The stream.
    pub stream_name: Option<String>,
    /// Instead of a domain's stream: any live source URL the relay could pull.
    pub source_url: Option<String>,
    /// The recording template.
    pub template_id: Option<u64>,
    /// Names the files (`RecordId_main_start_end`); letters, digits, `_` and `-`.
    pub record_id: Option<String>,
    /// Stop at this Unix time (seconds), within 24 hours.
    pub end_time: Option<i64>,
}

/// Where a specific recording pulls from, as the API resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSource {
    /// A stream of one of the account's push domains: its pull URL.
    Stream {
        /// The stream.
        stream: StreamPath,
        /// The domain's pull URL for it.
        pull_url: Option<String>,
    },
    /// A URL given as is.
    Url(String),
}

impl RecordTaskInput {
    /// The stream or URL to record, checked; the caller looks the domain's pull URL up.
    pub fn source(&self) -> Result<RecordSource, ApiRefusal> {
        match (&self.source_url, &self.domain_name, &self.stream_name) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiRefusal::invalid(
                "SourceUrl",
                "give either SourceUrl or DomainName and StreamName, not both",
            )),
            (Some(url), None, None) => Ok(RecordSource::Url(url.clone())),
            (None, Some(domain), Some(stream)) => {
                let app = self.app_name.as_deref().unwrap_or("live");
                let stream = StreamPath::parse(domain, app, stream)
                    .map_err(|e| ApiRefusal::invalid("StreamName", e))?;
                Ok(RecordSource::Stream {
                    stream,
                    pull_url: None,
                })
            }
            (None, None, _) => Err(ApiRefusal::missing("DomainName (or SourceUrl)")),
            (None, Some(_), None) => Err(ApiRefusal::missing("StreamName")),
        }
    }

    /// The recording this request starts, with id `id`, from `template`; `source` is what
    /// [`source`](Self::source) gave with the pull URL filled in.
    pub fn into_recording(
        self,
        account: &str,
        id: String,
        template: &RecordingTemplate,
        source: RecordSource,
        allow_private: bool,
        now_ms: i64,
    ) -> Result<Recording, ApiRefusal> {
        if let Some(record_id) = &self.record_id {
            let ok = !record_id.is_empty()
                && record_id.len() <= MAX_RECORD_ID
                && record_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(ApiRefusal::invalid(
                    "RecordId",
                    format!("1-{MAX_RECORD_ID} letters, digits, _ and -"),
                ));
            }
        }
        let end_time_ms = match self.end_time {
            Some(end) if end * 1000 <= now_ms => {
                return Err(ApiRefusal::invalid("EndTime", "must be in the future"))
            }
            Some(end) if end * 1000 > now_ms + MAX_TASK_SECS * 1000 => {
                return Err(ApiRefusal::invalid("EndTime", "must be within 24 hours"))
            }
            Some(end) => Some(end * 1000),
            None => None,
        };
        let (stream, url) = match source {
            RecordSource::Stream {
                stream,
                pull_url: Some(url),
            } => (Some(stream), url),
            RecordSource::Stream {
                stream,
                pull_url: None,
            } => {
                return Err(ApiRefusal::invalid(
                    "DomainName",
                    format!("{} has no PullUrlTemplate to record from", stream.domain),
                ))
            }
            RecordSource::Url(url) => (None, url),
        };
        let source_url = SourceUrl::parse(&url, TaskType::Live).map_err(|_| {
            ApiRefusal::invalid(
                "SourceUrl",
                "not a live source URL the recorder can pull (rtmp, rtmps, http, https, rtsp, srt)",
            )
        })?;
        if !allow_private && source_url.is_internal() {
            return Err(ApiRefusal::invalid("SourceUrl", "private, loopback and link-local addresses are refused (allow_private_targets is off)"));
        }
        Ok(Recording {
            account: account.to_string(),
            id,
            mode: RecordingMode::Specific,
            record_id: self.record_id,
            stream,
            source_url: source_url.as_str().to_string(),
            stream_param: String::new(),
            spec: template.spec(),
            created_ms: now_ms,
            end_time_ms,
            stop_requested_ms: None,
            stream_stopped_ms: None,
            state: RecordingState::Pending,
            error: None,
            files: Vec::new(),
        })
    }
}

impl Recording {
    /// The wire form of `GET /v1/recordings/{id}`: Tencent's names where it has them.
    pub fn to_wire(&self) -> serde_json::Value {
        let stream = self.stream.as_ref();
        serde_json::json!({
            "TaskId": self.id,
            "RecordId": self.record_id,
            "Mode": match self.mode { RecordingMode::Auto => "auto", RecordingMode::Specific => "specific" },
            "DomainName": stream.map(|s| s.domain.as_str()),
            "AppName": stream.map(|s| s.app.as_str()),
            "StreamName": stream.map(|s| s.stream.as_str()),
            "SourceUrl": crate::domain::relay::types::redact_url(&self.source_url),
            "TemplateId": self.spec.template_id,
            "Formats": self.spec.formats.iter().map(|f| f.format.as_str()).collect::<Vec<_>>(),
            "Status": match self.state { RecordingState::Pending => "pending", RecordingState::Recording => "recording", RecordingState::Finished => "finished" },
            "CreateTime": self.created_ms / 1000,
            "EndTime": self.end_time_ms.map(|e| e / 1000),
            "StopRequested": self.stop_requested_ms.is_some(),
            "Files": self.files,
            "Error": self.error,
        })
    }
}
