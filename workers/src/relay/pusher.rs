//! Rust-native RTMP publisher: one per destination, fed by a splicer subscription.
//!
//! Each pusher owns its TCP connection, its RTMP session (`rml_rtmp`) and its reconnect loop,
//! so a destination that fails, stalls or is stopped never touches another one. A fresh
//! connection takes a fresh subscription: cached metadata and sequence headers first, then
//! the next keyframe, which is exactly what a new RTMP publish needs.
//!
//! The cost of a tag: audio and video arrive with their RTMP chunks already encoded by the
//! splicer, once for every pusher of the timeline ([`crate::media::chunks`]); a pusher queues
//! those shared `Bytes` and writes everything pending with vectored writes. It is woken only
//! by its subscription (something to write), its socket (acknowledgements, pings) or a stop.
//! A destination whose server gave the publish another message stream id than
//! [`SHARED_STREAM_ID`] encodes its own chunks, in the same format; `onMetaData` always goes
//! through the connection's own `rml_rtmp` session.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use rml_rtmp::sessions::{ClientSession, ClientSessionEvent, ClientSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

pub use crate::media::rtmp::RtmpUrl;

use crate::media::chunks::{encode_media, SHARED_STREAM_ID};
use crate::media::flv::TagType;
use crate::media::metadata::metadata_from_script;
use crate::media::rtmp::{
    collect_packets, is_failure_status, open_client, publish_stream_id, ClientConn, ClientRequest,
    ConnReader, ConnWriter, RtmpError,
};
use crate::splice::splicer::{ChunkedTag, Splicer, SubscribeOptions};

/// Tunables of a pusher.
#[derive(Debug, Clone)]
pub struct PusherConfig {
    /// First reconnect delay. Default 1 s.
    pub backoff_initial: Duration,
    /// Longest reconnect delay. Default 30 s.
    pub backoff_max: Duration,
    /// A connection that published this long resets the backoff. Default 10 s.
    pub stable_after: Duration,
    /// Limit for TCP connect, handshake, `connect` and `publish` together. Default 5 s.
    pub connect_timeout: Duration,
    /// A single socket write blocked this long means the destination is stuck. Default 10 s.
    pub write_timeout: Duration,
    /// TLS client configuration for `rtmps://` destinations (e.g. a private CA). Default:
    /// the Mozilla root certificates (`webpki-roots`), built on first use.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connect to hosts that resolve inside the operator's network (loopback, private,
    /// link-local). The relay worker sets it from `allow_private_targets`. Default false: only
    /// the operator's setting opens private targets.
    pub allow_private_targets: bool,
}

impl Default for PusherConfig {
    fn default() -> Self {
        PusherConfig {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            tls: None,
            allow_private_targets: false,
        }
    }
}

/// Observed state of a pusher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PusherState {
    /// Connecting, handshaking or waiting for `publish` to be accepted.
    Connecting,
    /// Publishing tags.
    Publishing,
    /// Waiting before the next attempt after a failure.
    Backoff,
    /// Stopped by order, or the timeline ended; it will not reconnect.
    Stopped,
}

/// A snapshot of a pusher.
#[derive(Debug, Clone)]
pub struct PusherStatus {
    /// The destination URL.
    pub url: String,
    /// Current state.
    pub state: PusherState,
    /// Bytes written to the socket, over all connections.
    pub bytes_sent: u64,
    /// Tags published, over all connections.
    pub tags_sent: u64,
    /// Connection attempts after the first one.
    pub reconnects: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Delay of the current (or last) backoff.
    pub backoff: Duration,
    /// How long the current connection has been publishing.
    pub publishing_for: Option<Duration>,
}

/// Events a pusher reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PusherEvent {
    /// A connection attempt or a running publish failed.
    Failed {
        /// Destination URL.
        url: String,
        /// What went wrong.
        reason: String,
        /// Whether the destination is at fault (see [`RtmpError::is_destination_error`]).
        destination_error: bool,
    },
    /// Publishing again after a failure.
    Recovered {
        /// Destination URL.
        url: String,
    },
}

struct Shared {
    status: PusherStatus,
    publishing_since: Option<Instant>,
}

/// A running pusher. Dropping it cancels it (the task then ends on its own);
/// [`Pusher::stop`] also waits for the `deleteStream` to go out.
pub struct Pusher {
    url: RtmpUrl,
    cancel: CancellationToken,
    shared: Arc<Mutex<Shared>>,
    task: Option<JoinHandle<()>>,
}

impl Pusher {
    /// Starts publishing `splicer`'s timeline to `url`. Events go to `events` if given.
    pub fn spawn(
        url: RtmpUrl,
        splicer: Splicer,
        config: PusherConfig,
        events: Option<mpsc::UnboundedSender<PusherEvent>>,
    ) -> Pusher {
        let cancel = CancellationToken::new();
        let shared = Arc::new(Mutex::new(Shared {
            status: PusherStatus {
                url: url.as_str().to_string(),
                state: PusherState::Connecting,
                bytes_sent: 0,
                tags_sent: 0,
                reconnects: 0,
                last_error: None,
                backoff: Duration::ZERO,
                publishing_for: None,
            },
            publishing_since: None,
        }));
        let worker = Worker {
            url: url.clone(),
            splicer,
            config,
            events,
            cancel: cancel.clone(),
            shared: shared.clone(),
            // Registered once: the macro looks the counter up in the recorder on every call,
            // and `write` runs for every batch of tags.
            bytes_total: metrics::counter!("relaycast_relay_pusher_bytes_total"),
        };
        let task = tokio::spawn(worker.run());
        Pusher {
            url,
            cancel,
            shared,
            task: Some(task),
        }
    }

    /// The destination.
    pub fn url(&self) -> &RtmpUrl {
        &self.url
    }

    /// A snapshot of state and counters.
    pub fn status(&self) -> PusherStatus {
        let g = lock(&self.shared);
        let mut st = g.status.clone();
        st.publishing_for = g.publishing_since.map(|t| t.elapsed());
        st
    }

    /// Stops publishing (sends `deleteStream` when connected) and waits up to 3 s for the task.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_err()
            {
                // Stuck in a write to a dead peer: dropping the socket is the only way out.
                abort.abort();
            }
        }
        set_state(&self.shared, PusherState::Stopped);
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_state(shared: &Mutex<Shared>, state: PusherState) {
    let mut g = lock(shared);
    g.status.state = state;
    if state == PusherState::Publishing {
        g.publishing_since = Some(Instant::now());
    } else {
        g.publishing_since = None;
    }
}

/// How one publish attempt ended without error.
enum Ended {
    Cancelled,
    TimelineClosed,
}

struct Worker {
    url: RtmpUrl,
    splicer: Splicer,
    config: PusherConfig,
    events: Option<mpsc::UnboundedSender<PusherEvent>>,
    cancel: CancellationToken,
    shared: Arc<Mutex<Shared>>,
    bytes_total: metrics::Counter,
}

impl Worker {
    #[tracing::instrument(name = "pusher", skip_all, fields(url = %self.url.redacted()))]
    async fn run(self) {
        let mut backoff = self.config.backoff_initial;
        let mut failing = false;
        let mut attempt: u64 = 0;
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            if attempt > 0 {
                lock(&self.shared).status.reconnects += 1;
                metrics::counter!("relaycast_relay_pusher_reconnects_total").increment(1);
            }
            attempt += 1;
            set_state(&self.shared, PusherState::Connecting);
            let mut published_for = Duration::ZERO;
            let result = self.publish_once(&mut failing, &mut published_for).await;
            match result {
                Ok(Ended::Cancelled) | Ok(Ended::TimelineClosed) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "destination failed");
                    metrics::counter!("relaycast_relay_destination_failures_total").increment(1);
                    lock(&self.shared).status.last_error = Some(e.to_string());
                    if !failing {
                        failing = true;
                        self.emit(PusherEvent::Failed {
                            url: self.url.as_str().to_string(),
                            reason: e.to_string(),
                            destination_error: e.is_destination_error(),
                        });
                    }
                }
            }
            if published_for >= self.config.stable_after {
                backoff = self.config.backoff_initial;
            }
            {
                let mut g = lock(&self.shared);
                g.status.state = PusherState::Backoff;
                g.status.backoff = backoff;
                g.publishing_since = None;
            }
            // Sleep inside select! so a stop never waits out a long backoff.
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
        set_state(&self.shared, PusherState::Stopped);
    }

    fn emit(&self, ev: PusherEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(ev);
        }
    }

    async fn publish_once(
        &self,
        failing: &mut bool,
        published_for: &mut Duration,
    ) -> Result<Ended, RtmpError> {
        let setup = tokio::time::timeout(
            self.config.connect_timeout,
            open_client(
                &self.url,
                self.config.tls.as_ref(),
                self.config.allow_private_targets,
                ClientRequest::Publish,
            ),
        );
        let ClientConn {
            stream,
            mut session,
            ..
        } = tokio::select! {
            _ = self.cancel.cancelled() => return Ok(Ended::Cancelled),
            r = setup => r.map_err(|_| RtmpError::Timeout("connecting and publishing"))??,
        };
        // The id the server gave the publish: the splicer's shared chunks carry
        // SHARED_STREAM_ID, so a destination that answered another one gets chunks of its own.
        let stream_id = publish_stream_id(&mut session)?;
        let shared = stream_id == SHARED_STREAM_ID;
        if !shared {
            tracing::info!(
                stream_id,
                "publish stream id is not {SHARED_STREAM_ID}: this pusher encodes its own chunks"
            );
        }
        let (mut rd, mut wr) = tokio::io::split(stream);
        // Subscribe only once publishing is accepted, so the first tags are the cached
        // headers followed by a keyframe, not a backlog from the connect time.
        let options = if shared {
            SubscribeOptions::pusher()
        } else {
            SubscribeOptions::default()
        };
        let mut sub = self.splicer.subscribe_with(options);
        set_state(&self.shared, PusherState::Publishing);
        let started = Instant::now();
        if *failing {
            *failing = false;
            self.emit(PusherEvent::Recovered {
                url: self.url.as_str().to_string(),
            });
        }
        tracing::info!("publishing");
        let mut buf = vec![0u8; 8192];
        let mut pending: VecDeque<Bytes> = VecDeque::with_capacity(MAX_BATCH_TAGS as usize);
        // One registration with the token for the whole publish, not one per wake-up.
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        let result = loop {
            tokio::select! {
                _ = &mut cancelled => {
                    // Best effort goodbye; the peer may already be gone.
                    self.goodbye(&mut session, &mut rd, &mut wr).await;
                    break Ok(Ended::Cancelled);
                }
                tag = sub.recv_chunked() => {
                    let Some(tag) = tag else {
                        // The session ended (e.g. the last VOD item): end the publish cleanly.
                        self.goodbye(&mut session, &mut rd, &mut wr).await;
                        break Ok(Ended::TimelineClosed);
                    };
                    // Whatever else is already queued goes out in the same vectored write:
                    // one syscall per burst instead of one per tag.
                    let mut tags = 0u64;
                    let mut bytes = 0usize;
                    let mut next = Some(tag);
                    let mut failed = None;
                    while let Some(tag) = next.take() {
                        match chunks_of(&mut session, tag, stream_id) {
                            Ok(Some(b)) => {
                                bytes += b.len();
                                pending.push_back(b);
                                tags += 1;
                            }
                            Ok(None) => {}
                            Err(e) => { failed = Some(e); break; }
                        }
                        if tags < MAX_BATCH_TAGS && bytes < MAX_BATCH_BYTES {
                            next = sub.try_recv_chunked();
                        }
                    }
                    if let Some(e) = failed {
                        break Err(e);
                    }
                    if let Err(e) = self.write_pending(&mut wr, &mut pending, tags).await {
                        break Err(e);
                    }
                }
                n = rd.read(&mut buf) => {
                    match n {
                        Ok(0) => break Err(RtmpError::Closed),
                        Ok(n) => {
                            let results = match session.handle_input(&buf[..n]) {
                                Ok(r) => r,
                                Err(e) => break Err(e.into()),
                            };
                            if let Err(e) = self.check_events(&results) {
                                break Err(e);
                            }
                            if let Err(e) = self.send_results(&mut wr, results).await {
                                break Err(e);
                            }
                        }
                        Err(e) => break Err(e.into()),
                    }
                }
            }
        };
        *published_for = started.elapsed();
        result
    }

    /// Ends a publish without losing its tail: `deleteStream`, then a write shutdown (FIN),
    /// then reading until the server closes. Closing a socket with unread input makes the
    /// kernel send RST, and an RST throws away whatever the server has not read yet: the
    /// last second or two of the stream. Bounded to 2 s in all.
    async fn goodbye(&self, session: &mut ClientSession, rd: &mut ConnReader, wr: &mut ConnWriter) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if let Ok(results) = session.stop_publishing() {
                if self.send_results(wr, results).await.is_err() {
                    return;
                }
            }
            if wr.shutdown().await.is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    fn check_events(&self, results: &[ClientSessionResult]) -> Result<(), RtmpError> {
        for r in results {
            if let ClientSessionResult::RaisedEvent(
                ClientSessionEvent::UnhandleableOnStatusCode { code },
            ) = r
            {
                // The server ends a publish with an onStatus error (e.g. kicked by a
                // "drop_idle_publisher" or an auth callback).
                if is_failure_status(code) {
                    return Err(RtmpError::Rejected {
                        stage: "publish",
                        description: code.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn send_results(
        &self,
        wr: &mut ConnWriter,
        results: Vec<ClientSessionResult>,
    ) -> Result<(), RtmpError> {
        let mut out = Vec::new();
        collect_packets(results, &mut out);
        if out.is_empty() {
            return Ok(());
        }
        self.write(wr, &out).await
    }

    async fn write(&self, wr: &mut ConnWriter, bytes: &[u8]) -> Result<(), RtmpError> {
        tokio::time::timeout(self.config.write_timeout, wr.write_all(bytes))
            .await
            .map_err(|_| RtmpError::Timeout("writing to the destination"))??;
        self.count(bytes.len(), 0);
        Ok(())
    }

    /// Writes everything `pending` holds (carrying `tags` media tags) and counts both under
    /// one lock. The write timeout bounds the whole batch, as it bounded one `write_all`.
    async fn write_pending(
        &self,
        wr: &mut ConnWriter,
        pending: &mut VecDeque<Bytes>,
        tags: u64,
    ) -> Result<(), RtmpError> {
        let len: usize = pending.iter().map(Bytes::len).sum();
        tokio::time::timeout(self.config.write_timeout, write_all_vectored(wr, pending))
            .await
            .map_err(|_| RtmpError::Timeout("writing to the destination"))??;
        self.count(len, tags);
        Ok(())
    }

    fn count(&self, bytes: usize, tags: u64) {
        {
            let mut g = lock(&self.shared);
            g.status.bytes_sent += bytes as u64;
            g.status.tags_sent += tags;
        }
        self.bytes_total.increment(bytes as u64);
    }
}

/// Most buffers handed to one `writev`.
const MAX_IOV: usize = 64;

/// Writes every buffer of `pending` with vectored writes, taking partial writes into account;
/// `pending` is empty when it returns `Ok`.
async fn write_all_vectored(
    wr: &mut ConnWriter,
    pending: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !pending.is_empty() {
        let mut n = {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut k = 0;
            for b in pending.iter().take(MAX_IOV) {
                iov[k] = IoSlice::new(b);
                k += 1;
            }
            wr.write_vectored(&iov[..k]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = pending.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                pending.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

/// Most tags written in one batch.
const MAX_BATCH_TAGS: u64 = 64;
/// Most bytes written in one batch.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The bytes of one tag on this connection: the splicer's shared chunks when the publish
/// stream is the shared one, else chunks of its own (same format, its own stream id);
/// `onMetaData` through the session. `None` for what is not relayed (script data other than
/// `onMetaData`).
fn chunks_of(
    session: &mut ClientSession,
    t: ChunkedTag,
    stream_id: u32,
) -> Result<Option<Bytes>, RtmpError> {
    let ChunkedTag { tag, chunks } = t;
    match tag.tag_type {
        TagType::Video | TagType::Audio => Ok(match chunks {
            Some(c) if stream_id == SHARED_STREAM_ID => Some(c),
            _ => encode_media(&tag, stream_id),
        }),
        TagType::Script => {
            let Some(meta) = metadata_from_script(&tag.data) else {
                return Ok(None);
            };
            match session.publish_metadata(&meta)? {
                ClientSessionResult::OutboundResponse(p) => Ok(Some(Bytes::from(p.bytes))),
                _ => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::FlvTag;
    use bytes::Bytes;
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

    /// A pusher on the shared stream id writes the splicer's bytes as they are (the same
    /// buffer, not a copy); one whose server gave another id encodes its own, with that id.
    #[test]
    fn shared_chunks_only_on_the_shared_stream_id() {
        let (mut session, _) =
            ClientSession::new(rml_rtmp::sessions::ClientSessionConfig::new()).expect("session");
        let tag = FlvTag::new(TagType::Video, 40, Bytes::from(vec![0x27u8; 5000]));
        let shared = encode_media(&tag, SHARED_STREAM_ID).expect("chunks");
        let mine = chunks_of(
            &mut session,
            ChunkedTag {
                tag: tag.clone(),
                chunks: Some(shared.clone()),
            },
            SHARED_STREAM_ID,
        )
        .expect("ok")
        .expect("bytes");
        assert_eq!(mine.as_ptr(), shared.as_ptr(), "the shared buffer itself");
        let own = chunks_of(
            &mut session,
            ChunkedTag {
                tag,
                chunks: Some(shared.clone()),
            },
            7,
        )
        .expect("ok")
        .expect("bytes");
        assert_eq!(own.len(), shared.len());
        assert_eq!(
            &own[8..12],
            &7u32.to_le_bytes(),
            "its own message stream id"
        );
        assert_eq!(&own[12..], &shared[12..]);
    }

    #[tokio::test]
    async fn unreachable_destination_backs_off_and_stops_promptly() {
        let port = crate::test_util::closed_port();
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/x")).expect("url");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = PusherConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            allow_private_targets: true,
            ..PusherConfig::default()
        };
        let p = Pusher::spawn(url, Splicer::default(), config, Some(tx));
        let ev = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("event in time")
            .expect("event");
        assert!(matches!(
            ev,
            PusherEvent::Failed {
                destination_error: true,
                ..
            }
        ));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let st = p.status();
        // 100 + 200 + 400 + 400 ms of backoff fit in 1.2 s: at least 3 reconnects, no more than 6.
        assert!(
            (3..=6).contains(&st.reconnects),
            "reconnects {}",
            st.reconnects
        );
        assert!(st.backoff <= Duration::from_millis(400));
        assert!(st.last_error.is_some());
        // Only one Failed event per outage.
        assert!(rx.try_recv().is_err());
        let t = Instant::now();
        p.stop().await;
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn stop_does_not_wait_out_a_long_backoff() {
        let port = crate::test_util::closed_port();
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/x")).expect("url");
        let config = PusherConfig {
            backoff_initial: Duration::from_secs(3600),
            allow_private_targets: true,
            ..PusherConfig::default()
        };
        let p = Pusher::spawn(url, Splicer::default(), config, None);
        for _ in 0..200 {
            if p.status().state == PusherState::Backoff {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(p.status().state, PusherState::Backoff);
        let status = p.shared.clone();
        let t = Instant::now();
        p.stop().await;
        assert!(t.elapsed() < Duration::from_millis(200));
        assert_eq!(lock(&status).status.state, PusherState::Stopped);
    }

    /// A fake RTMP server that accepts `connect` and `publish`, then never reads again (a
    /// destination whose network or process hangs).
    async fn stalling_server(listener: tokio::net::TcpListener) {
        use rml_rtmp::sessions::ServerSessionResult as R;
        use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent};
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut hs = Handshake::new(PeerType::Server);
        let mut buf = vec![0u8; 65536];
        let mut leftover = loop {
            let Ok(n) = sock.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            match hs.process_bytes(&buf[..n]) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    let _ = sock.write_all(&response_bytes).await;
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    let _ = sock.write_all(&response_bytes).await;
                    break remaining_bytes;
                }
                Err(_) => return,
            }
        };
        let Ok((mut session, initial)) = ServerSession::new(ServerSessionConfig::new()) else {
            return;
        };
        let mut out = Vec::new();
        for r in initial {
            if let R::OutboundResponse(p) = r {
                out.extend_from_slice(&p.bytes);
            }
        }
        let _ = sock.write_all(&out).await;
        loop {
            let mut pending = std::mem::take(&mut leftover);
            if pending.is_empty() {
                let Ok(n) = sock.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                pending.extend_from_slice(&buf[..n]);
            }
            let Ok(results) = session.handle_input(&pending) else {
                return;
            };
            let mut out = Vec::new();
            let mut published = false;
            let mut queue = results;
            while let Some(r) = (!queue.is_empty()).then(|| queue.remove(0)) {
                match r {
                    R::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                    R::RaisedEvent(ServerSessionEvent::ConnectionRequested {
                        request_id, ..
                    }) => {
                        if let Ok(more) = session.accept_request(request_id) {
                            queue.extend(more);
                        }
                    }
                    R::RaisedEvent(ServerSessionEvent::PublishStreamRequested {
                        request_id,
                        ..
                    }) => {
                        if let Ok(more) = session.accept_request(request_id) {
                            queue.extend(more);
                        }
                        published = true;
                    }
                    _ => {}
                }
            }
            let _ = sock.write_all(&out).await;
            if published {
                // Hold the socket open and never read again.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        }
    }

    /// A destination that stops reading: its pusher fails on the write timeout and retries,
    /// while another subscriber of the same splicer gets every tag.
    #[tokio::test]
    async fn stalled_destination_times_out_without_holding_up_others() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(stalling_server(listener));

        let splicer = Splicer::new(crate::splice::splicer::SplicerConfig {
            subscriber_capacity: 64,
            ..Default::default()
        });
        let mut other = splicer.subscribe();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = PusherConfig {
            write_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            allow_private_targets: true,
            ..PusherConfig::default()
        };
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/stall")).expect("url");
        let pusher = Pusher::spawn(url, splicer.clone(), config, Some(tx));
        for _ in 0..200 {
            if pusher.status().state == PusherState::Publishing {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pusher.status().state, PusherState::Publishing);

        // 64 KiB "frames", a keyframe every 25: far more than socket buffers hold.
        splicer.begin_source();
        splicer.push(FlvTag::new(
            TagType::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]),
        ));
        let mut received = 0usize;
        let mut pushed = 0usize;
        let mut failed = None;
        for i in 0..2000u32 {
            let mut body = vec![0u8; 64 * 1024];
            body[0] = if i % 25 == 0 { 0x17 } else { 0x27 };
            body[1] = 1;
            splicer.push(FlvTag::new(TagType::Video, i * 40, Bytes::from(body)));
            pushed += 1;
            while other.try_recv().is_some() {
                received += 1;
            }
            if let Ok(ev) = rx.try_recv() {
                failed = Some(ev);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ev = failed.expect("the stalled destination failed");
        match ev {
            PusherEvent::Failed {
                reason,
                destination_error,
                ..
            } => {
                assert!(reason.contains("timed out while writing"), "{reason}");
                assert!(destination_error);
            }
            other => panic!("unexpected {other:?}"),
        }
        // The other subscriber got the header and every frame, nothing dropped.
        assert_eq!(received, pushed + 1);
        assert_eq!(other.dropped(), 0);
        pusher.stop().await;
    }
}
