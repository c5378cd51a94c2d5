//! Media formats and the RTMP wire: what every other layer speaks, with no process, no
//! session and no policy.
//!
//! - [`chunks`]: the RTMP chunks of a media tag, encoded once and shared by every publisher;
//! - [`flv`]: FLV tags and the FLV demuxer (the unit the whole data plane moves);
//! - [`metadata`]: the `onMetaData` script tag, both ways (FLV body ↔ `rml_rtmp` metadata);
//! - [`mpegts`]: MPEG-TS cut into Enhanced RTMP tags (HEVC, which ffmpeg 5.1 cannot put in FLV);
//! - [`rtmp`]: the RTMP client that publishes (pushers) and plays (native pulls), on core's
//!   [`RtmpUrl`](rtmp::RtmpUrl).
//!
//! Nothing here uses `ingest`, `splice` or `relay`.

pub mod chunks;
pub mod flv;
pub mod metadata;
pub mod mpegts;
pub mod rtmp;
