//! The callbacks capability: inbound stream events stored once and kept in the live stream
//! registry, handed to the outbox for the matching callback template; the templates, rules,
//! hook tokens and publish authorization rules behind it; the delivery log and dead letters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::outbox::{queue_entry, OutboxHandoff};
use crate::config::Settings;
use crate::domain::api_error::ApiRefusal;
use crate::domain::auth::SecretKey;
use crate::domain::callbacks::css::{parse_css_event, render_css_payload};
use crate::domain::callbacks::hooks::{parse_nginx_rtmp, parse_srs, HookOrigin};
use crate::domain::callbacks::publish_auth::{PublishAuthInput, PublishAuthRule};
use crate::domain::callbacks::registry::{Admission, LiveStream, StreamSession};
use crate::domain::callbacks::sign::verify_css_sign;
use crate::domain::callbacks::template::{
    CallbackRule, CallbackRuleInput, CallbackTemplate, CallbackTemplateInput, MAX_TEMPLATES,
};
use crate::domain::callbacks::{
    InboundError, ParsedEvent, RetryClass, StreamEvent, StreamEventKind, StreamPath,
    MAX_INBOUND_BODY_BYTES,
};
use crate::domain::outbox::{DeliveryState, OutboxEntry, RetryPolicy, Signing};
use crate::ports::{
    Condition, Entity, Kind, Ports, Query, QueryIndex, StoreError, TypedStore, Versioned, Write,
};

/// What can go wrong in a callbacks use case.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The inbound event is refused; the sender is told why.
    #[error(transparent)]
    Inbound(#[from] InboundError),
    /// The `/v1` request is refused.
    #[error(transparent)]
    Refused(#[from] ApiRefusal),
    /// The store failed: the sender must retry (nothing was acknowledged).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] crate::ports::QueueError),
    /// Concurrent writers kept winning a compare-and-set.
    #[error("too much contention on {0}")]
    Contention(String),
}

impl From<super::outbox::OutboxError> for CallbackError {
    fn from(e: super::outbox::OutboxError) -> Self {
        match e {
            super::outbox::OutboxError::Store(e) => Self::Store(e),
            super::outbox::OutboxError::Queue(e) => Self::Queue(e),
        }
    }
}

/// What happened to an inbound event.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The stored event; `None` when it repeats one already stored (a sender's retry).
    pub event: Option<StreamEvent>,
    /// A push sent again while its session is live, as sent (not stored again): what follows a
    /// push is applied once more, so that a crash between storing the push and starting its
    /// recording is mended by the sender's retry (starting it is idempotent).
    pub repeated_push: Option<StreamEvent>,
}

impl Ingested {
    fn repeat(account: &str, event: ParsedEvent, now_ms: i64) -> Ingested {
        let repeated_push = (event.kind == StreamEventKind::Publish)
            .then(|| StreamEvent::new(account, event, now_ms));
        Ingested {
            event: None,
            repeated_push,
        }
    }
}

/// The seed 002 retry schedule of `class`.
pub fn retry_policy(settings: &Settings, class: RetryClass) -> RetryPolicy {
    match class {
        RetryClass::StreamLifecycle => RetryPolicy {
            interval_ms: settings.timing.stream_callback_retry_interval_ms,
            retries: settings.timing.stream_callback_retries,
        },
        RetryClass::Other => RetryPolicy {
            interval_ms: settings.timing.callback_retry_interval_ms,
            retries: settings.timing.callback_retries,
        },
    }
}

fn check_size(body: &[u8]) -> Result<(), InboundError> {
    if body.len() > MAX_INBOUND_BODY_BYTES {
        Err(InboundError::TooLarge)
    } else {
        Ok(())
    }
}

/// A callback rule with its template.
pub type Binding = (CallbackRule, Option<CallbackTemplate>);

/// How long a process trusts what it read of rules, templates and hook tokens.
const CONFIG_CACHE_TTL: Duration = Duration::from_secs(1);
/// Entries kept before the cache starts over.
const CONFIG_CACHE_ENTRIES: usize = 10_000;

/// Rules, templates and hook tokens are read on every inbound event and change rarely: each
/// process keeps what it read for [`CONFIG_CACHE_TTL`]. The `/v1` handlers of this process
/// invalidate it on every change, so a change through another process takes at most that long.
#[derive(Default)]
pub struct ConfigCache {
    bindings: Mutex<HashMap<String, (Instant, Option<Binding>)>>,
    templates: Mutex<HashMap<String, (Instant, Option<CallbackTemplate>)>>,
    tokens: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

fn cached<V: Clone>(map: &Mutex<HashMap<String, (Instant, V)>>, key: &str) -> Option<V> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.get(key)
        .filter(|(at, _)| at.elapsed() < CONFIG_CACHE_TTL)
        .map(|(_, v)| v.clone())
}

fn remember<V>(map: &Mutex<HashMap<String, (Instant, V)>>, key: String, value: V) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= CONFIG_CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key, (Instant::now(), value));
}

impl ConfigCache {
    /// Forgets everything (after a template, rule or token changed).
    pub fn invalidate(&self) {
        self.bindings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.templates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// The callback template stored under `key` (the notifier signs every delivery with its key).
pub async fn load_template(
    ports: &Ports,
    cache: &ConfigCache,
    key: &str,
) -> Result<Option<CallbackTemplate>, StoreError> {
    if let Some(template) = cached(&cache.templates, key) {
        return Ok(template);
    }
    let template = ports
        .store
        .load::<CallbackTemplate>(key)
        .await?
        .map(|t| t.value);
    remember(&cache.templates, key.to_string(), template.clone());
    Ok(template)
}

/// The rule binding `stream`'s domain and app (the app's own rule first, then the domain's),
/// with its template.
pub async fn find_binding(
    ports: &Ports,
    cache: &ConfigCache,
    stream: &StreamPath,
) -> Result<Option<Binding>, StoreError> {
    let key = format!("{}/{}", stream.domain, stream.app);
    if let Some(binding) = cached(&cache.bindings, &key) {
        return Ok(binding);
    }
    let mut found = None;
    for app in [stream.app.as_str(), ""] {
        if let Some(rule) = ports
            .store
            .load::<CallbackRule>(&CallbackRule::store_key(&stream.domain, app))
            .await?
        {
            let rule = rule.value;
            let template = ports
                .store
                .load::<CallbackTemplate>(&CallbackTemplate::store_key(
                    &rule.account,
                    rule.template_id,
                ))
                .await?;
            found = Some((rule, template.map(|t| t.value)));
            break;
        }
    }
    remember(&cache.bindings, key, found.clone());
    Ok(found)
}

/// What the inbound handlers take events with.
#[derive(Clone, Copy)]
pub struct Intake<'a> {
    /// The adapters.
    pub ports: &'a Ports,
    /// The settings in force.
    pub settings: &'a Settings,
    /// Callback rules, templates and hook tokens as this process last read them.
    pub cache: &'a ConfigCache,
    /// Queues the outbox entries of the events taken.
    pub handoff: &'a OutboxHandoff,
}

/// Takes one Tencent CSS event: matched to its account through the callback rule of its
/// domain, checked with `sign = md5(CallbackKey + t)`, then stored once.
pub async fn ingest_css(intake: Intake<'_>, body: &[u8]) -> Result<Ingested, CallbackError> {
    let (ports, cache) = (intake.ports, intake.cache);
    check_size(body)?;
    let (parsed, auth) = parse_css_event(body)?;
    let (rule, template) = find_binding(ports, cache, &parsed.stream)
        .await?
        .ok_or_else(|| InboundError::UnknownDomain(parsed.stream.domain.clone()))?;
    let template =
        template.ok_or_else(|| InboundError::UnknownDomain(parsed.stream.domain.clone()))?;
    let key = template
        .callback_key
        .clone()
        .ok_or_else(|| InboundError::NoCallbackKey(parsed.stream.domain.clone()))?;
    verify_css_sign(
        &key,
        auth.t,
        &auth.sign,
        ports.clock.now_ms().div_euclid(1000),
    )?;
    ingest(intake, &rule.account, parsed, Some(template)).await
}

/// The dialects of the hook endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookDialect {
    /// nginx-rtmp `on_*` (form).
    NginxRtmp,
    /// SRS HTTP hooks (JSON).
    Srs,
}

/// Takes one hook notification: the token names the account; a publish is checked against the
/// domain's publish authorization rule; then it is stored once.
pub async fn ingest_hook(
    intake: Intake<'_>,
    dialect: HookDialect,
    token: Option<&str>,
    origin: &HookOrigin,
    body: &[u8],
) -> Result<Ingested, CallbackError> {
    let (ports, cache) = (intake.ports, intake.cache);
    check_size(body)?;
    let account = match token {
        Some(t) if !t.is_empty() => account_of_hook_token(ports, cache, t)
            .await?
            .ok_or(InboundError::BadToken)?,
        _ => return Err(InboundError::BadToken.into()),
    };
    let parsed = match dialect {
        HookDialect::NginxRtmp => parse_nginx_rtmp(body, origin)?,
        HookDialect::Srs => parse_srs(body, origin)?,
    };
    let binding = find_binding(ports, cache, &parsed.stream).await?;
    let template = match binding {
        Some((rule, _)) if rule.account != account => {
            return Err(InboundError::PublishRefused(format!(
                "push domain {} belongs to another account",
                parsed.stream.domain
            ))
            .into());
        }
        Some((_, template)) => template,
        None => None,
    };
    if parsed.kind == StreamEventKind::Publish {
        if let Some(rule) = ports
            .store
            .load::<PublishAuthRule>(&PublishAuthRule::store_key(&account, &parsed.stream.domain))
            .await?
        {
            if let Err(reason) = rule.value.check(
                &parsed.stream.stream,
                &parsed.params,
                ports.clock.now_ms().div_euclid(1000),
            ) {
                metrics::counter!("relaycast_publish_refused_total").increment(1);
                return Err(InboundError::PublishRefused(reason).into());
            }
        }
    }
    ingest(intake, &account, parsed, template).await
}

const MAX_ATTEMPTS: u32 = 16;

/// Stores `parsed` for `account` once: the event, the stream's registry record and sessions,
/// and the outbox entry for `template`'s URL, in one transaction; then hands the delivery to
/// the intake's hand-off.
async fn ingest(
    intake: Intake<'_>,
    account: &str,
    parsed: ParsedEvent,
    template: Option<CallbackTemplate>,
) -> Result<Ingested, CallbackError> {
    let Intake {
        ports,
        settings,
        handoff,
        ..
    } = intake;
    let now = ports.clock.now_ms();
    // A repeat is told by the registry (a push or stop already applied) or by the event's id
    // being stored already (the transaction's `Absent` on it fails, and writes nothing).
    let key = LiveStream::store_key(account, &parsed.stream);
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(
                rand::random::<u64>() % (2 + u64::from(attempt) * 3),
            ))
            .await;
        }
        let (mut stream, condition) = match ports.store.load::<LiveStream>(&key).await? {
            Some(v) => (v.value, Condition::Version(v.version)),
            None => (
                LiveStream::new(account, parsed.stream.clone()),
                Condition::Absent,
            ),
        };
        let mut admitted = parsed.clone();
        let Admission::Apply {
            sessions,
            duration_ms,
        } = stream.admit(&mut admitted, now)
        else {
            return Ok(Ingested::repeat(account, admitted, now));
        };
        let mut event = StreamEvent::new(account, admitted, now);
        event.duration_ms = duration_ms;
        let entry = template
            .as_ref()
            .and_then(|t| outbox_entry(settings, t, &mut stream, &mut event, now));
        let mut writes = vec![
            Write::Put(event.to_record()?, Condition::Absent),
            Write::Put(stream.to_record()?, condition),
        ];
        for session in &sessions {
            writes.push(Write::Put(session.to_record()?, Condition::Any));
        }
        if let Some(entry) = &entry {
            writes.push(Write::Put(entry.to_record()?, Condition::Absent));
        }
        match ports.store.transact(writes).await {
            Ok(versions) => {
                metrics::counter!("relaycast_stream_events_total", "kind" => event.kind.as_str(), "source" => event.source.as_str()).increment(1);
                if let Some(entry) = entry {
                    // Queued after the sender is answered: the event and its entry are durable
                    // already, and the outbox sweep queues an entry a crash left pending.
                    let version = versions.last().copied().flatten().unwrap_or(1);
                    handoff.submit(
                        ports,
                        Versioned {
                            value: entry,
                            version,
                        },
                    );
                }
                return Ok(Ingested {
                    event: Some(event),
                    repeated_push: None,
                });
            }
            Err(StoreError::ConditionFailed { kind, .. }) if kind == StreamEvent::KIND => {
                return Ok(Ingested::repeat(account, parsed, now))
            }
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CallbackError::Contention(key))
}

/// The outbox entry delivering `event` to `template`'s URL for its kind, if it has one; takes
/// the stream's next outbox number so the stream's callbacks go out in order.
fn outbox_entry(
    settings: &Settings,
    template: &CallbackTemplate,
    stream: &mut LiveStream,
    event: &mut StreamEvent,
    now: i64,
) -> Option<OutboxEntry> {
    let url = template.urls.for_kind(event.kind)?;
    let body = serde_json::Value::Object(render_css_payload(event)?).to_string();
    let seq = stream.next_outbox_seq();
    let mut entry = OutboxEntry::new(
        &event.account,
        &outbox_stream(&event.stream),
        seq,
        url,
        body,
        retry_policy(settings, event.kind.retry_class()),
        now,
    );
    entry.event_id = Some(event.id.clone());
    entry.event_kind = Some(event.kind.as_str().into());
    entry.signing = Signing::CallbackTemplate {
        template: template.key(),
        css: true,
    };
    event.deliveries.push(entry.id.clone());
    Some(entry)
}

/// The outbox stream of a live stream's callbacks (entries `{account}:live/{domain}/{app}/{stream}:{seq}`).
fn outbox_stream(stream: &StreamPath) -> String {
    format!("live/{}", stream.joined())
}

// ---- hook tokens ------------------------------------------------------------------------------

/// An account's current hook token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HookSettings {
    /// The account.
    pub account: String,
    /// The token hook URLs carry.
    pub token: SecretKey,
    /// When it was made, Unix ms.
    pub created_ms: i64,
}

impl Entity for HookSettings {
    const KIND: Kind = Kind("hook_settings");
    fn key(&self) -> String {
        self.account.clone()
    }
}

/// The look-up from a token (by its SHA-256, so the table does not hold usable tokens twice) to
/// its account.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct HookToken {
    digest: String,
    account: String,
}

impl Entity for HookToken {
    const KIND: Kind = Kind("hook_token");
    fn key(&self) -> String {
        self.digest.clone()
    }
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The account a hook token belongs to.
pub async fn account_of_hook_token(
    ports: &Ports,
    cache: &ConfigCache,
    token: &str,
) -> Result<Option<String>, StoreError> {
    if token.len() > 128 {
        return Ok(None);
    }
    let digest = token_digest(token);
    if let Some(account) = cached(&cache.tokens, &digest) {
        return Ok(account);
    }
    let account = ports
        .store
        .load::<HookToken>(&digest)
        .await?
        .map(|t| t.value.account);
    remember(&cache.tokens, digest, account.clone());
    Ok(account)
}

/// The account's hook token, made on first use.
pub async fn hook_token(ports: &Ports, account: &str) -> Result<SecretKey, CallbackError> {
    if let Some(s) = ports.store.load::<HookSettings>(account).await? {
        return Ok(s.value.token);
    }
    let settings = HookSettings {
        account: account.into(),
        token: SecretKey::generate(),
        created_ms: ports.clock.now_ms(),
    };
    let lookup = HookToken {
        digest: token_digest(settings.token.expose()),
        account: account.into(),
    };
    match ports
        .store
        .transact(vec![
            Write::Put(settings.to_record()?, Condition::Absent),
            Write::Put(lookup.to_record()?, Condition::Absent),
        ])
        .await
    {
        Ok(_) => Ok(settings.token),
        // Made concurrently: use that one.
        Err(StoreError::ConditionFailed { .. }) => {
            match ports.store.load::<HookSettings>(account).await? {
                Some(s) => Ok(s.value.token),
                None => Err(CallbackError::Contention(format!(
                    "hook token of {account}"
                ))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces the account's hook token; the old one stops working at once.
pub async fn rotate_hook_token(ports: &Ports, account: &str) -> Result<SecretKey, CallbackError> {
    hook_token(ports, account).await?;
    let current = ports
        .store
        .load::<HookSettings>(account)
        .await?
        .ok_or_else(|| CallbackError::Contention(account.into()))?;
    let fresh = HookSettings {
        account: account.into(),
        token: SecretKey::generate(),
        created_ms: ports.clock.now_ms(),
    };
    let lookup = HookToken {
        digest: token_digest(fresh.token.expose()),
        account: account.into(),
    };
    ports
        .store
        .transact(vec![
            Write::Put(fresh.to_record()?, Condition::Version(current.version)),
            Write::Delete(
                HookToken::KIND,
                token_digest(current.value.token.expose()),
                Condition::Any,
            ),
            Write::Put(lookup.to_record()?, Condition::Absent),
        ])
        .await?;
    Ok(fresh.token)
}

// ---- templates and rules ---------------------------------------------------------------------

async fn list_of<T: Entity>(ports: &Ports, account: &str) -> Result<Vec<Versioned<T>>, StoreError> {
    let mut query = Query::new(T::KIND, QueryIndex::Account(account.into()));
    query.limit = 1000;
    Ok(ports.store.query_typed::<T>(query).await?.0)
}

/// The account's callback templates, oldest first.
pub async fn list_templates(
    ports: &Ports,
    account: &str,
) -> Result<Vec<CallbackTemplate>, StoreError> {
    Ok(list_of::<CallbackTemplate>(ports, account)
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect())
}

fn template_not_found(id: u64) -> ApiRefusal {
    ApiRefusal::not_found(
        "ResourceNotFound.TemplateNotFound",
        format!("callback template {id} does not exist"),
    )
}

/// One template of the account.
pub async fn get_template(
    ports: &Ports,
    account: &str,
    id: u64,
) -> Result<Versioned<CallbackTemplate>, CallbackError> {
    Ok(ports
        .store
        .load::<CallbackTemplate>(&CallbackTemplate::store_key(account, id))
        .await?
        .ok_or_else(|| template_not_found(id))?)
}

/// Creates a template (CreateLiveCallbackTemplate); returns it with its `TemplateId`.
pub async fn create_template(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    input: CallbackTemplateInput,
) -> Result<CallbackTemplate, CallbackError> {
    if list_templates(ports, account).await?.len() >= MAX_TEMPLATES {
        return Err(ApiRefusal::conflict(
            "InternalError.ConfOutLimit",
            format!("an account has at most {MAX_TEMPLATES} callback templates"),
        )
        .into());
    }
    let now = ports.clock.now_ms();
    // Validate before taking an id, so refused requests do not use up ids.
    CallbackTemplate::create(
        account,
        0,
        input.clone(),
        settings.allow_private_targets,
        now,
    )?;
    let id = ports
        .store
        .increment(Kind("callback_template_id"), account, None)
        .await?;
    let template =
        CallbackTemplate::create(account, id, input, settings.allow_private_targets, now)?;
    ports.store.save(&template, Condition::Absent).await?;
    Ok(template)
}

/// Modifies a template (ModifyLiveCallbackTemplate).
pub async fn modify_template(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    id: u64,
    input: CallbackTemplateInput,
) -> Result<CallbackTemplate, CallbackError> {
    let current = get_template(ports, account, id).await?;
    let mut template = current.value;
    template.modify(input, settings.allow_private_targets, ports.clock.now_ms())?;
    match ports
        .store
        .save(&template, Condition::Version(current.version))
        .await
    {
        Ok(_) => Ok(template),
        Err(StoreError::ConditionFailed { .. }) => Err(ApiRefusal::conflict(
            "FailedOperation",
            "the template was changed meanwhile; try again",
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a template no rule uses (DeleteLiveCallbackTemplate).
pub async fn delete_template(ports: &Ports, account: &str, id: u64) -> Result<(), CallbackError> {
    get_template(ports, account, id).await?;
    if let Some(rule) = list_rules(ports, account)
        .await?
        .into_iter()
        .find(|r| r.template_id == id)
    {
        return Err(ApiRefusal::conflict(
            "FailedOperation.ConfInUsed",
            format!(
                "callback template {id} is bound to {}/{}; delete the rule first",
                rule.domain, rule.app
            ),
        )
        .into());
    }
    ports
        .store
        .delete(
            CallbackTemplate::KIND,
            &CallbackTemplate::store_key(account, id),
            Condition::Any,
        )
        .await?;
    Ok(())
}

/// The account's callback rules.
pub async fn list_rules(ports: &Ports, account: &str) -> Result<Vec<CallbackRule>, StoreError> {
    Ok(list_of::<CallbackRule>(ports, account)
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// Binds a template to a domain and app (CreateLiveCallbackRule); one rule per domain+app.
pub async fn create_rule(
    ports: &Ports,
    account: &str,
    input: CallbackRuleInput,
) -> Result<CallbackRule, CallbackError> {
    let rule = CallbackRule::parse(account, input, ports.clock.now_ms())?;
    get_template(ports, account, rule.template_id).await?;
    match ports.store.save(&rule, Condition::Absent).await {
        Ok(_) => Ok(rule),
        Err(StoreError::ConditionFailed { .. }) => Err(ApiRefusal::conflict(
            "ResourceInUse",
            format!(
                "a callback rule for domain {} and app {:?} exists already",
                rule.domain, rule.app
            ),
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the account's rule of a domain and app (DeleteLiveCallbackRule).
pub async fn delete_rule(
    ports: &Ports,
    account: &str,
    domain: &str,
    app: &str,
) -> Result<(), CallbackError> {
    let key = CallbackRule::store_key(&domain.to_ascii_lowercase(), app);
    match ports.store.load::<CallbackRule>(&key).await? {
        Some(rule) if rule.value.account == account => {
            ports
                .store
                .delete(CallbackRule::KIND, &key, Condition::Version(rule.version))
                .await?;
            Ok(())
        }
        _ => Err(ApiRefusal::not_found(
            "ResourceNotFound.RuleNotFound",
            format!("no callback rule for domain {domain} and app {app:?}"),
        )
        .into()),
    }
}

// ---- publish authorization -------------------------------------------------------------------

/// Stores the publish authorization rule of a domain.
pub async fn put_publish_auth(
    ports: &Ports,
    account: &str,
    domain: &str,
    input: PublishAuthInput,
) -> Result<PublishAuthRule, CallbackError> {
    let rule = PublishAuthRule::parse(account, domain, input, ports.clock.now_ms())?;
    ports.store.save(&rule, Condition::Any).await?;
    Ok(rule)
}

/// The account's publish authorization rules.
pub async fn list_publish_auth(
    ports: &Ports,
    account: &str,
) -> Result<Vec<PublishAuthRule>, StoreError> {
    Ok(list_of::<PublishAuthRule>(ports, account)
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// Removes a domain's rule: publishes on it are no longer checked.
pub async fn delete_publish_auth(
    ports: &Ports,
    account: &str,
    domain: &str,
) -> Result<(), CallbackError> {
    let key = PublishAuthRule::store_key(account, &domain.to_ascii_lowercase());
    if ports
        .store
        .get(PublishAuthRule::KIND, &key)
        .await?
        .is_none()
    {
        return Err(ApiRefusal::not_found(
            "ResourceNotFound.RuleNotFound",
            format!("no publish authorization rule for {domain}"),
        )
        .into());
    }
    ports
        .store
        .delete(PublishAuthRule::KIND, &key, Condition::Any)
        .await?;
    Ok(())
}

// ---- registry, delivery log, dead letters ----------------------------------------------------

/// The account's live streams, newest first.
pub async fn live_streams(
    ports: &Ports,
    account: &str,
    limit: usize,
) -> Result<Vec<LiveStream>, StoreError> {
    let mut query = Query::new(
        LiveStream::KIND,
        QueryIndex::Status(LiveStream::live_index(account)),
    );
    query.descending = true;
    query.limit = limit.clamp(1, 1000);
    Ok(ports
        .store
        .query_typed::<LiveStream>(query)
        .await?
        .0
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// A stream's sessions, newest first.
pub async fn stream_sessions(
    ports: &Ports,
    account: &str,
    stream: &StreamPath,
    limit: usize,
) -> Result<Vec<StreamSession>, StoreError> {
    let mut query = Query::new(
        StreamSession::KIND,
        QueryIndex::Status(StreamSession::index_of(account, stream)),
    );
    query.descending = true;
    query.limit = limit.clamp(1, 1000);
    Ok(ports
        .store
        .query_typed::<StreamSession>(query)
        .await?
        .0
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// The outbox entries (with their attempts) of one event of the account.
pub async fn deliveries_of_event(
    ports: &Ports,
    account: &str,
    event_id: &str,
) -> Result<Vec<OutboxEntry>, CallbackError> {
    let event = match ports.store.load::<StreamEvent>(event_id).await? {
        Some(e) if e.value.account == account => e.value,
        _ => {
            return Err(ApiRefusal::not_found(
                "ResourceNotFound.EventNotFound",
                format!("event {event_id} does not exist"),
            )
            .into())
        }
    };
    let mut entries = Vec::new();
    for id in &event.deliveries {
        if let Some(e) = ports.store.load::<OutboxEntry>(id).await? {
            entries.push(e.value);
        }
    }
    Ok(entries)
}

/// The last `limit` callbacks of a stream, newest first.
pub async fn deliveries_of_stream(
    ports: &Ports,
    account: &str,
    stream: &StreamPath,
    limit: u64,
) -> Result<Vec<OutboxEntry>, CallbackError> {
    let Some(live) = ports
        .store
        .load::<LiveStream>(&LiveStream::store_key(account, stream))
        .await?
    else {
        return Err(ApiRefusal::not_found(
            "ResourceNotFound.StreamNotFound",
            format!("stream {} has no events", stream.joined()),
        )
        .into());
    };
    let last = live.value.outbox_seq;
    let mut entries = Vec::new();
    for seq in (last.saturating_sub(limit.clamp(1, 200)) + 1..=last).rev() {
        let id = format!("{account}:{}:{seq:020}", outbox_stream(stream));
        if let Some(e) = ports.store.load::<OutboxEntry>(&id).await? {
            entries.push(e.value);
        }
    }
    Ok(entries)
}

/// The account's dead letters (callbacks whose retries are used up), newest first.
pub async fn dead_letters(
    ports: &Ports,
    account: &str,
    limit: usize,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut query = Query::new(
        OutboxEntry::KIND,
        QueryIndex::Status(OutboxEntry::dead_letter_index(account)),
    );
    query.descending = true;
    query.limit = limit.clamp(1, 1000);
    Ok(ports
        .store
        .query_typed::<OutboxEntry>(query)
        .await?
        .0
        .into_iter()
        .map(|v| v.value)
        .collect())
}

/// Sends a dead letter again, with a fresh set of retries.
pub async fn redrive(ports: &Ports, account: &str, id: &str) -> Result<OutboxEntry, CallbackError> {
    let not_found = || {
        ApiRefusal::not_found(
            "ResourceNotFound.DeadLetterNotFound",
            format!("dead letter {id} does not exist"),
        )
    };
    let current = match ports.store.load::<OutboxEntry>(id).await? {
        Some(e) if e.value.account == account => e,
        _ => return Err(not_found().into()),
    };
    if current.value.state != DeliveryState::Failed {
        return Err(ApiRefusal::conflict(
            "FailedOperation.NotDeadLetter",
            format!(
                "callback {id} is {}, not a dead letter",
                current.value.state.as_str()
            ),
        )
        .into());
    }
    let mut entry = current.value;
    entry.redrive();
    let version = match ports
        .store
        .save(&entry, Condition::Version(current.version))
        .await
    {
        Ok(v) => v,
        Err(StoreError::ConditionFailed { .. }) => {
            return Err(ApiRefusal::conflict(
                "FailedOperation",
                "the callback changed meanwhile; try again",
            )
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    queue_entry(
        ports,
        Versioned {
            value: entry.clone(),
            version,
        },
    )
    .await?;
    Ok(entry)
}
