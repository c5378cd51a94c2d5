//! What a validated request does, as data: the tasks to write and the callback events to put in
//! the outbox, so the handler's only job is loading the named tasks, calling [`plan`], and
//! writing [`Effects::writes`] in one [`Store::transact`](crate::ports::Store::transact).

use std::collections::BTreeMap;

use super::events::TaskEvent;
use super::state::{Action, TransitionError};
use super::task::{conflicting_destination, RelayTask};
use super::types::{Cmd, HttpUrl, RtmpUrl, TaskId, TaskType};
use super::wire::{Command, ForwardRequest, NewRelayTask};
use crate::domain::error::RequestError;
use crate::ports::store::{Condition, Entity, StoreError, Write};

/// The effects of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Tasks to write (created, changed, or refused but with a new event number).
    pub tasks: Vec<RelayTask>,
    /// Callbacks to enqueue, in order.
    pub events: Vec<TaskEvent>,
    /// The refusals, per task id, for logs and tests (the wire answer is still 200: the seed
    /// reports these through callbacks 90/91).
    pub refused: Vec<(TaskId, TransitionError)>,
}

impl Effects {
    /// The store writes: each task under `condition(task)` (the version it was loaded at, or
    /// `Absent` for a new one), each event as a new record.
    pub fn writes(
        &self,
        condition: impl Fn(&RelayTask) -> Condition,
    ) -> Result<Vec<Write>, StoreError> {
        let mut out = Vec::with_capacity(self.tasks.len() + self.events.len());
        for t in &self.tasks {
            out.push(Write::Put(t.to_record()?, condition(t)));
        }
        for e in &self.events {
            out.push(Write::Put(e.to_record()?, Condition::Absent));
        }
        Ok(out)
    }
}

/// The refusals of a whole request that depend on the stored tasks it names: a `cmd=3` whose
/// `type` differs from a task's, whose sources were checked against the wrong scheme list
/// (`type이 잘못되었습니다`). `existing` holds the stored tasks of the ids the request names.
///
/// A handler that writes a request's items one at a time calls this with every named task
/// before writing any of them, so such a request is refused whole, never half-applied.
pub fn check_request(
    req: &ForwardRequest,
    existing: &BTreeMap<TaskId, RelayTask>,
) -> Result<(), RequestError> {
    if let Command::UpdateSources(items) = &req.command {
        if items.iter().any(|it| {
            existing
                .get(&it.id)
                .is_some_and(|t| t.task_type != req.task_type)
        }) {
            return Err(RequestError::BadType);
        }
    }
    Ok(())
}

/// Whether [`check_request`] can refuse `req` at all (only a `cmd=3` can), so a caller may skip
/// loading the named tasks for the others.
pub fn check_request_applies(req: &ForwardRequest) -> bool {
    matches!(req.command, Command::UpdateSources(_))
}

/// Plans `req` for `account` at `now_ms`. `existing` holds the stored tasks of the ids the
/// request names (absent ids are simply missing); `active` is the account's other active tasks,
/// for the "same destination already pushed to" check (91).
///
/// The only refusals of the whole request are those of [`check_request`]. Everything else is
/// accepted and reported per task through callbacks, as the seed does.
pub fn plan(
    account: &str,
    req: &ForwardRequest,
    existing: &BTreeMap<TaskId, RelayTask>,
    active: &[RelayTask],
    now_ms: i64,
) -> Result<Effects, RequestError> {
    check_request(req, existing)?;
    let mut fx = Effects::default();
    match &req.command {
        Command::CreateTasks(items) => {
            // Tasks created earlier in the same request count as active for the later ones.
            let mut seen: Vec<RelayTask> = active.to_vec();
            for new in items {
                let before = fx.tasks.len();
                create(
                    &mut fx,
                    account,
                    req.task_type,
                    req.callback_url.clone(),
                    new,
                    existing.get(&new.id),
                    &seen,
                    now_ms,
                );
                seen.extend(
                    fx.tasks[before..]
                        .iter()
                        .filter(|t| t.id == new.id && t.state.is_active())
                        .cloned(),
                );
            }
        }
        Command::StopTasks(items) => {
            for it in items {
                change(
                    &mut fx,
                    account,
                    Cmd::Stop,
                    req.callback_url.as_ref(),
                    &it.id,
                    existing,
                    Action::Stop {
                        forwards: it.forwards.clone(),
                    },
                    now_ms,
                );
            }
        }
        Command::UpdateSources(items) => {
            for it in items {
                let action = Action::Update {
                    sources: it.sources.clone(),
                    fops: it.fops.clone(),
                    extend: it.extend,
                };
                change(
                    &mut fx,
                    account,
                    Cmd::Update,
                    req.callback_url.as_ref(),
                    &it.id,
                    existing,
                    action,
                    now_ms,
                );
            }
        }
        Command::ResumeTasks(items) => {
            // A resumed destination must not be one another active task pushes to (91), as
            // for a new task; the request's own active tasks, and those it resumes, count too.
            let mut seen: Vec<RelayTask> = active
                .iter()
                .chain(existing.values().filter(|t| t.state.is_active()))
                .cloned()
                .collect();
            for it in items {
                let before = fx.tasks.len();
                let action = Action::Resume {
                    forwards: it.forwards.clone(),
                };
                change_unless_taken(
                    &mut fx,
                    account,
                    req.callback_url.as_ref(),
                    &it.id,
                    existing,
                    action,
                    &seen,
                    now_ms,
                );
                seen.extend(
                    fx.tasks[before..]
                        .iter()
                        .filter(|t| t.state.is_active())
                        .cloned(),
                );
            }
        }
    }
    Ok(fx)
}

/// The sequence number of an event about an id with no stored task (90, or 91 for a refused
/// new task): its outbox key is `{account}:{id}:{seq}`, so two such events of one id must not
/// share it. The request time alone does not do (two requests in one millisecond, a cmd=2 and a
/// cmd=3 of an unknown id, would overwrite each other's callback); the time and the `cmd` do,
/// since two events with both equal have equal payloads.
fn taskless_seq(now_ms: i64, cmd: Cmd) -> u64 {
    let cmd_digit = match cmd {
        Cmd::Create => 1,
        Cmd::Stop => 2,
        Cmd::Update => 3,
        Cmd::Resume => 5,
    };
    (now_ms.max(0) as u64)
        .saturating_mul(10)
        .saturating_add(cmd_digit)
}

#[allow(clippy::too_many_arguments)]
fn create(
    fx: &mut Effects,
    account: &str,
    ty: TaskType,
    callback_url: Option<HttpUrl>,
    new: &NewRelayTask,
    old: Option<&RelayTask>,
    active: &[RelayTask],
    now_ms: i64,
) {
    let mut task = RelayTask::create(account, ty, callback_url, new.clone(), now_ms);
    if let Some(url) = conflicting_destination(new, active) {
        let err = TransitionError::DuplicateForward(url.to_string());
        // Number the refusal after the old task's events, or by time when there is none, so it
        // never collides with a key of the task's own events.
        let mut holder = old.cloned().unwrap_or_else(|| {
            let mut t = task.clone();
            t.next_event_seq = taskless_seq(now_ms, Cmd::Create);
            t
        });
        // The request's transcallbackurl redirects the task's callbacks, as for the other
        // commands; a request without one leaves the old task's in place.
        if task.callback_url.is_some() {
            holder.callback_url = task.callback_url.clone();
        }
        if let Some(ev) = holder.rejection_event(Cmd::Create, &err, now_ms) {
            fx.events.push(ev);
        }
        if old.is_some() {
            fx.tasks.push(holder);
        }
        fx.refused.push((new.id.clone(), err));
        return;
    }
    if let Some(old) = old {
        let mut old = old.clone();
        // Never refused: an ended task has nothing to stop.
        if let Ok(events) = old.apply(Action::Supersede, now_ms) {
            fx.events.extend(events);
        }
        // The new task continues the old one's event numbering: same id, same outbox keys.
        task.next_event_seq = old.next_event_seq;
    }
    fx.tasks.push(task);
}

/// The first active destination of `task` that another active task of `others` pushes to.
fn taken_destination(task: &RelayTask, others: &[RelayTask]) -> Option<RtmpUrl> {
    let others: Vec<&RelayTask> = others
        .iter()
        .filter(|o| o.id != task.id && o.state.is_active())
        .collect();
    task.active_destinations()
        .find(|d| {
            others
                .iter()
                .any(|o| o.active_destinations().any(|od| od.url == d.url))
        })
        .map(|d| d.url.clone())
}

/// [`change`] for `cmd=5`: refused with 91 when the task would push to a destination that
/// another active task of `others` pushes to.
#[allow(clippy::too_many_arguments)]
fn change_unless_taken(
    fx: &mut Effects,
    account: &str,
    callback_url: Option<&HttpUrl>,
    id: &TaskId,
    existing: &BTreeMap<TaskId, RelayTask>,
    action: Action,
    others: &[RelayTask],
    now_ms: i64,
) {
    let conflict = existing.get(id).and_then(|task| {
        let mut attempt = task.clone();
        attempt.apply(action.clone(), now_ms).ok()?;
        taken_destination(&attempt, others)
    });
    let Some(url) = conflict else {
        return change(
            fx,
            account,
            Cmd::Resume,
            callback_url,
            id,
            existing,
            action,
            now_ms,
        );
    };
    let mut task = existing[id].clone();
    if let Some(url) = callback_url {
        task.callback_url = Some(url.clone());
    }
    let err = TransitionError::DuplicateForward(url.to_string());
    if let Some(ev) = task.rejection_event(Cmd::Resume, &err, now_ms) {
        fx.events.push(ev);
        fx.tasks.push(task);
    }
    fx.refused.push((id.clone(), err));
}

#[allow(clippy::too_many_arguments)]
fn change(
    fx: &mut Effects,
    account: &str,
    cmd: Cmd,
    callback_url: Option<&HttpUrl>,
    id: &TaskId,
    existing: &BTreeMap<TaskId, RelayTask>,
    action: Action,
    now_ms: i64,
) {
    let Some(task) = existing.get(id) else {
        fx.events.push(TaskEvent::task_not_exists(
            account,
            id.clone(),
            cmd,
            callback_url.cloned(),
            now_ms,
            taskless_seq(now_ms, cmd),
        ));
        fx.refused.push((id.clone(), TransitionError::NotActive));
        return;
    };
    let mut task = task.clone();
    // A request's transcallbackurl redirects the task's later callbacks too.
    if let Some(url) = callback_url {
        task.callback_url = Some(url.clone());
    }
    let mut attempt = task.clone();
    match attempt.apply(action, now_ms) {
        Ok(events) => {
            fx.events.extend(events);
            fx.tasks.push(attempt);
        }
        Err(err) => {
            if let Some(ev) = task.rejection_event(cmd, &err, now_ms) {
                fx.events.push(ev);
                fx.tasks.push(task);
            }
            fx.refused.push((id.clone(), err));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::relay::events::CallbackCode;
    use crate::domain::relay::state::{StopKind, TaskState};
    use crate::domain::relay::wire::parse_forward_request;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn req(v: serde_json::Value) -> ForwardRequest {
        parse_forward_request(v.to_string().as_bytes()).unwrap()
    }

    fn create_body(id: &str, dest: &str) -> ForwardRequest {
        req(
            json!({"transcallbackurl": "http://cb.example/x", "cmd": "1", "type": "live", "list": [{"id": id, "src": [{"url": "rtmp://s/live/a"}], "forward": [{"url": dest}]}]}),
        )
    }

    fn stored(fx: &Effects) -> BTreeMap<TaskId, RelayTask> {
        fx.tasks.iter().map(|t| (t.id.clone(), t.clone())).collect()
    }

    #[test]
    fn create_writes_a_task_and_no_event() {
        let fx = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        assert_eq!((fx.tasks.len(), fx.events.len()), (1, 0));
        assert_eq!(fx.tasks[0].state, TaskState::Starting);
        assert_eq!(
            fx.tasks[0].callback_url.as_ref().map(HttpUrl::as_str),
            Some("http://cb.example/x")
        );
        let writes = fx.writes(|_| Condition::Absent).unwrap();
        assert_eq!(writes.len(), 1);
    }

    #[test]
    fn resubmitting_stops_the_old_task_and_continues_its_event_numbers() {
        let mut fx = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        fx.tasks[0].started(NOW).unwrap();
        let existing = stored(&fx);
        let fx2 = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/2"),
            &existing,
            &fx.tasks,
            NOW + 1,
        )
        .unwrap();
        assert_eq!(fx2.events.len(), 1);
        assert_eq!(
            (fx2.events[0].code, fx2.events[0].seq),
            (CallbackCode::Finished, 2)
        );
        assert_eq!(fx2.tasks.len(), 1);
        assert_eq!(
            (fx2.tasks[0].state.clone(), fx2.tasks[0].next_event_seq),
            (TaskState::Starting, 3)
        );
        assert_eq!(fx2.tasks[0].forward_urls()[0].as_str(), "rtmp://d/live/2");
        // Old and new events of one id never share a key.
        let mut t = fx2.tasks[0].clone();
        let ev = t.started(NOW + 2).unwrap();
        assert_ne!(ev[0].key(), fx2.events[0].key());
    }

    #[test]
    fn a_destination_used_by_another_active_task_is_refused_with_91() {
        let mut fx = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        fx.tasks[0].started(NOW).unwrap();
        let fx2 = plan(
            "acc",
            &create_body("t2", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &fx.tasks,
            NOW,
        )
        .unwrap();
        assert!(fx2.tasks.is_empty());
        assert_eq!(fx2.events.len(), 1);
        assert_eq!(
            (fx2.events[0].code.code(), fx2.events[0].msg.as_str()),
            (91, "task repeat,task not start!")
        );
        assert_eq!(
            fx2.events[0].callback_url.as_ref().map(HttpUrl::as_str),
            Some("http://cb.example/x")
        );
        assert_eq!(fx2.refused.len(), 1);
    }

    #[test]
    fn a_refused_resubmission_without_a_callback_url_keeps_the_old_tasks() {
        let mut fx = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        fx.tasks[0].started(NOW).unwrap();
        let other = plan(
            "acc",
            &create_body("t2", "rtmp://d/live/2"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap()
        .tasks;
        let resubmit = req(
            json!({"cmd": "1", "type": "live", "list": [{"id": "t1", "src": [{"url": "rtmp://s/live/a"}], "forward": [{"url": "rtmp://d/live/2"}]}]}),
        );
        let fx2 = plan("acc", &resubmit, &stored(&fx), &other, NOW + 1).unwrap();
        assert_eq!(fx2.events[0].code.code(), 91);
        assert_eq!(
            fx2.events[0].callback_url.as_ref().map(HttpUrl::as_str),
            Some("http://cb.example/x")
        );
        assert_eq!(fx2.tasks[0].state, TaskState::Running);
        assert_eq!(
            fx2.tasks[0].callback_url.as_ref().map(HttpUrl::as_str),
            Some("http://cb.example/x"),
            "the running task keeps its callbacks"
        );
    }

    #[test]
    fn two_new_tasks_of_one_request_cannot_share_a_destination() {
        let body = req(json!({"cmd": "1", "type": "live", "list": [
            {"id": "a", "src": [{"url": "rtmp://s/live/a"}], "forward": [{"url": "rtmp://d/live/1"}]},
            {"id": "b", "src": [{"url": "rtmp://s/live/b"}], "forward": [{"url": "rtmp://d/live/1"}]}
        ]}));
        let fx = plan("acc", &body, &BTreeMap::new(), &[], NOW).unwrap();
        assert_eq!(
            fx.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            (
                fx.events.len(),
                fx.events[0].task_id.as_str(),
                fx.events[0].code.code()
            ),
            (1, "b", 91)
        );
    }

    #[test]
    fn resuming_onto_a_destination_another_active_task_uses_is_refused_with_91() {
        let mut fx = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        fx.tasks[0].stop(vec![], NOW).unwrap();
        let stopped = stored(&fx);
        let other = plan(
            "acc",
            &create_body("t2", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap()
        .tasks;
        let resume = req(json!({"cmd": "5", "type": "live", "list": [{"id": "t1"}]}));
        let fx2 = plan("acc", &resume, &stopped, &other, NOW + 1).unwrap();
        assert_eq!(
            (fx2.events[0].code.code(), fx2.events[0].cmd),
            (91, Cmd::Resume)
        );
        assert_eq!(
            fx2.tasks[0].state,
            TaskState::Stopped {
                kind: StopKind::Manual
            }
        );
        assert_eq!(
            fx2.refused[0].1,
            TransitionError::DuplicateForward("rtmp://d/live/1".into())
        );
        // A resetUrl onto it is refused the same way; onto a free one it is accepted.
        let onto = |url: &str| {
            req(
                json!({"cmd": "5", "type": "live", "list": [{"id": "t1", "forward": [{"url": "rtmp://d/live/1", "resetUrl": url}]}]}),
            )
        };
        let mut other2 = other.clone();
        other2[0] = plan(
            "acc",
            &create_body("t2", "rtmp://d/live/2"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap()
        .tasks
        .remove(0);
        assert_eq!(
            plan("acc", &onto("rtmp://d/live/2"), &stopped, &other2, NOW + 1)
                .unwrap()
                .events[0]
                .code
                .code(),
            91
        );
        let ok = plan("acc", &onto("rtmp://d/live/3"), &stopped, &other2, NOW + 1).unwrap();
        assert!(ok.events.is_empty() && ok.refused.is_empty());
        assert_eq!(ok.tasks[0].state, TaskState::Starting);
        // Without a competitor the plain resume goes through.
        assert_eq!(
            plan("acc", &resume, &stopped, &[], NOW + 1).unwrap().tasks[0].state,
            TaskState::Starting
        );
    }

    #[test]
    fn an_update_of_another_type_is_refused() {
        let fx = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        let update = req(
            json!({"cmd": "3", "type": "video", "list": [{"id": "t1", "src": [{"url": "http://s/1.mp4"}]}]}),
        );
        assert_eq!(
            plan("acc", &update, &stored(&fx), &[], NOW),
            Err(RequestError::BadType)
        );
    }

    #[test]
    fn an_update_naming_a_task_of_another_type_is_refused_whole() {
        let live = plan(
            "acc",
            &create_body("l1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        let video = req(
            json!({"cmd": "1", "type": "video", "list": [{"id": "v1", "src": [{"url": "http://s/1.mp4"}], "forward": [{"url": "rtmp://d/live/2"}]}]}),
        );
        let video = plan("acc", &video, &BTreeMap::new(), &[], NOW).unwrap();
        let mut existing = stored(&live);
        existing.extend(stored(&video));
        let update = req(json!({"cmd": "3", "type": "live", "list": [
            {"id": "l1", "src": [{"url": "rtmp://s/live/b"}]},
            {"id": "v1", "src": [{"url": "rtmp://s/live/c"}]}
        ]}));
        assert_eq!(
            check_request(&update, &existing),
            Err(RequestError::BadType)
        );
        // Checked on its own, the first item is fine: only the whole request shows the mismatch.
        let first_only = req(
            json!({"cmd": "3", "type": "live", "list": [{"id": "l1", "src": [{"url": "rtmp://s/live/b"}]}]}),
        );
        assert_eq!(check_request(&first_only, &existing), Ok(()));
        // Unknown ids and other commands are not refused here (90 through callbacks).
        let unknown = req(
            json!({"cmd": "3", "type": "video", "list": [{"id": "nope", "src": [{"url": "http://s/2.mp4"}]}]}),
        );
        assert_eq!(check_request(&unknown, &existing), Ok(()));
        let stop = req(json!({"cmd": "2", "type": "live", "list": [{"id": "l1"}, {"id": "v1"}]}));
        assert_eq!(check_request(&stop, &existing), Ok(()));
    }

    #[test]
    fn commands_on_missing_tasks_call_back_90() {
        let fx = plan("acc", &req(json!({"transcallbackurl": "http://cb.example/x", "cmd": "2", "type": "live", "list": [{"id": "nope"}]})), &BTreeMap::new(), &[], NOW).unwrap();
        assert!(fx.tasks.is_empty());
        assert_eq!(
            (
                fx.events[0].code.code(),
                fx.events[0].cmd,
                fx.events[0].task_id.as_str()
            ),
            (90, Cmd::Stop, "nope")
        );
    }

    #[test]
    fn refusals_of_an_unknown_id_in_one_millisecond_have_distinct_keys() {
        let cmd = |c: &str| {
            req(
                json!({"cmd": c, "type": "live", "list": [{"id": "nope", "src": [{"url": "rtmp://s/live/a"}], "forward": [{"url": "rtmp://d/live/1"}]}]}),
            )
        };
        let keys: Vec<String> = ["2", "3", "5"]
            .iter()
            .map(|c| {
                plan("acc", &cmd(c), &BTreeMap::new(), &[], NOW)
                    .unwrap()
                    .events[0]
                    .key()
            })
            .collect();
        assert!(
            keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2],
            "{keys:?}"
        );
        // A refused new task (91) too.
        let mut fx = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        fx.tasks[0].started(NOW).unwrap();
        let refused = plan(
            "acc",
            &create_body("nope", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &fx.tasks,
            NOW,
        )
        .unwrap();
        assert_eq!(refused.events[0].code.code(), 91);
        assert!(!keys.contains(&refused.events[0].key()));
    }

    #[test]
    fn stop_update_resume_go_through_the_state_machine() {
        let mut fx = plan(
            "acc",
            &create_body("t1", "rtmp://d/live/1"),
            &BTreeMap::new(),
            &[],
            NOW,
        )
        .unwrap();
        fx.tasks[0].started(NOW).unwrap();
        let update = req(
            json!({"cmd": "3", "type": "live", "list": [{"id": "t1", "src": [{"url": "rtmp://s/live/b"}]}]}),
        );
        let fx = plan("acc", &update, &stored(&fx), &[], NOW).unwrap();
        assert_eq!(
            (fx.events[0].code, fx.tasks[0].sources_revision),
            (CallbackCode::ListUpdated, 1)
        );
        let stop = req(
            json!({"transcallbackurl": "https://new.example/cb", "cmd": "2", "type": "live", "list": [{"id": "t1"}]}),
        );
        let fx = plan("acc", &stop, &stored(&fx), &[], NOW).unwrap();
        assert_eq!(
            fx.tasks[0].state,
            TaskState::Stopped {
                kind: StopKind::Manual
            }
        );
        assert_eq!(
            fx.events[0].callback_url.as_ref().map(HttpUrl::as_str),
            Some("https://new.example/cb")
        );
        // Updating a stopped task is refused with 90; the task is rewritten only for its event number.
        let fx2 = plan("acc", &update, &stored(&fx), &[], NOW).unwrap();
        assert_eq!(
            (fx2.events[0].code.code(), fx2.refused[0].1.clone()),
            (90, TransitionError::NotActive)
        );
        assert_eq!(
            fx2.tasks[0].state,
            TaskState::Stopped {
                kind: StopKind::Manual
            }
        );
        let resume = req(
            json!({"cmd": "5", "type": "live", "list": [{"id": "t1", "forward": [{"url": "rtmp://d/live/1", "resetUrl": "rtmp://d/live/9"}]}]}),
        );
        let fx3 = plan("acc", &resume, &stored(&fx2), &[], NOW + 1000).unwrap();
        assert!(fx3.events.is_empty());
        assert_eq!(
            (
                fx3.tasks[0].state.clone(),
                fx3.tasks[0].forward_urls()[0].as_str()
            ),
            (TaskState::Starting, "rtmp://d/live/9")
        );
    }
}
