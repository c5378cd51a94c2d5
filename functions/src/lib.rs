//! relaycast functions: short-lived handlers that run unchanged in two hosts, an AWS Lambda
//! bootstrap binary and the local all-in-one server (`relaycast up`).
//!
//! A handler is thin: parse, call the domain in `relaycast-core`, map the result to the wire.

pub mod api;
pub mod notifier;
pub mod scheduler;

use std::sync::Arc;

use axum::Router;
use relaycast_core::config::Settings;
use relaycast_core::ports::Ports;

/// What every handler gets: the adapters and the settings.
#[derive(Clone)]
pub struct Context {
    /// The adapters.
    pub ports: Ports,
    /// The settings in force.
    pub settings: Arc<Settings>,
    /// Wakes the outbox sweep after a handler stored new notices.
    pub outbox_kick: Arc<tokio::sync::Notify>,
}

impl Context {
    /// A context over `ports` and `settings`.
    pub fn new(ports: Ports, settings: Arc<Settings>) -> Self {
        Self { ports, settings, outbox_kick: Arc::new(tokio::sync::Notify::new()) }
    }
}

/// Every HTTP function, mounted on one router (the same router a Lambda host serves).
pub fn http_routes(ctx: Context) -> Router {
    api::routes().with_state(ctx)
}
