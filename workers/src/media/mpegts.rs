//! MPEG-TS from an ingest ffmpeg turned into FLV tags, for what ffmpeg's FLV muxer cannot
//! write: HEVC video (`libx265`), carried as Enhanced RTMP (`hvc1`) tags.
//!
//! Debian 12's ffmpeg (5.1) refuses HEVC in FLV, so a `libx265` ingest writes MPEG-TS to its
//! stdout and this demuxer cuts it into the same [`FlvTag`]s the splicer takes from an FLV
//! ingest: an `onMetaData` with the picture size (from the SPS) and an Enhanced RTMP sequence
//! start (`hvcC`) whenever the parameter sets change, then
//! one coded-frames tag per access unit with its composition offset; AAC (ADTS) as FLV AAC
//! tags with an AudioSpecificConfig header; MP3 as FLV MP3 tags. Other streams are ignored.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::media::flv::{FlvTag, TagType};

const PACKET: usize = 188;
const SYNC: u8 = 0x47;
const STREAM_HEVC: u8 = 0x24;
const STREAM_AAC_ADTS: u8 = 0x0f;
const STREAM_MP3: [u8; 2] = [0x03, 0x04];
/// HEVC NAL unit types.
const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;
const NAL_AUD: u8 = 35;
/// Enhanced RTMP: the `IsExHeader` bit, packet types, frame types.
const EX_HEADER: u8 = 0x80;
const PACKET_SEQUENCE_START: u8 = 0;
const PACKET_CODED_FRAMES: u8 = 1;
const FRAME_KEY: u8 = 1;
const FRAME_INTER: u8 = 2;
/// At most this much of one PES is buffered (a runaway stream is cut, not buffered).
const MAX_PES: usize = 8 * 1024 * 1024;

/// Errors of the demuxer: the stream is not MPEG-TS.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TsError {
    /// A packet did not start with the sync byte.
    #[error("not an MPEG-TS stream (lost sync at byte {0})")]
    LostSync(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hevc,
    Aac,
    Mp3,
}

#[derive(Default)]
struct Pes {
    data: Vec<u8>,
    pts: Option<u64>,
    dts: Option<u64>,
}

/// Incremental MPEG-TS to FLV tags.
#[derive(Default)]
pub struct TsToFlv {
    buf: Vec<u8>,
    offset: u64,
    pmt_pid: Option<u16>,
    streams: HashMap<u16, Kind>,
    pes: HashMap<u16, Pes>,
    tags: VecDeque<FlvTag>,
    /// The parameter sets of the last sequence start sent, to send a new one on a change.
    param_sets: Option<Vec<Vec<u8>>>,
    aac_config: Option<[u8; 2]>,
    /// The first timestamp seen (90 kHz), so the output starts near 0.
    base: Option<u64>,
}

impl TsToFlv {
    /// A demuxer at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; complete tags come out of [`TsToFlv::next_tag`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), TsError> {
        self.buf.extend_from_slice(chunk);
        let mut at = 0;
        while self.buf.len() - at >= PACKET {
            if self.buf[at] != SYNC {
                return Err(TsError::LostSync(self.offset + at as u64));
            }
            let packet: [u8; PACKET] = self.buf[at..at + PACKET].try_into().unwrap_or([0; PACKET]);
            self.packet(&packet);
            at += PACKET;
        }
        self.buf.drain(..at);
        self.offset += at as u64;
        Ok(())
    }

    /// The next complete tag.
    pub fn next_tag(&mut self) -> Option<FlvTag> {
        self.tags.pop_front()
    }

    /// The end of the stream: what is buffered of the last access units comes out.
    pub fn finish(&mut self) {
        let pids: Vec<u16> = self.pes.keys().copied().collect();
        for pid in pids {
            self.flush(pid);
        }
    }

    fn packet(&mut self, p: &[u8; PACKET]) {
        let start = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let adaptation = (p[3] >> 4) & 0x3;
        let mut at = 4;
        if adaptation & 0x2 != 0 {
            at += 1 + usize::from(p[4]);
        }
        if adaptation & 0x1 == 0 || at >= PACKET {
            return;
        }
        let payload = &p[at..];
        if pid == 0 {
            self.pat(start, payload);
        } else if Some(pid) == self.pmt_pid {
            self.pmt(start, payload);
        } else if self.streams.contains_key(&pid) {
            if start {
                self.flush(pid);
                self.begin_pes(pid, payload);
            } else if let Some(pes) = self.pes.get_mut(&pid) {
                if pes.data.len() + payload.len() <= MAX_PES {
                    pes.data.extend_from_slice(payload);
                }
            }
        }
    }

    /// The section of a PSI packet (after the pointer field), when it starts here.
    fn section(start: bool, payload: &[u8]) -> Option<&[u8]> {
        if !start {
            return None;
        }
        let pointer = usize::from(*payload.first()?);
        let s = payload.get(1 + pointer..)?;
        let len = ((usize::from(*s.get(1)?) & 0x0f) << 8) | usize::from(*s.get(2)?);
        // Without the 4-byte CRC.
        s.get(..(3 + len).checked_sub(4)?)
    }

    fn pat(&mut self, start: bool, payload: &[u8]) {
        let Some(s) = Self::section(start, payload) else {
            return;
        };
        for entry in s.get(8..).unwrap_or_default().chunks_exact(4) {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            if program != 0 {
                self.pmt_pid = Some((u16::from(entry[2] & 0x1f) << 8) | u16::from(entry[3]));
                return;
            }
        }
    }

    fn pmt(&mut self, start: bool, payload: &[u8]) {
        let Some(s) = Self::section(start, payload) else {
            return;
        };
        let (Some(&hi), Some(&lo)) = (s.get(10), s.get(11)) else {
            return;
        };
        let info_len = (usize::from(hi & 0x0f) << 8) | usize::from(lo);
        let mut at = 12 + info_len;
        while let Some(e) = s.get(at..at + 5) {
            let pid = (u16::from(e[1] & 0x1f) << 8) | u16::from(e[2]);
            let es_len = (usize::from(e[3] & 0x0f) << 8) | usize::from(e[4]);
            let kind = match e[0] {
                STREAM_HEVC => Some(Kind::Hevc),
                STREAM_AAC_ADTS => Some(Kind::Aac),
                t if STREAM_MP3.contains(&t) => Some(Kind::Mp3),
                _ => None,
            };
            if let Some(kind) = kind {
                self.streams.entry(pid).or_insert(kind);
            }
            at += 5 + es_len;
        }
    }

    fn begin_pes(&mut self, pid: u16, payload: &[u8]) {
        // 00 00 01, stream id, length (2), flags (2), header length, optional fields.
        if payload.len() < 9 || payload[..3] != [0, 0, 1] {
            return;
        }
        let flags = payload[7];
        let header_len = usize::from(payload[8]);
        let pts = payload
            .get(9..14)
            .filter(|_| flags & 0x80 != 0)
            .map(timestamp);
        let dts = payload
            .get(14..19)
            .filter(|_| flags & 0x40 != 0)
            .map(timestamp);
        let data = payload.get(9 + header_len..).unwrap_or_default().to_vec();
        self.pes.insert(pid, Pes { data, pts, dts });
    }

    fn flush(&mut self, pid: u16) {
        let Some(pes) = self.pes.remove(&pid) else {
            return;
        };
        let (Some(kind), Some(pts)) = (self.streams.get(&pid).copied(), pes.pts) else {
            return;
        };
        let dts = pes.dts.unwrap_or(pts);
        let base = *self.base.get_or_insert(dts);
        let ms = |t: u64| (t.wrapping_sub(base) / 90) as u32;
        match kind {
            Kind::Hevc => self.hevc(&pes.data, ms(dts), ms(pts).wrapping_sub(ms(dts)) as i32),
            Kind::Aac => self.aac(&pes.data, ms(pts)),
            Kind::Mp3 => {
                self.tags
                    .push_back(FlvTag::new(TagType::Audio, ms(pts), mp3_tag(&pes.data)))
            }
        }
    }

    fn hevc(&mut self, au: &[u8], dts_ms: u32, cts_ms: i32) {
        let mut params: Vec<Vec<u8>> = Vec::new();
        let mut frame = Vec::with_capacity(au.len() + 16);
        let mut key = false;
        for nal in annex_b_units(au) {
            let Some(&h) = nal.first() else { continue };
            let t = (h >> 1) & 0x3f;
            match t {
                NAL_VPS | NAL_SPS | NAL_PPS => params.push(nal.to_vec()),
                NAL_AUD => {}
                _ => {
                    key |= (16..=23).contains(&t);
                    frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    frame.extend_from_slice(nal);
                }
            }
        }
        if !params.is_empty() && self.param_sets.as_ref() != Some(&params) {
            if let Some(hvcc) = hvcc(&params) {
                // FLV has no other place for the picture size: players and the slate read it
                // from onMetaData.
                if let Some((w, h)) = params
                    .iter()
                    .find(|n| (n[0] >> 1) & 0x3f == NAL_SPS)
                    .and_then(|sps| sps_size(sps))
                {
                    let mut m = rml_rtmp::sessions::StreamMetadata::new();
                    m.video_width = Some(w);
                    m.video_height = Some(h);
                    m.video_codec_id = Some(u32::from(crate::media::flv::VIDEO_CODEC_HEVC));
                    let script = crate::media::metadata::metadata_script(&m);
                    self.tags
                        .push_back(FlvTag::new(TagType::Script, dts_ms, script));
                }
                let mut d = vec![EX_HEADER | (FRAME_KEY << 4) | PACKET_SEQUENCE_START];
                d.extend_from_slice(b"hvc1");
                d.extend_from_slice(&hvcc);
                self.tags
                    .push_back(FlvTag::new(TagType::Video, dts_ms, Bytes::from(d)));
                self.param_sets = Some(params);
            }
        }
        if frame.is_empty() || self.param_sets.is_none() {
            return;
        }
        let kind = if key { FRAME_KEY } else { FRAME_INTER };
        let mut d = Vec::with_capacity(frame.len() + 8);
        d.push(EX_HEADER | (kind << 4) | PACKET_CODED_FRAMES);
        d.extend_from_slice(b"hvc1");
        d.extend_from_slice(&cts_ms.to_be_bytes()[1..]);
        d.extend_from_slice(&frame);
        self.tags
            .push_back(FlvTag::new(TagType::Video, dts_ms, Bytes::from(d)));
    }

    fn aac(&mut self, data: &[u8], pts_ms: u32) {
        let mut at = 0;
        let mut n = 0u32;
        while let Some(h) = data.get(at..at + 7) {
            if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
                break;
            }
            let protection_absent = h[1] & 0x01 != 0;
            let profile = (h[2] >> 6) & 0x3;
            let freq = (h[2] >> 2) & 0xf;
            let channels = ((h[2] & 0x1) << 2) | (h[3] >> 6);
            let len =
                (usize::from(h[3] & 0x3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
            let header = if protection_absent { 7 } else { 9 };
            let Some(raw) = data.get(at + header..at + len) else {
                break;
            };
            let object = profile + 1;
            let config = [
                (object << 3) | (freq >> 1),
                ((freq & 1) << 7) | (channels << 3),
            ];
            if self.aac_config != Some(config) {
                self.aac_config = Some(config);
                let d = vec![0xaf, 0x00, config[0], config[1]];
                self.tags
                    .push_back(FlvTag::new(TagType::Audio, pts_ms, Bytes::from(d)));
            }
            let rate = sample_rate(freq).unwrap_or(44_100);
            let ts = pts_ms.wrapping_add((u64::from(n) * 1024 * 1000 / u64::from(rate)) as u32);
            let mut d = Vec::with_capacity(raw.len() + 2);
            d.extend_from_slice(&[0xaf, 0x01]);
            d.extend_from_slice(raw);
            self.tags
                .push_back(FlvTag::new(TagType::Audio, ts, Bytes::from(d)));
            n += 1;
            at += len.max(header);
        }
    }
}

/// A 33-bit PES timestamp from its 5 bytes.
fn timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x7) << 30
        | u64::from(b[1]) << 22
        | (u64::from(b[2]) >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4]) >> 1
}

fn sample_rate(index: u8) -> Option<u32> {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    RATES.get(usize::from(index)).copied()
}

/// An FLV MP3 audio tag body (44.1 kHz, 16 bit, stereo flags; players read the frame headers).
fn mp3_tag(frames: &[u8]) -> Bytes {
    let mut d = Vec::with_capacity(frames.len() + 1);
    d.push(0x2f);
    d.extend_from_slice(frames);
    Bytes::from(d)
}

/// The NAL units of an Annex B access unit (start codes removed).
fn annex_b_units(au: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(au.len(), |&n| n - 3);
        // A four-byte start code leaves its leading zero on the previous unit.
        while end > s && au[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            out.push(&au[s..end]);
        }
    }
    out
}

/// The NAL payload without emulation prevention bytes (00 00 03 → 00 00).
pub(crate) fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads bits MSB first, with the Exp-Golomb codes of H.265 headers (shared with the fMP4
/// muxer, which reads H.264 SPSs and AudioSpecificConfigs).
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    /// A reader at the first bit of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    pub(crate) fn bits(&mut self, n: usize) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.pos += n;
        (self.pos <= self.data.len() * 8).then_some(())
    }

    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }
}

/// The displayed picture size from an HEVC SPS: the coded size less the conformance window.
pub(crate) fn sps_size(sps: &[u8]) -> Option<(u32, u32)> {
    let r = rbsp(sps);
    let mut b = Bits {
        data: r.get(2..)?,
        pos: 0,
    };
    b.skip(4)?;
    let sub_layers = b.bits(3)? as usize;
    b.skip(1)?;
    // profile_tier_level: the general part, then per sub-layer presence flags and parts.
    b.skip(96)?;
    let mut present = Vec::with_capacity(sub_layers);
    for _ in 0..sub_layers {
        present.push((b.bit()?, b.bit()?));
    }
    if sub_layers > 0 {
        b.skip(2 * (8 - sub_layers))?;
    }
    for (profile, level) in present {
        b.skip(88 * profile as usize + 8 * level as usize)?;
    }
    b.ue()?;
    let chroma = b.ue()?;
    if chroma == 3 {
        b.skip(1)?;
    }
    let (width, height) = (b.ue()?, b.ue()?);
    let (sub_w, sub_h) = match chroma {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    if b.bit()? == 1 {
        let (l, r, t, bo) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        let w = width.checked_sub(sub_w * (l + r))?;
        let h = height.checked_sub(sub_h * (t + bo))?;
        return Some((w, h));
    }
    Some((width, height))
}

/// The HEVCDecoderConfigurationRecord of `params` (VPS, SPS, PPS units). The profile, tier and
/// level come from the SPS; chroma 4:2:0 and 8 bits, which is what the ingest asks of x265.
fn hvcc(params: &[Vec<u8>]) -> Option<Vec<u8>> {
    let sps = params.iter().find(|n| (n[0] >> 1) & 0x3f == NAL_SPS)?;
    let r = rbsp(sps);
    // 2 bytes of NAL header, 1 byte (vps id, max sub layers, nesting), 12 bytes of
    // general profile_tier_level.
    let ptl = r.get(3..15)?;
    let mut v = Vec::with_capacity(64);
    v.push(1);
    v.extend_from_slice(ptl);
    v.extend_from_slice(&[0xf0, 0x00, 0xfc, 0xfc | 1, 0xf8, 0xf8, 0x00, 0x00]);
    // constantFrameRate 0, numTemporalLayers 1, temporalIdNested 1, lengthSizeMinusOne 3.
    v.push((1 << 3) | (1 << 2) | 3);
    let mut arrays: Vec<(u8, Vec<&Vec<u8>>)> = Vec::new();
    for t in [NAL_VPS, NAL_SPS, NAL_PPS] {
        let units: Vec<&Vec<u8>> = params.iter().filter(|n| (n[0] >> 1) & 0x3f == t).collect();
        if !units.is_empty() {
            arrays.push((t, units));
        }
    }
    v.push(arrays.len() as u8);
    for (t, units) in arrays {
        v.push(0x80 | t);
        v.extend_from_slice(&(units.len() as u16).to_be_bytes());
        for u in units {
            v.extend_from_slice(&u16::try_from(u.len()).ok()?.to_be_bytes());
            v.extend_from_slice(u);
        }
    }
    Some(v)
}

/// The HEVC elementary stream (Annex B) of Enhanced RTMP `hvc1` tags: the parameter sets of
/// each sequence start, then every frame's NAL units. For checking a relayed HEVC stream with
/// ffmpeg, whose FLV demuxer (5.1) does not read Enhanced RTMP.
pub fn annex_b_from_flv<'a>(tags: impl IntoIterator<Item = &'a FlvTag>) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tags {
        if t.tag_type != TagType::Video
            || t.video_codec() != Some(crate::media::flv::VIDEO_CODEC_HEVC)
        {
            continue;
        }
        let d = &t.data;
        if t.is_video_sequence_header() {
            // hvcC: 22 bytes, then the arrays.
            let Some(&n) = d.get(5 + 22) else { continue };
            let mut at = 5 + 23;
            for _ in 0..n {
                let Some(h) = d.get(at..at + 3) else { break };
                let count = u16::from_be_bytes([h[1], h[2]]);
                at += 3;
                for _ in 0..count {
                    let Some(l) = d.get(at..at + 2) else { break };
                    let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
                    let Some(unit) = d.get(at + 2..at + 2 + len) else {
                        break;
                    };
                    out.extend_from_slice(&[0, 0, 0, 1]);
                    out.extend_from_slice(unit);
                    at += 2 + len;
                }
            }
        } else if t.is_video_frame() {
            let mut at = 8;
            while let Some(l) = d.get(at..at + 4) {
                let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                let Some(unit) = d.get(at + 4..at + 4 + len) else {
                    break;
                };
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(unit);
                at += 4 + len;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `secs` of x265 + AAC in MPEG-TS from the system ffmpeg; panics with ffmpeg's error
    /// output when it cannot make them (an ffmpeg without libx265, for one).
    fn hevc_aac_ts(secs: u32, size: &str) -> Vec<u8> {
        let out = std::process::Command::new(crate::process::DEFAULT_FFMPEG)
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size={size}:rate=25"),
            ])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", &secs.to_string()])
            .args([
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error:keyint=25",
            ])
            .args([
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts", "pipe:1",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run ffmpeg: {e}"));
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "ffmpeg could not make the HEVC test stream ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Real x265 output: a sequence start first, keyframes every second, AAC with its
    /// config, monotonic decode timestamps; and the same tags however the stream is cut.
    #[test]
    fn hevc_and_aac_from_ffmpeg() {
        crate::require_peers!(Ffmpeg);
        let ts = hevc_aac_ts(3, "320x240");
        let cut = |size: usize| {
            let mut d = TsToFlv::new();
            for c in ts.chunks(size) {
                d.push(c).expect("valid TS");
            }
            d.finish();
            std::iter::from_fn(move || d.next_tag()).collect::<Vec<_>>()
        };
        let tags = cut(64 * 1024);
        let meta = tags.iter().find(|t| t.is_metadata()).expect("onMetaData");
        let m = crate::media::metadata::metadata_from_script(&meta.data).expect("metadata");
        assert_eq!(
            (m.video_width, m.video_height, m.video_codec_id),
            (Some(320), Some(240), Some(12))
        );
        let video: Vec<_> = tags
            .iter()
            .filter(|t| t.tag_type == TagType::Video)
            .collect();
        assert!(
            video[0].is_video_sequence_header(),
            "first video tag is the sequence start"
        );
        assert_eq!(video[0].video_codec(), Some(12));
        let frames: Vec<_> = video.iter().filter(|t| t.is_video_frame()).collect();
        assert_eq!(frames.len(), 75, "3 s at 25 fps");
        assert!(frames[0].is_keyframe());
        assert_eq!(frames.iter().filter(|t| t.is_keyframe()).count(), 3);
        assert!(frames.windows(2).all(|w| w[1].timestamp >= w[0].timestamp));
        let audio: Vec<_> = tags
            .iter()
            .filter(|t| t.tag_type == TagType::Audio)
            .collect();
        assert!(audio[0].is_audio_sequence_header());
        assert!(audio.len() > 100, "{} audio tags", audio.len());
        assert_eq!(cut(188 * 3 + 7).len(), tags.len());

        // What the tags carry decodes: 75 frames of 320x240 HEVC, no error.
        let es = annex_b_from_flv(&tags);
        let mut child = std::process::Command::new(crate::process::DEFAULT_FFMPEG)
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-f",
                "hevc",
                "-i",
                "pipe:0",
            ])
            .args(["-f", "framemd5", "pipe:1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ffmpeg");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &es));
        let out = child.wait_with_output().expect("decode");
        let _ = writer.join();
        let text = String::from_utf8_lossy(&out.stdout);
        let decoded = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(decoded, 75, "decoded frames");
        assert!(text.contains("320x240"), "{text}");
    }

    /// 180 lines are coded as 184 (x265's 8-line blocks): the size comes out of the
    /// conformance window.
    #[test]
    fn the_size_is_the_displayed_one() {
        crate::require_peers!(Ffmpeg);
        let ts = hevc_aac_ts(1, "320x180");
        let mut d = TsToFlv::new();
        d.push(&ts).expect("valid TS");
        d.finish();
        let meta = std::iter::from_fn(|| d.next_tag())
            .find(|t| t.is_metadata())
            .expect("onMetaData");
        let m = crate::media::metadata::metadata_from_script(&meta.data).expect("metadata");
        assert_eq!((m.video_width, m.video_height), (Some(320), Some(180)));
    }

    #[test]
    fn garbage_is_refused() {
        let mut d = TsToFlv::new();
        assert_eq!(d.push(&[0u8; 400]), Err(TsError::LostSync(0)));
    }

    #[test]
    fn annex_b_and_rbsp() {
        let au = [0, 0, 0, 1, 0x40, 1, 0xaa, 0, 0, 1, 0x42, 1, 0, 0, 3, 1];
        let units = annex_b_units(&au);
        assert_eq!(
            units,
            vec![&[0x40, 1, 0xaa][..], &[0x42, 1, 0, 0, 3, 1][..]]
        );
        assert_eq!(rbsp(units[1]), vec![0x42, 1, 0, 0, 1]);
    }
}
