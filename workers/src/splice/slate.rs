//! The slate: black (or an operator's image) and silence at the stream's own size and frame
//! rate, fed to the splicer while every source is down, so destinations keep a picture and
//! their connection. The source supervisor starts and stops it; it is tagged
//! [`Origin::Slate`](super::splicer::Origin::Slate) on the timeline, so consumers that must not
//! record it (file sinks) leave it out.

use std::path::PathBuf;
use std::time::Duration;

use crate::ingest::{Container, Ingest};
#[cfg(doc)]
use crate::splice::source::PlayoutEvent;
use crate::splice::splicer::VideoShape;

/// The slate: what subscribers get while every source is down, so destinations' connections
/// and players stay up. Encoded by an ffmpeg with lavfi inputs at the stream's last size and frame
/// rate (black, or `image`) with silent AAC.
#[derive(Debug, Clone)]
pub struct SlateConfig {
    /// How long the slate may run before the supervisor gives up and reports that every
    /// source failed ([`PlayoutEvent::SourcesExhausted`], then `Finished`). Default 5 min.
    pub timeout: Duration,
    /// An operator-provided still image (local path) instead of black. Never a user URL.
    pub image: Option<PathBuf>,
    /// The ffmpeg that encodes the slate. Default [`crate::process::DEFAULT_FFMPEG`].
    pub ffmpeg_path: PathBuf,
    /// Encode the slate in HEVC (for a stream transcoded to HEVC, so the destinations see
    /// no codec change); H.264 otherwise. Default false.
    pub hevc: bool,
}

impl Default for SlateConfig {
    fn default() -> Self {
        SlateConfig {
            timeout: Duration::from_secs(300),
            image: None,
            ffmpeg_path: PathBuf::from(crate::process::DEFAULT_FFMPEG),
            hevc: false,
        }
    }
}

/// ffmpeg arguments of the slate: black (or `image`) at the stream's size and rate with
/// silent stereo AAC, H.264 with a 2 s GOP so a player joining during the slate starts fast.
pub(crate) fn slate_args(cfg: &SlateConfig, shape: VideoShape) -> Vec<String> {
    // x264 with 4:2:0 needs even dimensions.
    let even = |v: u32| (v.clamp(2, 7680) / 2 * 2).to_string();
    let (w, h) = (even(shape.width), even(shape.height));
    let fps = if shape.fps.is_finite() {
        shape.fps.clamp(1.0, 120.0)
    } else {
        25.0
    };
    let fps_s = format!("{fps:.3}");
    let gop = ((fps * 2.0).round() as u32).max(1).to_string();
    let mut a: Vec<String> = vec!["-hide_banner".into(), "-nostdin".into(), "-re".into()];
    match &cfg.image {
        Some(img) => {
            a.extend(["-protocol_whitelist".into(), "file".into()]);
            a.extend([
                "-loop".into(),
                "1".into(),
                "-framerate".into(),
                fps_s.clone(),
            ]);
            a.extend(["-i".into(), img.display().to_string()]);
        }
        None => {
            a.extend(["-f".into(), "lavfi".into(), "-i".into()]);
            a.push(format!("color=c=black:s={w}x{h}:r={fps_s}"));
        }
    }
    a.extend(["-f".into(), "lavfi".into(), "-i".into()]);
    a.push("anullsrc=r=44100:cl=stereo".into());
    a.extend(["-map".into(), "0:v:0".into(), "-map".into(), "1:a:0".into()]);
    if cfg.image.is_some() {
        a.extend(["-vf".into(), format!("scale={w}:{h},setsar=1")]);
    }
    let encoder = if cfg.hevc { "libx265" } else { "libx264" };
    a.extend(
        [
            "-c:v",
            encoder,
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
        ]
        .map(String::from),
    );
    if cfg.hevc {
        a.extend(["-x265-params", "log-level=error"].map(String::from));
    }
    a.extend(["-r".into(), fps_s, "-g".into(), gop]);
    a.extend(["-c:a", "aac", "-b:a", "64k"].map(String::from));
    // The container the ingest of a stream like this one writes (see `Container`).
    if cfg.hevc {
        a.extend(["-f", "mpegts"].map(String::from));
    } else {
        a.extend(["-f", "flv", "-flvflags", "no_duration_filesize"].map(String::from));
    }
    a
}

/// Starts the slate's ffmpeg for a stream of `shape`; `None` (logged) when it cannot start:
/// the sources are still retried for the slate time.
pub(crate) fn start(cfg: &SlateConfig, shape: VideoShape) -> Option<Ingest> {
    let container = if cfg.hevc {
        Container::MpegTs
    } else {
        Container::Flv
    };
    match Ingest::start_trusted(&cfg.ffmpeg_path, &slate_args(cfg, shape), container) {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the slate");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slate_args_match_the_stream() {
        let shape = VideoShape {
            width: 853,
            height: 480,
            fps: 29.97,
        };
        let a = slate_args(&SlateConfig::default(), shape).join(" ");
        // Even size for 4:2:0, the stream's rate, a 2 s GOP, silence, FLV.
        assert!(a.contains("color=c=black:s=852x480:r=29.970"), "{a}");
        assert!(a.contains("anullsrc=r=44100:cl=stereo"), "{a}");
        assert!(a.contains("-g 60"), "{a}");
        assert!(a.ends_with("-f flv -flvflags no_duration_filesize"), "{a}");
        let cfg = SlateConfig {
            image: Some(PathBuf::from("/srv/slate.png")),
            ..SlateConfig::default()
        };
        let a = slate_args(&cfg, shape).join(" ");
        assert!(a.contains("-protocol_whitelist file -loop 1 -framerate 29.970 -i /srv/slate.png"));
        assert!(a.contains("scale=852:480"), "{a}");
        let hevc = SlateConfig {
            hevc: true,
            ..SlateConfig::default()
        };
        let a = slate_args(&hevc, shape).join(" ");
        assert!(
            a.contains("-c:v libx265") && a.ends_with("-f mpegts"),
            "{a}"
        );
    }
}
