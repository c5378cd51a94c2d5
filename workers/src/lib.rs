//! relaycast long-running workers.
//!
//! The relay data plane lives here: one ingest per relay task, an ffmpeg writing FLV to a
//! pipe or a native RTMP play ([`ingest`], [`rtmp_pull`]), the [`flv`] demuxer cuts it into tags, the [`splicer`] puts every source onto
//! one continuous timeline and fans tags out, and one Rust-native RTMP [`pusher`] per
//! destination publishes them. [`session`] ties these together for one relay task.
//! [`transcode`] turns a task's `fops` and watermarks into the ingest's output arguments;
//! [`playout`] maps a relay task's playlist settings onto a session.
//! [`process`] holds the process-group handling shared by everything that runs a child;
//! [`egress`] guards where an ingest ffmpeg may connect (a checking proxy, pinned addresses).
//!
//! Tests: unit tests generate real FLV with the system ffmpeg; `tests/relay_e2e.rs` and
//! `tests/playout_e2e.rs` run a private nginx-rtmp (`tests/support`) with ffmpeg publishers
//! and ffprobe players. Every test that needs such a peer goes through `test_peers`, which
//! fails it when the peer is missing.

pub mod egress;
pub mod flv;
pub mod ingest;
pub mod mpegts;
pub mod playout;
pub mod process;
pub mod pusher;
pub mod relay_worker;
pub mod rtmp_pull;
pub mod session;
pub mod splicer;
#[doc(hidden)]
pub mod test_peers;
pub mod transcode;

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
