//! File sinks: one per format of a recording, each turning the splicer's timeline into
//! *parts*, small objects that are durable as soon as they are stored. A part ends at a
//! keyframe once it holds [`PART_TARGET`] of media (an HLS segment, a run of MP4 fragments, of
//! FLV tags or of AAC frames), so a recorder killed mid-stream loses at most the part in
//! progress; a file ends at a keyframe once it holds the template's max length (never for HLS).
//! A [`FormatSink`] only cuts; the session stores the parts and finalizes the files.

use bytes::{Bytes, BytesMut};
use relaycast_core::domain::recording::RecordFormat;

use crate::media::flv::{FlvHeader, FlvTag, TagType};

/// Media per part (and per HLS segment).
pub const PART_TARGET_MS: u64 = 4_000;

/// What a format writer could not do.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The stream cannot go into this format (e.g. AAC of a stream without AAC audio).
    #[error("{format} cannot record this stream: {reason}")]
    Unsupported {
        /// The format.
        format: &'static str,
        /// Why.
        reason: String,
    },
    /// The muxer refused a tag.
    #[error("{format} muxer: {reason}")]
    Mux {
        /// The format.
        format: &'static str,
        /// Why.
        reason: String,
    },
}

/// A finished part's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct PartBody {
    /// The bytes of the object.
    pub bytes: Bytes,
    /// Media it holds, ms.
    pub duration_ms: u64,
}

/// What a format writer said about a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Taken into the part in progress.
    Taken,
    /// Not for this format (e.g. video in an AAC recording).
    Ignored,
    /// Its codec configuration differs from the one the file started with: the file must end
    /// before this tag (the caller cuts, starts a new file, and pushes it again).
    ConfigChanged,
}

/// A format's muxer, cut into parts by its [`FormatSink`].
pub trait PartWriter: Send {
    /// The next part starts a new file: times restart at 0 and whatever a file must begin
    /// with (FLV header, cached sequence headers) goes first.
    fn start_file(&mut self);
    /// Adds a tag to the part in progress.
    fn push(&mut self, tag: &FlvTag) -> Result<Pushed, SinkError>;
    /// Media in the part in progress, ms.
    fn pending_ms(&self) -> u64;
    /// Ends the part in progress; `next_dts` is the timestamp of the tag that follows it (the
    /// durations of its last samples), `None` at the end of the stream. `None` when empty.
    fn take_part(&mut self, next_dts: Option<u32>) -> Result<Option<PartBody>, SinkError>;
    /// The init segment of the parts since the last file start or config change (fMP4).
    fn init_segment(&self) -> Option<Bytes> {
        None
    }
    /// `video_codec` and `WIDTHxHEIGHT` of the stream, when known.
    fn video_info(&self) -> (Option<String>, Option<String>) {
        (None, None)
    }
}

/// What a sink asks the session to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkStep {
    /// Store this part as the next of the current file.
    Part {
        /// The bytes and duration.
        body: PartBody,
        /// The init segment it needs, when it is the first since a file start or a config
        /// change (fMP4).
        init: Option<Bytes>,
        /// It starts a new piece of timeline within the file.
        discontinuity: bool,
    },
    /// The current file is complete (max length or config change); a new one begins with the
    /// next part.
    CloseFile,
}

/// One format of a recording: a writer and where its file and part boundaries fall.
pub struct FormatSink {
    /// The format.
    pub format: RecordFormat,
    writer: Box<dyn PartWriter>,
    /// Longest file, ms; `None` never splits (HLS).
    max_file_ms: Option<u64>,
    /// Media in the current file's stored parts, ms.
    file_ms: u64,
    /// The current file has had a part (or the file is new and empty).
    file_has_parts: bool,
    /// The next part starts a new piece of timeline.
    discontinuity: bool,
    /// The next part needs the writer's (new) init segment.
    init_pending: bool,
    /// A video tag has been seen: parts and files are cut at keyframes only.
    has_video: bool,
    /// Timeline position of the part in progress's first tag.
    part_start: Option<u32>,
    /// The stream cannot go into this format: it takes no more tags.
    disabled: bool,
}

impl FormatSink {
    /// A sink writing `format` through `writer`; `max_file_ms` splits files (ignored for HLS).
    pub fn new(
        format: RecordFormat,
        mut writer: Box<dyn PartWriter>,
        max_file_ms: Option<u64>,
    ) -> Self {
        writer.start_file();
        let max_file_ms = if format == RecordFormat::Hls {
            None
        } else {
            max_file_ms
        };
        FormatSink {
            format,
            writer,
            max_file_ms,
            file_ms: 0,
            file_has_parts: false,
            discontinuity: false,
            init_pending: true,
            has_video: false,
            part_start: None,
            disabled: false,
        }
    }

    /// Takes no more tags (the stream cannot go into this format); what it stored stays, and
    /// [`flush`](Self::flush) still ends the part in progress.
    pub fn disable(&mut self) {
        self.disabled = true;
    }

    /// Whether [`disable`](Self::disable) was called.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Continues a file another recorder left (HLS after a take-over): the next part starts a
    /// new piece of timeline with its own init segment, and the file already holds
    /// `file_ms` of media.
    pub fn resume(&mut self, file_ms: u64) {
        self.file_ms = file_ms;
        self.file_has_parts = file_ms > 0;
        self.discontinuity = file_ms > 0;
        self.init_pending = true;
    }

    /// Media in the current file (stored parts and the part in progress), ms.
    pub fn file_ms(&self) -> u64 {
        self.file_ms + self.writer.pending_ms()
    }

    /// `video_codec` and resolution for the notice.
    pub fn video_info(&self) -> (Option<String>, Option<String>) {
        self.writer.video_info()
    }

    /// Takes one tag of the timeline; returns what to store.
    pub fn push(&mut self, tag: &FlvTag) -> Result<Vec<SinkStep>, SinkError> {
        let mut steps = Vec::new();
        if tag.tag_type == TagType::Video && tag.is_video_frame() {
            self.has_video = true;
        }
        let boundary = if self.has_video {
            tag.tag_type == TagType::Video && tag.is_key_picture()
        } else {
            tag.tag_type == TagType::Audio && !tag.is_sequence_header()
        };
        if let (true, Some(start)) = (boundary, self.part_start) {
            // Up to this tag, which the cut leaves for the next part.
            let pending = u64::from(tag.timestamp.saturating_sub(start));
            let file_full = self
                .max_file_ms
                .is_some_and(|max| self.file_ms + pending >= max)
                && pending > 0;
            if file_full || pending >= PART_TARGET_MS {
                self.cut(Some(tag.timestamp), &mut steps)?;
            }
            if file_full {
                self.close_file(&mut steps);
            }
        }
        let pushed = self.writer.push(tag)?;
        if pushed == Pushed::Taken && self.part_start.is_none() && !tag.is_sequence_header() {
            self.part_start = Some(tag.timestamp);
        }
        match pushed {
            Pushed::Taken | Pushed::Ignored => {}
            Pushed::ConfigChanged => {
                self.cut(Some(tag.timestamp), &mut steps)?;
                self.close_file(&mut steps);
                if let Pushed::ConfigChanged = self.writer.push(tag)? {
                    return Err(SinkError::Mux {
                        format: self.format.as_str(),
                        reason: "a new file refused the new configuration".into(),
                    });
                }
            }
        }
        Ok(steps)
    }

    /// Ends the part in progress (the recording ends, or the recorder hands it over).
    pub fn flush(&mut self) -> Result<Vec<SinkStep>, SinkError> {
        let mut steps = Vec::new();
        self.cut(None, &mut steps)?;
        Ok(steps)
    }

    fn cut(&mut self, next_dts: Option<u32>, steps: &mut Vec<SinkStep>) -> Result<(), SinkError> {
        self.part_start = None;
        if let Some(body) = self.writer.take_part(next_dts)? {
            let init = if self.init_pending {
                self.writer.init_segment()
            } else {
                None
            };
            self.init_pending = false;
            self.file_ms += body.duration_ms;
            self.file_has_parts = true;
            steps.push(SinkStep::Part {
                body,
                init,
                discontinuity: std::mem::take(&mut self.discontinuity),
            });
        }
        Ok(())
    }

    fn close_file(&mut self, steps: &mut Vec<SinkStep>) {
        if self.format == RecordFormat::Hls {
            // One playlist from start to end: a new configuration is a discontinuity with
            // its own init segment, not a new file.
            self.writer.start_file();
            self.discontinuity = self.file_has_parts;
            self.init_pending = true;
            return;
        }
        if self.file_has_parts {
            steps.push(SinkStep::CloseFile);
        }
        self.writer.start_file();
        self.file_ms = 0;
        self.file_has_parts = false;
        self.init_pending = true;
    }
}

/// Holds a recording back until its first video keyframe, so that every format starts at the
/// same picture: a new subscriber of the splicer gets audio at once but video only from the
/// next keyframe, and an FLV or AAC file would otherwise begin with seconds the MP4 and HLS
/// files do not have. Headers and metadata are kept; audio from before the keyframe is
/// dropped. A stream with no video after [`AUDIO_ONLY_AFTER_MS`] is audio only: what was held
/// is released.
#[derive(Debug, Default)]
pub struct StartGate {
    open: bool,
    held: Vec<FlvTag>,
}

/// How long a stream may deliver audio without any video before it is taken as audio only.
pub const AUDIO_ONLY_AFTER_MS: u32 = 10_000;

impl StartGate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tags to record now, given the next one of the timeline.
    pub fn pass(&mut self, tag: FlvTag) -> Vec<FlvTag> {
        if self.open {
            return vec![tag];
        }
        let is_frame = |t: &FlvTag| t.tag_type != TagType::Script && !t.is_sequence_header();
        if tag.tag_type == TagType::Video && tag.is_key_picture() {
            self.open = true;
            let mut out: Vec<FlvTag> = std::mem::take(&mut self.held)
                .into_iter()
                .filter(|t| !is_frame(t) || t.timestamp >= tag.timestamp)
                .collect();
            out.push(tag);
            return out;
        }
        if tag.tag_type == TagType::Video && is_frame(&tag) {
            return Vec::new(); // a picture that needs an earlier keyframe
        }
        let first = self.held.iter().find(|t| is_frame(t)).map(|t| t.timestamp);
        let audio_only =
            first.is_some_and(|f| tag.timestamp.saturating_sub(f) >= AUDIO_ONLY_AFTER_MS);
        self.held.push(tag);
        if audio_only {
            self.open = true;
            return std::mem::take(&mut self.held);
        }
        Vec::new()
    }
}

/// FLV, appended tag by tag: each part is a run of tags, the first part of a file starts with
/// the FLV header, the latest `onMetaData` and the sequence headers, so concatenated parts are
/// a playable file. Times restart at 0 in every file.
#[derive(Default)]
pub struct FlvWriter {
    info: super::formats::VideoInfo,
    metadata: Option<FlvTag>,
    video_header: Option<FlvTag>,
    audio_header: Option<FlvTag>,
    pending: BytesMut,
    /// The next tag is a new file's first.
    new_file: bool,
    /// Timeline position of the file's first tag.
    file_base: Option<u32>,
    part_start: Option<u32>,
    last_dts: u32,
    frame_ms: u32,
}

impl FlvWriter {
    /// A writer with nothing cached.
    pub fn new() -> Self {
        Self::default()
    }

    fn put(&mut self, tag: &FlvTag) {
        let base = *self.file_base.get_or_insert(tag.timestamp);
        tag.with_timestamp(tag.timestamp.saturating_sub(base))
            .write_to(&mut self.pending);
    }
}

impl PartWriter for FlvWriter {
    fn start_file(&mut self) {
        self.new_file = true;
        self.file_base = None;
    }

    fn push(&mut self, tag: &FlvTag) -> Result<Pushed, SinkError> {
        self.info.observe(tag);
        if tag.is_metadata() {
            self.metadata = Some(tag.clone());
            return Ok(Pushed::Ignored);
        }
        if tag.tag_type == TagType::Script {
            return Ok(Pushed::Ignored);
        }
        if tag.is_sequence_header() {
            let slot = if tag.tag_type == TagType::Video {
                &mut self.video_header
            } else {
                &mut self.audio_header
            };
            let same = slot.as_ref().is_some_and(|h| h.data == tag.data);
            *slot = Some(tag.clone());
            if same || self.new_file {
                return Ok(Pushed::Ignored);
            }
            // FLV players take a new sequence header mid-file, so keep it in the file.
        }
        if self.new_file {
            self.new_file = false;
            self.file_base = Some(tag.timestamp);
            // Both flags set: the audio header may arrive after the first video tag, and
            // players read the tags, not the flags.
            FlvHeader::default().write_to(&mut self.pending);
            for cached in [
                self.metadata.clone(),
                self.video_header.clone(),
                self.audio_header.clone(),
            ]
            .into_iter()
            .flatten()
            {
                self.put(&cached.with_timestamp(tag.timestamp));
            }
        }
        if self.part_start.is_none() {
            self.part_start = Some(tag.timestamp);
        }
        if tag.tag_type == TagType::Video && tag.timestamp > self.last_dts {
            self.frame_ms = tag.timestamp - self.last_dts;
        }
        self.last_dts = self.last_dts.max(tag.timestamp);
        self.put(tag);
        Ok(Pushed::Taken)
    }

    fn pending_ms(&self) -> u64 {
        self.part_start
            .map_or(0, |s| u64::from(self.last_dts.saturating_sub(s)))
    }

    fn take_part(&mut self, next_dts: Option<u32>) -> Result<Option<PartBody>, SinkError> {
        let Some(start) = self.part_start.take() else {
            return Ok(None);
        };
        let end = next_dts.unwrap_or(self.last_dts.saturating_add(self.frame_ms.clamp(1, 1000)));
        let bytes = std::mem::take(&mut self.pending).freeze();
        Ok(Some(PartBody {
            bytes,
            duration_ms: u64::from(end.saturating_sub(start)),
        }))
    }

    fn video_info(&self) -> (Option<String>, Option<String>) {
        self.info.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{FlvItem, FlvParser};

    fn tags_of(flv: &[u8]) -> Vec<FlvTag> {
        let mut parser = FlvParser::new();
        parser
            .feed(flv)
            .unwrap()
            .into_iter()
            .filter_map(|i| {
                if let FlvItem::Tag(t) = i {
                    Some(t)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn the_gate_opens_at_the_first_keyframe_or_for_audio_only_streams() {
        let audio = |ts| FlvTag::new(TagType::Audio, ts, Bytes::from_static(&[0xaf, 0x01, 0x21]));
        let header = FlvTag::new(
            TagType::Audio,
            0,
            Bytes::from_static(&[0xaf, 0x00, 0x12, 0x10]),
        );
        let inter = FlvTag::new(
            TagType::Video,
            40,
            Bytes::from_static(&[0x27, 0x01, 0, 0, 0]),
        );
        let key = FlvTag::new(
            TagType::Video,
            1_000,
            Bytes::from_static(&[0x17, 0x01, 0, 0, 0]),
        );
        let mut gate = StartGate::new();
        assert!(gate.pass(header.clone()).is_empty());
        assert!(gate.pass(audio(0)).is_empty());
        assert!(gate.pass(inter).is_empty());
        assert!(gate.pass(audio(1_000)).is_empty());
        let out = gate.pass(key.clone());
        assert_eq!(out, vec![header.clone(), audio(1_000), key]);
        assert_eq!(gate.pass(audio(1_023)), vec![audio(1_023)]);

        let mut gate = StartGate::new();
        for ts in (0..AUDIO_ONLY_AFTER_MS).step_by(500) {
            assert!(gate.pass(audio(ts)).is_empty());
        }
        assert_eq!(gate.pass(audio(AUDIO_ONLY_AFTER_MS)).len(), 21);
    }

    #[test]
    fn flv_parts_cut_at_keyframes_and_files_split_at_the_max_length() {
        crate::test_peers::require(&[crate::test_peers::Peer::Ffmpeg]);
        // 12 s with a keyframe every 2 s; files of at most 5 s.
        let tags = tags_of(&crate::media::flv::test_media::ffmpeg_flv(320, 240, 12));
        let mut sink = FormatSink::new(RecordFormat::Flv, Box::new(FlvWriter::new()), Some(5_000));
        let mut steps = Vec::new();
        for tag in &tags {
            steps.extend(sink.push(tag).unwrap());
        }
        steps.extend(sink.flush().unwrap());
        let mut files: Vec<Vec<PartBody>> = vec![vec![]];
        for step in steps {
            match step {
                SinkStep::Part { body, .. } => files.last_mut().unwrap().push(body),
                SinkStep::CloseFile => files.push(vec![]),
            }
        }
        // Files close at the first keyframe at or after 5 s: 6 s, 6 s.
        let durations: Vec<u64> = files
            .iter()
            .map(|f| f.iter().map(|p| p.duration_ms).sum())
            .collect();
        assert_eq!(durations.len(), 2, "{durations:?}");
        for d in &durations {
            assert!((5_900..=6_100).contains(d), "{durations:?}");
        }
        // Each file is a playable FLV starting with a keyframe at 0.
        for file in files {
            let bytes: Vec<u8> = file.iter().flat_map(|p| p.bytes.to_vec()).collect();
            let tags = tags_of(&bytes);
            let first_frame = tags.iter().find(|t| t.is_video_frame()).unwrap();
            assert!(first_frame.is_key_picture());
            assert!(
                first_frame.timestamp < 100,
                "file starts at {}",
                first_frame.timestamp
            );
            assert!(
                tags.iter().any(|t| t.is_video_sequence_header())
                    && tags.iter().any(|t| t.is_audio_sequence_header())
            );
        }
    }
}
