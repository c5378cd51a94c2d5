//! Test harness for the data plane: a private nginx-rtmp, test publishers, ffprobe and the
//! nginx-rtmp stat page. Every process started here runs in its own process group and is
//! killed (as a group) on drop, so a failing test leaves nothing behind.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relaycast_workers::process::{kill_group, own_process_group};

pub use relaycast_workers::test_peers::{HeavyGuard, Peer, RTMP_MODULE};

/// A child process in its own group, killed with its group on drop.
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` in a new process group.
    pub fn spawn(name: &str, cmd: &mut Command) -> std::io::Result<Self> {
        own_process_group(cmd);
        let child = cmd.spawn()?;
        Ok(ChildGuard {
            child,
            name: name.to_string(),
        })
    }

    /// The child's pid (= its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The child's stdout, when it was spawned with `Stdio::piped()` (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Kills the group and reaps the child.
    pub fn kill(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!("[harness] stopping {} (pid {})", self.name, self.child.id());
        }
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// The start of a test that runs a media chain (nginx-rtmp, ffmpeg publishers and players, a
/// relay): requires ffmpeg, nginx-rtmp and procps (the leak checks), and any `more` peers (a
/// missing one fails the test), then waits until no other such test of this binary runs (see
/// [`relaycast_workers::test_peers`]). The guard is held to the end of the test.
pub async fn heavy(more: &[Peer]) -> HeavyGuard {
    let mut peers = vec![Peer::Ffmpeg, Peer::NginxRtmp, Peer::Procps];
    peers.extend_from_slice(more);
    relaycast_workers::test_peers::heavy(&peers).await
}

/// A private nginx with the RTMP module: application `live`, stat page at `/stat`, and
/// application `hls` (live, HLS muxed to `<prefix>/hls`, 1 s fragments, 6 s playlists) served
/// over HTTP at `/hls/<name>.m3u8`.
pub struct Nginx {
    /// RTMP port on 127.0.0.1.
    pub rtmp_port: u16,
    /// HTTP port on 127.0.0.1 serving `/stat`.
    pub http_port: u16,
    dir: tempfile::TempDir,
    child: ChildGuard,
}

impl Nginx {
    /// Starts nginx in a temp prefix and waits until both ports accept.
    pub fn start() -> Nginx {
        Nginx::start_on(free_port(), free_port())
    }

    /// Starts nginx on given ports (e.g. to bring a destination back on its old port).
    pub fn start_on(rtmp_port: u16, http_port: u16) -> Nginx {
        Nginx::start_with(rtmp_port, http_port, None)
    }

    /// Starts nginx with one more application, `hooked` (live, recorded like `rec`), whose
    /// `on_publish`, `on_publish_done` and `on_record_done` notify `hook_url`.
    pub fn start_with_hooks(hook_url: &str) -> Nginx {
        Nginx::start_with(free_port(), free_port(), Some(hook_url))
    }

    fn start_with(rtmp_port: u16, http_port: u16, hook_url: Option<&str>) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().display();
        let hooked = hook_url
            .map(|url| {
                format!(
                    "        application hooked {{\n            live on;\n            record all;\n            record_path {p}/rec;\n            record_unique on;\n            on_publish {url};\n            on_publish_done {url};\n            on_record_done {url};\n        }}\n"
                )
            })
            .unwrap_or_default();
        let conf = format!(
            r#"load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
error_log {p}/error.log info;
pid {p}/nginx.pid;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        chunk_size 4096;
        application live {{
            live on;
        }}
        application hls {{
            live on;
            hls on;
            hls_path {p}/hls;
            hls_fragment 1s;
            hls_playlist_length 6s;
        }}
        application rec {{
            live on;
            record all;
            record_path {p}/rec;
            record_unique off;
        }}
{hooked}    }}
}}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{http_port};
        location /stat {{ rtmp_stat all; }}
        location /hls {{
            types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
            root {p};
            add_header Cache-Control no-cache;
        }}
    }}
}}
"#
        );
        std::fs::create_dir_all(dir.path().join("rec")).expect("record dir");
        std::fs::create_dir_all(dir.path().join("hls")).expect("hls dir");
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = ChildGuard::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .expect("spawn nginx");
        let mut n = Nginx {
            rtmp_port,
            http_port,
            dir,
            child,
        };
        let ok = wait_for_port(rtmp_port, Duration::from_secs(5))
            && wait_for_port(http_port, Duration::from_secs(5));
        if !ok || !n.child.is_running() {
            let log = std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx did not start:\n{log}");
        }
        n
    }

    /// `rtmp://127.0.0.1:PORT/live/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.rtmp_port)
    }

    /// `rtmp://127.0.0.1:PORT/hooked/NAME` (see [`Nginx::start_with_hooks`]).
    pub fn hooked_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/hooked/{name}", self.rtmp_port)
    }

    /// `rtmp://127.0.0.1:PORT/rec/NAME`: like `live`, and nginx records what it receives.
    pub fn rec_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/rec/{name}", self.rtmp_port)
    }

    /// `rtmp://127.0.0.1:PORT/hls/NAME`: publish here and nginx muxes HLS of it.
    pub fn hls_publish_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/hls/{name}", self.rtmp_port)
    }

    /// `http://127.0.0.1:HTTP_PORT/hls/NAME.m3u8`: the live HLS playlist of `hls/NAME`.
    pub fn hls_playlist_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/hls/{name}.m3u8", self.http_port)
    }

    /// Waits until the HLS playlist of `hls/NAME` is served and lists at least `segments`
    /// segments; returns the playlist.
    pub fn wait_hls(&self, name: &str, segments: usize, within: Duration) -> Option<String> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some((200, body)) = self.http_get(&format!("/hls/{name}.m3u8")) {
                if body.lines().filter(|l| l.ends_with(".ts")).count() >= segments {
                    return Some(body);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// A plain HTTP/1.0 GET of `path` on nginx's HTTP port: status and body.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .ok()?;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// What nginx recorded of `rec/NAME` (complete once the publisher has left).
    pub fn recording(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join("rec").join(format!("{name}.flv"))).unwrap_or_default()
    }

    /// The prefix directory (config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fetches and parses `/stat`.
    pub fn stat(&self) -> Vec<StreamStat> {
        parse_stat(&self.stat_xml())
    }

    /// The stat of one stream of application `live`, if it exists.
    pub fn stream(&self, name: &str) -> Option<StreamStat> {
        self.stat().into_iter().find(|s| s.name == name)
    }

    /// Raw `/stat` XML (plain HTTP/1.0 GET; no client library needed for one request).
    pub fn stat_xml(&self) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /stat HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        match body.split_once("\r\n\r\n") {
            Some((_, b)) => b.to_string(),
            None => String::new(),
        }
    }

    /// Waits until `name` has a publisher, returning its stat.
    pub fn wait_publishing(&self, name: &str, within: Duration) -> Option<StreamStat> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(s) = self.stream(name) {
                if s.publisher.is_some() && s.has_video_meta() {
                    return Some(s);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

/// The publishing client of a stream, from the stat page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStat {
    /// nginx-rtmp's connection id.
    pub id: u64,
    /// Connected for this long, in ms.
    pub time_ms: u64,
    /// Remote address.
    pub address: String,
}

/// One stream of the stat page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStat {
    /// Stream name.
    pub name: String,
    /// Stream age in ms.
    pub time_ms: u64,
    /// Bytes received from the publisher.
    pub bytes_in: u64,
    /// The publishing client, if any.
    pub publisher: Option<ClientStat>,
    /// Number of clients (publisher + players).
    pub nclients: u64,
    /// Video width and height from the stream's metadata block.
    pub video_size: Option<(u32, u32)>,
}

impl StreamStat {
    fn has_video_meta(&self) -> bool {
        self.video_size.is_some()
    }
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(&xml[start..end])
}

fn blocks<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// Parses the streams of nginx-rtmp's `rtmp_stat all` XML. The format is flat and stable, so
/// a few string searches do instead of an XML dependency.
pub fn parse_stat(xml: &str) -> Vec<StreamStat> {
    let num = |s: Option<&str>| s.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    blocks(xml, "stream")
        .into_iter()
        .map(|s| {
            // Client blocks come after the meta block; stream-level fields before them.
            let head = s.split("<client>").next().unwrap_or(s);
            let clients = blocks(s, "client");
            let nclients = clients.len() as u64;
            let publisher = clients
                .into_iter()
                .find(|c| c.contains("<publishing/>"))
                .map(|c| ClientStat {
                    id: num(tag(c, "id")),
                    time_ms: num(tag(c, "time")),
                    address: tag(c, "address").unwrap_or("").to_string(),
                });
            let video_size = tag(s, "video").and_then(|v| {
                let w = tag(v, "width")?.trim().parse().ok()?;
                let h = tag(v, "height")?.trim().parse().ok()?;
                Some((w, h))
            });
            StreamStat {
                name: tag(head, "name").unwrap_or("").to_string(),
                time_ms: num(tag(head, "time")),
                bytes_in: num(tag(head, "bytes_in")),
                publisher,
                nclients,
                video_size,
            }
        })
        .collect()
}

/// A test publisher: ffmpeg `-re` (or a faster `-readrate`) testsrc2 1280x720 25 fps H.264 (GOP 2 s) + AAC sine.
pub struct Publisher {
    child: ChildGuard,
}

impl Publisher {
    /// Publishes to `url` until dropped.
    pub fn start(url: &str) -> Publisher {
        Publisher::start_sized(url, 1280, 720)
    }

    /// Publishes a `width`x`height` test pattern to `url`.
    pub fn start_sized(url: &str, width: u32, height: u32) -> Publisher {
        Publisher::start_at_rate(url, width, height, 1)
    }

    /// [`Publisher::start_sized`], sending `speed` seconds of stream per second (ffmpeg's
    /// `-readrate`): a long stream in a short test, for what counts stream time, not wall time.
    pub fn start_at_rate(url: &str, width: u32, height: u32, speed: u32) -> Publisher {
        let child = ChildGuard::spawn(
            "publisher ffmpeg",
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
                .args(["-readrate", &speed.to_string()])
                .args(["-f", "lavfi", "-i"])
                .arg(format!("testsrc2=size={width}x{height}:rate=25"))
                .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
                .args([
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-tune",
                    "zerolatency",
                ])
                .args(["-pix_fmt", "yuv420p", "-g", "50", "-b:v", "1500k"])
                .args(["-c:a", "aac", "-b:a", "96k", "-f", "flv"])
                .arg(url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .expect("spawn publisher ffmpeg");
        Publisher { child }
    }

    /// Freezes the publisher (SIGSTOP): its connection stays open but no data flows, as
    /// with a hung encoder or a stalled network path.
    pub fn freeze(&self) {
        relaycast_workers::process::signal_group(self.child.pid(), 19);
    }

    /// Lets a frozen publisher go on (SIGCONT).
    pub fn thaw(&self) {
        relaycast_workers::process::signal_group(self.child.pid(), 18);
    }

    /// Kills the publisher (its group).
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Whether ffmpeg is still publishing (it exits when the server refuses the stream).
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }
}

/// What ffprobe saw on a stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    /// Video codec name, e.g. `h264`.
    pub video_codec: Option<String>,
    /// Audio codec name, e.g. `aac`.
    pub audio_codec: Option<String>,
    /// Video width.
    pub width: u32,
    /// Video height.
    pub height: u32,
    /// Frame rate from `r_frame_rate`.
    pub fps: f64,
}

fn json_field<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\": ");
    let i = obj.find(&pat)? + pat.len();
    let rest = &obj[i..];
    let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

/// ffprobes `url` (killing ffprobe if it takes longer than `within`, which is also its
/// network timeout: a player may connect before the stream is published and wait).
pub fn ffprobe(url: &str, within: Duration) -> Option<Probe> {
    let rw_timeout = within.as_micros().max(500_000).to_string();
    let out_dir = tempfile::tempdir().ok()?;
    let out_path: PathBuf = out_dir.path().join("probe.json");
    let out_file = std::fs::File::create(&out_path).ok()?;
    let mut child = ChildGuard::spawn(
        "ffprobe",
        Command::new("ffprobe")
            .args(["-v", "error", "-rw_timeout", &rw_timeout])
            .args([
                "-show_entries",
                "stream=codec_type,codec_name,width,height,r_frame_rate",
            ])
            .args(["-of", "json"])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(Stdio::null()),
    )
    .ok()?;
    let until = Instant::now() + within;
    while child.is_running() {
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let json = std::fs::read_to_string(&out_path).ok()?;
    let mut p = Probe::default();
    for s in json.split('{').skip(1) {
        match json_field(s, "codec_type") {
            Some("video") => {
                p.video_codec = json_field(s, "codec_name").map(str::to_string);
                p.width = json_field(s, "width")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                p.height = json_field(s, "height")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if let Some((n, d)) = json_field(s, "r_frame_rate").and_then(|r| r.split_once('/'))
                {
                    let (n, d): (f64, f64) = (n.parse().unwrap_or(0.0), d.parse().unwrap_or(1.0));
                    if d > 0.0 {
                        p.fps = n / d;
                    }
                }
            }
            Some("audio") => p.audio_codec = json_field(s, "codec_name").map(str::to_string),
            _ => {}
        }
    }
    Some(p)
}

/// ffprobes until the stream shows video, or `within` runs out. Returns the probe and the
/// time it took.
pub fn wait_playable(url: &str, within: Duration) -> Option<(Probe, Duration)> {
    let start = Instant::now();
    while start.elapsed() < within {
        let left = within.saturating_sub(start.elapsed());
        if let Some(p) = ffprobe(url, left.max(Duration::from_millis(500))) {
            if p.video_codec.is_some() && p.width > 0 {
                return Some((p, start.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Lists ffmpeg/nginx processes that are children of this test process (for leak checks).
pub fn leftover_children() -> Vec<String> {
    let me = std::process::id().to_string();
    // Without ps every leak check would pass: procps is a required peer.
    let out = Command::new("ps")
        .args(["-o", "pid=,ppid=,comm="])
        .arg("-e")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run ps (procps; `scripts/install-deps.sh test` installs it): {e}")
        });
    assert!(
        out.status.success(),
        "ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[1] == me && (f[2].contains("ffmpeg") || f[2].contains("nginx"))
        })
        .map(str::to_string)
        .collect()
}

/// A player on a stream for the whole of a test: decodes everything (decoder errors go to
/// `errors.log`), records the stream as received (`-c copy` to `recording.flv`), and notes
/// when each video frame arrived (wall clock, see [`Player::finish_timed`]).
pub struct Player {
    child: ChildGuard,
    dir: tempfile::TempDir,
    arrivals: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Reads the player's video-only FLV copy from its stdout as ffmpeg writes it (one flush per
/// packet) and notes the arrival of every video frame.
fn note_arrivals(mut out: impl Read, arrivals: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
    use relaycast_workers::media::flv::{FlvItem, FlvParser};
    let mut parser = FlvParser::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        parser.push(&buf[..n]);
        while let Ok(Some(item)) = parser.next_item() {
            if let FlvItem::Tag(t) = item {
                if t.is_video_frame() {
                    arrivals.lock().unwrap_or_else(|e| e.into_inner()).push(now);
                }
            }
        }
    }
}

impl Player {
    /// Starts playing `url` (it may connect before the stream is published).
    pub fn start(url: &str) -> Player {
        let dir = tempfile::tempdir().expect("temp dir");
        let errors = std::fs::File::create(dir.path().join("errors.log")).expect("log file");
        let child = ChildGuard::spawn(
            "player ffmpeg",
            Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-v",
                    "error",
                    "-nostdin",
                    "-rw_timeout",
                    "20000000",
                ])
                .arg("-i")
                .arg(url)
                .args(["-map", "0", "-c", "copy", "-copyts", "-f", "flv"])
                .arg(dir.path().join("recording.flv"))
                .args(["-map", "0", "-f", "null", "-"])
                // Video alone (no interleaving wait on audio), flushed per packet: the
                // arrival clock.
                .args([
                    "-map",
                    "0:v",
                    "-c",
                    "copy",
                    "-flush_packets",
                    "1",
                    "-f",
                    "flv",
                    "pipe:1",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(errors),
        );
        let mut child = child.expect("spawn player ffmpeg");
        let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.take_stdout().expect("player stdout");
        let noted = arrivals.clone();
        let reader = std::thread::spawn(move || note_arrivals(out, noted));
        Player {
            child,
            dir,
            arrivals,
            reader: Some(reader),
        }
    }

    /// Waits up to `within` for the player to end by itself (the stream was unpublished and
    /// it read everything); returns whether it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.child.is_running() {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Stops the player gently (so the recording is complete) and returns its decoder
    /// errors and the recorded FLV.
    pub fn finish(self) -> (String, Vec<u8>) {
        let (errors, flv, _) = self.finish_timed();
        (errors, flv)
    }

    /// How many video frames have reached the player so far. ffmpeg holds its output back
    /// while it probes the stream, so the first ones come in a burst.
    pub fn frames_arrived(&self) -> usize {
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Waits up to `within` until the player passes frames on as they come (past its probing
    /// burst); returns whether it does.
    pub fn wait_live(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.frames_arrived() == 0 {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        true
    }

    /// [`Player::finish`], with the wall-clock arrival of every video frame in order.
    pub fn finish_timed(mut self) -> (String, Vec<u8>, Vec<Instant>) {
        relaycast_workers::process::signal_group(self.child.pid(), libc_sigint());
        let until = Instant::now() + Duration::from_secs(3);
        while self.child.is_running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let errors =
            std::fs::read_to_string(self.dir.path().join("errors.log")).unwrap_or_default();
        let flv = std::fs::read(self.dir.path().join("recording.flv")).unwrap_or_default();
        let arrivals =
            std::mem::take(&mut *self.arrivals.lock().unwrap_or_else(|e| e.into_inner()));
        (errors, flv, arrivals)
    }
}

/// The largest pause between consecutive arrivals (zero for fewer than two), and where
/// it ended.
pub fn largest_gap(arrivals: &[Instant]) -> (Duration, Option<Instant>) {
    arrivals
        .windows(2)
        .map(|w| (w[1].saturating_duration_since(w[0]), Some(w[1])))
        .max_by_key(|&(gap, _)| gap)
        .unwrap_or((Duration::ZERO, None))
}

/// A TCP proxy on 127.0.0.1 in front of a local RTMP server whose delivery jitters: every
/// read from the server is passed on to the client after a random delay of up to
/// `max_delay`, in order (a chunk is released at the later of the previous release and its
/// arrival plus its delay); the client's bytes go to the server at once. Runs on the current
/// Tokio runtime until dropped.
pub struct JitterProxy {
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    max_gap: std::sync::Arc<std::sync::Mutex<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl JitterProxy {
    /// Proxies to `127.0.0.1:backend`.
    pub async fn start(backend: u16, max_delay: Duration) -> JitterProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let max_gap = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let gaps = max_gap.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let gaps = gaps.clone();
                conns.spawn(async move {
                    if let Ok(origin) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                    {
                        jitter_pipe(client, origin, max_delay, gaps).await;
                    }
                });
            }
        });
        JitterProxy {
            port,
            max_gap,
            task,
        }
    }

    /// `rtmp://127.0.0.1:PORT/live/NAME` through the proxy.
    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port)
    }

    /// The largest pause so far between two releases of server bytes to a client, after
    /// each connection's first 2 s (its handshake and start).
    pub fn max_release_gap(&self) -> Duration {
        *self.max_gap.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for JitterProxy {
    fn drop(&mut self) {
        // Dropping the task drops its JoinSet: every connection is aborted too.
        self.task.abort();
    }
}

/// A small xorshift generator: enough randomness for delays, no dependency.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        XorShift(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..=max`, at millisecond resolution.
    fn delay(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis() as u64;
        Duration::from_millis(self.next() % (ms + 1))
    }
}

async fn jitter_pipe(
    client: tokio::net::TcpStream,
    origin: tokio::net::TcpStream,
    max_delay: Duration,
    max_gap: std::sync::Arc<std::sync::Mutex<Duration>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = client.set_nodelay(true);
    let _ = origin.set_nodelay(true);
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut origin_rd, mut origin_wr) = origin.into_split();
    let upstream = async move {
        let _ = tokio::io::copy(&mut client_rd, &mut origin_wr).await;
        let _ = origin_wr.shutdown().await;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut rng = XorShift::seeded();
        let mut release = tokio::time::Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match origin_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            release = release.max(tokio::time::Instant::now() + rng.delay(max_delay));
            if tx.send((release, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        let start = Instant::now();
        let mut last: Option<Instant> = None;
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if client_wr.write_all(&bytes).await.is_err() {
                break;
            }
            let now = Instant::now();
            if let Some(prev) = last.filter(|_| start.elapsed() > Duration::from_secs(2)) {
                let gap = now.saturating_duration_since(prev);
                let mut m = max_gap.lock().unwrap_or_else(|e| e.into_inner());
                *m = (*m).max(gap);
            }
            last = Some(now);
        }
        let _ = client_wr.shutdown().await;
    };
    tokio::join!(upstream, reader, writer);
}

fn libc_sigint() -> i32 {
    2
}

/// The pids of the live child processes of `pid`, from procps' `pgrep -P`. Panics when pgrep
/// cannot run: a "no child left" check must not pass because nothing could look.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run pgrep (procps; `scripts/install-deps.sh test` installs it): {e}")
        });
    // pgrep exits 1 when nothing matched, 2 and above on errors.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "pgrep failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().expect("pgrep prints pids"))
        .collect()
}

/// A live RTSP source on 127.0.0.1, as an IP camera serves one: `tests/peers/rtsp_server.py`
/// (GStreamer's RTSP server under Debian's python3) with a `width`x`height` test pattern in
/// H.264 (1 s GOP) and a sine tone in AAC, 25 fps. The caller requires [`Peer::GstRtspServer`].
/// Killed on drop.
pub struct RtspServer {
    /// The RTSP port on 127.0.0.1.
    pub port: u16,
    path: String,
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl RtspServer {
    /// Serves `rtsp://127.0.0.1:PORT/<path>` on a free port; waits until the port accepts.
    pub fn start(path: &str, width: u32, height: u32) -> RtspServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("rtsp_server.log")).expect("log file");
        let port = free_port();
        let child = ChildGuard::spawn(
            "rtsp server",
            Command::new(relaycast_workers::test_peers::SYSTEM_PYTHON)
                .arg(relaycast_workers::test_peers::RTSP_SERVER_SCRIPT)
                .arg(port.to_string())
                .arg(path)
                .arg(format!("{width}x{height}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
        .expect("spawn the RTSP server");
        let mut server = RtspServer {
            port,
            path: path.to_string(),
            child,
            dir,
        };
        // GStreamer and the Python bindings load in well under a second on an idle machine.
        let up = wait_for_port(port, Duration::from_secs(20));
        if !up || !server.child.is_running() {
            panic!("the RTSP server did not start:\n{}", server.log());
        }
        server
    }

    /// `rtsp://127.0.0.1:PORT/<path>`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.port, self.path)
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rtsp_server.log")).unwrap_or_default()
    }
}

/// A private CA and a server certificate for 127.0.0.1, made with the openssl CLI.
pub struct TestCerts {
    /// CA certificate (DER), to trust in the client.
    pub ca: Vec<u8>,
    /// Server certificate chain (PEM).
    pub server_cert_pem: Vec<u8>,
    /// Server private key (PEM).
    pub server_key_pem: Vec<u8>,
}

/// Generates [`TestCerts`]; the caller requires [`Peer::Openssl`] first. An openssl that fails
/// panics with its error output.
pub fn test_certs() -> TestCerts {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(
            out.status.success(),
            "`openssl {}` failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        d.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write leaf.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=relaycast test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
    ]);
    run(&["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]);
    let read = |name: &str| {
        std::fs::read(d.join(name)).unwrap_or_else(|e| panic!("openssl wrote no {name}: {e}"))
    };
    TestCerts {
        ca: read("ca.der"),
        server_cert_pem: read("leaf.pem"),
        server_key_pem: read("leaf.key"),
    }
}

/// A TLS terminator in front of a plain TCP port (an `rtmps://` front for nginx-rtmp):
/// accepts TLS on its own port and pipes each connection to `127.0.0.1:backend`.
/// Runs on the current Tokio runtime until dropped.
pub struct TlsFront {
    /// The TLS port on 127.0.0.1.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Starts the terminator with `certs`' server certificate.
    pub async fn start(certs: &TestCerts, backend: u16) -> TlsFront {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&certs.server_cert_pem)
                .collect::<Result<_, _>>()
                .expect("server cert");
        let key = PrivateKeyDer::from_pem_slice(&certs.server_key_pem).expect("server key");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let Ok(mut plain) =
                        tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { port, task }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A minimal static file server on 127.0.0.1 (GET/HEAD, single byte ranges, 404), enough
/// for ffmpeg to read and seek MP4 files. Keeps every request's head (request line and
/// headers) for [`FileServer::requests`]. Runs until dropped.
pub struct FileServer {
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One request a [`FileServer`] received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path as requested, e.g. `/a.mp4`.
    pub path: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl FileServer {
    /// Serves the files directly in `root`.
    pub async fn start(root: PathBuf) -> FileServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let root = root.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, &root, &log).await;
                });
            }
        });
        FileServer {
            port,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    root: &Path,
    log: &std::sync::Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 || req.len() > 16_384 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let req = String::from_utf8_lossy(&req).to_string();
    let mut lines = req.lines();
    let first: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let (method, path) = (
        first.first().copied().unwrap_or(""),
        first.get(1).copied().unwrap_or("/"),
    );
    log.lock().unwrap().push(Request {
        method: method.to_string(),
        path: path.to_string(),
        headers: req
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect(),
    });
    let name = path.trim_start_matches('/');
    let range = lines
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("range")
                .then(|| v.trim().to_string())
        })
        .and_then(|v| {
            let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()))
        });
    let data = if name.is_empty() || name.contains('/') || name.contains("..") {
        None
    } else {
        tokio::fs::read(root.join(name)).await.ok()
    };
    let Some(data) = data else {
        sock.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    let total = data.len() as u64;
    let (status, start, end) = match range {
        Some((a, _)) if a >= total => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await?;
            return Ok(());
        }
        Some((a, b)) => (
            "206 Partial Content",
            a,
            b.unwrap_or(total - 1).min(total - 1),
        ),
        None => ("200 OK", 0, total.saturating_sub(1)),
    };
    let body = &data[start as usize..=(end as usize).min(data.len().saturating_sub(1))];
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: video/mp4\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("206") {
        head.push_str(&format!("Content-Range: bytes {start}-{end}/{total}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        sock.write_all(body).await?;
    }
    sock.shutdown().await
}

/// Writes a small MP4 (moov first): `secs` of testsrc2 at `size`, H.264 GOP 1 s + AAC.
pub fn mp4_file(dir: &Path, name: &str, size: &str, secs: u32) {
    let ok = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25"))
        .args(["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-movflags", "+faststart"])
        .arg(dir.join(name))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot write {name}");
}

/// Live processes (pid, parent pid) any of whose command-line arguments contains `needle`,
/// read from `/proc/<pid>/cmdline` (zombies have an empty command line and do not count).
/// The calling process is never listed.
pub fn processes_with_arg(needle: &str) -> Vec<(u32, u32)> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                raw.split(|&b| b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(needle))
            })
        })
        .map(|pid| {
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
                    let rest = st.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse().ok()
                })
                .unwrap_or(0);
            (pid, ppid)
        })
        .collect()
}

/// What ffprobe says of a recorded file.
#[derive(Debug, Clone, Default)]
pub struct FileProbe {
    /// The container's duration, seconds.
    pub duration: f64,
    /// `format_name`, e.g. `mov,mp4,m4a,3gp,3g2,mj2`, `hls`, `flv`, `aac`.
    pub format: String,
    /// Codec names, video first when there is video.
    pub codecs: Vec<String>,
    /// Frames ffmpeg decoded with an error (`ffmpeg -v error -f null`), as its error lines.
    pub decode_errors: Vec<String>,
}

/// The first video frame of the file (a path or URL) is a keyframe, as ffprobe decodes it.
/// Read as JSON: a frame with side data (x264's SEI in a stream's first IDR frame) adds fields
/// that would shift a CSV line.
pub fn first_video_frame_is_key(path: &str) -> bool {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
        ])
        .args(["-show_entries", "frame=key_frame", "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    v["frames"][0]["key_frame"] == 1
}

/// Probes a recorded file or URL with ffprobe (duration, format, codecs) and decodes it all
/// once with ffmpeg to collect errors. Panics when ffprobe cannot read it.
pub fn probe_file(url: &str) -> FileProbe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration,format_name:stream=codec_name,codec_type",
            "-of",
            "json",
        ])
        .arg(url)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let mut streams: Vec<(String, String)> = v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["codec_type"].as_str().unwrap_or("").to_string(),
                        s["codec_name"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    streams.sort_by_key(|(t, _)| t != "video");
    let decode = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(url)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    FileProbe {
        duration: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
        format: v["format"]["format_name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        codecs: streams.into_iter().map(|(_, c)| c).collect(),
        decode_errors: String::from_utf8_lossy(&decode.stderr)
            .lines()
            .map(str::to_string)
            .collect(),
    }
}
