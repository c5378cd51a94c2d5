//! The relay task's playout settings, mapped onto a session: the seeds' `relofftime`,
//! `extendParam.loop`, `extendParam.index` and `waitCrtUrlFinish`.
//!
//! The relay worker builds one [`IngestSpec`] per task source (in the task's order) and then
//! calls [`apply_task`] on the [`SessionSpec`] at start, and [`replacement`] for a `cmd=3`,
//! so the mapping rules live in one place next to the session that enforces them.

use std::time::Duration;

use relaycast_core::domain::relay::task::RelayTask;
use relaycast_core::domain::relay::types::{LoopCount, RelOffTime, TaskType};

use crate::ingest::{IngestSpec, SourceKind, TimeWindow};
use crate::session::{ApplyAt, Loops, SessionSpec};

/// `extendParam.loop` as the session's [`Loops`].
pub fn loops(l: LoopCount) -> Loops {
    match l {
        LoopCount::Times(n) => Loops::Count(n.max(1)),
        LoopCount::Forever => Loops::Infinite,
    }
}

/// A validated `relofftime` as the ingest's [`TimeWindow`].
pub fn window(r: RelOffTime) -> TimeWindow {
    TimeWindow {
        start: Duration::from_secs(r.start_s),
        end: Some(Duration::from_secs(r.end_s)),
    }
}

/// When a `cmd=3` of this task takes effect (`waitCrtUrlFinish`).
pub fn apply_at(task: &RelayTask) -> ApplyAt {
    if task.extend.wait_current_finish {
        ApplyAt::AfterCurrentItem
    } else {
        ApplyAt::Now
    }
}

/// Puts each task source's `relofftime` on the ingest built for it (same position), and
/// makes the sources VOD items for a `video` task.
pub fn apply_sources(sources: &mut [IngestSpec], task: &RelayTask) {
    for (spec, src) in sources.iter_mut().zip(&task.sources) {
        spec.window = src.relofftime.map(window);
        if task.task_type == TaskType::Video {
            spec.kind = SourceKind::Vod;
            // MP4 and HLS may place their streams late: ffmpeg's default probe size.
            spec.probe_size = None;
        }
    }
}

/// Sets a new session's playout from the task: source windows, the loop count, and the
/// item to start with, which is the task's playback position (`extendParam.index` at the
/// start of a run; on a resume after a manual stop, where it stopped).
pub fn apply_task(spec: &mut SessionSpec, task: &RelayTask) {
    apply_sources(&mut spec.sources, task);
    spec.loops = loops(task.extend.loop_count);
    spec.start_index = task.position.index;
}

/// What a `cmd=3` hands to [`crate::session::RelaySession::replace_playlist`] besides the new
/// sources (run those through [`apply_sources`] first): the loop count, the 1-based
/// `extendParam.index` made 0-based (`None` = the first item), and when.
pub fn replacement(task: &RelayTask) -> (Option<Loops>, Option<usize>, ApplyAt) {
    let start = task
        .extend
        .start_index
        .map(|i| (i as usize).saturating_sub(1));
    (Some(loops(task.extend.loop_count)), start, apply_at(task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_seed_values() {
        assert_eq!(loops(LoopCount::Times(3)), Loops::Count(3));
        assert_eq!(loops(LoopCount::Forever), Loops::Infinite);
        let w = window(RelOffTime {
            start_s: 30,
            end_s: 60,
        });
        assert_eq!(w.start, Duration::from_secs(30));
        assert_eq!(w.length(), Some(Duration::from_secs(30)));
    }
}
