//! The media library's `/v1` API (SCHEMAS.md §5): `POST /v1/media/search` (`SearchMedia`),
//! `GET /v1/media/{FileId}` and `DELETE /v1/media/{FileId}` (`DeleteMedia`), each in one
//! namespace (`SubAppId`, default 0).

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use relaycast_core::app::media::{self as uc, MediaError};
use relaycast_core::domain::api_error::ApiRefusal;
use relaycast_core::domain::recording::media::SearchMediaInput;
use serde_json::{json, Value};

use crate::v1::{account, json_body, param, run, V1Error};
use crate::Context;

/// The media routes.
pub fn routes() -> Router<Context> {
    Router::new()
        .route("/v1/media/search", post(search))
        .route("/v1/media/{file_id}", get(show).delete(remove))
}

impl From<MediaError> for V1Error {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Refused(r) => V1Error::Refused(r),
            other => V1Error::Internal(other.to_string()),
        }
    }
}

fn namespace(raw: &Option<String>) -> Result<u64, V1Error> {
    match param(raw, "SubAppId") {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| V1Error::Refused(ApiRefusal::invalid("SubAppId", "not an integer"))),
    }
}

async fn search(State(ctx): State<Context>, RawQuery(raw): RawQuery, body: Body) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let input: SearchMediaInput = json_body(body).await?;
        let search = input.parse()?;
        let (total, page) = uc::search_media(&ctx.ports, &account.name, &search).await?;
        Ok(json!({ "TotalCount": total, "MediaInfoSet": page.iter().map(|(m, url)| m.to_wire(url)).collect::<Vec<Value>>() }))
    })
    .await
}

async fn show(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(file_id): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let (media, url) =
            uc::get_media(&ctx.ports, &account.name, namespace(&raw)?, &file_id).await?;
        Ok(json!({ "MediaInfo": media.to_wire(&url) }))
    })
    .await
}

async fn remove(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(file_id): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        uc::delete_media(&ctx.ports, &account.name, namespace(&raw)?, &file_id).await?;
        Ok(json!({}))
    })
    .await
}
