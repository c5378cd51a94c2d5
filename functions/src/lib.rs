//! relaycast functions: short-lived handlers that run unchanged in two hosts, an AWS Lambda
//! bootstrap binary and the local all-in-one server (`relaycast up`).
//!
//! A handler is thin: parse, call the domain in `relaycast-core`, map the result to the wire.

pub mod api;
mod body_limit;
pub mod callbacks;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(feature = "test-support")]
pub mod lambda_emulator;
pub mod notifier;
pub mod recordings;
pub mod scheduler;
pub mod v1;
pub mod v1_media;
pub mod v1_record;
pub mod v1_recordings;

use std::sync::Arc;

use axum::Router;
use relaycast_core::app::callbacks::{ConfigCache, Intake};
use relaycast_core::app::outbox::OutboxHandoff;
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
    /// Queues the callbacks of inbound events in batches.
    pub outbox: OutboxHandoff,
}

impl Context {
    /// What the inbound callback handlers take events with.
    pub fn intake(&self) -> Intake<'_> {
        Intake {
            ports: &self.ports,
            settings: &self.settings,
            cache: &self.config_cache,
            handoff: &self.outbox,
        }
    }

    /// A context over `ports` and `settings`.
    pub fn new(ports: Ports, settings: Arc<Settings>) -> Self {
        Self {
            ports,
            settings,
            config_cache: Arc::default(),
            outbox: OutboxHandoff::default(),
        }
    }
}

/// Every HTTP function, mounted on one router: what `relaycast up` serves. On AWS the same
/// routes are split between two functions ([`api_routes`], [`callback_routes`]).
pub fn http_routes(ctx: Context) -> Router {
    api_routes(ctx.clone()).merge(callback_routes(ctx))
}

/// The control APIs: the CDNetworks relay API and `/v1` (callback, recording and media
/// management), called by customers (the `relaycast-api` function).
pub fn api_routes(ctx: Context) -> Router {
    limited(
        api::routes()
            .merge(v1::routes())
            .merge(v1_record::routes())
            .merge(v1_recordings::routes())
            .merge(v1_media::routes()),
        ctx,
    )
}

/// The inbound event callbacks, called by ingest servers (the `relaycast-callbacks`
/// function): a function of their own because senders want an answer within a few seconds
/// whatever the API's load, and they need neither the API's accounts nor its rate limits.
pub fn callback_routes(ctx: Context) -> Router {
    limited(callbacks::routes(), ctx)
}

/// `routes` with their state and the body limit of `http.max_body_bytes`.
fn limited(routes: Router<Context>, ctx: Context) -> Router {
    routes
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            body_limit::limit_body,
        ))
        .with_state(ctx)
}
