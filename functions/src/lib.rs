//! relaycast functions: short-lived handlers that run unchanged in two hosts, an AWS Lambda
//! bootstrap binary and the local all-in-one server (`relaycast up`).
//!
//! A handler is thin: parse, call the domain in `relaycast-core`, map the result to the wire.

pub mod api;
pub mod callbacks;
pub mod notifier;
pub mod recordings;
pub mod scheduler;
pub mod v1;
pub mod v1_media;
pub mod v1_record;
pub mod v1_recordings;

use std::sync::Arc;

use axum::Router;
use relaycast_core::app::callbacks::ConfigCache;
use relaycast_core::config::Settings;
use relaycast_core::ports::Ports;

/// What every handler gets: the adapters and the settings.
#[derive(Clone)]
pub struct Context {
    /// The adapters.
    pub ports: Ports,
    /// The settings in force.
    pub settings: Arc<Settings>,
    /// Callback rules, templates and hook tokens as this process last read them.
    pub config_cache: Arc<ConfigCache>,
}

impl Context {
    /// A context over `ports` and `settings`.
    pub fn new(ports: Ports, settings: Arc<Settings>) -> Self {
        Self {
            ports,
            settings,
            config_cache: Arc::default(),
        }
    }
}

/// Every HTTP function, mounted on one router (the same router a Lambda host serves).
pub fn http_routes(ctx: Context) -> Router {
    api::routes()
        .merge(callbacks::routes())
        .merge(v1::routes())
        .merge(v1_record::routes())
        .merge(v1_recordings::routes())
        .merge(v1_media::routes())
        .with_state(ctx)
}
