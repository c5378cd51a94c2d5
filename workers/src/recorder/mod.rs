//! Cloud recording: the recorder is a second consumer of the relay's source side (ingest,
//! splicer, source supervisor), writing file sinks instead of pushers.
//!
//! - [`sink`]: per-format sinks cutting the timeline into durable parts and files;
//! - [`session`]: one recording under a lease: pull, cut, store, finalize, take over;
//! - [`formats`]: the fMP4 (HLS, MP4) and AAC part writers;
//! - [`finalize`]: parts into a finished object, its record file and its notice;
//! - [`snapshot`]: a JPEG of a keyframe every so often (event 200);
//! - [`worker`]: record jobs, leases, heartbeats, drain.
//!
//! Uses `splice` and below; nothing here uses `relay`.

pub mod finalize;
pub mod formats;
pub mod session;
pub mod sink;
pub mod snapshot;
pub mod worker;

use relaycast_core::domain::recording::RecordFormat;
use relaycast_core::ports::{ObjectStoreError, QueueError, StoreError};

use formats::{AacWriter, Fmp4Writer};
use sink::{FlvWriter, PartWriter};

/// What can go wrong while recording.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The object store failed.
    #[error("object store: {0}")]
    Objects(#[from] ObjectStoreError),
    /// The queue failed.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// The source side could not start.
    #[error("source: {0}")]
    Source(String),
    /// Local files or the remux failed.
    #[error("{0}")]
    Io(String),
}

/// The writer of a format.
pub fn writer_for(format: RecordFormat) -> Box<dyn PartWriter> {
    match format {
        RecordFormat::Hls => Box::new(Fmp4Writer::hls()),
        RecordFormat::Mp4 => Box::new(Fmp4Writer::mp4()),
        RecordFormat::Flv => Box::new(FlvWriter::new()),
        RecordFormat::Aac => Box::new(AacWriter::new()),
    }
}
