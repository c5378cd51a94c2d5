//! The splicer: one continuous output timeline across ingest switches, and a fan-out to
//! independent subscribers.
//!
//! Every ingest (primary, backup, next playlist item, the slate) is an ffmpeg or a native pull
//! whose FLV starts its own clock. The splicer rebases each source so the output timestamps
//! continue from the last output timestamp plus one frame interval, forwards the new source's
//! own sequence headers (so decoders follow a codec or resolution change) and drops its
//! `onMetaData` (a second metadata mid-stream confuses players and nginx-rtmp alike).
//!
//! Fan-out is through one channel per subscriber, filled without waiting from the ingest path:
//! no subscriber ever blocks the ingest or the others. What a subscriber gets is its own
//! [`SubscribeOptions`]:
//!
//! - [`OnLag::DropToKeyframe`] (a pusher): a bounded buffer; when it is full everything up to
//!   the next video keyframe is dropped (partial GOPs only produce decoder errors), then the
//!   subscriber resumes. A live destination wants the present, not a backlog.
//! - [`OnLag::NeverDrop`] (a file sink): an unbounded buffer whose size is accounted
//!   ([`Subscription::backlog`]). Blocking the ingest for a slow disk would stall every other
//!   subscriber and, through TCP, the origin; so the sink's backlog grows instead, up to an
//!   optional byte limit past which the subscription is ended ([`Subscription::overflowed`]),
//!   never thinned: a recording is complete or visibly cut, never silently holed.
//! - `see_switches_and_gaps`: [`SpliceItem::Switch`] in front of the first tag of another
//!   source, and [`SpliceItem::Gap`] when no tag reached the subscriber for
//!   [`SplicerConfig::gap_after`] (HLS discontinuities, a recording's resume timeout).
//! - `include_slate: false`: tags of the slate ([`Origin::Slate`]) are left out.
//! - `rtmp_chunks` (pushers): every audio and video tag comes with its RTMP chunks
//!   ([`crate::media::chunks`]), encoded once per tag for all such subscribers and shared
//!   (`Bytes`, refcounted): a tag costs one encoding, then one socket write per destination.
//!
//! A new subscriber first gets the cached metadata and sequence headers, then tags from the
//! next keyframe on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::media::chunks::{encode_media, SHARED_STREAM_ID};
use crate::media::flv::{FlvTag, TagType};
use crate::media::metadata::metadata_from_script;

/// Default per-subscriber buffer in tags (~7 s of 25 fps video + 44.1 kHz AAC).
pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 512;
/// Default [`SplicerConfig::gap_after`].
pub const DEFAULT_GAP_AFTER: Duration = Duration::from_secs(1);
/// Assumed frame interval before the splicer has seen two video frames, in ms (25 fps).
const DEFAULT_FRAME_INTERVAL_MS: u32 = 40;
/// A jump backwards in a source's timestamps larger than this (ms) is a discontinuity (the
/// source restarted its clock); the source is rebased instead of being clamped for ever.
const MAX_BACKWARD_JUMP_MS: i64 = 1_000;
/// A jump forwards larger than this (ms) is a discontinuity too (e.g. a timestamp reset
/// upstream); players would otherwise freeze for the length of the jump.
const MAX_FORWARD_JUMP_MS: i64 = 10_000;

/// Configuration of a [`Splicer`].
#[derive(Debug, Clone)]
pub struct SplicerConfig {
    /// Buffer of each [`OnLag::DropToKeyframe`] subscriber, in tags. Default
    /// [`DEFAULT_SUBSCRIBER_CAPACITY`].
    pub subscriber_capacity: usize,
    /// A subscriber that sees gaps gets [`SpliceItem::Gap`] when no tag reached it for longer
    /// than this (wall time). Default [`DEFAULT_GAP_AFTER`] (1 s).
    pub gap_after: Duration,
}

impl Default for SplicerConfig {
    fn default() -> Self {
        SplicerConfig {
            subscriber_capacity: DEFAULT_SUBSCRIBER_CAPACITY,
            gap_after: DEFAULT_GAP_AFTER,
        }
    }
}

/// What a subscriber does when it cannot keep up, see [`SubscribeOptions::on_lag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLag {
    /// A bounded buffer ([`SplicerConfig::subscriber_capacity`]); when full, drop up to the
    /// next video keyframe. For pushers.
    DropToKeyframe,
    /// Never drop: an unbounded, accounted buffer. Past `max_backlog_bytes` (when set) the
    /// subscription ends instead ([`Subscription::overflowed`]). For file sinks.
    NeverDrop {
        /// Most body bytes queued for the subscriber before it is cut off; `None` = no limit.
        max_backlog_bytes: Option<u64>,
    },
}

/// Per-subscriber policy. The default is what a pusher gets: drop to the next keyframe when
/// behind, tags only, the slate included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Behaviour when behind. Default [`OnLag::DropToKeyframe`].
    pub on_lag: OnLag,
    /// Receive [`SpliceItem::Switch`] and [`SpliceItem::Gap`] markers (read them with
    /// [`Subscription::recv_item`]). Default false.
    pub see_switches_and_gaps: bool,
    /// Receive the slate's tags. Default true.
    pub include_slate: bool,
    /// Receive every audio and video tag with its RTMP chunks on message stream
    /// [`SHARED_STREAM_ID`] (read them with [`Subscription::recv_chunked`]), encoded once per
    /// tag for every subscriber that asks. Default false.
    pub rtmp_chunks: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            on_lag: OnLag::DropToKeyframe,
            see_switches_and_gaps: false,
            include_slate: true,
            rtmp_chunks: false,
        }
    }
}

impl SubscribeOptions {
    /// A file sink's options: never drop (no backlog limit), see switches and gaps, no slate.
    pub fn file_sink() -> Self {
        SubscribeOptions {
            on_lag: OnLag::NeverDrop {
                max_backlog_bytes: None,
            },
            see_switches_and_gaps: true,
            include_slate: false,
            rtmp_chunks: false,
        }
    }

    /// A pusher's options: the default ones, with the shared RTMP chunks.
    pub fn pusher() -> Self {
        SubscribeOptions {
            rtmp_chunks: true,
            ..SubscribeOptions::default()
        }
    }
}

/// A tag with its shared RTMP chunks, see [`SubscribeOptions::rtmp_chunks`].
#[derive(Debug, Clone)]
pub struct ChunkedTag {
    /// The tag.
    pub tag: FlvTag,
    /// Its chunks on message stream [`SHARED_STREAM_ID`] (`None` for script tags, and for a
    /// subscriber that did not ask for chunks).
    pub chunks: Option<Bytes>,
}

/// Where the tags of a segment of the timeline come from, see [`Splicer::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Source `index` of the supervisor's current list.
    Source(usize),
    /// The slate (every source down).
    Slate,
}

/// A source switch: the tags that follow come from another ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The new origin; `None` when the feeder did not say ([`Splicer::begin_source`]).
    pub to: Option<Origin>,
    /// Position on the timeline, ms.
    pub timestamp: u32,
}

/// A hole in what a subscriber received: nothing reached it for `wall` (every source down,
/// or the slate left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Position on the timeline where the tags resume, ms.
    pub timestamp: u32,
    /// How long nothing was delivered (wall time).
    pub wall: Duration,
}

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum SpliceItem {
    /// A tag on the timeline.
    Tag(FlvTag),
    /// A source switch (only with `see_switches_and_gaps`); comes before the new source's
    /// first tag.
    Switch(Switch),
    /// A gap (only with `see_switches_and_gaps`); comes before the tag that ends it, and before
    /// the switch when both apply.
    Gap(Gap),
}

/// Picture format of the stream, see [`Splicer::video_shape`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoShape {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: f64,
}

/// Counters of the splicer, for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplicerStats {
    /// Tags received from all sources.
    pub tags_in: u64,
    /// Body bytes received from all sources.
    pub bytes_in: u64,
    /// Video frames (not sequence headers) put on the output timeline.
    pub video_frames_out: u64,
    /// Number of sources begun ([`Splicer::begin_source`] calls).
    pub sources: u64,
    /// Last output timestamp in ms (the position on the continuous timeline).
    pub last_timestamp: u32,
    /// Current estimate of the video frame interval in ms.
    pub frame_interval_ms: u32,
    /// Number of live subscribers.
    pub subscribers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// Skipping until a video keyframe (new subscriber, or one that lagged).
    AwaitKeyframe,
    /// Receiving every tag.
    Live,
}

/// What is queued for a [`OnLag::NeverDrop`] subscriber, shared by the splicer (adds) and the
/// subscription (takes).
#[derive(Default)]
struct Backlog {
    tags: AtomicU64,
    bytes: AtomicU64,
    peak_bytes: AtomicU64,
    overflowed: AtomicBool,
}

fn item_bytes(item: &SpliceItem) -> u64 {
    match item {
        SpliceItem::Tag(t) => t.data.len() as u64,
        _ => 0,
    }
}

/// What a subscriber's channel carries: an item and, for a tag sent to a subscriber that
/// asked for them, its shared RTMP chunks.
type Queued = (SpliceItem, Option<Bytes>);

enum Tx {
    Bounded(mpsc::Sender<Queued>),
    Unbounded {
        tx: mpsc::UnboundedSender<Queued>,
        backlog: Arc<Backlog>,
        max_bytes: Option<u64>,
    },
}

enum Rx {
    Bounded(mpsc::Receiver<Queued>),
    Unbounded(mpsc::UnboundedReceiver<Queued>),
}

/// Why an item could not be queued.
enum SendError {
    /// A bounded buffer is full: drop to the next keyframe.
    Full,
    /// The subscription is gone, or a never-drop backlog passed its limit: remove it.
    Gone,
}

impl Tx {
    fn send(&self, item: SpliceItem) -> Result<(), SendError> {
        self.send_with(item, None)
    }

    fn send_with(&self, item: SpliceItem, chunks: Option<Bytes>) -> Result<(), SendError> {
        match self {
            Tx::Bounded(tx) => tx.try_send((item, chunks)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Gone,
            }),
            Tx::Unbounded {
                tx,
                backlog,
                max_bytes,
            } => {
                let n = item_bytes(&item);
                let queued = backlog.bytes.load(Ordering::Relaxed) + n;
                if max_bytes.is_some_and(|max| queued > max) {
                    backlog.overflowed.store(true, Ordering::Relaxed);
                    return Err(SendError::Gone);
                }
                tx.send((item, chunks)).map_err(|_| SendError::Gone)?;
                backlog.tags.fetch_add(1, Ordering::Relaxed);
                let bytes = backlog.bytes.fetch_add(n, Ordering::Relaxed) + n;
                backlog.peak_bytes.fetch_max(bytes, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Tx::Bounded(tx) => tx.is_closed(),
            Tx::Unbounded { tx, .. } => tx.is_closed(),
        }
    }

    /// Room for this many more items.
    fn capacity(&self) -> usize {
        match self {
            Tx::Bounded(tx) => tx.capacity(),
            Tx::Unbounded { .. } => usize::MAX,
        }
    }
}

struct Subscriber {
    tx: Tx,
    options: SubscribeOptions,
    state: SubState,
    /// Header generation this subscriber last received, to know whether it missed a switch
    /// while it was dropping frames.
    header_gen: u64,
    /// The segment whose switch this subscriber was told about (or joined in).
    segment: u64,
    /// When a tag last reached it (only kept for subscribers that see gaps).
    last_delivery: Option<Instant>,
    dropped: Arc<AtomicU64>,
}

#[derive(Default)]
struct Inner {
    config: SplicerConfig,
    subscribers: Vec<Subscriber>,
    metadata: Option<FlvTag>,
    video_header: Option<FlvTag>,
    audio_header: Option<FlvTag>,
    /// Bumped whenever a cached sequence header changes.
    header_gen: u64,
    /// Bumped by every [`Splicer::begin`]: a segment is one ingest's stretch of the timeline.
    segment: u64,
    /// Where the current segment comes from.
    origin: Option<Origin>,
    /// Whether any output has been produced (the first source starts at 0).
    started: bool,
    /// Added to a source timestamp to get the output timestamp; `None` = rebase on next tag.
    offset: Option<i64>,
    last_out: u32,
    last_video_in: Option<u32>,
    frame_interval: u32,
    /// Whether the current source has sent a video keyframe yet: inter frames before it
    /// cannot be decoded and are dropped.
    source_keyframe_seen: bool,
    /// Whether `onMetaData` has been forwarded once on this timeline.
    metadata_sent: bool,
    closed: bool,
    stats: SplicerStats,
}

/// A handle to a splicer; clones share the same splicer. Cheap to clone and `Send + Sync`.
#[derive(Clone)]
pub struct Splicer {
    inner: Arc<Mutex<Inner>>,
}

/// A subscription: tags on the continuous timeline, starting with cached metadata and
/// sequence headers and then a keyframe, with markers if asked for ([`SubscribeOptions`]).
/// Ends (`recv` returns `None`) when the splicer closes, or a never-drop backlog overflows.
pub struct Subscription {
    rx: Rx,
    backlog: Option<Arc<Backlog>>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// Next tag, markers skipped; `None` once the splicer is closed and the buffer drained.
    pub async fn recv(&mut self) -> Option<FlvTag> {
        loop {
            if let SpliceItem::Tag(t) = self.recv_item().await? {
                return Some(t);
            }
        }
    }

    /// Non-blocking [`Subscription::recv`].
    pub fn try_recv(&mut self) -> Option<FlvTag> {
        loop {
            if let SpliceItem::Tag(t) = self.try_recv_item()? {
                return Some(t);
            }
        }
    }

    /// Next item, markers included; `None` once the subscription has ended and is drained.
    pub async fn recv_item(&mut self) -> Option<SpliceItem> {
        self.recv_queued().await.map(|(item, _)| item)
    }

    /// Non-blocking [`Subscription::recv_item`].
    pub fn try_recv_item(&mut self) -> Option<SpliceItem> {
        self.try_recv_queued().map(|(item, _)| item)
    }

    /// Next tag with its shared RTMP chunks ([`SubscribeOptions::rtmp_chunks`]), markers
    /// skipped; `None` once the subscription has ended and is drained.
    pub async fn recv_chunked(&mut self) -> Option<ChunkedTag> {
        loop {
            if let (SpliceItem::Tag(tag), chunks) = self.recv_queued().await? {
                return Some(ChunkedTag { tag, chunks });
            }
        }
    }

    /// Non-blocking [`Subscription::recv_chunked`].
    pub fn try_recv_chunked(&mut self) -> Option<ChunkedTag> {
        loop {
            if let (SpliceItem::Tag(tag), chunks) = self.try_recv_queued()? {
                return Some(ChunkedTag { tag, chunks });
            }
        }
    }

    async fn recv_queued(&mut self) -> Option<Queued> {
        let item = match &mut self.rx {
            Rx::Bounded(rx) => rx.recv().await,
            Rx::Unbounded(rx) => rx.recv().await,
        };
        self.taken(item)
    }

    fn try_recv_queued(&mut self) -> Option<Queued> {
        let item = match &mut self.rx {
            Rx::Bounded(rx) => rx.try_recv().ok(),
            Rx::Unbounded(rx) => rx.try_recv().ok(),
        };
        self.taken(item)
    }

    fn taken(&self, item: Option<Queued>) -> Option<Queued> {
        if let (Some((item, _)), Some(b)) = (&item, &self.backlog) {
            b.tags.fetch_sub(1, Ordering::Relaxed);
            b.bytes.fetch_sub(item_bytes(item), Ordering::Relaxed);
        }
        item
    }

    /// Tags dropped for this subscriber because it was too slow (or that it skipped while
    /// waiting for its first keyframe).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A never-drop subscriber's queue: items and body bytes waiting now, and the most bytes
    /// ever waiting. `None` for a drop-to-keyframe subscriber.
    pub fn backlog(&self) -> Option<BacklogStats> {
        self.backlog.as_ref().map(|b| BacklogStats {
            items: b.tags.load(Ordering::Relaxed),
            bytes: b.bytes.load(Ordering::Relaxed),
            peak_bytes: b.peak_bytes.load(Ordering::Relaxed),
        })
    }

    /// Whether a never-drop subscription was ended because its backlog passed
    /// `max_backlog_bytes` (what it received before is complete; nothing after was sent).
    pub fn overflowed(&self) -> bool {
        self.backlog
            .as_ref()
            .is_some_and(|b| b.overflowed.load(Ordering::Relaxed))
    }
}

/// See [`Subscription::backlog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogStats {
    /// Items queued.
    pub items: u64,
    /// Body bytes queued.
    pub bytes: u64,
    /// Most body bytes ever queued at once.
    pub peak_bytes: u64,
}

impl Default for Splicer {
    fn default() -> Self {
        Splicer::new(SplicerConfig::default())
    }
}

impl Splicer {
    /// A splicer with the given configuration.
    pub fn new(config: SplicerConfig) -> Self {
        Splicer {
            inner: Arc::new(Mutex::new(Inner {
                config,
                frame_interval: DEFAULT_FRAME_INTERVAL_MS,
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still consistent enough to
        // keep relaying; refusing to continue would take every destination down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces that the tags pushed from now on come from a new ingest: the next tag is
    /// rebased to `last output + one frame interval`, and video is held back until the new
    /// source's first keyframe. Switch markers say nothing about where it comes from; see
    /// [`Splicer::begin`].
    pub fn begin_source(&self) {
        self.begin_segment(None);
    }

    /// [`Splicer::begin_source`], naming the new ingest: subscribers that see switches learn
    /// it, and the tags of [`Origin::Slate`] are left out for those that do not want the slate.
    pub fn begin(&self, origin: Origin) {
        self.begin_segment(Some(origin));
    }

    fn begin_segment(&self, origin: Option<Origin>) {
        let mut s = self.lock();
        s.offset = None;
        s.last_video_in = None;
        s.source_keyframe_seen = false;
        s.segment += 1;
        s.origin = origin;
        s.stats.sources += 1;
    }

    /// Feeds one tag of the current source.
    pub fn push(&self, tag: FlvTag) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.stats.tags_in += 1;
        s.stats.bytes_in += tag.data.len() as u64;

        if tag.tag_type == TagType::Script {
            if tag.is_metadata() {
                // Cache the newest for subscribers that join later; forward only the first so
                // players see one metadata per connection.
                s.metadata = Some(tag.with_timestamp(0));
                if s.metadata_sent {
                    return;
                }
                s.metadata_sent = true;
                let ts = s.last_out;
                let out = tag.with_timestamp(ts);
                s.fan_out(&out);
            }
            // Other script tags (onTextData, cue points) are source specific: not relayed.
            return;
        }

        if tag.is_video_end_of_sequence() {
            // The end of one ingest is not the end of the output: a decoder would flush and
            // some players stop at it.
            return;
        }
        if tag.is_video_frame() {
            if tag.is_keyframe() {
                s.source_keyframe_seen = true;
            } else if !s.source_keyframe_seen {
                return;
            }
        }

        let ts = s.rebase(&tag);
        let out = tag.with_timestamp(ts);
        if out.is_video_sequence_header() {
            s.video_header = Some(out.with_timestamp(0));
            s.header_gen += 1;
        } else if out.is_audio_sequence_header() {
            s.audio_header = Some(out.with_timestamp(0));
            s.header_gen += 1;
        } else if out.tag_type == TagType::Video {
            s.stats.video_frames_out += 1;
        }
        s.fan_out(&out);
    }

    /// Adds a subscriber with the default (pusher) options, see [`Splicer::subscribe_with`].
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with(SubscribeOptions::default())
    }

    /// Adds a subscriber. It receives the cached metadata and sequence headers at once, then
    /// tags from the next video keyframe on.
    pub fn subscribe_with(&self, options: SubscribeOptions) -> Subscription {
        let mut s = self.lock();
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, rx, backlog) = match options.on_lag {
            OnLag::DropToKeyframe => {
                let (tx, rx) = mpsc::channel(s.config.subscriber_capacity.max(8));
                (Tx::Bounded(tx), Rx::Bounded(rx), None)
            }
            OnLag::NeverDrop { max_backlog_bytes } => {
                let (tx, rx) = mpsc::unbounded_channel();
                let backlog = Arc::new(Backlog::default());
                (
                    Tx::Unbounded {
                        tx,
                        backlog: backlog.clone(),
                        max_bytes: max_backlog_bytes,
                    },
                    Rx::Unbounded(rx),
                    Some(backlog),
                )
            }
        };
        if !s.closed {
            let mut sub = Subscriber {
                tx,
                options,
                state: SubState::AwaitKeyframe,
                header_gen: s.header_gen,
                segment: s.segment,
                last_delivery: None,
                dropped: dropped.clone(),
            };
            // A fresh channel has room for the three cached tags. Their chunks are this
            // subscriber's own (stamped with the current position), encoded here.
            for t in s.cached_headers() {
                let chunks = if options.rtmp_chunks {
                    encode_media(&t, SHARED_STREAM_ID)
                } else {
                    None
                };
                let _ = sub.tx.send_with(SpliceItem::Tag(t), chunks);
            }
            if !s.has_video() {
                sub.state = SubState::Live;
            }
            s.subscribers.push(sub);
            s.stats.subscribers = s.subscribers.len();
        }
        // When closed, `tx` is dropped here and the subscription ends at once.
        Subscription {
            rx,
            backlog,
            dropped,
        }
    }

    /// The stream's last known picture: width, height (from the newest `onMetaData`) and frame
    /// rate (metadata, else the measured frame interval). `None` before any metadata with a
    /// size. The slate is encoded to match it, so players see no format change but colour.
    pub fn video_shape(&self) -> Option<VideoShape> {
        let s = self.lock();
        let meta = metadata_from_script(&s.metadata.as_ref()?.data)?;
        let (width, height) = (meta.video_width?, meta.video_height?);
        if width == 0 || height == 0 {
            return None;
        }
        let fps = match meta.video_frame_rate {
            Some(f) if f.is_finite() && (1.0..=120.0).contains(&f) => f64::from(f),
            _ => 1000.0 / f64::from(s.frame_interval.max(1)),
        };
        Some(VideoShape { width, height, fps })
    }

    /// Whether any video frame has gone out on the timeline (destinations have a picture
    /// to keep).
    pub fn has_output(&self) -> bool {
        self.lock().stats.video_frames_out > 0
    }

    /// Ends the timeline: every subscription drains and then ends.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.subscribers.clear();
        s.stats.subscribers = 0;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SplicerStats {
        let s = self.lock();
        let mut st = s.stats.clone();
        st.last_timestamp = s.last_out;
        st.frame_interval_ms = s.frame_interval;
        st
    }
}

/// What every subscriber's delivery of one tag shares.
struct Delivery<'a> {
    tag: &'a FlvTag,
    /// The tag's RTMP chunks, encoded once when any subscriber asked for them.
    chunks: Option<Bytes>,
    is_key: bool,
    is_header: bool,
    header_gen: u64,
    /// Cached headers (with their chunks when any subscriber wants chunks), built only when a
    /// subscriber resumes after missing a header change.
    headers: &'a [(FlvTag, Option<Bytes>)],
    segment: u64,
    origin: Option<Origin>,
    /// Now, taken once per tag and only when a subscriber sees gaps.
    now: Option<Instant>,
    gap_after: Duration,
}

impl Inner {
    fn has_video(&self) -> bool {
        self.video_header.is_some()
    }

    /// Metadata and sequence headers, stamped with the current position.
    fn cached_headers(&self) -> Vec<FlvTag> {
        [&self.metadata, &self.video_header, &self.audio_header]
            .into_iter()
            .flatten()
            .map(|t| t.with_timestamp(self.last_out))
            .collect()
    }

    /// Maps a source timestamp onto the output timeline and keeps it monotonic.
    fn rebase(&mut self, tag: &FlvTag) -> u32 {
        if self.offset.is_none() && tag.is_sequence_header() {
            // Headers do not anchor the new timeline: a switch may replay them (stamped 0)
            // in front of a keyframe from much later in the source, and anchoring on them
            // would open a gap of that length in the output.
            return self.last_out;
        }
        let src = i64::from(tag.timestamp);
        if tag.is_video_frame() {
            if let Some(prev) = self.last_video_in {
                let d = tag.timestamp.wrapping_sub(prev);
                if (1..=200).contains(&d) {
                    self.frame_interval = d;
                }
            }
            self.last_video_in = Some(tag.timestamp);
        }
        let target = match self.offset {
            Some(off) => {
                let t = src + off;
                let last = i64::from(self.last_out);
                if t < last - MAX_BACKWARD_JUMP_MS || t > last + MAX_FORWARD_JUMP_MS {
                    None
                } else {
                    Some(t)
                }
            }
            None => None,
        };
        let t = match target {
            Some(t) => t,
            None => {
                let start = if self.started {
                    i64::from(self.last_out) + i64::from(self.frame_interval)
                } else {
                    0
                };
                self.offset = Some(start - src);
                start
            }
        };
        self.started = true;
        // Audio and video of one source interleave by DTS; small inversions are clamped so
        // the connection-level timeline never goes backwards.
        let t = t.clamp(i64::from(self.last_out), i64::from(u32::MAX)) as u32;
        self.last_out = t;
        t
    }

    fn fan_out(&mut self, tag: &FlvTag) {
        let gen = self.header_gen;
        let is_key = tag.is_key_picture();
        // Only a subscriber resuming at this keyframe after missing a header change needs the
        // cached headers; do not build them for every tag.
        let resync = is_key
            && self
                .subscribers
                .iter()
                .any(|s| s.state == SubState::AwaitKeyframe && s.header_gen != gen);
        let chunked = self.subscribers.iter().any(|s| s.options.rtmp_chunks);
        let encode = |t: &FlvTag| {
            if chunked {
                encode_media(t, SHARED_STREAM_ID)
            } else {
                None
            }
        };
        let headers: Vec<(FlvTag, Option<Bytes>)> = if resync {
            self.cached_headers()
                .into_iter()
                .map(|h| {
                    let c = encode(&h);
                    (h, c)
                })
                .collect()
        } else {
            Vec::new()
        };
        let now = self
            .subscribers
            .iter()
            .any(|s| s.options.see_switches_and_gaps)
            .then(Instant::now);
        let d = Delivery {
            tag,
            chunks: encode(tag),
            is_key,
            is_header: tag.is_sequence_header() || tag.is_metadata(),
            header_gen: gen,
            headers: &headers,
            segment: self.segment,
            origin: self.origin,
            now,
            gap_after: self.config.gap_after,
        };
        self.subscribers.retain_mut(|sub| sub.deliver(&d));
        self.stats.subscribers = self.subscribers.len();
    }
}

impl Subscriber {
    /// Offers one tag; returns whether the subscriber stays.
    fn deliver(&mut self, d: &Delivery<'_>) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if d.origin == Some(Origin::Slate) && !self.options.include_slate {
            return true;
        }
        if self.state == SubState::AwaitKeyframe {
            if d.is_header {
                // Keep headers current even while waiting: they are tiny and a switch
                // may have happened.
                match self.send_marked(d, d.tag.clone(), &d.chunks) {
                    Ok(()) => self.header_gen = d.header_gen,
                    Err(SendError::Gone) => return false,
                    Err(SendError::Full) => {}
                }
                return true;
            }
            if !d.is_key {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            if self.header_gen != d.header_gen {
                // It missed a header change while dropping: resend all, or keep waiting.
                if self.tx.capacity() < d.headers.len() + 1 {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                for (h, chunks) in d.headers {
                    if let Err(SendError::Gone) = self.send_marked(d, h.clone(), chunks) {
                        return false;
                    }
                }
                self.header_gen = d.header_gen;
            }
            self.state = SubState::Live;
        }
        match self.send_marked(d, d.tag.clone(), &d.chunks) {
            Ok(()) => {
                if d.is_header {
                    self.header_gen = d.header_gen;
                }
                true
            }
            Err(SendError::Full) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.state = SubState::AwaitKeyframe;
                true
            }
            Err(SendError::Gone) => false,
        }
    }

    /// Sends `tag`, preceded by the gap and switch markers that are due for a subscriber that
    /// sees them. A subscriber that has received nothing yet gets no marker: there is nothing
    /// before its first tag to switch from or to have a gap after.
    fn send_marked(
        &mut self,
        d: &Delivery<'_>,
        tag: FlvTag,
        chunks: &Option<Bytes>,
    ) -> Result<(), SendError> {
        let chunks = if self.options.rtmp_chunks {
            chunks.clone()
        } else {
            None
        };
        if !self.options.see_switches_and_gaps {
            return self.tx.send_with(SpliceItem::Tag(tag), chunks);
        }
        let now = d.now.unwrap_or_else(Instant::now);
        if let Some(last) = self.last_delivery {
            let wall = now.saturating_duration_since(last);
            if wall > d.gap_after {
                self.tx.send(SpliceItem::Gap(Gap {
                    timestamp: tag.timestamp,
                    wall,
                }))?;
                // Counted as delivered, so a full buffer does not report the gap twice.
                self.last_delivery = Some(now);
            }
            if self.segment != d.segment {
                self.tx.send(SpliceItem::Switch(Switch {
                    to: d.origin,
                    timestamp: tag.timestamp,
                }))?;
                self.segment = d.segment;
            }
        }
        self.segment = d.segment;
        self.tx.send_with(SpliceItem::Tag(tag), chunks)?;
        self.last_delivery = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::test_media::ffmpeg_flv;
    use crate::media::flv::{FlvItem, FlvParser};

    fn tags_of(flv: &[u8]) -> Vec<FlvTag> {
        let mut p = FlvParser::new();
        p.feed(flv)
            .expect("valid flv")
            .into_iter()
            .filter_map(|i| match i {
                FlvItem::Tag(t) => Some(t),
                FlvItem::Header(_) => None,
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

    /// Width/height from an AVC decoder configuration record are awkward to get; the record's
    /// SPS bytes differ between resolutions, which is what the test needs.
    fn sps_bytes(t: &FlvTag) -> Vec<u8> {
        t.data[5..].to_vec()
    }

    #[test]
    fn switch_between_two_sources_keeps_one_monotonic_timeline() {
        crate::require_peers!(Ffmpeg);
        let (a, b) = (ffmpeg_flv(640, 360, 3), ffmpeg_flv(320, 240, 2));
        let (a, b) = (tags_of(&a), tags_of(&b));
        let splicer = Splicer::new(SplicerConfig {
            subscriber_capacity: 10_000,
            ..SplicerConfig::default()
        });
        let mut sub = splicer.subscribe();
        splicer.begin_source();
        for t in &a {
            splicer.push(t.clone());
        }
        let pos_a = splicer.stats().last_timestamp;
        splicer.begin_source();
        for t in &b {
            splicer.push(t.clone());
        }
        let out = drain(&mut sub);

        // One onMetaData only, at the start.
        assert_eq!(out.iter().filter(|t| t.is_metadata()).count(), 1);
        assert!(out[0].is_metadata());
        // Both sources' sequence headers went out, each in front of its own frames.
        let vh: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].is_video_sequence_header())
            .collect();
        assert_eq!(vh.len(), 2);
        assert_ne!(sps_bytes(&out[vh[0]]), sps_bytes(&out[vh[1]]));
        assert_eq!(
            out.iter().filter(|t| t.is_audio_sequence_header()).count(),
            2
        );
        // Monotonic over the whole output.
        for w in out.windows(2) {
            assert!(
                w[1].timestamp >= w[0].timestamp,
                "{} then {}",
                w[0].timestamp,
                w[1].timestamp
            );
        }
        // The second source's headers go out at the current position, and its media starts
        // one frame interval after the first one's last tag.
        assert_eq!(out[vh[1]].timestamp, pos_a);
        let first_b = out[vh[1]..]
            .iter()
            .find(|t| !t.is_sequence_header())
            .expect("media of b");
        assert_eq!(first_b.timestamp, pos_a + 40);
        // First frame after the switch is a keyframe.
        let after = out[vh[1]..]
            .iter()
            .find(|t| t.is_video_frame())
            .expect("frames of b");
        assert!(after.is_keyframe());
        let end = out.last().map(|t| t.timestamp).unwrap_or(0);
        assert!((4900..=5200).contains(&end), "end {end}");
        assert_eq!(splicer.stats().video_frames_out, 125);
    }

    #[test]
    fn late_subscriber_gets_headers_then_starts_at_keyframe() {
        crate::require_peers!(Ffmpeg);
        let a = ffmpeg_flv(320, 240, 3);
        let a = tags_of(&a);
        let splicer = Splicer::default();
        splicer.begin_source();
        let mid = a.len() / 3;
        for t in &a[..mid] {
            splicer.push(t.clone());
        }
        let mut late = splicer.subscribe();
        for t in &a[mid..] {
            splicer.push(t.clone());
        }
        let out = drain(&mut late);
        assert!(out[0].is_metadata());
        assert!(out[1].is_video_sequence_header());
        assert!(out[2].is_audio_sequence_header());
        assert!(out[3].is_keyframe(), "then a keyframe");
        assert!(
            out[3].timestamp >= 1960,
            "the 2 s keyframe, got {}",
            out[3].timestamp
        );
        assert_eq!(late.dropped() as usize, mid_drops(&a, mid));
    }

    /// Tags between the subscription and the next keyframe that are counted as dropped.
    fn mid_drops(a: &[FlvTag], mid: usize) -> usize {
        a[mid..]
            .iter()
            .take_while(|t| !t.is_key_picture())
            .filter(|t| !t.is_sequence_header() && !t.is_metadata())
            .count()
    }

    #[test]
    fn slow_subscriber_drops_to_next_keyframe_without_blocking_others() {
        crate::require_peers!(Ffmpeg);
        let a = ffmpeg_flv(320, 240, 5);
        let a = tags_of(&a);
        let splicer = Splicer::new(SplicerConfig {
            subscriber_capacity: 20,
            ..SplicerConfig::default()
        });
        let mut slow = splicer.subscribe();
        let mut fast = splicer.subscribe();
        splicer.begin_source();
        let mut fast_out = Vec::new();
        for t in &a {
            splicer.push(t.clone());
            while let Some(t) = fast.try_recv() {
                fast_out.push(t);
            }
        }
        assert_eq!(fast.dropped(), 0);
        assert_eq!(fast_out.iter().filter(|t| t.is_video_frame()).count(), 125);
        let slow_out = drain(&mut slow);
        assert!(slow.dropped() > 0);
        assert!(slow_out.len() <= 20);
        // What the slow one got is a prefix up to the point it filled, not a random mix.
        assert!(slow_out[0].is_metadata());
        // Now it reads again; the next tags it gets start at a keyframe.
        let mut after = Vec::new();
        splicer.begin_source();
        for t in &a {
            splicer.push(t.clone());
            while let Some(t) = slow.try_recv() {
                after.push(t);
            }
        }
        let first_frame = after
            .iter()
            .find(|t| t.tag_type != TagType::Script && !t.is_sequence_header())
            .expect("frames");
        assert!(first_frame.is_keyframe());
    }

    #[test]
    fn closed_splicer_ends_subscriptions() {
        let splicer = Splicer::default();
        let mut sub = splicer.subscribe();
        splicer.close();
        assert!(sub.try_recv().is_none());
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let Ok(rt) = rt else { return };
        assert!(rt.block_on(sub.recv()).is_none());
        assert_eq!(splicer.stats().subscribers, 0);
    }

    #[test]
    fn replayed_headers_do_not_open_a_gap_at_a_switch() {
        crate::require_peers!(Ffmpeg);
        let a = ffmpeg_flv(320, 240, 3);
        let a = tags_of(&a);
        let splicer = Splicer::default();
        let mut sub = splicer.subscribe();
        splicer.begin_source();
        for t in &a {
            splicer.push(t.clone());
        }
        let end = splicer.stats().last_timestamp;
        drain(&mut sub);
        // What a standby ingest hands over: its headers (stamped 0) and a GOP from 2 s on.
        splicer.begin_source();
        for t in a.iter().filter(|t| t.is_sequence_header()) {
            splicer.push(t.clone());
        }
        let key = a
            .iter()
            .position(|t| t.is_key_picture() && t.timestamp >= 1900)
            .expect("2 s keyframe");
        for t in &a[key..] {
            splicer.push(t.clone());
        }
        let out = drain(&mut sub);
        let first_frame = out.iter().find(|t| t.is_video_frame()).expect("frame");
        assert_eq!(first_frame.timestamp, end + 40, "no gap after the switch");
    }

    fn key(ts: u32, size: usize) -> FlvTag {
        let mut body = vec![0u8; size.max(5)];
        body[0] = 0x17;
        body[1] = 1;
        FlvTag::new(TagType::Video, ts, bytes::Bytes::from(body))
    }

    fn never_drop(max_backlog_bytes: Option<u64>) -> SubscribeOptions {
        SubscribeOptions {
            on_lag: OnLag::NeverDrop { max_backlog_bytes },
            ..SubscribeOptions::default()
        }
    }

    #[test]
    fn a_quiet_spell_is_a_gap_for_subscribers_that_see_gaps() {
        let splicer = Splicer::new(SplicerConfig {
            gap_after: Duration::from_millis(30),
            ..SplicerConfig::default()
        });
        let mut sink = splicer.subscribe_with(SubscribeOptions::file_sink());
        let mut plain = splicer.subscribe();
        splicer.begin(Origin::Source(0));
        splicer.push(key(0, 10));
        splicer.push(key(40, 10));
        std::thread::sleep(Duration::from_millis(60));
        splicer.push(key(80, 10));
        let items: Vec<SpliceItem> = std::iter::from_fn(|| sink.try_recv_item()).collect();
        assert_eq!(items.len(), 4, "{items:?}");
        match &items[2] {
            SpliceItem::Gap(g) => {
                assert!(g.wall >= Duration::from_millis(60), "{g:?}");
                assert_eq!(g.timestamp, 80);
            }
            other => panic!("expected a gap, got {other:?}"),
        }
        assert!(matches!(&items[3], SpliceItem::Tag(t) if t.timestamp == 80));
        // Without markers: the tags alone.
        assert_eq!(drain(&mut plain).len(), 3);
    }

    #[test]
    fn a_never_drop_backlog_is_accounted_and_ends_past_its_limit() {
        let splicer = Splicer::new(SplicerConfig {
            subscriber_capacity: 8,
            ..SplicerConfig::default()
        });
        let mut unlimited = splicer.subscribe_with(never_drop(None));
        let mut limited = splicer.subscribe_with(never_drop(Some(1_000)));
        let pusher = splicer.subscribe();
        splicer.begin_source();
        for i in 0..20 {
            splicer.push(key(i * 40, 100));
        }
        // Nothing read yet: 20 tags of 100 bytes wait for the unlimited one, none dropped.
        let b = unlimited.backlog().expect("accounted");
        assert_eq!((b.items, b.bytes, b.peak_bytes), (20, 2_000, 2_000));
        assert_eq!(unlimited.dropped(), 0);
        assert!(pusher.backlog().is_none());
        assert!(pusher.dropped() > 0, "the bounded one dropped");
        // The limited one got its first 10 tags whole, then was cut off: it drains and ends.
        assert!(limited.overflowed());
        assert_eq!(drain(&mut limited).len(), 10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert!(rt.block_on(limited.recv()).is_none());
        assert_eq!(splicer.stats().subscribers, 2);
        assert_eq!(drain(&mut unlimited).len(), 20);
        let b = unlimited.backlog().expect("accounted");
        assert_eq!((b.items, b.bytes, b.peak_bytes), (0, 0, 2_000));
        assert!(!unlimited.overflowed());
    }

    #[test]
    fn the_slate_is_left_out_and_its_end_is_a_switch() {
        let splicer = Splicer::default();
        let mut sink = splicer.subscribe_with(SubscribeOptions::file_sink());
        let mut pusher = splicer.subscribe_with(SubscribeOptions {
            see_switches_and_gaps: true,
            ..SubscribeOptions::default()
        });
        splicer.begin(Origin::Source(0));
        splicer.push(key(0, 10));
        splicer.begin(Origin::Slate);
        splicer.push(key(0, 11));
        splicer.push(key(40, 11));
        splicer.begin(Origin::Source(1));
        splicer.push(key(0, 12));
        let sink_items: Vec<SpliceItem> = std::iter::from_fn(|| sink.try_recv_item()).collect();
        let sizes: Vec<String> = sink_items
            .iter()
            .map(|i| match i {
                SpliceItem::Tag(t) => t.data.len().to_string(),
                SpliceItem::Switch(s) => format!("switch {:?}", s.to),
                SpliceItem::Gap(_) => "gap".into(),
            })
            .collect();
        assert_eq!(sizes, ["10", "switch Some(Source(1))", "12"]);
        let pusher_items: Vec<SpliceItem> = std::iter::from_fn(|| pusher.try_recv_item()).collect();
        let switches: Vec<Option<Origin>> = pusher_items
            .iter()
            .filter_map(|i| match i {
                SpliceItem::Switch(s) => Some(s.to),
                _ => None,
            })
            .collect();
        assert_eq!(switches, [Some(Origin::Slate), Some(Origin::Source(1))]);
        assert_eq!(pusher_items.len(), 4 + 2);
    }
}
