//! The relay control API, wire-compatible with CDNetworks Live Ingest & Forwarding (seed 001):
//! `POST /api/cdn/v2/forwardRequest.action` and `GET /api/cdn/v2/forwardQueryByPage.action`.
//! Thin: authenticate, parse, call the use case, map the result to the seed's JSON.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use relaycast_core::app::auth::authenticate;
use relaycast_core::app::relay::{execute_forward_request, list_account_tasks};
use relaycast_core::app::AppError;
use relaycast_core::domain::auth::Account;
use relaycast_core::domain::error::accepted_wire;
use relaycast_core::domain::relay::events::TimeFormat;
use relaycast_core::domain::relay::query::{run_query, QueryParams};
use relaycast_core::domain::relay::task::RelayTask;
use relaycast_core::domain::relay::wire::{parse_forward_request_at, MAX_BODY_BYTES};
use relaycast_core::domain::RequestError;
use relaycast_core::ports::TypedStore;

use crate::Context;

/// The paths of the API.
pub const FORWARD_REQUEST_PATH: &str = "/api/cdn/v2/forwardRequest.action";
/// The task query path.
pub const FORWARD_QUERY_PATH: &str = "/api/cdn/v2/forwardQueryByPage.action";

/// The API's routes.
pub fn routes() -> Router<Context> {
    Router::new()
        .route(FORWARD_REQUEST_PATH, post(forward_request))
        .route(FORWARD_QUERY_PATH, get(forward_query))
}

/// An answer of the API: the seed's JSON with the matching HTTP status.
pub(crate) enum ApiError {
    App(AppError),
}

impl<E: Into<AppError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::App(e.into())
    }
}

/// The one place errors become HTTP: rule errors carry the seed's status, code and message;
/// anything else is ours, a 500 with no internals in the body.
fn error_response(error: ApiError, call_time: i64) -> Response {
    let ApiError::App(error) = error;
    match error {
        AppError::Request(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            metrics::counter!("relaycast_api_refusals_total", "http_code" => e.http_code())
                .increment(1);
            (status, Json(e.to_wire(call_time))).into_response()
        }
        other => {
            tracing::error!(error = %other, "request failed");
            let body = serde_json::json!({ "http_code": "500", "msg": "internal server error", "call_time": call_time });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
    }
}

/// The answer to a body over `http.max_body_bytes`.
pub(crate) fn body_too_large(limit: usize, call_time: i64) -> Response {
    error_response(RequestError::BodyTooLong(limit).into(), call_time)
}

pub(crate) fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn auth(ctx: &Context, pairs: &[(String, String)]) -> Result<Account, ApiError> {
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    Ok(authenticate(
        &ctx.ports,
        &ctx.settings.timing,
        get("n"),
        get("r"),
        get("k"),
    )
    .await?)
}

/// Reads at most `limit` bytes; a larger body is refused as a format error of the body.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| RequestError::field("body"))
}

async fn forward_request(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    let call_time = ctx.ports.clock.now_ms();
    let result: Result<(), ApiError> = async {
        let account = auth(&ctx, &query_pairs(&raw)).await?;
        let body = read_body(body, MAX_BODY_BYTES).await?;
        let req = parse_forward_request_at(&body, ctx.ports.clock.now_ms())?;
        let outcome = execute_forward_request(&ctx.ports, &ctx.settings, &account, &req).await?;
        tracing::info!(
            account = %account.name,
            cmd = ?req.cmd(),
            tasks = outcome.tasks_written,
            events = outcome.events,
            jobs = outcome.jobs,
            refused = outcome.refused.len(),
            "forward request accepted"
        );
        Ok(())
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, Json(accepted_wire(call_time))).into_response(),
        Err(e) => error_response(e, call_time),
    }
}

async fn forward_query(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    let call_time = ctx.ports.clock.now_ms();
    let result: Result<Response, ApiError> = async {
        let pairs = query_pairs(&raw);
        let account = auth(&ctx, &pairs).await?;
        let params = QueryParams::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let tasks = match &params.filter.id {
            // An exact id is one read, not a listing.
            Some(id) => ctx
                .ports
                .store
                .load::<RelayTask>(&RelayTask::store_key(&account.name, id))
                .await?
                .map(|v| vec![v.value])
                .unwrap_or_default(),
            None => list_account_tasks(&ctx.ports, &account.name).await?,
        };
        let format = ctx
            .settings
            .utc_offset()
            .map(|o| TimeFormat {
                utc_offset_secs: o.local_minus_utc(),
            })
            .unwrap_or_default();
        let page = run_query(&tasks, &params, &format);
        Ok((StatusCode::OK, Json(page)).into_response())
    }
    .await;
    result.unwrap_or_else(|e| error_response(e, call_time))
}
