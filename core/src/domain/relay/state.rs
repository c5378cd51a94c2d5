//! The task state machine, in one place.
//!
//! ```text
//!  create ──► Scheduled ──Due──► Starting ──Started(0)──► Running ◄──SourceRecovered── Retrying
//!                │                 │  └─DeliveryFailed(92)─┐  │ └──SourceInterrupted──────►│
//!                │                 │                        ▼  ▼                            │
//!                └─Expire─► Expired ◄─Expire─ Stopped{Natural(1)|Manual(1)|Failed(2/3/92)} ◄┘
//!                                             └──Resume (≤ 48 h)──► Starting / Scheduled
//! ```
//!
//! - `Retrying` is transient (a source failing over, pushers reconnecting): no callback, and it
//!   is distinct from every final state.
//! - Every change goes through [`RelayTask::apply`], one `match` on (state, action); the named
//!   methods are shorthands. A transition the seed reports returns exactly one [`TaskEvent`]
//!   with the seed's code and message; the others return none.
//! - A refused request ([`TransitionError`]) maps to the callback code the seed gives for it
//!   ([`TransitionError::callback_code`]), which [`RelayTask::rejection_event`] turns into an event.

use serde::{Deserialize, Serialize};

use super::events::{item_warning_msg, pull_failed_msg, CallbackCode, TaskEvent};
use super::task::RelayTask;
use super::types::{Cmd, ExtendParam, Fops, LoopCount, RtmpUrl, Source, TaskType};
use super::RESUME_WINDOW_MS;

/// How a task stopped; decides how `cmd=5` resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopKind {
    /// Ran to its end (playlist done, `end` reached): resume starts from the first file.
    Natural,
    /// Stopped by `cmd=2`: resume continues where it stopped.
    Manual,
    /// Failed (source, every push, or delivery): resume continues where it stopped.
    Failed,
}

/// The state of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its `start`.
    Scheduled,
    /// Handed to a worker, not pushing yet.
    Starting,
    /// Pushing.
    Running,
    /// Transient trouble (source failover, reconnecting): not an end.
    Retrying {
        /// What went wrong.
        reason: String,
    },
    /// Ended; resumable for 48 h.
    Stopped {
        /// How.
        kind: StopKind,
    },
    /// Ended for good: the resume window passed, or its window closed before it ever started.
    Expired,
}

impl TaskState {
    /// The status stored in the index.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Retrying { .. } => "retrying",
            Self::Stopped {
                kind: StopKind::Natural,
            } => "stopped_natural",
            Self::Stopped {
                kind: StopKind::Manual,
            } => "stopped_manual",
            Self::Stopped {
                kind: StopKind::Failed,
            } => "stopped_failed",
            Self::Expired => "expired",
        }
    }

    /// Scheduled, starting, running or retrying: a worker owns it or will.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Self::Scheduled | Self::Starting | Self::Running | Self::Retrying { .. }
        )
    }

    /// The Tencent console's status (seed 000), a derived view:
    /// scheduled → not started; running → valid-active; starting/retrying → valid-inactive (in
    /// its window, nothing flowing yet); a failed task → valid-inactive too (it can be resumed);
    /// a manual stop → disabled; a natural end or expiry → expired.
    pub fn console_status(&self) -> ConsoleStatus {
        match self {
            Self::Scheduled => ConsoleStatus::NotStarted,
            Self::Running => ConsoleStatus::ValidActive,
            Self::Starting
            | Self::Retrying { .. }
            | Self::Stopped {
                kind: StopKind::Failed,
            } => ConsoleStatus::ValidInactive,
            Self::Stopped {
                kind: StopKind::Manual,
            } => ConsoleStatus::Disabled,
            Self::Stopped {
                kind: StopKind::Natural,
            }
            | Self::Expired => ConsoleStatus::Expired,
        }
    }
}

/// The status names of the Tencent relay console (seed 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleStatus {
    /// 미시작.
    NotStarted,
    /// 유효 (활성).
    ValidActive,
    /// 유효 (비활성).
    ValidInactive,
    /// 비활성화됨.
    Disabled,
    /// 만료됨.
    Expired,
}

/// The state of one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DestState {
    /// Not connected yet.
    Pending,
    /// Publishing.
    Pushing,
    /// Lost its connection, reconnecting with backoff (transient).
    Reconnecting {
        /// Attempts so far.
        attempt: u32,
    },
    /// No longer pushed to.
    Stopped {
        /// Why.
        kind: StopKind,
    },
}

/// Where a VOD task is in its playlist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybackPosition {
    /// The current item, 0-based.
    pub index: usize,
    /// Complete passes over the playlist so far.
    pub loops_done: u32,
    /// Media time into the current item, ms.
    pub offset_ms: u64,
}

impl PlaybackPosition {
    /// Where a run starts: `extendParam.index` (1-based) or the first item, at its `relofftime`
    /// start.
    pub fn initial(sources: &[Source], extend: &ExtendParam) -> Self {
        let index = extend
            .start_index
            .map(|i| (i as usize).saturating_sub(1))
            .unwrap_or(0)
            .min(sources.len().saturating_sub(1));
        Self {
            index,
            loops_done: 0,
            offset_ms: item_start_ms(sources, index),
        }
    }
}

fn item_start_ms(sources: &[Source], index: usize) -> u64 {
    sources
        .get(index)
        .and_then(|s| s.relofftime)
        .map(|r| r.start_s.saturating_mul(1000))
        .unwrap_or(0)
}

/// Why a run ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopCause {
    /// `end` reached.
    EndTime,
    /// The playlist played `loop` times.
    LoopsDone,
    /// A live task's `relofftime` duration elapsed.
    RelOffTime,
}

/// What the worker should do at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep going.
    Continue,
    /// Play this item next.
    NextItem(PlaybackPosition),
    /// Stop the task (a natural end).
    Stop(StopCause),
}

/// A request or report the task cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// Stop/update of a task that is not active.
    #[error("task is not active")]
    NotActive,
    /// `cmd=3` on a task that has not started: the seed says cancel and re-create instead.
    #[error("task has not started")]
    NotStarted,
    /// `cmd=5` on a task that is running, with nothing stopped to resume.
    #[error("task is already active")]
    AlreadyActive,
    /// `cmd=5` more than 48 h after the stop, or on an expired task.
    #[error("the resume window has passed")]
    ResumeWindowPassed,
    /// `cmd=5` of a task whose `end` has passed.
    #[error("the task's end has passed")]
    EndPassed,
    /// A destination the task does not have (stop and resume URLs must match exactly).
    #[error("the task has no destination {0}")]
    UnknownForward(String),
    /// A `resetUrl` that another destination of the task already uses.
    #[error("destination {0} is already used by the task")]
    DuplicateForward(String),
    /// A report or action that makes no sense in the current state (a worker bug or a stale
    /// message): refused without any callback.
    #[error("{action} is not allowed when the task is {state}")]
    Illegal {
        /// The state's key.
        state: &'static str,
        /// The action's name.
        action: &'static str,
    },
}

impl TransitionError {
    /// The callback the seed sends for this refusal, if any: 90 when there is no such task or
    /// destination (any more), 91 for "task repeat / task not start".
    pub fn callback_code(&self) -> Option<CallbackCode> {
        match self {
            Self::NotActive | Self::ResumeWindowPassed | Self::UnknownForward(_) => {
                Some(CallbackCode::TaskNotExists)
            }
            Self::NotStarted
            | Self::AlreadyActive
            | Self::EndPassed
            | Self::DuplicateForward(_) => Some(CallbackCode::TaskRepeat),
            Self::Illegal { .. } => None,
        }
    }
}

/// Everything that can happen to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The scheduler: `start` reached.
    Due,
    /// The job could not be handed to a worker (92).
    DeliveryFailed,
    /// The worker: the first destination is publishing (0).
    Started,
    /// The worker: the source is failing over or stalled (transient).
    SourceInterrupted {
        /// What happened.
        reason: String,
    },
    /// The worker: the source is back.
    SourceRecovered,
    /// The worker: no source can be pulled (2).
    SourceFailed {
        /// The detail after `live_pull 실패:`.
        reason: String,
    },
    /// The worker: a destination is (again) publishing.
    PushConnected {
        /// Which.
        url: RtmpUrl,
    },
    /// The worker: a destination lost its connection and is reconnecting (transient).
    PushReconnecting {
        /// Which.
        url: RtmpUrl,
    },
    /// The worker: a destination gave up (3); when it was the last one, the task fails.
    PushFailed {
        /// Which.
        url: RtmpUrl,
        /// Why.
        reason: String,
    },
    /// The worker: a playlist item could not be played, the next one follows (4).
    ItemWarning {
        /// The item.
        file: String,
        /// The detail, e.g. `서버에서 404 반환`.
        detail: String,
    },
    /// The worker: the next playlist item is playing (5).
    ItemAdvanced {
        /// The new position.
        position: PlaybackPosition,
    },
    /// The worker: the run ended on its own (1).
    Finished {
        /// Why.
        cause: StopCause,
    },
    /// `cmd=2`: stop these destinations (all when empty) (1).
    Stop {
        /// The destinations.
        forwards: Vec<RtmpUrl>,
    },
    /// `cmd=3`: new sources (5).
    Update {
        /// The sources.
        sources: Vec<Source>,
        /// The transcoding.
        fops: Fops,
        /// The tuning.
        extend: ExtendParam,
    },
    /// `cmd=5`: resume, replacing destinations by their `resetUrl`.
    Resume {
        /// `(url, resetUrl)` as sent.
        forwards: Vec<(RtmpUrl, Option<RtmpUrl>)>,
    },
    /// `cmd=1` with this task's id: the old task stops first (1 if it was active).
    Supersede,
    /// Housekeeping: close the resume window, or a scheduled window that passed unstarted.
    Expire,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Self::Due => "due",
            Self::DeliveryFailed => "delivery_failed",
            Self::Started => "started",
            Self::SourceInterrupted { .. } => "source_interrupted",
            Self::SourceRecovered => "source_recovered",
            Self::SourceFailed { .. } => "source_failed",
            Self::PushConnected { .. } => "push_connected",
            Self::PushReconnecting { .. } => "push_reconnecting",
            Self::PushFailed { .. } => "push_failed",
            Self::ItemWarning { .. } => "item_warning",
            Self::ItemAdvanced { .. } => "item_advanced",
            Self::Finished { .. } => "finished",
            Self::Stop { .. } => "stop",
            Self::Update { .. } => "update",
            Self::Resume { .. } => "resume",
            Self::Supersede => "supersede",
            Self::Expire => "expire",
        }
    }
}

/// The result of a transition: the callbacks it causes.
pub type Transition = Result<Vec<TaskEvent>, TransitionError>;

impl RelayTask {
    /// Applies `action` at `now_ms`. On `Err` the task is unchanged.
    pub fn apply(&mut self, action: Action, now_ms: i64) -> Transition {
        use TaskState as S;
        let illegal = |state: &TaskState, action: &Action| TransitionError::Illegal {
            state: state.key(),
            action: action.name(),
        };
        let events = match (&self.state, action) {
            (S::Scheduled, Action::Due) => {
                if self.start_ms.is_some_and(|s| s > now_ms) {
                    return Err(TransitionError::Illegal {
                        state: "scheduled",
                        action: "due (before start)",
                    });
                }
                self.state = S::Starting;
                vec![]
            }
            (S::Starting, Action::DeliveryFailed) => {
                self.stop_all(StopKind::Failed, now_ms);
                let all = self.forward_urls();
                vec![self.event(
                    CallbackCode::DeliveryFailed,
                    CallbackCode::DeliveryFailed.default_msg().into(),
                    &all,
                    now_ms,
                )]
            }
            (S::Starting, Action::Started) => {
                self.state = S::Running;
                self.started_ms = Some(now_ms);
                let all = self.forward_urls();
                vec![self.event(
                    CallbackCode::Started,
                    CallbackCode::Started.default_msg().into(),
                    &all,
                    now_ms,
                )]
            }
            (S::Running, Action::SourceInterrupted { reason }) => {
                self.state = S::Retrying { reason };
                vec![]
            }
            (S::Retrying { .. }, Action::SourceInterrupted { reason }) => {
                self.state = S::Retrying { reason };
                vec![]
            }
            (S::Retrying { .. }, Action::SourceRecovered) => {
                self.state = S::Running;
                vec![]
            }
            (S::Starting | S::Running | S::Retrying { .. }, Action::SourceFailed { reason }) => {
                self.stop_all(StopKind::Failed, now_ms);
                let all = self.forward_urls();
                vec![self.event(
                    CallbackCode::PullFailed,
                    pull_failed_msg(&reason),
                    &all,
                    now_ms,
                )]
            }
            (S::Starting | S::Running | S::Retrying { .. }, Action::PushConnected { url }) => {
                let d = self.active_dest_mut(&url)?;
                d.state = DestState::Pushing;
                d.last_error = None;
                vec![]
            }
            (S::Starting | S::Running | S::Retrying { .. }, Action::PushReconnecting { url }) => {
                let d = self.active_dest_mut(&url)?;
                d.state = match d.state {
                    DestState::Reconnecting { attempt } => DestState::Reconnecting {
                        attempt: attempt.saturating_add(1),
                    },
                    _ => DestState::Reconnecting { attempt: 1 },
                };
                vec![]
            }
            (S::Starting | S::Running | S::Retrying { .. }, Action::PushFailed { url, reason }) => {
                let d = self.active_dest_mut(&url)?;
                d.state = DestState::Stopped {
                    kind: StopKind::Failed,
                };
                d.last_error = Some(reason);
                if self.active_destinations().next().is_none() {
                    self.end_run(StopKind::Failed, now_ms);
                }
                vec![self.event(
                    CallbackCode::PushFailed,
                    CallbackCode::PushFailed.default_msg().into(),
                    &[url],
                    now_ms,
                )]
            }
            // Also before the task runs: a playlist whose first item is a 404 warns about it
            // while the next item starts (the destinations may not publish yet).
            (
                S::Starting | S::Running | S::Retrying { .. },
                Action::ItemWarning { file, detail },
            ) => {
                let all = self.forward_urls();
                vec![self.event(
                    CallbackCode::ItemWarning,
                    item_warning_msg(&file, &detail),
                    &all,
                    now_ms,
                )]
            }
            // The item a run starts with is reported by 0 (started), not 5; it may be a later
            // one than the first (the first failed): keep the position right, silently.
            (S::Starting, Action::ItemAdvanced { position }) => {
                self.position = position;
                vec![]
            }
            (S::Running | S::Retrying { .. }, Action::ItemAdvanced { position }) => {
                self.position = position;
                let all = self.forward_urls();
                vec![self.event(
                    CallbackCode::ListUpdated,
                    CallbackCode::ListUpdated.default_msg().into(),
                    &all,
                    now_ms,
                )]
            }
            (S::Starting | S::Running | S::Retrying { .. }, Action::Finished { .. }) => {
                self.stop_all(StopKind::Natural, now_ms);
                let all = self.forward_urls();
                vec![self.event(
                    CallbackCode::Finished,
                    CallbackCode::Finished.default_msg().into(),
                    &all,
                    now_ms,
                )]
            }
            (
                S::Scheduled | S::Starting | S::Running | S::Retrying { .. },
                Action::Stop { forwards },
            ) => {
                let targets: Vec<RtmpUrl> = if forwards.is_empty() {
                    self.active_destinations().map(|d| d.url.clone()).collect()
                } else {
                    for f in &forwards {
                        if !self.destinations.iter().any(|d| &d.url == f) {
                            return Err(TransitionError::UnknownForward(f.to_string()));
                        }
                    }
                    forwards
                };
                self.last_cmd = Cmd::Stop;
                for d in self
                    .destinations
                    .iter_mut()
                    .filter(|d| targets.contains(&d.url))
                {
                    d.state = DestState::Stopped {
                        kind: StopKind::Manual,
                    };
                }
                if self.active_destinations().next().is_none() {
                    self.end_run(StopKind::Manual, now_ms);
                }
                vec![self.event(
                    CallbackCode::Finished,
                    CallbackCode::Finished.default_msg().into(),
                    &targets,
                    now_ms,
                )]
            }
            (S::Stopped { .. } | S::Expired, Action::Stop { .. } | Action::Update { .. }) => {
                return Err(TransitionError::NotActive)
            }
            (S::Scheduled, Action::Update { .. }) => return Err(TransitionError::NotStarted),
            (
                S::Starting | S::Running | S::Retrying { .. },
                Action::Update {
                    sources,
                    fops,
                    extend,
                },
            ) => {
                self.position = PlaybackPosition::initial(&sources, &extend);
                self.sources = sources;
                self.fops = fops;
                self.extend = extend;
                self.sources_revision += 1;
                self.last_cmd = Cmd::Update;
                let all = self.forward_urls();
                vec![self.event(
                    CallbackCode::ListUpdated,
                    CallbackCode::ListUpdated.default_msg().into(),
                    &all,
                    now_ms,
                )]
            }
            (S::Stopped { kind }, Action::Resume { forwards }) => {
                let kind = *kind;
                if self
                    .stopped_at_ms
                    .is_some_and(|at| now_ms - at > RESUME_WINDOW_MS)
                {
                    return Err(TransitionError::ResumeWindowPassed);
                }
                if self.end_ms.is_some_and(|e| e <= now_ms) {
                    return Err(TransitionError::EndPassed);
                }
                let destinations = self.reset_destinations(&forwards)?;
                self.destinations = destinations;
                for d in &mut self.destinations {
                    d.state = DestState::Pending;
                }
                if kind == StopKind::Natural {
                    self.position = PlaybackPosition {
                        index: 0,
                        loops_done: 0,
                        offset_ms: item_start_ms(&self.sources, 0),
                    };
                }
                self.state = if self.start_ms.is_some_and(|s| s > now_ms) {
                    S::Scheduled
                } else {
                    S::Starting
                };
                // The figures of the previous run are not this run's.
                self.stats = Default::default();
                self.last_cmd = Cmd::Resume;
                self.started_ms = None;
                self.ended_ms = None;
                self.stopped_at_ms = None;
                vec![]
            }
            (
                S::Scheduled | S::Starting | S::Running | S::Retrying { .. },
                Action::Resume { forwards },
            ) => {
                // Only destinations stopped on their own (a `cmd=2` of a subset, a failed push)
                // can be resumed while the task runs.
                let destinations = self.reset_destinations(&forwards)?;
                let named: Vec<&RtmpUrl> = forwards.iter().map(|(u, _)| u).collect();
                let restart: Vec<usize> = self
                    .destinations
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| {
                        matches!(d.state, DestState::Stopped { .. })
                            && (named.is_empty() || named.contains(&&d.url))
                    })
                    .map(|(i, _)| i)
                    .collect();
                // Replacing the URL of a destination that is still pushing would leave its
                // pusher on the old one: only stopped destinations may be reset while running.
                let resets_active = forwards.iter().any(|(u, r)| {
                    r.is_some()
                        && self
                            .destinations
                            .iter()
                            .any(|d| &d.url == u && !matches!(d.state, DestState::Stopped { .. }))
                });
                if restart.is_empty() || resets_active {
                    return Err(TransitionError::AlreadyActive);
                }
                self.destinations = destinations;
                for i in restart {
                    self.destinations[i].state = DestState::Pending;
                }
                self.last_cmd = Cmd::Resume;
                vec![]
            }
            (S::Expired, Action::Resume { .. }) => return Err(TransitionError::ResumeWindowPassed),
            (S::Scheduled | S::Starting | S::Running | S::Retrying { .. }, Action::Supersede) => {
                self.last_cmd = Cmd::Create;
                self.stop_all(StopKind::Manual, now_ms);
                let all = self.forward_urls();
                vec![self.event(
                    CallbackCode::Finished,
                    CallbackCode::Finished.default_msg().into(),
                    &all,
                    now_ms,
                )]
            }
            (S::Stopped { .. } | S::Expired, Action::Supersede) => vec![],
            (S::Stopped { .. }, Action::Expire)
                if self
                    .stopped_at_ms
                    .is_none_or(|at| now_ms - at > RESUME_WINDOW_MS) =>
            {
                self.state = S::Expired;
                vec![]
            }
            (S::Scheduled, Action::Expire) if self.end_ms.is_some_and(|e| e <= now_ms) => {
                self.state = S::Expired;
                self.ended_ms = Some(now_ms);
                vec![]
            }
            (state, action) => return Err(illegal(state, &action)),
        };
        self.updated_ms = now_ms;
        Ok(events)
    }

    /// The callback for a refused `cmd` on this task (90 / 91), if the seed has one. The refusal
    /// changes nothing else, but the event still takes the next sequence number.
    pub fn rejection_event(
        &mut self,
        cmd: Cmd,
        err: &TransitionError,
        now_ms: i64,
    ) -> Option<TaskEvent> {
        let code = err.callback_code()?;
        let saved = (self.last_cmd, self.last_code, self.last_msg.clone());
        self.last_cmd = cmd;
        let all = self.forward_urls();
        let ev = self.event(code, code.default_msg().into(), &all, now_ms);
        // A refused request does not become the task's last state in the query.
        (self.last_cmd, self.last_code, self.last_msg) = saved;
        Some(ev)
    }

    /// What ends the run at `position` (`now_ms`, `item_ended`: the current item reached its end
    /// of file, `run_elapsed_ms`: time pushed in this run). Precedence `end` > `loop` >
    /// `relofftime` (seed): the highest-priority condition that holds decides.
    pub fn decide(
        &self,
        now_ms: i64,
        position: &PlaybackPosition,
        item_ended: bool,
        run_elapsed_ms: u64,
    ) -> Decision {
        if self.end_ms.is_some_and(|e| now_ms >= e) {
            return Decision::Stop(StopCause::EndTime);
        }
        match self.task_type {
            TaskType::Live => {
                let limit = self
                    .sources
                    .iter()
                    .find_map(|s| s.relofftime)
                    .map(|r| r.end_s.saturating_mul(1000));
                match limit {
                    Some(l) if run_elapsed_ms >= l => Decision::Stop(StopCause::RelOffTime),
                    _ => Decision::Continue,
                }
            }
            TaskType::Video => {
                let item_end = self
                    .sources
                    .get(position.index)
                    .and_then(|s| s.relofftime)
                    .map(|r| r.end_s.saturating_mul(1000));
                let done = item_ended || item_end.is_some_and(|e| position.offset_ms >= e);
                if !done {
                    return Decision::Continue;
                }
                if position.index + 1 < self.sources.len() {
                    let index = position.index + 1;
                    return Decision::NextItem(PlaybackPosition {
                        index,
                        loops_done: position.loops_done,
                        offset_ms: item_start_ms(&self.sources, index),
                    });
                }
                let loops_done = position.loops_done.saturating_add(1);
                let again = match self.extend.loop_count {
                    LoopCount::Forever => true,
                    LoopCount::Times(n) => loops_done < n,
                };
                if again {
                    Decision::NextItem(PlaybackPosition {
                        index: 0,
                        loops_done,
                        offset_ms: item_start_ms(&self.sources, 0),
                    })
                } else {
                    Decision::Stop(StopCause::LoopsDone)
                }
            }
        }
    }

    /// Shorthand: the worker reports pushing started.
    pub fn started(&mut self, now_ms: i64) -> Transition {
        self.apply(Action::Started, now_ms)
    }

    /// Shorthand: `cmd=2`.
    pub fn stop(&mut self, forwards: Vec<RtmpUrl>, now_ms: i64) -> Transition {
        self.apply(Action::Stop { forwards }, now_ms)
    }

    /// Shorthand: `cmd=5`.
    pub fn resume(&mut self, forwards: Vec<(RtmpUrl, Option<RtmpUrl>)>, now_ms: i64) -> Transition {
        self.apply(Action::Resume { forwards }, now_ms)
    }

    /// Shorthand: the run ended on its own.
    pub fn finished(&mut self, cause: StopCause, now_ms: i64) -> Transition {
        self.apply(Action::Finished { cause }, now_ms)
    }

    fn active_dest_mut(
        &mut self,
        url: &RtmpUrl,
    ) -> Result<&mut super::task::Destination, TransitionError> {
        let state = self.state.key();
        match self.destinations.iter_mut().find(|d| &d.url == url) {
            Some(d) if !matches!(d.state, DestState::Stopped { .. }) => Ok(d),
            Some(_) => Err(TransitionError::Illegal {
                state,
                action: "report on a stopped destination",
            }),
            None => Err(TransitionError::UnknownForward(url.to_string())),
        }
    }

    /// Every destination stops with `kind`, and the task with it.
    fn stop_all(&mut self, kind: StopKind, now_ms: i64) {
        for d in &mut self.destinations {
            if !matches!(d.state, DestState::Stopped { .. }) {
                d.state = DestState::Stopped { kind };
            }
        }
        self.end_run(kind, now_ms);
    }

    fn end_run(&mut self, kind: StopKind, now_ms: i64) {
        self.state = TaskState::Stopped { kind };
        self.stopped_at_ms = Some(now_ms);
        self.ended_ms = Some(now_ms);
    }

    /// The destinations with each `(url, resetUrl)` applied; `url` must be one of the task's.
    fn reset_destinations(
        &self,
        forwards: &[(RtmpUrl, Option<RtmpUrl>)],
    ) -> Result<Vec<super::task::Destination>, TransitionError> {
        let mut out = self.destinations.clone();
        for (url, reset) in forwards {
            let Some(i) = out.iter().position(|d| &d.url == url) else {
                return Err(TransitionError::UnknownForward(url.to_string()));
            };
            if let Some(new) = reset {
                if out.iter().enumerate().any(|(j, d)| j != i && &d.url == new) {
                    return Err(TransitionError::DuplicateForward(new.to_string()));
                }
                out[i].url = new.clone();
                out[i].last_error = None;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
