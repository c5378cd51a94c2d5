//! The FLV `onMetaData` script tag, both ways.
//!
//! `rml_rtmp` publishes and plays metadata as its own [`StreamMetadata`], while the splicer
//! carries FLV script tags: a native pull turns what it plays into a script body
//! ([`metadata_script`]), a pusher turns a script body back into what it publishes
//! ([`metadata_from_script`]), and the splicer and the MPEG-TS demuxer read and write the same
//! form. One codec for both directions keeps the two from drifting apart.

use std::collections::HashMap;
use std::io::Cursor;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;

/// Converts an FLV `onMetaData` body into `rml_rtmp`'s metadata (which is all its publish API
/// accepts). Returns `None` for other script data.
pub fn metadata_from_script(data: &Bytes) -> Option<StreamMetadata> {
    let values = rml_amf0::deserialize(&mut Cursor::new(&data[..])).ok()?;
    let mut it = values.into_iter();
    let mut name = it.next()?.get_string()?;
    if name == "@setDataFrame" {
        name = it.next()?.get_string()?;
    }
    if name != "onMetaData" {
        return None;
    }
    let props: HashMap<String, Amf0Value> = it.next()?.get_object_properties()?;
    let num = |k: &str| match props.get(k) {
        Some(Amf0Value::Number(n)) if n.is_finite() && *n >= 0.0 => Some(*n),
        _ => None,
    };
    let mut m = StreamMetadata::new();
    m.video_width = num("width").map(|n| n as u32);
    m.video_height = num("height").map(|n| n as u32);
    m.video_codec_id = num("videocodecid").map(|n| n as u32);
    m.video_frame_rate = num("framerate").map(|n| n as f32);
    m.video_bitrate_kbps = num("videodatarate").map(|n| n as u32);
    m.audio_codec_id = num("audiocodecid").map(|n| n as u32);
    m.audio_bitrate_kbps = num("audiodatarate").map(|n| n as u32);
    m.audio_sample_rate = num("audiosamplerate").map(|n| n as u32);
    m.audio_channels = num("audiochannels").map(|n| n as u32);
    m.audio_is_stereo = match props.get("stereo") {
        Some(Amf0Value::Boolean(b)) => Some(*b),
        _ => None,
    };
    m.encoder = match props.get("encoder") {
        Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
        _ => None,
    };
    Some(m)
}

/// An FLV `onMetaData` body from the metadata `rml_rtmp` parsed (a pusher turns it back into
/// the same [`StreamMetadata`] with [`metadata_from_script`], so nothing it would publish is lost).
pub fn metadata_script(m: &StreamMetadata) -> Bytes {
    let mut props: HashMap<String, Amf0Value> = HashMap::new();
    let mut num = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            props.insert(k.to_string(), Amf0Value::Number(v));
        }
    };
    num("width", m.video_width.map(f64::from));
    num("height", m.video_height.map(f64::from));
    num("videocodecid", m.video_codec_id.map(f64::from));
    num("framerate", m.video_frame_rate.map(f64::from));
    num("videodatarate", m.video_bitrate_kbps.map(f64::from));
    num("audiocodecid", m.audio_codec_id.map(f64::from));
    num("audiodatarate", m.audio_bitrate_kbps.map(f64::from));
    num("audiosamplerate", m.audio_sample_rate.map(f64::from));
    num("audiochannels", m.audio_channels.map(f64::from));
    if let Some(b) = m.audio_is_stereo {
        props.insert("stereo".into(), Amf0Value::Boolean(b));
    }
    if let Some(e) = &m.encoder {
        props.insert("encoder".into(), Amf0Value::Utf8String(e.clone()));
    }
    let values = vec![
        Amf0Value::Utf8String("onMetaData".into()),
        Amf0Value::Object(props),
    ];
    Bytes::from(rml_amf0::serialize(&values).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{FlvTag, TagType};

    #[test]
    fn converts_ffmpeg_metadata() {
        crate::require_peers!(Ffmpeg);
        let flv = crate::media::flv::test_media::ffmpeg_flv(320, 240, 1);
        let mut p = crate::media::flv::FlvParser::new();
        let items = p.feed(&flv).expect("flv");
        let meta = items
            .into_iter()
            .find_map(|i| match i {
                crate::media::flv::FlvItem::Tag(t) if t.is_metadata() => Some(t),
                _ => None,
            })
            .expect("metadata tag");
        let m = metadata_from_script(&meta.data).expect("parsed");
        assert_eq!((m.video_width, m.video_height), (Some(320), Some(240)));
        assert_eq!(m.video_codec_id, Some(7));
        assert_eq!(m.audio_codec_id, Some(10));
    }

    #[test]
    fn metadata_round_trips_through_the_script_tag() {
        let mut m = StreamMetadata::new();
        m.video_width = Some(1280);
        m.video_height = Some(720);
        m.video_codec_id = Some(7);
        m.video_frame_rate = Some(25.0);
        m.audio_codec_id = Some(10);
        m.audio_sample_rate = Some(44100);
        m.audio_is_stereo = Some(true);
        m.encoder = Some("Lavf59".into());
        let tag = FlvTag::new(TagType::Script, 0, metadata_script(&m));
        assert!(tag.is_metadata());
        let back = metadata_from_script(&tag.data).expect("parses");
        assert_eq!(back.video_width, Some(1280));
        assert_eq!(back.video_height, Some(720));
        assert_eq!(back.video_codec_id, Some(7));
        assert_eq!(back.video_frame_rate, Some(25.0));
        assert_eq!(back.audio_sample_rate, Some(44100));
        assert_eq!(back.audio_is_stereo, Some(true));
        assert_eq!(back.encoder.as_deref(), Some("Lavf59"));
    }
}
