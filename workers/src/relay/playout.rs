//! The relay task's playout settings, mapped onto a session: the seeds' `relofftime`,
//! `extendParam.loop`, `extendParam.index` and `waitCrtUrlFinish`.
//!
//! The relay worker builds one [`IngestSpec`] per task source (in the task's order) and then
//! calls [`apply_task`] on the session's [`SourceSpec`] at start, and [`replacement`] for a `cmd=3`,
//! so the mapping rules live in one place next to the session that enforces them.

use std::time::Duration;

use relaycast_core::domain::relay::task::RelayTask;
use relaycast_core::domain::relay::types::{LoopCount, RelOffTime, TaskType};

use crate::ingest::{IngestSpec, SourceKind, TimeWindow};
use crate::splice::source::{ApplyAt, Loops, SourceSpec};

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
/// makes the sources VOD items for a `video` task. In a `live` task a media file (an `.mp4`,
/// `.mov`, `.mkv` URL) is played in real time too, and as a backup it loops, so it can hold the
/// destinations for as long as the primary is away.
pub fn apply_sources(sources: &mut [IngestSpec], task: &RelayTask) {
    for (i, (spec, src)) in sources.iter_mut().zip(&task.sources).enumerate() {
        spec.window = src.relofftime.map(window);
        let live_file = task.task_type == TaskType::Live && is_media_file(&spec.url);
        if task.task_type == TaskType::Video || live_file {
            spec.kind = SourceKind::Vod;
            // MP4 and HLS may place their streams late: ffmpeg's default probe size.
            spec.probe_size = None;
        }
        spec.loop_input = live_file && i > 0;
        // `bufferTime` is for HLS sources (the seed).
        spec.buffer = task
            .fops
            .buffer_time_s
            .filter(|s| *s > 0.0 && is_hls(&spec.url))
            .map(Duration::from_secs_f64);
    }
}

/// Whether a URL names an HLS playlist (`.m3u8`).
pub fn is_hls(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.to_ascii_lowercase().ends_with(".m3u8"))
}

/// Whether a URL names a media file by its path's extension (query and fragment ignored).
pub fn is_media_file(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        // Not `.flv`: that is how HTTP-FLV live streams are named.
        Some((_, ext)) => ["mp4", "m4v", "mov", "mkv"]
            .iter()
            .any(|e| ext.eq_ignore_ascii_case(e)),
        None => false,
    }
}

/// Sets a new session's playout from the task: source windows, the loop count, and the
/// item to start with, which is the task's playback position (`extendParam.index` at the
/// start of a run; on a resume after a manual stop, where it stopped).
pub fn apply_task(spec: &mut SourceSpec, task: &RelayTask) {
    apply_sources(&mut spec.sources, task);
    spec.loops = loops(task.extend.loop_count);
    spec.start_index = task.position.index;
    spec.switch_back_after = switch_back_after(task);
    // A buffered source shows its first tag only after its buffer time.
    if let Some(longest) = spec.sources.iter().filter_map(|s| s.buffer).max() {
        spec.startup_timeout += longest;
    }
}

/// A live task's `extendParam.autoSwitchBack` as the session's
/// [`SourceSpec::switch_back_after`]: `None` (manual) when unset or for a playlist.
pub fn switch_back_after(task: &RelayTask) -> Option<Duration> {
    match task.task_type {
        TaskType::Live => task
            .extend
            .auto_switch_back_s
            .map(|s| Duration::from_secs(u64::from(s))),
        TaskType::Video => None,
    }
}

/// What a `cmd=3` hands to [`crate::relay::session::RelaySession::replace_playlist`] besides the new
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
    fn media_files_are_told_from_streams() {
        assert!(is_media_file(
            "https://cdn.example/slates/holding.MP4?token=x"
        ));
        assert!(is_media_file("http://h/a/b.mkv"));
        assert!(
            !is_media_file("http://cdn/live/stream.flv"),
            "HTTP-FLV is a live stream"
        );
        assert!(!is_media_file("https://h/live/stream.m3u8"));
        assert!(!is_media_file("rtmp://h/live/stream"));
        assert!(!is_media_file("http://h.mp4/live/stream"));
        assert!(is_hls("https://h/live/index.M3U8?token=1"));
        assert!(!is_hls("https://h/live/index.mp4"));
    }

    fn task(ty: TaskType, auto_switch_back_s: Option<u32>) -> RelayTask {
        use relaycast_core::domain::relay::types::{
            ExtendParam, Fops, RtmpUrl, Source, SourceUrl, TaskId,
        };
        use relaycast_core::domain::relay::wire::NewRelayTask;
        let url = if ty == TaskType::Live {
            "rtmp://h/live/a"
        } else {
            "http://h/a.mp4"
        };
        let new = NewRelayTask {
            id: TaskId::parse("t").unwrap(),
            sources: vec![Source::new(SourceUrl::parse(url, ty).unwrap())],
            forwards: vec![RtmpUrl::parse("rtmp://d/live/k").unwrap()],
            start_ms: None,
            end_ms: None,
            fops: Fops::default(),
            extend: ExtendParam {
                auto_switch_back_s,
                ..ExtendParam::default()
            },
        };
        RelayTask::create("acc", ty, None, new, 0)
    }

    #[test]
    fn auto_switch_back_maps_onto_the_session() {
        let mut spec = SourceSpec::new(vec![IngestSpec::live("rtmp://h/live/a")]);
        apply_task(&mut spec, &task(TaskType::Live, Some(8)));
        assert_eq!(spec.switch_back_after, Some(Duration::from_secs(8)));
        apply_task(&mut spec, &task(TaskType::Live, None));
        assert_eq!(spec.switch_back_after, None, "manual by default");
        assert_eq!(
            switch_back_after(&task(TaskType::Video, Some(8))),
            None,
            "playlists do not fail over"
        );
    }

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
