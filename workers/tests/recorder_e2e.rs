//! The recorder on the embedded ports with a real nginx-rtmp origin and ffmpeg publishers: a
//! recording is pulled through the relay's source side, cut into durable parts, finalized into
//! files that ffprobe reads, and noticed for the media library.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use relaycast_core::app::recording::{get_recording, start_recording, stop_recording};
use relaycast_core::config::Settings;
use relaycast_core::domain::callbacks::StreamPath;
use relaycast_core::domain::recording::progress::RecordingProgress;
use relaycast_core::domain::recording::{
    FormatSpec, ObjectCreated, RecordFile, RecordFormat, Recording, RecordingMode, RecordingSpec,
    RecordingState, OBJECT_NOTICE_QUEUE,
};
use relaycast_core::ports::{Ports, SystemClock, TypedStore};
use relaycast_embedded::open_embedded;
use relaycast_workers::recorder::worker::RecorderWorker;
use support::{first_video_frame_is_key, probe_file, Nginx, Publisher};
use tokio_util::sync::CancellationToken;

struct Rig {
    ports: Ports,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::load(None, std::iter::empty()).unwrap();
        settings.data_dir = dir.path().to_path_buf();
        settings.timing.lease_ttl_ms = 3_000;
        settings.timing.lease_heartbeat_ms = 1_000;
        let ports = open_embedded(&settings, Arc::new(SystemClock))
            .unwrap()
            .ports;
        let shutdown = CancellationToken::new();
        let worker =
            RecorderWorker::new(ports.clone(), Arc::new(settings), shutdown.clone()).on_loopback();
        let worker = tokio::spawn(worker.run());
        Rig {
            ports,
            dir,
            shutdown,
            worker,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.worker).await;
    }

    fn object_path(&self, key: &str) -> String {
        self.dir
            .path()
            .join("objects/objects")
            .join(key)
            .display()
            .to_string()
    }
}

fn recording(id: &str, url: &str, formats: &[(RecordFormat, u32)], resume_secs: u32) -> Recording {
    Recording {
        account: "acme".into(),
        id: id.into(),
        mode: RecordingMode::Specific,
        record_id: Some(format!("{id}_rec")),
        stream: Some(StreamPath::parse("push.test", "live", "cam1").unwrap()),
        source_url: url.into(),
        stream_param: String::new(),
        spec: RecordingSpec {
            template_id: Some(7),
            formats: formats
                .iter()
                .map(|&(format, max_file_secs)| FormatSpec {
                    format,
                    max_file_secs,
                    storage_secs: 0,
                })
                .collect(),
            resume_timeout_secs: resume_secs,
            namespace: 0,
            file_name_pattern: None,
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

async fn wait_finished(ports: &Ports, id: &str, within: Duration) -> Recording {
    let until = Instant::now() + within;
    loop {
        let r = get_recording(ports, "acme", id).await.unwrap();
        if r.state == RecordingState::Finished {
            return r;
        }
        assert!(Instant::now() < until, "recording {id} not finished: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn notices(ports: &Ports) -> Vec<ObjectCreated> {
    let messages = ports
        .queue
        .receive(
            OBJECT_NOTICE_QUEUE,
            10,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .await
        .unwrap();
    messages
        .iter()
        .map(|m| serde_json::from_str(&m.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_stopped_recording_leaves_playable_files_split_at_the_max_length_on_keyframes() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let _publisher = Publisher::start_sized(&nginx.url("cam1"), 320, 240);
    assert!(nginx
        .wait_publishing("cam1", Duration::from_secs(10))
        .is_some());
    let rig = Rig::start();
    start_recording(
        &rig.ports,
        recording(
            "r1",
            &nginx.url("cam1"),
            &[(RecordFormat::Mp4, 6), (RecordFormat::Flv, 6)],
            0,
        ),
    )
    .await
    .unwrap();

    // Parts become durable while it records.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let progress = rig
            .ports
            .store
            .load::<RecordingProgress>("acme/r1")
            .await
            .unwrap();
        if progress.is_some_and(|p| p.value.open.iter().any(|f| !f.parts.is_empty())) {
            break;
        }
        assert!(Instant::now() < until, "no part stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop_recording(&rig.ports, "acme", "r1").await.unwrap();
    let done = wait_finished(&rig.ports, "r1", Duration::from_secs(15)).await;
    assert_eq!(done.error, None);
    // About 14 s in files of at most 6 s (cut at the next 2 s keyframe): two or three of each
    // format.
    let of = |ext: &str| done.files.iter().filter(|k| k.ends_with(ext)).count();
    assert!(
        (2..=3).contains(&of(".flv")) && of(".mp4") == of(".flv"),
        "{:?}",
        done.files
    );
    let mut total = 0.0;
    for key in &done.files {
        assert!(key.starts_with("record/0/acme/r1/r1_rec_main_"), "{key}");
        assert!(
            first_video_frame_is_key(&rig.object_path(key)),
            "{key} starts on a keyframe"
        );
        let file = rig
            .ports
            .store
            .load::<RecordFile>(key)
            .await
            .unwrap()
            .expect("record file")
            .value;
        let probe = probe_file(&rig.object_path(key));
        assert_eq!(probe.codecs, ["h264", "aac"], "{key}");
        assert!(
            probe.decode_errors.is_empty(),
            "{key}: {:?}",
            probe.decode_errors
        );
        assert!(probe.duration <= 8.5, "{key}: {}", probe.duration);
        assert!(
            (probe.duration - file.duration_ms as f64 / 1000.0).abs() < 1.0,
            "{key}: {} vs {}",
            probe.duration,
            file.duration_ms
        );
        total += probe.duration;
    }
    assert!(total >= 2.0 * 12.0, "{total}");
    let noticed: Vec<String> = notices(&rig.ports)
        .await
        .into_iter()
        .map(|n| n.key)
        .collect();
    assert_eq!(noticed, done.files, "one notice per file, in order");
    // The parts are gone once in their files.
    for format in ["flv", "mp4"] {
        let left = rig
            .ports
            .objects
            .list(&format!("record/0/acme/r1/{format}/"))
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_publisher_that_drops_within_the_resume_timeout_continues_the_same_file() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let mut publisher = Publisher::start_sized(&nginx.url("cam1"), 320, 240);
    assert!(nginx
        .wait_publishing("cam1", Duration::from_secs(10))
        .is_some());
    let rig = Rig::start();
    start_recording(
        &rig.ports,
        recording("r2", &nginx.url("cam1"), &[(RecordFormat::Flv, 600)], 30),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    publisher.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _back = Publisher::start_sized(&nginx.url("cam1"), 320, 240);
    assert!(nginx
        .wait_publishing("cam1", Duration::from_secs(10))
        .is_some());
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop_recording(&rig.ports, "acme", "r2").await.unwrap();
    let done = wait_finished(&rig.ports, "r2", Duration::from_secs(15)).await;
    assert_eq!(done.files.len(), 1, "{:?}", done.files);
    let probe = probe_file(&rig.object_path(&done.files[0]));
    assert!(probe.decode_errors.is_empty(), "{:?}", probe.decode_errors);
    // What was published, without the 5 s the publisher was away.
    assert!(
        (13.0..=18.5).contains(&probe.duration),
        "{}",
        probe.duration
    );
    rig.stop().await;
}

#[tokio::test]
async fn every_format_is_recorded_to_a_file_ffprobe_reads_with_its_duration() {
    let _heavy = support::heavy(&[]).await;
    let nginx = Nginx::start();
    let _publisher = Publisher::start_sized(&nginx.url("cam1"), 320, 240);
    assert!(nginx
        .wait_publishing("cam1", Duration::from_secs(10))
        .is_some());
    let rig = Rig::start();
    let formats = [
        (RecordFormat::Hls, 60),
        (RecordFormat::Mp4, 60),
        (RecordFormat::Flv, 60),
        (RecordFormat::Aac, 60),
    ];
    start_recording(&rig.ports, recording("r3", &nginx.url("cam1"), &formats, 0))
        .await
        .unwrap();
    let started = Instant::now();
    let until = Instant::now() + Duration::from_secs(20);
    while rig
        .ports
        .store
        .load::<RecordingProgress>("acme/r3")
        .await
        .unwrap()
        .is_none_or(|p| p.value.open.is_empty())
    {
        assert!(Instant::now() < until, "no part stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(
        Duration::from_secs(12).saturating_sub(started.elapsed()) + Duration::from_secs(6),
    )
    .await;
    stop_recording(&rig.ports, "acme", "r3").await.unwrap();
    let done = wait_finished(&rig.ports, "r3", Duration::from_secs(20)).await;
    assert_eq!(done.error, None);
    assert_eq!(done.files.len(), 4, "{:?}", done.files);
    let mut durations = Vec::new();
    for key in &done.files {
        let file = rig
            .ports
            .store
            .load::<RecordFile>(key)
            .await
            .unwrap()
            .expect("record file")
            .value;
        let probe = probe_file(&rig.object_path(key));
        assert!(
            probe.decode_errors.is_empty(),
            "{key}: {:?}",
            probe.decode_errors
        );
        let want: &[&str] = if file.format == RecordFormat::Aac {
            &["aac"]
        } else {
            &["h264", "aac"]
        };
        assert_eq!(probe.codecs, want, "{key}");
        assert!(
            (probe.duration - file.duration_ms as f64 / 1000.0).abs() < 1.0,
            "{key}: ffprobe {} s, recorded {} ms",
            probe.duration,
            file.duration_ms
        );
        if file.format != RecordFormat::Aac {
            assert_eq!(
                (file.video_codec.as_deref(), file.resolution.as_deref()),
                (Some("h264"), Some("320x240")),
                "{key}"
            );
        }
        durations.push(probe.duration);
        match file.format {
            RecordFormat::Hls => {
                assert!(
                    key.ends_with(".m3u8") && probe.format == "hls",
                    "{key} {}",
                    probe.format
                );
                assert!(!file.parts.is_empty());
            }
            RecordFormat::Mp4 => {
                assert!(probe.format.starts_with("mov,mp4"), "{}", probe.format);
                // Faststart: the index before the media.
                let bytes = std::fs::read(rig.object_path(key)).unwrap();
                let moov = bytes.windows(4).position(|w| w == b"moov").unwrap();
                let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
                assert!(moov < mdat, "moov at {moov}, mdat at {mdat}");
            }
            _ => {}
        }
    }
    for d in &durations {
        assert!((14.0..=22.0).contains(d), "{durations:?}");
        assert!(
            (d - durations[0]).abs() < 1.0,
            "formats disagree: {durations:?}"
        );
    }
    rig.stop().await;
}
