//! The stored relay task: everything a worker needs to run it and the query needs to answer.
//! Its state changes only through the transitions in [`super::state`].

use serde::{Deserialize, Serialize};

use super::events::{render_forwards, render_sources, CallbackCode, TaskEvent};
use super::state::{DestState, PlaybackPosition, TaskState};
use super::types::{Cmd, ExtendParam, Fops, HttpUrl, RtmpUrl, Source, TaskId, TaskType};
use super::wire::NewRelayTask;
use crate::ports::store::{Entity, IndexKeys, Kind};

/// One destination of a task and how pushing to it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Where to push.
    pub url: RtmpUrl,
    /// Its own state: destinations fail and stop independently.
    pub state: DestState,
    /// The last error the pusher reported, for operators.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Figures the worker reports while running, shown to operators.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Measured output bitrate, bps.
    pub bitrate_bps: Option<u64>,
    /// Measured frame rate.
    pub fps: Option<f64>,
    /// Media time pushed in this run, ms.
    pub position_ms: Option<u64>,
    /// When the worker last reported, Unix ms.
    pub reported_at_ms: Option<i64>,
    /// The source being relayed, 0-based in the task's source list.
    #[serde(default)]
    pub current_source: Option<usize>,
    /// Each destination's pusher, as the worker last saw it.
    #[serde(default)]
    pub forwards: Vec<ForwardStats>,
}

/// One destination's pusher as the worker reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardStats {
    /// The destination URL.
    pub url: String,
    /// The pusher's state: `connecting`, `publishing`, `backoff` or `stopped`.
    pub state: String,
    /// Connection attempts after the first one.
    pub reconnects: u64,
}

/// A relay task, stored as kind `relay_task` under `{account}:{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayTask {
    /// The owning account (`n`).
    pub account: String,
    /// The task id.
    pub id: TaskId,
    /// `live` or `video`.
    pub task_type: TaskType,
    /// Sources in order (live: primary then backups; video: the playlist).
    pub sources: Vec<Source>,
    /// Destinations with their states.
    pub destinations: Vec<Destination>,
    /// Scheduled start, Unix ms.
    pub start_ms: Option<i64>,
    /// Scheduled end, Unix ms.
    pub end_ms: Option<i64>,
    /// Transcoding.
    pub fops: Fops,
    /// Behaviour tuning.
    pub extend: ExtendParam,
    /// Where callbacks go.
    pub callback_url: Option<HttpUrl>,
    /// The `cmd` of the last request that changed the task.
    pub last_cmd: Cmd,
    /// The code of the last callback event.
    pub last_code: Option<CallbackCode>,
    /// The message of the last callback event.
    pub last_msg: String,
    /// The state.
    pub state: TaskState,
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// When it last changed, Unix ms.
    pub updated_ms: i64,
    /// When pushing started in the current run (query `startTime`).
    pub started_ms: Option<i64>,
    /// When the task ended (query `endTime`).
    pub ended_ms: Option<i64>,
    /// When it stopped, for the 48 h resume window.
    pub stopped_at_ms: Option<i64>,
    /// Where in the playlist it is; kept across a manual stop so a resume continues there.
    pub position: PlaybackPosition,
    /// Bumped by every `cmd=3`, so a worker notices new sources.
    pub sources_revision: u64,
    /// Worker-reported figures.
    pub stats: RunStats,
    /// The `seq` of the next event.
    pub next_event_seq: u64,
    /// The fencing token of the newest lease a worker ran this task under. A worker's write
    /// with an older token is refused: a worker that lost its lease (paused, partitioned) can
    /// never overwrite what the new holder reports.
    #[serde(default)]
    pub run_token: u64,
}

impl RelayTask {
    /// A task from a validated `cmd=1` item: scheduled if its start is in the future, else
    /// starting. Creating is not a callback event (the HTTP answer reports it).
    pub fn create(
        account: &str,
        task_type: TaskType,
        callback_url: Option<HttpUrl>,
        new: NewRelayTask,
        now_ms: i64,
    ) -> Self {
        let state = match new.start_ms {
            Some(s) if s > now_ms => TaskState::Scheduled,
            _ => TaskState::Starting,
        };
        let position = PlaybackPosition::initial(&new.sources, &new.extend);
        Self {
            account: account.to_string(),
            id: new.id,
            task_type,
            sources: new.sources,
            destinations: new
                .forwards
                .into_iter()
                .map(|url| Destination {
                    url,
                    state: DestState::Pending,
                    last_error: None,
                })
                .collect(),
            start_ms: new.start_ms,
            end_ms: new.end_ms,
            fops: new.fops,
            extend: new.extend,
            callback_url,
            last_cmd: Cmd::Create,
            last_code: None,
            last_msg: String::new(),
            state,
            created_ms: now_ms,
            updated_ms: now_ms,
            started_ms: None,
            ended_ms: None,
            stopped_at_ms: None,
            position,
            sources_revision: 0,
            stats: RunStats::default(),
            run_token: 0,
            next_event_seq: 1,
        }
    }

    /// The store key of a task: `{account}:{id}`.
    pub fn store_key(account: &str, id: &TaskId) -> String {
        format!("{account}:{id}")
    }

    /// Every destination URL, in order.
    pub fn forward_urls(&self) -> Vec<RtmpUrl> {
        self.destinations.iter().map(|d| d.url.clone()).collect()
    }

    /// Destinations being pushed to or about to be (not stopped).
    pub fn active_destinations(&self) -> impl Iterator<Item = &Destination> {
        self.destinations
            .iter()
            .filter(|d| !matches!(d.state, DestState::Stopped { .. }))
    }

    /// Records an event: bumps the sequence, remembers code and message for the query.
    pub(crate) fn event(
        &mut self,
        code: CallbackCode,
        msg: String,
        forwards: &[RtmpUrl],
        now_ms: i64,
    ) -> TaskEvent {
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        self.last_code = Some(code);
        self.last_msg = msg.clone();
        TaskEvent {
            account: self.account.clone(),
            task_id: self.id.clone(),
            seq,
            cmd: self.last_cmd,
            code,
            msg,
            srcurl: render_sources(&self.sources),
            forwardurl: render_forwards(forwards),
            event_time_ms: now_ms,
            callback_url: self.callback_url.clone(),
        }
    }
}

/// The first destination of `new` already pushed to by another active task of the account
/// (`91 task repeat`): two publishers on one stream key would knock each other off. The task
/// with the same id is skipped, since re-submitting stops it first.
pub fn conflicting_destination<'a>(
    new: &NewRelayTask,
    others: impl IntoIterator<Item = &'a RelayTask>,
) -> Option<RtmpUrl> {
    let others: Vec<&RelayTask> = others
        .into_iter()
        .filter(|t| t.id != new.id && t.state.is_active())
        .collect();
    new.forwards
        .iter()
        .find(|f| {
            others
                .iter()
                .any(|t| t.active_destinations().any(|d| &d.url == *f))
        })
        .cloned()
}

impl Entity for RelayTask {
    const KIND: Kind = Kind("relay_task");

    fn key(&self) -> String {
        Self::store_key(&self.account, &self.id)
    }

    /// Account for listings, status for the scheduler and reaper (`scheduled`, `running`, …),
    /// time = the scheduled start or else the creation, so "scheduled tasks due by now" is one
    /// range query.
    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: Some(self.state.key().to_string()),
            time_ms: Some(self.start_ms.unwrap_or(self.created_ms)),
        }
    }
}
