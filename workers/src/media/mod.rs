//! Media formats and the RTMP wire: what every other layer speaks, with no process, no
//! session and no policy.
//!
//! - [`adts`]: AAC AudioSpecificConfig parsing and ADTS framing (`.aac` recordings);
//! - [`chunks`]: the RTMP chunks of a media tag, encoded once and shared by every publisher;
//! - [`flv`]: FLV tags and the FLV demuxer (the unit the whole data plane moves);
//! - [`fmp4`]: the fragmented-MP4 muxer of FLV tags (recorded MP4 files and HLS segments);
//! - [`hls`]: HLS media playlists of fMP4 segments, rendered and parsed back;
//! - [`metadata`]: the `onMetaData` script tag, both ways (FLV body ↔ `rml_rtmp` metadata);
//! - [`mpegts`]: MPEG-TS cut into Enhanced RTMP tags (HEVC, which ffmpeg 5.1 cannot put in FLV);
//! - [`rtmp`]: the RTMP client that publishes (pushers) and plays (native pulls), on core's
//!   [`RtmpUrl`](rtmp::RtmpUrl);
//! - [`sps`]: picture sizes from the H.264/HEVC decoder configuration records.
//!
//! Nothing here uses `ingest`, `splice` or `relay`.

pub mod adts;
pub mod chunks;
pub mod flv;
pub mod fmp4;
pub mod hls;
pub mod metadata;
pub mod mpegts;
pub mod rtmp;
pub mod sps;
