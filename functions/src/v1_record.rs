//! The `/v1` API of recording's control plane: recording templates, push domains and record
//! rules (SCHEMAS.md §3), in the same envelope and with the same `n`/`r`/`k` signature as the
//! rest of `/v1` (`v1.rs`, whose helpers this module uses).

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use relaycast_core::app::record_templates::{self as uc, RecordError};
use relaycast_core::domain::api_error::ApiRefusal;
use relaycast_core::domain::recording::template::{
    RecordDomainInput, RecordRuleInput, RecordingTemplateInput,
};
use serde_json::{json, Value};

use crate::api::query_pairs;
use crate::v1::{account, json_body, run, template_id, utc_offset, V1Error};
use crate::Context;

/// The recording control-plane routes.
pub fn routes() -> Router<Context> {
    Router::new()
        .route(
            "/v1/record-templates",
            get(list_templates).post(create_template),
        )
        .route(
            "/v1/record-templates/{id}",
            get(get_template)
                .put(modify_template)
                .delete(delete_template),
        )
        .route("/v1/domains", get(list_domains).post(create_domain))
        .route(
            "/v1/domains/{domain}",
            get(get_domain).put(modify_domain).delete(delete_domain),
        )
        .route(
            "/v1/record-rules",
            get(list_rules).post(create_rule).delete(delete_rule),
        )
}

impl From<RecordError> for V1Error {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Refused(r) => V1Error::Refused(r),
            other => V1Error::Internal(other.to_string()),
        }
    }
}

/// A query parameter that must be present but may be `""` (DeleteLiveRecordRule matches the
/// three names exactly, so "any" has to be said explicitly).
fn exact_param(raw: &Option<String>, name: &str) -> Result<String, V1Error> {
    query_pairs(raw)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| V1Error::Refused(ApiRefusal::missing(name)))
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
        let input: RecordingTemplateInput = json_body(body).await?;
        let t = uc::create_template(&ctx.ports, &ctx.settings, &account.name, input).await?;
        tracing::info!(account = %account.name, template = t.id, "recording template created");
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
        let input: RecordingTemplateInput = json_body(body).await?;
        let t = uc::modify_template(
            &ctx.ports,
            &ctx.settings,
            &account.name,
            template_id(&id)?,
            input,
        )
        .await?;
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
        let id = template_id(&id)?;
        uc::delete_template(&ctx.ports, &account.name, id).await?;
        tracing::info!(account = %account.name, template = id, "recording template deleted");
        Ok(json!({}))
    })
    .await
}

async fn list_domains(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let domains = uc::list_domains(&ctx.ports, &account.name).await?;
        let offset = utc_offset(&ctx);
        Ok(json!({ "Domains": domains.iter().map(|d| d.to_wire(offset)).collect::<Vec<_>>() }))
    })
    .await
}

async fn create_domain(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let input: RecordDomainInput = json_body(body).await?;
        let d = uc::create_domain(&ctx.ports, &ctx.settings, &account.name, input).await?;
        tracing::info!(account = %account.name, domain = %d.domain, "push domain added");
        Ok(json!({ "Domain": d.to_wire(utc_offset(&ctx)) }))
    })
    .await
}

async fn get_domain(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(domain): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let d = uc::get_domain(&ctx.ports, &account.name, &domain).await?;
        Ok(json!({ "Domain": d.value.to_wire(utc_offset(&ctx)) }))
    })
    .await
}

async fn modify_domain(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(domain): Path<String>,
    body: Body,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let input: RecordDomainInput = json_body(body).await?;
        let d = uc::modify_domain(&ctx.ports, &ctx.settings, &account.name, &domain, input).await?;
        Ok(json!({ "Domain": d.to_wire(utc_offset(&ctx)) }))
    })
    .await
}

async fn delete_domain(
    State(ctx): State<Context>,
    RawQuery(raw): RawQuery,
    Path(domain): Path<String>,
) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        uc::delete_domain(&ctx.ports, &account.name, &domain).await?;
        tracing::info!(account = %account.name, domain = %domain, "push domain removed");
        Ok(json!({}))
    })
    .await
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
        let input: RecordRuleInput = json_body(body).await?;
        let rule = uc::create_rule(&ctx.ports, &account.name, input).await?;
        Ok(json!({ "Rule": rule.to_wire(utc_offset(&ctx)) }))
    })
    .await
}

async fn delete_rule(State(ctx): State<Context>, RawQuery(raw): RawQuery) -> Response {
    run(async {
        let account = account(&ctx, &raw).await?;
        let domain = exact_param(&raw, "DomainName")?;
        if domain.is_empty() {
            return Err(ApiRefusal::missing("DomainName").into());
        }
        let (app, stream) = (
            exact_param(&raw, "AppName")?,
            exact_param(&raw, "StreamName")?,
        );
        uc::delete_rule(&ctx.ports, &account.name, &domain, &app, &stream).await?;
        Ok::<Value, V1Error>(json!({}))
    })
    .await
}
