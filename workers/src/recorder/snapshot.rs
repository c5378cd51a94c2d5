//! Snapshots of a recorded stream: at the first keyframe every `interval`, the keyframe with
//! its sequence header (a two-tag FLV) is decoded into a JPEG by a short ffmpeg, stored, and
//! noticed (event 200). Off the recording's path: a slow or failing decode costs one snapshot,
//! never a part.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::media::flv::{FlvHeader, FlvTag, TagType, VIDEO_CODEC_AVC, VIDEO_CODEC_HEVC};
use crate::media::sps;

/// Longest a snapshot decode may take.
const DECODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Picks the keyframes to snapshot.
#[derive(Debug)]
pub struct SnapshotPicker {
    interval_ms: u32,
    header: Option<FlvTag>,
    last: Option<u32>,
}

/// A keyframe to decode.
#[derive(Debug, Clone)]
pub struct SnapshotFrame {
    /// An FLV of the sequence header and the keyframe.
    pub flv: Bytes,
    /// Picture size from the sequence header, when it says.
    pub size: Option<(u32, u32)>,
}

impl SnapshotPicker {
    /// One snapshot every `interval`.
    pub fn new(interval: Duration) -> Self {
        SnapshotPicker {
            interval_ms: interval.as_millis().clamp(1000, u128::from(u32::MAX)) as u32,
            header: None,
            last: None,
        }
    }

    /// The frame to snapshot, when `tag` is the keyframe that is due.
    pub fn observe(&mut self, tag: &FlvTag) -> Option<SnapshotFrame> {
        if tag.tag_type != TagType::Video {
            return None;
        }
        if tag.is_video_sequence_header() {
            self.header = Some(tag.clone());
            return None;
        }
        if !tag.is_key_picture()
            || self
                .last
                .is_some_and(|l| tag.timestamp.saturating_sub(l) < self.interval_ms)
        {
            return None;
        }
        let header = self.header.as_ref()?;
        self.last = Some(tag.timestamp);
        let record = header.data.get(5..).unwrap_or_default();
        let size = match header.video_codec() {
            Some(VIDEO_CODEC_AVC) => sps::avc_size(record),
            Some(VIDEO_CODEC_HEVC) => sps::hevc_size(record),
            _ => None,
        };
        let mut flv = BytesMut::new();
        FlvHeader {
            version: 1,
            has_audio: false,
            has_video: true,
        }
        .write_to(&mut flv);
        header.with_timestamp(0).write_to(&mut flv);
        tag.with_timestamp(0).write_to(&mut flv);
        Some(SnapshotFrame {
            flv: flv.freeze(),
            size: size.map(|(w, h)| (w as u32, h as u32)),
        })
    }
}

/// Decodes a snapshot frame into a JPEG with ffmpeg.
pub async fn decode_jpeg(ffmpeg: &PathBuf, frame: &SnapshotFrame) -> Result<Bytes, String> {
    let mut child = tokio::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "flv",
            "-i",
            "pipe:0",
            "-frames:v",
            "1",
            "-q:v",
            "3",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
            "pipe:1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", ffmpeg.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let flv = frame.flv.clone();
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&flv).await;
        let _ = stdin.shutdown().await;
    });
    let out = tokio::time::timeout(DECODE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| "the snapshot decode took too long".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = feed.await;
    if !out.status.success() || out.stdout.len() < 4 || out.stdout[..2] != [0xff, 0xd8] {
        return Err(format!(
            "the snapshot decode failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Bytes::from(out.stdout))
}
