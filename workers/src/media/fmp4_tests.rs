//! Tests of the fMP4 muxer: the box layout on synthetic tags, then real ffmpeg streams read
//! back by ffprobe (a file, an HLS set, audio only, HEVC) and remuxed by ffmpeg.

use std::path::Path;
use std::process::{Command, Stdio};

use super::*;
use crate::media::flv::test_media::ffmpeg_media_flv;
use crate::media::flv::{FlvItem, FlvParser};
use crate::media::hls::{HlsSegment, MediaPlaylist};

/// x264's avcC for 64x48 (constrained baseline) and for 1920x1080 (high, cropped from 1088).
pub(crate) const AVCC_64X48: &[u8] = &[
    0x01, 0x42, 0xc0, 0x0a, 0xff, 0xe1, 0x00, 0x15, 0x67, 0x42, 0xc0, 0x0a, 0xda, 0x11, 0xec, 0x04,
    0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0c, 0x83, 0xc4, 0x89, 0xa8, 0x01, 0x00, 0x04,
    0x68, 0xce, 0x0f, 0xc8,
];
pub(crate) const AVCC_1080: &[u8] = &[
    0x01, 0x64, 0x00, 0x28, 0xff, 0xe1, 0x00, 0x1b, 0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78,
    0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c,
    0x60, 0xc6, 0x58, 0x01, 0x00, 0x04, 0x68, 0xef, 0x8f, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
];
/// AAC-LC, 44.1 kHz, stereo.
const ASC: [u8; 2] = [0x12, 0x10];

fn tag(tag_type: TagType, ts: u32, data: Vec<u8>) -> FlvTag {
    FlvTag::new(tag_type, ts, Bytes::from(data))
}

fn video_header(record: &[u8]) -> FlvTag {
    tag(
        TagType::Video,
        0,
        [&[0x17, 0, 0, 0, 0][..], record].concat(),
    )
}

/// A frame whose one NAL unit holds its timestamp, so a test can find it in the `mdat`.
fn video_frame(ts: u32, key: bool) -> FlvTag {
    let mut d = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0, 4];
    d.extend_from_slice(&ts.to_be_bytes());
    tag(TagType::Video, ts, d)
}

fn audio_header() -> FlvTag {
    tag(TagType::Audio, 0, vec![0xaf, 0, ASC[0], ASC[1]])
}

fn audio_frame(ts: u32) -> FlvTag {
    tag(TagType::Audio, ts, vec![0xaf, 1, 0x21, 0x10, 0x05])
}

/// `secs` of 25 fps video (a keyframe a second) and/or 44.1 kHz AAC from `start` ms, in DTS
/// order (video first at equal times), after the sequence headers.
fn synthetic(secs: u32, video: bool, audio: bool, start: u32) -> Vec<FlvTag> {
    let mut tags = Vec::new();
    if video {
        tags.extend((0..secs * 25).map(|i| video_frame(start + i * 40, i % 25 == 0)));
    }
    if audio {
        let frames = u64::from(secs) * 44_100 / 1024;
        tags.extend((0..frames).map(|n| audio_frame(start + (n * 1024 * 1000 / 44_100) as u32)));
    }
    tags.sort_by_key(|t| t.timestamp);
    let headers = [
        video.then(|| video_header(AVCC_64X48)),
        audio.then(audio_header),
    ];
    headers.into_iter().flatten().chain(tags).collect()
}

/// The bodies of the boxes at `path` (containers only on the way).
fn boxes<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        assert!(
            size >= 8 && at + size <= data.len(),
            "bad box size {size} at {at}"
        );
        if &data[at + 4..at + 8] == path[0] {
            let body = &data[at + 8..at + size];
            if path.len() == 1 {
                out.push(body);
            } else {
                out.extend(boxes(body, &path[1..]));
            }
        }
        at += size;
    }
    out
}

fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().expect("4 bytes"))
}

/// A `traf` read back.
#[derive(Debug)]
struct Traf {
    track: u32,
    tfdt: u64,
    data_offset: usize,
    /// Duration, size, flags, composition offset.
    samples: Vec<(u32, u32, u32, i32)>,
}

fn trafs(fragment: &[u8]) -> Vec<Traf> {
    boxes(fragment, &[b"moof", b"traf"])
        .into_iter()
        .map(|traf| {
            let tfhd = boxes(traf, &[b"tfhd"])[0];
            let tfdt = boxes(traf, &[b"tfdt"])[0];
            let trun = boxes(traf, &[b"trun"])[0];
            assert_eq!(u32_at(tfhd, 0), 0x02_0000, "default-base-is-moof");
            assert_eq!(tfdt[0], 1, "tfdt version 1");
            let flags = u32_at(trun, 0) & 0xff_ffff;
            let stride = if flags & 0x800 != 0 { 16 } else { 12 };
            let samples = trun[12..]
                .chunks(stride)
                .map(|e| {
                    let cts = if stride == 16 {
                        u32_at(e, 12) as i32
                    } else {
                        0
                    };
                    (u32_at(e, 0), u32_at(e, 4), u32_at(e, 8), cts)
                })
                .collect::<Vec<_>>();
            assert_eq!(samples.len(), u32_at(trun, 4) as usize);
            Traf {
                track: u32_at(tfhd, 4),
                tfdt: u64::from_be_bytes(tfdt[4..12].try_into().expect("8 bytes")),
                data_offset: u32_at(trun, 8) as usize,
                samples,
            }
        })
        .collect()
}

fn mfhd(fragment: &[u8]) -> u32 {
    u32_at(boxes(fragment, &[b"moof", b"mfhd"])[0], 4)
}

/// Pushes every tag, cutting a fragment at each keyframe with at least `cut_ms` queued
/// before it, then flushes.
fn mux(m: &mut Fmp4Muxer, tags: &[FlvTag], cut_ms: u64) -> Vec<Fragment> {
    let mut out = Vec::new();
    for t in tags {
        if m.push(t).expect("push") == Pushed::Keyframe && m.pending_ms() >= cut_ms {
            out.extend(m.take_fragment());
        }
    }
    out.extend(std::iter::from_fn(|| m.flush()));
    out
}

#[test]
fn fragments_cut_at_keyframes_with_continuous_times() {
    let tags = synthetic(3, true, true, 0);
    let audio_frames = tags.iter().filter(|t| t.tag_type == TagType::Audio).count() - 1;
    let mut m = Fmp4Muxer::new();
    let frags = mux(&mut m, &tags, 1000);
    assert_eq!(frags.len(), 3);
    let mut next_tfdt = [0u64; 2];
    for (i, f) in frags.iter().enumerate() {
        assert!(f.starts_with_keyframe);
        assert_eq!(
            (f.video_samples, f.start_ms, f.duration_ms),
            (25, i as u64 * 1000, 1000)
        );
        assert_eq!(mfhd(&f.bytes), i as u32 + 1);
        let trafs = trafs(&f.bytes);
        assert_eq!(trafs.iter().map(|t| t.track).collect::<Vec<_>>(), [1, 2]);
        for t in &trafs {
            let k = t.track as usize - 1;
            assert_eq!(
                t.tfdt, next_tfdt[k],
                "tfdt of track {} in fragment {i}",
                t.track
            );
            next_tfdt[k] += t.samples.iter().map(|s| u64::from(s.0)).sum::<u64>();
            let mut at = t.data_offset;
            for (n, &(duration, size, flags, cts)) in t.samples.iter().enumerate() {
                if t.track == 1 {
                    assert_eq!(duration, 3600);
                    let key = n == 0;
                    assert_eq!(flags, if key { SYNC_SAMPLE } else { NON_SYNC_SAMPLE });
                    assert_eq!(cts, 0);
                    // The data offset points at this very frame.
                    let ts = (t.tfdt / 90) as u32 + n as u32 * 40;
                    assert_eq!(&f.bytes[at + 4..at + 8], &ts.to_be_bytes());
                } else {
                    assert_eq!(flags, SYNC_SAMPLE);
                    // 1024 samples, give or take the millisecond of the FLV timestamps.
                    assert!(duration.abs_diff(1024) <= 45, "AAC frame of {duration}");
                    assert_eq!(&f.bytes[at..at + 3], &[0x21, 0x10, 0x05]);
                }
                at += size as usize;
            }
        }
        // The mdat holds exactly the samples.
        let data: u32 = trafs.iter().flat_map(|t| &t.samples).map(|s| s.1).sum();
        assert_eq!(boxes(&f.bytes, &[b"mdat"])[0].len(), data as usize);
    }
    assert_eq!(
        frags
            .iter()
            .map(|f| f.audio_samples as usize)
            .sum::<usize>(),
        audio_frames
    );
    // The last AAC frame lasts 1024 samples; 3 s of audio end within a frame of 3 s.
    let last = trafs(&frags[2].bytes);
    assert_eq!(last[1].samples.last().map(|s| s.0), Some(1024));
    assert!(
        next_tfdt[1].abs_diff(3 * 44_100) <= 1024,
        "audio ends at {}",
        next_tfdt[1]
    );
    assert_eq!(next_tfdt[0], 3 * 90_000);
}

#[test]
fn init_segment_describes_the_tracks() {
    let mut m = Fmp4Muxer::new();
    assert_eq!(m.push(&video_header(AVCC_64X48)), Ok(Pushed::Config));
    assert_eq!(m.init_segment(), None, "audio may still come");
    assert_eq!(m.push(&audio_header()), Ok(Pushed::Config));
    let init = m.init_segment().expect("both tracks");
    let ftyp = boxes(&init, &[b"ftyp"])[0];
    assert_eq!(ftyp, b"iso6\0\0\0\0iso6isommp41dash");
    let traks = boxes(&init, &[b"moov", b"trak"]);
    assert_eq!(traks.len(), 2);
    let tkhd = boxes(traks[0], &[b"tkhd"])[0];
    assert_eq!(
        (u32_at(tkhd, 12), u32_at(tkhd, 76), u32_at(tkhd, 80)),
        (1, 64 << 16, 48 << 16)
    );
    let timescales: Vec<u32> = traks
        .iter()
        .map(|t| u32_at(boxes(t, &[b"mdia", b"mdhd"])[0], 12))
        .collect();
    assert_eq!(timescales, [90_000, 44_100]);
    let stsd = |t: &[u8]| boxes(t, &[b"mdia", b"minf", b"stbl", b"stsd"])[0].to_vec();
    let video = stsd(traks[0]);
    assert_eq!(&video[12..16], b"avc1");
    assert!(
        video.windows(AVCC_64X48.len()).any(|w| w == AVCC_64X48),
        "avcC verbatim"
    );
    let audio = stsd(traks[1]);
    assert_eq!(&audio[12..16], b"mp4a");
    assert!(
        audio
            .windows(6)
            .any(|w| w == [0x05, 0x80, 0x80, 0x80, 0x02, ASC[0]]),
        "ASC in esds"
    );
    assert_eq!(boxes(&init, &[b"moov", b"mvex", b"trex"]).len(), 2);
}

#[test]
fn timelines_absolute_or_from_zero() {
    let tags = synthetic(2, true, true, 5000);
    let mut m = Fmp4Muxer::new();
    let frags = mux(&mut m, &tags, 1000);
    let first = trafs(&frags[0].bytes);
    assert_eq!((first[0].tfdt, first[1].tfdt), (450_000, 220_500));
    assert_eq!(frags[0].start_ms, 5000);

    let mut m = Fmp4Muxer::new();
    m.start_sequence(Timeline::FromZero);
    let frags = mux(&mut m, &tags, 1000);
    let first = trafs(&frags[0].bytes);
    assert_eq!((first[0].tfdt, first[1].tfdt), (0, 0));
    assert_eq!(trafs(&frags[1].bytes)[0].tfdt, 90_000);

    // A new sequence mid-stream (a new file): times and numbers restart.
    let mut m = Fmp4Muxer::new();
    let mut frags = Vec::new();
    for t in &tags {
        if m.push(t).expect("push") == Pushed::Keyframe && m.pending_ms() >= 1000 {
            frags.extend(m.take_fragment());
            m.start_sequence(Timeline::FromZero);
        }
    }
    frags.extend(m.flush());
    assert_eq!(trafs(&frags[0].bytes)[0].tfdt, 450_000);
    // Time 0 is the first sample: the AAC frame that plays over the keyframe at 6 s.
    let second = trafs(&frags[1].bytes);
    let audio_start = (0u64..)
        .map(|n| 5000 + n * 1024 * 1000 / 44_100)
        .take_while(|&t| t < 6000)
        .last()
        .expect("audio");
    assert_eq!(
        (second[0].tfdt, second[1].tfdt),
        ((6000 - audio_start) * 90, 0)
    );
    assert_eq!(mfhd(&frags[1].bytes), 1);
    assert_eq!(frags[1].start_ms, 6000);
}

#[test]
fn audio_only_and_video_only() {
    let mut m = Fmp4Muxer::new();
    let tags = synthetic(1, false, true, 0);
    m.push(&tags[0]).expect("header");
    m.push(&tags[1]).expect("frame");
    assert_eq!(
        (m.init_segment(), m.take_fragment()),
        (None, None),
        "video may still come"
    );
    m.seal_tracks();
    let init = m.init_segment().expect("audio only");
    assert_eq!(boxes(&init, &[b"moov", b"trak"]).len(), 1);
    for t in &tags[2..11] {
        assert_eq!(m.push(t), Ok(Pushed::Sample));
    }
    let f = m.take_fragment().expect("complete frames");
    assert_eq!((f.audio_samples, f.video_samples, f.start_ms), (9, 0, 0));
    assert!(f.starts_with_keyframe);
    let f = m.flush().expect("the last frame");
    assert_eq!((f.audio_samples, f.duration_ms), (1, 24));
    assert_eq!(trafs(&f.bytes)[0].samples[0].0, 1024);
    assert_eq!(m.flush(), None);

    let mut m = Fmp4Muxer::new();
    m.seal_tracks();
    let tags = synthetic(2, true, false, 0);
    let frags = mux(&mut m, &tags, 1000);
    assert_eq!(
        frags.iter().map(|f| f.video_samples).collect::<Vec<_>>(),
        [25, 25]
    );
    assert_eq!(
        frags[1].duration_ms, 1000,
        "the last frame lasts the previous interval"
    );
    assert_eq!(trafs(&frags[0].bytes).len(), 1);
}

#[test]
fn video_waits_for_a_keyframe_and_audio_before_it_is_trimmed() {
    let mut m = Fmp4Muxer::new();
    m.push(&video_header(AVCC_64X48)).expect("header");
    m.push(&audio_header()).expect("header");
    for n in 0..10 {
        m.push(&audio_frame(n * 23)).expect("audio");
    }
    assert_eq!(m.push(&video_frame(190, false)), Ok(Pushed::Ignored));
    assert_eq!(m.take_fragment(), None, "no complete video yet");
    assert_eq!(m.push(&video_frame(200, true)), Ok(Pushed::Keyframe));
    assert_eq!(m.push(&video_frame(240, false)), Ok(Pushed::Sample));
    let f = m.flush().expect("fragment");
    // The frames at 184 ms (which plays over the keyframe) and 207 ms are left.
    assert_eq!((f.video_samples, f.audio_samples, f.start_ms), (2, 2, 200));
    assert_eq!(trafs(&f.bytes)[1].tfdt, 184 * 441 / 10);
}

#[test]
fn config_changes_close_the_fragment() {
    let tags = synthetic(2, true, true, 0);
    let mut m = Fmp4Muxer::new();
    let mut iter = tags.iter();
    for t in iter.by_ref().take(40) {
        m.push(t).expect("push");
    }
    assert_eq!(
        m.push(&video_header(AVCC_64X48)),
        Ok(Pushed::Ignored),
        "same config"
    );
    assert_eq!(m.push(&video_header(AVCC_1080)), Ok(Pushed::ConfigChanged));
    let init = m.init_segment().expect("init");
    let tkhd = boxes(&init, &[b"moov", b"trak", b"tkhd"])[0];
    assert_eq!(
        (u32_at(tkhd, 76), u32_at(tkhd, 80)),
        (1920 << 16, 1080 << 16)
    );
    let closed = m.take_fragment().expect("the old config's samples");
    let pushed_video = tags[..40].iter().filter(|t| t.is_video_frame()).count();
    assert_eq!(closed.video_samples as usize, pushed_video);
    assert_eq!(m.take_fragment(), None);
    // The new config starts at a keyframe.
    assert_eq!(m.push(&video_frame(2000, false)), Ok(Pushed::Ignored));
    assert_eq!(m.push(&video_frame(2040, true)), Ok(Pushed::Keyframe));

    // A track appearing after the set was sealed.
    let mut m = Fmp4Muxer::new();
    m.push(&audio_header()).expect("header");
    m.seal_tracks();
    m.push(&audio_frame(0)).expect("frame");
    assert_eq!(m.push(&video_header(AVCC_64X48)), Ok(Pushed::ConfigChanged));
    assert_eq!(m.take_fragment().map(|f| f.audio_samples), Some(1));
    assert_eq!(
        boxes(&m.init_segment().expect("init"), &[b"moov", b"trak"]).len(),
        2
    );
}

#[test]
fn bad_input_is_an_error() {
    let mut m = Fmp4Muxer::new();
    let video = |d: &[u8]| tag(TagType::Video, 0, d.to_vec());
    assert_eq!(
        m.push(&video(&[])),
        Err(Fmp4Error::Truncated(TagType::Video))
    );
    assert_eq!(
        m.push(&video(&[0x17, 1, 0])),
        Err(Fmp4Error::Truncated(TagType::Video))
    );
    assert_eq!(
        m.push(&video(&[0x90, b'a', b'v'])),
        Err(Fmp4Error::Truncated(TagType::Video))
    );
    assert!(matches!(
        m.push(&video(&[0x14, 0, 0])),
        Err(Fmp4Error::UnsupportedVideo(_))
    ));
    assert!(matches!(
        m.push(&video(b"\x90av01")),
        Err(Fmp4Error::UnsupportedVideo(_))
    ));
    assert_eq!(
        m.push(&video(&[0x17, 0, 0, 0, 0, 1, 2])),
        Err(Fmp4Error::BadVideoConfig("AVC"))
    );
    assert_eq!(
        m.push(&video(&[0x1c, 0, 0, 0, 0, 1])),
        Err(Fmp4Error::BadVideoConfig("HEVC"))
    );
    let audio = |d: &[u8]| tag(TagType::Audio, 0, d.to_vec());
    assert_eq!(
        m.push(&audio(&[0x2f, 1])),
        Err(Fmp4Error::UnsupportedAudio(2))
    );
    assert_eq!(
        m.push(&audio(&[0xaf])),
        Err(Fmp4Error::Truncated(TagType::Audio))
    );
    assert!(matches!(
        m.push(&audio(&[0xaf, 0, 0x12])),
        Err(Fmp4Error::BadAudioConfig(_))
    ));
    assert_eq!(
        m.push(&audio_frame(0)),
        Ok(Pushed::Ignored),
        "before the config"
    );
    m.push(&audio_header()).expect("header");
    m.push(&audio_frame(100)).expect("frame");
    assert_eq!(
        m.push(&audio_frame(99)),
        Err(Fmp4Error::TimestampWentBack {
            track: "audio",
            from: 100,
            to: 99
        })
    );
    let script = tag(TagType::Script, 0, vec![2, 0, 1, b'x']);
    assert_eq!(m.push(&script), Ok(Pushed::Ignored));
}

/// Arbitrary tag bodies (behind plausible first bytes) never panic the muxer.
#[test]
fn arbitrary_tags_never_panic() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let firsts = [0x17, 0x27, 0x1c, 0x90, 0x91, 0x93, 0xaf, 0x2f];
    let mut m = Fmp4Muxer::new();
    m.push(&video_header(AVCC_64X48)).expect("header");
    m.push(&audio_header()).expect("header");
    let mut ts = 0u32;
    for round in 0..5000 {
        let len = (next() % 64) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(b) = d.first_mut() {
            *b = firsts[(next() % firsts.len() as u64) as usize];
        }
        if d.len() > 4 && d[0] & 0x80 != 0 && next() % 2 == 0 {
            d[1..5].copy_from_slice(if next() % 2 == 0 { b"hvc1" } else { b"avc1" });
        }
        ts += (next() % 50) as u32;
        let kind = if d.first() == Some(&0xaf) || d.first() == Some(&0x2f) {
            TagType::Audio
        } else {
            TagType::Video
        };
        let _ = m.push(&tag(kind, ts.wrapping_sub((next() % 3) as u32), d));
        if round % 97 == 0 {
            let _ = m.take_fragment().map(|f| trafs(&f.bytes));
            let _ = m.init_segment();
        }
        if round % 1013 == 0 {
            let _ = m.flush();
        }
    }
}

// --- Real streams, read back by ffprobe and ffmpeg ---

/// ffprobe's JSON for the streams (codec, counted frames) and format duration of `path`;
/// any error output fails the test.
pub(crate) fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name,nb_read_frames",
        ])
        .args(["-count_frames", "-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ffprobe: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.is_empty(),
        "ffprobe {}: {err}",
        path.display()
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// The format duration of an [`ffprobe`] answer, in seconds.
pub(crate) fn duration(probe: &serde_json::Value) -> f64 {
    let d = probe["format"]["duration"]
        .as_str()
        .unwrap_or_else(|| panic!("no duration: {probe}"));
    d.parse().unwrap_or_else(|e| panic!("duration {d}: {e}"))
}

/// `ffmpeg -v error -i path -f null -` decodes everything without a word.
pub(crate) fn decodes_cleanly(path: &Path) {
    run_ffmpeg(&["-i", &path.to_string_lossy(), "-f", "null", "-"]);
}

fn run_ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ffmpeg: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.is_empty(),
        "ffmpeg {args:?}: {err}"
    );
}

fn flv_tags(flv: &[u8]) -> Vec<FlvTag> {
    let mut p = FlvParser::new();
    let items = p.feed(flv).expect("valid FLV");
    items
        .into_iter()
        .filter_map(|i| match i {
            FlvItem::Tag(t) => Some(t),
            FlvItem::Header(_) => None,
        })
        .collect()
}

/// The codec names and frame counts of an [`ffprobe`] answer, in stream order.
fn streams(probe: &serde_json::Value) -> Vec<(String, u64)> {
    let list = probe["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("no streams: {probe}"));
    list.iter()
        .map(|s| {
            let frames = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok());
            (
                s["codec_name"].as_str().unwrap_or("?").to_owned(),
                frames.unwrap_or(0),
            )
        })
        .collect()
}

fn counts(tags: &[FlvTag]) -> (u64, u64) {
    let video = tags.iter().filter(|t| t.is_video_frame()).count() as u64;
    let audio = tags
        .iter()
        .filter(|t| t.tag_type == TagType::Audio && !t.is_audio_sequence_header())
        .count() as u64;
    (video, audio)
}

fn write_file(path: &Path, init: &[u8], frags: &[Fragment]) {
    let mut bytes = init.to_vec();
    frags.iter().for_each(|f| bytes.extend_from_slice(&f.bytes));
    std::fs::write(path, bytes).expect("write");
}

fn assert_probe(path: &Path, codecs: &[&str], frames: &[u64], secs: f64) {
    let probe = ffprobe(path);
    let got = streams(&probe);
    let want: Vec<(String, u64)> = codecs
        .iter()
        .map(|c| c.to_string())
        .zip(frames.iter().copied())
        .collect();
    assert_eq!(got, want, "{}", path.display());
    let d = duration(&probe);
    assert!(
        (d - secs).abs() <= 0.1,
        "{}: duration {d}, not {secs}",
        path.display()
    );
    decodes_cleanly(path);
}

/// ffmpeg's H.264 + AAC, muxed in 1 s fragments: ffprobe reads the frames and the duration,
/// ffmpeg decodes it without error and remuxes it with `+faststart` (how the recorder
/// finalises its files) into a file that reads the same.
#[test]
fn ffprobe_reads_the_fragmented_mp4_and_ffmpeg_remuxes_it() {
    crate::require_peers!(Ffmpeg);
    let tags = flv_tags(&ffmpeg_media_flv(Some((320, 240, 25)), true, 4));
    let (video, audio) = counts(&tags);
    assert_eq!(video, 100);
    let mut m = Fmp4Muxer::new();
    let frags = mux(&mut m, &tags, 1000);
    assert_eq!(frags.len(), 4);
    assert!(frags
        .iter()
        .all(|f| f.starts_with_keyframe && f.video_samples == 25));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("frag.mp4");
    write_file(&path, &m.init_segment().expect("init"), &frags);
    assert_probe(&path, &["h264", "aac"], &[video, audio], 4.0);

    let out = dir.path().join("out.mp4");
    run_ffmpeg(&[
        "-i",
        &path.to_string_lossy(),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        &out.to_string_lossy(),
    ]);
    assert_probe(&out, &["h264", "aac"], &[video, audio], 4.0);
}

/// An HLS set: one init segment, segments cut at the first keyframe after 2 s, the playlist
/// from [`MediaPlaylist`]; ffprobe reads it all with the right duration and frames.
#[test]
fn ffprobe_reads_the_hls_set() {
    crate::require_peers!(Ffmpeg);
    let tags = flv_tags(&ffmpeg_media_flv(Some((320, 240, 25)), true, 6));
    let (video, audio) = counts(&tags);
    let mut m = Fmp4Muxer::new();
    let frags = mux(&mut m, &tags, 2000);
    assert_eq!(
        frags.iter().map(|f| f.duration_ms).collect::<Vec<_>>(),
        [2000, 2000, 2000]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let init = m.init_segment().expect("init");
    std::fs::write(dir.path().join("init_0.mp4"), &init).expect("write");
    let mut playlist = MediaPlaylist {
        segments: Vec::new(),
        ended: true,
    };
    for (i, f) in frags.iter().enumerate() {
        assert!(f.starts_with_keyframe);
        let uri = format!("seg_{i}.m4s");
        std::fs::write(dir.path().join(&uri), &f.bytes).expect("write");
        playlist.segments.push(HlsSegment {
            uri,
            duration_ms: f.duration_ms,
            map_uri: "init_0.mp4".into(),
            discontinuity: false,
        });
    }
    let path = dir.path().join("playlist.m3u8");
    std::fs::write(&path, playlist.render()).expect("write");
    assert_probe(&path, &["h264", "aac"], &[video, audio], 6.0);
    // The segments carry the time themselves, not just the playlist.
    let joined = dir.path().join("joined.mp4");
    write_file(&joined, &init, &frags);
    assert_probe(&joined, &["h264", "aac"], &[video, audio], 6.0);
}

/// Audio only: the recorder seals the tracks at the first audio frame.
#[test]
fn ffprobe_reads_an_audio_only_stream() {
    crate::require_peers!(Ffmpeg);
    let tags = flv_tags(&ffmpeg_media_flv(None, true, 3));
    let (_, audio) = counts(&tags);
    let mut m = Fmp4Muxer::new();
    let mut frags = Vec::new();
    for t in &tags {
        m.push(t).expect("push");
        if t.tag_type == TagType::Audio && !t.is_audio_sequence_header() {
            m.seal_tracks();
        }
        if m.pending_ms() >= 1000 {
            frags.extend(m.take_fragment());
        }
    }
    frags.extend(std::iter::from_fn(|| m.flush()));
    assert!(frags.len() >= 3 && frags.iter().all(|f| f.video_samples == 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audio.mp4");
    write_file(&path, &m.init_segment().expect("init"), &frags);
    assert_probe(&path, &["aac"], &[audio], 3.0);
}

/// x265 through the MPEG-TS demuxer's Enhanced RTMP `hvc1` tags.
#[test]
fn ffprobe_reads_hevc_from_enhanced_rtmp_tags() {
    crate::require_peers!(Ffmpeg);
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "3",
        ])
        .args(["-c:v", "libx265", "-preset", "ultrafast"])
        .args([
            "-x265-params",
            "log-level=error:keyint=25",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-f", "mpegts", "pipe:1"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ts = crate::media::mpegts::TsToFlv::new();
    ts.push(&out.stdout).expect("TS");
    ts.finish();
    let tags: Vec<FlvTag> = std::iter::from_fn(|| ts.next_tag()).collect();
    let (video, audio) = counts(&tags);
    let mut m = Fmp4Muxer::new();
    let frags = mux(&mut m, &tags, 1000);
    assert!(frags.iter().all(|f| f.starts_with_keyframe));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hevc.mp4");
    let init = m.init_segment().expect("init");
    assert!(init.windows(4).any(|w| w == b"hvcC"));
    write_file(&path, &init, &frags);
    // x265's B-frames: the first picture shows at its composition offset (no edit list).
    let first = tags.iter().find(|t| t.is_video_frame()).expect("a frame");
    let cts = f64::from(cts24(&first.data[5..8])) / 1000.0;
    assert!(cts > 0.0, "x265 ultrafast uses B-frames");
    assert_probe(&path, &["hevc", "aac"], &[video, audio], 3.0 + cts);
}
