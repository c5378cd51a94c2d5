//! One test per transition, the illegal ones included.

use super::*;
use crate::domain::relay::events::QueryItem;
use crate::domain::relay::events::TimeFormat;
use crate::domain::relay::task::{conflicting_destination, RelayTask};
use crate::domain::relay::types::{RelOffTime, SourceUrl, TaskId};
use crate::domain::relay::wire::NewRelayTask;
use crate::ports::store::Entity;

const NOW: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn dest(n: u32) -> RtmpUrl {
    RtmpUrl::parse(&format!("rtmp://127.0.0.1:1935/live/output{n}")).unwrap()
}

fn new_task(
    ty: TaskType,
    srcs: usize,
    dests: u32,
    start: Option<i64>,
    end: Option<i64>,
) -> NewRelayTask {
    let scheme = if ty == TaskType::Live { "rtmp" } else { "http" };
    NewRelayTask {
        id: TaskId::parse("t1").unwrap(),
        sources: (0..srcs)
            .map(|i| {
                Source::new(SourceUrl::parse(&format!("{scheme}://src.example/{i}"), ty).unwrap())
            })
            .collect(),
        forwards: (1..=dests).map(dest).collect(),
        start_ms: start,
        end_ms: end,
        fops: Fops::default(),
        extend: ExtendParam::default(),
    }
}

/// A live task with two destinations, created now (so `Starting`).
fn starting() -> RelayTask {
    RelayTask::create(
        "acc",
        TaskType::Live,
        None,
        new_task(TaskType::Live, 1, 2, None, None),
        NOW,
    )
}

fn running() -> RelayTask {
    let mut t = starting();
    t.started(NOW).unwrap();
    t
}

fn scheduled() -> RelayTask {
    RelayTask::create(
        "acc",
        TaskType::Live,
        None,
        new_task(TaskType::Live, 1, 2, Some(NOW + HOUR), Some(NOW + 2 * HOUR)),
        NOW,
    )
}

fn stopped(kind: StopKind) -> RelayTask {
    let mut t = running();
    match kind {
        StopKind::Manual => t.stop(vec![], NOW).unwrap(),
        StopKind::Natural => t.finished(StopCause::LoopsDone, NOW).unwrap(),
        StopKind::Failed => t
            .apply(Action::SourceFailed { reason: "x".into() }, NOW)
            .unwrap(),
    };
    t
}

/// Applies an action that must be refused, and checks that nothing changed.
fn refused(t: &RelayTask, a: Action, now: i64) -> TransitionError {
    let mut c = t.clone();
    let err = c.apply(a, now).expect_err("should be refused");
    assert_eq!(&c, t, "a refused transition must not change the task");
    err
}

fn one(events: Vec<TaskEvent>) -> TaskEvent {
    assert_eq!(events.len(), 1, "{events:?}");
    events.into_iter().next().unwrap()
}

#[test]
fn create_schedules_a_future_start_and_starts_otherwise() {
    assert_eq!(scheduled().state, TaskState::Scheduled);
    assert_eq!(starting().state, TaskState::Starting);
    let past = RelayTask::create(
        "acc",
        TaskType::Live,
        None,
        new_task(TaskType::Live, 1, 1, Some(NOW - HOUR), None),
        NOW,
    );
    assert_eq!(past.state, TaskState::Starting);
    assert!(starting()
        .destinations
        .iter()
        .all(|d| d.state == DestState::Pending));
}

#[test]
fn due_starts_a_scheduled_task_only_once_its_start_is_reached() {
    let mut t = scheduled();
    assert!(matches!(
        refused(&t, Action::Due, NOW),
        TransitionError::Illegal { .. }
    ));
    assert_eq!(t.apply(Action::Due, NOW + HOUR).unwrap(), vec![]);
    assert_eq!(t.state, TaskState::Starting);
    assert!(matches!(
        refused(&running(), Action::Due, NOW),
        TransitionError::Illegal {
            state: "running",
            ..
        }
    ));
}

#[test]
fn delivery_failure_fails_the_task_with_92() {
    let mut t = starting();
    let ev = one(t.apply(Action::DeliveryFailed, NOW).unwrap());
    assert_eq!(
        (ev.code.code(), ev.msg.as_str()),
        (92, "task start delivery failed!")
    );
    assert_eq!(
        t.state,
        TaskState::Stopped {
            kind: StopKind::Failed
        }
    );
    assert!(matches!(
        refused(&running(), Action::DeliveryFailed, NOW),
        TransitionError::Illegal { .. }
    ));
}

#[test]
fn started_emits_0_once() {
    let mut t = starting();
    let ev = one(t.started(NOW + 5).unwrap());
    assert_eq!(
        (ev.code.code(), ev.msg.as_str(), ev.seq),
        (0, "푸시 시작!", 1)
    );
    assert_eq!(
        ev.forwardurl,
        r#"[{"url":"rtmp://127.0.0.1:1935/live/output1"},{"url":"rtmp://127.0.0.1:1935/live/output2"}]"#
    );
    assert_eq!(
        (t.state.clone(), t.started_ms, t.last_code),
        (
            TaskState::Running,
            Some(NOW + 5),
            Some(CallbackCode::Started)
        )
    );
    assert!(matches!(
        refused(&t, Action::Started, NOW),
        TransitionError::Illegal { .. }
    ));
    assert!(matches!(
        refused(&scheduled(), Action::Started, NOW),
        TransitionError::Illegal { .. }
    ));
}

#[test]
fn a_source_failover_is_transient_and_silent() {
    let mut t = running();
    assert_eq!(
        t.apply(
            Action::SourceInterrupted {
                reason: "primary timed out".into()
            },
            NOW
        )
        .unwrap(),
        vec![]
    );
    assert_eq!(t.state.key(), "retrying");
    assert!(t.state.is_active());
    assert_eq!(t.state.console_status(), ConsoleStatus::ValidInactive);
    assert_eq!(
        t.apply(
            Action::SourceInterrupted {
                reason: "backup too".into()
            },
            NOW
        )
        .unwrap(),
        vec![]
    );
    assert_eq!(t.apply(Action::SourceRecovered, NOW).unwrap(), vec![]);
    assert_eq!(t.state, TaskState::Running);
    assert!(matches!(
        refused(&t, Action::SourceRecovered, NOW),
        TransitionError::Illegal { .. }
    ));
    assert!(matches!(
        refused(
            &starting(),
            Action::SourceInterrupted { reason: "x".into() },
            NOW
        ),
        TransitionError::Illegal { .. }
    ));
}

#[test]
fn a_source_failure_ends_the_task_with_2() {
    for mut t in [starting(), running()] {
        let ev = one(t
            .apply(
                Action::SourceFailed {
                    reason: "connection refused".into(),
                },
                NOW,
            )
            .unwrap());
        assert_eq!(
            (ev.code.code(), ev.msg.as_str()),
            (2, "live_pull 실패:connection refused")
        );
        assert_eq!(
            t.state,
            TaskState::Stopped {
                kind: StopKind::Failed
            }
        );
        assert_eq!(t.stopped_at_ms, Some(NOW));
    }
    assert!(matches!(
        refused(
            &scheduled(),
            Action::SourceFailed { reason: "x".into() },
            NOW
        ),
        TransitionError::Illegal { .. }
    ));
    assert!(matches!(
        refused(
            &stopped(StopKind::Manual),
            Action::SourceFailed { reason: "x".into() },
            NOW
        ),
        TransitionError::Illegal { .. }
    ));
}

#[test]
fn destinations_fail_independently_with_3() {
    let mut t = running();
    t.apply(Action::PushConnected { url: dest(1) }, NOW)
        .unwrap();
    t.apply(Action::PushReconnecting { url: dest(1) }, NOW)
        .unwrap();
    t.apply(Action::PushReconnecting { url: dest(1) }, NOW)
        .unwrap();
    assert_eq!(
        t.destinations[0].state,
        DestState::Reconnecting { attempt: 2 }
    );
    let ev = one(t
        .apply(
            Action::PushFailed {
                url: dest(1),
                reason: "refused".into(),
            },
            NOW,
        )
        .unwrap());
    assert_eq!(
        (ev.code.code(), ev.msg.as_str(), ev.forwardurl.as_str()),
        (3, "푸시 스트림 실패!", "rtmp://127.0.0.1:1935/live/output1")
    );
    assert_eq!(t.state, TaskState::Running, "the other destination goes on");
    assert!(matches!(
        refused(&t, Action::PushConnected { url: dest(1) }, NOW),
        TransitionError::Illegal { .. }
    ));
    assert_eq!(
        refused(
            &t,
            Action::PushFailed {
                url: dest(9),
                reason: "x".into()
            },
            NOW
        ),
        TransitionError::UnknownForward(dest(9).to_string())
    );
    one(t
        .apply(
            Action::PushFailed {
                url: dest(2),
                reason: "x".into(),
            },
            NOW,
        )
        .unwrap());
    assert_eq!(
        t.state,
        TaskState::Stopped {
            kind: StopKind::Failed
        },
        "the last destination failing fails the task"
    );
    assert!(matches!(
        refused(&scheduled(), Action::PushConnected { url: dest(1) }, NOW),
        TransitionError::Illegal { .. }
    ));
}

#[test]
fn playlist_items_warn_with_4_and_advance_with_5() {
    let mut t = running();
    let ev = one(t
        .apply(
            Action::ItemWarning {
                file: "a.mp4".into(),
                detail: "서버에서 404 반환".into(),
            },
            NOW,
        )
        .unwrap());
    assert_eq!(
        (ev.code.code(), ev.msg.as_str()),
        (4, "a.mp4: 서버에서 404 반환")
    );
    let pos = PlaybackPosition {
        index: 1,
        loops_done: 0,
        offset_ms: 0,
    };
    let ev = one(t
        .apply(Action::ItemAdvanced { position: pos }, NOW)
        .unwrap());
    assert_eq!(
        (ev.code.code(), ev.msg.as_str(), t.position),
        (5, "리스트 업데이트 성공", pos)
    );
    assert_eq!(t.state, TaskState::Running);
    assert!(matches!(
        refused(
            &stopped(StopKind::Natural),
            Action::ItemWarning {
                file: "a".into(),
                detail: "b".into()
            },
            NOW
        ),
        TransitionError::Illegal { .. }
    ));
    assert!(matches!(
        refused(
            &scheduled(),
            Action::ItemWarning {
                file: "a".into(),
                detail: "b".into()
            },
            NOW
        ),
        TransitionError::Illegal { .. }
    ));
}

/// A playlist whose first item is a 404: the worker reports it before any destination
/// publishes, so before the task runs. The warning (4) is not lost, the task stays starting,
/// and the item that plays instead becomes the position without a 5 (the 0 reports it).
#[test]
fn a_404_on_the_first_item_warns_with_4_before_the_task_runs() {
    let mut t = starting();
    let ev = one(t
        .apply(
            Action::ItemWarning {
                file: "http://h/a.mp4".into(),
                detail: "서버에서 404 반환".into(),
            },
            NOW,
        )
        .unwrap());
    assert_eq!(
        (ev.code.code(), ev.msg.as_str()),
        (4, "http://h/a.mp4: 서버에서 404 반환")
    );
    assert_eq!(t.state, TaskState::Starting);
    let pos = PlaybackPosition {
        index: 1,
        loops_done: 0,
        offset_ms: 0,
    };
    assert!(t
        .apply(Action::ItemAdvanced { position: pos }, NOW)
        .unwrap()
        .is_empty());
    assert_eq!((t.position, t.state.clone()), (pos, TaskState::Starting));
    let ev = one(t.started(NOW).unwrap());
    assert_eq!(ev.code.code(), 0);
    assert_eq!(t.position, pos);
}

#[test]
fn a_natural_end_emits_1() {
    let mut t = running();
    let ev = one(t.finished(StopCause::EndTime, NOW + HOUR).unwrap());
    assert_eq!((ev.code.code(), ev.msg.as_str()), (1, "푸시 스트림 성공"));
    assert_eq!(
        (t.state.clone(), t.ended_ms),
        (
            TaskState::Stopped {
                kind: StopKind::Natural
            },
            Some(NOW + HOUR)
        )
    );
    assert!(matches!(
        refused(
            &scheduled(),
            Action::Finished {
                cause: StopCause::EndTime
            },
            NOW
        ),
        TransitionError::Illegal { .. }
    ));
    assert!(matches!(
        refused(
            &t,
            Action::Finished {
                cause: StopCause::EndTime
            },
            NOW
        ),
        TransitionError::Illegal { .. }
    ));
}

#[test]
fn stop_all_destinations_stops_the_task() {
    let mut t = running();
    let ev = one(t.stop(vec![], NOW).unwrap());
    assert_eq!((ev.code.code(), ev.cmd), (1, Cmd::Stop));
    assert_eq!(
        t.state,
        TaskState::Stopped {
            kind: StopKind::Manual
        }
    );
    assert_eq!(t.last_cmd, Cmd::Stop);
    // Stopping it again: the task no longer runs (90).
    let err = refused(&t, Action::Stop { forwards: vec![] }, NOW);
    assert_eq!(
        (err.clone(), err.callback_code()),
        (
            TransitionError::NotActive,
            Some(CallbackCode::TaskNotExists)
        )
    );
    // A scheduled task can be cancelled.
    let mut s = scheduled();
    one(s.stop(vec![dest(1), dest(2)], NOW).unwrap());
    assert_eq!(
        s.state,
        TaskState::Stopped {
            kind: StopKind::Manual
        }
    );
}

#[test]
fn stop_a_subset_of_destinations() {
    let mut t = running();
    let ev = one(t.stop(vec![dest(2)], NOW).unwrap());
    assert_eq!(ev.forwardurl, "rtmp://127.0.0.1:1935/live/output2");
    assert_eq!(t.state, TaskState::Running);
    assert_eq!(
        t.destinations[1].state,
        DestState::Stopped {
            kind: StopKind::Manual
        }
    );
    assert_eq!(t.active_destinations().count(), 1);
    let err = refused(
        &t,
        Action::Stop {
            forwards: vec![dest(7)],
        },
        NOW,
    );
    assert_eq!(
        (err.clone(), err.callback_code()),
        (
            TransitionError::UnknownForward(dest(7).to_string()),
            Some(CallbackCode::TaskNotExists)
        )
    );
    one(t.stop(vec![dest(1)], NOW).unwrap());
    assert_eq!(
        t.state,
        TaskState::Stopped {
            kind: StopKind::Manual
        },
        "all destinations stopped: the task is"
    );
}

#[test]
fn update_replaces_sources_of_a_started_task_with_5() {
    let mut t = running();
    let sources = vec![Source::new(
        SourceUrl::parse("rtmp://new.example/live/s", TaskType::Live).unwrap(),
    )];
    let ev = one(t
        .apply(
            Action::Update {
                sources: sources.clone(),
                fops: Fops::default(),
                extend: ExtendParam::default(),
            },
            NOW,
        )
        .unwrap());
    assert_eq!(
        (ev.code.code(), ev.msg.as_str(), ev.cmd),
        (5, "리스트 업데이트 성공", Cmd::Update)
    );
    assert_eq!(ev.srcurl, r#"[{"url":"rtmp://new.example/live/s"}]"#);
    assert_eq!(
        (t.sources.clone(), t.sources_revision, t.state.clone()),
        (sources.clone(), 1, TaskState::Running)
    );
    let upd = Action::Update {
        sources,
        fops: Fops::default(),
        extend: ExtendParam::default(),
    };
    let err = refused(&scheduled(), upd.clone(), NOW);
    assert_eq!(
        (err.clone(), err.callback_code()),
        (TransitionError::NotStarted, Some(CallbackCode::TaskRepeat))
    );
    assert_eq!(
        refused(&stopped(StopKind::Manual), upd, NOW),
        TransitionError::NotActive
    );
}

fn video_running() -> RelayTask {
    let mut n = new_task(TaskType::Video, 3, 1, None, None);
    n.extend.loop_count = LoopCount::Times(2);
    let mut t = RelayTask::create("acc", TaskType::Video, None, n, NOW);
    t.started(NOW).unwrap();
    t
}

#[test]
fn resume_after_a_manual_stop_continues_where_it_stopped() {
    let mut t = video_running();
    let pos = PlaybackPosition {
        index: 2,
        loops_done: 1,
        offset_ms: 42_000,
    };
    t.apply(Action::ItemAdvanced { position: pos }, NOW)
        .unwrap();
    t.stop(vec![], NOW).unwrap();
    assert_eq!(t.resume(vec![], NOW + 47 * HOUR).unwrap(), vec![]);
    assert_eq!(
        (t.state.clone(), t.position, t.last_cmd),
        (TaskState::Starting, pos, Cmd::Resume)
    );
    assert!(t.destinations.iter().all(|d| d.state == DestState::Pending));
    assert_eq!(
        (t.stopped_at_ms, t.ended_ms, t.started_ms),
        (None, None, None)
    );
}

#[test]
fn resume_after_a_natural_stop_restarts_from_the_first_file() {
    let mut t = video_running();
    t.apply(
        Action::ItemAdvanced {
            position: PlaybackPosition {
                index: 2,
                loops_done: 1,
                offset_ms: 5,
            },
        },
        NOW,
    )
    .unwrap();
    t.finished(StopCause::LoopsDone, NOW).unwrap();
    t.resume(vec![], NOW + HOUR).unwrap();
    assert_eq!(t.position, PlaybackPosition::default());
}

#[test]
fn resume_only_within_48_hours() {
    let t = stopped(StopKind::Manual);
    let err = refused(&t, Action::Resume { forwards: vec![] }, NOW + 48 * HOUR + 1);
    assert_eq!(
        (err.clone(), err.callback_code()),
        (
            TransitionError::ResumeWindowPassed,
            Some(CallbackCode::TaskNotExists)
        )
    );
    assert!(t.clone().resume(vec![], NOW + 48 * HOUR).is_ok());
    // A failed task resumes too.
    assert!(stopped(StopKind::Failed).resume(vec![], NOW + HOUR).is_ok());
    let mut e = t.clone();
    e.apply(Action::Expire, NOW + 49 * HOUR).unwrap();
    assert_eq!(
        refused(&e, Action::Resume { forwards: vec![] }, NOW + 49 * HOUR),
        TransitionError::ResumeWindowPassed
    );
}

#[test]
fn resume_refuses_a_task_whose_end_passed_and_reschedules_a_future_start() {
    let mut s = scheduled();
    s.stop(vec![], NOW).unwrap();
    assert_eq!(
        refused(&s, Action::Resume { forwards: vec![] }, NOW + 2 * HOUR),
        TransitionError::EndPassed
    );
    s.resume(vec![], NOW + 1).unwrap();
    assert_eq!(s.state, TaskState::Scheduled);
}

#[test]
fn reset_url_replaces_a_destination_on_resume() {
    let mut t = stopped(StopKind::Manual);
    t.resume(vec![(dest(1), Some(dest(5))), (dest(2), None)], NOW)
        .unwrap();
    assert_eq!(t.forward_urls(), vec![dest(5), dest(2)]);
    let t = stopped(StopKind::Manual);
    assert_eq!(
        refused(
            &t,
            Action::Resume {
                forwards: vec![(dest(9), None)]
            },
            NOW
        ),
        TransitionError::UnknownForward(dest(9).to_string())
    );
    let err = refused(
        &t,
        Action::Resume {
            forwards: vec![(dest(1), Some(dest(2)))],
        },
        NOW,
    );
    assert_eq!(
        (err.clone(), err.callback_code()),
        (
            TransitionError::DuplicateForward(dest(2).to_string()),
            Some(CallbackCode::TaskRepeat)
        )
    );
}

#[test]
fn resume_while_running_restarts_only_stopped_destinations() {
    let t = running();
    let err = refused(&t, Action::Resume { forwards: vec![] }, NOW);
    assert_eq!(
        (err.clone(), err.callback_code()),
        (
            TransitionError::AlreadyActive,
            Some(CallbackCode::TaskRepeat)
        )
    );
    let mut t = running();
    t.stop(vec![dest(2)], NOW).unwrap();
    assert_eq!(
        refused(
            &t,
            Action::Resume {
                forwards: vec![(dest(1), Some(dest(6)))]
            },
            NOW
        ),
        TransitionError::AlreadyActive
    );
    t.resume(vec![(dest(2), Some(dest(3)))], NOW).unwrap();
    assert_eq!(t.forward_urls(), vec![dest(1), dest(3)]);
    assert_eq!(t.destinations[1].state, DestState::Pending);
    assert_eq!(t.state, TaskState::Running);
}

#[test]
fn resubmitting_an_id_stops_the_old_task_first() {
    let mut t = running();
    let ev = one(t.apply(Action::Supersede, NOW).unwrap());
    assert_eq!(
        (ev.code.code(), t.state.clone()),
        (
            1,
            TaskState::Stopped {
                kind: StopKind::Manual
            }
        )
    );
    assert_eq!(
        t.apply(Action::Supersede, NOW).unwrap(),
        vec![],
        "an ended task has nothing to stop"
    );
    let mut s = scheduled();
    one(s.apply(Action::Supersede, NOW).unwrap());
}

#[test]
fn expiry_closes_the_resume_window_and_unstarted_windows() {
    let mut t = stopped(StopKind::Natural);
    assert!(matches!(
        refused(&t, Action::Expire, NOW + HOUR),
        TransitionError::Illegal { .. }
    ));
    assert_eq!(
        t.apply(Action::Expire, NOW + 48 * HOUR + 1).unwrap(),
        vec![]
    );
    assert_eq!(
        (t.state.key(), t.state.console_status()),
        ("expired", ConsoleStatus::Expired)
    );
    assert!(matches!(
        refused(&t, Action::Expire, NOW + 100 * HOUR),
        TransitionError::Illegal { .. }
    ));
    let mut s = scheduled();
    assert!(matches!(
        refused(&s, Action::Expire, NOW + HOUR),
        TransitionError::Illegal { .. }
    ));
    s.apply(Action::Expire, NOW + 2 * HOUR).unwrap();
    assert_eq!(s.state, TaskState::Expired);
    assert!(matches!(
        refused(&running(), Action::Expire, NOW + 100 * HOUR),
        TransitionError::Illegal { .. }
    ));
    assert_eq!(
        refused(&s, Action::Stop { forwards: vec![] }, NOW),
        TransitionError::NotActive
    );
}

#[test]
fn rejections_become_90_or_91_callbacks_without_changing_the_query_state() {
    let mut t = running();
    let ev = t
        .rejection_event(Cmd::Resume, &TransitionError::AlreadyActive, NOW)
        .unwrap();
    assert_eq!(
        (ev.code.code(), ev.msg.as_str(), ev.cmd, ev.seq),
        (91, "task repeat,task not start!", Cmd::Resume, 2)
    );
    assert_eq!(
        (t.last_code, t.last_cmd, t.next_event_seq),
        (Some(CallbackCode::Started), Cmd::Create, 3)
    );
    let ev = t
        .rejection_event(Cmd::Stop, &TransitionError::UnknownForward("x".into()), NOW)
        .unwrap();
    assert_eq!((ev.code.code(), ev.msg.as_str()), (90, "task not exists"));
    assert!(t
        .rejection_event(
            Cmd::Stop,
            &TransitionError::Illegal {
                state: "running",
                action: "due"
            },
            NOW
        )
        .is_none());
}

#[test]
fn events_of_a_task_are_numbered_in_order() {
    let mut t = running();
    t.stop(vec![dest(1)], NOW).unwrap();
    let ev = one(t.stop(vec![dest(2)], NOW).unwrap());
    assert_eq!(ev.seq, 3);
    assert_eq!(ev.key(), "acc:t1:00000000000000000003");
}

#[test]
fn console_status_is_derived_from_the_state() {
    assert_eq!(
        scheduled().state.console_status(),
        ConsoleStatus::NotStarted
    );
    assert_eq!(
        starting().state.console_status(),
        ConsoleStatus::ValidInactive
    );
    assert_eq!(running().state.console_status(), ConsoleStatus::ValidActive);
    assert_eq!(
        stopped(StopKind::Manual).state.console_status(),
        ConsoleStatus::Disabled
    );
    assert_eq!(
        stopped(StopKind::Natural).state.console_status(),
        ConsoleStatus::Expired
    );
    assert_eq!(
        stopped(StopKind::Failed).state.console_status(),
        ConsoleStatus::ValidInactive
    );
}

#[test]
fn end_wins_over_loop_which_wins_over_relofftime() {
    let mut t = video_running();
    t.end_ms = Some(NOW + HOUR);
    t.sources[2].relofftime = Some(RelOffTime {
        start_s: 10,
        end_s: 20,
    });
    let at = |index, loops_done, offset_ms| PlaybackPosition {
        index,
        loops_done,
        offset_ms,
    };
    // end reached: stop, whatever the playlist says.
    assert_eq!(
        t.decide(NOW + HOUR, &at(0, 0, 0), false, 0),
        Decision::Stop(StopCause::EndTime)
    );
    assert_eq!(
        t.decide(NOW + HOUR, &at(2, 1, 20_000), true, 0),
        Decision::Stop(StopCause::EndTime)
    );
    // Mid-item: go on.
    assert_eq!(t.decide(NOW, &at(0, 0, 5), false, 0), Decision::Continue);
    // Item ended: next item; the next one starts at its relofftime start.
    assert_eq!(
        t.decide(NOW, &at(1, 0, 5), true, 0),
        Decision::NextItem(at(2, 0, 10_000))
    );
    // relofftime ends the last item; the loop count decides what follows.
    assert_eq!(
        t.decide(NOW, &at(2, 0, 19_999), false, 0),
        Decision::Continue
    );
    assert_eq!(
        t.decide(NOW, &at(2, 0, 20_000), false, 0),
        Decision::NextItem(at(0, 1, 0))
    );
    assert_eq!(
        t.decide(NOW, &at(2, 1, 20_000), false, 0),
        Decision::Stop(StopCause::LoopsDone)
    );
    t.extend.loop_count = LoopCount::Forever;
    assert_eq!(
        t.decide(NOW, &at(2, 99, 0), true, 0),
        Decision::NextItem(at(0, 100, 0))
    );
    // Live: relofftime 0-N relays N seconds, unless end comes first.
    let mut l = running();
    l.sources[0].relofftime = Some(RelOffTime {
        start_s: 0,
        end_s: 60,
    });
    assert_eq!(
        l.decide(NOW, &PlaybackPosition::default(), false, 59_999),
        Decision::Continue
    );
    assert_eq!(
        l.decide(NOW, &PlaybackPosition::default(), false, 60_000),
        Decision::Stop(StopCause::RelOffTime)
    );
    l.end_ms = Some(NOW);
    assert_eq!(
        l.decide(NOW, &PlaybackPosition::default(), false, 60_000),
        Decision::Stop(StopCause::EndTime)
    );
}

#[test]
fn the_start_index_picks_the_first_item() {
    let mut n = new_task(TaskType::Video, 3, 1, None, None);
    n.extend.start_index = Some(2);
    let t = RelayTask::create("acc", TaskType::Video, None, n, NOW);
    assert_eq!(t.position.index, 1);
}

#[test]
fn the_task_is_an_entity_indexed_by_account_status_and_time() {
    let t = scheduled();
    let rec = t.to_record().unwrap();
    assert_eq!(
        (rec.kind.as_str(), rec.key.as_str()),
        ("relay_task", "acc:t1")
    );
    assert_eq!(rec.index.account.as_deref(), Some("acc"));
    assert_eq!(rec.index.status.as_deref(), Some("scheduled"));
    assert_eq!(rec.index.time_ms, Some(NOW + HOUR));
    assert_eq!(starting().index().time_ms, Some(NOW));
    let back = RelayTask::from_record(running().to_record().unwrap())
        .unwrap()
        .value;
    assert_eq!(back, running());
}

#[test]
fn a_destination_active_in_another_task_conflicts() {
    let other = running(); // id t1, output1 + output2
    let mut n = new_task(TaskType::Live, 1, 1, None, None);
    assert_eq!(
        conflicting_destination(&n, [&other]),
        None,
        "same id: it will be superseded"
    );
    n.id = TaskId::parse("t2").unwrap();
    assert_eq!(conflicting_destination(&n, [&other]), Some(dest(1)));
    assert_eq!(
        conflicting_destination(&n, [&stopped(StopKind::Manual)]),
        None
    );
    n.forwards = vec![dest(4)];
    assert_eq!(conflicting_destination(&n, [&other]), None);
}

#[test]
fn the_query_item_shows_the_last_event_and_times() {
    let mut t = running();
    let item = QueryItem::from_task(&t, &TimeFormat::default());
    assert_eq!(
        (
            item.cmd.as_str(),
            item.code.as_str(),
            item.msg.as_str(),
            item.end_time.as_str()
        ),
        ("1", "0", "푸시 시작!", "")
    );
    assert_eq!(item.start_time, "2023-11-15 06:13:20");
    t.stop(vec![], NOW + HOUR).unwrap();
    let item = QueryItem::from_task(&t, &TimeFormat::default());
    assert_eq!(
        (
            item.cmd.as_str(),
            item.code.as_str(),
            item.end_time.as_str()
        ),
        ("2", "1", "2023-11-15 07:13:20")
    );
    assert_eq!(item.src, r#"[{"url":"rtmp://src.example/0"}]"#);
    let v = serde_json::to_value(&item).unwrap();
    for k in [
        "id",
        "type",
        "src",
        "forward",
        "cmd",
        "code",
        "msg",
        "startTime",
        "endTime",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
}

#[test]
fn the_query_item_carries_the_workers_report_while_the_task_runs() {
    use crate::domain::relay::task::{ForwardStats, RunStats};
    let mut t = running();
    // Nothing reported yet: the seed's fields only.
    let v = serde_json::to_value(QueryItem::from_task(&t, &TimeFormat::default())).unwrap();
    assert!(v.get("relay").is_none(), "{v}");
    t.stats = RunStats {
        bitrate_bps: Some(1_650_500),
        fps: Some(25.0),
        position_ms: Some(12_345),
        reported_at_ms: Some(NOW),
        current_source: Some(1),
        forwards: vec![
            ForwardStats {
                url: dest(1).to_string(),
                state: "publishing".into(),
                reconnects: 0,
            },
            ForwardStats {
                url: dest(2).to_string(),
                state: "backoff".into(),
                reconnects: 3,
            },
        ],
    };
    let v = serde_json::to_value(QueryItem::from_task(&t, &TimeFormat::default())).unwrap();
    assert_eq!(
        v["relay"],
        serde_json::json!({
            "state": "running",
            "currentSrc": 1,
            "bitrateKbps": 1650.5,
            "fps": 25.0,
            "positionMs": 12345,
            "forward": [
                {"url": dest(1).to_string(), "state": "publishing", "reconnects": 0},
                {"url": dest(2).to_string(), "state": "backoff", "reconnects": 3},
            ]
        })
    );
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cmd",
            "code",
            "endTime",
            "forward",
            "id",
            "msg",
            "relay",
            "src",
            "startTime",
            "type"
        ]
    );
    // A destination stopped by cmd=2 shows as stopped; the task state follows.
    t.stop(vec![dest(2)], NOW).unwrap();
    t.apply(Action::SourceInterrupted { reason: "x".into() }, NOW)
        .unwrap();
    let item = QueryItem::from_task(&t, &TimeFormat::default());
    let relay = item.relay.expect("still running");
    assert_eq!(
        (
            relay.state.as_str(),
            relay.forward[1].state.as_str(),
            relay.forward[1].reconnects
        ),
        ("retrying", "stopped", 3)
    );
    // Once the task ends, the report is gone from the answer, and a resumed run starts clean.
    t.stop(vec![], NOW).unwrap();
    assert_eq!(QueryItem::from_task(&t, &TimeFormat::default()).relay, None);
    t.resume(vec![], NOW + MIN).unwrap();
    assert_eq!(
        (
            t.stats.clone(),
            QueryItem::from_task(&t, &TimeFormat::default()).relay
        ),
        (RunStats::default(), None)
    );
}

#[test]
fn the_query_item_shows_the_destinations_still_pushed_to() {
    let mut t = running();
    t.stop(vec![dest(1)], NOW + MIN).unwrap();
    let item = QueryItem::from_task(&t, &TimeFormat::default());
    assert_eq!(
        (item.forward.as_str(), item.end_time.as_str()),
        ("rtmp://127.0.0.1:1935/live/output2", "")
    );
    t.stop(vec![], NOW + HOUR).unwrap();
    let item = QueryItem::from_task(&t, &TimeFormat::default());
    assert_eq!(
        item.forward,
        r#"[{"url":"rtmp://127.0.0.1:1935/live/output1"},{"url":"rtmp://127.0.0.1:1935/live/output2"}]"#
    );
}

/// Every (state, action) pair: `0` accepted without event, `1` accepted with exactly one event,
/// `I` illegal, `N` not active, `S` not started, `A` already active, `W` resume window passed.
#[test]
fn the_whole_transition_table() {
    let now = NOW + 90 * MIN;
    let mut retrying = running();
    retrying
        .apply(Action::SourceInterrupted { reason: "x".into() }, NOW)
        .unwrap();
    let mut expired = stopped(StopKind::Manual);
    expired.apply(Action::Expire, NOW + 49 * HOUR).unwrap();
    let states = [
        scheduled(),
        starting(),
        running(),
        retrying,
        stopped(StopKind::Natural),
        stopped(StopKind::Manual),
        stopped(StopKind::Failed),
        expired,
    ];
    let src = vec![Source::new(
        SourceUrl::parse("rtmp://new/live/s", TaskType::Live).unwrap(),
    )];
    //                 Sch Sta Run Ret SNa SMa SFa Exp
    let table: Vec<(Action, &str)> = vec![
        (Action::Due, "0IIIIIII"),
        (Action::DeliveryFailed, "I1IIIIII"),
        (Action::Started, "I1IIIIII"),
        (Action::SourceInterrupted { reason: "r".into() }, "II00IIII"),
        (Action::SourceRecovered, "III0IIII"),
        (Action::SourceFailed { reason: "r".into() }, "I111IIII"),
        (Action::PushConnected { url: dest(1) }, "I000IIII"),
        (Action::PushReconnecting { url: dest(1) }, "I000IIII"),
        (
            Action::PushFailed {
                url: dest(1),
                reason: "r".into(),
            },
            "I111IIII",
        ),
        (
            Action::ItemWarning {
                file: "f".into(),
                detail: "d".into(),
            },
            "I111IIII",
        ),
        (
            Action::ItemAdvanced {
                position: PlaybackPosition::default(),
            },
            "I011IIII",
        ),
        (
            Action::Finished {
                cause: StopCause::EndTime,
            },
            "I111IIII",
        ),
        (Action::Stop { forwards: vec![] }, "1111NNNN"),
        (
            Action::Update {
                sources: src,
                fops: Fops::default(),
                extend: ExtendParam::default(),
            },
            "S111NNNN",
        ),
        (Action::Resume { forwards: vec![] }, "AAAA000W"),
        (Action::Supersede, "11110000"),
        (Action::Expire, "IIIIIIII"),
    ];
    for (action, row) in table {
        for (state, want) in states.iter().zip(row.chars()) {
            let mut t = state.clone();
            let got = match t.apply(action.clone(), now) {
                Ok(ev) if ev.is_empty() => '0',
                Ok(ev) if ev.len() == 1 => '1',
                Ok(ev) => panic!("{} events", ev.len()),
                Err(TransitionError::Illegal { .. }) => 'I',
                Err(TransitionError::NotActive) => 'N',
                Err(TransitionError::NotStarted) => 'S',
                Err(TransitionError::AlreadyActive) => 'A',
                Err(TransitionError::ResumeWindowPassed) => 'W',
                Err(e) => panic!("unexpected {e}"),
            };
            assert_eq!(
                got,
                want,
                "{} in state {}",
                action.name(),
                state.state.key()
            );
            if got != '0' && got != '1' {
                assert_eq!(&t, state, "a refusal changes nothing");
            }
        }
    }
}
