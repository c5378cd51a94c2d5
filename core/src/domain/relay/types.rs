//! Values parsed at the boundary: once one of these exists it is valid, so the state machine and
//! the workers never re-check. Each stores the text the client sent (stop requests must match
//! destination URLs exactly, and the query echoes sources back as sent) and deserializes through
//! the same parser, so a stored record cannot smuggle in what the API would refuse.
//!
//! URLs are untrusted input that ends up on an ffmpeg command line: every URL type here has a
//! scheme allow-list (never `file:`, `concat:`, `subfile:`, `data:`, `pipe:`, …), requires a host,
//! and refuses whitespace and control characters.

use serde::{Deserialize, Serialize};

use crate::domain::error::RequestError;

/// The longest URL accepted anywhere, in bytes.
pub const MAX_URL_LEN: usize = 4096;

/// A task id: 1 to 32 characters of `[A-Za-z0-9_-]`. The seed only bounds the length; the
/// charset keeps ids safe in store keys (`{account}:{id}`), file names and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// The longest id (seed: "최대 32자").
    pub const MAX_LEN: usize = 32;

    /// Empty → `params id가 비어 있습니다`; too long or another character → `params id format
    /// is error`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        if s.is_empty() {
            return Err(RequestError::EmptyId);
        }
        let ok = s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(RequestError::field("id"))
        }
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TaskId {
    type Error = RequestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(v: TaskId) -> Self {
        v.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The content type of a task: a live stream or a playlist of files (VOD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    /// `live`: relay a live stream.
    Live,
    /// `video`: play files as a live channel.
    Video,
}

impl TaskType {
    /// `live` or `video`, else `type이 잘못되었습니다`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        match s {
            "live" => Ok(Self::Live),
            "video" => Ok(Self::Video),
            _ => Err(RequestError::BadType),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Video => "video",
        }
    }
}

/// The `cmd` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Cmd {
    /// `1`: create and start tasks.
    Create,
    /// `2`: stop tasks (or some of their destinations).
    Stop,
    /// `3`: replace the sources of running tasks.
    Update,
    /// `5`: resume stopped tasks.
    Resume,
}

impl Cmd {
    /// `1`, `2`, `3` or `5`, else `cmd가 잘못되었습니다`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        match s {
            "1" => Ok(Self::Create),
            "2" => Ok(Self::Stop),
            "3" => Ok(Self::Update),
            "5" => Ok(Self::Resume),
            _ => Err(RequestError::BadCmd),
        }
    }

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "1",
            Self::Stop => "2",
            Self::Update => "3",
            Self::Resume => "5",
        }
    }
}

impl TryFrom<String> for Cmd {
    type Error = RequestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Cmd> for String {
    fn from(v: Cmd) -> Self {
        v.as_str().to_string()
    }
}

/// Parses `s` as a URL whose scheme is in `schemes`, with a host, of at most [`MAX_URL_LEN`]
/// bytes and without whitespace or control characters. `None` when any of that fails.
fn checked_url(s: &str, schemes: &[&str]) -> Option<url::Url> {
    if s.is_empty()
        || s.len() > MAX_URL_LEN
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let u = url::Url::parse(s).ok()?;
    if !schemes.contains(&u.scheme()) {
        return None;
    }
    match u.host_str() {
        Some(h) if !h.is_empty() => Some(u),
        _ => None,
    }
}

/// Whether `host` (as [`SourceUrl::host`] etc. return it) names this machine or a private,
/// link-local or otherwise internal network: a relay that pulls from or pushes to those on a
/// user's say-so is a request-forgery tool. The API refuses such URLs unless the operator allows
/// them; a public name that resolves to an internal address is refused at connect time.
pub fn host_is_internal(host: &str) -> bool {
    crate::domain::targets::host_is_internal(host)
}

/// Source schemes for live tasks: RTMP(S), HLS and HTTP-FLV over HTTP(S), RTSP.
pub const LIVE_SOURCE_SCHEMES: &[&str] = &["rtmp", "rtmps", "http", "https", "rtsp"];
/// Source schemes for VOD tasks: files over HTTP(S) (MP4, FLV, HLS).
pub const VIDEO_SOURCE_SCHEMES: &[&str] = &["http", "https"];

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The URL as sent.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether the host is internal (see [`host_is_internal`]).
            pub fn is_internal(&self) -> bool {
                host_is_internal(&self.host())
            }

            /// The host (without port), lower-cased.
            pub fn host(&self) -> String {
                url::Url::parse(&self.0)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                    .unwrap_or_default()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> Self {
                v.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A source URL, checked against the allow-list of its task type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceUrl(String);
string_newtype!(SourceUrl);

impl SourceUrl {
    /// A source of a task of type `ty`; `params src is error` otherwise.
    pub fn parse(s: &str, ty: TaskType) -> Result<Self, RequestError> {
        let schemes = match ty {
            TaskType::Live => LIVE_SOURCE_SCHEMES,
            TaskType::Video => VIDEO_SOURCE_SCHEMES,
        };
        checked_url(s, schemes)
            .map(|_| Self(s.to_string()))
            .ok_or(RequestError::BadSrc)
    }
}

impl TryFrom<String> for SourceUrl {
    type Error = RequestError;
    /// Stored sources were checked against their type on the way in; re-check against the union.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s, TaskType::Live)
    }
}

/// An RTMP(S) URL: a destination (seed: "전송 대상은 RTMP 프로토콜만 지원됩니다"), or an `rtmp://`
/// source that the relay plays natively. The one parser of RTMP URLs: the API, the pushers and
/// the native pull all use it, so whatever the API accepts a pusher can connect to.
///
/// Form: `rtmp[s]://host[:port]/app[/more]/stream[?query]`, no user info, a port in 1–65535
/// (default 1935, or 443 for `rtmps`). The app is every path segment but the last; the stream
/// key is the last segment plus the query string, which many CDNs use for authentication.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RtmpUrl {
    url: String,
    host: String,
    port: u16,
    tls: bool,
    app: String,
    stream_key: String,
}

impl RtmpUrl {
    /// `params forward is error` unless a usable `rtmp://` or `rtmps://` URL (see the type).
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        Self::parse_parts(s).map_err(|_| RequestError::BadForward)
    }

    /// Like [`RtmpUrl::parse`], saying what is wrong: for workers that report a bad URL in a
    /// callback message or a log line.
    pub fn parse_parts(s: &str) -> Result<Self, &'static str> {
        checked_url(s, &["rtmp", "rtmps"]).ok_or("not an rtmp:// or rtmps:// URL with a host")?;
        let lower = s.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
        let (tls, rest) = if lower.starts_with("rtmp://") {
            (false, &s[7..])
        } else if lower.starts_with("rtmps://") {
            (true, &s[8..])
        } else {
            return Err("scheme must be rtmp:// or rtmps://");
        };
        let default_port = if tls { 443 } else { 1935 };
        let (authority, path) = rest.split_once('/').ok_or("missing app/stream")?;
        if authority.contains('@') {
            return Err("user info is not supported");
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or("unterminated IPv6 host")?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if after.is_empty() => default_port,
                None => return Err("invalid host"),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, parse_port(p)?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err("missing host");
        }
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let path = path.trim_end_matches('/');
        let (app, stream) = path.rsplit_once('/').ok_or("missing stream key")?;
        if app.is_empty() || stream.is_empty() || app.split('/').any(str::is_empty) {
            return Err("missing app or stream key");
        }
        let stream_key = match query {
            Some(q) if !q.is_empty() => format!("{stream}?{q}"),
            _ => stream.to_string(),
        };
        Ok(Self {
            url: s.to_string(),
            host: host.to_ascii_lowercase(),
            port,
            tls,
            app: app.to_string(),
            stream_key,
        })
    }

    /// The URL as sent (a destination's identity: stop requests match it exactly).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host, lower-cased, without brackets for IPv6.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtmps`: RTMP inside TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The RTMP application.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The stream key, with the query string.
    pub fn stream_key(&self) -> &str {
        &self.stream_key
    }

    /// `host:port` for connecting (`[v6]:port` for IPv6).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `tcUrl` of the RTMP `connect`: scheme, address and app.
    pub fn tc_url(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        format!("{scheme}://{}/{}", self.addr(), self.app)
    }

    /// The URL without its stream key (which is a credential), for logs and messages.
    pub fn redacted(&self) -> String {
        format!("{}/***", self.tc_url())
    }

    /// Whether the host is internal (see [`host_is_internal`]), numeric forms such as `0` or
    /// `0x7f.1` included.
    pub fn is_internal(&self) -> bool {
        host_is_internal(&self.host)
    }
}

/// A URL for logs, errors and callback messages, without the parts that are often
/// credentials: user info and the query string (shown as `?***`), and for an RTMP URL the
/// stream key as well ([`RtmpUrl::redacted`]). The one redactor: every layer that names a
/// user's URL goes through it. Anything that is not a URL (a local path) is kept as is.
pub fn redact_url(url: &str) -> String {
    if let Ok(u) = RtmpUrl::parse_parts(url) {
        return u.redacted();
    }
    let (without_query, had_query) = match url.split_once('?') {
        Some((u, _)) => (u, true),
        None => (url, false),
    };
    let mut out = match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = match rest.split_once('/') {
                Some((auth, path)) => {
                    let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
                    format!("{host}/{path}")
                }
                None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
            };
            format!("{scheme}://{rest}")
        }
        None => without_query.to_string(),
    };
    if had_query {
        out.push_str("?***");
    }
    out
}

fn parse_port(p: &str) -> Result<u16, &'static str> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err("invalid port"),
        Ok(port) => Ok(port),
    }
}

/// Shows the URL without its stream key.
impl std::fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtmpUrl({})", self.redacted())
    }
}

impl std::fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl From<RtmpUrl> for String {
    fn from(v: RtmpUrl) -> Self {
        v.url
    }
}

impl TryFrom<String> for RtmpUrl {
    type Error = RequestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

/// An `http://` or `https://` URL (callback URLs, watermark images).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(String);
string_newtype!(HttpUrl);

impl HttpUrl {
    /// `params {field} format is error` unless an HTTP(S) URL with a host.
    pub fn parse(s: &str, field: &str) -> Result<Self, RequestError> {
        checked_url(s, &["http", "https"])
            .map(|_| Self(s.to_string()))
            .ok_or_else(|| RequestError::field(field))
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = RequestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s, "url")
    }
}

/// One or more watermark images, `;`-separated on the wire (empty segments are skipped, so a
/// trailing `;` is harmless). At most [`WmImages::MAX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WmImages(Vec<HttpUrl>);

impl WmImages {
    /// The most images per source: each is an overlay in the ffmpeg filter graph.
    pub const MAX: usize = 8;

    /// `params wmImage format is error` unless 1..=8 HTTP(S) URLs.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        let urls = s
            .split(';')
            .filter(|p| !p.is_empty())
            .map(|p| HttpUrl::parse(p, "wmImage"))
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() || urls.len() > Self::MAX {
            return Err(RequestError::field("wmImage"));
        }
        Ok(Self(urls))
    }

    /// The images.
    pub fn urls(&self) -> &[HttpUrl] {
        &self.0
    }
}

impl TryFrom<String> for WmImages {
    type Error = RequestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<WmImages> for String {
    fn from(v: WmImages) -> Self {
        v.0.iter()
            .map(HttpUrl::as_str)
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Where a watermark is anchored (seed: nine names, default `TOP_RIGHT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum Gravity {
    TopLeft,
    TopCenter,
    #[default]
    TopRight,
    CenterLeft,
    Center,
    CenterRight,
    BottomLeft,
    BottomCenter,
    BottomRight,
}

impl Gravity {
    /// All nine, in wire-name order of the seed.
    pub const ALL: [Gravity; 9] = [
        Self::TopLeft,
        Self::TopCenter,
        Self::TopRight,
        Self::CenterLeft,
        Self::Center,
        Self::CenterRight,
        Self::BottomLeft,
        Self::BottomCenter,
        Self::BottomRight,
    ];

    /// The wire name, e.g. `TOP_LEFT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TopLeft => "TOP_LEFT",
            Self::TopCenter => "TOP_CENTER",
            Self::TopRight => "TOP_RIGHT",
            Self::CenterLeft => "CENTER_LEFT",
            Self::Center => "CENTER",
            Self::CenterRight => "CENTER_RIGHT",
            Self::BottomLeft => "BOTTOM_LEFT",
            Self::BottomCenter => "BOTTOM_CENTER",
            Self::BottomRight => "BOTTOM_RIGHT",
        }
    }

    /// One of the nine names exactly (case-sensitive, as documented), else `params wmGravity
    /// format is error`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| RequestError::field("wmGravity"))
    }
}

/// A watermark's top-left corner in percent of the frame: `W%xH%`, each an integer 0..=99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WmPosition {
    /// Percent from the left edge.
    pub x_percent: u8,
    /// Percent from the top edge.
    pub y_percent: u8,
}

impl WmPosition {
    /// `30%x40%` style, else `params wmPosition format is error`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        let err = || RequestError::field("wmPosition");
        let (w, h) = s.split_once('x').ok_or_else(err)?;
        let pct = |p: &str| -> Option<u8> {
            let digits = p.strip_suffix('%')?;
            (!digits.is_empty() && digits.len() <= 2 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        };
        Ok(Self {
            x_percent: pct(w).ok_or_else(err)?,
            y_percent: pct(h).ok_or_else(err)?,
        })
    }
}

impl TryFrom<String> for WmPosition {
    type Error = RequestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<WmPosition> for String {
    fn from(v: WmPosition) -> Self {
        format!("{}%x{}%", v.x_percent, v.y_percent)
    }
}

/// Parses 1..=`max_digits` ASCII digits (no sign, no spaces).
pub(crate) fn parse_digits(s: &str, max_digits: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a non-negative decimal such as `25` or `29.97` (digits, at most one dot).
fn parse_decimal(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let ok = !int.is_empty()
        && s.len() <= 12
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(s.contains('.') && frac.is_empty());
    if !ok {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A relative time window in seconds, `a-b`.
///
/// - `video`: the part `a..b` of each file is played (`0 ≤ a < b`);
/// - `live`: `0-N`, the stream is relayed for `N > 0` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelOffTime {
    /// First second.
    pub start_s: u64,
    /// Last second (exclusive).
    pub end_s: u64,
}

impl RelOffTime {
    /// The format of `ty`, else `params relofftime is error`.
    pub fn parse(s: &str, ty: TaskType) -> Result<Self, RequestError> {
        let v = Self::parse_any(s)?;
        if ty == TaskType::Live && v.start_s != 0 {
            return Err(RequestError::BadRelOffTime);
        }
        Ok(v)
    }

    /// `a-b` with `a < b`, each at most 9 digits (about 31 years).
    fn parse_any(s: &str) -> Result<Self, RequestError> {
        let (a, b) = s.split_once('-').ok_or(RequestError::BadRelOffTime)?;
        match (parse_digits(a, 9), parse_digits(b, 9)) {
            (Some(start_s), Some(end_s)) if start_s < end_s => Ok(Self { start_s, end_s }),
            _ => Err(RequestError::BadRelOffTime),
        }
    }
}

impl TryFrom<String> for RelOffTime {
    type Error = RequestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse_any(&s)
    }
}

impl From<RelOffTime> for String {
    fn from(v: RelOffTime) -> Self {
        format!("{}-{}", v.start_s, v.end_s)
    }
}

/// A header sent when pulling a source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullHeader {
    /// The name: an HTTP token.
    pub header_key: String,
    /// The value: no `'`, `"`, `;;`, `,` nor control characters (CR/LF would split headers on
    /// ffmpeg's `-headers`, quotes and commas break its option parsing).
    pub header_value: String,
}

impl PullHeader {
    /// The most bytes all of a source's headers may take, as JSON (seed: 2 KB).
    pub const MAX_TOTAL_BYTES: usize = 2048;

    /// `params pullStreamHeaders format is error` unless the key is a non-empty HTTP token and
    /// the value free of forbidden characters.
    pub fn new(key: &str, value: &str) -> Result<Self, RequestError> {
        let err = || RequestError::field("pullStreamHeaders");
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if key.is_empty() || !key.bytes().all(token) {
            return Err(err());
        }
        let bad_char = value
            .chars()
            .any(|c| c.is_control() || matches!(c, '\'' | '"' | ','));
        if bad_char || value.contains(";;") {
            return Err(err());
        }
        Ok(Self {
            header_key: key.to_string(),
            header_value: value.to_string(),
        })
    }
}

/// A source of a task, with its per-source options. Serializes to the wire shape (camelCase,
/// absent options left out), which is also what the query's `src` and the callback's `srcurl`
/// echo as a JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Where to pull from.
    pub url: SourceUrl,
    /// Watermark images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wm_image: Option<WmImages>,
    /// Watermark anchor (exclusive with `wm_position`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wm_gravity: Option<Gravity>,
    /// Watermark position (exclusive with `wm_gravity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wm_position: Option<WmPosition>,
    /// Relative time window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relofftime: Option<RelOffTime>,
    /// Headers for the pull.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_stream_headers: Vec<PullHeader>,
}

impl Source {
    /// A bare source.
    pub fn new(url: SourceUrl) -> Self {
        Self {
            url,
            wm_image: None,
            wm_gravity: None,
            wm_position: None,
            relofftime: None,
            pull_stream_headers: Vec::new(),
        }
    }
}

/// A target resolution `<w>x<h>` (lower-case `x`, as the seed insists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resolution {
    /// Width in pixels, 16..=7680.
    pub width: u32,
    /// Height in pixels, 16..=4320.
    pub height: u32,
}

impl Resolution {
    /// `1280x720` style, else `params res format is error` (so is `1280X720`).
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        let err = || RequestError::field("res");
        let (w, h) = s.split_once('x').ok_or_else(err)?;
        let (w, h) = (
            parse_digits(w, 5).ok_or_else(err)?,
            parse_digits(h, 5).ok_or_else(err)?,
        );
        if !(16..=7680).contains(&w) || !(16..=4320).contains(&h) {
            return Err(err());
        }
        Ok(Self {
            width: w as u32,
            height: h as u32,
        })
    }
}

/// Output video codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// H.264.
    Libx264,
    /// H.265.
    Libx265,
}

impl VideoCodec {
    /// `libx264` or `libx265`, else `params vcodec format is error`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        match s {
            "libx264" => Ok(Self::Libx264),
            "libx265" => Ok(Self::Libx265),
            _ => Err(RequestError::field("vcodec")),
        }
    }

    /// The ffmpeg encoder name.
    pub fn ffmpeg_name(self) -> &'static str {
        match self {
            Self::Libx264 => "libx264",
            Self::Libx265 => "libx265",
        }
    }
}

/// Output audio codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    /// MP3.
    Libmp3lame,
    /// AAC (named after the old libfaac encoder on the wire).
    Libfaac,
    /// Vorbis.
    Libvorbis,
}

impl AudioCodec {
    /// `libmp3lame`, `libfaac` or `libvorbis`, else `params acodec format is error`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        match s {
            "libmp3lame" => Ok(Self::Libmp3lame),
            "libfaac" => Ok(Self::Libfaac),
            "libvorbis" => Ok(Self::Libvorbis),
            _ => Err(RequestError::field("acodec")),
        }
    }

    /// The ffmpeg encoder: `libfaac` was removed from ffmpeg, its native `aac` replaces it.
    pub fn ffmpeg_name(self) -> &'static str {
        match self {
            Self::Libmp3lame => "libmp3lame",
            Self::Libfaac => "aac",
            Self::Libvorbis => "libvorbis",
        }
    }
}

/// Transcoding options (`fops`). All optional; none means the streams are copied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fops {
    /// Video bitrate, bps (1..=100,000,000).
    pub bps: Option<u64>,
    /// Output size.
    pub res: Option<Resolution>,
    /// Frame rate (0 < fps ≤ 240, decimals allowed: 29.97).
    pub fps: Option<f64>,
    /// Video encoder; required by any transcoding option and by a watermark.
    pub vcodec: Option<VideoCodec>,
    /// Audio encoder.
    pub acodec: Option<AudioCodec>,
    /// Buffer for HLS sources, seconds (0..=300).
    pub buffer_time_s: Option<f64>,
    /// Keyframe interval, ms (1..=600,000).
    pub forced_gop_interval_ms: Option<u32>,
}

impl Fops {
    /// Whether a video re-encode is asked for by a parameter other than `vcodec`: `bps`, `res`,
    /// `fps` and `forced_gopInterval` all need an encoder, so they need `vcodec` (seed note 3).
    /// `acodec` and `bufferTime` do not touch the video.
    pub fn needs_video_encoder(&self) -> bool {
        self.bps.is_some()
            || self.res.is_some()
            || self.fps.is_some()
            || self.forced_gop_interval_ms.is_some()
    }

    pub(crate) fn parse_bps(s: &str) -> Result<u64, RequestError> {
        parse_digits(s, 9)
            .filter(|v| (1..=100_000_000).contains(v))
            .ok_or_else(|| RequestError::field("bps"))
    }

    pub(crate) fn parse_fps(s: &str) -> Result<f64, RequestError> {
        parse_decimal(s)
            .filter(|v| *v > 0.0 && *v <= 240.0)
            .ok_or_else(|| RequestError::field("fps"))
    }

    pub(crate) fn parse_buffer_time(s: &str) -> Result<f64, RequestError> {
        parse_decimal(s)
            .filter(|v| *v <= 300.0)
            .ok_or_else(|| RequestError::field("bufferTime"))
    }

    pub(crate) fn parse_gop(s: &str) -> Result<u32, RequestError> {
        parse_digits(s, 6)
            .filter(|v| (1..=600_000).contains(v))
            .map(|v| v as u32)
            .ok_or_else(|| RequestError::field("forced_gopInterval"))
    }
}

/// How many times a VOD playlist plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoopCount {
    /// This many times, 1..=100.
    Times(u32),
    /// Until stopped or `end` (`-1`).
    Forever,
}

impl Default for LoopCount {
    fn default() -> Self {
        Self::Times(1)
    }
}

impl LoopCount {
    /// `1`..=`100` or `-1`, else `params loop format is error`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        if s == "-1" {
            return Ok(Self::Forever);
        }
        parse_digits(s, 3)
            .filter(|v| (1..=100).contains(v))
            .map(|v| Self::Times(v as u32))
            .ok_or_else(|| RequestError::field("loop"))
    }
}

/// Behaviour tuning (`extendParam`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendParam {
    /// On a `cmd=3` update of a VOD task, let the current file finish first.
    pub wait_current_finish: bool,
    /// VOD playlist repetitions.
    pub loop_count: LoopCount,
    /// The 1-based playlist position to start at (VOD).
    pub start_index: Option<u32>,
    /// relaycast extension `autoSwitchBack`: a live task running on a backup goes back to the
    /// primary on its own once the primary has delivered for this many seconds (1..=3600).
    /// `None` (absent or 0): only a `cmd=3` switches back, as in the seed.
    #[serde(default)]
    pub auto_switch_back_s: Option<u32>,
}

impl ExtendParam {
    /// The most seconds `autoSwitchBack` may wait.
    pub const MAX_AUTO_SWITCH_BACK_S: u32 = 3600;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_short_and_safe() {
        assert_eq!(
            TaskId::parse("task_unique_id_001").unwrap().as_str(),
            "task_unique_id_001"
        );
        assert!(TaskId::parse(&"a".repeat(32)).is_ok());
        assert_eq!(TaskId::parse(""), Err(RequestError::EmptyId));
        for bad in [
            "a".repeat(33),
            "a:b".into(),
            "a b".into(),
            "../x".into(),
            "é".into(),
            "a\n".into(),
        ] {
            assert_eq!(
                TaskId::parse(&bad).unwrap_err().msg(),
                "params id format is error",
                "{bad:?}"
            );
        }
        assert!(serde_json::from_str::<TaskId>("\"a:b\"").is_err());
    }

    #[test]
    fn cmd_and_type_parse_only_their_values() {
        assert_eq!(Cmd::parse("5"), Ok(Cmd::Resume));
        for bad in ["4", "0", "01", " 1", ""] {
            assert_eq!(Cmd::parse(bad), Err(RequestError::BadCmd));
        }
        assert_eq!(TaskType::parse("video"), Ok(TaskType::Video));
        assert_eq!(TaskType::parse("Live"), Err(RequestError::BadType));
        assert_eq!(serde_json::to_string(&Cmd::Update).unwrap(), "\"3\"");
    }

    #[test]
    fn source_schemes_depend_on_the_type() {
        for ok in [
            "rtmp://h/live/s",
            "rtmps://h/app/s",
            "http://h/a.flv",
            "https://h/a.m3u8",
            "rtsp://h:554/s",
        ] {
            assert!(SourceUrl::parse(ok, TaskType::Live).is_ok(), "{ok}");
        }
        assert!(SourceUrl::parse("http://h/a.mp4", TaskType::Video).is_ok());
        assert_eq!(
            SourceUrl::parse("rtmp://h/live/s", TaskType::Video),
            Err(RequestError::BadSrc)
        );
    }

    #[test]
    fn dangerous_source_urls_never_pass() {
        for bad in [
            "file:///etc/passwd",
            "concat:http://a|http://b",
            "subfile:,,start,0,end,0,,:http://h/x",
            "data:video/mp4;base64,AAAA",
            "pipe:0",
            "/etc/passwd",
            "http://h/a b.flv",
            "http://h/a\r\nX: y",
            "http://h/\u{7f}",
            "rtmp:relative",
            "http://",
            "",
            "HTTP ://h/x",
        ] {
            assert_eq!(
                SourceUrl::parse(bad, TaskType::Live),
                Err(RequestError::BadSrc),
                "{bad:?}"
            );
        }
        assert!(SourceUrl::parse(
            &format!("http://h/{}", "a".repeat(MAX_URL_LEN)),
            TaskType::Live
        )
        .is_err());
    }

    #[test]
    fn internal_hosts_are_recognised() {
        for h in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "localhost",
            "a.localhost",
            "metadata.google.internal",
            "[::1]",
            "[fe80::1]",
            "[fd00::1]",
            "[::ffff:10.0.0.1]",
            "LOCALHOST.",
        ] {
            assert!(host_is_internal(h), "{h}");
        }
        for h in [
            "8.8.8.8",
            "example.com",
            "100.128.0.1",
            "[2606:4700::1111]",
            "push.example.com",
        ] {
            assert!(!host_is_internal(h), "{h}");
        }
        assert!(RtmpUrl::parse("rtmp://127.0.0.1:1935/live/x")
            .unwrap()
            .is_internal());
        assert!(
            SourceUrl::parse("http://169.254.169.254/latest/meta-data", TaskType::Live)
                .unwrap()
                .is_internal()
        );
        assert!(!HttpUrl::parse("https://cb.example.com/x", "u")
            .unwrap()
            .is_internal());
    }

    #[test]
    fn destinations_are_rtmp_only() {
        let d = RtmpUrl::parse("rtmp://127.0.0.1:1935/live/output1").unwrap();
        assert_eq!(d.host(), "127.0.0.1");
        let d = RtmpUrl::parse("rtmps://Push.Example.com/app/key?x=1").unwrap();
        assert_eq!(
            (d.host(), d.port(), d.tls(), d.app(), d.stream_key()),
            ("push.example.com", 443, true, "app", "key?x=1")
        );
        assert_eq!(d.tc_url(), "rtmps://push.example.com:443/app");
        assert_eq!(d.redacted(), "rtmps://push.example.com:443/app/***");
        assert_eq!(redact_url(d.as_str()), d.redacted());
        assert_eq!(
            redact_url("https://user:pw@cdn.example/live/a.m3u8?token=x"),
            "https://cdn.example/live/a.m3u8?***"
        );
        assert_eq!(redact_url("http://u@h"), "http://h");
        assert_eq!(redact_url("/srv/media/a.mp4"), "/srv/media/a.mp4");
        assert!(!format!("{d:?}").contains("key?x=1"));
        let d = RtmpUrl::parse("rtmp://h/app/inst/key/").unwrap();
        assert_eq!(
            (d.app(), d.stream_key(), d.port()),
            ("app/inst", "key", 1935)
        );
        let d = RtmpUrl::parse("rtmp://[::1]:1936/live/k").unwrap();
        assert_eq!((d.host(), d.addr()), ("::1", "[::1]:1936".to_string()));
        for bad in [
            "http://h/x",
            "srt://h:1",
            "rtmp://",
            "file:///x",
            "rtmp://h/a b",
            "rtmps://Push.Example.com/app",
            "rtmp://host/app",
            "rtmp://u:p@h/live/k",
            "rtmp://h:0/live/k",
            "rtmp://h:x/live/k",
            "rtmp://h//k",
            "rtmp://h/a//k",
            "rtmp://h/live/",
            "rtmp:///live/k",
        ] {
            assert_eq!(RtmpUrl::parse(bad), Err(RequestError::BadForward), "{bad}");
        }
        assert!(RtmpUrl::parse("rtmp://0/live/x").unwrap().is_internal());
        assert!(RtmpUrl::parse("rtmp://0x7f.1:1935/live/x")
            .unwrap()
            .is_internal());
        assert!(SourceUrl::parse("rtsp://2130706433/cam", TaskType::Live)
            .unwrap()
            .is_internal());
    }

    #[test]
    fn watermark_images_are_http_urls_separated_by_semicolons() {
        let w = WmImages::parse("http://a/1.png;https://b/2.png;").unwrap();
        assert_eq!(w.urls().len(), 2);
        assert_eq!(String::from(w), "http://a/1.png;https://b/2.png");
        for bad in ["", ";", "file:///x.png", "http://a/1.png;ftp://b/2.png"] {
            assert_eq!(
                WmImages::parse(bad).unwrap_err().msg(),
                "params wmImage format is error"
            );
        }
        assert!(WmImages::parse(&["http://a/x.png"; 9].join(";")).is_err());
    }

    #[test]
    fn gravity_has_nine_exact_names() {
        assert_eq!(Gravity::parse("BOTTOM_CENTER"), Ok(Gravity::BottomCenter));
        assert_eq!(Gravity::default(), Gravity::TopRight);
        assert_eq!(
            Gravity::parse("top_left").unwrap_err().msg(),
            "params wmGravity format is error"
        );
        for g in Gravity::ALL {
            assert_eq!(
                serde_json::to_string(&g).unwrap(),
                format!("\"{}\"", g.as_str())
            );
        }
    }

    #[test]
    fn watermark_positions_are_percent_pairs_below_100() {
        assert_eq!(
            WmPosition::parse("30%x40%"),
            Ok(WmPosition {
                x_percent: 30,
                y_percent: 40
            })
        );
        assert!(WmPosition::parse("0%x99%").is_ok());
        for bad in [
            "100%x1%", "30x40", "30%X40%", "-1%x2%", "%x1%", "1%x1%x1%", "1.5%x2%", "+1%x2%",
        ] {
            assert_eq!(
                WmPosition::parse(bad).unwrap_err().msg(),
                "params wmPosition format is error",
                "{bad}"
            );
        }
        assert_eq!(String::from(WmPosition::parse("5%x7%").unwrap()), "5%x7%");
    }

    #[test]
    fn relofftime_depends_on_the_type() {
        assert_eq!(
            RelOffTime::parse("30-60", TaskType::Video),
            Ok(RelOffTime {
                start_s: 30,
                end_s: 60
            })
        );
        assert!(RelOffTime::parse("0-60", TaskType::Live).is_ok());
        for (bad, ty) in [
            ("30-60", TaskType::Live),
            ("0-0", TaskType::Live),
            ("60-30", TaskType::Video),
            ("30", TaskType::Video),
            ("a-b", TaskType::Video),
            ("-1-5", TaskType::Video),
            ("1-9999999999", TaskType::Video),
        ] {
            assert_eq!(
                RelOffTime::parse(bad, ty),
                Err(RequestError::BadRelOffTime),
                "{bad}"
            );
        }
    }

    #[test]
    fn pull_headers_refuse_injection() {
        assert!(PullHeader::new("User-Agent", "MyCustomPlayer/1.0").is_ok());
        assert!(PullHeader::new("Referer", "http://example.com").is_ok());
        for (k, v) in [
            ("X", "a'b"),
            ("X", "a\"b"),
            ("X", "a;;b"),
            ("X", "a,b"),
            ("X", "a\r\nEvil: 1"),
            ("X", "a\nb"),
            ("Bad Key", "v"),
            ("", "v"),
            ("X:Y", "v"),
        ] {
            assert_eq!(
                PullHeader::new(k, v).unwrap_err().msg(),
                "params pullStreamHeaders format is error",
                "{k:?} {v:?}"
            );
        }
        assert!(PullHeader::new("Cookie", "a=1; b=2").is_ok());
    }

    #[test]
    fn resolution_needs_a_lower_case_x() {
        assert_eq!(
            Resolution::parse("1280x720"),
            Ok(Resolution {
                width: 1280,
                height: 720
            })
        );
        for bad in [
            "1280X720",
            "1280*720",
            "x720",
            "1280x",
            "0x0",
            "99999x1",
            "12 80x720",
        ] {
            assert_eq!(
                Resolution::parse(bad).unwrap_err().msg(),
                "params res format is error",
                "{bad}"
            );
        }
    }

    #[test]
    fn codecs_and_numbers() {
        assert_eq!(VideoCodec::parse("libx265"), Ok(VideoCodec::Libx265));
        assert_eq!(
            VideoCodec::parse("h264").unwrap_err().msg(),
            "params vcodec format is error"
        );
        assert_eq!(AudioCodec::parse("libfaac").unwrap().ffmpeg_name(), "aac");
        assert_eq!(
            AudioCodec::parse("aac").unwrap_err().msg(),
            "params acodec format is error"
        );
        assert_eq!(Fops::parse_fps("29.97"), Ok(29.97));
        assert!(
            Fops::parse_fps("0").is_err()
                && Fops::parse_fps("25.").is_err()
                && Fops::parse_fps("1e3").is_err()
        );
        assert_eq!(Fops::parse_bps("1200000"), Ok(1_200_000));
        assert!(Fops::parse_bps("-5").is_err() && Fops::parse_bps("0").is_err());
        assert_eq!(Fops::parse_buffer_time("2.5"), Ok(2.5));
        assert!(Fops::parse_buffer_time("ten").is_err());
        assert_eq!(Fops::parse_gop("3000"), Ok(3000));
        assert_eq!(LoopCount::parse("-1"), Ok(LoopCount::Forever));
        assert_eq!(LoopCount::parse("100"), Ok(LoopCount::Times(100)));
        for bad in ["0", "101", "-2", ""] {
            assert_eq!(
                LoopCount::parse(bad).unwrap_err().msg(),
                "params loop format is error"
            );
        }
    }

    #[test]
    fn sources_serialize_to_the_wire_shape() {
        let mut s = Source::new(
            SourceUrl::parse("http://source.example.com/live/stream1.flv", TaskType::Live).unwrap(),
        );
        assert_eq!(
            serde_json::to_string(&vec![s.clone()]).unwrap(),
            r#"[{"url":"http://source.example.com/live/stream1.flv"}]"#
        );
        s.wm_image = Some(WmImages::parse("http://a/l.jpg").unwrap());
        s.wm_gravity = Some(Gravity::TopLeft);
        let back: Source = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
