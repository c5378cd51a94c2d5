//! relaycast core: the domain (models, rules, state machine, signatures) and the **ports** every
//! function and worker talks through. It links no backend: the adapters live in crates of their
//! own (`adapters/embedded`: SQLite and a directory; `adapters/aws`: DynamoDB, SQS and S3), and a
//! host picks one set once (`relaycast_adapters::open_ports`) and hands it around as [`Ports`].

pub mod app;
pub mod config;
pub mod domain;
pub mod guarded_dns;
pub mod ports;

pub use ports::Ports;
