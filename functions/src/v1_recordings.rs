//! The `/v1` API of specific recording (seed 004): start a recording of a domain's stream or a
//! source URL with a `RecordId` (`POST /v1/recordings`, Tencent's `CreateRecordTask` fields),
//! look at it, list the unfinished ones, and stop it (`DELETE`). Automatic recordings (a push on
//! a bound domain) show up here too.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use relaycast_core::app::recording::{self as uc, RecordingError};
use relaycast_core::domain::api_error::ApiRefusal;
use relaycast_core::domain::recording::request::RecordTaskInput;
use serde_json::{json, Value};

use crate::v1::{account, json_body, limit, run, V1Error};
use crate::Context;

/// The recording routes.
pub fn routes() -> Router<Context> {
    Router::new()
        .route("/v1/recordings", get(list).post(create))
        .route("/v1/recordings/{id}", get(show).delete(stop))
}

impl From<RecordingError> for V1Error {
    fn from(e: RecordingError) -> Self {
        match e {
            RecordingError::Refused(r) => V1Error::Refused(r),
            RecordingError::NotFound(id) => V1Error::Refused(ApiRefusal::not_found(
                "ResourceNotFound.TaskNotFound",
                format!("recording {id} does not exist"),
            )),
            RecordingError::Exists(id) => V1Error::Refused(ApiRefusal::conflict(
                "FailedOperation.TaskAlreadyExist",
                format!("recording {id} exists already"),
            )),
            other => V1Error::Internal(other.to_string()),
        }
    }
}

async fn create(State(ctx): State<Context>, RawQuery(raw): RawQuery, body: Body) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let input: RecordTaskInput = json_body(body).await?;
        let recording =
            uc::create_specific_recording(&ctx.ports, &ctx.settings, &account.name, input).await?;
        Ok(json!({ "TaskId": recording.id }))
    })
    .await
}

async fn list(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let recordings = uc::active_recordings(&ctx.ports, &account.name, limit(&raw)).await?;
        Ok(json!({ "TotalNum": recordings.len(), "Recordings": recordings.iter().map(|r| r.to_wire()).collect::<Vec<Value>>() }))
    })
    .await
}

async fn show(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(id): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let recording = uc::get_recording(&ctx.ports, &account.name, &id).await?;
        Ok(json!({ "Recording": recording.to_wire() }))
    })
    .await
}

async fn stop(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(id): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let recording = uc::stop_recording(&ctx.ports, &account.name, &id).await?;
        tracing::info!(account = %account.name, recording = %recording.id, "recording stop requested");
        Ok(json!({ "Recording": recording.to_wire() }))
    })
    .await
}
