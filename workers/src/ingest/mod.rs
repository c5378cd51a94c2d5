//! Ingest: one ffmpeg that pulls a source and writes FLV to its stdout, or, for an
//! `rtmp://` live source relayed as is, a native RTMP play ([`crate::ingest::rtmp_pull`]).
//!
//! ffmpeg is spawned through `ffmpeg-sidecar` (its command builder and its stderr log parser),
//! always pointed at a configured binary (the crate is built without its downloader).
//!
//! stdout (the FLV) is read by the consumer's own task through tokio, 64 KiB at a time, and cut
//! into tags in [`Ingest::next`]: no thread hand-off per chunk and no channel per tag. The
//! sidecar's event iterator used to do this on two threads joined by a rendezvous channel plus a
//! `spawn_blocking` thread, which cost about three context switches per FLV tag. Only stderr
//! (a few lines a second: progress, errors) runs on a plain thread with the sidecar's parser;
//! that thread also reaps the child and reports the exit. The child runs in its own process
//! group, which is killed on drop: the sidecar does not kill its child on drop.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use ffmpeg_sidecar::log_parser::FfmpegLogParser;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::ingest::egress::{EgressProxy, REFUSAL_MARK};
use crate::ingest::rtmp_pull::RtmpPull;
use crate::media::flv::{FlvItem, FlvParser, FlvTag};
use crate::media::mpegts::TsToFlv;
use crate::process::{kill_group, signal_group, GroupGuard};
use relaycast_core::domain::relay::types::{redact_url, RtmpUrl};

pub use crate::process::DEFAULT_FFMPEG;

pub mod egress;
pub mod rtmp_pull;
pub mod transcode;

/// stderr events (progress, exit) buffered between the stderr thread and the async side.
/// Progress beyond this is dropped rather than stalling ffmpeg on a full stderr pipe.
const EVENT_BUFFER: usize = 64;
/// One read of ffmpeg's stdout: the pipe's default capacity, so a backlog is taken at once.
const READ_CHUNK: usize = 64 * 1024;
/// The label [`IngestSpec::filter_complex`] must give its video output; it is mapped instead of
/// the source's video.
pub const FILTER_VIDEO_OUT: &str = "vout";

/// Errors starting an ingest. [`IngestError::is_source_error`] tells a bad source (the user's
/// problem) from a failure to run ffmpeg (ours).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The source URL is not allowed or not parseable.
    #[error("invalid source {url:?}: {reason}")]
    InvalidSource {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A `relofftime` window is not `a-b` seconds with `a < b` (or `a-` for "from a on").
    #[error("invalid time window {0:?}: expected START-END in seconds, START < END")]
    InvalidWindow(String),
    /// ffmpeg could not be started.
    #[error("cannot start ffmpeg {path:?}: {source}")]
    Spawn {
        /// The ffmpeg binary.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl IngestError {
    /// Whether the source (not relaycast) is at fault.
    pub fn is_source_error(&self) -> bool {
        matches!(
            self,
            IngestError::InvalidSource { .. } | IngestError::InvalidWindow(_)
        )
    }
}

/// A part of a source to relay: the seeds' `relofftime` (`START-END` seconds).
///
/// For a VOD item it selects `[start, end)` of the file (ffmpeg input options `-ss start
/// -t (end-start)`). For a live source only the length counts: the session relays
/// `end - start` seconds and then finishes (see `SessionSpec` in the session module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Offset into the source.
    pub start: Duration,
    /// End offset; `None` = to the end of the source.
    pub end: Option<Duration>,
}

impl TimeWindow {
    /// Parses `relofftime`: `"30-60"` (seconds, fractions allowed) or `"30-"`.
    pub fn parse(s: &str) -> Result<TimeWindow, IngestError> {
        let bad = || IngestError::InvalidWindow(s.to_string());
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let secs = |v: &str| -> Result<Duration, IngestError> {
            let f: f64 = v.trim().parse().map_err(|_| bad())?;
            if !f.is_finite() || !(0.0..=1.0e7).contains(&f) {
                return Err(bad());
            }
            Ok(Duration::from_secs_f64(f))
        };
        let start = secs(a)?;
        let end = if b.trim().is_empty() {
            None
        } else {
            Some(secs(b)?)
        };
        if end.is_some_and(|e| e <= start) {
            return Err(bad());
        }
        Ok(TimeWindow { start, end })
    }

    /// The window's length, when it has an end.
    pub fn length(&self) -> Option<Duration> {
        self.end.map(|e| e.saturating_sub(self.start))
    }
}

/// Whether a source is a live stream or a file played in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// A live stream: read as fast as it arrives.
    #[default]
    Live,
    /// A file (VOD item): read at its native rate (`-re`), otherwise it would be pushed to
    /// the destinations as fast as the network allows.
    Vod,
}

/// What to pull and how.
#[derive(Debug, Clone)]
pub struct IngestSpec {
    /// Source URL: `rtmp`, `rtmps`, `http`, `https` (FLV, HLS, MP4), `rtsp` or `srt`.
    pub url: String,
    /// Live or VOD. Default live.
    pub kind: SourceKind,
    /// Extra HTTP headers (`http`/`https` sources only), e.g. `Referer`.
    pub headers: Vec<(String, String)>,
    /// Network read/write timeout; ffmpeg gives up on a silent source after this. Default 5 s.
    pub rw_timeout: Duration,
    /// The ffmpeg binary. Default [`DEFAULT_FFMPEG`].
    pub ffmpeg_path: PathBuf,
    /// Output codec arguments; default `-c copy`. Transcoding replaces these.
    pub codec_args: Vec<String>,
    /// ffmpeg `-probesize` in bytes. ffmpeg's default (5 MB) makes it buffer about one
    /// second more than needed on a live RTMP source whose sequence headers come first;
    /// 64 KiB found both streams of nginx-rtmp sources every time and cut the first output
    /// from ~3.2 s to ~2.0 s. `None` keeps ffmpeg's default (safer for HLS/MP4 sources whose
    /// streams may start late). Default `Some(65536)` for [`IngestSpec::live`].
    pub probe_size: Option<u32>,
    /// Operator switch: allow `file:` URLs and plain paths (VOD items on local disk). Never
    /// set it for a URL a user supplied: it would let them read any file ffmpeg can open.
    /// Default false.
    pub allow_local_files: bool,
    /// A `-filter_complex` graph over the source (input 0) whose video output is labelled
    /// [`FILTER_VIDEO_OUT`]; built from validated numbers, enums and relaycast's own file
    /// paths only. It must read no other `-i` input (images come in through the `movie` source
    /// filter instead): the graph's input 0 is the source.
    /// Default none (the source's first video stream is mapped as is).
    pub filter_complex: Option<String>,
    /// Keeps the files the filter graph reads (watermark images) alive as long as a clone of
    /// this spec exists (a session restarts ingests from its specs); deleted with the last one.
    pub input_files: Option<std::sync::Arc<tempfile::TempDir>>,
    /// The seeds' `relofftime`: for VOD, the part of the file to play; for live, how long
    /// to relay. Default `None` (everything).
    pub window: Option<TimeWindow>,
    /// Pull an `rtmp://` live source that is relayed as is (`-c copy`, no filter) natively
    /// instead of through ffmpeg ([`IngestSpec::native_rtmp_url`]). Default true.
    pub native_rtmp: bool,
    /// Play the input over and over (`-stream_loop -1`): a backup file of a live task.
    /// Default false.
    pub loop_input: bool,
    /// The seeds' `bufferTime`: tags are held this long and released at the source's own
    /// pace, so a source that stalls or delivers in bursts (HLS segments) for less than this
    /// reaches the destinations smoothly. Adds this much latency. Default none.
    pub buffer: Option<Duration>,
    /// What ffmpeg writes to stdout. Default FLV; MPEG-TS for what FLV cannot carry (HEVC),
    /// cut into the same tags by [`crate::media::mpegts::TsToFlv`].
    pub container: Container,
    /// Let a natively pulled source resolve inside the operator's network (ffmpeg resolves
    /// names itself; the API checks the URL as written). The relay worker sets it from
    /// `allow_private_targets`. Default false.
    pub allow_private_targets: bool,
    /// Why this source may not be opened, found before ffmpeg starts ([`crate::ingest::egress::pin`]):
    /// starting it fails with this reason, so the session moves on to a backup. Default none.
    pub refused: Option<String>,
    /// The RTMP `tcUrl` ffmpeg sends when the URL was pinned to an address
    /// ([`crate::ingest::egress::pin`]). Default none.
    pub tc_url: Option<String>,
}

/// The container an ingest ffmpeg writes to its stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Container {
    /// FLV, parsed by [`FlvParser`].
    #[default]
    Flv,
    /// MPEG-TS, for HEVC (ffmpeg 5.1's FLV muxer refuses it).
    MpegTs,
}

impl IngestSpec {
    /// A live copy ingest of `url` with defaults.
    pub fn live(url: impl Into<String>) -> Self {
        IngestSpec {
            url: url.into(),
            kind: SourceKind::Live,
            headers: Vec::new(),
            rw_timeout: Duration::from_secs(5),
            ffmpeg_path: PathBuf::from(DEFAULT_FFMPEG),
            codec_args: vec!["-c".into(), "copy".into()],
            probe_size: Some(65_536),
            allow_local_files: false,
            filter_complex: None,
            input_files: None,
            window: None,
            native_rtmp: true,
            loop_input: false,
            buffer: None,
            container: Container::Flv,
            allow_private_targets: false,
            refused: None,
            tc_url: None,
        }
    }

    /// A VOD playlist item (`type=video`) at `url`, read at its native rate, with ffmpeg's
    /// default probe size (MP4 and HLS may place their streams late).
    pub fn vod(url: impl Into<String>) -> Self {
        IngestSpec {
            kind: SourceKind::Vod,
            probe_size: None,
            ..IngestSpec::live(url)
        }
    }

    /// A VOD item from local disk, read at its native rate. For operator-provided files
    /// only (sets [`IngestSpec::allow_local_files`]).
    pub fn local_file(path: impl Into<String>) -> Self {
        IngestSpec {
            kind: SourceKind::Vod,
            probe_size: None,
            allow_local_files: true,
            ..IngestSpec::live(path)
        }
    }

    /// The source as an RTMP URL when it is pulled natively: a live `rtmp://` source relayed
    /// as is with [`IngestSpec::native_rtmp`] set. Anything that needs ffmpeg (transcoding,
    /// watermarks, a VOD window, `rtmps`, user info in the URL) returns `None`.
    pub fn native_rtmp_url(&self) -> Option<RtmpUrl> {
        // `-c copy` or `-c:v copy -c:a copy`: every stream as is.
        if self.container != Container::Flv {
            return None;
        }
        let mut pairs = self.codec_args.chunks_exact(2);
        let copy = !self.codec_args.is_empty()
            && pairs.remainder().is_empty()
            && pairs.all(|kv| ["-c", "-c:v", "-c:a"].contains(&kv[0].as_str()) && kv[1] == "copy");
        let plain = self
            .url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("rtmp://"));
        if !(self.native_rtmp && plain && copy && self.kind == SourceKind::Live)
            || self.filter_complex.is_some()
            || self.url.chars().any(|c| c.is_control())
        {
            return None;
        }
        RtmpUrl::parse(&format!("rtmp://{}", &self.url[7..])).ok()
    }

    /// The URL for logs, without its credentials ([`redact_url`]).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The ffmpeg `-protocol_whitelist` for this source's scheme: only what the scheme needs,
    /// so a playlist or redirect cannot make ffmpeg open `file:` or other local protocols.
    pub fn protocol_whitelist(&self) -> Result<&'static str, IngestError> {
        if self.allow_local_files && (self.url.starts_with("file:") || self.url.starts_with('/')) {
            return Ok("file");
        }
        let scheme = self
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| IngestError::InvalidSource {
                url: self.url.clone(),
                reason: "missing scheme".into(),
            })?;
        Ok(match scheme.as_str() {
            "rtmp" => "tcp,rtmp",
            "rtmps" => "tcp,tls,httpproxy,rtmp,rtmps",
            "http" | "https" => "tcp,tls,http,https,hls,crypto,httpproxy",
            "rtsp" => "tcp,udp,tls,httpproxy,rtp,rtsp,rtsps,srtp",
            "srt" => "udp,srt",
            other => {
                return Err(IngestError::InvalidSource {
                    url: self.url.clone(),
                    reason: format!("scheme {other:?} is not allowed"),
                })
            }
        })
    }

    /// The full ffmpeg argument list (after the sidecar's own `-loglevel`).
    pub fn args(&self) -> Result<Vec<String>, IngestError> {
        let whitelist = self.protocol_whitelist()?;
        if self.url.chars().any(|c| c.is_control()) {
            return Err(IngestError::InvalidSource {
                url: self.url.clone(),
                reason: "control characters in URL".into(),
            });
        }
        let mut a: Vec<String> = vec!["-hide_banner".into(), "-nostdin".into()];
        if self.kind == SourceKind::Vod {
            a.push("-re".into());
        }
        a.extend(["-protocol_whitelist".into(), whitelist.into()]);
        // The RTSP demuxer opens its own connections and refuses the generic `-rw_timeout`
        // ("Option rw_timeout not found", and ffmpeg exits): its socket timeout is `-timeout`.
        let timeout = if whitelist.contains("rtsp") {
            "-timeout"
        } else {
            "-rw_timeout"
        };
        a.extend([timeout.into(), self.rw_timeout.as_micros().to_string()]);
        let is_http = whitelist.split(',').any(|p| p == "http");
        if !self.headers.is_empty() && is_http {
            let mut h = String::new();
            for (k, v) in &self.headers {
                if [k, v].iter().any(|s| s.contains(['\r', '\n'])) {
                    return Err(IngestError::InvalidSource {
                        url: self.url.clone(),
                        reason: "line break in an HTTP header".into(),
                    });
                }
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            a.extend(["-headers".into(), h]);
        }
        if let Some(n) = self.probe_size {
            a.extend(["-probesize".into(), n.max(32).to_string()]);
        }
        // A VOD window is cut at the input, so the output starts at 0 and -re paces from the
        // cut. A live window is a relay duration, enforced by the session across failovers.
        if let (SourceKind::Vod, Some(w)) = (self.kind, self.window) {
            if !w.start.is_zero() {
                a.extend(["-ss".into(), format!("{:.3}", w.start.as_secs_f64())]);
            }
            if let Some(len) = w.length() {
                a.extend(["-t".into(), format!("{:.3}", len.as_secs_f64())]);
            }
        }
        if self.loop_input {
            a.extend(["-stream_loop".into(), "-1".into()]);
        }
        if let Some(tc_url) = &self.tc_url {
            a.extend(["-rtmp_tcurl".into(), tc_url.clone()]);
        }
        a.extend(["-i".into(), self.url.clone()]);
        // First video and first audio only: FLV carries one of each.
        let video = match &self.filter_complex {
            Some(graph) => {
                a.extend(["-filter_complex".into(), graph.clone()]);
                format!("[{FILTER_VIDEO_OUT}]")
            }
            None => "0:v:0?".into(),
        };
        a.extend(["-map".into(), video, "-map".into(), "0:a:0?".into()]);
        a.extend(self.codec_args.iter().cloned());
        match self.container {
            Container::Flv => {
                a.extend(["-f", "flv", "-flvflags", "no_duration_filesize"].map(String::from))
            }
            Container::MpegTs => a.extend(["-f", "mpegts"].map(String::from)),
        }
        Ok(a)
    }
}

/// ffmpeg's progress line, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestProgress {
    /// Frames output so far.
    pub frame: u32,
    /// Frames per second.
    pub fps: f32,
    /// Output bitrate in kbit/s.
    pub bitrate_kbps: f32,
    /// Output position as ffmpeg prints it (`HH:MM:SS.cc`).
    pub time: String,
    /// Speed relative to real time.
    pub speed: f32,
}

/// What an ingest produces.
#[derive(Debug, Clone)]
pub enum IngestEvent {
    /// A tag of the source's FLV.
    Tag(FlvTag),
    /// A progress update.
    Progress(IngestProgress),
    /// ffmpeg ended. `success` means exit status 0 (end of a VOD file, or our own stop).
    Exited {
        /// Exit status 0.
        success: bool,
        /// The exit status and the last error ffmpeg logged.
        reason: String,
    },
}

/// What the stderr thread reports.
enum StderrEvent {
    Progress(IngestProgress),
    /// ffmpeg was reaped: exit status 0, the status as text, the last error it logged.
    Exited {
        success: bool,
        status: String,
        last_error: String,
    },
}

/// The exit when the stderr thread ended without reporting one (it panicked).
fn no_exit_status() -> (bool, String, String) {
    (false, "no exit status".to_string(), String::new())
}

/// A running ingest: an ffmpeg child or a native RTMP play. Dropping it kills ffmpeg's
/// process group, or closes the connection.
pub struct Ingest {
    backend: Backend,
    pacer: Option<Pacer>,
}

enum Backend {
    Ffmpeg(Box<FfmpegIngest>),
    Rtmp(RtmpPull),
}

impl Ingest {
    /// Starts the ingest for `spec`: native for [`IngestSpec::native_rtmp_url`], ffmpeg
    /// otherwise. Must be called within a tokio runtime.
    #[tracing::instrument(skip_all, fields(url = %spec.redacted_url()))]
    pub fn start(spec: &IngestSpec) -> Result<Ingest, IngestError> {
        if let Some(reason) = &spec.refused {
            return Err(IngestError::InvalidSource {
                url: spec.redacted_url(),
                reason: reason.clone(),
            });
        }
        let pacer = spec.buffer.filter(|b| !b.is_zero()).map(Pacer::new);
        let backend = match spec.native_rtmp_url() {
            Some(url) => {
                tracing::debug!("native RTMP ingest");
                Backend::Rtmp(RtmpPull::start(
                    url,
                    spec.rw_timeout,
                    spec.allow_private_targets,
                ))
            }
            None => {
                // Whatever ffmpeg opens over HTTP or TLS goes through the guarded proxy.
                let proxy = EgressProxy::shared(spec.allow_private_targets).map_err(|source| {
                    IngestError::Spawn {
                        path: spec.ffmpeg_path.clone(),
                        source,
                    }
                })?;
                let mut ffmpeg =
                    FfmpegIngest::spawn(&spec.ffmpeg_path, &spec.args()?, Some(&proxy.url()))?;
                if spec.container == Container::MpegTs {
                    ffmpeg.demux = Demux::Ts(TsToFlv::new());
                }
                Backend::Ffmpeg(Box::new(ffmpeg))
            }
        };
        Ok(Ingest { backend, pacer })
    }

    /// Starts ffmpeg with trusted, fully built arguments that must write `container` to
    /// stdout (the session's slate). Never pass anything a user supplied: no URL checks
    /// happen here.
    pub(crate) fn start_trusted(
        ffmpeg_path: &std::path::Path,
        args: &[String],
        container: Container,
    ) -> Result<Ingest, IngestError> {
        let mut ffmpeg = FfmpegIngest::spawn(ffmpeg_path, args, None)?;
        if container == Container::MpegTs {
            ffmpeg.demux = Demux::Ts(TsToFlv::new());
        }
        Ok(Ingest {
            backend: Backend::Ffmpeg(Box::new(ffmpeg)),
            pacer: None,
        })
    }

    /// ffmpeg's pid (and process group id) while it has not been reaped; `None` for a
    /// native ingest.
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Ffmpeg(f) => f.guard.pgid(),
            Backend::Rtmp(_) => None,
        }
    }

    /// The next event; `None` after [`IngestEvent::Exited`]. Cancel safe: a read that has
    /// not completed loses nothing, and tags already cut are kept for the next call.
    pub async fn next(&mut self) -> Option<IngestEvent> {
        let Some(pacer) = self.pacer.as_mut() else {
            return self.backend.next().await;
        };
        loop {
            if let Some(ev) = pacer.due(Instant::now()) {
                return Some(ev);
            }
            tokio::select! {
                ev = self.backend.next(), if !pacer.ended => match ev {
                    // Progress is about the input: no reason to hold it back.
                    Some(IngestEvent::Progress(p)) => return Some(IngestEvent::Progress(p)),
                    Some(ev) => pacer.hold(ev, Instant::now()),
                    None => pacer.ended = true,
                },
                _ = sleep_until_opt(pacer.next_release()) => {}
                else => return None,
            }
        }
    }

    /// Stops the ingest: ffmpeg gently (SIGINT to its group, then SIGKILL after
    /// `deadline`); a native pull at once.
    pub async fn stop(self, deadline: Duration) {
        match self.backend {
            Backend::Ffmpeg(f) => f.stop(deadline).await,
            Backend::Rtmp(r) => r.stop(),
        }
    }
}

/// What cuts an ingest ffmpeg's stdout into tags.
enum Demux {
    Flv(FlvParser),
    Ts(TsToFlv),
}

impl Demux {
    fn push(&mut self, chunk: &[u8], tags: &mut VecDeque<FlvTag>) -> Result<(), String> {
        match self {
            Demux::Flv(p) => {
                p.push(chunk);
                while let Some(item) = p.next_item().map_err(|e| e.to_string())? {
                    if let FlvItem::Tag(t) = item {
                        tags.push_back(t);
                    }
                }
            }
            Demux::Ts(d) => {
                d.push(chunk).map_err(|e| e.to_string())?;
                tags.extend(std::iter::from_fn(|| d.next_tag()));
            }
        }
        Ok(())
    }

    /// The end of stdout: a TS demuxer still holds the last access units.
    fn finish(&mut self, tags: &mut VecDeque<FlvTag>) {
        if let Demux::Ts(d) = self {
            d.finish();
            tags.extend(std::iter::from_fn(|| d.next_tag()));
        }
    }
}

impl Backend {
    async fn next(&mut self) -> Option<IngestEvent> {
        match self {
            Backend::Ffmpeg(f) => f.next().await,
            Backend::Rtmp(r) => r.next().await,
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A timestamp step larger than this (either way) starts a new schedule instead of holding
/// tags for the length of the jump.
const PACER_MAX_JUMP_MS: i64 = 10_000;

/// The `bufferTime` jitter buffer: holds events and releases each tag `delay` after the
/// source's clock says it is due, measured from an anchor (the first tag, or the tag after
/// an underrun or a timestamp jump). The exit comes out after the last held tag.
struct Pacer {
    delay: Duration,
    /// Arrival of the anchor tag and its timestamp.
    anchor: Option<(Instant, u32)>,
    held: VecDeque<(Instant, IngestEvent)>,
    /// The backend has nothing more to give.
    ended: bool,
}

impl Pacer {
    fn new(delay: Duration) -> Self {
        Pacer {
            delay,
            anchor: None,
            held: VecDeque::new(),
            ended: false,
        }
    }

    fn hold(&mut self, ev: IngestEvent, now: Instant) {
        let release = match &ev {
            IngestEvent::Tag(tag) => self.release_time(tag.timestamp, now),
            // After everything before it.
            _ => self.held.back().map_or(now, |(t, _)| (*t).max(now)),
        };
        self.held.push_back((release, ev));
    }

    fn release_time(&mut self, ts: u32, now: Instant) -> Instant {
        if let Some((at, base)) = self.anchor {
            let ahead = i64::from(ts) - i64::from(base);
            if (0..=PACER_MAX_JUMP_MS).contains(&ahead) || (-PACER_MAX_JUMP_MS..0).contains(&ahead)
            {
                let due = if ahead >= 0 {
                    at + self.delay + Duration::from_millis(ahead as u64)
                } else {
                    (at + self.delay)
                        .checked_sub(Duration::from_millis((-ahead) as u64))
                        .unwrap_or(at)
                };
                // Still in time: keep the schedule. Late (the source stalled longer than the
                // buffer): start again from here, so the buffer fills up anew.
                if due + Duration::from_millis(100) >= now {
                    // Never release out of order.
                    return self.held.back().map_or(due, |(t, _)| due.max(*t));
                }
            }
        }
        self.anchor = Some((now, ts));
        let due = now + self.delay;
        self.held.back().map_or(due, |(t, _)| due.max(*t))
    }

    fn next_release(&self) -> Option<Instant> {
        self.held.front().map(|(t, _)| *t)
    }

    /// The next held event whose time has come.
    fn due(&mut self, now: Instant) -> Option<IngestEvent> {
        match self.held.front() {
            Some((t, _)) if *t <= now => self.held.pop_front().map(|(_, ev)| ev),
            _ => None,
        }
    }
}

/// A running ingest ffmpeg. Dropping it kills ffmpeg's process group.
struct FfmpegIngest {
    /// ffmpeg's stdout until EOF (or an FLV error, after which it is of no use).
    stdout: Option<tokio::process::ChildStdout>,
    demux: Demux,
    buf: Box<[u8]>,
    /// Tags cut from the last read, not handed out yet.
    tags: VecDeque<FlvTag>,
    /// Progress and the exit, from the stderr thread.
    rx: mpsc::Receiver<StderrEvent>,
    /// The exit (success, status, last error), held back until stdout is drained so no tag
    /// comes after it.
    exit: Option<(bool, String, String)>,
    flv_error: Option<String>,
    pid: u32,
    guard: GroupGuard,
    exited: bool,
}

impl FfmpegIngest {
    /// Spawns ffmpeg with `args`; with `http_proxy` set to `proxy` (and no `no_proxy`) when given.
    fn spawn(
        ffmpeg_path: &std::path::Path,
        args: &[String],
        proxy: Option<&str>,
    ) -> Result<FfmpegIngest, IngestError> {
        let spawn_err = |source| IngestError::Spawn {
            path: ffmpeg_path.to_path_buf(),
            source,
        };
        let mut cmd = FfmpegCommand::new_with_path(ffmpeg_path);
        cmd.args(args);
        cmd.pipe_stdout();
        if let Some(proxy) = proxy {
            let inner = cmd.as_inner_mut();
            for var in [
                "no_proxy",
                "NO_PROXY",
                "HTTP_PROXY",
                "https_proxy",
                "HTTPS_PROXY",
            ] {
                inner.env_remove(var);
            }
            inner.env("http_proxy", proxy);
        }
        crate::process::own_process_group(cmd.as_inner_mut());
        crate::process::die_with_parent(cmd.as_inner_mut());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let pid = child.as_inner().id();
        let guard = GroupGuard::new(pid);
        let missing = |what: &str| spawn_err(std::io::Error::other(format!("no {what} pipe")));
        let stdout = child.take_stdout().ok_or_else(|| missing("stdout"))?;
        let stderr = child.take_stderr().ok_or_else(|| missing("stderr"))?;
        // Registers the pipe with the runtime's reactor (and makes it non-blocking). On error
        // the stderr thread is not started yet, so reap the child here: no zombie is left.
        let stdout = match tokio::process::ChildStdout::from_std(stdout) {
            Ok(s) => s,
            Err(e) => {
                kill_group(pid);
                let _ = child.wait();
                return Err(spawn_err(e));
            }
        };
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        tracing::debug!(pid, "ingest ffmpeg started");
        // stderr needs a blocking reader (the sidecar's parser) and the final wait blocks too;
        // both are rare events, so a plain thread is cheaper than a task per line.
        let thread = std::thread::Builder::new()
            .name("ffmpeg-stderr".into())
            .spawn(move || {
                let mut parser = FfmpegLogParser::new(stderr);
                let mut last_error = String::new();
                // A refusal of the egress guard is the reason, whatever ffmpeg says after it.
                let mut refusal: Option<String> = None;
                loop {
                    match parser.parse_next_event() {
                        Ok(FfmpegEvent::LogEOF) => break,
                        Ok(FfmpegEvent::Progress(p)) => {
                            let p = IngestProgress {
                                frame: p.frame,
                                fps: p.fps,
                                bitrate_kbps: p.bitrate_kbps,
                                time: p.time,
                                speed: p.speed,
                            };
                            // Progress is informational: drop it rather than block ffmpeg.
                            let _ = tx.try_send(StderrEvent::Progress(p));
                        }
                        Ok(
                            FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, msg)
                            | FfmpegEvent::Error(msg),
                        ) => last_error = msg,
                        Ok(FfmpegEvent::Log(_, msg))
                            if refusal.is_none() && msg.contains(REFUSAL_MARK) =>
                        {
                            refusal = msg.find(REFUSAL_MARK).map(|i| msg[i..].trim().to_string());
                        }
                        Ok(_) => {}
                        // A read error ends stderr; a line the parser does not understand is
                        // skipped (stopping here would leave ffmpeg blocked on a full pipe).
                        Err(e) if e.downcast_ref::<std::io::Error>().is_some() => break,
                        Err(_) => {}
                    }
                }
                // The receiver may be gone (stopped): the owner has already killed the group,
                // so this wait returns promptly and reaps the child.
                let (success, status) = match child.wait() {
                    Ok(s) => (s.success(), s.to_string()),
                    Err(e) => (false, e.to_string()),
                };
                let last_error = refusal.unwrap_or(last_error);
                let _ = tx.blocking_send(StderrEvent::Exited {
                    success,
                    status,
                    last_error,
                });
            });
        if let Err(e) = thread {
            // The guard kills the group on drop. The child went down with the closure
            // unreaped; a thread that cannot be spawned means worse trouble than a zombie.
            drop(guard);
            return Err(spawn_err(e));
        }
        Ok(FfmpegIngest {
            stdout: Some(stdout),
            demux: Demux::Flv(FlvParser::new()),
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            tags: VecDeque::new(),
            rx,
            exit: None,
            flv_error: None,
            pid,
            guard,
            exited: false,
        })
    }

    async fn next(&mut self) -> Option<IngestEvent> {
        if self.exited {
            return None;
        }
        loop {
            if let Some(t) = self.tags.pop_front() {
                return Some(IngestEvent::Tag(t));
            }
            let Some(stdout) = self.stdout.as_mut() else {
                // stdout is drained: the exit is the last event.
                let exit = match self.exit.take() {
                    Some(e) => e,
                    None => match self.rx.recv().await {
                        Some(StderrEvent::Progress(p)) => return Some(IngestEvent::Progress(p)),
                        Some(StderrEvent::Exited {
                            success,
                            status,
                            last_error,
                        }) => (success, status, last_error),
                        None => no_exit_status(),
                    },
                };
                return Some(self.finish(exit));
            };
            // Stop listening to stderr once the exit is in: it is the thread's last message.
            let read = tokio::select! {
                biased;
                r = stdout.read(&mut self.buf) => r,
                ev = self.rx.recv(), if self.exit.is_none() => match ev {
                    Some(StderrEvent::Progress(p)) => return Some(IngestEvent::Progress(p)),
                    Some(StderrEvent::Exited { success, status, last_error }) => {
                        self.exit = Some((success, status, last_error));
                        continue;
                    }
                    None => {
                        self.exit = Some(no_exit_status());
                        continue;
                    }
                },
            };
            let cut = match read {
                Ok(0) | Err(_) => {
                    self.stdout = None;
                    self.demux.finish(&mut self.tags);
                    Ok(())
                }
                Ok(n) => self.demux.push(&self.buf[..n], &mut self.tags),
            };
            if let Err(e) = cut {
                // Garbage on stdout: ffmpeg is of no use any more.
                self.flv_error = Some(e);
                kill_group(self.pid);
                self.stdout = None;
            }
        }
    }

    fn finish(&mut self, (success, status, last_error): (bool, String, String)) -> IngestEvent {
        self.exited = true;
        // The child has been reaped: its pid may be reused, so do not signal it again.
        self.guard.disarm();
        let (success, reason) = match self.flv_error.take() {
            Some(e) => (false, format!("{status}; {e}")),
            None if !last_error.is_empty() => (success, format!("{status}; {}", last_error.trim())),
            None => (success, status),
        };
        IngestEvent::Exited { success, reason }
    }

    async fn stop(mut self, deadline: Duration) {
        if self.exited {
            return;
        }
        if let Some(pgid) = self.guard.pgid() {
            signal_group(pgid, libc::SIGINT);
        }
        let drained = tokio::time::timeout(deadline, async {
            while let Some(ev) = self.next().await {
                if matches!(ev, IngestEvent::Exited { .. }) {
                    break;
                }
            }
        })
        .await;
        if drained.is_err() {
            if let Some(pgid) = self.guard.pgid() {
                kill_group(pgid);
            }
        }
        // Drop kills the group if it is still armed.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rtsp_source_gets_the_rtsp_socket_timeout() {
        let a = IngestSpec::live("rtsp://h:554/cam")
            .args()
            .expect("args")
            .join(" ");
        assert!(a.contains(" -timeout 5000000 "), "{a}");
        assert!(!a.contains("-rw_timeout"), "{a}");
    }

    #[test]
    fn whitelist_and_args() {
        let mut s = IngestSpec::live("rtmp://h/live/a");
        assert_eq!(s.protocol_whitelist().ok(), Some("tcp,rtmp"));
        let a = s.args().expect("args");
        let joined = a.join(" ");
        assert!(joined.contains("-rw_timeout 5000000"));
        assert!(joined.contains("-c copy -f flv"));
        assert!(!joined.contains("-re "));
        for bad in [
            "file:///etc/passwd",
            "concat:a|b",
            "subfile,,start,0,end,0,,:x",
            "/tmp/x.flv",
        ] {
            s.url = bad.into();
            assert!(
                s.args().map_err(|e| e.is_source_error()).err() == Some(true),
                "{bad}"
            );
        }
        s.url = "https://cdn/x.m3u8".into();
        s.kind = SourceKind::Vod;
        s.headers = vec![("Referer".into(), "https://a".into())];
        let a = s.args().expect("args");
        assert!(a.contains(&"-re".to_string()));
        assert!(a.contains(&"Referer: https://a\r\n".to_string()));
        s.headers = vec![("X".into(), "a\r\nHost: evil".into())];
        assert!(s.args().is_err());
        s.url = "https://user:pw@cdn.example/live/a.m3u8?token=secret".into();
        assert_eq!(s.redacted_url(), "https://cdn.example/live/a.m3u8?***");
    }

    #[test]
    fn only_plain_rtmp_copy_is_pulled_natively() {
        let s = IngestSpec::live("rtmp://h/live/a?token=x");
        let u = s.native_rtmp_url().expect("native");
        assert_eq!((u.app(), u.stream_key()), ("live", "a?token=x"));
        let mut copy = s.clone();
        copy.codec_args = ["-c:v", "copy", "-c:a", "copy"].map(String::from).to_vec();
        assert!(copy.native_rtmp_url().is_some());
        let mut t = s.clone();
        t.codec_args = ["-c:v", "libx264", "-c:a", "copy"]
            .map(String::from)
            .to_vec();
        assert!(t.native_rtmp_url().is_none(), "a transcode needs ffmpeg");
        let mut f = s.clone();
        f.filter_complex = Some("[0:v]null[vout]".into());
        assert!(f.native_rtmp_url().is_none());
        let mut off = s.clone();
        off.native_rtmp = false;
        assert!(off.native_rtmp_url().is_none());
        for url in [
            "rtmps://h/live/a",
            "http://h/live/a.flv",
            "rtmp://u:p@h/live/a",
            "rtmp://h/live/a\n",
        ] {
            let mut o = s.clone();
            o.url = url.to_string();
            assert!(o.native_rtmp_url().is_none(), "{url}");
        }
        assert!(IngestSpec::vod("rtmp://h/live/a")
            .native_rtmp_url()
            .is_none());
    }

    fn tag_at(ts: u32) -> IngestEvent {
        IngestEvent::Tag(FlvTag::new(
            crate::media::flv::TagType::Audio,
            ts,
            bytes::Bytes::from_static(&[0xaf, 1]),
        ))
    }

    fn ts_of(ev: &IngestEvent) -> u32 {
        match ev {
            IngestEvent::Tag(t) => t.timestamp,
            _ => u32::MAX,
        }
    }

    /// `bufferTime`: a burst comes out at the source's pace, `delay` later; a stall shorter
    /// than the buffer does not interrupt the output; a longer one refills the buffer.
    #[test]
    fn the_buffer_smooths_bursts_and_stalls() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut p = Pacer::new(ms(2_000));
        // A 4 s HLS segment's worth of tags arrives at once.
        for ts in (0..4_000).step_by(40) {
            p.hold(tag_at(ts), t0);
        }
        assert!(
            p.due(t0 + ms(1_999)).is_none(),
            "nothing before the buffer time"
        );
        assert_eq!(p.due(t0 + ms(2_000)).map(|e| ts_of(&e)), Some(0));
        assert!(p.due(t0 + ms(2_010)).is_none(), "paced, not flushed");
        let mut out = Vec::new();
        while let Some(e) = p.due(t0 + ms(4_000)) {
            out.push(ts_of(&e));
        }
        assert_eq!(out.first(), Some(&40));
        assert_eq!(out.last(), Some(&2_000));
        // The next segment arrives 3.5 s after the first one: late for the source's pace, but
        // within the buffer, so its tags keep the schedule.
        p.hold(tag_at(4_000), t0 + ms(3_500));
        assert_eq!(p.next_release(), Some(t0 + ms(4_040)));
        assert_eq!(
            p.held.back().map(|(t, _)| *t),
            Some(t0 + ms(6_000)),
            "due at 2 s + 4 s"
        );
        while p.due(t0 + ms(6_000)).is_some() {}
        assert!(p.next_release().is_none());
        // A stall far longer than the buffer: the schedule starts over from the arrival.
        p.hold(tag_at(4_040), t0 + ms(20_000));
        assert_eq!(p.next_release(), Some(t0 + ms(22_000)));
        // The exit follows the last tag.
        p.hold(
            IngestEvent::Exited {
                success: true,
                reason: "end".into(),
            },
            t0 + ms(20_001),
        );
        assert_eq!(p.held.back().map(|(t, _)| *t), Some(t0 + ms(22_000)));
    }

    #[test]
    fn time_windows() {
        let w = TimeWindow::parse("30-60").expect("valid");
        assert_eq!(w.start, Duration::from_secs(30));
        assert_eq!(w.length(), Some(Duration::from_secs(30)));
        assert_eq!(TimeWindow::parse("5-").expect("open").end, None);
        for bad in ["", "60-30", "5-5", "a-b", "-5", "1e9-2e9", "NaN-1"] {
            assert!(TimeWindow::parse(bad).is_err(), "{bad}");
        }
        let mut s = IngestSpec::vod("http://h/a.mp4");
        s.window = Some(TimeWindow::parse("1.5-4").expect("valid"));
        let a = s.args().expect("args").join(" ");
        assert!(a.contains("-ss 1.500 -t 2.500 -i http://h/a.mp4"), "{a}");
        // A live window is not an ffmpeg option: the session times it.
        s.kind = SourceKind::Live;
        assert!(!s.args().expect("args").contains(&"-ss".to_string()));
    }

    #[tokio::test]
    async fn unreachable_source_exits_with_a_reason() {
        crate::require_peers!(Ffmpeg);
        let port = crate::test_util::closed_port();
        let mut spec = IngestSpec::live(format!("rtmp://127.0.0.1:{port}/live/none"));
        spec.allow_private_targets = true;
        spec.native_rtmp = false;
        spec.rw_timeout = Duration::from_secs(1);
        let mut ingest = Ingest::start(&spec).expect("start");
        let ev = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ingest.next().await {
                    Some(IngestEvent::Exited { success, reason }) => break Some((success, reason)),
                    Some(_) => continue,
                    None => break None,
                }
            }
        })
        .await
        .expect("exits in time")
        .expect("exit event");
        assert!(!ev.0, "failure expected");
        eprintln!("reason: {}", ev.1);
        assert!(!ev.1.is_empty());
    }

    #[tokio::test]
    async fn missing_binary_is_our_error() {
        let mut spec = IngestSpec::live("rtmp://127.0.0.1/live/x");
        spec.allow_private_targets = true;
        spec.native_rtmp = false;
        spec.ffmpeg_path = "/nonexistent/ffmpeg".into();
        match Ingest::start(&spec) {
            Err(e) => assert!(!e.is_source_error()),
            Ok(_) => panic!("must fail"),
        }
    }

    /// A source that accepts TCP but never speaks RTMP hangs ffmpeg until its rw_timeout;
    /// stop must not wait for that, and must leave no process behind.
    #[tokio::test]
    async fn stop_ends_a_hanging_ffmpeg_and_reaps_it() {
        crate::require_peers!(Ffmpeg);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut spec = IngestSpec::live(format!("rtmp://127.0.0.1:{port}/live/hang"));
        spec.allow_private_targets = true;
        spec.native_rtmp = false;
        spec.rw_timeout = Duration::from_secs(60);
        let ingest = Ingest::start(&spec).expect("start");
        let pid = ingest.pid().expect("pid");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        let t = std::time::Instant::now();
        ingest.stop(Duration::from_millis(500)).await;
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "stop took {:?}",
            t.elapsed()
        );
        // Reaped, not a zombie: /proc entry gone.
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < until,
                "ffmpeg {pid} still there"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(listener);
    }
}
