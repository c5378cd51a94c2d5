//! Inbound event callbacks: `POST /callbacks/css` (Tencent CSS, signed), `POST
//! /callbacks/nginx-rtmp` and `POST /callbacks/srs` (hooks, authenticated by the account's hook
//! token in the query). An event is answered 200 `{"code":0}` only once it is durably stored;
//! a store failure answers 500 so that the sender retries.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use relaycast_core::app::callbacks::{
    ingest_css, ingest_hook, CallbackError, HookDialect, Ingested,
};
use relaycast_core::app::recording::on_stream_event;
use relaycast_core::domain::callbacks::hooks::HookOrigin;
use relaycast_core::domain::callbacks::{InboundError, StreamEventKind, MAX_INBOUND_BODY_BYTES};
use serde_json::json;

use crate::Context;

/// Where CSS events are posted.
pub const CSS_PATH: &str = "/callbacks/css";
/// Where nginx-rtmp's `on_*` hooks point.
pub const NGINX_RTMP_PATH: &str = "/callbacks/nginx-rtmp";
/// Where SRS's `http_hooks` point.
pub const SRS_PATH: &str = "/callbacks/srs";

/// The inbound callback routes.
pub fn routes() -> Router<Context> {
    Router::new()
        .route(CSS_PATH, post(css))
        .route(NGINX_RTMP_PATH, post(nginx_rtmp))
        .route(SRS_PATH, post(srs))
}

/// Reads the body, refusing one over the limit without buffering more than it.
async fn read_body(body: Body) -> Result<Bytes, InboundError> {
    axum::body::to_bytes(body, MAX_INBOUND_BODY_BYTES)
        .await
        .map_err(|_| InboundError::TooLarge)
}

/// The answer to a body over `http.max_body_bytes` (which is at least the callbacks' own
/// limit, so it is the same refusal).
pub(crate) async fn body_too_large(ctx: &Context, path: &str) -> Response {
    let endpoint = match path {
        CSS_PATH => "css",
        NGINX_RTMP_PATH => "nginx-rtmp",
        SRS_PATH => "srs",
        _ => "unknown",
    };
    answer(ctx, Err(InboundError::TooLarge.into()), endpoint).await
}

async fn answer(
    ctx: &Context,
    result: Result<Ingested, CallbackError>,
    endpoint: &'static str,
) -> Response {
    match result {
        Ok(ingested) => {
            match &ingested.event {
                Some(event) => {
                    tracing::info!(endpoint, event = %event.id, kind = event.kind.as_str(), stream = %event.stream.joined(), account = %event.account, "stream event stored");
                }
                None => {
                    metrics::counter!("relaycast_stream_events_repeated_total", "endpoint" => endpoint).increment(1);
                    tracing::debug!(endpoint, "repeated stream event acknowledged");
                }
            }
            let trigger = ingested.event.as_ref().or(ingested.repeated_push.as_ref());
            if let Some(event) = trigger.filter(|e| {
                matches!(
                    e.kind,
                    StreamEventKind::Publish | StreamEventKind::Unpublish
                )
            }) {
                // Before the answer, so a push and its stop are applied in order; the event is
                // stored whatever happens here.
                if let Err(e) = on_stream_event(&ctx.ports, event).await {
                    metrics::counter!("relaycast_recording_trigger_errors_total").increment(1);
                    tracing::error!(stream = %event.stream.joined(), error = %e, "automatic recording not updated");
                }
            }
            (StatusCode::OK, Json(json!({ "code": 0 }))).into_response()
        }
        Err(CallbackError::Inbound(e)) => {
            metrics::counter!("relaycast_stream_events_refused_total", "endpoint" => endpoint, "reason" => e.code()).increment(1);
            tracing::info!(endpoint, reason = e.code(), error = %e, "stream event refused");
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            (
                status,
                Json(json!({ "code": e.http_status(), "error": e.code(), "msg": e.to_string() })),
            )
                .into_response()
        }
        Err(e) => {
            // Ours, not the sender's: nothing was acknowledged, so it must retry.
            tracing::error!(endpoint, error = %e, "stream event could not be stored");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "code": 500, "error": "internal", "msg": "the event could not be stored; retry" }))).into_response()
        }
    }
}

async fn css(State(ctx): State<Context>, body: Body) -> Response {
    let result = async {
        let body = read_body(body).await?;
        ingest_css(ctx.intake(), &body).await
    }
    .await;
    answer(&ctx, result, "css").await
}

fn hook_query(raw: &Option<String>) -> (Option<String>, Option<String>) {
    let pairs: Vec<(String, String)> = raw
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    (get("token"), get("domain").filter(|d| !d.is_empty()))
}

async fn hook(
    ctx: Context,
    dialect: HookDialect,
    raw: Option<String>,
    request: Request,
) -> Result<Ingested, CallbackError> {
    let sender_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let (token, domain) = hook_query(&raw);
    let body = read_body(request.into_body()).await?;
    let origin = HookOrigin { domain, sender_ip };
    ingest_hook(ctx.intake(), dialect, token.as_deref(), &origin, &body).await
}

async fn nginx_rtmp(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Response {
    let result = hook(ctx.clone(), HookDialect::NginxRtmp, raw, request).await;
    answer(&ctx, result, "nginx-rtmp").await
}

async fn srs(State(ctx): State<Context>, RawQuery(raw): RawQuery, request: Request) -> Response {
    let result = hook(ctx.clone(), HookDialect::Srs, raw, request).await;
    answer(&ctx, result, "srs").await
}
