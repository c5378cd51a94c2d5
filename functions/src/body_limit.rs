//! The one body limit of the HTTP functions (`http.max_body_bytes`), applied by the router
//! itself so that `relaycast up` and the Lambda functions refuse the same requests the same
//! way: 413 with the error body of the API the path belongs to (the CDNetworks API's
//! `http_code`/`msg`, the callbacks' `code`/`error`/`msg`, `/v1`'s `Response.Error`).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::Context;

/// Refuses a body over the limit before a handler reads it. A declared `Content-Length` is
/// checked up front (hyper holds the body to it); a body without one is read up to the limit
/// and handed on whole.
pub(crate) async fn limit_body(
    State(ctx): State<Context>,
    request: Request,
    next: Next,
) -> Response {
    let limit = ctx.settings.http.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => return too_large(&ctx, request.uri().path(), limit).await,
        Some(_) => return next.run(request).await,
        None => {}
    }
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut read: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                // The sender broke off or sent bad chunking; nothing was handled.
                tracing::info!(error = %e, "request body could not be read");
                return (StatusCode::BAD_REQUEST, "request body could not be read").into_response();
            }
        };
        len += chunk.len();
        if len > limit {
            return too_large(&ctx, parts.uri.path(), limit).await;
        }
        read.push(chunk);
    }
    let body = match read.len() {
        0 => Body::empty(),
        1 => Body::from(read.remove(0)),
        _ => Body::from(read.concat()),
    };
    next.run(Request::from_parts(parts, body)).await
}

async fn too_large(ctx: &Context, path: &str, limit: usize) -> Response {
    metrics::counter!("relaycast_http_bodies_too_large_total").increment(1);
    tracing::info!(path, limit, "request body over the limit refused");
    if path.starts_with("/callbacks/") {
        crate::callbacks::body_too_large(ctx, path).await
    } else if path.starts_with("/v1/") {
        crate::v1::body_too_large(limit)
    } else {
        crate::api::body_too_large(limit, ctx.ports.clock.now_ms())
    }
}
