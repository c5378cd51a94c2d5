//! The `/v1` API of the callbacks capability: callback templates and rules, hook URLs, publish
//! authorization, the live stream registry, the delivery log and dead letters. JSON with
//! Tencent's field names in Tencent Cloud API 3.0's envelope (`{"Response": {..., "RequestId"}}`),
//! authenticated with the same `n`/`r`/`k` query signature as the forward API.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use relaycast_core::app::callbacks::{self as uc, CallbackError};
use relaycast_core::app::AppError;
use relaycast_core::domain::api_error::ApiRefusal;
use relaycast_core::domain::auth::Account;
use relaycast_core::domain::callbacks::publish_auth::PublishAuthInput;
use relaycast_core::domain::callbacks::template::{CallbackRuleInput, CallbackTemplateInput};
use relaycast_core::domain::callbacks::StreamPath;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::api::{auth, query_pairs, ApiError};
use crate::callbacks::{CSS_PATH, NGINX_RTMP_PATH, SRS_PATH};
use crate::Context;

/// Largest `/v1` request body.
const MAX_V1_BODY_BYTES: usize = 64 * 1024;

/// The `/v1` routes.
pub fn routes() -> Router<Context> {
    Router::new()
        .route("/v1/hooks", get(hooks))
        .route("/v1/hooks/rotate", post(rotate_hooks))
        .route(
            "/v1/callback-templates",
            get(list_templates).post(create_template),
        )
        .route(
            "/v1/callback-templates/{id}",
            get(get_template)
                .put(modify_template)
                .delete(delete_template),
        )
        .route("/v1/callback-rules", get(list_rules).post(create_rule))
        .route("/v1/callback-rules/{domain}", delete(delete_domain_rule))
        .route("/v1/callback-rules/{domain}/{app}", delete(delete_app_rule))
        .route("/v1/publish-auth", get(list_publish_auth))
        .route(
            "/v1/publish-auth/{domain}",
            put(put_publish_auth).delete(delete_publish_auth),
        )
        .route("/v1/streams", get(live_streams))
        .route(
            "/v1/streams/{domain}/{app}/{stream}/sessions",
            get(stream_sessions),
        )
        .route("/v1/callbacks/deliveries", get(deliveries))
        .route("/v1/callbacks/dead-letters", get(dead_letters))
        .route("/v1/callbacks/dead-letters/{id}/redrive", post(redrive))
}

/// A `/v1` failure on its way to the wire (shared by every `/v1` module).
pub(crate) enum V1Error {
    Refused(ApiRefusal),
    Auth(relaycast_core::domain::RequestError),
    Internal(String),
}

impl From<CallbackError> for V1Error {
    fn from(e: CallbackError) -> Self {
        match e {
            CallbackError::Refused(r) => V1Error::Refused(r),
            CallbackError::Inbound(e) => V1Error::Refused(ApiRefusal::invalid("request", e)),
            other => V1Error::Internal(other.to_string()),
        }
    }
}

impl From<ApiRefusal> for V1Error {
    fn from(e: ApiRefusal) -> Self {
        V1Error::Refused(e)
    }
}

impl From<relaycast_core::ports::StoreError> for V1Error {
    fn from(e: relaycast_core::ports::StoreError) -> Self {
        V1Error::Internal(e.to_string())
    }
}

impl From<ApiError> for V1Error {
    fn from(e: ApiError) -> Self {
        let ApiError::App(e) = e;
        match e {
            AppError::Request(r) => V1Error::Auth(r),
            other => V1Error::Internal(other.to_string()),
        }
    }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn ok(fields: Value) -> Response {
    let mut map = match fields {
        Value::Object(m) => m,
        other => Map::from_iter([("Result".to_string(), other)]),
    };
    map.insert("RequestId".into(), json!(request_id()));
    (StatusCode::OK, Json(json!({ "Response": map }))).into_response()
}

/// The answer to a body over `http.max_body_bytes`: Tencent's common error for it.
pub(crate) fn body_too_large(limit: usize) -> Response {
    error_response(V1Error::Refused(ApiRefusal {
        code: "RequestSizeLimitExceeded",
        message: format!("the request body is larger than {limit} bytes"),
        status: 413,
    }))
}

fn error_response(e: V1Error) -> Response {
    let (status, code, message) = match e {
        V1Error::Refused(r) => (r.status, r.code.to_string(), r.message),
        V1Error::Auth(r) => (r.http_status(), "AuthFailure".to_string(), r.to_string()),
        V1Error::Internal(reason) => {
            tracing::error!(error = %reason, "v1 request failed");
            (
                500,
                "InternalError".to_string(),
                "internal error".to_string(),
            )
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(json!({ "Response": { "Error": { "Code": code, "Message": message }, "RequestId": request_id() } }))).into_response()
}

/// The signed account of a `/v1` request.
pub(crate) async fn account(ctx: &Context, raw: &Option<String>) -> Result<Account, V1Error> {
    Ok(auth(ctx, &query_pairs(raw)).await?)
}

/// The request body as `T`; an empty body is `{}`.
pub(crate) async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, V1Error> {
    let bytes = axum::body::to_bytes(body, MAX_V1_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiRefusal::invalid("body", format!("larger than {MAX_V1_BODY_BYTES} bytes"))
        })?;
    let bytes = if bytes.is_empty() {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes).map_err(|e| V1Error::Refused(ApiRefusal::from_json(&e)))
}

/// A query parameter, `None` when absent or empty.
pub(crate) fn param(raw: &Option<String>, name: &str) -> Option<String> {
    query_pairs(raw)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

pub(crate) fn limit(raw: &Option<String>) -> usize {
    param(raw, "Limit")
        .or_else(|| param(raw, "limit"))
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000)
}

/// A `TemplateId` path segment.
pub(crate) fn template_id(raw: &str) -> Result<u64, V1Error> {
    raw.parse()
        .map_err(|_| V1Error::Refused(ApiRefusal::invalid("TemplateId", "not an integer")))
}

/// Runs a handler body and maps its failure to the envelope.
pub(crate) async fn run<F>(f: F) -> Response
where
    F: std::future::Future<Output = Result<Value, V1Error>>,
{
    match f.await {
        Ok(v) => ok(v),
        Err(e) => error_response(e),
    }
}

async fn hooks(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let token = uc::hook_token(&ctx.ports, &account.name).await?;
        Ok(hook_urls(&ctx, token.expose()))
    })
    .await
}

async fn rotate_hooks(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let token = uc::rotate_hook_token(&ctx.ports, &account.name).await?;
        ctx.config_cache.invalidate();
        tracing::info!(account = %account.name, "hook token rotated");
        Ok(hook_urls(&ctx, token.expose()))
    })
    .await
}

/// The ready-to-paste hook URLs of a token (add `&domain=<push domain>` to name the domain).
fn hook_urls(ctx: &Context, token: &str) -> Value {
    let base = ctx.settings.public_url();
    let base = base.trim_end_matches('/');
    let nginx = format!("{base}{NGINX_RTMP_PATH}?token={token}");
    let srs = format!("{base}{SRS_PATH}?token={token}");
    json!({
        "HookToken": token,
        "NginxRtmpUrl": nginx,
        "SrsUrl": srs,
        "CssUrl": format!("{base}{CSS_PATH}"),
        "NginxRtmpConfig": format!(
            "on_publish {nginx};\non_publish_done {nginx};\non_play {nginx};\non_play_done {nginx};\non_record_done {nginx};\non_update {nginx};"
        ),
        "SrsConfig": format!("http_hooks {{ enabled on; on_publish {srs}; on_unpublish {srs}; on_dvr {srs}; on_hls {srs}; }}"),
        "Note": "add &domain=<push domain> to name the push domain of an ingest server; otherwise the tcUrl host (nginx-rtmp) or the vhost (SRS) is used",
    })
}

async fn list_templates(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let templates = uc::list_templates(&ctx.ports, &account.name).await?;
        Ok(json!({ "Templates": templates.iter().map(|t| t.to_wire()).collect::<Vec<_>>() }))
    })
    .await
}

async fn create_template(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let input: CallbackTemplateInput = json_body(body).await?;
        let t = uc::create_template(&ctx.ports, &ctx.settings, &account.name, input).await?;
        ctx.config_cache.invalidate();
        tracing::info!(account = %account.name, template = t.id, "callback template created");
        Ok(json!({ "TemplateId": t.id }))
    })
    .await
}

async fn get_template(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(id): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let t = uc::get_template(&ctx.ports, &account.name, template_id(&id)?).await?;
        Ok(json!({ "Template": t.value.to_wire() }))
    })
    .await
}

async fn modify_template(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let input: CallbackTemplateInput = json_body(body).await?;
        let t = uc::modify_template(
            &ctx.ports,
            &ctx.settings,
            &account.name,
            template_id(&id)?,
            input,
        )
        .await?;
        ctx.config_cache.invalidate();
        Ok(json!({ "Template": t.to_wire() }))
    })
    .await
}

async fn delete_template(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(id): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        uc::delete_template(&ctx.ports, &account.name, template_id(&id)?).await?;
        ctx.config_cache.invalidate();
        Ok(json!({}))
    })
    .await
}

/// The offset rule times are shown in (Beijing time unless configured).
pub(crate) fn utc_offset(ctx: &Context) -> i32 {
    ctx.settings
        .utc_offset()
        .map(|o| o.local_minus_utc())
        .unwrap_or(8 * 3600)
}

async fn list_rules(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let rules = uc::list_rules(&ctx.ports, &account.name).await?;
        let offset = utc_offset(&ctx);
        Ok(json!({ "Rules": rules.iter().map(|r| r.to_wire(offset)).collect::<Vec<_>>() }))
    })
    .await
}

async fn create_rule(State(ctx): State<Context>, RawQuery(raw): RawQuery, body: Body) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let input: CallbackRuleInput = json_body(body).await?;
        let rule = uc::create_rule(&ctx.ports, &account.name, input).await?;
        ctx.config_cache.invalidate();
        Ok(json!({ "Rule": rule.to_wire(utc_offset(&ctx)) }))
    })
    .await
}

async fn delete_domain_rule(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(domain): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        uc::delete_rule(&ctx.ports, &account.name, &domain, "").await?;
        ctx.config_cache.invalidate();
        Ok(json!({}))
    })
    .await
}

async fn delete_app_rule(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path((domain, app)): Path<(String, String)>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        uc::delete_rule(&ctx.ports, &account.name, &domain, &app).await?;
        ctx.config_cache.invalidate();
        Ok(json!({}))
    })
    .await
}

async fn list_publish_auth(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let rules = uc::list_publish_auth(&ctx.ports, &account.name).await?;
        Ok(json!({ "Rules": rules.iter().map(|r| r.to_wire()).collect::<Vec<_>>() }))
    })
    .await
}

async fn put_publish_auth(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(domain): Path<String>,
    body: Body,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let input: PublishAuthInput = json_body(body).await?;
        let rule = uc::put_publish_auth(&ctx.ports, &account.name, &domain, input).await?;
        tracing::info!(account = %account.name, domain = %rule.domain, enabled = rule.enabled, "publish authorization set");
        Ok(json!({ "Rule": rule.to_wire() }))
    })
    .await
}

async fn delete_publish_auth(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(domain): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        uc::delete_publish_auth(&ctx.ports, &account.name, &domain).await?;
        Ok(json!({}))
    })
    .await
}

async fn live_streams(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let streams = uc::live_streams(&ctx.ports, &account.name, limit(&raw)).await?;
        Ok(json!({ "TotalNum": streams.len(), "Streams": streams.iter().map(|s| s.to_wire()).collect::<Vec<_>>() }))
    })
    .await
}

fn stream_path(domain: &str, app: &str, stream: &str) -> Result<StreamPath, V1Error> {
    StreamPath::parse(domain, app, stream)
        .map_err(|e| V1Error::Refused(ApiRefusal::invalid("stream", e)))
}

async fn stream_sessions(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path((domain, app, stream)): Path<(String, String, String)>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let path = stream_path(&domain, &app, &stream)?;
        let sessions = uc::stream_sessions(&ctx.ports, &account.name, &path, limit(&raw)).await?;
        Ok(json!({ "Sessions": sessions.iter().map(|s| s.to_wire()).collect::<Vec<_>>() }))
    })
    .await
}

async fn deliveries(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let entries = match (
            param(&raw, "event_id"),
            param(&raw, "domain"),
            param(&raw, "app"),
            param(&raw, "stream"),
        ) {
            (Some(id), _, _, _) => uc::deliveries_of_event(&ctx.ports, &account.name, &id).await?,
            (None, Some(d), Some(a), Some(s)) => {
                uc::deliveries_of_stream(
                    &ctx.ports,
                    &account.name,
                    &stream_path(&d, &a, &s)?,
                    limit(&raw) as u64,
                )
                .await?
            }
            _ => return Err(ApiRefusal::missing("event_id (or domain, app and stream)").into()),
        };
        Ok(json!({ "Deliveries": entries.iter().map(|e| e.to_wire()).collect::<Vec<_>>() }))
    })
    .await
}

async fn dead_letters(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let entries = uc::dead_letters(&ctx.ports, &account.name, limit(&raw)).await?;
        Ok(json!({ "DeadLetters": entries.iter().map(|e| e.to_wire()).collect::<Vec<_>>() }))
    })
    .await
}

async fn redrive(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(id): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let entry = uc::redrive(&ctx.ports, &account.name, &id).await?;
        tracing::info!(account = %account.name, entry = %entry.id, "dead letter re-driven");
        Ok(json!({ "Delivery": entry.to_wire() }))
    })
    .await
}
