//! HLS media playlists of fMP4 segments: rendering, and parsing what was rendered (a recorder
//! that takes over a recording reads the playlist the previous one left and continues it).
//!
//! The format is fixed: version 7, media sequence 0, an `EXT-X-MAP` before the first segment
//! and wherever the init segment changes, `EVENT` while recording and `VOD` + `EXT-X-ENDLIST`
//! once ended.

use std::fmt::Write;

/// Errors of [`MediaPlaylist::parse`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HlsError {
    /// The text does not start with `#EXTM3U`.
    #[error("not an HLS playlist (no #EXTM3U)")]
    NotAPlaylist,
    /// A line that cannot be read (`line` counts from 1).
    #[error("playlist line {line}: {reason}")]
    Bad {
        /// The line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The playlist ends between an `#EXTINF` and its URI (a write cut short).
    #[error("playlist ends inside a segment entry")]
    Truncated,
}

/// One media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsSegment {
    /// The segment's URI, relative to the playlist.
    pub uri: String,
    /// Its duration (written with millisecond precision).
    pub duration_ms: u64,
    /// The URI of the init segment it needs (`EXT-X-MAP`).
    pub map_uri: String,
    /// An `EXT-X-DISCONTINUITY` precedes it (a timeline or encoding change).
    pub discontinuity: bool,
}

/// A media playlist: segments in order and whether the recording has ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// The segments.
    pub segments: Vec<HlsSegment>,
    /// The recording is over: `VOD` and `EXT-X-ENDLIST`.
    pub ended: bool,
}

impl MediaPlaylist {
    /// `EXT-X-TARGETDURATION`: the longest segment in whole seconds, rounded up (at least 1).
    pub fn target_duration_secs(&self) -> u64 {
        let longest = self
            .segments
            .iter()
            .map(|s| s.duration_ms)
            .max()
            .unwrap_or(0);
        longest.div_ceil(1000).max(1)
    }

    /// The total duration of the segments.
    pub fn duration_ms(&self) -> u64 {
        self.segments.iter().map(|s| s.duration_ms).sum()
    }

    /// The playlist text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(128 + self.segments.len() * 48);
        let kind = if self.ended { "VOD" } else { "EVENT" };
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:{kind}\n",
            self.target_duration_secs()
        );
        let mut map: Option<&str> = None;
        for s in &self.segments {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if map != Some(&s.map_uri) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", s.map_uri);
                map = Some(&s.map_uri);
            }
            let (secs, ms) = (s.duration_ms / 1000, s.duration_ms % 1000);
            let _ = write!(out, "#EXTINF:{secs}.{ms:03},\n{}\n", s.uri);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// Reads a playlist in the format [`render`](Self::render) writes. Other tags and comments
    /// are skipped; the target duration is recomputed, not read.
    pub fn parse(text: &str) -> Result<Self, HlsError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        if lines.next().map(|(_, l)| l) != Some("#EXTM3U") {
            return Err(HlsError::NotAPlaylist);
        }
        let mut playlist = MediaPlaylist::default();
        let mut map: Option<String> = None;
        let mut discontinuity = false;
        let mut duration: Option<u64> = None;
        for (line, l) in lines {
            let bad = |reason| HlsError::Bad { line, reason };
            if l.is_empty() {
                continue;
            }
            if let Some(v) = l.strip_prefix("#EXTINF:") {
                let secs = v.split(',').next().unwrap_or_default();
                duration = Some(parse_ms(secs).ok_or(bad("bad #EXTINF duration"))?);
            } else if let Some(v) = l.strip_prefix("#EXT-X-MAP:") {
                let uri = v
                    .strip_prefix("URI=\"")
                    .and_then(|v| v.split('"').next())
                    .ok_or(bad("bad #EXT-X-MAP"))?;
                map = Some(uri.to_owned());
            } else if l == "#EXT-X-DISCONTINUITY" {
                discontinuity = true;
            } else if l == "#EXT-X-ENDLIST" || l == "#EXT-X-PLAYLIST-TYPE:VOD" {
                playlist.ended = true;
            } else if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                // Segments are numbered from the first one on: another start would shift them.
                if v != "0" {
                    return Err(bad("media sequence other than 0"));
                }
            } else if l.starts_with('#') {
                continue;
            } else {
                let duration_ms = duration.take().ok_or(bad("URI without #EXTINF"))?;
                let map_uri = map.clone().ok_or(bad("segment before any #EXT-X-MAP"))?;
                playlist.segments.push(HlsSegment {
                    uri: l.to_owned(),
                    duration_ms,
                    map_uri,
                    discontinuity: std::mem::take(&mut discontinuity),
                });
            }
        }
        if duration.is_some() {
            return Err(HlsError::Truncated);
        }
        Ok(playlist)
    }
}

/// Decimal seconds (`2.000`, `2.5`, `3`) as milliseconds, rounded.
fn parse_ms(secs: &str) -> Option<u64> {
    let (int, frac) = secs.split_once('.').unwrap_or((secs, ""));
    let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !ok(int) || !ok(frac) {
        return None;
    }
    let mut ms = int.parse::<u64>().ok()?.checked_mul(1000)?;
    let digits: Vec<u64> = frac.bytes().map(|b| u64::from(b - b'0')).collect();
    for (i, scale) in [100, 10, 1].into_iter().enumerate() {
        ms += digits.get(i).copied().unwrap_or(0) * scale;
    }
    if digits.get(3).is_some_and(|&d| d >= 5) {
        ms += 1;
    }
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u32, ms: u64, map: &str, discontinuity: bool) -> HlsSegment {
        HlsSegment {
            uri: format!("seg_{n}.m4s"),
            duration_ms: ms,
            map_uri: map.into(),
            discontinuity,
        }
    }

    #[test]
    fn renders_and_parses_back() {
        let mut p = MediaPlaylist {
            segments: vec![
                seg(0, 2000, "init_0.mp4", false),
                seg(1, 2040, "init_0.mp4", false),
                seg(2, 1999, "init_1.mp4", true),
                seg(3, 640, "init_1.mp4", false),
            ],
            ended: false,
        };
        let text = p.render();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MAP:URI=\"init_0.mp4\"\n#EXTINF:2.000,\n\
             seg_0.m4s\n#EXTINF:2.040,\nseg_1.m4s\n#EXT-X-DISCONTINUITY\n\
             #EXT-X-MAP:URI=\"init_1.mp4\"\n#EXTINF:1.999,\nseg_2.m4s\n#EXTINF:0.640,\n\
             seg_3.m4s\n"
        );
        assert_eq!(MediaPlaylist::parse(&text), Ok(p.clone()));
        p.ended = true;
        let text = p.render();
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && text.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(MediaPlaylist::parse(&text), Ok(p.clone()));
        assert_eq!(p.duration_ms(), 6679);
        assert_eq!(MediaPlaylist::default().target_duration_secs(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_continue() {
        assert_eq!(MediaPlaylist::parse("hello"), Err(HlsError::NotAPlaylist));
        let head = "#EXTM3U\n#EXT-X-MAP:URI=\"init_0.mp4\"\n";
        assert_eq!(
            MediaPlaylist::parse(&format!("{head}#EXTINF:2.000,\n")),
            Err(HlsError::Truncated)
        );
        assert!(matches!(
            MediaPlaylist::parse(&format!("{head}#EXTINF:x,\nseg_0.m4s\n")),
            Err(HlsError::Bad { line: 3, .. })
        ));
        assert!(matches!(
            MediaPlaylist::parse("#EXTM3U\n#EXTINF:1.0,\nseg_0.m4s\n"),
            Err(HlsError::Bad { line: 3, .. })
        ));
        assert!(matches!(
            MediaPlaylist::parse("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:4\n"),
            Err(HlsError::Bad { line: 2, .. })
        ));
        // Other writers' precision and comments are read.
        let p = MediaPlaylist::parse(&format!("{head}# note\n#EXTINF:2.5,title\nseg_0.m4s\n"))
            .expect("parse");
        assert_eq!(p.segments[0].duration_ms, 2500);
        assert_eq!(parse_ms("1.23456"), Some(1235));
        assert_eq!(parse_ms("-1"), None);
    }
}
