//! AAC configuration and ADTS framing, for `.aac` recordings (and the fMP4 muxer's `esds`).
//!
//! FLV carries AAC as raw frames plus one AudioSpecificConfig (the sequence header); a raw
//! `.aac` file needs every frame behind a 7-byte ADTS header that repeats that config.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::flv::{FlvTag, TagType, SOUND_FORMAT_AAC};
use crate::media::mpegts::Bits;

/// Length of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;
/// Largest ADTS frame (13-bit length field, header included).
const MAX_FRAME: usize = 0x1fff;
/// The sampling frequencies of the 4-bit index.
const RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Errors of AAC configuration parsing and ADTS framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdtsError {
    /// The AudioSpecificConfig is truncated or names no sampling frequency.
    #[error("bad AAC AudioSpecificConfig")]
    BadConfig,
    /// ADTS can only carry object types 1 to 4 (Main, LC, SSR, LTP; HE-AAC goes as LC) and the
    /// 13 indexed sampling frequencies.
    #[error("AAC object type {object_type} at {sample_rate} Hz cannot be framed as ADTS")]
    NotAdts {
        /// The audio object type of the config.
        object_type: u8,
        /// The sampling frequency of the config.
        sample_rate: u32,
    },
    /// A raw frame larger than an ADTS frame can be.
    #[error("AAC frame of {0} bytes is too large for ADTS")]
    FrameTooLarge(usize),
    /// An audio tag that is not AAC.
    #[error("FLV sound format {0} is not AAC")]
    NotAac(u8),
    /// A raw AAC frame before any AudioSpecificConfig.
    #[error("AAC frame before the AudioSpecificConfig")]
    NoConfig,
}

/// What an AudioSpecificConfig says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type of the core coder (2 = AAC-LC; for HE-AAC with explicit SBR
    /// signalling, the core's type, not 5).
    pub object_type: u8,
    /// The 4-bit sampling frequency index, `None` for an explicit frequency.
    pub frequency_index: Option<u8>,
    /// Sampling frequency of the core coder: the rate of which every frame holds 1024 samples.
    pub sample_rate: u32,
    /// Channel configuration (0 = given in the bitstream).
    pub channels: u8,
}

impl AacConfig {
    /// Parses an AudioSpecificConfig (the body of an FLV AAC sequence header after its two
    /// bytes).
    pub fn parse(asc: &[u8]) -> Result<Self, AdtsError> {
        let mut b = Bits::new(asc);
        let object_type = |b: &mut Bits| match b.bits(5)? {
            31 => Some(32 + b.bits(6)?),
            t => Some(t),
        };
        let frequency = |b: &mut Bits| match b.bits(4)? {
            15 => Some((None, b.bits(24)?)),
            i => Some((Some(i as u8), *RATES.get(i as usize)?)),
        };
        let parse = |b: &mut Bits| {
            let mut object = object_type(b)?;
            let (frequency_index, sample_rate) = frequency(b)?;
            let channels = b.bits(4)? as u8;
            if object == 5 || object == 29 {
                // Explicit SBR/PS: the extension frequency, then the core's object type.
                frequency(b)?;
                object = object_type(b)?;
            }
            Some(AacConfig {
                object_type: u8::try_from(object).ok()?,
                frequency_index,
                sample_rate,
                channels,
            })
        };
        parse(&mut b)
            .filter(|c| c.sample_rate > 0)
            .ok_or(AdtsError::BadConfig)
    }
}

/// One ADTS frame: the header for `config` and the raw frame `payload`.
pub fn adts_frame(config: &AacConfig, payload: &[u8]) -> Result<Bytes, AdtsError> {
    let not_adts = AdtsError::NotAdts {
        object_type: config.object_type,
        sample_rate: config.sample_rate,
    };
    let Some(freq) = config
        .frequency_index
        .filter(|_| (1..=4).contains(&config.object_type))
    else {
        return Err(not_adts);
    };
    if config.channels > 7 {
        return Err(not_adts);
    }
    let len = ADTS_HEADER_LEN + payload.len();
    if len > MAX_FRAME {
        return Err(AdtsError::FrameTooLarge(payload.len()));
    }
    let profile = config.object_type - 1;
    let ch = config.channels;
    let mut out = BytesMut::with_capacity(len);
    // Sync word, MPEG-4, layer 0, no CRC.
    out.put_slice(&[0xff, 0xf1]);
    out.put_u8((profile << 6) | (freq << 2) | (ch >> 2));
    out.put_u8(((ch & 3) << 6) | (len >> 11) as u8);
    out.put_u8((len >> 3) as u8);
    // Buffer fullness 0x7ff (variable bit rate), one raw data block.
    out.put_u8((((len & 7) as u8) << 5) | 0x1f);
    out.put_u8(0xfc);
    out.put_slice(payload);
    Ok(out.freeze())
}

/// Turns the FLV AAC tags of one stream into ADTS frames: the sequence headers set (or change)
/// the config, every raw frame comes out framed.
#[derive(Debug, Default)]
pub struct AdtsWriter {
    config: Option<AacConfig>,
}

impl AdtsWriter {
    /// A writer waiting for the first AudioSpecificConfig.
    pub fn new() -> Self {
        Self::default()
    }

    /// The config in use.
    pub fn config(&self) -> Option<&AacConfig> {
        self.config.as_ref()
    }

    /// The ADTS frame of an audio tag, `None` for a sequence header or a non-audio tag.
    pub fn push(&mut self, tag: &FlvTag) -> Result<Option<Bytes>, AdtsError> {
        if tag.tag_type != TagType::Audio {
            return Ok(None);
        }
        let (Some(&first), Some(&packet)) = (tag.data.first(), tag.data.get(1)) else {
            return Ok(None);
        };
        if first >> 4 != SOUND_FORMAT_AAC {
            return Err(AdtsError::NotAac(first >> 4));
        }
        let body = &tag.data[2..];
        if packet == 0 {
            self.config = Some(AacConfig::parse(body)?);
            return Ok(None);
        }
        let config = self.config.as_ref().ok_or(AdtsError::NoConfig)?;
        adts_frame(config, body).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::test_media::ffmpeg_media_flv;
    use crate::media::flv::{FlvItem, FlvParser};

    #[test]
    fn parses_configs() {
        // AAC-LC, 44.1 kHz, stereo.
        let lc = AacConfig::parse(&[0x12, 0x10]).expect("lc");
        assert_eq!(
            lc,
            AacConfig {
                object_type: 2,
                frequency_index: Some(4),
                sample_rate: 44_100,
                channels: 2
            }
        );
        // HE-AAC with explicit SBR: object 5, 24 kHz core, stereo, 48 kHz extension, core LC.
        let he = AacConfig::parse(&[0x2b, 0x11, 0x88, 0x00]).expect("he");
        assert_eq!(
            (he.object_type, he.sample_rate, he.channels),
            (2, 24_000, 2)
        );
        assert_eq!(AacConfig::parse(&[0x12]), Err(AdtsError::BadConfig));
        assert_eq!(AacConfig::parse(&[0x17, 0x90]), Err(AdtsError::BadConfig));
    }

    #[test]
    fn header_bits() {
        let lc = AacConfig::parse(&[0x12, 0x10]).expect("lc");
        let f = adts_frame(&lc, &[0xaa; 10]).expect("frame");
        // 17 bytes: 0x11 = 0b0_0000_0010_001 over bytes 3..6.
        assert_eq!(&f[..7], &[0xff, 0xf1, 0x50, 0x80, 0x02, 0x3f, 0xfc]);
        assert_eq!(f.len(), 17);
        assert_eq!(
            adts_frame(&lc, &[0; MAX_FRAME]),
            Err(AdtsError::FrameTooLarge(MAX_FRAME))
        );
        let mut w = AdtsWriter::new();
        let raw = FlvTag::new(TagType::Audio, 0, Bytes::from_static(&[0xaf, 1, 0xaa]));
        assert_eq!(w.push(&raw), Err(AdtsError::NoConfig));
        let mp3 = FlvTag::new(TagType::Audio, 0, Bytes::from_static(&[0x2f, 1, 0xaa]));
        assert_eq!(w.push(&mp3), Err(AdtsError::NotAac(2)));
    }

    /// ffmpeg's AAC in FLV, framed as ADTS, reads back as AAC with the frames and duration.
    #[test]
    fn ffprobe_reads_the_adts_file() {
        crate::require_peers!(Ffmpeg);
        let flv = ffmpeg_media_flv(None, true, 3);
        let mut p = FlvParser::new();
        let mut w = AdtsWriter::new();
        let mut out = Vec::new();
        let mut frames = 0;
        for item in p.feed(&flv).expect("flv") {
            if let FlvItem::Tag(t) = item {
                if let Some(f) = w.push(&t).expect("aac") {
                    out.extend_from_slice(&f);
                    frames += 1;
                }
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.aac");
        std::fs::write(&path, &out).expect("write");
        let probe = crate::media::fmp4::tests::ffprobe(&path);
        let stream = &probe["streams"][0];
        assert_eq!(stream["codec_name"], "aac", "{probe}");
        assert_eq!(
            stream["nb_read_frames"],
            frames.to_string().as_str(),
            "{probe}"
        );
        let duration = crate::media::fmp4::tests::duration(&probe);
        assert!((duration - 3.0).abs() <= 0.1, "duration {duration}");
        crate::media::fmp4::tests::decodes_cleanly(&path);
    }
}
