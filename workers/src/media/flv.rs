//! Incremental FLV demuxer and muxer.
//!
//! The ingest ffmpeg writes FLV to a pipe, which arrives in chunks of any size and alignment.
//! [`FlvParser`] buffers those chunks and hands out whole tags; [`FlvTag::write_to`] and
//! [`FlvHeader::write_to`] produce FLV again (for file sinks and tests).
//!
//! Only the parts of the FLV body that the relay needs are inspected: tag type, timestamp,
//! keyframe flag and whether a tag carries a codec configuration (sequence header) or the
//! `onMetaData` script. Payloads are kept as [`Bytes`] so a tag fans out to many pushers
//! without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the FLV file header (`FLV`, version, flags, header size).
pub const FLV_HEADER_LEN: usize = 9;
/// Length of an FLV tag header (type, size, timestamp, stream id).
pub const TAG_HEADER_LEN: usize = 11;
/// Length of the `PreviousTagSize` field that follows every tag (and the header).
pub const PREV_TAG_SIZE_LEN: usize = 4;

/// FLV codec id for H.264/AVC video.
pub const VIDEO_CODEC_AVC: u8 = 7;
/// FLV codec id for H.265/HEVC video (the widespread Chinese-CDN extension).
pub const VIDEO_CODEC_HEVC: u8 = 12;
/// FLV sound format for AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;

/// Errors of the FLV demuxer. Any of them means the byte stream is not FLV (or is corrupt), so
/// the ingest that produced it should be treated as failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    /// The stream does not start with the `FLV` signature.
    #[error("not an FLV stream: bad signature {0:02x?}")]
    BadSignature([u8; 3]),
    /// The header's data offset is smaller than the fixed header.
    #[error("FLV header size {0} is smaller than {FLV_HEADER_LEN}")]
    BadHeaderSize(u32),
    /// A tag type that FLV does not define (only audio 8, video 9 and script 18 exist).
    #[error("unknown FLV tag type {0}")]
    UnknownTagType(u8),
    /// The parser was fed after a previous error; it does not resynchronise.
    #[error("FLV parser is in a failed state after an earlier error")]
    Poisoned,
}

/// The kind of an FLV tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagType {
    /// Audio tag (type 8).
    Audio,
    /// Video tag (type 9).
    Video,
    /// Script data tag (type 18), e.g. `onMetaData`.
    Script,
}

impl TagType {
    /// The FLV wire value of this tag type.
    pub fn code(self) -> u8 {
        match self {
            TagType::Audio => 8,
            TagType::Video => 9,
            TagType::Script => 18,
        }
    }

    /// Parses the FLV wire value (the low five bits of the first tag byte).
    pub fn from_code(code: u8) -> Result<Self, FlvError> {
        match code & 0x1f {
            8 => Ok(TagType::Audio),
            9 => Ok(TagType::Video),
            18 => Ok(TagType::Script),
            other => Err(FlvError::UnknownTagType(other)),
        }
    }
}

/// The FLV file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvHeader {
    /// FLV version (always 1 in practice).
    pub version: u8,
    /// The stream announces audio tags.
    pub has_audio: bool,
    /// The stream announces video tags.
    pub has_video: bool,
}

impl Default for FlvHeader {
    fn default() -> Self {
        FlvHeader {
            version: 1,
            has_audio: true,
            has_video: true,
        }
    }
}

impl FlvHeader {
    /// Writes the 9-byte header followed by `PreviousTagSize0` (0).
    pub fn write_to(&self, out: &mut BytesMut) {
        out.put_slice(b"FLV");
        out.put_u8(self.version);
        let mut flags = 0u8;
        if self.has_audio {
            flags |= 0x04;
        }
        if self.has_video {
            flags |= 0x01;
        }
        out.put_u8(flags);
        out.put_u32(FLV_HEADER_LEN as u32);
        out.put_u32(0);
    }
}

/// One FLV tag: its type, its timestamp in milliseconds and its body (everything after the
/// 11-byte tag header, without the trailing `PreviousTagSize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// Audio, video or script.
    pub tag_type: TagType,
    /// Decode timestamp in milliseconds (24 bits plus the extended byte = 32 bits).
    pub timestamp: u32,
    /// Tag body.
    pub data: Bytes,
}

impl FlvTag {
    /// Builds a tag.
    pub fn new(tag_type: TagType, timestamp: u32, data: Bytes) -> Self {
        FlvTag {
            tag_type,
            timestamp,
            data,
        }
    }

    /// The same tag with another timestamp (the body is shared, not copied).
    pub fn with_timestamp(&self, timestamp: u32) -> Self {
        FlvTag {
            tag_type: self.tag_type,
            timestamp,
            data: self.data.clone(),
        }
    }

    /// Video codec id of a video tag. For Enhanced-RTMP tags (`IsExHeader` bit set) the FourCC
    /// `avc1`/`hvc1` is mapped onto the legacy ids so callers need only one check.
    pub fn video_codec(&self) -> Option<u8> {
        if self.tag_type != TagType::Video {
            return None;
        }
        let first = *self.data.first()?;
        if first & 0x80 != 0 {
            let fourcc = self.data.get(1..5)?;
            return match fourcc {
                b"avc1" => Some(VIDEO_CODEC_AVC),
                b"hvc1" => Some(VIDEO_CODEC_HEVC),
                _ => None,
            };
        }
        Some(first & 0x0f)
    }

    /// Whether this is a video tag carrying a keyframe (frame type 1). Sequence headers are
    /// flagged as keyframes by muxers too; use [`FlvTag::is_video_sequence_header`] to tell
    /// them apart.
    pub fn is_keyframe(&self) -> bool {
        self.tag_type == TagType::Video && self.data.first().is_some_and(|b| (b & 0x70) >> 4 == 1)
    }

    /// Whether this is an AVC or HEVC decoder configuration record (a video sequence header).
    pub fn is_video_sequence_header(&self) -> bool {
        if self.tag_type != TagType::Video {
            return false;
        }
        let Some(&first) = self.data.first() else {
            return false;
        };
        if first & 0x80 != 0 {
            // Enhanced RTMP: the low nibble is the packet type; 0 = SequenceStart.
            return first & 0x0f == 0 && self.video_codec().is_some();
        }
        matches!(first & 0x0f, VIDEO_CODEC_AVC | VIDEO_CODEC_HEVC) && self.data.get(1) == Some(&0)
    }

    /// Whether this is an AVC/HEVC end-of-sequence marker (packet type 2). ffmpeg's FLV muxer
    /// writes one at the end of every output; it carries the keyframe flag but no picture.
    pub fn is_video_end_of_sequence(&self) -> bool {
        if self.tag_type != TagType::Video {
            return false;
        }
        let Some(&first) = self.data.first() else {
            return false;
        };
        if first & 0x80 != 0 {
            return first & 0x0f == 2;
        }
        matches!(first & 0x0f, VIDEO_CODEC_AVC | VIDEO_CODEC_HEVC) && self.data.get(1) == Some(&2)
    }

    /// Whether this video tag carries a picture (not a sequence header or end marker).
    pub fn is_video_frame(&self) -> bool {
        self.tag_type == TagType::Video
            && !self.is_video_sequence_header()
            && !self.is_video_end_of_sequence()
    }

    /// Whether this is a video keyframe carrying a picture: where a decoder can start.
    pub fn is_key_picture(&self) -> bool {
        self.is_keyframe() && self.is_video_frame()
    }

    /// Whether this is an AAC AudioSpecificConfig (an audio sequence header).
    pub fn is_audio_sequence_header(&self) -> bool {
        self.tag_type == TagType::Audio
            && self
                .data
                .first()
                .is_some_and(|b| b >> 4 == SOUND_FORMAT_AAC)
            && self.data.get(1) == Some(&0)
    }

    /// Whether this is a sequence header of either kind.
    pub fn is_sequence_header(&self) -> bool {
        self.is_video_sequence_header() || self.is_audio_sequence_header()
    }

    /// Whether this is a script tag whose first AMF0 value is the string `onMetaData`
    /// (or `@setDataFrame`, which RTMP publishers put in front of it).
    pub fn is_metadata(&self) -> bool {
        if self.tag_type != TagType::Script {
            return false;
        }
        // AMF0 string marker (2), u16 length, bytes.
        let d = &self.data;
        if d.len() < 3 || d[0] != 0x02 {
            return false;
        }
        let len = u16::from_be_bytes([d[1], d[2]]) as usize;
        matches!(
            d.get(3..3 + len),
            Some(b"onMetaData") | Some(b"@setDataFrame")
        )
    }

    /// Size of this tag on the wire, including header and `PreviousTagSize`.
    pub fn wire_len(&self) -> usize {
        TAG_HEADER_LEN + self.data.len() + PREV_TAG_SIZE_LEN
    }

    /// Appends the tag in FLV wire format (header, body, `PreviousTagSize`).
    ///
    /// Bodies longer than the 24-bit size field allows cannot be produced by the parser; such a
    /// tag is truncated to 16 MiB - 1 rather than writing a corrupt size.
    pub fn write_to(&self, out: &mut BytesMut) {
        let body = &self.data[..self.data.len().min(0x00ff_ffff)];
        let size = body.len() as u32;
        out.reserve(TAG_HEADER_LEN + body.len() + PREV_TAG_SIZE_LEN);
        out.put_u8(self.tag_type.code());
        put_u24(out, size);
        put_u24(out, self.timestamp & 0x00ff_ffff);
        out.put_u8((self.timestamp >> 24) as u8);
        put_u24(out, 0);
        out.put_slice(body);
        out.put_u32(size + TAG_HEADER_LEN as u32);
    }
}

fn put_u24(out: &mut BytesMut, v: u32) {
    out.put_u8((v >> 16) as u8);
    out.put_u8((v >> 8) as u8);
    out.put_u8(v as u8);
}

/// What the parser found next in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvItem {
    /// The file header (always the first item).
    Header(FlvHeader),
    /// A complete tag.
    Tag(FlvTag),
}

#[derive(Debug)]
enum ParserState {
    Header,
    /// Skipping the rest of an over-long header and `PreviousTagSize0`.
    Skip(usize),
    Tags,
    Failed,
}

/// Incremental FLV demuxer: [`push`](FlvParser::push) bytes as they arrive, then call
/// [`next_item`](FlvParser::next_item) until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FlvParser {
    buf: BytesMut,
    state: ParserState,
    bytes_in: u64,
}

impl Default for FlvParser {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvParser {
    /// A parser expecting the FLV header first.
    pub fn new() -> Self {
        FlvParser {
            buf: BytesMut::with_capacity(64 * 1024),
            state: ParserState::Header,
            bytes_in: 0,
        }
    }

    /// Appends bytes from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes_in += chunk.len() as u64;
        self.buf.extend_from_slice(chunk);
    }

    /// Total bytes pushed so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes buffered but not yet returned as a tag.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete item, `Ok(None)` when more bytes are needed. After an error
    /// the parser stays failed: FLV has no sync marker to recover on.
    pub fn next_item(&mut self) -> Result<Option<FlvItem>, FlvError> {
        loop {
            match self.state {
                ParserState::Failed => return Err(FlvError::Poisoned),
                ParserState::Header => {
                    if self.buf.len() < FLV_HEADER_LEN {
                        return Ok(None);
                    }
                    if &self.buf[..3] != b"FLV" {
                        let sig = [self.buf[0], self.buf[1], self.buf[2]];
                        self.state = ParserState::Failed;
                        return Err(FlvError::BadSignature(sig));
                    }
                    let version = self.buf[3];
                    let flags = self.buf[4];
                    let offset =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
                    if (offset as usize) < FLV_HEADER_LEN {
                        self.state = ParserState::Failed;
                        return Err(FlvError::BadHeaderSize(offset));
                    }
                    self.buf.advance(FLV_HEADER_LEN);
                    // Skip any header extension plus PreviousTagSize0.
                    self.state =
                        ParserState::Skip(offset as usize - FLV_HEADER_LEN + PREV_TAG_SIZE_LEN);
                    return Ok(Some(FlvItem::Header(FlvHeader {
                        version,
                        has_audio: flags & 0x04 != 0,
                        has_video: flags & 0x01 != 0,
                    })));
                }
                ParserState::Skip(n) => {
                    let take = n.min(self.buf.len());
                    self.buf.advance(take);
                    if take < n {
                        self.state = ParserState::Skip(n - take);
                        return Ok(None);
                    }
                    self.state = ParserState::Tags;
                }
                ParserState::Tags => {
                    if self.buf.len() < TAG_HEADER_LEN {
                        return Ok(None);
                    }
                    let tag_type = match TagType::from_code(self.buf[0]) {
                        Ok(t) => t,
                        Err(e) => {
                            self.state = ParserState::Failed;
                            return Err(e);
                        }
                    };
                    let size =
                        u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
                    let timestamp =
                        u32::from_be_bytes([self.buf[7], self.buf[4], self.buf[5], self.buf[6]]);
                    let total = TAG_HEADER_LEN + size + PREV_TAG_SIZE_LEN;
                    if self.buf.len() < total {
                        // Reserve once so a large keyframe does not regrow the buffer per chunk.
                        self.buf.reserve(total - self.buf.len());
                        return Ok(None);
                    }
                    self.buf.advance(TAG_HEADER_LEN);
                    let data = self.buf.split_to(size).freeze();
                    // PreviousTagSize is redundant; muxers disagree on it, so it is not checked.
                    self.buf.advance(PREV_TAG_SIZE_LEN);
                    return Ok(Some(FlvItem::Tag(FlvTag {
                        tag_type,
                        timestamp,
                        data,
                    })));
                }
            }
        }
    }

    /// Pushes a chunk and collects every complete item it finishes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<FlvItem>, FlvError> {
        self.push(chunk);
        let mut items = Vec::new();
        while let Some(item) = self.next_item()? {
            items.push(item);
        }
        Ok(items)
    }
}

/// Test helpers shared by the unit tests of the data-plane modules.
#[cfg(test)]
pub(crate) mod test_media {
    use std::process::{Command, Stdio};

    /// Generates real FLV with the system ffmpeg: H.264 (`-g 50`) + AAC, `secs` long. The
    /// caller [`crate::test_peers::require`]s ffmpeg first; an ffmpeg that fails here panics
    /// with its error output.
    pub fn ffmpeg_flv(width: u32, height: u32, secs: u32) -> Vec<u8> {
        ffmpeg_media_flv(Some((width, height, 50)), true, secs)
    }

    /// [`ffmpeg_flv`] with a choice of tracks: `video` is `(width, height, GOP in frames)` of
    /// 25 fps H.264, `audio` a 44.1 kHz AAC sine.
    pub fn ffmpeg_media_flv(video: Option<(u32, u32, u32)>, audio: bool, secs: u32) -> Vec<u8> {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
        if let Some((width, height, _)) = video {
            cmd.args(["-f", "lavfi", "-i"])
                .arg(format!("testsrc2=size={width}x{height}:rate=25"));
        }
        if audio {
            cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
        }
        cmd.args(["-t", &secs.to_string()]);
        if let Some((_, _, gop)) = video {
            cmd.args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                &gop.to_string(),
            ]);
        }
        if audio {
            cmd.args(["-c:a", "aac"]);
        }
        let out = cmd
            .args(["-f", "flv", "-"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ffmpeg: {e}"));
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "ffmpeg could not make the test FLV ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

#[cfg(test)]
mod tests {
    use super::test_media::ffmpeg_flv;
    use super::*;

    fn parse_all(bytes: &[u8], chunk: usize) -> (Option<FlvHeader>, Vec<FlvTag>) {
        let mut p = FlvParser::new();
        let mut header = None;
        let mut tags = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            for item in p.feed(c).expect("valid flv") {
                match item {
                    FlvItem::Header(h) => header = Some(h),
                    FlvItem::Tag(t) => tags.push(t),
                }
            }
        }
        assert_eq!(p.buffered(), 0, "trailing bytes left");
        (header, tags)
    }

    #[test]
    fn parses_real_ffmpeg_flv_in_any_chunking() {
        crate::require_peers!(Ffmpeg);
        let flv = ffmpeg_flv(640, 360, 3);
        let (header, tags) = parse_all(&flv, flv.len());
        let header = header.expect("header");
        assert!(header.has_audio && header.has_video);

        assert!(tags[0].is_metadata(), "ffmpeg writes onMetaData first");
        let video: Vec<_> = tags
            .iter()
            .filter(|t| t.tag_type == TagType::Video)
            .collect();
        let audio: Vec<_> = tags
            .iter()
            .filter(|t| t.tag_type == TagType::Audio)
            .collect();
        assert!(video[0].is_video_sequence_header());
        assert_eq!(video[0].video_codec(), Some(VIDEO_CODEC_AVC));
        assert!(audio[0].is_audio_sequence_header());
        assert_eq!(tags.iter().filter(|t| t.is_sequence_header()).count(), 2);
        // 3 s at 25 fps, GOP 50: 75 frames, keyframes at 0 s and 2 s.
        assert!(video.last().is_some_and(|t| t.is_video_end_of_sequence()));
        let frames: Vec<_> = video.iter().filter(|t| t.is_video_frame()).collect();
        assert_eq!(frames.len(), 75);
        let keys: Vec<u32> = frames
            .iter()
            .filter(|t| t.is_keyframe())
            .map(|t| t.timestamp)
            .collect();
        assert_eq!(keys.len(), 2, "keyframes at {keys:?}");
        assert!(
            keys[1] >= 1960 && keys[1] <= 2100,
            "second keyframe at {}",
            keys[1]
        );
        // Timestamps are DTS: monotonic per track.
        for w in frames.windows(2) {
            assert!(w[1].timestamp >= w[0].timestamp);
        }
        let last = frames.last().map(|t| t.timestamp).unwrap_or(0);
        assert!((2800..=3100).contains(&last), "last video ts {last}");

        // Chunking must not matter.
        for chunk in [1, 7, 11, 15, 4096, 65536] {
            let (_, again) = parse_all(&flv, chunk);
            assert_eq!(again, tags, "chunk size {chunk}");
        }
    }

    #[test]
    fn serializer_round_trips_real_flv_byte_for_byte() {
        crate::require_peers!(Ffmpeg);
        let flv = ffmpeg_flv(320, 240, 1);
        let (header, tags) = parse_all(&flv, 1000);
        let mut out = BytesMut::new();
        header.expect("header").write_to(&mut out);
        for t in &tags {
            t.write_to(&mut out);
        }
        assert_eq!(&out[..], &flv[..]);
    }

    #[test]
    fn extended_timestamp_byte() {
        let tag = FlvTag::new(
            TagType::Audio,
            0x1234_5678,
            Bytes::from_static(&[0xaf, 1, 9]),
        );
        let mut out = BytesMut::new();
        FlvHeader::default().write_to(&mut out);
        tag.write_to(&mut out);
        assert_eq!(&out[13 + 4..13 + 8], &[0x34, 0x56, 0x78, 0x12]);
        let (_, tags) = parse_all(&out, 3);
        assert_eq!(tags, vec![tag]);
    }

    #[test]
    fn detects_hevc_and_enhanced_rtmp_sequence_headers() {
        let hevc = FlvTag::new(TagType::Video, 0, Bytes::from_static(&[0x1c, 0, 0, 0, 0]));
        assert!(hevc.is_video_sequence_header() && hevc.is_keyframe());
        assert_eq!(hevc.video_codec(), Some(VIDEO_CODEC_HEVC));
        let ex = FlvTag::new(
            TagType::Video,
            0,
            Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1']),
        );
        assert!(ex.is_video_sequence_header() && ex.is_keyframe());
        let ex_frame = FlvTag::new(
            TagType::Video,
            0,
            Bytes::from_static(&[0x91, b'h', b'v', b'c', b'1']),
        );
        assert!(!ex_frame.is_video_sequence_header());
        let inter = FlvTag::new(TagType::Video, 0, Bytes::from_static(&[0x27, 1, 0, 0, 0]));
        assert!(!inter.is_keyframe() && !inter.is_video_sequence_header());
    }

    #[test]
    fn rejects_non_flv() {
        let mut p = FlvParser::new();
        p.push(b"GIF89a....");
        assert!(matches!(p.next_item(), Err(FlvError::BadSignature(_))));
        assert_eq!(p.next_item(), Err(FlvError::Poisoned));
    }

    /// Fuzz-style: arbitrary bytes, arbitrary chunking, with and without a valid header, never
    /// panic and never loop forever. A small xorshift keeps the test dependency-free and
    /// reproducible.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let len = (next() % 2048) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                let mut h = BytesMut::new();
                FlvHeader::default().write_to(&mut h);
                bytes.splice(0..0, h.iter().copied());
            }
            if round % 3 == 0 && bytes.len() > 13 {
                // Plausible tag types so the parser goes deep into tag bodies.
                bytes[13] = [8u8, 9, 18][(next() % 3) as usize];
            }
            let mut p = FlvParser::new();
            let mut pos = 0;
            while pos < bytes.len() {
                let n = 1 + (next() % 300) as usize;
                let end = (pos + n).min(bytes.len());
                p.push(&bytes[pos..end]);
                pos = end;
                let mut guard = 0;
                loop {
                    guard += 1;
                    assert!(guard < 10_000, "parser loops");
                    match p.next_item() {
                        Ok(Some(FlvItem::Tag(t))) => {
                            let _ = (t.is_keyframe(), t.is_sequence_header(), t.is_metadata());
                            let _ = t.video_codec();
                        }
                        Ok(Some(FlvItem::Header(_))) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
}
