//! The part writers of the fMP4 formats (HLS segments, MP4 files) and of AAC, on the media
//! layer's muxers; and what every writer notes of the stream for the record notice.

use bytes::{Bytes, BytesMut};

use super::sink::{PartBody, PartWriter, Pushed, SinkError};
use crate::media::adts::AdtsWriter;
use crate::media::flv::{FlvTag, TagType, VIDEO_CODEC_AVC, VIDEO_CODEC_HEVC};
use crate::media::fmp4::{self, Fmp4Muxer, Timeline};
use crate::media::metadata::metadata_from_script;
use crate::media::sps;

/// A stream with no audio config after this much video (or the reverse) is muxed with the
/// tracks it has: an audio-only or video-only stream. Longer than any GOP: a new subscriber
/// of the splicer gets audio at once but video only from the next keyframe, and sealing
/// before it would make the video a new track (a second file).
const SEAL_TRACKS_AFTER_MS: u32 = 10_000;

/// `video_codec` and resolution of the stream, for `callback_ext`.
#[derive(Debug, Clone, Default)]
pub struct VideoInfo {
    codec: Option<&'static str>,
    resolution: Option<String>,
}

impl VideoInfo {
    /// Notes what `tag` says (a video sequence header's codec, `onMetaData`'s size).
    pub fn observe(&mut self, tag: &FlvTag) {
        if tag.is_video_sequence_header() {
            let record = tag.data.get(5..).unwrap_or_default();
            let (codec, size) = match tag.video_codec() {
                Some(VIDEO_CODEC_AVC) => (Some("h264"), sps::avc_size(record)),
                Some(VIDEO_CODEC_HEVC) => (Some("h265"), sps::hevc_size(record)),
                _ => (self.codec, None),
            };
            self.codec = codec;
            if let Some((w, h)) = size {
                self.resolution = Some(format!("{w}x{h}"));
            }
        } else if tag.is_metadata() && self.resolution.is_none() {
            if let Some(meta) = metadata_from_script(&tag.data) {
                if let (Some(w), Some(h)) = (meta.video_width, meta.video_height) {
                    if w > 0 && h > 0 {
                        self.resolution = Some(format!("{w}x{h}"));
                    }
                }
            }
        }
    }

    /// `(video_codec, resolution)`.
    pub fn get(&self) -> (Option<String>, Option<String>) {
        (self.codec.map(str::to_string), self.resolution.clone())
    }
}

fn mux_error(format: &'static str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Mux {
        format,
        reason: e.to_string(),
    }
}

/// Fragmented MP4 parts: HLS segments ([`Timeline::Absolute`], one playlist across files'
/// init segments) or the fragments of an MP4 file ([`Timeline::FromZero`], each file from 0).
pub struct Fmp4Writer {
    format: &'static str,
    muxer: Fmp4Muxer,
    timeline: Timeline,
    info: VideoInfo,
    /// First media tag seen, for sealing a one-track stream.
    first_media_ts: Option<u32>,
}

impl Fmp4Writer {
    /// HLS segments.
    pub fn hls() -> Self {
        Self::new("hls", Timeline::Absolute)
    }

    /// MP4 file fragments.
    pub fn mp4() -> Self {
        Self::new("mp4", Timeline::FromZero)
    }

    fn new(format: &'static str, timeline: Timeline) -> Self {
        Fmp4Writer {
            format,
            muxer: Fmp4Muxer::new(),
            timeline,
            info: VideoInfo::default(),
            first_media_ts: None,
        }
    }
}

impl PartWriter for Fmp4Writer {
    fn start_file(&mut self) {
        self.muxer.start_sequence(self.timeline);
    }

    fn push(&mut self, tag: &FlvTag) -> Result<Pushed, SinkError> {
        self.info.observe(tag);
        if tag.tag_type != TagType::Script && !self.muxer.tracks_known() {
            let first = *self.first_media_ts.get_or_insert(tag.timestamp);
            if tag.timestamp.saturating_sub(first) >= SEAL_TRACKS_AFTER_MS {
                self.muxer.seal_tracks();
            }
        }
        Ok(
            match self
                .muxer
                .push(tag)
                .map_err(|e| mux_error(self.format, e))?
            {
                fmp4::Pushed::Ignored => Pushed::Ignored,
                fmp4::Pushed::ConfigChanged => Pushed::ConfigChanged,
                fmp4::Pushed::Config | fmp4::Pushed::Sample | fmp4::Pushed::Keyframe => {
                    Pushed::Taken
                }
            },
        )
    }

    fn pending_ms(&self) -> u64 {
        self.muxer.pending_ms()
    }

    fn take_part(&mut self, _next_dts: Option<u32>) -> Result<Option<PartBody>, SinkError> {
        // Everything pending, the last samples lasting the previous frame interval (exact
        // for a constant frame rate); the next fragment's times come from the DTS, so a
        // guess never accumulates.
        let mut bytes = BytesMut::new();
        let mut duration_ms = 0;
        while let Some(fragment) = self.muxer.flush() {
            bytes.extend_from_slice(&fragment.bytes);
            duration_ms += fragment.duration_ms;
        }
        Ok((!bytes.is_empty()).then(|| PartBody {
            bytes: bytes.freeze(),
            duration_ms,
        }))
    }

    fn init_segment(&self) -> Option<Bytes> {
        self.muxer.init_segment()
    }

    fn video_info(&self) -> (Option<String>, Option<String>) {
        self.info.get()
    }
}

/// ADTS AAC parts: every audio frame framed on its own, so parts concatenate into a file.
#[derive(Default)]
pub struct AacWriter {
    adts: AdtsWriter,
    pending: BytesMut,
    frames: u64,
    info: VideoInfo,
}

impl AacWriter {
    /// A writer waiting for the AudioSpecificConfig.
    pub fn new() -> Self {
        Self::default()
    }

    fn frame_ms(&self) -> f64 {
        self.adts.config().map_or(1024.0 / 44.1, |c| {
            1_024_000.0 / f64::from(c.sample_rate.max(1))
        })
    }
}

impl PartWriter for AacWriter {
    fn start_file(&mut self) {}

    fn push(&mut self, tag: &FlvTag) -> Result<Pushed, SinkError> {
        self.info.observe(tag);
        if tag.tag_type != TagType::Audio {
            return Ok(Pushed::Ignored);
        }
        match self.adts.push(tag).map_err(|e| SinkError::Unsupported {
            format: "aac",
            reason: e.to_string(),
        })? {
            Some(frame) => {
                self.pending.extend_from_slice(&frame);
                self.frames += 1;
                Ok(Pushed::Taken)
            }
            None => Ok(Pushed::Ignored),
        }
    }

    fn pending_ms(&self) -> u64 {
        (self.frames as f64 * self.frame_ms()) as u64
    }

    fn take_part(&mut self, _next_dts: Option<u32>) -> Result<Option<PartBody>, SinkError> {
        if self.frames == 0 {
            return Ok(None);
        }
        let duration_ms = self.pending_ms();
        self.frames = 0;
        Ok(Some(PartBody {
            bytes: std::mem::take(&mut self.pending).freeze(),
            duration_ms,
        }))
    }

    fn video_info(&self) -> (Option<String>, Option<String>) {
        self.info.get()
    }
}
