//! The host's own HTTP routes (`/healthz`, `/metrics`, `/objects/*`) and the middleware shared by
//! every route; the function handlers are merged in by [`crate::host`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use relaycast_core::adapters::DirObjectStore;
use relaycast_core::ports::{ObjectStore, Queue};
use serde::Deserialize;

/// Queues whose depth `/metrics` reports.
pub const OBSERVED_QUEUES: &[&str] = &["relay-jobs", "record-jobs", "callbacks"];

/// What the host routes need.
#[derive(Clone)]
pub struct HostState {
    /// The queue, for depth gauges.
    pub queue: Arc<dyn Queue>,
    /// The local object store, served under `/objects/`.
    pub objects: Arc<DirObjectStore>,
    /// The metrics registry.
    pub metrics: PrometheusHandle,
}

/// `/healthz`, `/metrics`, `/objects/*key`.
pub fn host_routes(state: HostState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .route("/objects/{*key}", get(serve_object))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn render_metrics(State(state): State<HostState>) -> Response {
    for name in OBSERVED_QUEUES {
        // A scrape must not fail because one gauge could not be read; the gauge keeps its
        // last value and the error is logged.
        match state.queue.stats(name).await {
            Ok(stats) => {
                metrics::gauge!("relaycast_queue_visible_messages", "queue" => *name).set(stats.visible as f64);
                metrics::gauge!("relaycast_queue_in_flight_messages", "queue" => *name).set(stats.in_flight as f64);
                metrics::gauge!("relaycast_queue_delayed_messages", "queue" => *name).set(stats.delayed as f64);
            }
            Err(e) => tracing::warn!(queue = name, error = %e, "queue stats unavailable"),
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

#[derive(Deserialize)]
struct SignedQuery {
    expires: Option<i64>,
    sig: Option<String>,
}

async fn serve_object(
    State(state): State<HostState>,
    Path(key): Path<String>,
    Query(q): Query<SignedQuery>,
) -> Response {
    let (Some(expires), Some(sig)) = (q.expires, q.sig) else {
        return (StatusCode::FORBIDDEN, "missing expires or sig").into_response();
    };
    if !state.objects.verify_playback_signature(&key, expires, &sig) {
        return (StatusCode::FORBIDDEN, "signature invalid or expired").into_response();
    }
    match state.objects.get(&key).await {
        Ok(Some(object)) => {
            let stream = tokio_util::io::ReaderStream::new(object.body);
            Response::builder()
                .header(header::CONTENT_TYPE, content_type_of(&key))
                .header(header::CONTENT_LENGTH, object.meta.size)
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(key, error = %e, "object read failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn content_type_of(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("mp4") => "video/mp4",
        Some("flv") => "video/x-flv",
        Some("aac") => "audio/aac",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// Counts requests and their latency per route and status, and logs one line per request.
pub async fn observe_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    metrics::counter!("relaycast_http_requests_total", "route" => route.clone(), "status" => status.clone()).increment(1);
    metrics::histogram!("relaycast_http_request_duration_seconds", "route" => route.clone()).record(elapsed.as_secs_f64());
    tracing::info!(%method, route, status, ms = elapsed.as_millis() as u64, "http request");
    response
}
