//! Where an ingest ffmpeg may connect. ffmpeg resolves names and follows playlists on its own,
//! so checking a source URL as written is not enough: `http://a-name-that-resolves-to-127.0.0.1/`
//! or an HLS playlist whose segments or keys sit on a private address would reach inside the
//! operator's network. Two guards close that:
//!
//! - **A guarded proxy** for everything ffmpeg opens over HTTP or TLS (HTTP-FLV, HLS playlists,
//!   their segments and keys, `https`, `rtmps`): every ingest ffmpeg runs with `http_proxy`
//!   pointing at a proxy inside this process, which resolves the host itself, refuses it when
//!   any address is internal (unless `allow_private_targets`), and connects to the address it
//!   checked. ffmpeg's `http` protocol forwards plain requests through it and its `tls` layer
//!   tunnels with `CONNECT`; both read `http_proxy` from the environment, and the HLS demuxer
//!   opens every nested URL through them.
//! - **Pinning** for what ffmpeg opens over plain TCP (`rtsp://`, and `rtmp://` when ffmpeg
//!   pulls it, e.g. to transcode): [`pin`] resolves and checks the host before ffmpeg starts,
//!   and the URL is rewritten to the checked address (RTMP keeps the name in its `tcUrl`).
//!
//! A refusal names its reason after [`REFUSAL_MARK`], which the ingest picks out of ffmpeg's log
//! so that the task's failure callback says why.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use relaycast_core::domain::relay::types::RtmpUrl;
use relaycast_core::domain::targets::{check_resolved, numeric_host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::ingest::IngestSpec;

/// Starts every refusal the proxy sends (in the reason phrase of its 403, which ffmpeg logs).
pub const REFUSAL_MARK: &str = "relaycast refused";

/// Whether a source's failure is a refusal of this guard (retrying such a source cannot help).
pub fn is_refusal(reason: &str) -> bool {
    reason.contains(REFUSAL_MARK)
}

/// The longest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head, and the proxy to connect upstream.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A guarded forward proxy on 127.0.0.1, one per process and policy, on a thread of its own
/// (sessions run on runtimes that end with them).
pub struct EgressProxy {
    addr: SocketAddr,
}

impl EgressProxy {
    /// The process's proxy for this policy, started on first use.
    pub fn shared(allow_private: bool) -> std::io::Result<&'static EgressProxy> {
        static GUARDED: OnceLock<Result<EgressProxy, String>> = OnceLock::new();
        static OPEN: OnceLock<Result<EgressProxy, String>> = OnceLock::new();
        let cell = if allow_private { &OPEN } else { &GUARDED };
        cell.get_or_init(|| EgressProxy::start(allow_private).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| std::io::Error::other(format!("egress proxy: {e}")))
    }

    fn start(allow_private: bool) -> std::io::Result<EgressProxy> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("egress-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "egress proxy cannot listen"),
                };
                loop {
                    match listener.accept().await {
                        Ok((conn, _)) => {
                            tokio::spawn(async move {
                                if let Err(e) = serve(conn, allow_private).await {
                                    tracing::debug!(error = %e, "egress proxy connection ended");
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "egress proxy accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
            })?;
        Ok(EgressProxy { addr })
    }

    /// The value of `http_proxy` for an ffmpeg child.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What a client asked the proxy for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `CONNECT host:port`: a tunnel (TLS inside).
    Tunnel { host: String, port: u16 },
    /// `GET http://host:port/path`: forwarded with the head rewritten to origin form.
    Forward {
        host: String,
        port: u16,
        head: Vec<u8>,
    },
}

/// Why a proxied connection failed.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{REFUSAL_MARK} {0}")]
    Refused(String),
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn serve(mut client: TcpStream, allow_private: bool) -> Result<(), ProxyError> {
    let (target, rest) = match tokio::time::timeout(STEP_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok((head, rest))) => match parse_request(&head) {
            Ok(t) => (t, rest),
            Err(e) => return answer(&mut client, 400, &e).await,
        },
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ProxyError::BadRequest("request head timed out".into())),
    };
    let (host, port) = match &target {
        Target::Tunnel { host, port } | Target::Forward { host, port, .. } => (host.clone(), *port),
    };
    let mut upstream = match connect_checked(&host, port, allow_private).await {
        Ok(s) => s,
        Err(e @ ProxyError::Refused(_)) => {
            tracing::warn!(%host, error = %e, "ingest connection refused");
            return answer(&mut client, 403, &e).await;
        }
        Err(e) => return answer(&mut client, 502, &e).await,
    };
    match target {
        Target::Tunnel { .. } => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?
        }
        Target::Forward { head, .. } => upstream.write_all(&head).await?,
    }
    upstream.write_all(&rest).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Answers an error and closes. The reason goes into the status line, which ffmpeg logs.
async fn answer(client: &mut TcpStream, status: u16, error: &ProxyError) -> Result<(), ProxyError> {
    let reason: String = error
        .to_string()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    let msg =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    client.write_all(msg.as_bytes()).await?;
    let _ = client.shutdown().await;
    Ok(())
}

/// Reads up to the end of the request head: the head, and whatever followed it.
async fn read_head(client: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), ProxyError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(ProxyError::BadRequest(
                "connection closed before the request head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(ProxyError::BadRequest("request head too large".into()));
        }
    }
}

/// Headers that concern the hop to the proxy, not the origin.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "upgrade",
];

fn parse_request(head: &[u8]) -> Result<Target, ProxyError> {
    let bad = |m: &str| ProxyError::BadRequest(m.to_string());
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(bad("unparseable request head")),
    }
    let (method, target) = (req.method.unwrap_or_default(), req.path.unwrap_or_default());
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_authority(target).ok_or_else(|| bad("CONNECT needs host:port"))?;
        return Ok(Target::Tunnel { host, port });
    }
    let url = url::Url::parse(target)
        .map_err(|_| bad("a proxy request needs an absolute http:// URL"))?;
    if url.scheme() != "http" {
        return Err(bad("only http:// is forwarded; https goes through CONNECT"));
    }
    let host = url.host_str().ok_or_else(|| bad("URL without a host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let mut origin_form = url.path().to_string();
    if let Some(q) = url.query() {
        origin_form.push('?');
        origin_form.push_str(q);
    }
    // One request per connection: the origin closes after its answer, so a second request on
    // this connection can never go to another host than the one checked.
    let mut out = format!("{method} {origin_form} HTTP/1.1\r\n").into_bytes();
    for h in req.headers.iter() {
        if HOP_HEADERS.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Target::Forward {
        host,
        port,
        head: out,
    })
}

/// `host:port` or `[v6]:port`.
fn split_authority(s: &str) -> Option<(String, u16)> {
    let (host, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once("]:")?;
            (h, p)
        }
        None => s.rsplit_once(':')?,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Resolves `host`, refuses it when any address is internal (unless allowed), and connects to
/// the checked addresses only.
async fn connect_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<TcpStream, ProxyError> {
    let addrs = resolve(host, port).await?;
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    check_resolved(host, &ips, allow_private).map_err(|e| ProxyError::Refused(e.to_string()))?;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some("connect timed out".into()),
        }
    }
    Err(ProxyError::Unreachable(format!(
        "{host}:{port} ({})",
        last.unwrap_or_default()
    )))
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ProxyError> {
    if let Some(ip) = numeric_host(host) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ProxyError::Unreachable(format!("{host} ({e})")))?
        .collect();
    if addrs.is_empty() {
        return Err(ProxyError::Unreachable(format!("{host} (no address)")));
    }
    Ok(addrs)
}

/// Pins what ffmpeg would open over plain TCP (`rtsp://`, and `rtmp://` that ffmpeg pulls):
/// resolves the host, refuses it when any address is internal (unless
/// [`IngestSpec::allow_private_targets`]), and rewrites the URL to the checked address. A source
/// that cannot be pinned keeps the reason in [`IngestSpec::refused`] and fails when it starts,
/// so a backup still gets its turn. Everything else is left to the proxy.
pub async fn pin(spec: &mut IngestSpec) {
    if spec.native_rtmp_url().is_some() || spec.allow_local_files {
        return;
    }
    let Ok(url) = url::Url::parse(&spec.url) else {
        return;
    };
    let scheme = url.scheme().to_ascii_lowercase();
    if scheme != "rtsp" && scheme != "rtmp" {
        return;
    }
    let Some(host) = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
    else {
        return;
    };
    let port = url
        .port()
        .unwrap_or(if scheme == "rtsp" { 554 } else { 1935 });
    let ip = match resolve(&host, port).await {
        Ok(addrs) => {
            let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            match check_resolved(&host, &ips, spec.allow_private_targets) {
                Ok(()) => ips[0],
                Err(e) => {
                    spec.refused = Some(format!("{REFUSAL_MARK} {e}"));
                    return;
                }
            }
        }
        Err(e) => {
            spec.refused = Some(e.to_string());
            return;
        }
    };
    if numeric_host(&host) == Some(ip) && host.parse::<IpAddr>().is_ok() {
        return;
    }
    let literal = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let mut pinned = url.clone();
    // Both schemes are "non-special" to the url crate, which accepts any host text here.
    if pinned.set_host(Some(&literal)).is_err() || pinned.set_port(Some(port)).is_err() {
        spec.refused = Some(format!("cannot pin {host} to {literal}"));
        return;
    }
    if scheme == "rtmp" {
        // The server sees the name it was asked for (virtual hosts), ffmpeg connects to the
        // address checked here.
        spec.tc_url = RtmpUrl::parse_parts(&spec.url).ok().map(|u| u.tc_url());
    }
    spec.url = pinned.to_string();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_rewritten_to_origin_form() {
        let head = b"GET http://cdn.example:8080/live/a.m3u8?t=1 HTTP/1.1\r\nHost: cdn.example:8080\r\nUser-Agent: Lavf\r\nConnection: keep-alive\r\nX-Token: abc\r\n\r\n";
        let Target::Forward { host, port, head } = parse_request(head).unwrap() else {
            panic!("forward")
        };
        assert_eq!((host.as_str(), port), ("cdn.example", 8080));
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.starts_with("GET /live/a.m3u8?t=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("X-Token: abc\r\n") && head.contains("Host: cdn.example:8080\r\n"));
        assert!(!head.contains("keep-alive") && head.ends_with("Connection: close\r\n\r\n"));

        assert_eq!(
            parse_request(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap(),
            Target::Tunnel {
                host: "::1".into(),
                port: 443
            }
        );
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"GET ftp://h/x HTTP/1.1\r\n\r\n",
            b"CONNECT h HTTP/1.1\r\n\r\n",
            b"CONNECT h:0 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    async fn proxy_get(proxy: &EgressProxy, request: &str) -> String {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn forwards_to_allowed_origins_and_refuses_internal_ones() {
        // An origin on loopback that answers one request.
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = origin.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut c, _) = origin.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = c.read(&mut buf).await.unwrap();
            let got = String::from_utf8_lossy(&buf[..n]).to_string();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            got
        });
        let open = EgressProxy::shared(true).unwrap();
        let answer = proxy_get(
            open,
            &format!(
                "GET http://127.0.0.1:{port}/x.flv HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
            ),
        )
        .await;
        assert!(answer.ends_with("ok"), "{answer}");
        assert!(server.await.unwrap().starts_with("GET /x.flv HTTP/1.1\r\n"));

        // The guarded proxy refuses loopback, by address and by name, for both request forms.
        let guarded = EgressProxy::shared(false).unwrap();
        for request in [
            format!("GET http://127.0.0.1:{port}/x.flv HTTP/1.1\r\n\r\n"),
            format!("GET http://localhost:{port}/x.flv HTTP/1.1\r\n\r\n"),
            format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n"),
            "CONNECT 0x7f.1:443 HTTP/1.1\r\n\r\n".to_string(),
        ] {
            let answer = proxy_get(guarded, &request).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 403 {REFUSAL_MARK} host ")),
                "{request}: {answer}"
            );
            assert!(answer.contains("private or internal address"), "{answer}");
        }
    }

    #[tokio::test]
    async fn pins_rtsp_and_rtmp_to_checked_addresses() {
        let mut spec = IngestSpec::live("rtsp://localhost:8554/cam?x=1");
        pin(&mut spec).await;
        assert!(
            spec.refused
                .as_deref()
                .is_some_and(|r| r.starts_with(REFUSAL_MARK)),
            "{:?}",
            spec.refused
        );

        let mut spec = IngestSpec::live("rtsp://localhost:8554/cam?x=1");
        spec.allow_private_targets = true;
        pin(&mut spec).await;
        assert_eq!(spec.refused, None);
        assert!(
            ["rtsp://127.0.0.1:8554/cam?x=1", "rtsp://[::1]:8554/cam?x=1"]
                .contains(&spec.url.as_str()),
            "{}",
            spec.url
        );

        // An rtmp source that ffmpeg pulls (a transcode) keeps its name in the tcUrl.
        let mut spec = IngestSpec::live("rtmp://localhost/live/key");
        spec.codec_args = vec!["-c:v".into(), "libx264".into()];
        spec.allow_private_targets = true;
        pin(&mut spec).await;
        assert_eq!(spec.tc_url.as_deref(), Some("rtmp://localhost:1935/live"));
        assert!(
            spec.url.ends_with(":1935/live/key") && !spec.url.contains("localhost"),
            "{}",
            spec.url
        );

        // Natively pulled and HTTP sources are not touched (the pull and the proxy check them).
        for url in ["rtmp://localhost/live/key", "http://localhost/a.m3u8"] {
            let mut spec = IngestSpec::live(url);
            pin(&mut spec).await;
            assert_eq!((spec.url.as_str(), spec.refused.as_deref()), (url, None));
        }
    }
}
