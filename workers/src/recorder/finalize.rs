//! Finalizing a file: its parts become one object under its final name (HLS: a playlist over
//! its segments; MP4: the fragments remuxed into a regular faststart MP4; FLV and AAC: the
//! parts concatenated), its [`RecordFile`] is written, the object is put, and an
//! [`ObjectCreated`] notice is queued for the recordings handler. Every step can run again
//! after a crash with the same result: the key is a function of the file, the record file is
//! overwritten, and the notice handler makes one media record of any number of notices.

use std::path::{Path, PathBuf};
use std::time::Duration;

use relaycast_core::domain::recording::progress::OpenFile;
use relaycast_core::domain::recording::{
    file_name, ObjectCreated, RecordFile, RecordFormat, Recording, OBJECT_NOTICE_QUEUE,
};
use relaycast_core::ports::{Condition, Ports, TypedStore};
use tokio::io::AsyncWriteExt;

use super::RecorderError;
use crate::media::hls::{HlsSegment, MediaPlaylist};

/// Longest a faststart remux may take.
const REMUX_TIMEOUT: Duration = Duration::from_secs(600);

/// The object key a finished file gets.
pub fn final_key(recording: &Recording, file: &OpenFile) -> String {
    format!(
        "{}/{}.{}",
        recording.object_prefix(),
        file_name(recording, file.start_ms, file.end_ms),
        file.format.extension()
    )
}

/// Makes `file` a finished object and notices it; returns its key, or `None` for a file with no
/// media.
pub async fn finalize_file(
    ports: &Ports,
    ffmpeg: &Path,
    recording: &Recording,
    file: &OpenFile,
) -> Result<Option<String>, RecorderError> {
    if file.parts.is_empty() {
        return Ok(None);
    }
    let key = final_key(recording, file);
    let spec = recording
        .spec
        .formats
        .iter()
        .find(|f| f.format == file.format);
    let now = ports.clock.now_ms();
    let expires_ms = spec
        .filter(|s| s.storage_secs > 0)
        .map(|s| now + (s.storage_secs as i64).saturating_mul(1000));
    let mut record = RecordFile {
        object_key: key.clone(),
        account: recording.account.clone(),
        recording_id: recording.id.clone(),
        record_id: recording.record_id.clone(),
        stream: recording.stream.clone(),
        stream_id: recording.stream_id().to_string(),
        stream_param: recording.stream_param.clone(),
        template_id: recording.spec.template_id,
        format: file.format,
        namespace: recording.spec.namespace,
        name: file_name(recording, file.start_ms, file.end_ms),
        start_ms: file.start_ms,
        end_ms: file.end_ms,
        duration_ms: file.duration_ms(),
        size: 0,
        video_codec: file.video_codec.clone(),
        resolution: file.resolution.clone(),
        expires_ms,
        parts: Vec::new(),
    };
    let work = tempfile::Builder::new()
        .prefix("relaycast-finalize")
        .tempdir()
        .map_err(|e| RecorderError::Io(format!("temp dir: {e}")))?;
    let started = std::time::Instant::now();
    let (path, size) = match file.format {
        RecordFormat::Hls => {
            let playlist = hls_playlist(&key, file);
            record.parts = file
                .parts
                .iter()
                .flat_map(|p| p.init_key.iter().chain(std::iter::once(&p.key)))
                .cloned()
                .collect();
            let path = work.path().join("playlist.m3u8");
            tokio::fs::write(&path, playlist.as_bytes())
                .await
                .map_err(|e| RecorderError::Io(format!("playlist: {e}")))?;
            (
                path,
                playlist.len() as u64
                    + file.bytes()
                    + file.parts.iter().map(|p| p.init_bytes).sum::<u64>(),
            )
        }
        RecordFormat::Mp4 => {
            let fragmented = work.path().join("fragmented.mp4");
            concat_parts(ports, file, &fragmented, true).await?;
            let out = work.path().join("final.mp4");
            remux_faststart(ffmpeg, &fragmented, &out).await?;
            let size = tokio::fs::metadata(&out)
                .await
                .map_err(|e| RecorderError::Io(e.to_string()))?
                .len();
            (out, size)
        }
        RecordFormat::Flv | RecordFormat::Aac => {
            let out = work.path().join("file");
            let size = concat_parts(ports, file, &out, false).await?;
            (out, size)
        }
    };
    record.size = size;
    ports.store.save(&record, Condition::Any).await?;
    let meta = ports
        .objects
        .put_file(&key, &path, file.format.content_type())
        .await?;
    let notice = serde_json::to_string(&ObjectCreated {
        key: key.clone(),
        size: meta.size,
    })
    .map_err(|e| RecorderError::Io(e.to_string()))?;
    ports
        .queue
        .send(OBJECT_NOTICE_QUEUE, &notice, Duration::ZERO)
        .await?;
    if file.format != RecordFormat::Hls {
        // The parts are in the file now; HLS keeps its segments (the playlist plays them).
        for part in &file.parts {
            for k in part.init_key.iter().chain(std::iter::once(&part.key)) {
                if let Err(e) = ports.objects.delete(k).await {
                    tracing::warn!(key = %k, error = %e, "part not deleted");
                }
            }
        }
    }
    metrics::counter!("relaycast_record_files_total", "format" => file.format.as_str())
        .increment(1);
    tracing::info!(recording = %recording.id, key = %key, format = file.format.as_str(), duration_ms = record.duration_ms, size, took_ms = started.elapsed().as_millis() as u64, "record file finalized");
    Ok(Some(key))
}

/// The VOD playlist of an HLS file, its URIs relative to the playlist's own key.
fn hls_playlist(playlist_key: &str, file: &OpenFile) -> String {
    let dir = playlist_key.rsplit_once('/').map_or("", |(d, _)| d);
    let relative = |key: &str| {
        key.strip_prefix(dir)
            .map(|k| k.trim_start_matches('/').to_string())
            .unwrap_or_else(|| key.to_string())
    };
    let mut map = String::new();
    let mut segments = Vec::with_capacity(file.parts.len());
    for (i, part) in file.parts.iter().enumerate() {
        if let Some(init) = &part.init_key {
            map = relative(init);
        }
        segments.push(HlsSegment {
            uri: relative(&part.key),
            duration_ms: part.duration_ms,
            map_uri: map.clone(),
            discontinuity: part.discontinuity && i > 0,
        });
    }
    MediaPlaylist {
        segments,
        ended: true,
    }
    .render()
}

/// Writes the file's parts (with their init segments when `with_init`) one after another to
/// `out`; returns the bytes written.
async fn concat_parts(
    ports: &Ports,
    file: &OpenFile,
    out: &PathBuf,
    with_init: bool,
) -> Result<u64, RecorderError> {
    let mut writer = tokio::fs::File::create(out)
        .await
        .map_err(|e| RecorderError::Io(format!("{}: {e}", out.display())))?;
    let mut total = 0;
    for part in &file.parts {
        let keys: Vec<&String> = if with_init {
            part.init_key
                .iter()
                .chain(std::iter::once(&part.key))
                .collect()
        } else {
            vec![&part.key]
        };
        for key in keys {
            let Some(mut object) = ports.objects.get(key).await? else {
                return Err(RecorderError::Io(format!(
                    "part {key} is missing from the object store"
                )));
            };
            total += tokio::io::copy(&mut object.body, &mut writer)
                .await
                .map_err(|e| RecorderError::Io(format!("copying {key}: {e}")))?;
        }
    }
    writer
        .flush()
        .await
        .map_err(|e| RecorderError::Io(e.to_string()))?;
    Ok(total)
}

/// A fragmented MP4 remuxed (no re-encoding) into a regular MP4 with its index in front, which
/// every browser and editor plays from the first byte.
async fn remux_faststart(ffmpeg: &Path, input: &Path, output: &Path) -> Result<(), RecorderError> {
    let child = tokio::process::Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y", "-i"])
        .arg(input)
        .args([
            "-map",
            "0",
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ])
        .arg(output)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RecorderError::Io(format!("cannot start {}: {e}", ffmpeg.display())))?;
    let out = tokio::time::timeout(REMUX_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| RecorderError::Io("the MP4 remux took too long".into()))?
        .map_err(|e| RecorderError::Io(e.to_string()))?;
    if !out.status.success() {
        return Err(RecorderError::Io(format!(
            "the MP4 remux failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
