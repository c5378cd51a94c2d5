//! What the outside sees of a task: callback payloads (seed 001, "콜백"), the durable outbox
//! record they are sent from, and the items of `forwardQueryByPage.action`.
//!
//! Rendering of URL lists, decided from the seed's examples:
//! - `srcurl` / the query's `src`: the source array as a JSON *string* in the request's shape,
//!   e.g. `"[{\"url\":\"http://...\"}]"` (seed example and note 8);
//! - `forwardurl` / the query's `forward`: the seed's examples show one destination as a *plain
//!   URL string*, so one destination is rendered exactly so; several (a task-wide event of a task
//!   with several destinations) are rendered like `srcurl`, a JSON string of `[{"url": ...}, …]`,
//!   as note 8 says for the callback fields; none renders as `""`. Per-destination events (push
//!   failure, a stop of one destination) name only their destination, so they are plain URLs.

use chrono::{FixedOffset, TimeZone};
use serde::{Deserialize, Serialize};

use super::state::{DestState, TaskState};
use super::task::RelayTask;
use super::types::{Cmd, HttpUrl, RtmpUrl, Source, TaskId};
use crate::ports::store::{Entity, IndexKeys, Kind};

/// The callback codes of the seed, with their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallbackCode {
    /// `0`: pushing started. The seed's table says `푸시 시작!`, its callback example
    /// `푸시를 시작합니다!` and its query example `Stream pushing started!`; the table is the
    /// reference, so that is what is sent.
    Started,
    /// `1`: the task ended normally (VOD done, `end` reached, stopped).
    Finished,
    /// `2`: the source failed (`live_pull 실패:xxxxx`).
    PullFailed,
    /// `3`: pushing failed.
    PushFailed,
    /// `4`: a non-fatal warning about a playlist item; the task goes on.
    ItemWarning,
    /// `5`: the list was updated / a new item is playing.
    ListUpdated,
    /// `90`: the task of a `cmd=2/3/5` does not exist.
    TaskNotExists,
    /// `91`: the same destination is already active, or the task has not started.
    TaskRepeat,
    /// `92`: the task could not be started.
    DeliveryFailed,
}

impl CallbackCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::Started => 0,
            Self::Finished => 1,
            Self::PullFailed => 2,
            Self::PushFailed => 3,
            Self::ItemWarning => 4,
            Self::ListUpdated => 5,
            Self::TaskNotExists => 90,
            Self::TaskRepeat => 91,
            Self::DeliveryFailed => 92,
        }
    }

    /// The seed's message, verbatim. Codes 2 and 4 carry details: see [`pull_failed_msg`] and
    /// [`item_warning_msg`]; this is their fixed part.
    pub fn default_msg(self) -> &'static str {
        match self {
            Self::Started => "푸시 시작!",
            Self::Finished => "푸시 스트림 성공",
            Self::PullFailed => "live_pull 실패:",
            Self::PushFailed => "푸시 스트림 실패!",
            Self::ItemWarning => "서버에서 404 반환",
            Self::ListUpdated => "리스트 업데이트 성공",
            Self::TaskNotExists => "task not exists",
            Self::TaskRepeat => "task repeat,task not start!",
            Self::DeliveryFailed => "task start delivery failed!",
        }
    }
}

/// `live_pull 실패:{detail}` (seed code 2).
pub fn pull_failed_msg(detail: &str) -> String {
    format!("live_pull 실패:{detail}")
}

/// `{file}: {detail}` (seed code 4, e.g. `a.mp4: 서버에서 404 반환`).
pub fn item_warning_msg(file: &str, detail: &str) -> String {
    format!("{file}: {detail}")
}

/// The detail of a code 4 for a playlist item that could not be played: the seed's
/// `서버에서 404 반환` when the server answered 404 (ffmpeg: `Server returned 404 Not Found`),
/// else the reason as given.
pub fn item_warning_detail(reason: &str) -> String {
    if reason.contains("404 Not Found") || reason.contains("returned 404") {
        CallbackCode::ItemWarning.default_msg().to_string()
    } else {
        reason.to_string()
    }
}

/// The `srcurl` / `src` string: the sources as JSON text.
pub fn render_sources(sources: &[Source]) -> String {
    serde_json::to_string(sources).unwrap_or_default()
}

/// The `forwardurl` / `forward` string (see the module documentation).
pub fn render_forwards(forwards: &[RtmpUrl]) -> String {
    match forwards {
        [] => String::new(),
        [one] => one.as_str().to_string(),
        many => {
            let list: Vec<_> = many
                .iter()
                .map(|u| serde_json::json!({ "url": u.as_str() }))
                .collect();
            serde_json::Value::Array(list).to_string()
        }
    }
}

/// A callback to send, kept in the durable outbox until delivered. Stored as kind `task_event`
/// under `{account}:{id}:{seq:020}`, so one task's events sort in the order they happened, and
/// written in the same [`Store::transact`](crate::ports::Store::transact) as the task change that
/// caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The owning account.
    pub account: String,
    /// The task.
    pub task_id: TaskId,
    /// Position among the task's events.
    pub seq: u64,
    /// The `cmd` of the task's last request.
    pub cmd: Cmd,
    /// The callback code.
    pub code: CallbackCode,
    /// The callback message.
    pub msg: String,
    /// `srcurl`, already rendered.
    pub srcurl: String,
    /// `forwardurl`, already rendered.
    pub forwardurl: String,
    /// When it happened, Unix ms.
    pub event_time_ms: i64,
    /// Where to send it; `None` when the task has no `transcallbackurl` (kept for the record).
    pub callback_url: Option<HttpUrl>,
}

impl TaskEvent {
    /// An event about a task that does not exist (`90 task not exists`), from the request alone.
    /// `seq` should be unique among such events of this id with different payloads (the plan
    /// uses the request time and the `cmd`).
    pub fn task_not_exists(
        account: &str,
        id: TaskId,
        cmd: Cmd,
        callback_url: Option<HttpUrl>,
        now_ms: i64,
        seq: u64,
    ) -> Self {
        Self {
            account: account.to_string(),
            task_id: id,
            seq,
            cmd,
            code: CallbackCode::TaskNotExists,
            msg: CallbackCode::TaskNotExists.default_msg().to_string(),
            srcurl: String::new(),
            forwardurl: String::new(),
            event_time_ms: now_ms,
            callback_url,
        }
    }

    /// The JSON body POSTed to the callback URL.
    pub fn payload(&self) -> CallbackPayload {
        CallbackPayload {
            id: self.task_id.to_string(),
            srcurl: self.srcurl.clone(),
            forwardurl: self.forwardurl.clone(),
            cmd: self.cmd.as_str().to_string(),
            code: self.code.code().to_string(),
            msg: self.msg.clone(),
            event_time: self.event_time_ms,
        }
    }
}

impl Entity for TaskEvent {
    const KIND: Kind = Kind("task_event");

    fn key(&self) -> String {
        format!("{}:{}:{:020}", self.account, self.task_id, self.seq)
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: None,
            time_ms: Some(self.event_time_ms),
        }
    }
}

/// The callback body, field for field as the seed's example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackPayload {
    /// Task id.
    pub id: String,
    /// Sources, as a JSON string.
    pub srcurl: String,
    /// Destination(s), see [`render_forwards`].
    pub forwardurl: String,
    /// `"1"`, `"2"`, `"3"` or `"5"`.
    pub cmd: String,
    /// The code, as a string (`"0"`).
    pub code: String,
    /// The message.
    pub msg: String,
    /// Unix ms, as a number.
    pub event_time: i64,
}

/// How query times are shown: `YYYY-MM-DD HH:MM:SS` at a fixed UTC offset, Beijing time
/// (+08:00) by default because the seed's examples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeFormat {
    /// Seconds east of UTC.
    pub utc_offset_secs: i32,
}

impl Default for TimeFormat {
    fn default() -> Self {
        Self {
            utc_offset_secs: 8 * 3600,
        }
    }
}

impl TimeFormat {
    /// `YYYY-MM-DD HH:MM:SS`, or `""` for no time (or an offset/time out of range).
    pub fn format(&self, ms: Option<i64>) -> String {
        let (Some(ms), Some(tz)) = (ms, FixedOffset::east_opt(self.utc_offset_secs)) else {
            return String::new();
        };
        match tz.timestamp_millis_opt(ms).single() {
            Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => String::new(),
        }
    }
}

/// One item of a query answer, field for field as the seed's example, plus one relaycast
/// extension object, `relay`, while a worker runs the task (see [`RelayStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryItem {
    /// Task id.
    pub id: String,
    /// `live` / `video`.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Sources, as a JSON string.
    pub src: String,
    /// Destination(s), see [`render_forwards`].
    pub forward: String,
    /// The last `cmd`.
    pub cmd: String,
    /// The last callback code, `""` when none yet.
    pub code: String,
    /// The last callback message.
    pub msg: String,
    /// When pushing started, or `""`.
    #[serde(rename = "startTime")]
    pub start_time: String,
    /// When the task ended, or `""`.
    #[serde(rename = "endTime")]
    pub end_time: String,
    /// relaycast extension: what the worker running the task last reported. Absent unless the
    /// task is active (not scheduled) and a worker has reported for its current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayStatus>,
}

/// The query's `relay` object (a relaycast extension, not in the seed): the task's state and
/// the figures its worker writes back every lease heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// The task state's name (`starting`, `running`, `retrying`).
    pub state: String,
    /// The source being relayed, 0-based in `src`.
    #[serde(rename = "currentSrc")]
    pub current_src: Option<usize>,
    /// Output bitrate over the last second, kbit/s.
    #[serde(rename = "bitrateKbps")]
    pub bitrate_kbps: f64,
    /// Video frames per second over the last second.
    pub fps: f64,
    /// Media time pushed in this run, ms.
    #[serde(rename = "positionMs")]
    pub position_ms: u64,
    /// Every destination of the task, in order.
    pub forward: Vec<ForwardStatus>,
}

/// One destination in [`RelayStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardStatus {
    /// The destination URL.
    pub url: String,
    /// `publishing`, `connecting`, `backoff`, `stopped`, or `pending` before the worker has
    /// reported on it.
    pub state: String,
    /// Connection attempts after the first one.
    pub reconnects: u64,
}

impl RelayStatus {
    /// The status of `task`, when it is active past its schedule and its worker has reported.
    pub fn of(task: &RelayTask) -> Option<Self> {
        if !task.state.is_active() || task.state == TaskState::Scheduled {
            return None;
        }
        let stats = &task.stats;
        stats.reported_at_ms?;
        let forward = task
            .destinations
            .iter()
            .map(|d| {
                let reported = stats.forwards.iter().find(|f| f.url == d.url.as_str());
                let state = match (&d.state, reported) {
                    (DestState::Stopped { .. }, _) => "stopped".to_string(),
                    (_, Some(f)) => f.state.clone(),
                    (_, None) => "pending".to_string(),
                };
                ForwardStatus {
                    url: d.url.to_string(),
                    state,
                    reconnects: reported.map_or(0, |f| f.reconnects),
                }
            })
            .collect();
        Some(Self {
            state: task.state.key().to_string(),
            current_src: stats.current_source,
            bitrate_kbps: stats.bitrate_bps.unwrap_or(0) as f64 / 1000.0,
            fps: stats.fps.unwrap_or(0.0),
            position_ms: stats.position_ms.unwrap_or(0),
            forward,
        })
    }
}

impl QueryItem {
    /// The item for `task`.
    pub fn from_task(task: &RelayTask, tf: &TimeFormat) -> Self {
        // While the task runs, the destinations it still pushes to (a `cmd=2` of some of them
        // removes those); once it ended, every destination it had, so the record stays readable.
        let mut forwards: Vec<RtmpUrl> = Vec::new();
        if task.state.is_active() {
            forwards.extend(task.active_destinations().map(|d| d.url.clone()));
        }
        if forwards.is_empty() {
            forwards = task.forward_urls();
        }
        Self {
            id: task.id.to_string(),
            task_type: task.task_type.as_str().to_string(),
            src: render_sources(&task.sources),
            forward: render_forwards(&forwards),
            cmd: task.last_cmd.as_str().to_string(),
            code: task
                .last_code
                .map(|c| c.code().to_string())
                .unwrap_or_default(),
            msg: task.last_msg.clone(),
            start_time: tf.format(task.started_ms),
            end_time: tf.format(task.ended_ms),
            relay: RelayStatus::of(task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::relay::types::{SourceUrl, TaskType};
    use serde_json::json;

    fn dest(s: &str) -> RtmpUrl {
        RtmpUrl::parse(s).unwrap()
    }

    #[test]
    fn codes_and_messages_are_the_seed_table() {
        let table = [
            (CallbackCode::Started, 0, "푸시 시작!"),
            (CallbackCode::Finished, 1, "푸시 스트림 성공"),
            (CallbackCode::PushFailed, 3, "푸시 스트림 실패!"),
            (CallbackCode::ListUpdated, 5, "리스트 업데이트 성공"),
            (CallbackCode::TaskNotExists, 90, "task not exists"),
            (CallbackCode::TaskRepeat, 91, "task repeat,task not start!"),
            (
                CallbackCode::DeliveryFailed,
                92,
                "task start delivery failed!",
            ),
        ];
        for (c, n, m) in table {
            assert_eq!((c.code(), c.default_msg()), (n, m));
        }
        assert_eq!(
            pull_failed_msg("connection refused"),
            "live_pull 실패:connection refused"
        );
        assert_eq!(
            item_warning_msg("a.mp4", "서버에서 404 반환"),
            "a.mp4: 서버에서 404 반환"
        );
        let ffmpeg = "ingest ended: http://h/a.mp4: Server returned 404 Not Found";
        assert_eq!(
            item_warning_msg("http://h/a.mp4", &item_warning_detail(ffmpeg)),
            "http://h/a.mp4: 서버에서 404 반환"
        );
        assert_eq!(
            item_warning_detail("ingest ended: Invalid data found when processing input"),
            "ingest ended: Invalid data found when processing input"
        );
    }

    #[test]
    fn the_callback_payload_has_the_seed_shape() {
        let src = vec![Source::new(
            SourceUrl::parse("http://source.example.com/live/stream1.flv", TaskType::Live).unwrap(),
        )];
        let ev = TaskEvent {
            account: "acc".into(),
            task_id: TaskId::parse("task_unique_id_001").unwrap(),
            seq: 3,
            cmd: Cmd::Create,
            code: CallbackCode::Started,
            msg: CallbackCode::Started.default_msg().into(),
            srcurl: render_sources(&src),
            forwardurl: render_forwards(&[dest("rtmp://127.0.0.1:1935/live/output1")]),
            event_time_ms: 1600402486054,
            callback_url: None,
        };
        assert_eq!(
            serde_json::to_value(ev.payload()).unwrap(),
            json!({
                "id": "task_unique_id_001",
                "srcurl": "[{\"url\":\"http://source.example.com/live/stream1.flv\"}]",
                "forwardurl": "rtmp://127.0.0.1:1935/live/output1",
                "cmd": "1",
                "code": "0",
                "msg": "푸시 시작!",
                "event_time": 1600402486054i64
            })
        );
        // Field order on the wire follows the seed's example.
        let text = serde_json::to_string(&ev.payload()).unwrap();
        assert!(text.starts_with("{\"id\":") && text.ends_with("\"event_time\":1600402486054}"));
        assert_eq!(ev.key(), "acc:task_unique_id_001:00000000000000000003");
        assert_eq!(ev.index().time_ms, Some(1600402486054));
        assert_eq!(
            TaskEvent::from_record(ev.to_record().unwrap())
                .unwrap()
                .value,
            ev
        );
    }

    #[test]
    fn event_keys_sort_in_sequence_order() {
        let mk = |seq| {
            TaskEvent::task_not_exists("acc", TaskId::parse("t").unwrap(), Cmd::Stop, None, 0, seq)
                .key()
        };
        assert!(mk(9) < mk(10) && mk(10) < mk(1_000_000));
        let e =
            TaskEvent::task_not_exists("acc", TaskId::parse("t").unwrap(), Cmd::Stop, None, 5, 5);
        assert_eq!(
            (
                e.payload().code.as_str(),
                e.payload().msg.as_str(),
                e.payload().cmd.as_str()
            ),
            ("90", "task not exists", "2")
        );
    }

    #[test]
    fn forwards_render_plain_when_one_and_as_json_when_several() {
        assert_eq!(render_forwards(&[]), "");
        assert_eq!(render_forwards(&[dest("rtmp://h/a/1")]), "rtmp://h/a/1");
        assert_eq!(
            render_forwards(&[dest("rtmp://h/a/1"), dest("rtmp://h/a/2")]),
            r#"[{"url":"rtmp://h/a/1"},{"url":"rtmp://h/a/2"}]"#
        );
    }

    #[test]
    fn times_are_beijing_by_default_and_empty_when_absent() {
        let tf = TimeFormat::default();
        // 2025-03-05 08:05:12 UTC is 16:05:12 in Beijing, as in the seed's query example.
        assert_eq!(tf.format(Some(1741161912000)), "2025-03-05 16:05:12");
        assert_eq!(tf.format(None), "");
        assert_eq!(
            TimeFormat { utc_offset_secs: 0 }.format(Some(1741161912000)),
            "2025-03-05 08:05:12"
        );
        assert_eq!(
            TimeFormat {
                utc_offset_secs: 999_999
            }
            .format(Some(0)),
            ""
        );
        assert_eq!(tf.format(Some(i64::MAX)), "");
    }
}
