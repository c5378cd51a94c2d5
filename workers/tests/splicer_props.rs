//! Property tests of the FLV parser, the MPEG-TS demuxer and the splicer: arbitrary sources (timestamps that jump,
//! reset and wrap, headers repeated, frames before the first keyframe), arbitrary switches and
//! arbitrary chunking of the byte stream. What a player relies on must hold for all of them.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use relaycast_workers::media::flv::{FlvHeader, FlvItem, FlvParser, FlvTag, TagType};
use relaycast_workers::splice::splicer::{
    OnLag, Origin, SpliceItem, Splicer, SplicerConfig, SubscribeOptions, Subscription,
};

/// One generated tag of a source: what it is and its timestamp step from the previous tag.
#[derive(Debug, Clone)]
enum Gen {
    VideoHeader,
    AudioHeader,
    Metadata,
    Key(u32),
    Inter(u32),
    Audio(u32),
    /// The source restarted its clock (or wrapped): an absolute timestamp.
    Jump(u32),
    EndOfSequence,
}

fn gen_tag() -> impl Strategy<Value = Gen> {
    prop_oneof![
        1 => Just(Gen::VideoHeader),
        1 => Just(Gen::AudioHeader),
        1 => Just(Gen::Metadata),
        3 => (0u32..200).prop_map(Gen::Key),
        12 => (0u32..80).prop_map(Gen::Inter),
        10 => (0u32..60).prop_map(Gen::Audio),
        1 => any::<u32>().prop_map(Gen::Jump),
        1 => Just(Gen::EndOfSequence),
    ]
}

fn video(frame_type: u8, packet_type: u8, payload: &[u8]) -> Bytes {
    let mut v = vec![(frame_type << 4) | 7, packet_type, 0, 0, 0];
    v.extend_from_slice(payload);
    Bytes::from(v)
}

fn metadata() -> Bytes {
    // AMF0: string "onMetaData", then an empty ECMA array.
    let mut v = vec![0x02, 0x00, 10];
    v.extend_from_slice(b"onMetaData");
    v.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 9]);
    Bytes::from(v)
}

/// Turns generated steps into a source's tags with its own clock.
fn source_tags(steps: &[Gen], start: u32) -> Vec<FlvTag> {
    let mut ts = start;
    let mut n = 0u8;
    steps
        .iter()
        .map(|g| {
            n = n.wrapping_add(1);
            let (kind, data, step) = match g {
                Gen::VideoHeader => (TagType::Video, video(1, 0, &[1, 0x64, 0, 0x1f, n]), 0),
                Gen::AudioHeader => (TagType::Audio, Bytes::from(vec![0xaf, 0, 0x12, n]), 0),
                Gen::Metadata => (TagType::Script, metadata(), 0),
                Gen::Key(d) => (TagType::Video, video(1, 1, &[0, 0, 0, 1, 0x65, n]), *d),
                Gen::Inter(d) => (TagType::Video, video(2, 1, &[0, 0, 0, 1, 0x41, n]), *d),
                Gen::Audio(d) => (TagType::Audio, Bytes::from(vec![0xaf, 1, n, n]), *d),
                Gen::Jump(t) => {
                    ts = *t;
                    (TagType::Video, video(2, 1, &[0, 0, 0, 1, 0x41, n]), 0)
                }
                Gen::EndOfSequence => (TagType::Video, video(1, 2, &[]), 0),
            };
            ts = ts.wrapping_add(step);
            FlvTag::new(kind, ts, data)
        })
        .collect()
}

fn drain(sub: &mut Subscription) -> Vec<FlvTag> {
    let mut v = Vec::new();
    while let Some(t) = sub.try_recv() {
        v.push(t);
    }
    v
}

fn drain_items(sub: &mut Subscription) -> Vec<SpliceItem> {
    let mut v = Vec::new();
    while let Some(i) = sub.try_recv_item() {
        v.push(i);
    }
    v
}

fn tags_only(items: &[SpliceItem]) -> Vec<FlvTag> {
    items
        .iter()
        .filter_map(|i| match i {
            SpliceItem::Tag(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the sources do, a subscriber sees one timeline that never goes back, decodable
    /// from its first picture (a keyframe), with no end-of-sequence marker and at most one
    /// metadata tag; a subscriber with room for everything loses no decodable picture.
    #[test]
    fn the_output_timeline_is_monotonic_and_decodable(
        sources in prop::collection::vec(
            (prop::collection::vec(gen_tag(), 0..60), any::<u32>()),
            1..6,
        ),
        late_join in 0usize..6,
    ) {
        let splicer = Splicer::new(SplicerConfig { subscriber_capacity: 4096, ..SplicerConfig::default() });
        let mut early = splicer.subscribe();
        let mut late = None;
        let mut expected_pictures = 0u64;
        for (i, (steps, start)) in sources.iter().enumerate() {
            if i == late_join {
                late = Some(splicer.subscribe());
            }
            splicer.begin_source();
            let mut keyframe_seen = false;
            for tag in source_tags(steps, *start) {
                if tag.is_video_frame() {
                    keyframe_seen |= tag.is_keyframe();
                    if keyframe_seen {
                        expected_pictures += 1;
                    }
                }
                splicer.push(tag);
            }
        }
        for (name, sub) in [("early", Some(&mut early)), ("late", late.as_mut())] {
            let Some(sub) = sub else { continue };
            let out = drain(sub);
            let mut last = 0u32;
            let mut metadata = 0;
            let mut pictures = 0u64;
            let mut first_picture_seen = false;
            for t in &out {
                prop_assert!(t.timestamp >= last, "{name}: {} after {last}", t.timestamp);
                last = t.timestamp;
                prop_assert!(!t.is_video_end_of_sequence(), "{name}: end of sequence relayed");
                metadata += usize::from(t.is_metadata());
                if t.is_video_frame() {
                    if !first_picture_seen {
                        prop_assert!(t.is_keyframe(), "{name}: first picture is not a keyframe");
                        first_picture_seen = true;
                    }
                    pictures += 1;
                }
            }
            prop_assert!(metadata <= 1, "{name}: {metadata} metadata tags");
            if name == "early" {
                // A subscriber with room for everything loses no decodable picture.
                prop_assert_eq!(pictures, expected_pictures);
            }
        }
        prop_assert_eq!(splicer.stats().video_frames_out, expected_pictures);
    }

    /// Per-subscriber options. Over arbitrary sources with slate segments between them, and
    /// a drop-to-keyframe subscriber with a tiny buffer that never reads:
    /// - a never-drop subscriber (read only at the end) gets exactly what a subscriber with
    ///   room for everything gets, and drops nothing, while the tiny one does drop;
    /// - a subscriber without the slate gets the same tags minus those of slate segments;
    /// - a file sink (never drop, markers, no slate) gets those tags too, and one switch marker
    ///   in front of the first tag of every other source it sees, naming that source.
    #[test]
    fn subscriber_options_hold_for_any_sources(
        segments in prop::collection::vec(
            (prop::collection::vec(gen_tag(), 0..50), any::<u32>(), any::<bool>()),
            1..7,
        ),
    ) {
        let splicer = Splicer::new(SplicerConfig { subscriber_capacity: 8, gap_after: std::time::Duration::from_secs(3600) });
        let mut roomy = splicer.subscribe_with(SubscribeOptions {
            on_lag: OnLag::NeverDrop { max_backlog_bytes: None },
            ..SubscribeOptions::default()
        });
        let mut tiny = splicer.subscribe();
        let mut never = splicer.subscribe_with(SubscribeOptions {
            on_lag: OnLag::NeverDrop { max_backlog_bytes: None },
            ..SubscribeOptions::default()
        });
        let mut no_slate = splicer.subscribe_with(SubscribeOptions {
            on_lag: OnLag::NeverDrop { max_backlog_bytes: None },
            include_slate: false,
            ..SubscribeOptions::default()
        });
        let mut sink = splicer.subscribe_with(SubscribeOptions::file_sink());
        // What `roomy` got, each tag with its segment (index, whether slate), read after every push.
        let mut log: Vec<(FlvTag, usize, bool)> = Vec::new();
        let mut pushed_video = 0usize;
        for (i, (steps, start, slate)) in segments.iter().enumerate() {
            splicer.begin(if *slate { Origin::Slate } else { Origin::Source(i) });
            for tag in source_tags(steps, *start) {
                pushed_video += usize::from(tag.is_video_frame());
                splicer.push(tag);
                while let Some(t) = roomy.try_recv() {
                    log.push((t, i, *slate));
                }
            }
        }
        let never_out = drain(&mut never);
        let all: Vec<FlvTag> = log.iter().map(|(t, _, _)| t.clone()).collect();
        prop_assert_eq!(&never_out, &all);
        prop_assert_eq!(never.dropped(), 0);
        prop_assert_eq!(never.backlog().map(|b| (b.items, b.bytes)), Some((0, 0)));
        let tiny_out = drain(&mut tiny);
        prop_assert!(tiny_out.len() <= 8);
        if all.len() > 8 + 3 && pushed_video > 0 {
            prop_assert!(tiny.dropped() > 0 || tiny_out.len() == all.len());
        }

        let expected: Vec<FlvTag> = log.iter().filter(|(_, _, slate)| !slate).map(|(t, _, _)| t.clone()).collect();
        prop_assert_eq!(&drain(&mut no_slate), &expected);

        let items = drain_items(&mut sink);
        prop_assert_eq!(&tags_only(&items), &expected);
        prop_assert!(!items.iter().any(|i| matches!(i, SpliceItem::Gap(_))), "no gap within an hour");
        // Expected switches: a change of (non-slate) segment between consecutive tags.
        let segs: Vec<usize> = log.iter().filter(|(_, _, slate)| !slate).map(|(_, s, _)| *s).collect();
        let mut want = Vec::new();
        for w in segs.windows(2) {
            if w[0] != w[1] {
                want.push(w[1]);
            }
        }
        let mut got = Vec::new();
        for (k, item) in items.iter().enumerate() {
            if let SpliceItem::Switch(sw) = item {
                let Some(Origin::Source(i)) = sw.to else {
                    return Err(TestCaseError::fail(format!("switch to {:?}", sw.to)));
                };
                got.push(i);
                // Right before a tag, stamped with its position.
                match items.get(k + 1) {
                    Some(SpliceItem::Tag(t)) => prop_assert_eq!(t.timestamp, sw.timestamp),
                    other => return Err(TestCaseError::fail(format!("switch followed by {other:?}"))),
                }
            }
        }
        prop_assert_eq!(got, want);
    }

    /// The parser gives the same tags however the byte stream is cut into reads.
    #[test]
    fn parsing_does_not_depend_on_how_the_stream_is_cut(
        steps in prop::collection::vec(gen_tag(), 0..80),
        cuts in prop::collection::vec(1usize..5000, 0..40),
    ) {
        let tags = source_tags(&steps, 0);
        let mut bytes = BytesMut::new();
        FlvHeader::default().write_to(&mut bytes);
        for t in &tags {
            t.write_to(&mut bytes);
        }
        let mut parser = FlvParser::new();
        let mut parsed = Vec::new();
        let mut rest = &bytes[..];
        for c in cuts.iter().chain(std::iter::once(&usize::MAX)) {
            let (now, later) = rest.split_at((*c).min(rest.len()));
            rest = later;
            for item in parser.feed(now).expect("valid FLV") {
                if let FlvItem::Tag(t) = item {
                    parsed.push(t);
                }
            }
        }
        prop_assert_eq!(parsed.len(), tags.len());
        for (a, b) in parsed.iter().zip(&tags) {
            prop_assert_eq!(a.tag_type, b.tag_type);
            prop_assert_eq!(a.timestamp, b.timestamp);
            prop_assert_eq!(&a.data, &b.data);
        }
    }

    /// Arbitrary MPEG-TS packets (sync bytes right, everything else random) never panic the
    /// HEVC ingest's demuxer, cut anywhere.
    #[test]
    fn random_ts_packets_never_panic_the_demuxer(
        packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 187), 0..64),
        cut in 1usize..400,
    ) {
        let mut stream = Vec::new();
        for p in &packets {
            stream.push(0x47);
            stream.extend_from_slice(p);
        }
        let mut d = relaycast_workers::media::mpegts::TsToFlv::new();
        for c in stream.chunks(cut) {
            prop_assert!(d.push(c).is_ok());
        }
        d.finish();
        while d.next_tag().is_some() {}
    }

    /// Garbage never panics the parser: it either yields tags or a clean error.
    #[test]
    fn garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut parser = FlvParser::new();
        let _ = parser.feed(&bytes);
        let _ = parser.next_item();
    }
}
