//! The host's own HTTP routes (`/healthz`, `/metrics`, `/objects/*`) and the middleware shared by
//! every route; the function handlers are merged in by [`crate::host`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use relaycast_core::ports::{ObjectStore, Queue};
use relaycast_embedded::DirObjectStore;
use serde::Deserialize;

/// Queues whose depth `/metrics` reports: every queue the service uses.
pub const OBSERVED_QUEUES: &[&str] = relaycast_core::ports::queue::QUEUES;

/// What the host routes need.
#[derive(Clone)]
pub struct HostState {
    /// The queue, for depth gauges.
    pub queue: Arc<dyn Queue>,
    /// The local object store, served under `/objects/`; `None` on adapters whose playback URLs
    /// point elsewhere (S3 presigned URLs), and then there is no `/objects/` route.
    pub objects: Option<Arc<DirObjectStore>>,
    /// The metrics registry.
    pub metrics: PrometheusHandle,
}

/// `/healthz`, `/metrics`, `/objects/*key`.
pub fn host_routes(state: HostState) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics));
    let router = match &state.objects {
        Some(objects) => router.route(
            "/objects/{*key}",
            get(serve_object).with_state(objects.clone()),
        ),
        None => router,
    };
    router.with_state(state)
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
                metrics::gauge!("relaycast_queue_visible_messages", "queue" => *name)
                    .set(stats.visible as f64);
                metrics::gauge!("relaycast_queue_in_flight_messages", "queue" => *name)
                    .set(stats.in_flight as f64);
                metrics::gauge!("relaycast_queue_delayed_messages", "queue" => *name)
                    .set(stats.delayed as f64);
            }
            Err(e) => tracing::warn!(queue = name, error = %e, "queue stats unavailable"),
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SignedQuery {
    expires: Option<i64>,
    sig: Option<String>,
}

async fn serve_object(
    State(objects): State<Arc<DirObjectStore>>,
    Path(key): Path<String>,
    Query(q): Query<SignedQuery>,
    headers: HeaderMap,
) -> Response {
    let (Some(expires), Some(sig)) = (q.expires, q.sig) else {
        return (StatusCode::FORBIDDEN, "missing expires or sig").into_response();
    };
    if !objects.verify_playback_signature(&key, expires, &sig) {
        return (StatusCode::FORBIDDEN, "signature invalid or expired").into_response();
    }
    let failed = |e: relaycast_core::ports::ObjectStoreError| {
        tracing::error!(key, error = %e, "object read failed");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    };
    if key.ends_with(".m3u8") {
        return match read_small(&objects, &key).await {
            Ok(Some(text)) => playlist_response(&objects, &key, &text, expires),
            Ok(None) => StatusCode::NOT_FOUND.into_response(),
            Err(e) => failed(e),
        };
    }
    let size = match objects.list(&key).await {
        Ok(list) => match list.into_iter().find(|m| m.key == key) {
            Some(meta) => meta.size,
            None => return StatusCode::NOT_FOUND.into_response(),
        },
        Err(e) => return failed(e),
    };
    let range = match headers
        .get(header::RANGE)
        .map(|v| parse_range(v.to_str().unwrap_or(""), size))
    {
        None => None,
        Some(Some(range)) => Some(range),
        Some(None) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::RANGE_NOT_SATISFIABLE.into_response())
        }
    };
    let (offset, len) = range.map_or((0, size), |(a, b)| (a, b - a + 1));
    match objects.get_range(&key, offset, Some(len)).await {
        Ok(Some(object)) => {
            let builder = Response::builder()
                .header(header::CONTENT_TYPE, content_type_of(&key))
                .header(header::ACCEPT_RANGES, "bytes")
                .header(header::CONTENT_LENGTH, len);
            let builder = match range {
                Some((a, b)) => builder.status(StatusCode::PARTIAL_CONTENT).header(
                    header::CONTENT_RANGE,
                    format!("bytes {a}-{b}/{}", object.meta.size),
                ),
                None => builder,
            };
            builder
                .body(Body::from_stream(tokio_util::io::ReaderStream::new(
                    object.body,
                )))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => failed(e),
    }
}

/// Longest playlist the host rewrites (a day of 4 s segments is about 2 MB).
const MAX_PLAYLIST_BYTES: u64 = 8 * 1024 * 1024;

async fn read_small(
    objects: &DirObjectStore,
    key: &str,
) -> Result<Option<String>, relaycast_core::ports::ObjectStoreError> {
    use tokio::io::AsyncReadExt;
    let Some(object) = objects.get(key).await? else {
        return Ok(None);
    };
    let mut text = String::new();
    object
        .body
        .take(MAX_PLAYLIST_BYTES)
        .read_to_string(&mut text)
        .await?;
    Ok(Some(text))
}

/// A playlist with every relative URI (segments, `EXT-X-MAP`) made a signed URL of this host
/// with the playlist's own expiry: the segments are objects of their own, and a player that
/// followed a bare relative URI would be refused.
fn playlist_response(objects: &DirObjectStore, key: &str, text: &str, expires: i64) -> Response {
    let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
    let sign = |uri: &str| -> String {
        if uri.contains("://") || uri.starts_with('/') {
            return uri.to_string();
        }
        let target = if dir.is_empty() {
            uri.to_string()
        } else {
            format!("{dir}/{uri}")
        };
        if relaycast_core::ports::validate_object_key(&target).is_err() {
            return uri.to_string();
        }
        format!(
            "/objects/{target}?{}",
            objects.signed_query(&target, expires)
        )
    };
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            let (uri, tail) = rest.split_once('"').unwrap_or((rest, ""));
            out.push_str(&format!("#EXT-X-MAP:URI=\"{}\"{tail}", sign(uri)));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            out.push_str(&sign(line.trim()));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        out,
    )
        .into_response()
}

/// A single `bytes=` range of an object of `size` bytes as inclusive `(first, last)`; `None`
/// when it cannot be satisfied (or is not one range).
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = match (a.is_empty(), b.is_empty()) {
        (false, false) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
        (false, true) => (a.parse().ok()?, size - 1),
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            if n == 0 {
                return None;
            }
            (size.saturating_sub(n), size - 1)
        }
        (true, true) => return None,
    };
    (first <= last && first < size).then_some((first, last))
}

fn content_type_of(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("m4s") => "video/iso.segment",
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
    metrics::histogram!("relaycast_http_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
    tracing::info!(%method, route, status, ms = elapsed.as_millis() as u64, "http request");
    response
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=500-", 1000), Some((500, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-5000", 1000), Some((0, 999)));
        for bad in [
            "bytes=1000-",
            "bytes=5-1",
            "bytes=-0",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=x-1",
            "bytes=-",
        ] {
            assert_eq!(parse_range(bad, 1000), None, "{bad}");
        }
    }
}
