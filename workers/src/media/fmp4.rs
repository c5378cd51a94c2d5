//! Fragmented MP4 (ISO BMFF) from FLV tags: the recorder's crash-safe MP4 files and HLS
//! segments.
//!
//! An fMP4 stream is an init segment (`ftyp` + `moov`: the tracks and their decoder configs,
//! no samples) followed by fragments (`moof` + `mdat`), each playable once written, so a file
//! cut short by a crash is valid up to its last whole fragment.
//!
//! [`Fmp4Muxer`] takes the tags of one monotonic timeline. H.264 and HEVC (legacy FLV codec
//! ids 7 and 12, or Enhanced RTMP `avc1`/`hvc1`) go to track 1 at 90 kHz, AAC to track 2 at
//! its sampling rate. A sample's duration is the next sample's DTS minus its own, so a sample
//! is complete only once the next one of its track has arrived; [`Fmp4Muxer::flush`] also emits
//! the last samples, with a guessed duration.
//!
//! Cutting: [`Fmp4Muxer::push`] says [`Pushed::Keyframe`] when a video keyframe was queued;
//! [`Fmp4Muxer::take_fragment`] called then returns everything before that keyframe, so the
//! next fragment starts with it.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::adts::{AacConfig, AdtsError};
use crate::media::flv::{FlvTag, TagType, SOUND_FORMAT_AAC, VIDEO_CODEC_AVC, VIDEO_CODEC_HEVC};
use crate::media::sps::{avc_size, hevc_size};

/// Track ids: fixed, so a fragment's meaning does not depend on which tracks exist.
const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;
const VIDEO_TIMESCALE: u64 = 90_000;
/// Samples per AAC frame (of the core coder).
const AAC_FRAME: u64 = 1024;
/// The last frame's duration when the stream gave no interval (one frame at 25 fps).
const DEFAULT_FRAME_MS: u64 = 40;
/// `sample_flags`: a sync sample (depends on nothing) / a non-sync sample depending on others.
const SYNC_SAMPLE: u32 = 0x0200_0000;
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// Errors of the muxer. Each concerns one tag, which is dropped; the muxer stays usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Fmp4Error {
    /// A video codec other than H.264 and HEVC.
    #[error("unsupported video codec: {0}")]
    UnsupportedVideo(String),
    /// An audio format other than AAC.
    #[error("unsupported FLV sound format {0} (only AAC is muxed)")]
    UnsupportedAudio(u8),
    /// A tag too short for its own header.
    #[error("truncated FLV {0:?} tag")]
    Truncated(TagType),
    /// An AVC/HEVC decoder configuration record that cannot be read (no SPS, bad SPS).
    #[error("bad {0} decoder configuration record")]
    BadVideoConfig(&'static str),
    /// An AudioSpecificConfig that cannot be read.
    #[error(transparent)]
    BadAudioConfig(#[from] AdtsError),
    /// A DTS earlier than the previous one of its track (the timeline must be monotonic).
    #[error("{track} DTS went back from {from} ms to {to} ms")]
    TimestampWentBack {
        /// `video` or `audio`.
        track: &'static str,
        /// The previous DTS.
        from: u64,
        /// The DTS of the refused tag.
        to: u64,
    },
}

/// What [`Fmp4Muxer::push`] did with a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing: a script tag, an end-of-sequence, a sequence header equal to the current one,
    /// a frame before its track's config, or a video frame before the first keyframe.
    Ignored,
    /// A track's first config, before the track set is known ([`Fmp4Muxer::init_segment`]
    /// may now or later return `Some`).
    Config,
    /// A sample was queued.
    Sample,
    /// A video keyframe was queued: everything before it is complete, and a
    /// [`Fmp4Muxer::take_fragment`] now returns a fragment that ends just before it.
    Keyframe,
    /// A different sequence header, or a new track, after the track set was known. What was
    /// queued under the old config is closed into one fragment (its last samples with guessed
    /// durations): take it with [`Fmp4Muxer::take_fragment`], end the file/segment, then
    /// start again with [`Fmp4Muxer::init_segment`], which describes the new config.
    ConfigChanged,
}

/// How the times in fragments relate to the tags' timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timeline {
    /// `tfdt` is the tag DTS itself (scaled): segments of one HLS recording line up even
    /// across init segments.
    #[default]
    Absolute,
    /// `tfdt` counts from the first sample of the sequence: a new MP4 file that starts at 0.
    FromZero,
}

/// One `moof` + `mdat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The boxes, to append after the init segment (or the previous fragment).
    pub bytes: Bytes,
    /// Tag DTS (ms, on the input timeline whatever the [`Timeline`]) of the first video
    /// sample, or of the first audio sample when the fragment has no video.
    pub start_ms: u64,
    /// From `start_ms` to the end of the last sample of that same track: consecutive
    /// fragments of a stream add up exactly (except after a guessed last duration).
    pub duration_ms: u64,
    /// The first video sample is a keyframe (true when there is no video).
    pub starts_with_keyframe: bool,
    /// Video samples in the fragment.
    pub video_samples: u32,
    /// Audio samples (AAC frames) in the fragment.
    pub audio_samples: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Codec {
    Avc,
    Hevc,
    Aac(AacConfig),
}

/// A track's decoder config: the record goes verbatim into `avcC`/`hvcC`/`esds`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    codec: Codec,
    record: Bytes,
    width: u16,
    height: u16,
}

#[derive(Debug)]
struct Sample {
    dts: u64,
    /// Composition offset (PTS − DTS), ms.
    cts: i32,
    key: bool,
    data: Bytes,
}

#[derive(Debug)]
struct Track {
    config: Config,
    pending: VecDeque<Sample>,
    last_dts: Option<u64>,
    /// The last DTS step seen, the guess for the last frame's duration.
    interval: u64,
}

/// One track's part of a fragment, ready to write.
struct Run {
    track_id: u32,
    video: bool,
    base: u64,
    /// Duration, size, flags, composition offset (all in the track's timescale).
    entries: Vec<(u32, u32, u32, i32)>,
    data: Vec<Bytes>,
    start_ms: u64,
    end_ms: u64,
    first_key: bool,
}

impl Track {
    fn new(config: Config) -> Self {
        Track {
            config,
            pending: VecDeque::new(),
            last_dts: None,
            interval: 0,
        }
    }

    fn timescale(&self) -> u64 {
        match &self.config.codec {
            Codec::Aac(aac) => u64::from(aac.sample_rate),
            _ => VIDEO_TIMESCALE,
        }
    }

    /// Milliseconds in the track's timescale. Every time is rounded from the absolute ms, never
    /// accumulated, so durations telescope and `tfdt` stays continuous.
    fn ticks(&self, ms: u64) -> u64 {
        (ms * self.timescale() + 500) / 1000
    }

    fn queue(&mut self, name: &'static str, sample: Sample) -> Result<(), Fmp4Error> {
        if let Some(last) = self.last_dts {
            if sample.dts < last {
                return Err(Fmp4Error::TimestampWentBack {
                    track: name,
                    from: last,
                    to: sample.dts,
                });
            }
            if sample.dts > last {
                self.interval = sample.dts - last;
            }
        }
        self.last_dts = Some(sample.dts);
        self.pending.push_back(sample);
        Ok(())
    }

    /// Takes the first `n` pending samples. The last one ends where the next pending sample
    /// starts, or, when none is left, one AAC frame / one frame interval later.
    fn take_run(&mut self, n: usize, origin: u64, track_id: u32) -> Option<Run> {
        let samples: Vec<Sample> = self.pending.drain(..n.min(self.pending.len())).collect();
        let last = samples.last()?;
        let video = track_id == VIDEO_TRACK;
        let rel = |ms: u64| ms.saturating_sub(origin);
        let (end_ms, end_ticks) = match (self.pending.front(), video) {
            (Some(next), _) => (next.dts, self.ticks(rel(next.dts))),
            (None, true) => {
                let step = if self.interval > 0 {
                    self.interval
                } else {
                    DEFAULT_FRAME_MS
                };
                (last.dts + step, self.ticks(rel(last.dts + step)))
            }
            (None, false) => {
                let ms = (AAC_FRAME * 1000).div_ceil(self.timescale());
                (last.dts + ms, self.ticks(rel(last.dts)) + AAC_FRAME)
            }
        };
        let starts: Vec<u64> = samples.iter().map(|s| self.ticks(rel(s.dts))).collect();
        let entries = samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let end = starts.get(i + 1).copied().unwrap_or(end_ticks);
                let duration = u32::try_from(end.saturating_sub(starts[i])).unwrap_or(u32::MAX);
                let flags = if s.key || !video {
                    SYNC_SAMPLE
                } else {
                    NON_SYNC_SAMPLE
                };
                // 90 ticks per ms.
                let cts = s.cts.saturating_mul(90);
                (duration, s.data.len() as u32, flags, cts)
            })
            .collect();
        Some(Run {
            track_id,
            video,
            base: starts[0],
            entries,
            start_ms: samples[0].dts,
            end_ms,
            first_key: samples[0].key,
            data: samples.into_iter().map(|s| s.data).collect(),
        })
    }
}

/// Fragmented-MP4 muxer of one FLV timeline. Pure: bytes in, bytes out, no I/O.
///
/// Usage: [`push`](Self::push) every tag; once [`init_segment`](Self::init_segment) is `Some`
/// write it, then write what [`take_fragment`](Self::take_fragment) returns (at
/// [`Pushed::Keyframe`] to start fragments with keyframes) and [`flush`](Self::flush) at the
/// end. The tracks are known when both have a config, or after
/// [`seal_tracks`](Self::seal_tracks) for a stream with only one.
#[derive(Debug, Default)]
pub struct Fmp4Muxer {
    video: Option<Track>,
    audio: Option<Track>,
    sealed: bool,
    /// Video frames are dropped until a keyframe: a fragment must start where a decoder can.
    waiting_key: bool,
    /// Fragments closed by a config change, handed out before anything else.
    closed: VecDeque<Fragment>,
    /// The last `mfhd` sequence number written.
    sequence: u32,
    timeline: Timeline,
    /// The DTS that is time 0 of a [`Timeline::FromZero`] sequence, once known.
    origin: Option<u64>,
}

impl Fmp4Muxer {
    /// A muxer with no tracks yet, on the [`Timeline::Absolute`] timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new init + fragments sequence (a new file or HLS rendition): `mfhd` numbers
    /// restart at 1 and, with [`Timeline::FromZero`], times at 0 from the next fragment's
    /// first sample. Pending samples are kept: they open the new sequence.
    pub fn start_sequence(&mut self, timeline: Timeline) {
        self.sequence = 0;
        self.timeline = timeline;
        self.origin = None;
    }

    /// Declares that no other track is coming: an audio-only or video-only stream muxes from
    /// here on with the tracks that have a config. A track appearing later is a
    /// [`Pushed::ConfigChanged`].
    pub fn seal_tracks(&mut self) {
        self.sealed = true;
    }

    /// Whether the track set is final (both tracks, or sealed with at least one).
    pub fn tracks_known(&self) -> bool {
        let (v, a) = (self.video.is_some(), self.audio.is_some());
        (v && a) || (self.sealed && (v || a))
    }

    /// Whether there is a video track.
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// Whether there is an audio track.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Milliseconds of complete samples queued, on the video track when there is one: what a
    /// [`take_fragment`](Self::take_fragment) would cover now. Compare it with the target
    /// duration at a [`Pushed::Keyframe`].
    pub fn pending_ms(&self) -> u64 {
        let Some(t) = self.video.as_ref().or(self.audio.as_ref()) else {
            return 0;
        };
        match (t.pending.front(), t.pending.back()) {
            (Some(first), Some(last)) => last.dts - first.dts,
            _ => 0,
        }
    }

    /// Adds a tag. Script tags are ignored; sequence headers set their track's config.
    pub fn push(&mut self, tag: &FlvTag) -> Result<Pushed, Fmp4Error> {
        match tag.tag_type {
            TagType::Script => Ok(Pushed::Ignored),
            TagType::Video => self.push_video(tag),
            TagType::Audio => self.push_audio(tag),
        }
    }

    fn push_video(&mut self, tag: &FlvTag) -> Result<Pushed, Fmp4Error> {
        let d = &tag.data;
        let truncated = || Fmp4Error::Truncated(TagType::Video);
        let first = *d.first().ok_or_else(truncated)?;
        // (codec, is a config, composition offset, where the payload starts)
        let (codec, config, cts, at) = if first & 0x80 != 0 {
            // Enhanced RTMP: frame type, packet type, FourCC.
            let fourcc = d.get(1..5).ok_or_else(truncated)?;
            let codec = match fourcc {
                b"avc1" => Codec::Avc,
                b"hvc1" => Codec::Hevc,
                _ => {
                    let name = String::from_utf8_lossy(fourcc).into_owned();
                    return Err(Fmp4Error::UnsupportedVideo(name));
                }
            };
            match first & 0x0f {
                0 => (codec, true, 0, 5),
                1 => (codec, false, cts24(d.get(5..8).ok_or_else(truncated)?), 8),
                // CodedFramesX: no composition offset.
                3 => (codec, false, 0, 5),
                // SequenceEnd, Metadata, MPEG-2 TS sequence start.
                _ => return Ok(Pushed::Ignored),
            }
        } else {
            let codec = match first & 0x0f {
                VIDEO_CODEC_AVC => Codec::Avc,
                VIDEO_CODEC_HEVC => Codec::Hevc,
                id => return Err(Fmp4Error::UnsupportedVideo(format!("FLV codec id {id}"))),
            };
            match *d.get(1).ok_or_else(truncated)? {
                0 => (codec, true, 0, 5),
                1 => (codec, false, cts24(d.get(2..5).ok_or_else(truncated)?), 5),
                _ => return Ok(Pushed::Ignored),
            }
        };
        // Frame type 5 is a command / video info frame: no picture.
        if (first >> 4) & 0x07 == 5 {
            return Ok(Pushed::Ignored);
        }
        if d.len() < at {
            return Err(truncated());
        }
        let body = d.slice(at..);
        if config {
            let config = video_config(codec, body)?;
            return Ok(self.set_config(true, config));
        }
        let key = (first >> 4) & 0x07 == 1;
        let Some(track) = self.video.as_mut() else {
            return Ok(Pushed::Ignored);
        };
        if body.is_empty() || track.config.codec != codec || (self.waiting_key && !key) {
            return Ok(Pushed::Ignored);
        }
        let dts = u64::from(tag.timestamp);
        track.queue(
            "video",
            Sample {
                dts,
                cts,
                key,
                data: body,
            },
        )?;
        if !key {
            return Ok(Pushed::Sample);
        }
        if std::mem::take(&mut self.waiting_key) {
            // Audio that ended before the first picture would play over nothing.
            if let Some(audio) = self.audio.as_mut() {
                while audio.pending.get(1).is_some_and(|next| next.dts <= dts) {
                    audio.pending.pop_front();
                }
            }
        }
        Ok(Pushed::Keyframe)
    }

    fn push_audio(&mut self, tag: &FlvTag) -> Result<Pushed, Fmp4Error> {
        let d = &tag.data;
        let (Some(&first), Some(&packet)) = (d.first(), d.get(1)) else {
            return Err(Fmp4Error::Truncated(TagType::Audio));
        };
        if first >> 4 != SOUND_FORMAT_AAC {
            return Err(Fmp4Error::UnsupportedAudio(first >> 4));
        }
        let body = d.slice(2..);
        if packet == 0 {
            let aac = AacConfig::parse(&body)?;
            let config = Config {
                codec: Codec::Aac(aac),
                record: body,
                width: 0,
                height: 0,
            };
            return Ok(self.set_config(false, config));
        }
        let Some(track) = self.audio.as_mut() else {
            return Ok(Pushed::Ignored);
        };
        if body.is_empty() {
            return Ok(Pushed::Ignored);
        }
        let sample = Sample {
            dts: u64::from(tag.timestamp),
            cts: 0,
            key: true,
            data: body,
        };
        track.queue("audio", sample)?;
        Ok(Pushed::Sample)
    }

    fn set_config(&mut self, video: bool, config: Config) -> Pushed {
        let known = self.tracks_known();
        let slot = if video {
            &mut self.video
        } else {
            &mut self.audio
        };
        match slot {
            Some(t) if t.config == config => return Pushed::Ignored,
            // Nothing was written yet: what was queued under the old config has no init
            // segment to go with and is dropped.
            Some(t) if !known => {
                t.config = config;
                t.pending.clear();
            }
            None if !known => *slot = Some(Track::new(config)),
            _ => {
                if let Some(f) = self.build(true) {
                    self.closed.push_back(f);
                }
                let slot = if video {
                    &mut self.video
                } else {
                    &mut self.audio
                };
                match slot {
                    Some(t) => t.config = config,
                    None => *slot = Some(Track::new(config)),
                }
                self.waiting_key |= video;
                return Pushed::ConfigChanged;
            }
        }
        self.waiting_key |= video;
        Pushed::Config
    }

    /// The `ftyp` + `moov` of the current tracks, once they are known.
    pub fn init_segment(&self) -> Option<Bytes> {
        if !self.tracks_known() {
            return None;
        }
        let tracks = [(VIDEO_TRACK, &self.video), (AUDIO_TRACK, &self.audio)];
        let tracks: Vec<(u32, &Track)> = tracks
            .into_iter()
            .filter_map(|(id, t)| Some((id, t.as_ref()?)))
            .collect();
        let mut o = BytesMut::with_capacity(1024);
        bx(&mut o, b"ftyp", |o| {
            o.put_slice(b"iso6");
            o.put_u32(0);
            for brand in [b"iso6", b"isom", b"mp41", b"dash"] {
                o.put_slice(brand);
            }
        });
        bx(&mut o, b"moov", |o| {
            full(o, b"mvhd", 0, 0, |o| {
                o.put_bytes(0, 8); // creation and modification times
                o.put_u32(1000);
                o.put_u32(0); // duration: in the fragments
                o.put_u32(0x0001_0000); // rate 1.0
                o.put_u16(0x0100); // volume 1.0
                o.put_bytes(0, 10);
                MATRIX.iter().for_each(|&m| o.put_u32(m));
                o.put_bytes(0, 24);
                o.put_u32(AUDIO_TRACK + 1);
            });
            for &(id, t) in &tracks {
                trak(o, id, t);
            }
            bx(o, b"mvex", |o| {
                for &(id, _) in &tracks {
                    full(o, b"trex", 0, 0, |o| {
                        o.put_u32(id);
                        o.put_u32(1); // sample description index
                        o.put_bytes(0, 12); // default duration, size, flags: in each trun
                    });
                }
            });
        });
        Some(o.freeze())
    }

    /// A fragment of every complete pending sample: with video, the video samples before the
    /// last queued one and the audio that starts before it; without, all audio but the last
    /// frame. `None` when there is nothing to emit, while the track set is not known, or (with
    /// video) while no video sample is complete. Also hands out the fragments closed by a
    /// [`Pushed::ConfigChanged`] first.
    pub fn take_fragment(&mut self) -> Option<Fragment> {
        self.closed.pop_front().or_else(|| self.build(false))
    }

    /// The end of the stream (or of a file): like [`take_fragment`](Self::take_fragment) but
    /// with every pending sample, the last video sample lasting the previous frame interval
    /// and the last AAC frame 1024 samples. Call until `None`.
    pub fn flush(&mut self) -> Option<Fragment> {
        self.closed.pop_front().or_else(|| self.build(true))
    }

    fn build(&mut self, all: bool) -> Option<Fragment> {
        if !self.tracks_known() {
            return None;
        }
        let (nv, cut) = match &self.video {
            Some(v) if all => (v.pending.len(), u64::MAX),
            Some(v) => (v.pending.len().saturating_sub(1), v.pending.back()?.dts),
            None => (0, u64::MAX),
        };
        if self.video.is_some() && nv == 0 && !all {
            return None;
        }
        let na = match &self.audio {
            Some(a) if all => a.pending.len(),
            Some(a) => {
                let complete = a.pending.len().saturating_sub(1);
                a.pending
                    .iter()
                    .take(complete)
                    .take_while(|s| s.dts < cut)
                    .count()
            }
            None => 0,
        };
        let first = |t: &Option<Track>, n: usize| match t {
            Some(t) if n > 0 => t.pending.front().map(|s| s.dts),
            _ => None,
        };
        let start = first(&self.video, nv)
            .into_iter()
            .chain(first(&self.audio, na))
            .min()?;
        let origin = match self.timeline {
            Timeline::Absolute => 0,
            Timeline::FromZero => *self.origin.get_or_insert(start),
        };
        let video = self
            .video
            .as_mut()
            .and_then(|t| t.take_run(nv, origin, VIDEO_TRACK));
        let audio = self
            .audio
            .as_mut()
            .and_then(|t| t.take_run(na, origin, AUDIO_TRACK));
        let runs: Vec<Run> = video.into_iter().chain(audio).collect();
        let main = runs.first()?;
        self.sequence += 1;
        let count = |video: bool| {
            runs.iter()
                .filter(|r| r.video == video)
                .map(|r| r.entries.len() as u32)
                .sum()
        };
        Some(Fragment {
            start_ms: main.start_ms,
            duration_ms: main.end_ms - main.start_ms,
            starts_with_keyframe: !main.video || main.first_key,
            video_samples: count(true),
            audio_samples: count(false),
            bytes: write_fragment(self.sequence, &runs),
        })
    }
}

/// The signed 24-bit composition offset of an FLV video tag.
fn cts24(b: &[u8]) -> i32 {
    (i32::from_be_bytes([b[0], b[1], b[2], 0])) >> 8
}

fn video_config(codec: Codec, record: Bytes) -> Result<Config, Fmp4Error> {
    let (size, name) = match codec {
        Codec::Hevc => (hevc_size(&record), "HEVC"),
        _ => (avc_size(&record), "AVC"),
    };
    let (width, height) = size.ok_or(Fmp4Error::BadVideoConfig(name))?;
    let clamp = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
    Ok(Config {
        codec,
        record,
        width: clamp(width),
        height: clamp(height),
    })
}

/// Writes a box: its size (patched once the body is written), its type, its body.
fn bx(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Writes a full box (version and flags first).
fn full(
    out: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    bx(out, kind, |o| {
        o.put_u32((u32::from(version) << 24) | flags);
        body(o);
    });
}

/// Writes an MPEG-4 descriptor (tag, 4-byte length, body) for `esds`.
fn descriptor(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let start = out.len();
    out.put_u32(0);
    body(out);
    let len = out.len() - start - 4;
    let bytes = [21, 14, 7, 0].map(|s| ((len >> s) & 0x7f) as u8 | if s > 0 { 0x80 } else { 0 });
    out[start..start + 4].copy_from_slice(&bytes);
}

fn trak(o: &mut BytesMut, id: u32, t: &Track) {
    let c = &t.config;
    let video = id == VIDEO_TRACK;
    bx(o, b"trak", |o| {
        // Flags: enabled, in movie.
        full(o, b"tkhd", 0, 3, |o| {
            o.put_bytes(0, 8);
            o.put_u32(id);
            o.put_bytes(0, 4 + 4 + 8 + 4); // reserved, duration, reserved, layer + group
            o.put_u16(if video { 0 } else { 0x0100 });
            o.put_u16(0);
            MATRIX.iter().for_each(|&m| o.put_u32(m));
            o.put_u32(u32::from(c.width) << 16);
            o.put_u32(u32::from(c.height) << 16);
        });
        bx(o, b"mdia", |o| {
            full(o, b"mdhd", 0, 0, |o| {
                o.put_bytes(0, 8);
                o.put_u32(t.timescale() as u32);
                o.put_u32(0);
                o.put_u16(0x55c4); // "und"
                o.put_u16(0);
            });
            full(o, b"hdlr", 0, 0, |o| {
                o.put_u32(0);
                o.put_slice(if video { b"vide" } else { b"soun" });
                o.put_bytes(0, 12);
                o.put_slice(if video {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            bx(o, b"minf", |o| {
                if video {
                    full(o, b"vmhd", 0, 1, |o| o.put_bytes(0, 8));
                } else {
                    full(o, b"smhd", 0, 0, |o| o.put_u32(0));
                }
                bx(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        o.put_u32(1);
                        full(o, b"url ", 0, 1, |_| {}); // the data is in this file
                    });
                });
                bx(o, b"stbl", |o| {
                    full(o, b"stsd", 0, 0, |o| {
                        o.put_u32(1);
                        sample_entry(o, c);
                    });
                    // No samples here: they are all in the fragments.
                    for kind in [b"stts", b"stsc", b"stco"] {
                        full(o, kind, 0, 0, |o| o.put_u32(0));
                    }
                    full(o, b"stsz", 0, 0, |o| o.put_bytes(0, 8));
                });
            });
        });
    });
}

fn sample_entry(o: &mut BytesMut, c: &Config) {
    let (kind, config_box): (&[u8; 4], &[u8; 4]) = match &c.codec {
        Codec::Avc => (b"avc1", b"avcC"),
        Codec::Hevc => (b"hvc1", b"hvcC"),
        Codec::Aac(aac) => {
            bx(o, b"mp4a", |o| {
                o.put_bytes(0, 6);
                o.put_u16(1); // data reference index
                o.put_bytes(0, 8);
                o.put_u16(if aac.channels == 0 {
                    2
                } else {
                    u16::from(aac.channels)
                });
                o.put_u16(16);
                o.put_u32(0);
                o.put_u32(aac.sample_rate.min(0xffff) << 16);
                full(o, b"esds", 0, 0, |o| {
                    descriptor(o, 3, |o| {
                        o.put_u16(0); // ES id
                        o.put_u8(0);
                        descriptor(o, 4, |o| {
                            o.put_u8(0x40); // MPEG-4 audio
                            o.put_u8(0x15); // audio stream
                            o.put_bytes(0, 3 + 4 + 4); // buffer size, max and average rates
                            descriptor(o, 5, |o| o.put_slice(&c.record));
                        });
                        descriptor(o, 6, |o| o.put_u8(2));
                    });
                });
            });
            return;
        }
    };
    bx(o, kind, |o| {
        o.put_bytes(0, 6);
        o.put_u16(1);
        o.put_bytes(0, 16);
        o.put_u16(c.width);
        o.put_u16(c.height);
        o.put_u32(0x0048_0000); // 72 dpi
        o.put_u32(0x0048_0000);
        o.put_u32(0);
        o.put_u16(1); // frame count
        o.put_bytes(0, 32); // compressor name
        o.put_u16(0x18);
        o.put_i16(-1);
        bx(o, config_box, |o| o.put_slice(&c.record));
    });
}

fn write_fragment(sequence: u32, runs: &[Run]) -> Bytes {
    let data_len: usize = runs.iter().flat_map(|r| &r.data).map(|d| d.len()).sum();
    let mut out = BytesMut::with_capacity(
        data_len + 256 + runs.iter().map(|r| r.entries.len() * 16).sum::<usize>(),
    );
    let mut offsets = Vec::with_capacity(runs.len());
    bx(&mut out, b"moof", |o| {
        full(o, b"mfhd", 0, 0, |o| o.put_u32(sequence));
        for r in runs {
            bx(o, b"traf", |o| {
                // Flags: default-base-is-moof (data offsets count from the moof).
                full(o, b"tfhd", 0, 0x02_0000, |o| o.put_u32(r.track_id));
                full(o, b"tfdt", 1, 0, |o| o.put_u64(r.base));
                // Flags: data offset, sample duration, size, flags (+ composition offset);
                // version 1 makes the composition offsets signed.
                let cts = r.video;
                let flags = 0x0701 | if cts { 0x0800 } else { 0 };
                full(o, b"trun", u8::from(cts), flags, |o| {
                    o.put_u32(r.entries.len() as u32);
                    offsets.push(o.len());
                    o.put_u32(0);
                    for &(duration, size, flags, offset) in &r.entries {
                        o.put_u32(duration);
                        o.put_u32(size);
                        o.put_u32(flags);
                        if cts {
                            o.put_i32(offset);
                        }
                    }
                });
            });
        }
    });
    let mut at = out.len() + 8;
    out.put_u32((8 + data_len) as u32);
    out.put_slice(b"mdat");
    for (r, pos) in runs.iter().zip(offsets) {
        out[pos..pos + 4].copy_from_slice(&(at as u32).to_be_bytes());
        for d in &r.data {
            out.put_slice(d);
            at += d.len();
        }
    }
    out.freeze()
}

#[cfg(test)]
#[path = "fmp4_tests.rs"]
pub(crate) mod tests;
