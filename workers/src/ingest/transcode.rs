//! Transcoding and watermarks: a task's `fops` and a source's watermark fields turned into the
//! ingest ffmpeg's output arguments.
//!
//! - A copy relay (no `fops`, no watermark) stays `-c copy`: it never decodes.
//! - A re-encode gets `libx264 -preset veryfast -tune zerolatency` (latency matters more than
//!   compression on a relay), a constrained bitrate, size, frame rate and regular keyframes.
//! - Watermark images are user URLs: each is fetched once, before ffmpeg starts, by
//!   [`WatermarkFetcher`] (HTTP(S) only, internal addresses refused, size cap, timeout, PNG/JPEG
//!   magic bytes) into a temp directory that lives as long as the session's [`IngestSpec`]s. ffmpeg
//!   only ever opens those local files, through the `movie` source filter with a demuxer pinned
//!   to the sniffed format (not as extra `-i` inputs: see [`IngestSpec::filter_complex`]). The
//!   filter graph is built from enums, numbers and our own file names only.
//!
//! The ingest writes FLV (the splicer parses FLV tags). ffmpeg 5.1's FLV muxer cannot carry
//! HEVC, so a `libx265` ingest writes MPEG-TS instead ([`Container::MpegTs`]), which
//! [`crate::media::mpegts`] turns into Enhanced RTMP (`hvc1`) tags. Vorbis has no FLV or RTMP form at
//! all: `libvorbis` is refused with a clear error instead of a session that fails in a loop.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use relaycast_core::domain::relay::types::{
    redact_url, AudioCodec, Fops, Gravity, HttpUrl, Source, VideoCodec, WmPosition,
};
use relaycast_core::domain::targets::{check_url_host, TargetError};
use relaycast_core::guarded_dns::GuardedResolver;

use crate::ingest::{Container, IngestSpec, FILTER_VIDEO_OUT};

/// Distance in pixels between a gravity-anchored watermark and the frame edges.
pub const WATERMARK_MARGIN: u32 = 10;
/// The largest watermark image accepted, in bytes.
pub const MAX_WATERMARK_BYTES: usize = 5 * 1024 * 1024;
/// How long one watermark download may take, connection included.
pub const WATERMARK_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long all the watermarks of a session may take together: the task's lease is not
/// renewed while a session starts, so this stays well below the default lease TTL (30 s).
pub const WATERMARKS_TOTAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Redirects followed per watermark download (each hop is checked again).
const MAX_REDIRECTS: usize = 3;

/// Why a task's transcoding could not be set up. Every variant is a task failure with a
/// readable reason, never a crash.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The system ffmpeg was built without an encoder the task asks for.
    #[error("ffmpeg has no {0} encoder")]
    EncoderMissing(&'static str),
    /// The codec exists but the FLV/RTMP output cannot carry it.
    #[error("{0} cannot be relayed: ffmpeg's FLV/RTMP output does not carry {1}")]
    NotFlvCompatible(&'static str, &'static str),
    /// A watermark needs decoding and re-encoding, so a video encoder.
    #[error("a watermark needs fops.vcodec (libx264)")]
    WatermarkNeedsEncoder,
    /// A watermark file path has characters the filter syntax would interpret (a temp dir
    /// configured with such a name).
    #[error("watermark path {0:?} is not usable in a filter graph")]
    UnsafePath(PathBuf),
    /// A watermark was not fetched for this source (a caller bug, reported rather than ignored).
    #[error("watermark image {0} was not fetched")]
    WatermarkNotFetched(String),
    /// A watermark image could not be fetched.
    #[error("watermark {url}: {source}")]
    Watermark {
        /// The image URL, without its query string (it may carry a token).
        url: String,
        /// What went wrong.
        source: FetchError,
    },
    /// All the watermarks together took longer than [`WATERMARKS_TOTAL_TIMEOUT`].
    #[error("watermark images took longer than {0:?} to fetch")]
    WatermarksTimeout(Duration),
    /// The encoder list of ffmpeg could not be read.
    #[error("cannot list the encoders of {path:?}: {reason}")]
    EncoderProbe {
        /// The ffmpeg binary.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The temp directory for watermark images could not be created or written.
    #[error("watermark temp files: {0}")]
    TempFiles(std::io::Error),
}

/// Why one watermark download was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not an `http`/`https` URL with a host.
    #[error("not an http(s) URL")]
    BadUrl,
    /// The host is, or resolves to, an internal address (or a redirect went there).
    #[error("refused: {0}")]
    Refused(TargetError),
    /// The server answered with a non-2xx status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is larger than the cap.
    #[error("larger than {limit} bytes")]
    TooBig {
        /// The cap in bytes.
        limit: usize,
    },
    /// The body is neither a PNG nor a JPEG.
    #[error("not a PNG or JPEG image")]
    NotImage,
    /// The download took longer than the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection, TLS, redirect or protocol error.
    #[error("request failed: {0}")]
    Http(String),
}

/// The image formats ffmpeg is allowed to decode as a watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// PNG (`\x89PNG\r\n\x1a\n`).
    Png,
    /// JPEG (`FF D8 FF`).
    Jpeg,
}

impl ImageKind {
    /// Recognises an image by its magic bytes (never by URL or Content-Type, which the server
    /// controls).
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else {
            None
        }
    }

    /// The ffmpeg demuxer pinned for the file, so ffmpeg decodes exactly what was sniffed.
    pub fn ffmpeg_format(self) -> &'static str {
        match self {
            Self::Png => "png_pipe",
            Self::Jpeg => "jpeg_pipe",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
        }
    }
}

/// A fetched watermark image on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkImage {
    /// The local file (inside a [`Watermarks`] temp directory).
    pub path: PathBuf,
    /// Its format.
    pub kind: ImageKind,
}

/// Whether `path` can go into a filter graph as is: absolute, and only characters with no
/// meaning in ffmpeg's filter syntax (`:`, `,`, `;`, `[`, `'`, `\`, … would need escaping).
fn filter_safe_path(path: &Path) -> Option<&str> {
    let s = path.to_str()?;
    let ok = s.starts_with('/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'));
    ok.then_some(s)
}

/// Where a source's watermarks go: `wmPosition` when given, else `wmGravity` (default
/// `TOP_RIGHT`). The API refuses both at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Anchored to one of nine positions with a [`WATERMARK_MARGIN`].
    Gravity(Gravity),
    /// Top-left corner at a percentage of the frame.
    Position(WmPosition),
}

impl Placement {
    /// The placement a source asks for.
    pub fn of(source: &Source) -> Self {
        match source.wm_position {
            Some(p) => Self::Position(p),
            None => Self::Gravity(source.wm_gravity.unwrap_or_default()),
        }
    }

    /// The `x=…:y=…` of ffmpeg's overlay filter (`W`/`H`: frame, `w`/`h`: watermark).
    pub fn overlay_xy(self) -> String {
        let m = WATERMARK_MARGIN;
        let (x, y) = match self {
            Self::Position(p) => {
                return format!("x=W*{}/100:y=H*{}/100", p.x_percent, p.y_percent);
            }
            Self::Gravity(g) => {
                let left = format!("{m}");
                let center_x = "(W-w)/2".to_string();
                let right = format!("W-w-{m}");
                let top = format!("{m}");
                let center_y = "(H-h)/2".to_string();
                let bottom = format!("H-h-{m}");
                match g {
                    Gravity::TopLeft => (left, top),
                    Gravity::TopCenter => (center_x, top),
                    Gravity::TopRight => (right, top),
                    Gravity::CenterLeft => (left, center_y),
                    Gravity::Center => (center_x, center_y),
                    Gravity::CenterRight => (right, center_y),
                    Gravity::BottomLeft => (left, bottom),
                    Gravity::BottomCenter => (center_x, bottom),
                    Gravity::BottomRight => (right, bottom),
                }
            }
        };
        format!("x={x}:y={y}")
    }
}

/// The output side of an ingest ffmpeg: what [`apply`] sets on an [`IngestSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputArgs {
    /// Codec and encoder options (`-c copy` for a copy relay).
    pub codec_args: Vec<String>,
    /// The filter graph (scale and overlays), ending in `[vout]`; `None` without watermarks.
    pub filter_complex: Option<String>,
    /// What the ingest writes: FLV, or MPEG-TS for HEVC.
    pub container: Container,
}

/// Formats a number for ffmpeg: `25`, `29.97`.
fn num(v: f64) -> String {
    format!("{v}")
}

/// MPEG-TS when the video is HEVC (FLV cannot carry it from ffmpeg 5.1), else FLV.
fn container_for(fops: &Fops) -> Container {
    if fops.vcodec == Some(VideoCodec::Libx265) {
        Container::MpegTs
    } else {
        Container::Flv
    }
}

/// Builds the output arguments for `fops` with `images` placed at `placement`. Pure: the
/// encoders' presence is checked by [`check_encoders`].
pub fn output_args(
    fops: &Fops,
    images: &[WatermarkImage],
    placement: Placement,
) -> Result<OutputArgs, TranscodeError> {
    let mut a: Vec<String> = Vec::new();
    let s = |v: &str| v.to_string();
    match fops.vcodec {
        None if !images.is_empty() => return Err(TranscodeError::WatermarkNeedsEncoder),
        // Without an encoder the other video fields cannot apply (the API refuses them).
        None => a.extend([s("-c:v"), s("copy")]),
        Some(v @ (VideoCodec::Libx264 | VideoCodec::Libx265)) => {
            // x265 costs several times x264's CPU at the same preset: ultrafast keeps a live
            // relay in real time on a small machine.
            let preset = if v == VideoCodec::Libx265 {
                "ultrafast"
            } else {
                "veryfast"
            };
            a.extend([
                s("-c:v"),
                s(v.ffmpeg_name()),
                s("-preset"),
                s(preset),
                s("-tune"),
                s("zerolatency"),
            ]);
            if v == VideoCodec::Libx265 {
                // x265 writes its banner and statistics to stderr, line by line, otherwise.
                a.extend([s("-x265-params"), s("log-level=error")]);
            }
            // 4:2:0 plays everywhere; a 4:2:2 source or an alpha overlay would change it.
            a.extend([s("-pix_fmt"), s("yuv420p")]);
            if let Some(bps) = fops.bps {
                // Constrained rate: a relay's viewers and CDNs want a steady bitrate.
                a.extend([
                    s("-b:v"),
                    bps.to_string(),
                    s("-maxrate"),
                    bps.to_string(),
                    s("-bufsize"),
                    (bps.saturating_mul(2)).to_string(),
                ]);
            }
            if let (Some(res), true) = (fops.res, images.is_empty()) {
                // With watermarks the scale is in the filter graph, before the overlays.
                a.extend([s("-s"), format!("{}x{}", res.width, res.height)]);
            }
            if let Some(fps) = fops.fps {
                a.extend([s("-r"), num(fps)]);
            }
            if let Some(gop_ms) = fops.forced_gop_interval_ms {
                let secs = f64::from(gop_ms) / 1000.0;
                if let Some(fps) = fops.fps {
                    // The encoder's own GOP at the output rate, and no extra keyframes at scene
                    // cuts, so the spacing is regular.
                    let frames = ((secs * fps).round() as u64).max(1).to_string();
                    a.extend([
                        s("-g"),
                        frames.clone(),
                        s("-keyint_min"),
                        frames,
                        s("-sc_threshold"),
                        s("0"),
                    ]);
                }
                // By time as well: holds when the output rate is the source's (unknown here).
                a.extend([
                    s("-force_key_frames"),
                    format!("expr:gte(t,n_forced*{})", num(secs)),
                ]);
            }
        }
    }
    match fops.acodec {
        None => a.extend([s("-c:a"), s("copy")]),
        Some(AudioCodec::Libvorbis) => {
            return Err(TranscodeError::NotFlvCompatible("libvorbis", "Vorbis"))
        }
        Some(c @ AudioCodec::Libmp3lame) => {
            // FLV's MP3 rates are 44.1/22.05/11.025 kHz; a 48 kHz source would not fit.
            a.extend([s("-c:a"), s(c.ffmpeg_name()), s("-ar"), s("44100")]);
        }
        Some(c @ AudioCodec::Libfaac) => a.extend([s("-c:a"), s(c.ffmpeg_name())]),
    }
    if images.is_empty() {
        return Ok(OutputArgs {
            codec_args: a,
            filter_complex: None,
            container: container_for(fops),
        });
    }
    let mut graph = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let path = filter_safe_path(&img.path)
            .ok_or_else(|| TranscodeError::UnsafePath(img.path.clone()))?;
        // One frame, decoded once: overlay repeats the last frame of an ended input (its
        // default eof_action), so the image is not decoded again for every video frame.
        graph.push(format!(
            "movie=filename={path}:format_name={}[img{i}]",
            img.kind.ffmpeg_format()
        ));
    }
    let mut last = s("0:v:0");
    if let Some(res) = fops.res {
        // Scale first so positions are relative to the output frame.
        graph.push(format!("[0:v:0]scale={}:{}[base]", res.width, res.height));
        last = s("base");
    }
    let xy = placement.overlay_xy();
    for i in 0..images.len() {
        // Layers in URL order at the same anchor; a later image is drawn over earlier ones.
        let out = if i + 1 == images.len() {
            s(FILTER_VIDEO_OUT)
        } else {
            format!("wm{i}")
        };
        graph.push(format!("[{last}][img{i}]overlay={xy}[{out}]"));
        last = out;
    }
    Ok(OutputArgs {
        codec_args: a,
        filter_complex: Some(graph.join(";")),
        container: container_for(fops),
    })
}

/// Sets the output side of `spec` for `fops` and `source`'s watermarks (fetched into
/// `watermarks`, which the spec then keeps alive).
pub fn apply(
    spec: &mut IngestSpec,
    fops: &Fops,
    source: &Source,
    watermarks: &Watermarks,
) -> Result<(), TranscodeError> {
    let images = match &source.wm_image {
        Some(w) => w
            .urls()
            .iter()
            .map(|u| {
                watermarks
                    .get(u)
                    .cloned()
                    .ok_or_else(|| TranscodeError::WatermarkNotFetched(redact_url(u.as_str())))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let out = output_args(fops, &images, Placement::of(source))?;
    spec.codec_args = out.codec_args;
    spec.filter_complex = out.filter_complex;
    spec.container = out.container;
    if !images.is_empty() {
        spec.input_files = watermarks.dir.clone();
    }
    Ok(())
}

/// The encoder names (`libx264`, `aac`, …) `fops` needs.
fn wanted_encoders(fops: &Fops) -> Vec<&'static str> {
    let mut v = Vec::new();
    if let Some(c) = fops.vcodec {
        v.push(c.ffmpeg_name());
    }
    if let Some(c) = fops.acodec {
        v.push(c.ffmpeg_name());
    }
    v
}

/// Encoder lists per ffmpeg binary: listing them costs an ffmpeg start (~50 ms).
fn encoder_cache() -> &'static Mutex<HashMap<PathBuf, Arc<HashSet<String>>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<HashSet<String>>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Parses `ffmpeg -encoders`: lines of ` V....D libx264  description`, after a `------` rule.
pub fn parse_encoders(listing: &str) -> HashSet<String> {
    listing
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("------"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let flags = f.next()?;
            (flags.len() == 6)
                .then(|| f.next().map(str::to_string))
                .flatten()
        })
        .collect()
}

/// Checks that `ffmpeg` has the encoders `fops` asks for (runs `ffmpeg -encoders` once per
/// binary). A copy relay checks nothing.
pub async fn check_encoders(ffmpeg: &Path, fops: &Fops) -> Result<(), TranscodeError> {
    let wanted = wanted_encoders(fops);
    if wanted.is_empty() {
        return Ok(());
    }
    let cached = encoder_cache()
        .lock()
        .ok()
        .and_then(|c| c.get(ffmpeg).cloned());
    let encoders = match cached {
        Some(e) => e,
        None => {
            let probe_err = |reason: String| TranscodeError::EncoderProbe {
                path: ffmpeg.to_path_buf(),
                reason,
            };
            let out = tokio::process::Command::new(ffmpeg)
                .args(["-hide_banner", "-nostdin", "-encoders"])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| probe_err(e.to_string()))?;
            if !out.status.success() {
                return Err(probe_err(out.status.to_string()));
            }
            let e = Arc::new(parse_encoders(&String::from_utf8_lossy(&out.stdout)));
            if let Ok(mut c) = encoder_cache().lock() {
                c.insert(ffmpeg.to_path_buf(), e.clone());
            }
            e
        }
    };
    match wanted.into_iter().find(|w| !encoders.contains(*w)) {
        Some(missing) => Err(TranscodeError::EncoderMissing(missing)),
        None => Ok(()),
    }
}

/// Downloads watermark images safely (see the module doc).
#[derive(Clone)]
pub struct WatermarkFetcher {
    client: reqwest::Client,
    allow_private: bool,
    max_bytes: usize,
    timeout: Duration,
}

impl WatermarkFetcher {
    /// A fetcher; `allow_private` is the operator's `allow_private_targets`.
    pub fn new(allow_private: bool) -> Result<Self, FetchError> {
        Self::with_limits(allow_private, MAX_WATERMARK_BYTES, WATERMARK_FETCH_TIMEOUT)
    }

    /// A fetcher with another size cap and timeout (tests).
    pub fn with_limits(
        allow_private: bool,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Self, FetchError> {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let ok_scheme = matches!(attempt.url().scheme(), "http" | "https");
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if !ok_scheme {
                attempt.error("redirect to a non-http(s) URL")
            } else if let Err(e) = check_url_host(attempt.url(), allow_private) {
                attempt.error(e)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(policy)
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!("relaycast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok(Self {
            client,
            allow_private,
            max_bytes,
            timeout,
        })
    }

    /// Fetches one image: the body and its sniffed format.
    pub async fn fetch(&self, url: &HttpUrl) -> Result<(Vec<u8>, ImageKind), FetchError> {
        let parsed = url::Url::parse(url.as_str()).map_err(|_| FetchError::BadUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl);
        }
        check_url_host(&parsed, self.allow_private).map_err(FetchError::Refused)?;
        match tokio::time::timeout(self.timeout, self.fetch_checked(parsed)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn fetch_checked(&self, url: url::Url) -> Result<(Vec<u8>, ImageKind), FetchError> {
        let map_err = |e: reqwest::Error| {
            if e.is_timeout() {
                return FetchError::Timeout(self.timeout);
            }
            // The resolver's and redirect policy's refusals come back wrapped; surface them.
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if let Some(t) = s.downcast_ref::<TargetError>() {
                    return FetchError::Refused(t.clone());
                }
                src = s.source();
            }
            FetchError::Http(e.without_url().to_string())
        };
        let mut resp = self.client.get(url).send().await.map_err(map_err)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(FetchError::TooBig {
                limit: self.max_bytes,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map_err)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(FetchError::TooBig {
                    limit: self.max_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let kind = ImageKind::sniff(&body).ok_or(FetchError::NotImage)?;
        Ok((body, kind))
    }
}

/// The watermark images of a session, fetched once each into a temp directory that is deleted
/// when the last [`IngestSpec`] holding it (and this value) is dropped.
#[derive(Debug, Default, Clone)]
pub struct Watermarks {
    dir: Option<Arc<tempfile::TempDir>>,
    images: HashMap<String, WatermarkImage>,
}

impl Watermarks {
    /// Fetches every distinct watermark URL of `sources` (once each, in order). No watermark:
    /// no request and no temp directory.
    pub async fn fetch(
        fetcher: &WatermarkFetcher,
        sources: &[Source],
    ) -> Result<Self, TranscodeError> {
        match tokio::time::timeout(WATERMARKS_TOTAL_TIMEOUT, Self::fetch_all(fetcher, sources))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(TranscodeError::WatermarksTimeout(WATERMARKS_TOTAL_TIMEOUT)),
        }
    }

    async fn fetch_all(
        fetcher: &WatermarkFetcher,
        sources: &[Source],
    ) -> Result<Self, TranscodeError> {
        let mut out = Watermarks::default();
        for url in sources
            .iter()
            .filter_map(|s| s.wm_image.as_ref())
            .flat_map(|w| w.urls())
        {
            if out.images.contains_key(url.as_str()) {
                continue;
            }
            let (bytes, kind) =
                fetcher
                    .fetch(url)
                    .await
                    .map_err(|source| TranscodeError::Watermark {
                        url: redact_url(url.as_str()),
                        source,
                    })?;
            let dir = match &out.dir {
                Some(d) => d.clone(),
                None => {
                    let d = Arc::new(
                        tempfile::Builder::new()
                            .prefix("relaycast-wm-")
                            .tempdir()
                            .map_err(TranscodeError::TempFiles)?,
                    );
                    out.dir = Some(d.clone());
                    d
                }
            };
            // Our own file names: nothing from the URL reaches the path.
            let path = dir
                .path()
                .join(format!("wm{}.{}", out.images.len(), kind.extension()));
            tokio::fs::write(&path, &bytes)
                .await
                .map_err(TranscodeError::TempFiles)?;
            out.images
                .insert(url.as_str().to_string(), WatermarkImage { path, kind });
        }
        Ok(out)
    }

    /// The local image of `url`, if fetched.
    pub fn get(&self, url: &HttpUrl) -> Option<&WatermarkImage> {
        self.images.get(url.as_str())
    }

    /// How many distinct images were fetched.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether no image was fetched.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The temp directory, while it exists.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref().map(tempfile::TempDir::path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relaycast_core::domain::relay::types::{Resolution, SourceUrl, TaskType, WmImages};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn img(i: usize) -> WatermarkImage {
        WatermarkImage {
            path: PathBuf::from(format!("/tmp/wm/wm{i}.png")),
            kind: ImageKind::Png,
        }
    }

    fn x264() -> Fops {
        Fops {
            vcodec: Some(VideoCodec::Libx264),
            ..Fops::default()
        }
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Option<&'a str> {
        a.iter()
            .position(|x| x == flag)
            .and_then(|i| a.get(i + 1))
            .map(String::as_str)
    }

    #[test]
    fn copy_relay_is_unchanged() {
        let o = output_args(
            &Fops::default(),
            &[],
            Placement::Gravity(Gravity::default()),
        )
        .expect("args");
        assert_eq!(o.codec_args, ["-c:v", "copy", "-c:a", "copy"]);
        assert!(o.filter_complex.is_none());
        // And the spec built from it still never decodes.
        let mut spec = IngestSpec::live("rtmp://h/live/a");
        let src = Source::new(SourceUrl::parse("rtmp://h/live/a", TaskType::Live).expect("url"));
        apply(&mut spec, &Fops::default(), &src, &Watermarks::default()).expect("apply");
        let args = spec.args().expect("args");
        assert!(!args
            .iter()
            .any(|a| a == "-filter_complex" || a.starts_with("lib")));
        assert_eq!(args.iter().filter(|a| *a == "-i").count(), 1);
    }

    #[test]
    fn video_encoder_is_x264_veryfast_zerolatency() {
        let o = output_args(&x264(), &[], Placement::Gravity(Gravity::TopRight)).expect("args");
        let a = &o.codec_args;
        assert_eq!(after(a, "-c:v"), Some("libx264"));
        assert_eq!(after(a, "-preset"), Some("veryfast"));
        assert_eq!(after(a, "-tune"), Some("zerolatency"));
        assert_eq!(after(a, "-pix_fmt"), Some("yuv420p"));
        assert_eq!(after(a, "-c:a"), Some("copy"));
        assert!(after(a, "-b:v").is_none() && after(a, "-s").is_none() && after(a, "-r").is_none());
    }

    #[test]
    fn bitrate_size_and_fps() {
        let f = Fops {
            bps: Some(1_200_000),
            res: Some(Resolution {
                width: 640,
                height: 360,
            }),
            fps: Some(29.97),
            ..x264()
        };
        let a = output_args(&f, &[], Placement::Gravity(Gravity::TopRight))
            .expect("args")
            .codec_args;
        assert_eq!(after(&a, "-b:v"), Some("1200000"));
        assert_eq!(after(&a, "-maxrate"), Some("1200000"));
        assert_eq!(after(&a, "-bufsize"), Some("2400000"));
        assert_eq!(after(&a, "-s"), Some("640x360"));
        assert_eq!(after(&a, "-r"), Some("29.97"));
        let f = Fops {
            fps: Some(25.0),
            ..x264()
        };
        assert_eq!(
            after(
                &output_args(&f, &[], Placement::Gravity(Gravity::TopRight))
                    .expect("args")
                    .codec_args,
                "-r"
            ),
            Some("25")
        );
    }

    #[test]
    fn gop_in_frames_at_output_fps_and_by_time() {
        let f = Fops {
            fps: Some(25.0),
            forced_gop_interval_ms: Some(3000),
            ..x264()
        };
        let a = output_args(&f, &[], Placement::Gravity(Gravity::TopRight))
            .expect("args")
            .codec_args;
        assert_eq!(after(&a, "-g"), Some("75"));
        assert_eq!(after(&a, "-keyint_min"), Some("75"));
        assert_eq!(after(&a, "-sc_threshold"), Some("0"));
        assert_eq!(
            after(&a, "-force_key_frames"),
            Some("expr:gte(t,n_forced*3)")
        );
        // No output fps: the time expression alone.
        let f = Fops {
            forced_gop_interval_ms: Some(500),
            ..x264()
        };
        let a = output_args(&f, &[], Placement::Gravity(Gravity::TopRight))
            .expect("args")
            .codec_args;
        assert!(after(&a, "-g").is_none());
        assert_eq!(
            after(&a, "-force_key_frames"),
            Some("expr:gte(t,n_forced*0.5)")
        );
        // Never zero frames.
        let f = Fops {
            fps: Some(10.0),
            forced_gop_interval_ms: Some(1),
            ..x264()
        };
        assert_eq!(
            after(
                &output_args(&f, &[], Placement::Gravity(Gravity::TopRight))
                    .expect("args")
                    .codec_args,
                "-g"
            ),
            Some("1")
        );
    }

    #[test]
    fn audio_encoders() {
        let f = Fops {
            acodec: Some(AudioCodec::Libfaac),
            ..Fops::default()
        };
        let a = output_args(&f, &[], Placement::Gravity(Gravity::TopRight))
            .expect("args")
            .codec_args;
        assert_eq!(a, ["-c:v", "copy", "-c:a", "aac"]);
        let f = Fops {
            acodec: Some(AudioCodec::Libmp3lame),
            ..x264()
        };
        let a = output_args(&f, &[], Placement::Gravity(Gravity::TopRight))
            .expect("args")
            .codec_args;
        assert_eq!(after(&a, "-c:a"), Some("libmp3lame"));
        assert_eq!(after(&a, "-ar"), Some("44100"));
    }

    #[test]
    fn hevc_goes_through_mpegts_and_vorbis_is_refused_clearly() {
        let f = Fops {
            vcodec: Some(VideoCodec::Libx265),
            ..x264()
        };
        let o = output_args(&f, &[], Placement::Gravity(Gravity::TopRight)).expect("x265");
        assert_eq!(o.container, Container::MpegTs);
        assert_eq!(after(&o.codec_args, "-c:v"), Some("libx265"));
        assert_eq!(after(&o.codec_args, "-pix_fmt"), Some("yuv420p"));
        assert_eq!(
            output_args(&x264(), &[], Placement::Gravity(Gravity::TopRight))
                .expect("x264")
                .container,
            Container::Flv
        );
        let f = Fops {
            acodec: Some(AudioCodec::Libvorbis),
            ..Fops::default()
        };
        assert!(matches!(
            output_args(&f, &[], Placement::Gravity(Gravity::TopRight)),
            Err(TranscodeError::NotFlvCompatible("libvorbis", _))
        ));
        assert!(matches!(
            output_args(
                &Fops::default(),
                &[img(0)],
                Placement::Gravity(Gravity::TopRight)
            ),
            Err(TranscodeError::WatermarkNeedsEncoder)
        ));
    }

    #[test]
    fn every_gravity_has_its_position() {
        let want = [
            (Gravity::TopLeft, "x=10:y=10"),
            (Gravity::TopCenter, "x=(W-w)/2:y=10"),
            (Gravity::TopRight, "x=W-w-10:y=10"),
            (Gravity::CenterLeft, "x=10:y=(H-h)/2"),
            (Gravity::Center, "x=(W-w)/2:y=(H-h)/2"),
            (Gravity::CenterRight, "x=W-w-10:y=(H-h)/2"),
            (Gravity::BottomLeft, "x=10:y=H-h-10"),
            (Gravity::BottomCenter, "x=(W-w)/2:y=H-h-10"),
            (Gravity::BottomRight, "x=W-w-10:y=H-h-10"),
        ];
        assert_eq!(want.len(), Gravity::ALL.len());
        for (g, xy) in want {
            assert_eq!(Placement::Gravity(g).overlay_xy(), xy, "{g:?}");
            let o = output_args(&x264(), &[img(0)], Placement::Gravity(g)).expect("args");
            assert_eq!(o.filter_complex.as_deref(), Some(format!("movie=filename=/tmp/wm/wm0.png:format_name=png_pipe[img0];[0:v:0][img0]overlay={xy}[vout]").as_str()));
        }
    }

    #[test]
    fn position_and_default_placement() {
        let p = Placement::Position(WmPosition {
            x_percent: 30,
            y_percent: 40,
        });
        assert_eq!(p.overlay_xy(), "x=W*30/100:y=H*40/100");
        let mut src =
            Source::new(SourceUrl::parse("rtmp://h/live/a", TaskType::Live).expect("url"));
        assert_eq!(Placement::of(&src), Placement::Gravity(Gravity::TopRight));
        src.wm_gravity = Some(Gravity::BottomLeft);
        assert_eq!(Placement::of(&src), Placement::Gravity(Gravity::BottomLeft));
        src.wm_gravity = None;
        src.wm_position = Some(WmPosition {
            x_percent: 5,
            y_percent: 0,
        });
        assert_eq!(
            Placement::of(&src),
            Placement::Position(WmPosition {
                x_percent: 5,
                y_percent: 0
            })
        );
    }

    #[test]
    fn several_images_scale_first_then_stack() {
        let f = Fops {
            res: Some(Resolution {
                width: 640,
                height: 360,
            }),
            ..x264()
        };
        let o = output_args(
            &f,
            &[img(0), img(1), img(2)],
            Placement::Gravity(Gravity::BottomRight),
        )
        .expect("args");
        assert_eq!(
            o.filter_complex.as_deref(),
            Some(concat!(
                "movie=filename=/tmp/wm/wm0.png:format_name=png_pipe[img0];",
                "movie=filename=/tmp/wm/wm1.png:format_name=png_pipe[img1];",
                "movie=filename=/tmp/wm/wm2.png:format_name=png_pipe[img2];",
                "[0:v:0]scale=640:360[base];",
                "[base][img0]overlay=x=W-w-10:y=H-h-10[wm0];",
                "[wm0][img1]overlay=x=W-w-10:y=H-h-10[wm1];",
                "[wm1][img2]overlay=x=W-w-10:y=H-h-10[vout]"
            ))
        );
        // The size is in the graph, not a second scale on the output.
        assert!(after(&o.codec_args, "-s").is_none());
    }

    #[test]
    fn spec_args_with_watermarks() {
        let mut spec = IngestSpec::live("rtmp://h/live/a");
        let f = Fops {
            res: Some(Resolution {
                width: 640,
                height: 360,
            }),
            fps: Some(25.0),
            ..x264()
        };
        let o = output_args(
            &f,
            &[
                img(0),
                WatermarkImage {
                    path: "/tmp/wm/wm1.jpg".into(),
                    kind: ImageKind::Jpeg,
                },
            ],
            Placement::Gravity(Gravity::TopLeft),
        )
        .expect("args");
        spec.codec_args = o.codec_args;
        spec.filter_complex = o.filter_complex;
        let a = spec.args().expect("args").join(" ");
        // One input only (see IngestSpec::filter_complex); the images come in through `movie`
        // with a pinned demuxer.
        assert_eq!(a.matches("-i ").count(), 1, "{a}");
        assert!(a.contains("-protocol_whitelist tcp,rtmp -rw_timeout 5000000 -probesize 65536 -i rtmp://h/live/a"), "{a}");
        assert!(a.contains("-filter_complex movie=filename=/tmp/wm/wm0.png:format_name=png_pipe[img0];movie=filename=/tmp/wm/wm1.jpg:format_name=jpeg_pipe[img1];[0:v:0]scale=640:360[base];[base][img0]overlay=x=10:y=10[wm0];[wm0][img1]overlay=x=10:y=10[vout] -map [vout] -map 0:a:0?"), "{a}");
        assert!(!a.contains("0:v:0?"), "{a}");
        assert!(a.ends_with("-f flv -flvflags no_duration_filesize"), "{a}");
    }

    #[test]
    fn paths_with_filter_syntax_are_refused() {
        for bad in [
            "/tmp/a:b/wm0.png",
            "/tmp/a,b.png",
            "/tmp/x;y.png",
            "tmp/rel.png",
            "/tmp/[x].png",
            "/tmp/it's.png",
            "/tmp/a b.png",
        ] {
            let i = WatermarkImage {
                path: bad.into(),
                kind: ImageKind::Png,
            };
            assert!(
                matches!(
                    output_args(&x264(), &[i], Placement::Gravity(Gravity::TopRight)),
                    Err(TranscodeError::UnsafePath(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_the_encoder_listing() {
        let listing = "Encoders:\n V..... = Video\n ------\n V....D libx264              libx264 H.264\n A..... aac                  AAC\n A....D libmp3lame           MP3\n";
        let e = parse_encoders(listing);
        assert!(e.contains("libx264") && e.contains("aac") && e.contains("libmp3lame"));
        assert!(!e.contains("V.....") && !e.contains("Video"));
    }

    #[tokio::test]
    async fn system_ffmpeg_has_what_the_mapping_needs() {
        crate::require_peers!(Ffmpeg);
        let ffmpeg = Path::new(crate::process::DEFAULT_FFMPEG);
        let f = Fops {
            vcodec: Some(VideoCodec::Libx264),
            acodec: Some(AudioCodec::Libfaac),
            ..Fops::default()
        };
        check_encoders(ffmpeg, &f).await.expect("libx264 + aac");
        let f = Fops {
            acodec: Some(AudioCodec::Libmp3lame),
            ..Fops::default()
        };
        check_encoders(ffmpeg, &f).await.expect("libmp3lame");
        check_encoders(Path::new("/nonexistent/ffmpeg"), &Fops::default())
            .await
            .expect("copy needs nothing");
        assert!(matches!(
            check_encoders(Path::new("/nonexistent/ffmpeg"), &f).await,
            Err(TranscodeError::EncoderProbe { .. })
        ));
    }

    #[test]
    fn sniffs_png_and_jpeg_only() {
        assert_eq!(
            ImageKind::sniff(b"\x89PNG\r\n\x1a\n...."),
            Some(ImageKind::Png)
        );
        assert_eq!(
            ImageKind::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageKind::Jpeg)
        );
        for bad in [&b"GIF89a"[..], b"<html>", b"", b"\x89PN"] {
            assert_eq!(ImageKind::sniff(bad), None);
        }
    }

    /// A one-route-per-path HTTP/1.0 server on 127.0.0.1 for the fetcher tests.
    async fn serve(
        routes: Vec<(&'static str, u16, Vec<u8>)>,
    ) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let routes = Arc::new(routes);
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&got);
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, body) = match routes.iter().find(|(p, _, _)| *p == path) {
                        Some((_, s, b)) => (*s, b.clone()),
                        None => (404, b"not found".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.0 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                });
            }
        });
        (port, task)
    }

    fn png(len: usize) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.resize(len.max(8), 0);
        v
    }

    #[tokio::test]
    async fn fetcher_accepts_images_and_refuses_the_rest() {
        let (port, server) = serve(vec![
            ("/ok.png", 200, png(100)),
            ("/ok.jpg", 200, vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]),
            ("/big.png", 200, png(2000)),
            ("/page.png", 200, b"<html>hi</html>".to_vec()),
            ("/err.png", 500, png(100)),
        ])
        .await;
        let u = |p: &str| {
            HttpUrl::parse(&format!("http://127.0.0.1:{port}{p}"), "wmImage").expect("url")
        };
        let f = WatermarkFetcher::with_limits(true, 1000, Duration::from_secs(5)).expect("client");
        assert_eq!(f.fetch(&u("/ok.png")).await.expect("png").1, ImageKind::Png);
        assert_eq!(
            f.fetch(&u("/ok.jpg")).await.expect("jpeg").1,
            ImageKind::Jpeg
        );
        assert!(matches!(
            f.fetch(&u("/big.png")).await,
            Err(FetchError::TooBig { limit: 1000 })
        ));
        assert!(matches!(
            f.fetch(&u("/page.png")).await,
            Err(FetchError::NotImage)
        ));
        assert!(matches!(
            f.fetch(&u("/missing.png")).await,
            Err(FetchError::Status(404))
        ));
        assert!(matches!(
            f.fetch(&u("/err.png")).await,
            Err(FetchError::Status(500))
        ));
        // Internal addresses: refused before any connection unless the operator allows them.
        let strict = WatermarkFetcher::new(false).expect("client");
        assert!(matches!(
            strict.fetch(&u("/ok.png")).await,
            Err(FetchError::Refused(_))
        ));
        for url in [
            "http://localhost:1/x.png",
            "http://169.254.169.254/latest/x.png",
            "http://[::1]:1/x.png",
            "http://10.0.0.1/x.png",
        ] {
            let url = HttpUrl::parse(url, "wmImage").expect("url");
            assert!(
                matches!(strict.fetch(&url).await, Err(FetchError::Refused(_))),
                "{url}"
            );
        }
        server.abort();
    }

    #[tokio::test]
    async fn resolver_refuses_names_that_resolve_inside() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let r = GuardedResolver {
            allow_private: false,
        };
        let name = reqwest::dns::Name::from_str("localhost").expect("name");
        assert!(r.resolve(name).await.is_err());
        let r = GuardedResolver {
            allow_private: true,
        };
        let name = reqwest::dns::Name::from_str("localhost").expect("name");
        assert!(r.resolve(name).await.is_ok());
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Accepts and never answers.
        let hold = tokio::spawn(async move {
            let mut socks = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                socks.push(s);
            }
        });
        let f =
            WatermarkFetcher::with_limits(true, 1000, Duration::from_millis(300)).expect("client");
        let url =
            HttpUrl::parse(&format!("http://127.0.0.1:{port}/slow.png"), "wmImage").expect("url");
        assert!(matches!(f.fetch(&url).await, Err(FetchError::Timeout(_))));
        hold.abort();
    }

    #[tokio::test]
    async fn each_url_is_fetched_once_and_files_go_with_the_last_owner() {
        let (port, server) = serve(vec![
            ("/a.png", 200, png(64)),
            ("/b.jpg", 200, vec![0xFF, 0xD8, 0xFF, 0]),
        ])
        .await;
        let base = format!("http://127.0.0.1:{port}");
        let mk = |wm: &str| {
            let mut s =
                Source::new(SourceUrl::parse("rtmp://h/live/a", TaskType::Live).expect("url"));
            s.wm_image = Some(WmImages::parse(wm).expect("wm"));
            s
        };
        let a = mk(&format!("{base}/a.png;{base}/b.jpg"));
        let b = mk(&format!("{base}/a.png"));
        let f = WatermarkFetcher::new(true).expect("client");
        let wms = Watermarks::fetch(&f, &[a.clone(), b.clone()])
            .await
            .expect("fetch");
        assert_eq!(wms.len(), 2);
        let dir = wms.dir().expect("dir").to_path_buf();
        let names: HashSet<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            HashSet::from(["wm0.png".to_string(), "wm1.jpg".to_string()])
        );
        let mut spec = IngestSpec::live("rtmp://h/live/a");
        apply(&mut spec, &x264(), &a, &wms).expect("apply");
        let graph = spec.filter_complex.clone().expect("graph");
        assert!(
            graph.contains(&format!("{}/wm0.png", dir.display()))
                && graph.contains(&format!("{}/wm1.jpg", dir.display())),
            "{graph}"
        );
        drop(wms);
        assert!(dir.exists(), "the spec keeps the files");
        drop(spec);
        assert!(!dir.exists(), "deleted with the last owner");
        // A failing image fails the whole set, naming the image without its query.
        let c = mk(&format!("{base}/nope.png?token=secret"));
        let e = Watermarks::fetch(&f, &[c]).await.expect_err("404");
        assert!(
            e.to_string().contains("/nope.png?***") && !e.to_string().contains("secret"),
            "{e}"
        );
        server.abort();
    }
}
