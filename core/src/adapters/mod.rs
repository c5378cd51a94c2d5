//! Adapters implementing the ports. The embedded set (SQLite file, local directory) is the
//! default and is what `relaycast up` runs; it is durable, not a test double.
