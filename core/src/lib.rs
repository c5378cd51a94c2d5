//! relaycast core: the domain (models, rules, state machine, signatures), the **ports** every
//! function and worker talks through, and the adapters that implement them.
//!
//! Handlers and workers depend on the traits in [`ports`] only; the host chooses adapters once
//! (embedded SQLite + directory by default, AWS at scale) and hands them around as [`Ports`].

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod ports;

pub use ports::Ports;
