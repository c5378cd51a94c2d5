//! The recording control plane: recording templates, push domains and record rules (SCHEMAS.md
//! §3; `domain/recording/template.rs` holds their rules), and [`recording_binding`], the look-up
//! the recorder trigger makes when a stream starts.
//!
//! A rule names a template and a domain; both may be deleted only while no rule names them. To
//! make that hold under concurrent requests without a scan inside a transaction, creating a rule
//! writes the template and the domain back unchanged with a version condition in the same
//! transaction, and deleting either is conditional on the version read before the rules were
//! listed: whichever of the two commits second fails.

use crate::config::Settings;
use crate::domain::api_error::ApiRefusal;
use crate::domain::callbacks::event::parse_domain;
use crate::domain::callbacks::StreamPath;
use crate::domain::recording::template::{
    RecordDomain, RecordDomainInput, RecordRule, RecordRuleInput, RecordingTemplate,
    RecordingTemplateInput, MAX_TEMPLATES,
};
use crate::ports::{
    Condition, Entity, Kind, Ports, Query, QueryIndex, StoreError, TypedStore, Versioned, Write,
};

/// What can go wrong in a recording control-plane use case.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The `/v1` request is refused.
    #[error(transparent)]
    Refused(#[from] ApiRefusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a stream of a bound domain records with: found by [`recording_binding`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingBinding {
    /// The account the domain (and so the recording) belongs to.
    pub account: String,
    /// The matching rule (the most specific one).
    pub rule: RecordRule,
    /// Its template; a recording takes [`RecordingTemplate::spec`] at its start.
    pub template: RecordingTemplate,
    /// The push domain.
    pub domain: RecordDomain,
    /// The domain's `PullUrlTemplate` filled for the stream: what the recorder pulls.
    pub pull_url: String,
}

/// Every record of `T` of `account`, oldest first, all pages.
async fn list_all<T: crate::ports::Entity>(
    ports: &Ports,
    account: &str,
) -> Result<Vec<Versioned<T>>, StoreError> {
    let mut query = Query::new(T::KIND, QueryIndex::Account(account.into()));
    query.limit = 1000;
    let mut all = Vec::new();
    loop {
        let (page, next) = ports.store.query_typed::<T>(query.clone()).await?;
        all.extend(page);
        match next {
            Some(cursor) => query.cursor = Some(cursor),
            None => return Ok(all),
        }
    }
}

fn changed_meanwhile(what: &str) -> RecordError {
    ApiRefusal::conflict(
        "FailedOperation",
        format!("the {what} was changed meanwhile; try again"),
    )
    .into()
}

// ---- templates --------------------------------------------------------------------------------

/// The account's recording templates, oldest first.
pub async fn list_templates(
    ports: &Ports,
    account: &str,
) -> Result<Vec<RecordingTemplate>, StoreError> {
    Ok(list_all::<RecordingTemplate>(ports, account)
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect())
}

fn template_not_found(id: u64) -> ApiRefusal {
    ApiRefusal::not_found(
        "ResourceNotFound.TemplateNotFound",
        format!("recording template {id} does not exist"),
    )
}

/// One template of the account.
pub async fn get_template(
    ports: &Ports,
    account: &str,
    id: u64,
) -> Result<Versioned<RecordingTemplate>, RecordError> {
    Ok(ports
        .store
        .load::<RecordingTemplate>(&RecordingTemplate::store_key(account, id))
        .await?
        .ok_or_else(|| template_not_found(id))?)
}

/// Creates a template (CreateLiveRecordTemplate); returns it with its `TemplateId`.
pub async fn create_template(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    input: RecordingTemplateInput,
) -> Result<RecordingTemplate, RecordError> {
    if list_templates(ports, account).await?.len() >= MAX_TEMPLATES {
        return Err(ApiRefusal::conflict(
            "InternalError.ConfOutLimit",
            format!("an account has at most {MAX_TEMPLATES} recording templates"),
        )
        .into());
    }
    let now = ports.clock.now_ms();
    // Validate before taking an id, so refused requests do not use up ids.
    RecordingTemplate::create(
        account,
        0,
        input.clone(),
        settings.allow_private_targets,
        now,
    )?;
    let id = ports
        .store
        .increment(Kind("record_template_id"), account, None)
        .await?;
    let template =
        RecordingTemplate::create(account, id, input, settings.allow_private_targets, now)?;
    ports.store.save(&template, Condition::Absent).await?;
    Ok(template)
}

/// Modifies a template (ModifyLiveRecordTemplate). Recordings in progress keep the spec they
/// started with (seed 003).
pub async fn modify_template(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    id: u64,
    input: RecordingTemplateInput,
) -> Result<RecordingTemplate, RecordError> {
    let current = get_template(ports, account, id).await?;
    let mut template = current.value;
    template.modify(input, settings.allow_private_targets, ports.clock.now_ms())?;
    match ports
        .store
        .save(&template, Condition::Version(current.version))
        .await
    {
        Ok(_) => Ok(template),
        Err(StoreError::ConditionFailed { .. }) => Err(changed_meanwhile("template")),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a template no rule uses (DeleteLiveRecordTemplate); `FailedOperation.ConfInUsed`
/// while one does.
pub async fn delete_template(ports: &Ports, account: &str, id: u64) -> Result<(), RecordError> {
    // The version is read before the rules are listed: a rule created after this read bumps it.
    let current = get_template(ports, account, id).await?;
    if let Some(rule) = list_rules(ports, account)
        .await?
        .into_iter()
        .find(|r| r.template_id == id)
    {
        return Err(ApiRefusal::conflict(
            "FailedOperation.ConfInUsed",
            format!(
                "recording template {id} is bound to {}/{}/{}; delete the rule first",
                rule.domain, rule.app, rule.stream
            ),
        )
        .into());
    }
    match ports
        .store
        .delete(
            RecordingTemplate::KIND,
            &RecordingTemplate::store_key(account, id),
            Condition::Version(current.version),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::ConditionFailed { .. }) => Err(changed_meanwhile("template")),
        Err(e) => Err(e.into()),
    }
}

// ---- domains ----------------------------------------------------------------------------------

/// The account's push domains, oldest first.
pub async fn list_domains(ports: &Ports, account: &str) -> Result<Vec<RecordDomain>, StoreError> {
    Ok(list_all::<RecordDomain>(ports, account)
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect())
}

fn domain_not_found(domain: &str) -> ApiRefusal {
    ApiRefusal::not_found(
        "ResourceNotFound.DomainNotExist",
        format!("push domain {domain} does not exist"),
    )
}

/// One push domain of the account (another account's domain is not found, so as not to say
/// whose it is).
pub async fn get_domain(
    ports: &Ports,
    account: &str,
    domain: &str,
) -> Result<Versioned<RecordDomain>, RecordError> {
    let name = parse_domain(domain).map_err(|_| domain_not_found(domain))?;
    match ports
        .store
        .load::<RecordDomain>(&RecordDomain::store_key(&name))
        .await?
    {
        Some(d) if d.value.account == account => Ok(d),
        _ => Err(domain_not_found(&name).into()),
    }
}

/// Adds a push domain; a domain belongs to one account.
pub async fn create_domain(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    input: RecordDomainInput,
) -> Result<RecordDomain, RecordError> {
    let domain = RecordDomain::create(
        account,
        input,
        settings.allow_private_targets,
        ports.clock.now_ms(),
    )?;
    match ports.store.save(&domain, Condition::Absent).await {
        Ok(_) => Ok(domain),
        Err(StoreError::ConditionFailed { .. }) => {
            let owner = ports
                .store
                .load::<RecordDomain>(&domain.key())
                .await?
                .map(|d| d.value.account);
            let message = if owner.as_deref() == Some(account) {
                format!("push domain {} exists already", domain.domain)
            } else {
                format!("push domain {} belongs to another account", domain.domain)
            };
            Err(ApiRefusal::conflict("FailedOperation.DomainAlreadyExist", message).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Changes a push domain's `PullUrlTemplate`.
pub async fn modify_domain(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    domain: &str,
    input: RecordDomainInput,
) -> Result<RecordDomain, RecordError> {
    let current = get_domain(ports, account, domain).await?;
    let mut d = current.value;
    d.modify(input, settings.allow_private_targets, ports.clock.now_ms())?;
    match ports
        .store
        .save(&d, Condition::Version(current.version))
        .await
    {
        Ok(_) => Ok(d),
        Err(StoreError::ConditionFailed { .. }) => Err(changed_meanwhile("domain")),
        Err(e) => Err(e.into()),
    }
}

/// Removes a push domain no rule uses; `FailedOperation.ConfInUsed` while one does.
pub async fn delete_domain(ports: &Ports, account: &str, domain: &str) -> Result<(), RecordError> {
    let current = get_domain(ports, account, domain).await?;
    let name = current.value.domain.clone();
    if let Some(rule) = list_rules(ports, account)
        .await?
        .into_iter()
        .find(|r| r.domain == name)
    {
        return Err(ApiRefusal::conflict(
            "FailedOperation.ConfInUsed",
            format!(
                "push domain {name} has the record rule {}/{}/{}; delete its rules first",
                rule.domain, rule.app, rule.stream
            ),
        )
        .into());
    }
    match ports
        .store
        .delete(
            RecordDomain::KIND,
            &RecordDomain::store_key(&name),
            Condition::Version(current.version),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::ConditionFailed { .. }) => Err(changed_meanwhile("domain")),
        Err(e) => Err(e.into()),
    }
}

// ---- rules ------------------------------------------------------------------------------------

/// The account's record rules, oldest first.
pub async fn list_rules(ports: &Ports, account: &str) -> Result<Vec<RecordRule>, StoreError> {
    Ok(list_all::<RecordRule>(ports, account)
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// Binds a template to a domain, an app or a stream (CreateLiveRecordRule): the domain must be
/// the account's, the template must exist (`InvalidParameter.ConfNotFound`), and one rule per
/// domain+app+stream (`FailedOperation.RuleAlreadyExist`).
pub async fn create_rule(
    ports: &Ports,
    account: &str,
    input: RecordRuleInput,
) -> Result<RecordRule, RecordError> {
    let rule = RecordRule::parse(account, input, ports.clock.now_ms())?;
    let domain = get_domain(ports, account, &rule.domain).await?;
    let template = match get_template(ports, account, rule.template_id).await {
        Ok(t) => t,
        Err(RecordError::Refused(_)) => {
            return Err(ApiRefusal {
                code: "InvalidParameter.ConfNotFound",
                message: format!("recording template {} does not exist", rule.template_id),
                status: 400,
            }
            .into())
        }
        Err(e) => return Err(e),
    };
    let writes = vec![
        Write::Put(rule.to_record()?, Condition::Absent),
        // Written back unchanged: a delete of either that read the old version now fails.
        Write::Put(
            template.value.to_record()?,
            Condition::Version(template.version),
        ),
        Write::Put(
            domain.value.to_record()?,
            Condition::Version(domain.version),
        ),
    ];
    match ports.store.transact(writes).await {
        Ok(_) => Ok(rule),
        Err(StoreError::ConditionFailed { kind, .. }) if kind == RecordRule::KIND => {
            Err(ApiRefusal::conflict(
                "FailedOperation.RuleAlreadyExist",
                format!(
                    "a record rule for domain {}, app {:?} and stream {:?} exists already",
                    rule.domain, rule.app, rule.stream
                ),
            )
            .into())
        }
        Err(StoreError::ConditionFailed { .. }) => Err(changed_meanwhile("template or domain")),
        Err(e) => Err(e.into()),
    }
}

/// Removes the rule of exactly this domain, app and stream (DeleteLiveRecordRule; `""` for
/// "any"). Recordings in progress go on (seed 003).
pub async fn delete_rule(
    ports: &Ports,
    account: &str,
    domain: &str,
    app: &str,
    stream: &str,
) -> Result<(), RecordError> {
    let not_found = || {
        ApiRefusal::not_found(
            "ResourceNotFound.RuleNotFound",
            format!("no record rule for domain {domain}, app {app:?} and stream {stream:?}"),
        )
    };
    let name = parse_domain(domain).map_err(|_| not_found())?;
    let key = RecordRule::store_key(&name, app, stream);
    match ports.store.load::<RecordRule>(&key).await? {
        Some(rule) if rule.value.account == account => match ports
            .store
            .delete(RecordRule::KIND, &key, Condition::Version(rule.version))
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed { .. }) => Err(changed_meanwhile("rule")),
            Err(e) => Err(e.into()),
        },
        _ => Err(not_found().into()),
    }
}

// ---- the recorder's look-up -------------------------------------------------------------------

/// What `stream` records with, if anything: the domain's account, the most specific rule that
/// matches (the stream in its app, the stream name in any app, the app, the whole domain), its
/// template, and the domain with its pull URL filled for the stream. `None` when the domain is
/// nobody's, has no `PullUrlTemplate`, or no rule matches. At most six point reads, no scan.
///
/// A rule whose template is gone (only possible through a store edited by hand, since a bound
/// template cannot be deleted) records nothing and is logged.
pub async fn recording_binding(
    ports: &Ports,
    stream: &StreamPath,
) -> Result<Option<RecordingBinding>, StoreError> {
    let Some(domain) = ports
        .store
        .load::<RecordDomain>(&RecordDomain::store_key(&stream.domain))
        .await?
        .map(|d| d.value)
    else {
        return Ok(None);
    };
    let Some(pull_url) = domain.pull_url(stream) else {
        return Ok(None);
    };
    for key in RecordRule::lookup_keys(stream) {
        let Some(rule) = ports.store.load::<RecordRule>(&key).await?.map(|r| r.value) else {
            continue;
        };
        if rule.account != domain.account {
            // Rules are only made for the domain's owner; one of another account is stale.
            continue;
        }
        let Some(template) = ports
            .store
            .load::<RecordingTemplate>(&RecordingTemplate::store_key(
                &rule.account,
                rule.template_id,
            ))
            .await?
            .map(|t| t.value)
        else {
            tracing::warn!(rule = %key, template = rule.template_id, "record rule names a missing template; not recording");
            return Ok(None);
        };
        return Ok(Some(RecordingBinding {
            account: domain.account.clone(),
            rule,
            template,
            domain,
            pull_url,
        }));
    }
    Ok(None)
}
