//! The RTMP client both ends of the relay use: a pusher publishes with it, a native ingest
//! plays with it (`rml_rtmp` does the protocol, this module the sockets).
//!
//! [`open_client`] resolves and checks the host, connects (TLS for `rtmps`), shakes hands,
//! sends `connect(app)` and then `publish` or `play` of the stream key. URLs are core's
//! [`RtmpUrl`], the one RTMP URL parser, so whatever the API accepts a client can open.

use std::net::SocketAddr;
use std::sync::Arc;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionError, ClientSessionEvent,
    ClientSessionResult, PublishRequestType,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

pub use relaycast_core::domain::relay::types::RtmpUrl;

/// Errors of one RTMP client connection (a publish or a play).
/// [`RtmpError::is_destination_error`] tells failures of the destination (refused, rejected,
/// gone) from our own bugs.
#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    /// TCP connect failed (refused, unreachable, DNS).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A network step did not finish in time.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// The destination closed the connection.
    #[error("destination closed the connection")]
    Closed,
    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The RTMP handshake failed.
    #[error("rtmp handshake failed: {0}")]
    Handshake(String),
    /// The server refused `connect` or `publish`.
    #[error("destination rejected the {stage}: {description}")]
    Rejected {
        /// `connect` or `publish`.
        stage: &'static str,
        /// The server's description.
        description: String,
    },
    /// The TLS handshake of an `rtmps://` destination failed (certificate, protocol).
    #[error("tls with {host} failed: {reason}")]
    Tls {
        /// The server name.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// The RTMP session state machine reported an error (a protocol error on either side).
    #[error("rtmp session error: {0}")]
    Session(String),
    /// The host resolved to an address inside the operator's network, and
    /// `allow_private_targets` is off.
    #[error("{0}")]
    InternalTarget(String),
}

impl RtmpError {
    /// Whether the failure lies with the destination (its address, its server, its network)
    /// rather than with relaycast. Only [`RtmpError::Session`] is counted as ours.
    pub fn is_destination_error(&self) -> bool {
        !matches!(self, RtmpError::Session(_))
    }
}

impl From<ClientSessionError> for RtmpError {
    fn from(e: ClientSessionError) -> Self {
        RtmpError::Session(format!("{e:?}"))
    }
}

/// A destination connection: plain TCP or TLS over TCP.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}
pub(crate) type BoxConn = Box<dyn Conn>;
pub(crate) type ConnReader = ReadHalf<BoxConn>;
pub(crate) type ConnWriter = WriteHalf<BoxConn>;

/// The default TLS configuration: Mozilla's roots, ring, TLS 1.2 and 1.3.
pub(crate) fn default_tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// What a client asks for once its `connect` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientRequest {
    /// `publish(stream_key)`: a pusher.
    Publish,
    /// `play(stream_key)`: a native RTMP ingest.
    Play,
}

/// An RTMP client connection whose publish or play request was accepted.
pub(crate) struct ClientConn {
    pub(crate) stream: BoxConn,
    pub(crate) session: ClientSession,
    /// Events the server sent in the same read as the acceptance (a play's metadata and
    /// sequence headers often come with it).
    pub(crate) events: Vec<ClientSessionEvent>,
}

/// TCP (and TLS for `rtmps`) connect, handshake, `connect(app)`, then `publish` or `play`
/// of the stream key. The caller bounds it with a timeout. The host is resolved here and,
/// unless `allow_private`, refused when any of its addresses is internal: the API only sees
/// the name, which may point inside the operator's network.
pub(crate) async fn open_client(
    url: &RtmpUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
    allow_private: bool,
    request: ClientRequest,
) -> Result<ClientConn, RtmpError> {
    let addrs = resolve_checked(url, allow_private).await?;
    let mut stream = connect(url, &addrs, tls).await?;
    let pending = handshake(&mut stream).await?;
    let session = request_connection(url, &mut stream).await?;
    await_acceptance(url, request, stream, session, pending).await
}

/// The host's addresses, refused when any is internal (unless `allow_private`).
async fn resolve_checked(url: &RtmpUrl, allow_private: bool) -> Result<Vec<SocketAddr>, RtmpError> {
    let addr = url.addr();
    let resolved = tokio::net::lookup_host(addr.as_str())
        .await
        .map(|a| a.collect::<Vec<SocketAddr>>());
    let addrs = match resolved {
        Ok(a) => a,
        Err(source) => return Err(RtmpError::Connect { addr, source }),
    };
    let ips: Vec<std::net::IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    relaycast_core::domain::targets::check_resolved(url.host(), &ips, allow_private)
        .map_err(|e| RtmpError::InternalTarget(e.to_string()))?;
    Ok(addrs)
}

/// TCP to the checked addresses, inside TLS for `rtmps` (`tls`, else Mozilla's roots).
async fn connect(
    url: &RtmpUrl,
    addrs: &[SocketAddr],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<BoxConn, RtmpError> {
    let tcp = TcpStream::connect(addrs)
        .await
        .map_err(|source| RtmpError::Connect {
            addr: url.addr(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    if !url.tls() {
        return Ok(Box::new(tcp));
    }
    let tls_err = |reason: String| RtmpError::Tls {
        host: url.host().to_string(),
        reason,
    };
    let config = match tls {
        Some(c) => c.clone(),
        None => default_tls_config().map_err(tls_err)?,
    };
    let name = rustls::pki_types::ServerName::try_from(url.host().to_string())
        .map_err(|e| tls_err(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    Ok(Box::new(tls))
}

/// The client side of the RTMP handshake; returns what the server sent past its end.
async fn handshake(stream: &mut BoxConn) -> Result<Vec<u8>, RtmpError> {
    let mut handshake = Handshake::new(PeerType::Client);
    let p0p1 = handshake
        .generate_outbound_p0_and_p1()
        .map_err(|e| RtmpError::Handshake(format!("{e:?}")))?;
    stream.write_all(&p0p1).await?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(RtmpError::Closed);
        }
        match handshake
            .process_bytes(&buf[..n])
            .map_err(|e| RtmpError::Handshake(format!("{e:?}")))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// A client session with `tcUrl` set, and its `connect(app)` sent.
async fn request_connection(
    url: &RtmpUrl,
    stream: &mut BoxConn,
) -> Result<ClientSession, RtmpError> {
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(url.tc_url());
    // Every client announces the same outgoing chunk size right after `connect`, so the
    // chunks a splicer encodes once fit every pusher's connection.
    config.chunk_size = crate::media::chunks::CHUNK_SIZE;
    let (mut session, initial) = ClientSession::new(config)?;
    let mut out = Vec::new();
    collect_packets(initial, &mut out);
    let connect = session.request_connection(url.app().to_string())?;
    collect_packets(vec![connect], &mut out);
    stream.write_all(&out).await?;
    Ok(session)
}

/// Reads the server's answers until the `publish` or `play` (sent once `connect` is
/// accepted) is accepted too, or refused.
async fn await_acceptance(
    url: &RtmpUrl,
    request: ClientRequest,
    mut stream: BoxConn,
    mut session: ClientSession,
    mut pending: Vec<u8>,
) -> Result<ClientConn, RtmpError> {
    let mut buf = vec![0u8; 8192];
    let mut requested = false;
    loop {
        if !pending.is_empty() {
            let results = session.handle_input(&pending)?;
            pending.clear();
            let mut out = Vec::new();
            let answer = answer_results(
                url,
                request,
                &mut session,
                results,
                &mut requested,
                &mut out,
            )?;
            if !out.is_empty() {
                stream.write_all(&out).await?;
            }
            if let Some(events) = answer {
                return Ok(ClientConn {
                    stream,
                    session,
                    events,
                });
            }
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(RtmpError::Closed);
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Handles one batch of session results while waiting for acceptance: packets to send go to
/// `out`, an accepted `connect` sends the `publish` or `play` request. Returns the events that
/// came with an acceptance (a play's metadata and headers often do), or `None` while waiting.
fn answer_results(
    url: &RtmpUrl,
    request: ClientRequest,
    session: &mut ClientSession,
    results: Vec<ClientSessionResult>,
    requested: &mut bool,
    out: &mut Vec<u8>,
) -> Result<Option<Vec<ClientSessionEvent>>, RtmpError> {
    let stage = match request {
        ClientRequest::Publish => "publish",
        ClientRequest::Play => "play",
    };
    let mut accepted = false;
    let mut events = Vec::new();
    for r in results {
        let ev = match r {
            ClientSessionResult::OutboundResponse(p) => {
                out.extend_from_slice(&p.bytes);
                continue;
            }
            ClientSessionResult::RaisedEvent(ev) => ev,
            ClientSessionResult::UnhandleableMessageReceived(_) => continue,
        };
        match ev {
            ClientSessionEvent::ConnectionRequestAccepted => {
                let req = match request {
                    ClientRequest::Publish => session.request_publishing(
                        url.stream_key().to_string(),
                        PublishRequestType::Live,
                    )?,
                    ClientRequest::Play => {
                        session.request_playback(url.stream_key().to_string())?
                    }
                };
                collect_packets(vec![req], out);
                *requested = true;
            }
            ClientSessionEvent::ConnectionRequestRejected { description } => {
                return Err(RtmpError::Rejected {
                    stage: "connect",
                    description,
                });
            }
            ClientSessionEvent::PublishRequestAccepted if request == ClientRequest::Publish => {
                accepted = true
            }
            ClientSessionEvent::PlaybackRequestAccepted if request == ClientRequest::Play => {
                accepted = true
            }
            // e.g. NetStream.Publish.BadName when the name is taken, or
            // NetStream.Play.StreamNotFound.
            ClientSessionEvent::UnhandleableOnStatusCode { code }
                if *requested && !accepted && is_failure_status(&code) =>
            {
                return Err(RtmpError::Rejected {
                    stage,
                    description: code,
                });
            }
            ev if accepted => events.push(ev),
            _ => {}
        }
    }
    Ok(accepted.then_some(events))
}

/// The message stream id of an accepted publish: the id the server answered to
/// `createStream` (which `rml_rtmp` keeps to itself). Read from a video message the session
/// serializes, and never sends: its first message on the video chunk stream always has a full
/// (type 0) header, which carries the id. The session's idea of that chunk stream is then wrong,
/// so after this call video (and audio) must go out through [`crate::media::chunks`], which
/// writes only full first headers there.
pub(crate) fn publish_stream_id(session: &mut ClientSession) -> Result<u32, RtmpError> {
    let probe = session.publish_video_data(
        bytes::Bytes::from_static(&[0x17]),
        rml_rtmp::time::RtmpTimestamp::new(0),
        false,
    )?;
    match probe {
        ClientSessionResult::OutboundResponse(p)
            if p.bytes.len() >= 12 && p.bytes[0] == crate::media::chunks::VIDEO_CSID =>
        {
            Ok(u32::from_le_bytes([
                p.bytes[8],
                p.bytes[9],
                p.bytes[10],
                p.bytes[11],
            ]))
        }
        _ => Err(RtmpError::Session(
            "no full header on the video chunk stream".into(),
        )),
    }
}

/// Whether an `onStatus` code reports a failure (as opposed to e.g. `NetStream.Play.Reset`).
pub(crate) fn is_failure_status(code: &str) -> bool {
    ["Failed", "BadName", "Reject", "NotFound"]
        .iter()
        .any(|w| code.contains(w))
}

/// Appends the bytes of every outbound packet among `results` to `out`.
pub(crate) fn collect_packets(results: Vec<ClientSessionResult>, out: &mut Vec<u8>) {
    for r in results {
        if let ClientSessionResult::OutboundResponse(p) = r {
            out.extend_from_slice(&p.bytes);
        }
    }
}
