//! Cloud recording (seeds 003 and 004; SCHEMAS.md §2.4, §3, §5): what a recording runs with,
//! the recording itself (the desired state a recorder reconciles, like a relay task), the files
//! it leaves, and the rules of their names and object keys.
//!
//! - [`template`]: recording templates, push domains and record rules (the `/v1` control plane);
//! - [`media`]: media records (the media library) and their search;
//! - this module: [`RecordingSpec`], [`Recording`], [`RecordFile`], [`ObjectCreated`], file
//!   naming and object keys.
//!
//! Everything is pure: times are parameters.

pub mod media;
pub mod progress;
pub mod request;
pub mod template;

use serde::{Deserialize, Serialize};

use crate::domain::auth::SecretKey;
use crate::domain::callbacks::StreamPath;
use crate::ports::{Entity, IndexKeys, Kind};

/// A file format a template can record to (one file per format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// An HLS playlist of fMP4 segments; never split, resumable.
    Hls,
    /// A regular (faststart) MP4, fragmented while recording.
    Mp4,
    /// FLV, appended tag by tag.
    Flv,
    /// ADTS AAC, audio only.
    Aac,
}

impl RecordFormat {
    /// Every format, in the order files are written.
    pub const ALL: [RecordFormat; 4] = [
        RecordFormat::Hls,
        RecordFormat::Mp4,
        RecordFormat::Flv,
        RecordFormat::Aac,
    ];

    /// `file_format` of the record callback (SCHEMAS.md §2.4), lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::Hls => "hls",
            RecordFormat::Mp4 => "mp4",
            RecordFormat::Flv => "flv",
            RecordFormat::Aac => "aac",
        }
    }

    /// The extension of the finished file (for HLS, of its playlist).
    pub fn extension(self) -> &'static str {
        match self {
            RecordFormat::Hls => "m3u8",
            other => other.as_str(),
        }
    }

    /// The content type of the finished file.
    pub fn content_type(self) -> &'static str {
        match self {
            RecordFormat::Hls => "application/vnd.apple.mpegurl",
            RecordFormat::Mp4 => "video/mp4",
            RecordFormat::Flv => "video/x-flv",
            RecordFormat::Aac => "audio/aac",
        }
    }
}

/// One format of a recording, as its template enabled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatSpec {
    /// The format.
    pub format: RecordFormat,
    /// Longest file, seconds (`RecordInterval`, 60–7200); files split on a keyframe after it.
    /// Ignored for HLS (one playlist from start to end).
    pub max_file_secs: u32,
    /// How long the files are kept, seconds (`StorageTime`); 0 = forever.
    pub storage_secs: u64,
}

/// What a recording runs with: a copy of its template taken when it started, so editing or
/// unbinding a template never changes a recording in progress (seed 003).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSpec {
    /// The template it came from (`record_temp_id`); `None` for a recording without one.
    pub template_id: Option<u64>,
    /// The formats, each its own file.
    pub formats: Vec<FormatSpec>,
    /// A source that drops and comes back within this many seconds continues the same files
    /// (`HlsSpecialParam.FlowContinueDuration`, 0–1800; 0 = a drop ends the recording).
    pub resume_timeout_secs: u32,
    /// The storage namespace (`VodSubAppId`; the seed's VOD sub-application), 0 by default.
    pub namespace: u64,
    /// `VodFileName`, with its placeholders; `None` = the seed's naming ([`file_name`]).
    pub file_name_pattern: Option<String>,
    /// Where record notices go (`RecordNotifyUrl`), besides the domain's callback template.
    pub notify_url: Option<String>,
    /// Signs the notices to `notify_url` (`CallbackKey`).
    pub callback_key: Option<SecretKey>,
    /// A JPEG every this many seconds, when snapshots are on.
    pub snapshot_interval_secs: Option<u32>,
}

/// How a recording was started (seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingMode {
    /// Global automatic recording: a push on a bound domain started it; the stream's stop plus
    /// the resume timeout ends it.
    Auto,
    /// Specific recording: started and stopped through the API, with a `RecordId`.
    Specific,
}

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Waiting for a recorder.
    Pending,
    /// A recorder holds it and writes files.
    Recording,
    /// Over; its files are finalized (or it failed, see `error`).
    Finished,
}

/// A recording: the desired state that a recorder holding its lease reconciles, as a relay
/// task is for a relay worker. Key: `{account}/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// The owning account.
    pub account: String,
    /// Our id (`TaskId` on the wire); unique per account.
    pub id: String,
    /// How it started.
    pub mode: RecordingMode,
    /// The user's `RecordId`, which names the files (specific recording).
    pub record_id: Option<String>,
    /// The stream, when it is one of a push domain's.
    pub stream: Option<StreamPath>,
    /// What the recorder pulls (already checked by the API's URL rules).
    pub source_url: String,
    /// The push URL query of the stream (`stream_param`), for auto recordings.
    #[serde(default)]
    pub stream_param: String,
    /// What it records to.
    pub spec: RecordingSpec,
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// Stop at this time, Unix ms (`EndTime`).
    pub end_time_ms: Option<i64>,
    /// Set when it was asked to stop (API), Unix ms; the recorder finalizes.
    pub stop_requested_ms: Option<i64>,
    /// For auto recordings: when the stream's stop event came (cleared by its next push);
    /// the recorder finalizes once the resume timeout has passed since then with no media.
    pub stream_stopped_ms: Option<i64>,
    /// Where it is.
    pub state: RecordingState,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Files finalized so far (object keys).
    #[serde(default)]
    pub files: Vec<String>,
}

impl Recording {
    /// The store key of recording `id` of `account`.
    pub fn store_key(account: &str, id: &str) -> String {
        format!("{account}/{id}")
    }

    /// The status index value of an account's unfinished recordings.
    pub fn active_status(account: &str) -> String {
        format!("recording:{account}")
    }

    /// The stream id the files and notices carry: the stream name, else the record id, else
    /// our id.
    pub fn stream_id(&self) -> &str {
        self.stream
            .as_ref()
            .map(|s| s.stream.as_str())
            .or(self.record_id.as_deref())
            .unwrap_or(&self.id)
    }

    /// The object key prefix of everything this recording writes.
    pub fn object_prefix(&self) -> String {
        format!(
            "record/{}/{}/{}",
            self.spec.namespace,
            key_part(&self.account),
            key_part(&self.id)
        )
    }
}

impl Entity for Recording {
    const KIND: Kind = Kind("recording");

    fn key(&self) -> String {
        Self::store_key(&self.account, &self.id)
    }

    fn index(&self) -> IndexKeys {
        let status =
            (self.state != RecordingState::Finished).then(|| Self::active_status(&self.account));
        IndexKeys {
            account: Some(self.account.clone()),
            status,
            time_ms: Some(self.created_ms),
        }
    }
}

/// What the recorder knows of a finished file, written before the file is put: an
/// object-created notice names only the key, and the notice handler reads the rest from here.
/// Key: the object key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordFile {
    /// The object key of the file (for HLS, of its playlist).
    pub object_key: String,
    /// The owning account.
    pub account: String,
    /// The recording it belongs to.
    pub recording_id: String,
    /// The user's record id.
    pub record_id: Option<String>,
    /// The stream.
    pub stream: Option<StreamPath>,
    /// The stream id the callback carries.
    pub stream_id: String,
    /// The push URL query (`stream_param`).
    pub stream_param: String,
    /// The template (`record_temp_id`).
    pub template_id: Option<u64>,
    /// The format.
    pub format: RecordFormat,
    /// The namespace.
    pub namespace: u64,
    /// The file's name (without extension), from the template's pattern or the seed's naming.
    pub name: String,
    /// First media, Unix ms (wall clock).
    pub start_ms: i64,
    /// Last media, Unix ms.
    pub end_ms: i64,
    /// Media duration, ms (can differ from end − start on a weak network).
    pub duration_ms: u64,
    /// Bytes (for HLS: the playlist and its segments).
    pub size: u64,
    /// `video_codec` of `callback_ext` (e.g. `h264`), when the stream has video.
    pub video_codec: Option<String>,
    /// `resolution` of `callback_ext` (e.g. `1280x720`).
    pub resolution: Option<String>,
    /// Keep until, Unix ms; `None` = forever.
    pub expires_ms: Option<i64>,
    /// The object keys that belong to the file besides `object_key` (HLS segments and init
    /// segments), deleted with it.
    #[serde(default)]
    pub parts: Vec<String>,
}

impl Entity for RecordFile {
    const KIND: Kind = Kind("record_file");

    fn key(&self) -> String {
        self.object_key.clone()
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: None,
            time_ms: Some(self.start_ms),
        }
    }
}

/// "An object landed in the object store": in-process locally, an S3 event through SQS on
/// AWS. The recordings handler turns one about a [`RecordFile`] into a media record and a
/// record notice; the same notice twice yields one of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCreated {
    /// The object key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The queue of [`ObjectCreated`] notices.
pub const OBJECT_NOTICE_QUEUE: &str = "object-notices";

/// Why an object notice could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// Neither an S3 event notification nor an [`ObjectCreated`] notice.
    #[error("not an object notice: {0}")]
    Malformed(String),
    /// An S3 object key that is not valid percent-encoded UTF-8.
    #[error("S3 object key {0:?} is not valid URL-encoded UTF-8")]
    BadKey(String),
}

impl ObjectCreated {
    /// Reads one object-notice message body: the [`ObjectCreated`] JSON the recorder sends
    /// itself, or an S3 event notification (`{"Records": [...]}`) that the bucket sends to the
    /// object-notices queue. From an S3 notification only `ObjectCreated:*` records of
    /// `aws:s3` are kept, their keys URL-decoded (S3 writes a space as `+`); its `s3:TestEvent`
    /// (sent once when the notification is configured) is no notice: an empty list.
    pub fn parse_notice(body: &str) -> Result<Vec<ObjectCreated>, NoticeError> {
        let malformed = |e: serde_json::Error| NoticeError::Malformed(e.to_string());
        let value: serde_json::Value = serde_json::from_str(body).map_err(malformed)?;
        if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
            return Ok(Vec::new());
        }
        if value.get("Records").is_none() {
            return serde_json::from_value::<ObjectCreated>(value)
                .map(|n| vec![n])
                .map_err(malformed);
        }
        let event: S3Notification = serde_json::from_value(value).map_err(malformed)?;
        event
            .records
            .into_iter()
            .filter(|r| r.event_source == "aws:s3" && r.event_name.starts_with("ObjectCreated:"))
            .map(|r| {
                let key = s3_key_decode(&r.s3.object.key)
                    .ok_or_else(|| NoticeError::BadKey(r.s3.object.key.clone()))?;
                Ok(ObjectCreated {
                    key,
                    size: r.s3.object.size,
                })
            })
            .collect()
    }
}

/// The parts of an S3 event notification (event structure version 2.x) a notice needs.
#[derive(Deserialize)]
struct S3Notification {
    #[serde(rename = "Records")]
    records: Vec<S3Record>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Record {
    #[serde(default)]
    event_source: String,
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    // Absent on some event types (S3 omits it for delete markers); created objects carry it.
    #[serde(default)]
    size: u64,
}

/// S3's notification key encoding undone: `+` is a space, `%XX` a byte; `None` when a `%` is
/// not followed by two hex digits or the bytes are not UTF-8.
fn s3_key_decode(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// One part of an object key made of user text: the characters object keys allow
/// (`[A-Za-z0-9._-]`) are kept, every other byte becomes `_`, and when anything was replaced a
/// short digest of the original is added so two names never map to one key. Never `.`, `..` or
/// empty, so no user text can climb out of its prefix.
pub fn key_part(text: &str) -> String {
    let kept: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dots_only = kept.chars().all(|c| c == '.');
    if kept == text && !dots_only && kept.len() <= 128 {
        return kept;
    }
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    let head: String = kept
        .chars()
        .take(96)
        .map(|c| if c == '.' { '_' } else { c })
        .collect();
    format!("{head}_{}", &digest[..12])
}

/// The name of a finished file (seed 004), without extension. With a `VodFileName` pattern its
/// placeholders are filled (`{StreamID}`, `{StartYear}` … `{StartMillisecond}`, `{End…}`,
/// `{RecordId}`, `{Domain}`, `{AppName}`); otherwise `RecordId_main_start_end` when a record id
/// was given, else `streamId_start_end`, else `app_stream_start_end`. Times are Unix seconds
/// (UTC) in the seed's naming and UTC calendar fields in a pattern. The result is a safe object
/// key part.
pub fn file_name(recording: &Recording, start_ms: i64, end_ms: i64) -> String {
    let (start, end) = (start_ms.div_euclid(1000), end_ms.div_euclid(1000));
    let name = match &recording.spec.file_name_pattern {
        Some(pattern) => fill_pattern(pattern, recording, start_ms, end_ms),
        None => match (&recording.record_id, &recording.stream) {
            (Some(record_id), _) => format!("{record_id}_main_{start}_{end}"),
            (None, Some(stream)) if recording.mode == RecordingMode::Auto => {
                format!("{}_{start}_{end}", stream.stream)
            }
            (None, Some(stream)) => format!("{}_{}_{start}_{end}", stream.app, stream.stream),
            (None, None) => format!("{}_{start}_{end}", recording.id),
        },
    };
    key_part(&name)
}

fn fill_pattern(pattern: &str, recording: &Recording, start_ms: i64, end_ms: i64) -> String {
    let mut out = pattern.to_string();
    for (prefix, ms) in [("Start", start_ms), ("End", end_ms)] {
        let t = CalendarTime::from_unix_ms(ms);
        for (field, value) in [
            ("Year", format!("{:04}", t.year)),
            ("Month", format!("{:02}", t.month)),
            ("Day", format!("{:02}", t.day)),
            ("Hour", format!("{:02}", t.hour)),
            ("Minute", format!("{:02}", t.minute)),
            ("Second", format!("{:02}", t.second)),
            ("Millisecond", format!("{:03}", t.millisecond)),
        ] {
            out = out.replace(&format!("{{{prefix}{field}}}"), &value);
        }
    }
    let stream = recording.stream.as_ref();
    out.replace("{StreamID}", recording.stream_id())
        .replace("{RecordId}", recording.record_id.as_deref().unwrap_or(""))
        .replace("{Domain}", stream.map(|s| s.domain.as_str()).unwrap_or(""))
        .replace("{AppName}", stream.map(|s| s.app.as_str()).unwrap_or(""))
}

/// A UTC calendar time, for file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarTime {
    /// Year.
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// 0–23.
    pub hour: u32,
    /// 0–59.
    pub minute: u32,
    /// 0–59.
    pub second: u32,
    /// 0–999.
    pub millisecond: u32,
}

impl CalendarTime {
    /// The UTC calendar time of a Unix ms time (days-from-civil, Howard Hinnant's algorithm).
    pub fn from_unix_ms(ms: i64) -> Self {
        let secs = ms.div_euclid(1000);
        let millisecond = ms.rem_euclid(1000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        CalendarTime {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            millisecond,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_notice_is_read_from_the_recorder_json_and_from_s3_events() {
        let own = r#"{"key":"acme/rec/a.mp4","size":42}"#;
        assert_eq!(
            ObjectCreated::parse_notice(own).unwrap(),
            vec![ObjectCreated {
                key: "acme/rec/a.mp4".into(),
                size: 42
            }]
        );
        // As S3 sends it: keys URL-encoded, a space as `+`, and records of other kinds.
        let s3 = r#"{"Records":[
            {"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-01-01T00:00:00.000Z",
             "eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"s3SchemaVersion":"1.0","bucket":{"name":"b","arn":"arn:aws:s3:::b"},
             "object":{"key":"acme/live/my+stream%3A1/%E5%BD%95.mp4","size":1024,"eTag":"x","sequencer":"0A"}}},
            {"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectRemoved:Delete","s3":{"object":{"key":"gone.mp4"}}},
            {"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"object":{"key":"a%2Bb.ts","size":7}}}
        ]}"#;
        assert_eq!(
            ObjectCreated::parse_notice(s3).unwrap(),
            vec![
                ObjectCreated {
                    key: "acme/live/my stream:1/录.mp4".into(),
                    size: 1024
                },
                ObjectCreated {
                    key: "a+b.ts".into(),
                    size: 7
                },
            ]
        );
    }

    #[test]
    fn an_s3_test_event_is_no_notice_and_garbage_is_an_error() {
        let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00.000Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;
        assert_eq!(ObjectCreated::parse_notice(test_event).unwrap(), vec![]);
        for bad in ["", "not json", "[]", r#"{"key":1}"#, r#"{"Records":"x"}"#] {
            assert!(
                matches!(
                    ObjectCreated::parse_notice(bad),
                    Err(NoticeError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let bad_key = r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"object":{"key":"a%zz","size":1}}}]}"#;
        assert_eq!(
            ObjectCreated::parse_notice(bad_key),
            Err(NoticeError::BadKey("a%zz".into()))
        );
        let not_utf8 = r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"object":{"key":"%FF","size":1}}}]}"#;
        assert!(ObjectCreated::parse_notice(not_utf8).is_err());
    }

    fn recording(record_id: Option<&str>, mode: RecordingMode, pattern: Option<&str>) -> Recording {
        Recording {
            account: "acme".into(),
            id: "r1".into(),
            mode,
            record_id: record_id.map(str::to_string),
            stream: Some(StreamPath::parse("push.example.com", "live", "cam1").unwrap()),
            source_url: "rtmp://origin/live/cam1".into(),
            stream_param: String::new(),
            spec: RecordingSpec {
                template_id: Some(1),
                formats: vec![],
                resume_timeout_secs: 0,
                namespace: 0,
                file_name_pattern: pattern.map(str::to_string),
                notify_url: None,
                callback_key: None,
                snapshot_interval_secs: None,
            },
            created_ms: 0,
            end_time_ms: None,
            stop_requested_ms: None,
            stream_stopped_ms: None,
            state: RecordingState::Pending,
            error: None,
            files: vec![],
        }
    }

    #[test]
    fn files_are_named_as_the_seed_says() {
        let (s, e) = (1_545_047_010_123, 1_545_049_971_999);
        assert_eq!(
            file_name(
                &recording(Some("1001_rex"), RecordingMode::Specific, None),
                s,
                e
            ),
            "1001_rex_main_1545047010_1545049971"
        );
        assert_eq!(
            file_name(&recording(None, RecordingMode::Auto, None), s, e),
            "cam1_1545047010_1545049971"
        );
        assert_eq!(
            file_name(&recording(None, RecordingMode::Specific, None), s, e),
            "live_cam1_1545047010_1545049971"
        );
        let pattern = "{StreamID}_{StartYear}-{StartMonth}-{StartDay}-{StartHour}-{StartMinute}-{StartSecond}_{EndMillisecond}";
        assert_eq!(
            file_name(&recording(None, RecordingMode::Auto, Some(pattern)), s, e),
            "cam1_2018-12-17-11-43-30_999"
        );
    }

    #[test]
    fn user_text_never_escapes_its_key_prefix() {
        for evil in ["..", ".", "../../etc", "a/b", "", "流", "x y"] {
            let part = key_part(evil);
            assert!(
                !part.is_empty() && part != "." && part != ".." && !part.contains('/'),
                "{evil:?} -> {part:?}"
            );
            crate::ports::validate_object_key(&format!("p/{part}")).unwrap();
        }
        assert_ne!(key_part("a b"), key_part("a_b"));
        assert_eq!(key_part("cam-1.x"), "cam-1.x");
        let mut r = recording(Some("../../x"), RecordingMode::Specific, None);
        r.id = "../..".into();
        assert!(!file_name(&r, 0, 0).contains('/'));
        crate::ports::validate_object_key(&r.object_prefix()).unwrap();
    }

    #[test]
    fn calendar_times_are_utc() {
        let t = CalendarTime::from_unix_ms(951_782_400_000); // 2000-02-29T00:00:00Z
        assert_eq!((t.year, t.month, t.day, t.hour), (2000, 2, 29, 0));
        let t = CalendarTime::from_unix_ms(-1);
        assert_eq!(
            (t.year, t.month, t.day, t.second, t.millisecond),
            (1969, 12, 31, 59, 999)
        );
    }
}
