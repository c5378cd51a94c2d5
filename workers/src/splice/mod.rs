//! The splice: one continuous timeline out of every source a task pulls.
//!
//! - [`splicer`]: rebases each source onto one timeline, caches metadata and sequence headers,
//!   and fans tags out to subscribers, each with its own policy
//!   ([`SubscribeOptions`](splicer::SubscribeOptions));
//! - [`source`]: the source supervisor (failover, hot standby, manual switches, playlists,
//!   `cmd=3` replacements) that feeds the splicer, with the [`slate`] while every source is
//!   down. It knows nothing of its consumers: a relay session subscribes pushers, a recorder
//!   would subscribe file sinks.
//!
//! Uses `media` and `ingest`; nothing here uses `relay`.

pub mod slate;
pub mod source;
pub mod splicer;
