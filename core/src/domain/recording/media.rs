//! Media records (SCHEMAS.md §5): the media library of finished recording files, their search
//! (§5.1 `SearchMedia`) and the record notice of each (§2.4, event 100). A media record is made
//! once per object key (its `FileId` is a digest of the key), so the same notice handled twice
//! yields one record.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{RecordFile, RecordFormat};
use crate::domain::api_error::ApiRefusal;
use crate::domain::callbacks::StreamPath;
use crate::ports::{Entity, IndexKeys, Kind};

/// `Offset + Limit` may not pass this (§5.1), and `TotalCount` is capped at it.
pub const MAX_SEARCH_WINDOW: u64 = 5_000;
/// Most values in one array filter.
const MAX_FILTER_VALUES: usize = 10;
/// Longest value of a name filter.
const MAX_NAME_FILTER: usize = 100;

/// The `FileId` of the file at `object_key`: 20 hex digits of its SHA-256.
pub fn file_id_of(object_key: &str) -> String {
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        object_key.as_bytes(),
    ));
    digest[..20].to_string()
}

/// A finished file in the media library. Key: `{account}/{file_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// `FileId`.
    pub file_id: String,
    /// When the notice made it, Unix ms (`CreateTime`).
    pub created_ms: i64,
    /// What the recorder wrote of the file.
    pub file: RecordFile,
}

impl MediaRecord {
    /// The media record of `file`, created at `now_ms`.
    pub fn new(file: RecordFile, now_ms: i64) -> Self {
        MediaRecord {
            file_id: file_id_of(&file.object_key),
            created_ms: now_ms,
            file,
        }
    }

    /// The store key of `file_id` of `account`.
    pub fn store_key(account: &str, file_id: &str) -> String {
        format!("{account}/{file_id}")
    }

    /// The status index value of an account's media of one namespace: a search is an index
    /// query, and never sees another namespace.
    pub fn namespace_index(account: &str, namespace: u64) -> String {
        format!("media:{account}:{namespace}")
    }

    /// Every object of the file (the file itself first).
    pub fn object_keys(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.file.object_key).chain(self.file.parts.iter())
    }

    /// Tencent's `MediaInfo` (§5.1) with `MediaUrl` = `url`.
    pub fn to_wire(&self, url: &str) -> Value {
        let f = &self.file;
        let stream = f.stream.as_ref();
        let audio_only = f.format == RecordFormat::Aac;
        let (width, height) = f
            .resolution
            .as_deref()
            .and_then(|r| r.split_once('x'))
            .map_or((0, 0), |(w, h)| {
                (w.parse().unwrap_or(0), h.parse().unwrap_or(0))
            });
        json!({
            "FileId": self.file_id,
            "BasicInfo": {
                "Name": f.name,
                "Description": "",
                "CreateTime": iso_utc(self.created_ms),
                "UpdateTime": iso_utc(self.created_ms),
                "ExpireTime": f.expires_ms.map_or_else(|| "9999-12-31T23:59:59Z".to_string(), iso_utc),
                "Type": f.format.extension(),
                "MediaUrl": url,
                "Category": category(f.format),
                "Status": "Normal",
                "StorageRegion": "local",
                "StoragePath": f.object_key,
                "Vid": f.record_id.clone().unwrap_or_default(),
                "SourceInfo": {
                    "SourceType": "Record",
                    "SourceContext": f.recording_id,
                    "LiveRecordInfo": {
                        "Domain": stream.map(|s| s.domain.as_str()).unwrap_or(""),
                        "Path": stream.map(|s| s.app.as_str()).unwrap_or(""),
                        "StreamId": f.stream_id,
                        "RecordStartTime": iso_utc(f.start_ms),
                        "RecordEndTime": iso_utc(f.end_ms),
                    },
                },
            },
            "MetaData": {
                "Size": f.size,
                "Container": f.format.as_str(),
                "Duration": f.duration_ms as f64 / 1000.0,
                "Width": width,
                "Height": height,
                "VideoStreamSet": if audio_only { json!([]) } else { json!([{ "Codec": f.video_codec, "Width": width, "Height": height }]) },
            },
        })
    }

    /// The record notice of the file (§2.4, event 100); `sign` and `t` are added at each
    /// delivery. `appid` is 0: relaycast has no Tencent app ids.
    pub fn record_notice(&self, video_url: &str) -> Map<String, Value> {
        let f = &self.file;
        let stream = f.stream.as_ref();
        let ext = json!({ "video_codec": f.video_codec.clone().unwrap_or_default(), "resolution": f.resolution.clone().unwrap_or_default(), "session_id": f.recording_id }).to_string();
        let mut out = Map::new();
        let fields = [
            ("event_type", json!(100)),
            ("appid", json!(0)),
            (
                "app",
                json!(stream.map(|s| s.domain.as_str()).unwrap_or("")),
            ),
            (
                "appname",
                json!(stream.map(|s| s.app.as_str()).unwrap_or("")),
            ),
            ("stream_id", json!(f.stream_id)),
            ("channel_id", json!(f.stream_id)),
            ("file_id", json!(self.file_id)),
            ("record_file_id", json!(self.file_id)),
            (
                "record_temp_id",
                json!(f.template_id.map(|t| t.to_string()).unwrap_or_default()),
            ),
            ("file_format", json!(f.format.as_str())),
            ("task_id", json!(f.recording_id)),
            ("start_time", json!(f.start_ms.div_euclid(1000))),
            ("end_time", json!(f.end_ms.div_euclid(1000))),
            ("start_time_usec", json!(f.start_ms.rem_euclid(1000) * 1000)),
            ("end_time_usec", json!(f.end_ms.rem_euclid(1000) * 1000)),
            ("duration", json!((f.duration_ms + 500) / 1000)),
            ("file_size", json!(f.size)),
            ("stream_param", json!(f.stream_param)),
            ("video_url", json!(video_url)),
            ("media_start_time", json!(0)),
            ("record_bps", json!(0)),
            ("callback_ext", json!(ext)),
            ("event_id", json!(format!("record-{}", self.file_id))),
        ];
        for (k, v) in fields {
            out.insert(k.into(), v);
        }
        out
    }
}

impl Entity for MediaRecord {
    const KIND: Kind = Kind("media");

    fn key(&self) -> String {
        Self::store_key(&self.file.account, &self.file_id)
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.file.account.clone()),
            status: Some(Self::namespace_index(
                &self.file.account,
                self.file.namespace,
            )),
            time_ms: Some(self.created_ms),
        }
    }
}

/// When a media record is due to be deleted, so the retention sweep finds due files with one
/// index query. Key: `{account}/{file_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaExpiry {
    /// The media record's account.
    pub account: String,
    /// Its `FileId`.
    pub file_id: String,
    /// Due at, Unix ms.
    pub due_ms: i64,
}

/// The status index of every [`MediaExpiry`].
pub const MEDIA_EXPIRY_INDEX: &str = "media_expiry";

impl Entity for MediaExpiry {
    const KIND: Kind = Kind("media_expiry");

    fn key(&self) -> String {
        MediaRecord::store_key(&self.account, &self.file_id)
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: None,
            status: Some(MEDIA_EXPIRY_INDEX.into()),
            time_ms: Some(self.due_ms),
        }
    }
}

/// `BasicInfo.Category` of a format.
fn category(format: RecordFormat) -> &'static str {
    if format == RecordFormat::Aac {
        "Audio"
    } else {
        "Video"
    }
}

/// A snapshot of a live stream (SCHEMAS.md §2.5): a JPEG in the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream.
    pub stream: Option<StreamPath>,
    /// The stream id the notice carries.
    pub stream_id: String,
    /// The push URL query.
    pub stream_param: String,
    /// The object key.
    pub object_key: String,
    /// Bytes.
    pub size: u64,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// When it was taken, Unix ms.
    pub taken_ms: i64,
}

impl Snapshot {
    /// The object key of a snapshot under `prefix`, in Tencent's observed naming:
    /// `YYYY-MM-DD/{stream}-screenshot-{HH}-{MM}-{SS}-{W}x{H}.jpg` (UTC).
    pub fn object_key(
        prefix: &str,
        stream_id: &str,
        taken_ms: i64,
        width: u32,
        height: u32,
    ) -> String {
        let t = super::CalendarTime::from_unix_ms(taken_ms);
        format!(
            "{prefix}/snapshots/{:04}-{:02}-{:02}/{}-screenshot-{:02}-{:02}-{:02}-{width}x{height}.jpg",
            t.year,
            t.month,
            t.day,
            super::key_part(stream_id),
            t.hour,
            t.minute,
            t.second
        )
    }

    /// The snapshot notice (event 200); `pic_url` is the key's path, `pic_full_url` a
    /// playback URL of it.
    pub fn notice(&self, full_url: &str) -> Map<String, Value> {
        let stream = self.stream.as_ref();
        let mut out = Map::new();
        for (k, v) in [
            ("event_type", json!(200)),
            (
                "app",
                json!(stream.map(|s| s.domain.as_str()).unwrap_or("")),
            ),
            (
                "appname",
                json!(stream.map(|s| s.app.as_str()).unwrap_or("")),
            ),
            ("stream_id", json!(self.stream_id)),
            ("channel_id", json!(self.stream_id)),
            ("stream_param", json!(self.stream_param)),
            ("create_time", json!(self.taken_ms.div_euclid(1000))),
            ("file_size", json!(self.size)),
            ("width", json!(self.width)),
            ("height", json!(self.height)),
            ("pic_url", json!(format!("/{}", self.object_key))),
            ("pic_full_url", json!(full_url)),
            (
                "event_id",
                json!(format!("snapshot-{}", file_id_of(&self.object_key))),
            ),
        ] {
            out.insert(k.into(), v);
        }
        out
    }
}

/// `{After, Before}` of §5.1, ISO 8601.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TimeRangeInput {
    /// At or after.
    pub after: Option<String>,
    /// Before.
    pub before: Option<String>,
}

/// `{Field, Order}` of §5.1.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SortInput {
    /// Only `CreateTime`.
    pub field: Option<String>,
    /// `Asc` or `Desc`.
    pub order: Option<String>,
}

/// The body of `POST /v1/media/search`: §5.1's `SearchMedia` fields that a recording library
/// has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SearchMediaInput {
    /// The namespace (default 0).
    pub sub_app_id: Option<u64>,
    /// Exact `FileId`s.
    pub file_ids: Option<Vec<String>>,
    /// Fuzzy names.
    pub names: Option<Vec<String>>,
    /// Name prefixes.
    pub name_prefixes: Option<Vec<String>>,
    /// Exact stream ids.
    pub stream_ids: Option<Vec<String>>,
    /// Push domains.
    pub stream_domains: Option<Vec<String>>,
    /// Fuzzy over name, stream id and record id.
    pub text: Option<String>,
    /// `mp4`, `m3u8`, `flv`, `aac`.
    pub media_types: Option<Vec<String>>,
    /// `Video`, `Audio` (AAC files) or `Image`.
    pub categories: Option<Vec<String>>,
    /// Only `Record` exists here.
    pub source_types: Option<Vec<String>>,
    /// Creation time range.
    pub create_time: Option<TimeRangeInput>,
    /// Sort by creation time.
    pub sort: Option<SortInput>,
    /// Default 0.
    pub offset: Option<u64>,
    /// Default 10.
    pub limit: Option<u64>,
}

/// A checked search.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSearch {
    /// The namespace searched.
    pub namespace: u64,
    file_ids: Vec<String>,
    names: Vec<String>,
    name_prefixes: Vec<String>,
    stream_ids: Vec<String>,
    stream_domains: Vec<String>,
    text: Option<String>,
    media_types: Vec<String>,
    categories: Vec<String>,
    /// Created at or after, Unix ms.
    pub after_ms: Option<i64>,
    /// Created before, Unix ms.
    pub before_ms: Option<i64>,
    /// Newest first.
    pub descending: bool,
    /// Skip this many.
    pub offset: u64,
    /// Return at most this many.
    pub limit: u64,
    no_records: bool,
}

fn filter(
    field: &str,
    values: Option<Vec<String>>,
    max_len: usize,
) -> Result<Vec<String>, ApiRefusal> {
    let values = values.unwrap_or_default();
    if values.len() > MAX_FILTER_VALUES {
        return Err(refuse(field, format!("at most {MAX_FILTER_VALUES} values")));
    }
    if let Some(v) = values.iter().find(|v| v.is_empty() || v.len() > max_len) {
        return Err(refuse(
            field,
            format!("{v:?} must be 1-{max_len} characters"),
        ));
    }
    Ok(values)
}

fn refuse(field: &str, reason: impl std::fmt::Display) -> ApiRefusal {
    let code = match field {
        "FileIds" => "InvalidParameterValue.FileIds",
        "Names" => "InvalidParameterValue.Names",
        "NamePrefixes" => "InvalidParameterValue.NamePrefixes",
        "StreamIds" => "InvalidParameterValue.StreamIds",
        "Text" => "InvalidParameterValue.Text",
        "SourceTypes" => "InvalidParameterValue.SourceTypes",
        "Offset" | "Limit" => "InvalidParameterValue.Offset",
        "Sort" => "InvalidParameterValue.Sort",
        "CreateTime" => "InvalidParameterValue.StartTime",
        "Categories" => "InvalidParameterValue.Categories",
        _ => "InvalidParameterValue",
    };
    ApiRefusal {
        code,
        message: format!("{field}: {reason}"),
        status: 400,
    }
}

fn parse_iso(field: &str, raw: &str) -> Result<i64, ApiRefusal> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            refuse(
                field,
                format!("{raw:?} is not an ISO 8601 time like 2026-12-01T00:00:00Z"),
            )
        })
}

/// ISO 8601 UTC with seconds, as Tencent writes times.
pub fn iso_utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

impl SearchMediaInput {
    /// Checks the search against §5.1's limits.
    pub fn parse(self) -> Result<MediaSearch, ApiRefusal> {
        let offset = self.offset.unwrap_or(0);
        let limit = self.limit.unwrap_or(10);
        if limit == 0 || offset.saturating_add(limit) > MAX_SEARCH_WINDOW {
            return Err(refuse(
                "Limit",
                format!("Limit must be at least 1 and Offset + Limit at most {MAX_SEARCH_WINDOW}"),
            ));
        }
        if self.text.as_ref().is_some_and(|t| t.chars().count() > 64) {
            return Err(refuse("Text", "at most 64 characters"));
        }
        let source_types = filter("SourceTypes", self.source_types, 32)?;
        if let Some(t) = source_types.iter().find(|t| {
            !matches!(
                t.as_str(),
                "Record"
                    | "Upload"
                    | "VideoProcessing"
                    | "TrtcRecord"
                    | "WebPageRecord"
                    | "Unknown"
            )
        }) {
            return Err(refuse("SourceTypes", format!("{t:?} is not a source type")));
        }
        let descending = match self.sort.as_ref().map(|s| {
            (
                s.field.as_deref().unwrap_or("CreateTime"),
                s.order.as_deref().unwrap_or("Desc"),
            )
        }) {
            None | Some(("CreateTime", "Desc")) => true,
            Some(("CreateTime", "Asc")) => false,
            Some((field, order)) => {
                return Err(refuse(
                    "Sort",
                    format!("{field} {order}: sort by CreateTime, Asc or Desc"),
                ))
            }
        };
        let range = self.create_time.unwrap_or_default();
        Ok(MediaSearch {
            namespace: self.sub_app_id.unwrap_or(0),
            file_ids: filter("FileIds", self.file_ids, 40)?,
            names: filter("Names", self.names, MAX_NAME_FILTER)?,
            name_prefixes: filter("NamePrefixes", self.name_prefixes, MAX_NAME_FILTER)?,
            stream_ids: filter("StreamIds", self.stream_ids, MAX_NAME_FILTER)?,
            stream_domains: filter("StreamDomains", self.stream_domains, MAX_NAME_FILTER)?,
            text: self.text.filter(|t| !t.is_empty()),
            media_types: filter("MediaTypes", self.media_types, 16)?,
            categories: {
                let categories = filter("Categories", self.categories, 16)?;
                if let Some(c) = categories
                    .iter()
                    .find(|c| !matches!(c.as_str(), "Video" | "Audio" | "Image"))
                {
                    return Err(refuse(
                        "Categories",
                        format!("{c:?} is not Video, Audio or Image"),
                    ));
                }
                categories
            },
            after_ms: range
                .after
                .as_deref()
                .map(|a| parse_iso("CreateTime", a))
                .transpose()?,
            before_ms: range
                .before
                .as_deref()
                .map(|b| parse_iso("CreateTime", b))
                .transpose()?,
            descending,
            offset,
            limit,
            // Every file here is a live recording: a search for other sources finds none.
            no_records: !source_types.is_empty() && !source_types.iter().any(|t| t == "Record"),
        })
    }
}

impl MediaSearch {
    /// Within one array the values are OR'ed, different filters AND'ed (§5.1).
    pub fn matches(&self, m: &MediaRecord) -> bool {
        let f = &m.file;
        let any = |values: &[String], test: &dyn Fn(&String) -> bool| {
            values.is_empty() || values.iter().any(test)
        };
        let contains =
            |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
        let domain = f
            .stream
            .as_ref()
            .map(|s: &StreamPath| s.domain.as_str())
            .unwrap_or("");
        !self.no_records
            && f.namespace == self.namespace
            && any(&self.file_ids, &|v| *v == m.file_id)
            && any(&self.names, &|v| contains(&f.name, v))
            && any(&self.name_prefixes, &|v| f.name.starts_with(v.as_str()))
            && any(&self.stream_ids, &|v| *v == f.stream_id)
            && any(&self.stream_domains, &|v| v.eq_ignore_ascii_case(domain))
            && any(&self.media_types, &|v| {
                v.eq_ignore_ascii_case(f.format.extension())
                    || v.eq_ignore_ascii_case(f.format.as_str())
            })
            && any(&self.categories, &|v| *v == category(f.format))
            && self.text.as_ref().is_none_or(|t| {
                contains(&f.name, t)
                    || contains(&f.stream_id, t)
                    || f.record_id.as_deref().is_some_and(|r| contains(r, t))
            })
            && self.after_ms.is_none_or(|a| m.created_ms >= a)
            && self.before_ms.is_none_or(|b| m.created_ms < b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(name: &str, stream_id: &str, namespace: u64, created_ms: i64) -> MediaRecord {
        let file = RecordFile {
            object_key: format!("record/{namespace}/acme/r/{name}.mp4"),
            account: "acme".into(),
            recording_id: "r".into(),
            record_id: Some("1001_rex".into()),
            stream: Some(StreamPath::parse("push.test", "live", stream_id).unwrap()),
            stream_id: stream_id.into(),
            stream_param: String::new(),
            template_id: Some(3),
            format: RecordFormat::Mp4,
            namespace,
            name: name.into(),
            start_ms: 1_545_047_010_500,
            end_ms: 1_545_047_030_250,
            duration_ms: 19_750,
            size: 1234,
            video_codec: Some("h264".into()),
            resolution: Some("1280x720".into()),
            expires_ms: None,
            parts: vec![],
        };
        MediaRecord::new(file, created_ms)
    }

    fn search(body: Value) -> Result<MediaSearch, ApiRefusal> {
        serde_json::from_value::<SearchMediaInput>(body)
            .unwrap()
            .parse()
    }

    #[test]
    fn filters_are_ored_within_and_anded_across() {
        let m = media("cam1_1_2", "cam1", 0, 1_000);
        assert!(search(json!({})).unwrap().matches(&m));
        assert!(search(json!({"StreamIds": ["x", "cam1"]}))
            .unwrap()
            .matches(&m));
        assert!(!search(json!({"StreamIds": ["cam1"], "Names": ["nope"]}))
            .unwrap()
            .matches(&m));
        assert!(
            search(json!({"NamePrefixes": ["cam1_"], "Text": "REX"}))
                .unwrap()
                .matches(&m),
            "text matches the record id, any case"
        );
        assert!(
            !search(json!({"SubAppId": 7})).unwrap().matches(&m),
            "another namespace"
        );
        assert!(
            search(json!({"CreateTime": {"After": "1970-01-01T00:00:01Z"}}))
                .unwrap()
                .matches(&m)
        );
        assert!(
            !search(json!({"CreateTime": {"Before": "1970-01-01T00:00:01Z"}}))
                .unwrap()
                .matches(&m)
        );
        assert!(search(json!({"MediaTypes": ["mp4"]})).unwrap().matches(&m));
        assert!(!search(json!({"FileIds": ["0000"]})).unwrap().matches(&m));
    }

    #[test]
    fn searches_outside_the_limits_are_refused() {
        assert_eq!(
            search(json!({"Offset": 4990, "Limit": 11}))
                .unwrap_err()
                .code,
            "InvalidParameterValue.Offset"
        );
        assert_eq!(
            search(json!({"StreamIds": vec!["a"; 11]}))
                .unwrap_err()
                .code,
            "InvalidParameterValue.StreamIds"
        );
        assert_eq!(
            search(json!({"Names": ["x".repeat(101)]}))
                .unwrap_err()
                .code,
            "InvalidParameterValue.Names"
        );
        assert_eq!(
            search(json!({"Sort": {"Field": "Size", "Order": "Asc"}}))
                .unwrap_err()
                .code,
            "InvalidParameterValue.Sort"
        );
        assert_eq!(
            search(json!({"CreateTime": {"After": "yesterday"}}))
                .unwrap_err()
                .code,
            "InvalidParameterValue.StartTime"
        );
        assert!(serde_json::from_value::<SearchMediaInput>(json!({"Vids": []})).is_err());
    }

    #[test]
    fn the_record_notice_has_the_schema_fields() {
        let m = media("cam1_1_2", "cam1", 0, 1_000);
        let n = m.record_notice("http://h/objects/x.mp4?sig=1");
        for field in [
            "event_type",
            "appid",
            "app",
            "appname",
            "stream_id",
            "channel_id",
            "file_id",
            "record_file_id",
            "record_temp_id",
            "file_format",
            "task_id",
            "start_time",
            "end_time",
            "start_time_usec",
            "end_time_usec",
            "duration",
            "file_size",
            "stream_param",
            "video_url",
            "media_start_time",
            "record_bps",
            "callback_ext",
        ] {
            assert!(n.contains_key(field), "{field}");
        }
        assert_eq!(
            (
                n["event_type"].clone(),
                n["start_time"].clone(),
                n["start_time_usec"].clone(),
                n["duration"].clone()
            ),
            (json!(100), json!(1_545_047_010), json!(500_000), json!(20))
        );
        let ext: Value = serde_json::from_str(n["callback_ext"].as_str().unwrap()).unwrap();
        assert_eq!(ext["resolution"], "1280x720");
        assert_eq!(
            m.to_wire("u")["BasicInfo"]["ExpireTime"],
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(file_id_of("a"), file_id_of("a"));
        assert_ne!(file_id_of("a"), file_id_of("b"));
    }
}
