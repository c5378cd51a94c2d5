//! A recording's progress: what its recorder has made durable so far, so that another recorder
//! taking the recording over (its lease lapsed) can continue it and finalize what the dead one
//! left. Written only by the lease holder, with the lease's fencing token, after every part.

use serde::{Deserialize, Serialize};

use super::{RecordFormat, Recording};
use crate::ports::{Entity, Kind};

/// One durable piece of a file in progress: an HLS segment, or a run of MP4 fragments, FLV tags
/// or AAC frames, stored as its own object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Its object key.
    pub key: String,
    /// Its size.
    pub bytes: u64,
    /// Media it holds, ms.
    pub duration_ms: u64,
    /// It starts a new piece of timeline (HLS `#EXT-X-DISCONTINUITY`): another recorder took
    /// over, or the codec configuration changed.
    #[serde(default)]
    pub discontinuity: bool,
    /// The init segment it needs (fMP4), when it differs from the previous part's.
    #[serde(default)]
    pub init_key: Option<String>,
    /// The size of that init segment (0 without one).
    #[serde(default)]
    pub init_bytes: u64,
}

/// The file of one format being written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    /// The format.
    pub format: RecordFormat,
    /// Its number within the recording (files split at the template's max length).
    pub index: u32,
    /// Wall time of its first media, Unix ms.
    pub start_ms: i64,
    /// Wall time of its last media so far, Unix ms.
    pub end_ms: i64,
    /// Its parts so far, in order.
    pub parts: Vec<Part>,
    /// `video_codec` and `resolution` of the stream, for the notice.
    pub video_codec: Option<String>,
    /// `WIDTHxHEIGHT`.
    pub resolution: Option<String>,
}

impl OpenFile {
    /// Media so far, ms.
    pub fn duration_ms(&self) -> u64 {
        self.parts.iter().map(|p| p.duration_ms).sum()
    }

    /// Bytes so far.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

/// What a recording's recorders have made durable. Key: the recording's store key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingProgress {
    /// The recording's store key.
    pub recording: String,
    /// The fencing token of the lease its last writer held; a writer with an older token
    /// must not write (it lost the lease).
    pub lease_token: u64,
    /// Files being written, one per format at most.
    pub open: Vec<OpenFile>,
    /// Files closed (split or ended) but not yet finalized, oldest first.
    pub closing: Vec<OpenFile>,
    /// Object keys of finalized files.
    pub finalized: Vec<String>,
    /// Media recorded so far over every file of the HLS playlist, ms: a recorder taking over
    /// continues its timestamps from here.
    pub timeline_ms: u64,
    /// How many recorders have run it (1 for the first); names their parts apart.
    pub generation: u32,
}

impl RecordingProgress {
    /// The empty progress of a recording.
    pub fn new(recording: &Recording) -> Self {
        RecordingProgress {
            recording: recording.key(),
            lease_token: 0,
            open: Vec::new(),
            closing: Vec::new(),
            finalized: Vec::new(),
            timeline_ms: 0,
            generation: 0,
        }
    }
}

impl Entity for RecordingProgress {
    const KIND: Kind = Kind("recording_progress");

    fn key(&self) -> String {
        self.recording.clone()
    }
}
