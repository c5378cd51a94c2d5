//! RTMP chunks of one media message, encoded once for every publisher of a timeline.
//!
//! RTMP header compression (chunk header types 1–3) refers to the previous message on the
//! same chunk stream *of one connection*, so compressed chunks cannot be shared between
//! connections. [`encode_media`] therefore starts every message with a full type-0 header
//! (absolute timestamp, length, type, message stream id) and continues it with type-3 headers:
//! every connection can accept these bytes whatever it sent before, provided that
//!
//! - it announced the same outgoing chunk size ([`CHUNK_SIZE`]; `media::rtmp` sends it for
//!   every client right after `connect`),
//! - its publish stream is [`SHARED_STREAM_ID`] (what nginx-rtmp, SRS and most servers answer
//!   to the first `createStream`); a connection whose server answered another id encodes its
//!   own chunks with [`encode_media`] and its own id,
//! - its session never writes on [`VIDEO_CSID`] or [`AUDIO_CSID`] itself (only type-0 first
//!   chunks are written there, so the peer's state of those chunk streams never matters).
//!
//! A type-0 header costs 4–8 bytes more than the type-1/2 header an `rml_rtmp` session would
//! write per message: about 0.05 % of a 2.5 Mbit/s stream.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::flv::{FlvTag, TagType};

/// Outgoing chunk size of every RTMP client connection (what `rml_rtmp` sets by default).
pub const CHUNK_SIZE: u32 = 4096;
/// Message stream id of a publish whose chunks are shared.
pub const SHARED_STREAM_ID: u32 = 1;
/// Chunk stream of video messages (the one `rml_rtmp` uses for them).
pub const VIDEO_CSID: u8 = 4;
/// Chunk stream of audio messages.
pub const AUDIO_CSID: u8 = 5;
/// RTMP message type of audio data.
const MSG_AUDIO: u8 = 8;
/// RTMP message type of video data.
const MSG_VIDEO: u8 = 9;
/// Largest value of the 24-bit timestamp field; larger ones go in the extended field.
const MAX_TIMESTAMP_FIELD: u32 = 0x00ff_ffff;
/// Largest RTMP message (24-bit length).
const MAX_MESSAGE_LEN: usize = 0x00ff_ffff;

/// The chunks of an audio or video tag on message stream `stream_id`, cut at [`CHUNK_SIZE`]:
/// a type-0 first chunk and type-3 continuations (each repeating the extended timestamp when
/// there is one, as the specification and `rml_rtmp` do). `None` for script tags (metadata goes
/// through the connection's own session) and bodies longer than an RTMP message allows.
pub fn encode_media(tag: &FlvTag, stream_id: u32) -> Option<Bytes> {
    let (csid, type_id) = match tag.tag_type {
        TagType::Video => (VIDEO_CSID, MSG_VIDEO),
        TagType::Audio => (AUDIO_CSID, MSG_AUDIO),
        TagType::Script => return None,
    };
    let body = &tag.data[..];
    if body.len() > MAX_MESSAGE_LEN {
        return None;
    }
    let extended = tag.timestamp >= MAX_TIMESTAMP_FIELD;
    let ext_len = if extended { 4 } else { 0 };
    let chunk = CHUNK_SIZE as usize;
    let chunks = body.len().div_ceil(chunk).max(1);
    let mut out = BytesMut::with_capacity(12 + ext_len + (chunks - 1) * (1 + ext_len) + body.len());
    // Type 0: fmt 00, csid; timestamp (24 bit, or 0xffffff and the extended field), message
    // length (24 bit), type id, message stream id (little endian).
    out.put_u8(csid);
    out.put_uint(u64::from(tag.timestamp.min(MAX_TIMESTAMP_FIELD)), 3);
    out.put_uint(body.len() as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(tag.timestamp);
    }
    for (i, piece) in body.chunks(chunk).enumerate() {
        if i > 0 {
            // Type 3: fmt 11, same csid.
            out.put_u8(0xc0 | csid);
            if extended {
                out.put_u32(tag.timestamp);
            }
        }
        out.put_slice(piece);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn body(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect::<Vec<u8>>(),
        )
    }

    /// Everything the deserializer makes of `bytes`.
    fn decode(de: &mut ChunkDeserializer, bytes: &[u8]) -> Vec<MessagePayload> {
        let mut out = Vec::new();
        let mut input: &[u8] = bytes;
        while let Some(m) = de.get_next_message(input).expect("valid chunks") {
            out.push(m);
            input = &[];
        }
        out
    }

    /// Tags smaller and larger than the chunk size (exactly one chunk, one byte over, many
    /// chunks), audio and video interleaved, timestamps below and above the 24-bit field:
    /// the shared bytes decode with `rml_rtmp`'s deserializer into the same messages, in order,
    /// whatever the receiver decoded before on the same chunk streams.
    #[test]
    fn shared_chunks_decode_to_the_same_messages() {
        let sizes = [
            0usize, 1, 100, 4095, 4096, 4097, 8192, 8193, 100_000, 300_001,
        ];
        let mut tags = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let kind = if i % 2 == 0 {
                TagType::Video
            } else {
                TagType::Audio
            };
            let ts = if i < 6 {
                i as u32 * 40
            } else {
                MAX_TIMESTAMP_FIELD - 80 + i as u32 * 40
            };
            tags.push(FlvTag::new(kind, ts, body(n, i as u8)));
        }
        // A receiver that has already seen other traffic on the same chunk streams: an
        // rml_rtmp serializer's compressed chunks (as a session writes them before the
        // shared bytes start) in front of ours.
        let mut de = ChunkDeserializer::new();
        de.set_max_chunk_size(CHUNK_SIZE as usize)
            .expect("chunk size");
        let mut ser = ChunkSerializer::new();
        let mut wire = ser
            .set_max_chunk_size(CHUNK_SIZE, RtmpTimestamp::new(0))
            .expect("set")
            .bytes;
        // The SetChunkSize message is for the deserializer's owner to act on; the test did.
        let mut de_probe = ChunkDeserializer::new();
        assert_eq!(decode(&mut de_probe, &wire).len(), 1);
        wire.clear();
        for (ts, ty) in [(7u32, 9u8), (9, 8), (12, 9)] {
            let payload = MessagePayload {
                timestamp: RtmpTimestamp::new(ts),
                type_id: ty,
                message_stream_id: 1,
                data: body(5000, ts as u8),
            };
            wire.extend_from_slice(
                &ser.serialize(&payload, false, false)
                    .expect("serialize")
                    .bytes,
            );
        }
        assert_eq!(decode(&mut de, &wire).len(), 3);

        let mut got = Vec::new();
        for t in &tags {
            let bytes = encode_media(t, SHARED_STREAM_ID).expect("media tag");
            got.extend(decode(&mut de, &bytes));
        }
        assert_eq!(got.len(), tags.len());
        for (m, t) in got.iter().zip(&tags) {
            assert_eq!(m.timestamp.value, t.timestamp, "timestamp");
            assert_eq!(m.type_id, if t.tag_type == TagType::Video { 9 } else { 8 });
            assert_eq!(m.message_stream_id, SHARED_STREAM_ID);
            assert_eq!(m.data, t.data, "payload of {} bytes", t.data.len());
        }

        // The same bytes, fed to a second receiver in one piece, decode the same.
        let mut all = Vec::new();
        for t in &tags {
            all.extend_from_slice(&encode_media(t, SHARED_STREAM_ID).expect("media"));
        }
        let mut de2 = ChunkDeserializer::new();
        de2.set_max_chunk_size(CHUNK_SIZE as usize)
            .expect("chunk size");
        let again = decode(&mut de2, &all);
        assert_eq!(again.len(), tags.len());
        assert!(again
            .iter()
            .zip(&got)
            .all(|(a, b)| a.data == b.data && a.timestamp == b.timestamp));
    }

    #[test]
    fn layout_of_a_two_chunk_message() {
        let t = FlvTag::new(TagType::Video, 0x01_0203, body(4100, 0));
        let b = encode_media(&t, 3).expect("video");
        assert_eq!(b.len(), 12 + 4100 + 1);
        assert_eq!(
            &b[..12],
            &[0x04, 0x01, 0x02, 0x03, 0x00, 0x10, 0x04, 9, 3, 0, 0, 0]
        );
        assert_eq!(b[12 + 4096], 0xc4);
        let ext = encode_media(&FlvTag::new(TagType::Audio, 0x0100_0000, body(4100, 0)), 1)
            .expect("audio");
        assert_eq!(ext.len(), 12 + 4 + 4100 + 1 + 4);
        assert_eq!(&ext[1..4], &[0xff, 0xff, 0xff]);
        assert_eq!(&ext[12..16], &[1, 0, 0, 0]);
        assert!(encode_media(&FlvTag::new(TagType::Script, 0, body(10, 0)), 1).is_none());
    }
}
