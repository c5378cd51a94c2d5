//! relaycast long-running workers.
//!
//! The data plane, in layers whose dependencies run one way (each uses only those below it):
//!
//! ```text
//! relay/   pushers, the relay session, the relay worker, reconcile (task record ↔ session)
//!   │
//! splice/  splicer (one timeline, per-subscriber policy), source supervisor, slate
//!   │
//! ingest/  ffmpeg ingest, native RTMP pull, pacing (bufferTime), transcode, egress guard
//!   │
//! media/   FLV, onMetaData (both ways), MPEG-TS → Enhanced RTMP, RTMP client
//! ```
//!
//! One relay task: an ingest pulls a source ([`ingest`]: an ffmpeg writing FLV to a pipe, or
//! a native RTMP play), the [`media::flv`] demuxer cuts it into tags, the
//! [`splice::source::SourceSupervisor`] walks the sources (failover, hot standby, playlists,
//! the slate) and feeds the [`splice::splicer`], which puts every source onto one continuous
//! timeline and fans tags out to subscribers; the [`relay::session`] subscribes one
//! Rust-native RTMP [`relay::pusher`] per destination, and the [`relay::worker`] drives
//! sessions from task records. A recorder is a second consumer of the same source side.
//! [`process`] holds the process-group handling shared by everything that runs a child.
//!
//! Tests: unit tests generate real FLV with the system ffmpeg; `tests/relay_e2e.rs` and
//! `tests/playout_e2e.rs` run a private nginx-rtmp (`tests/support`) with ffmpeg publishers
//! and ffprobe players. Every test that needs such a peer goes through `test_peers`, which
//! fails it when the peer is missing.

pub mod ingest;
pub mod jobs;
pub mod media;
pub mod process;
pub mod recorder;
pub mod relay;
pub mod splice;
pub mod standalone;
#[doc(hidden)]
pub mod test_peers;

#[cfg(test)]
pub(crate) mod test_util {
    /// A port on 127.0.0.1 that nothing listens on (bound, read, closed): connects are refused.
    pub fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9)
    }
}
