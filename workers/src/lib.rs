//! relaycast long-running workers.
//!
//! The relay data plane lives here: one ingest ffmpeg per relay task writes FLV to a pipe
//! ([`ingest`]), the [`flv`] demuxer cuts it into tags, the [`splicer`] puts every source onto
//! one continuous timeline and fans tags out, and one Rust-native RTMP [`pusher`] per
//! destination publishes them. [`session`] ties these together for one relay task.

pub mod flv;
pub mod ingest;
pub mod process;
pub mod pusher;
pub mod relay_worker;
pub mod session;
pub mod splicer;
