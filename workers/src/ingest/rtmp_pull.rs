//! Native RTMP ingest: `play` of an `rtmp://` live source with the same `rml_rtmp` client as
//! the pushers, turned into the FLV tags the splicer takes.
//!
//! A copy relay of an RTMP source needs no decoding and no remuxing, so an ffmpeg child would
//! only cost memory (about 55 MB per process) and a pipe hop per tag. Pulling natively also
//! hears what ffmpeg does not tell: an origin keeps a player's connection open when the
//! publisher goes away, and at most says `NetStream.Play.UnpublishNotify` (nginx-rtmp with
//! `publish_notify on`), which ffmpeg ignores. Here that status ends the ingest at once.
//! Being cheap, a native pull also serves as the session's hot standby.
//!
//! The connection runs in a task of its own that hands events over a bounded channel; the
//! channel's back-pressure stops reading the socket (TCP then slows the origin) instead of
//! buffering without bound.

use std::time::{Duration, Instant};

use rml_rtmp::sessions::{ClientSessionEvent, ClientSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ingest::{IngestEvent, IngestProgress};
use crate::media::flv::{FlvTag, TagType};
use crate::media::metadata::metadata_script;
use crate::media::rtmp::{
    is_failure_status, open_client, ClientConn, ClientRequest, RtmpError, RtmpUrl,
};

/// Events queued between the connection task and the session: about 3 s of 25 fps video
/// with AAC, so a burst after a stall fits.
const EVENT_BUFFER: usize = 256;
/// How often a progress event is produced.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// One socket read.
const READ_CHUNK: usize = 64 * 1024;

/// `onStatus` codes that end a play: the publisher left, or the stream is gone.
fn ends_play(code: &str) -> bool {
    code == "NetStream.Play.UnpublishNotify"
        || code == "NetStream.Play.Stop"
        || code == "NetStream.Play.Complete"
        || is_failure_status(code)
}

/// A running native pull. Dropping it closes the connection.
pub struct RtmpPull {
    rx: mpsc::Receiver<IngestEvent>,
    task: JoinHandle<()>,
    exited: bool,
}

impl RtmpPull {
    /// Starts pulling `url`. `timeout` bounds the connect and `play` steps and any later
    /// silence of the socket; `allow_private` lets the host resolve inside the operator's
    /// network. Must be called within a tokio runtime.
    pub fn start(url: RtmpUrl, timeout: Duration, allow_private: bool) -> RtmpPull {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let task = tokio::spawn(async move {
            let reason = match pull(&url, timeout, allow_private, &tx).await {
                Ok(reason) => reason,
                Err(e) => e.to_string(),
            };
            tracing::debug!(url = %url.redacted(), %reason, "native ingest ended");
            let _ = tx
                .send(IngestEvent::Exited {
                    success: false,
                    reason,
                })
                .await;
        });
        RtmpPull {
            rx,
            task,
            exited: false,
        }
    }

    /// The next event; `None` after [`IngestEvent::Exited`]. Cancel safe.
    pub async fn next(&mut self) -> Option<IngestEvent> {
        if self.exited {
            return None;
        }
        let ev = self.rx.recv().await;
        if matches!(ev, Some(IngestEvent::Exited { .. }) | None) {
            self.exited = true;
        }
        ev
    }

    /// Closes the connection. A player has nothing to flush, so this is immediate.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for RtmpPull {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts what the pull produced, for the once-a-second progress event.
struct Progress {
    since: Instant,
    frames: u32,
    frames_since: u32,
    bytes_since: u64,
    last_ts: u32,
}

impl Progress {
    fn due(&mut self) -> Option<IngestProgress> {
        let dt = self.since.elapsed();
        if dt < PROGRESS_EVERY {
            return None;
        }
        let secs = dt.as_secs_f64();
        let p = IngestProgress {
            frame: self.frames,
            fps: (f64::from(self.frames_since) / secs) as f32,
            bitrate_kbps: (self.bytes_since as f64 * 8.0 / 1000.0 / secs) as f32,
            time: clock_time(self.last_ts),
            speed: 1.0,
        };
        self.since = Instant::now();
        self.frames_since = 0;
        self.bytes_since = 0;
        Some(p)
    }
}

/// `HH:MM:SS.cc`, as ffmpeg prints its position.
fn clock_time(ms: u32) -> String {
    let cs = ms / 10;
    format!(
        "{:02}:{:02}:{:02}.{:02}",
        cs / 360_000,
        cs / 6_000 % 60,
        cs / 100 % 60,
        cs % 100
    )
}

/// Runs one play until it ends; returns why.
async fn pull(
    url: &RtmpUrl,
    timeout: Duration,
    allow_private: bool,
    tx: &mpsc::Sender<IngestEvent>,
) -> Result<String, RtmpError> {
    let open = tokio::time::timeout(
        timeout,
        open_client(url, None, allow_private, ClientRequest::Play),
    );
    let ClientConn {
        mut stream,
        mut session,
        events,
    } = open
        .await
        .map_err(|_| RtmpError::Timeout("connecting and starting to play"))??;
    let mut progress = Progress {
        since: Instant::now(),
        frames: 0,
        frames_since: 0,
        bytes_since: 0,
        last_ts: 0,
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    let mut pending: Vec<ClientSessionEvent> = events;
    loop {
        for ev in pending.drain(..) {
            let tag = match ev {
                ClientSessionEvent::VideoDataReceived { timestamp, data } => {
                    FlvTag::new(TagType::Video, timestamp.value, data)
                }
                ClientSessionEvent::AudioDataReceived { timestamp, data } => {
                    FlvTag::new(TagType::Audio, timestamp.value, data)
                }
                ClientSessionEvent::StreamMetadataReceived { metadata } => FlvTag::new(
                    TagType::Script,
                    progress.last_ts,
                    metadata_script(&metadata),
                ),
                ClientSessionEvent::UnhandleableOnStatusCode { code } if ends_play(&code) => {
                    return Ok(format!("the source ended ({code})"));
                }
                _ => continue,
            };
            if tag.is_video_frame() {
                progress.frames += 1;
                progress.frames_since += 1;
            }
            progress.bytes_since += tag.data.len() as u64;
            progress.last_ts = tag.timestamp;
            if tx.send(IngestEvent::Tag(tag)).await.is_err() {
                return Ok("stopped".into());
            }
        }
        if let Some(p) = progress.due() {
            // Informational: never wait for room.
            let _ = tx.try_send(IngestEvent::Progress(p));
        }
        let n = tokio::time::timeout(timeout, stream.read(&mut buf))
            .await
            .map_err(|_| RtmpError::Timeout("reading from the source"))??;
        if n == 0 {
            return Ok("the source closed the connection".into());
        }
        out.clear();
        for r in session.handle_input(&buf[..n])? {
            match r {
                // Acknowledgements and pings: the origin drops a player that sends none.
                ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                ClientSessionResult::RaisedEvent(ev) => pending.push(ev),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_end_codes() {
        assert_eq!(clock_time(0), "00:00:00.00");
        assert_eq!(clock_time(3_723_450), "01:02:03.45");
        assert!(ends_play("NetStream.Play.UnpublishNotify"));
        assert!(ends_play("NetStream.Play.StreamNotFound"));
        assert!(!ends_play("NetStream.Play.Reset"));
        assert!(!ends_play("NetStream.Play.PublishNotify"));
    }

    #[tokio::test]
    async fn a_refused_connection_exits_with_a_reason() {
        let port = crate::test_util::closed_port();
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/x")).expect("url");
        let mut pull = RtmpPull::start(url, Duration::from_secs(2), true);
        match tokio::time::timeout(Duration::from_secs(5), pull.next()).await {
            Ok(Some(IngestEvent::Exited { success, reason })) => {
                assert!(!success);
                assert!(reason.contains("connect"), "{reason}");
            }
            other => panic!("expected an exit, got {other:?}"),
        }
        assert!(pull.next().await.is_none());
    }
}
