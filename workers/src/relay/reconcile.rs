//! Reconciling a running relay session with its task record, without I/O.
//!
//! The task record is the desired state ("the API only writes tasks"); the session is the
//! observed one. The relay worker reads both, asks these functions what to do, and does it:
//! it alone touches the store and the session. Keeping the decisions pure lets every rule be
//! tested with a record and a status snapshot, no nginx, ffmpeg or database involved.
//!
//! A watch tick runs in two halves, as the worker needs them: [`plan_session`] (pushers to
//! stop or start, sources to replace), then, on a fresh snapshot if the first half changed
//! anything, [`destination_steps`] for each pusher (what its state means for the record).
//! Session and playout events map through [`on_session_event`] and [`on_playout_event`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use relaycast_core::domain::relay::events::item_warning_detail;
use relaycast_core::domain::relay::state::{
    Action, DestState, PlaybackPosition, StopCause, TaskState,
};
use relaycast_core::domain::relay::task::RelayTask;
use relaycast_core::domain::relay::types::RtmpUrl;

use crate::relay::pusher::{PusherState, PusherStatus};
use crate::relay::session::{FinishCause, PlayoutEvent, SessionEvent, SessionStatus};

/// What the session must change for the task record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPlan {
    /// Destinations the record stopped (`cmd=2`, given up) whose pusher still runs: stop
    /// their pushers only.
    pub stop: Vec<String>,
    /// Destinations pending in the record without a pusher: start one each.
    pub add: Vec<String>,
    /// The record's sources changed (`cmd=3`): rebuild them and replace the session's list
    /// (now or after the current item; destination connections stay up).
    pub replace_sources: bool,
}

impl SessionPlan {
    /// Whether a pusher is stopped or added, which makes a status snapshot stale.
    pub fn changes_destinations(&self) -> bool {
        !self.stop.is_empty() || !self.add.is_empty()
    }
}

/// The session changes that bring `status` in line with `task`; `sources_revision` is the
/// revision of the sources the session runs.
pub fn plan_session(
    task: &RelayTask,
    status: &SessionStatus,
    sources_revision: u64,
) -> SessionPlan {
    let mut plan = SessionPlan::default();
    for d in &task.destinations {
        let pusher = status.destinations.iter().find(|p| p.url == d.url.as_str());
        match d.state {
            DestState::Stopped { .. }
                if pusher.is_some_and(|p| p.state != PusherState::Stopped) =>
            {
                plan.stop.push(d.url.as_str().to_string());
            }
            DestState::Pending if pusher.is_none() => plan.add.push(d.url.as_str().to_string()),
            _ => {}
        }
    }
    plan.replace_sources = task.sources_revision != sources_revision;
    plan
}

/// One step for the task record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordStep {
    /// Apply this action to the task record.
    Apply(Action),
    /// The destination has been unreachable for the give-up time: stop its pusher, then
    /// record the failure (callback 3).
    GiveUp {
        /// The destination as recorded.
        url: RtmpUrl,
        /// The pusher's last error.
        reason: String,
    },
}

/// Since when each destination's pusher has been failing to publish (by URL): the worker's
/// memory between ticks, for the give-up time.
pub type DownSince = HashMap<String, Instant>;

/// What `pusher`'s state means for its destination in `task`: a first publish starts the
/// task and marks the destination pushing; a lost connection marks it reconnecting; one
/// that never (re)connects within `give_up` is given up. Nothing for a pusher the record
/// does not list.
pub fn destination_steps(
    task: &RelayTask,
    pusher: &PusherStatus,
    down_since: &mut DownSince,
    now: Instant,
    give_up: Duration,
) -> Vec<RecordStep> {
    let Some(recorded) = task
        .destinations
        .iter()
        .find(|d| d.url.as_str() == pusher.url)
    else {
        return Vec::new();
    };
    let url = recorded.url.clone();
    match (pusher.state, &recorded.state) {
        (PusherState::Publishing, DestState::Pending | DestState::Reconnecting { .. }) => {
            down_since.remove(&pusher.url);
            let mut steps = Vec::new();
            if task.state == TaskState::Starting {
                steps.push(RecordStep::Apply(Action::Started));
            }
            steps.push(RecordStep::Apply(Action::PushConnected { url }));
            steps
        }
        (PusherState::Backoff | PusherState::Connecting, DestState::Pushing) => {
            down_since.entry(pusher.url.clone()).or_insert(now);
            vec![RecordStep::Apply(Action::PushReconnecting { url })]
        }
        (
            PusherState::Backoff | PusherState::Connecting,
            DestState::Pending | DestState::Reconnecting { .. },
        ) => {
            let since = *down_since.entry(pusher.url.clone()).or_insert(now);
            if now.saturating_duration_since(since) >= give_up {
                let reason = pusher
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "destination unreachable".into());
                vec![RecordStep::GiveUp { url, reason }]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// What a playout event means for the run.
#[derive(Debug, Clone, PartialEq)]
pub enum PlayoutStep {
    /// Nothing to record.
    Nothing,
    /// Apply this action; the run goes on.
    Apply(Action),
    /// Apply this action; the run is over (the task ended here).
    End(Action),
}

fn interrupted(task: &RelayTask) -> bool {
    matches!(task.state, TaskState::Running | TaskState::Retrying { .. })
}

/// The record's side of a [`PlayoutEvent`].
pub fn on_playout_event(task: &RelayTask, event: PlayoutEvent) -> PlayoutStep {
    match event {
        PlayoutEvent::ItemStarted { index, loop_number } => {
            let position = PlaybackPosition {
                index,
                loops_done: loop_number.saturating_sub(1),
                offset_ms: 0,
            };
            PlayoutStep::Apply(Action::ItemAdvanced { position })
        }
        PlayoutEvent::ItemFailed { index, reason } => {
            let file = task
                .sources
                .get(index)
                .map(|s| s.url.to_string())
                .unwrap_or_default();
            let detail = item_warning_detail(&reason);
            PlayoutStep::Apply(Action::ItemWarning { file, detail })
        }
        PlayoutEvent::SlateStarted if interrupted(task) => {
            let reason = "every source is down; destinations are on the slate".to_string();
            PlayoutStep::Apply(Action::SourceInterrupted { reason })
        }
        PlayoutEvent::SlateEnded if matches!(task.state, TaskState::Retrying { .. }) => {
            PlayoutStep::Apply(Action::SourceRecovered)
        }
        PlayoutEvent::SlateStarted | PlayoutEvent::SlateEnded => PlayoutStep::Nothing,
        PlayoutEvent::SourcesExhausted { reason } => {
            PlayoutStep::End(Action::SourceFailed { reason })
        }
        // cmd=3 already reported the new list (5) when it was accepted.
        PlayoutEvent::SourcesReplaced { .. } => PlayoutStep::Nothing,
        PlayoutEvent::Finished { cause, reason } => match cause {
            FinishCause::PlaylistFinished => PlayoutStep::End(Action::Finished {
                cause: StopCause::LoopsDone,
            }),
            FinishCause::Duration => PlayoutStep::End(Action::Finished {
                cause: StopCause::RelOffTime,
            }),
            FinishCause::SourcesExhausted | FinishCause::SourceEnded => {
                PlayoutStep::End(Action::SourceFailed { reason })
            }
            // Only the worker stops sessions: it already knows why.
            FinishCause::Stopped => PlayoutStep::Nothing,
        },
    }
}

/// The record's side of a [`SessionEvent`]: a source failure interrupts a running task, a
/// switch recovers a retrying one. How a session ends comes on the playout channel.
pub fn on_session_event(task: &RelayTask, event: &SessionEvent) -> Option<Action> {
    match event {
        SessionEvent::SourceFailed { reason, .. } if interrupted(task) => {
            Some(Action::SourceInterrupted {
                reason: reason.clone(),
            })
        }
        SessionEvent::SwitchedSource { .. } if matches!(task.state, TaskState::Retrying { .. }) => {
            Some(Action::SourceRecovered)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relaycast_core::domain::relay::state::StopKind;
    use relaycast_core::domain::relay::types::{
        ExtendParam, Fops, Source, SourceUrl, TaskId, TaskType,
    };
    use relaycast_core::domain::relay::wire::NewRelayTask;

    use crate::relay::session::SourceState;

    const A: &str = "rtmp://a.example/live/k";
    const B: &str = "rtmp://b.example/live/k";

    fn task(destinations: &[&str]) -> RelayTask {
        let new = NewRelayTask {
            id: TaskId::parse("t").unwrap(),
            sources: vec![Source::new(
                SourceUrl::parse("rtmp://h/live/a", TaskType::Live).unwrap(),
            )],
            forwards: destinations
                .iter()
                .map(|d| RtmpUrl::parse(d).unwrap())
                .collect(),
            start_ms: None,
            end_ms: None,
            fops: Fops::default(),
            extend: ExtendParam::default(),
        };
        RelayTask::create("acc", TaskType::Live, None, new, 0)
    }

    fn set_dest(task: &mut RelayTask, url: &str, state: DestState) {
        let d = task
            .destinations
            .iter_mut()
            .find(|d| d.url.as_str() == url)
            .expect("destination");
        d.state = state;
    }

    fn pusher(url: &str, state: PusherState) -> PusherStatus {
        PusherStatus {
            url: url.to_string(),
            state,
            bytes_sent: 0,
            tags_sent: 0,
            reconnects: 0,
            last_error: Some("connection refused".into()),
            backoff: Duration::ZERO,
            publishing_for: None,
        }
    }

    fn status(pushers: Vec<PusherStatus>) -> SessionStatus {
        SessionStatus {
            current_source: 0,
            source_state: SourceState::Running,
            switches: 0,
            bitrate_kbps: 0.0,
            fps: 0.0,
            position_ms: 0,
            source_progress: None,
            destinations: pushers,
            sources: 1,
            loop_number: 1,
        }
    }

    #[test]
    fn stopped_destinations_lose_their_pusher_and_pending_ones_get_one() {
        let mut t = task(&[A, B]);
        set_dest(
            &mut t,
            A,
            DestState::Stopped {
                kind: StopKind::Manual,
            },
        );
        // B is pending with no pusher (added by an edit).
        let st = status(vec![pusher(A, PusherState::Publishing)]);
        let plan = plan_session(&t, &st, t.sources_revision);
        assert_eq!(
            plan,
            SessionPlan {
                stop: vec![A.into()],
                add: vec![B.into()],
                replace_sources: false
            }
        );
        assert!(plan.changes_destinations());
        // Already stopped pushers are left alone; a running pending one is not added twice.
        let st = status(vec![
            pusher(A, PusherState::Stopped),
            pusher(B, PusherState::Connecting),
        ]);
        assert_eq!(
            plan_session(&t, &st, t.sources_revision),
            SessionPlan::default()
        );
    }

    #[test]
    fn a_new_sources_revision_replaces_the_sources() {
        let mut t = task(&[A]);
        let st = status(vec![pusher(A, PusherState::Publishing)]);
        let seen = t.sources_revision;
        t.sources_revision += 1;
        let plan = plan_session(&t, &st, seen);
        assert!(plan.replace_sources && !plan.changes_destinations());
    }

    #[test]
    fn the_first_publish_starts_the_task() {
        let t = task(&[A]);
        assert_eq!(t.state, TaskState::Starting);
        let mut down = DownSince::from([(A.to_string(), Instant::now())]);
        let steps = destination_steps(
            &t,
            &pusher(A, PusherState::Publishing),
            &mut down,
            Instant::now(),
            Duration::from_secs(60),
        );
        let url = RtmpUrl::parse(A).unwrap();
        assert_eq!(
            steps,
            [
                RecordStep::Apply(Action::Started),
                RecordStep::Apply(Action::PushConnected { url })
            ]
        );
        assert!(down.is_empty(), "a publishing destination is not down");
        // Already pushing: nothing to record.
        let mut t = task(&[A]);
        set_dest(&mut t, A, DestState::Pushing);
        assert!(destination_steps(
            &t,
            &pusher(A, PusherState::Publishing),
            &mut down,
            Instant::now(),
            Duration::from_secs(60)
        )
        .is_empty());
    }

    #[test]
    fn a_lost_destination_reconnects_then_is_given_up() {
        let give_up = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut down = DownSince::new();
        let mut t = task(&[A]);
        set_dest(&mut t, A, DestState::Pushing);
        let url = RtmpUrl::parse(A).unwrap();
        let steps = destination_steps(&t, &pusher(A, PusherState::Backoff), &mut down, t0, give_up);
        assert_eq!(
            steps,
            [RecordStep::Apply(Action::PushReconnecting {
                url: url.clone()
            })]
        );
        assert_eq!(down.get(A), Some(&t0));
        set_dest(&mut t, A, DestState::Reconnecting { attempt: 1 });
        let later = t0 + Duration::from_secs(59);
        assert!(destination_steps(
            &t,
            &pusher(A, PusherState::Connecting),
            &mut down,
            later,
            give_up
        )
        .is_empty());
        let steps = destination_steps(
            &t,
            &pusher(A, PusherState::Connecting),
            &mut down,
            t0 + give_up,
            give_up,
        );
        assert_eq!(
            steps,
            [RecordStep::GiveUp {
                url,
                reason: "connection refused".into()
            }]
        );
        // A pusher the record does not list is not the record's business.
        assert!(
            destination_steps(&t, &pusher(B, PusherState::Backoff), &mut down, t0, give_up)
                .is_empty()
        );
    }

    #[test]
    fn playout_and_session_events_map_onto_the_record() {
        let mut t = task(&[A]);
        // A slate only interrupts a running task; a switch only recovers a retrying one.
        assert_eq!(
            on_playout_event(&t, PlayoutEvent::SlateStarted),
            PlayoutStep::Nothing
        );
        t.state = TaskState::Running;
        assert!(matches!(
            on_playout_event(&t, PlayoutEvent::SlateStarted),
            PlayoutStep::Apply(Action::SourceInterrupted { .. })
        ));
        let failed = SessionEvent::SourceFailed {
            index: 0,
            reason: "gone".into(),
        };
        assert_eq!(
            on_session_event(&t, &failed),
            Some(Action::SourceInterrupted {
                reason: "gone".into()
            })
        );
        assert_eq!(
            on_session_event(&t, &SessionEvent::SwitchedSource { from: 0, to: 1 }),
            None
        );
        t.state = TaskState::Retrying {
            reason: "gone".into(),
        };
        assert_eq!(
            on_session_event(&t, &SessionEvent::SwitchedSource { from: 0, to: 1 }),
            Some(Action::SourceRecovered)
        );
        assert_eq!(
            on_playout_event(&t, PlayoutEvent::SlateEnded),
            PlayoutStep::Apply(Action::SourceRecovered)
        );
        // How a run ends.
        let finished = |cause| PlayoutEvent::Finished {
            cause,
            reason: "why".into(),
        };
        assert_eq!(
            on_playout_event(&t, finished(FinishCause::PlaylistFinished)),
            PlayoutStep::End(Action::Finished {
                cause: StopCause::LoopsDone
            })
        );
        assert_eq!(
            on_playout_event(&t, finished(FinishCause::Duration)),
            PlayoutStep::End(Action::Finished {
                cause: StopCause::RelOffTime
            })
        );
        assert_eq!(
            on_playout_event(&t, finished(FinishCause::SourceEnded)),
            PlayoutStep::End(Action::SourceFailed {
                reason: "why".into()
            })
        );
        assert_eq!(
            on_playout_event(&t, finished(FinishCause::Stopped)),
            PlayoutStep::Nothing
        );
        assert_eq!(
            on_playout_event(
                &t,
                PlayoutEvent::ItemStarted {
                    index: 2,
                    loop_number: 3
                }
            ),
            PlayoutStep::Apply(Action::ItemAdvanced {
                position: PlaybackPosition {
                    index: 2,
                    loops_done: 2,
                    offset_ms: 0
                }
            })
        );
    }
}
