//! One thread publishing a pre-read FLV file to many RTMP streams at once, paced by the tags'
//! timestamps as `ffmpeg -re -stream_loop -1 -c copy` paces one.
//!
//! The density phase needs N sources (and the nginx-rtmp contender 2N more). N ffmpeg
//! publishers would cost the machine tens of processes' worth of demuxing and scheduling, which
//! would crowd the contenders out of a 2-core machine long before they run out of room. Here the
//! file is parsed once and each tag is only chunked (`rml_rtmp`) and written per connection.
//! Every stream gets the same tag at the same moment, so one log of what was sent serves them
//! all, and the thread's own CPU clock is what publishing cost (reported apart).

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use relaycast_workers::media::flv::{FlvItem, FlvParser, FlvTag, TagType};
use relaycast_workers::media::metadata::metadata_from_script;
use rml_rtmp::sessions::{ClientSessionEvent, ClientSessionResult, PublishRequestType};
use rml_rtmp::time::RtmpTimestamp;

use super::{video_frame_hash, RtmpClient, Step};

/// How often the connections are read (nginx's acknowledgements and pings), so that nothing
/// piles up in the other direction.
const DRAIN_EVERY: Duration = Duration::from_secs(1);

/// A video frame as it was sent to every stream.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// Just before the first connection's write.
    pub(super) at: Instant,
    /// [`video_frame_hash`] of the tag.
    pub(super) hash: u64,
}

#[derive(Default)]
struct Shared {
    sent: Mutex<Vec<Sent>>,
    /// The pacing thread's CPU clock in nanoseconds, updated after every batch of tags.
    cpu_ns: AtomicU64,
    /// Connections that failed (each is dropped; the others go on).
    failed: AtomicU64,
}

pub(super) struct FlvPublisher {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    streams: usize,
}

struct Conn {
    client: RtmpClient,
    name: String,
}

impl FlvPublisher {
    /// Reads `file`, opens a publish on every `(port, stream)` of `targets` (all before the first
    /// tag, so every stream starts together), sends each its metadata and sequence headers,
    /// then loops the file's media tags to all of them until dropped.
    pub(super) fn start(file: &Path, targets: &[(u16, String)]) -> Result<FlvPublisher> {
        let (head, media, loop_ms) = read_flv(file)?;
        let never = AtomicBool::new(false);
        let mut conns = Vec::with_capacity(targets.len());
        for (port, name) in targets {
            let mut client =
                RtmpClient::connect(*port, &never).with_context(|| format!("publishing {name}"))?;
            client
                .drive(
                    &never,
                    Some(Instant::now() + Duration::from_secs(10)),
                    |session, event| match event {
                        ClientSessionEvent::ConnectionRequestAccepted => Ok(Step::Send(
                            session
                                .request_publishing(name.clone(), PublishRequestType::Live)
                                .map_err(|e| anyhow!("{e:?}"))?,
                        )),
                        ClientSessionEvent::PublishRequestAccepted => Ok(Step::Done),
                        ClientSessionEvent::ConnectionRequestRejected { description } => {
                            bail!("connect rejected: {description}")
                        }
                        _ => Ok(Step::Continue),
                    },
                )
                .with_context(|| format!("publishing {name} on port {port}"))?;
            client
                .socket
                .set_write_timeout(Some(Duration::from_secs(5)))?;
            let mut conn = Conn {
                client,
                name: name.clone(),
            };
            for tag in &head {
                conn.send(tag, tag.timestamp)?;
            }
            conns.push(conn);
        }
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("flv-publisher".into())
            .spawn(move || pace(conns, &media, loop_ms, &sh, &st))?;
        Ok(FlvPublisher {
            shared,
            stop,
            thread: Some(thread),
            streams: targets.len(),
        })
    }

    /// CPU seconds the pacing thread has used so far.
    pub(super) fn cpu_s(&self) -> f64 {
        self.shared.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Connections that failed since the start, of [`streams`](Self::streams).
    pub(super) fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    pub(super) fn streams(&self) -> usize {
        self.streams
    }

    /// The video frames sent in `[from, to]`.
    pub(super) fn sent_between(&self, from: Instant, to: Instant) -> Vec<Sent> {
        let sent = self
            .shared
            .sent
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        sent.into_iter()
            .filter(|s| s.at >= from && s.at <= to)
            .collect()
    }
}

impl Drop for FlvPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Conn {
    /// Chunks one tag with this connection's session and writes it.
    fn send(&mut self, tag: &FlvTag, timestamp: u32) -> Result<()> {
        let (session, ts) = (&mut self.client.session, RtmpTimestamp::new(timestamp));
        let r = match tag.tag_type {
            TagType::Video => session.publish_video_data(tag.data.clone(), ts, false),
            TagType::Audio => session.publish_audio_data(tag.data.clone(), ts, false),
            TagType::Script => match metadata_from_script(&tag.data) {
                Some(meta) => session.publish_metadata(&meta),
                None => return Ok(()),
            },
        }
        .map_err(|e| anyhow!("{e:?}"))?;
        if let ClientSessionResult::OutboundResponse(p) = r {
            std::io::Write::write_all(&mut self.client.socket, &p.bytes)?;
        }
        Ok(())
    }

    /// Reads whatever the server sent without waiting, and answers it (acknowledgements, pings).
    fn drain(&mut self) -> Result<()> {
        let c = &mut self.client;
        c.socket.set_nonblocking(true)?;
        let mut buf = [0u8; 4096];
        let read = loop {
            match c.socket.read(&mut buf) {
                Ok(0) => break Err(anyhow!("closed by the server")),
                Ok(n) => c.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        c.socket.set_nonblocking(false)?;
        read?;
        if !c.pending.is_empty() {
            let results = c
                .session
                .handle_input(&c.pending)
                .map_err(|e| anyhow!("{e:?}"))?;
            c.pending.clear();
            for r in results {
                if let ClientSessionResult::OutboundResponse(p) = r {
                    std::io::Write::write_all(&mut c.socket, &p.bytes)?;
                }
            }
        }
        Ok(())
    }
}

/// The file's head (metadata and sequence headers, sent once per connection), its media tags
/// (timestamps from 0), and the length of one loop in ms (last video timestamp plus one frame).
fn read_flv(file: &Path) -> Result<(Vec<FlvTag>, Vec<FlvTag>, u32)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let items = FlvParser::new()
        .feed(&bytes)
        .map_err(|e| anyhow!("parsing {}: {e}", file.display()))?;
    let (mut head, mut media) = (Vec::new(), Vec::new());
    for item in items {
        if let FlvItem::Tag(t) = item {
            if t.is_metadata() || t.is_sequence_header() {
                head.push(t);
            } else if matches!(t.tag_type, TagType::Audio | TagType::Video) {
                media.push(t);
            }
        }
    }
    let first = media
        .first()
        .context("no media tags in the source file")?
        .timestamp;
    for t in &mut media {
        t.timestamp = t.timestamp.saturating_sub(first);
    }
    let video: Vec<u32> = media
        .iter()
        .filter(|t| t.tag_type == TagType::Video)
        .map(|t| t.timestamp)
        .collect();
    let [.., before, last] = video[..] else {
        bail!("fewer than two video tags in the source file")
    };
    Ok((head, media, last + (last - before)))
}

fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime only writes to the timespec passed by pointer.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) != 0 {
            return 0;
        }
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

/// The pacing loop: tag k of loop l is due at `start + l × loop_ms + timestamp`, and written
/// to every live connection then (a late tag goes at once, as `-re` does). A connection that
/// fails is dropped and counted.
fn pace(mut conns: Vec<Conn>, media: &[FlvTag], loop_ms: u32, shared: &Shared, stop: &AtomicBool) {
    let start = Instant::now();
    let mut last_drain = start;
    for l in 0u64.. {
        for tag in media {
            let due_ms = l * u64::from(loop_ms) + u64::from(tag.timestamp);
            let due = start + Duration::from_millis(due_ms);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            // The RTMP timestamp wraps at 2^32 ms (49 days): never within a run.
            let ts = due_ms as u32;
            let at = Instant::now();
            let drain = at.duration_since(last_drain) >= DRAIN_EVERY;
            if drain {
                last_drain = at;
            }
            conns.retain_mut(|c| {
                let r = c
                    .send(tag, ts)
                    .and_then(|()| if drain { c.drain() } else { Ok(()) });
                if let Err(e) = &r {
                    eprintln!("# WARNING: publisher: {} failed: {e:#}", c.name);
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
                r.is_ok()
            });
            if tag.tag_type == TagType::Video {
                if let (Some((_, hash)), Ok(mut sent)) =
                    (video_frame_hash(&tag.data), shared.sent.lock())
                {
                    sent.push(Sent { at, hash });
                }
            }
            shared.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
        }
    }
}
