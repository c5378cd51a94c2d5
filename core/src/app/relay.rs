//! The relay control use cases: executing a `forwardRequest.action`, applying a state change to
//! a stored task (from the API, the scheduler or a worker), and listing an account's tasks.
//!
//! The model: the task record is the desired state. A worker that holds a task's lease re-reads
//! it every heartbeat and reconciles its session (stop destinations, switch sources), so the
//! API only writes; it enqueues a relay job only when a task needs a worker to take it up.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::outbox::queue_entry;
use super::AppError;
use crate::config::Settings;
use crate::domain::auth::Account;
use crate::domain::outbox::{OutboxEntry, RetryPolicy};
use crate::domain::relay::events::TaskEvent;
use crate::domain::relay::plan::{check_request, check_request_applies, plan, Effects};
use crate::domain::relay::state::{Action, TaskState, TransitionError};
use crate::domain::relay::task::{RelayTask, RunStats};
use crate::domain::relay::types::{Source, TaskId};
use crate::domain::relay::wire::{Command, ForwardRequest};
use crate::domain::RequestError;
use crate::ports::{
    Condition, Entity, Kind, Ports, Query, QueryIndex, StoreError, TypedStore, Versioned, Write,
};

/// The queue of relay jobs.
pub const RELAY_QUEUE: &str = "relay-jobs";

/// A relay job: "a worker should take up this task". Workers re-read the task, so the job
/// carries only its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayJob {
    /// The owning account.
    pub account: String,
    /// The task id.
    pub id: String,
}

impl RelayJob {
    /// The store key of the task.
    pub fn task_key(&self) -> String {
        format!("{}:{}", self.account, self.id)
    }
}

/// Relay task leases are named `relay:{account}:{id}`.
pub const RELAY_LEASE_PREFIX: &str = "relay:";

/// The lease resource of the relay task stored under `task_key`.
pub fn relay_lease_resource(task_key: &str) -> String {
    format!("{RELAY_LEASE_PREFIX}{task_key}")
}

/// The retry schedule of relay task callbacks (seed 002's schedule for notices other than
/// push/stop/record/porn-detection: every 2 minutes, 5 times).
pub fn callback_policy(settings: &Settings) -> RetryPolicy {
    RetryPolicy {
        interval_ms: settings.timing.callback_retry_interval_ms,
        retries: settings.timing.callback_retries,
    }
}

/// What a request did, for logs and tests.
#[derive(Debug, Clone, Default)]
pub struct RequestOutcome {
    /// Tasks written.
    pub tasks_written: usize,
    /// Callback events stored.
    pub events: usize,
    /// Relay jobs enqueued.
    pub jobs: usize,
    /// Refusals reported through callbacks (90/91).
    pub refused: Vec<(TaskId, TransitionError)>,
}

/// Who pushes to a destination: the claim is written, compare-and-set, in the same transaction
/// as every task that becomes active on the destination, so two concurrent requests can never
/// both start pushing to one stream key (the loser re-plans and answers 91). A claim whose task
/// is no longer active is free. Keyed by a digest of the URL (URLs may be longer than keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationClaim {
    /// `{account}:{sha256(url)}`.
    pub key: String,
    /// The claiming task.
    pub task_id: TaskId,
}

impl Entity for DestinationClaim {
    const KIND: Kind = Kind("destination_claim");
    fn key(&self) -> String {
        self.key.clone()
    }
}

impl DestinationClaim {
    /// The claim key of `url` in `account`.
    pub fn key_of(account: &str, url: &str) -> String {
        use sha2::{Digest, Sha256};
        format!("{account}:{}", hex::encode(Sha256::digest(url.as_bytes())))
    }
}

/// The claims on some destinations as read before planning: `None` for an unclaimed one.
type Claims = BTreeMap<String, Option<Versioned<DestinationClaim>>>;

/// Executes a validated `forwardRequest.action` for `account`, one list item after the other:
/// each item is planned and written on its own, so a race lost by one item re-plans that item
/// only, never undoing what an earlier item of the same request wrote.
///
/// Every refusal of the whole request (push hosts, internal targets, and those of
/// [`check_request`] over all the tasks the request names) is decided before the first item
/// is written, so a refused request writes nothing.
#[tracing::instrument(name = "forward_request", skip_all, fields(account = %account.name, cmd = ?req.cmd()))]
pub async fn execute_forward_request(
    ports: &Ports,
    settings: &Settings,
    account: &Account,
    req: &ForwardRequest,
) -> Result<RequestOutcome, AppError> {
    account.check_push_hosts(req.destination_hosts().iter().map(String::as_str))?;
    if !settings.allow_private_targets {
        refuse_internal_targets(req)?;
    }
    check_whole_request(ports, account, req).await?;
    let mut outcome = RequestOutcome::default();
    for item in split_items(req) {
        let done = execute_item(ports, settings, account, &item).await?;
        outcome.tasks_written += done.tasks_written;
        outcome.events += done.events;
        outcome.jobs += done.jobs;
        outcome.refused.extend(done.refused);
    }
    Ok(outcome)
}

/// [`check_request`] over every task the request names, as stored now. Each item's plan checks
/// again on the state it writes over; only a concurrent re-creation of a named task with
/// another type between the two can still refuse a later item after an earlier one was written.
async fn check_whole_request(
    ports: &Ports,
    account: &Account,
    req: &ForwardRequest,
) -> Result<(), AppError> {
    if !check_request_applies(req) {
        return Ok(());
    }
    let mut existing = BTreeMap::new();
    for id in request_ids(req) {
        if let Some(v) = ports
            .store
            .load::<RelayTask>(&RelayTask::store_key(&account.name, &id))
            .await?
        {
            existing.insert(id, v.value);
        }
    }
    Ok(check_request(req, &existing)?)
}

/// One request per list item.
fn split_items(req: &ForwardRequest) -> Vec<ForwardRequest> {
    let one = |command| ForwardRequest {
        task_type: req.task_type,
        callback_url: req.callback_url.clone(),
        command,
    };
    match &req.command {
        Command::CreateTasks(items) => items
            .iter()
            .map(|i| one(Command::CreateTasks(vec![i.clone()])))
            .collect(),
        Command::StopTasks(items) => items
            .iter()
            .map(|i| one(Command::StopTasks(vec![i.clone()])))
            .collect(),
        Command::UpdateSources(items) => items
            .iter()
            .map(|i| one(Command::UpdateSources(vec![i.clone()])))
            .collect(),
        Command::ResumeTasks(items) => items
            .iter()
            .map(|i| one(Command::ResumeTasks(vec![i.clone()])))
            .collect(),
    }
}

/// Compare-and-set attempts before a request gives up with a server error.
const MAX_ATTEMPTS: u32 = 30;

async fn execute_item(
    ports: &Ports,
    settings: &Settings,
    account: &Account,
    req: &ForwardRequest,
) -> Result<RequestOutcome, AppError> {
    let ids = request_ids(req);
    for attempt in 0..MAX_ATTEMPTS {
        let now = ports.clock.now_ms();
        let mut existing = BTreeMap::new();
        let mut versions = BTreeMap::new();
        for id in &ids {
            if let Some(v) = ports
                .store
                .load::<RelayTask>(&RelayTask::store_key(&account.name, id))
                .await?
            {
                versions.insert(id.clone(), v.version);
                existing.insert(id.clone(), v.value);
            }
        }
        let claims = load_claims(ports, &account.name, &claimed_urls(req, &existing)).await?;
        let mut active = Vec::new();
        for claim in claims.values().flatten() {
            if ids.contains(&claim.value.task_id) {
                continue;
            }
            let holder = ports
                .store
                .load::<RelayTask>(&RelayTask::store_key(&account.name, &claim.value.task_id))
                .await?;
            if let Some(holder) = holder.filter(|h| h.value.state.is_active()) {
                active.push(holder.value);
            }
        }
        let fx = plan(&account.name, req, &existing, &active, now)?;
        let was_starting: Vec<TaskId> = existing
            .values()
            .filter(|t| t.state == TaskState::Starting)
            .map(|t| t.id.clone())
            .collect();
        match persist_effects(ports, settings, &fx, &versions, &claims, &was_starting, now).await {
            Ok(outcome) => return Ok(outcome),
            Err(AppError::Store(StoreError::ConditionFailed { .. })) => {
                // Another request changed a task or a claim first: back off a little (spread
                // so that racing requests do not collide again) and plan on fresh state.
                let jitter: u64 = rand::random::<u64>() % (2 + u64::from(attempt) * 3);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(AppError::Contention(format!("tasks {ids:?}")))
}

/// The destinations a request may make active: a new task's, or a resumed task's (after its
/// `resetUrl`s).
fn claimed_urls(req: &ForwardRequest, existing: &BTreeMap<TaskId, RelayTask>) -> Vec<String> {
    let mut urls: Vec<String> = match &req.command {
        Command::CreateTasks(items) => items
            .iter()
            .flat_map(|t| t.forwards.iter().map(|f| f.to_string()))
            .collect(),
        Command::ResumeTasks(items) => items
            .iter()
            .flat_map(|t| {
                let stored = existing
                    .get(&t.id)
                    .map(|task| task.forward_urls())
                    .unwrap_or_default();
                let resets = t.forwards.iter().filter_map(|(_, reset)| reset.clone());
                stored
                    .into_iter()
                    .chain(resets)
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
            })
            .collect(),
        Command::StopTasks(_) | Command::UpdateSources(_) => Vec::new(),
    };
    urls.sort();
    urls.dedup();
    urls
}

async fn load_claims(ports: &Ports, account: &str, urls: &[String]) -> Result<Claims, AppError> {
    let mut claims = BTreeMap::new();
    for url in urls {
        let claim = ports
            .store
            .load::<DestinationClaim>(&DestinationClaim::key_of(account, url))
            .await?;
        claims.insert(url.clone(), claim);
    }
    Ok(claims)
}

/// Writes every task with its events and destination claims in one transaction each, then
/// hands new work to workers and events to the notifier.
async fn persist_effects(
    ports: &Ports,
    settings: &Settings,
    fx: &Effects,
    versions: &BTreeMap<TaskId, u64>,
    claims: &Claims,
    was_starting: &[TaskId],
    now: i64,
) -> Result<RequestOutcome, AppError> {
    let mut outcome = RequestOutcome {
        refused: fx.refused.clone(),
        ..Default::default()
    };
    let mut stored_entries = Vec::new();
    for task in &fx.tasks {
        let condition = versions
            .get(&task.id)
            .map_or(Condition::Absent, |v| Condition::Version(*v));
        let events: Vec<&TaskEvent> = fx.events.iter().filter(|e| e.task_id == task.id).collect();
        let mut claim_writes = Vec::new();
        if task.state.is_active() {
            for dest in task.active_destinations() {
                let url = dest.url.to_string();
                let claim = DestinationClaim {
                    key: DestinationClaim::key_of(&task.account, &url),
                    task_id: task.id.clone(),
                };
                let condition = match claims.get(&url) {
                    Some(Some(read)) => Condition::Version(read.version),
                    Some(None) => Condition::Absent,
                    // A destination the request did not ask for (a task written for another
                    // reason keeps its destinations): nothing to claim when the task holds it.
                    None => match ports.store.load::<DestinationClaim>(&claim.key).await? {
                        Some(current) if current.value.task_id == task.id => continue,
                        Some(current) => Condition::Version(current.version),
                        None => Condition::Absent,
                    },
                };
                claim_writes.push(Write::Put(claim.to_record()?, condition));
            }
        }
        stored_entries.extend(
            write_task(ports, settings, task, condition, &events, claim_writes, now).await?,
        );
        outcome.tasks_written += 1;
    }
    // Events of tasks that were not written (90 task not exists, a refused create): alone.
    for event in fx
        .events
        .iter()
        .filter(|e| !fx.tasks.iter().any(|t| t.id == e.task_id))
    {
        if let Some(entry) = outbox_entry(settings, event, now) {
            let version = ports.store.save(&entry, Condition::Any).await?;
            stored_entries.push(Versioned {
                value: entry,
                version,
            });
        }
    }
    outcome.events = fx.events.len();
    // A task already starting has its job queued: only tasks that start now need one.
    for task in fx
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Starting && !was_starting.contains(&t.id))
    {
        if enqueue_job(ports, task).await {
            outcome.jobs += 1;
        } else {
            apply_to_task(
                ports,
                settings,
                &task.account,
                &task.id,
                Action::DeliveryFailed,
            )
            .await?;
        }
    }
    for entry in stored_entries {
        queue_entry(ports, entry).await?;
    }
    Ok(outcome)
}

/// Stores `task` under `condition` with the outbox entries of `events`, atomically.
async fn write_task(
    ports: &Ports,
    settings: &Settings,
    task: &RelayTask,
    condition: Condition,
    events: &[&TaskEvent],
    extra: Vec<Write>,
    now: i64,
) -> Result<Vec<Versioned<OutboxEntry>>, AppError> {
    let entries: Vec<OutboxEntry> = events
        .iter()
        .filter_map(|e| outbox_entry(settings, e, now))
        .collect();
    let mut writes = vec![Write::Put(task.to_record()?, condition)];
    for entry in &entries {
        writes.push(Write::Put(entry.to_record()?, Condition::Absent));
    }
    writes.extend(extra);
    let versions = ports.store.transact(writes).await?;
    // Each entry is written on `Absent`, so the store reports its version (1).
    Ok(entries
        .into_iter()
        .zip(versions.into_iter().skip(1))
        .map(|(value, version)| Versioned {
            value,
            version: version.unwrap_or(1),
        })
        .collect())
}

/// The outbox entry of an event, when its task has a callback URL.
fn outbox_entry(settings: &Settings, event: &TaskEvent, now: i64) -> Option<OutboxEntry> {
    let url = event.callback_url.as_ref()?;
    let body = serde_json::to_string(&event.payload()).ok()?;
    let mut entry = OutboxEntry::new(
        &event.account,
        event.task_id.as_str(),
        event.seq,
        url.as_str(),
        body,
        callback_policy(settings),
        now,
    );
    entry.event_kind = Some("relay_task".into());
    Some(entry)
}

/// Hands a starting task to the workers; `false` when the queue refused (the seed's code 92 for
/// a request; the scheduler re-queues starting tasks that no worker took up).
pub async fn enqueue_job(ports: &Ports, task: &RelayTask) -> bool {
    let job = RelayJob {
        account: task.account.clone(),
        id: task.id.to_string(),
    };
    let body = serde_json::json!(job).to_string();
    match ports.queue.send(RELAY_QUEUE, &body, Duration::ZERO).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(task = %task.id, error = %e, "relay job could not be queued");
            false
        }
    }
}

/// Applies `action` to the stored task (compare-and-set, retried on races) and stores its
/// events; returns the task as written, or `None` when it does not exist. A refused transition
/// is returned as `Ok` with the task unchanged, since workers and the scheduler act on
/// snapshots that may be stale by the time they write.
pub async fn apply_to_task(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    id: &TaskId,
    action: Action,
) -> Result<Option<Versioned<RelayTask>>, AppError> {
    apply_fenced(ports, settings, account, id, action, None).await
}

/// [`apply_to_task`] by the worker holding the task's lease with fencing token `token`: refused
/// with [`AppError::StaleHolder`] once a newer holder has written, so that a worker whose lease
/// was taken over cannot overwrite the new holder's state.
pub async fn apply_as_holder(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    id: &TaskId,
    action: Action,
    token: u64,
) -> Result<Option<Versioned<RelayTask>>, AppError> {
    apply_fenced(ports, settings, account, id, action, Some(token)).await
}

/// Refuses a holder's write with `token` when the task was run under a newer lease since, else
/// marks the task as run under `token`.
fn fence(task: &mut RelayTask, key: &str, token: Option<u64>) -> Result<(), AppError> {
    let Some(token) = token else { return Ok(()) };
    if token < task.run_token {
        return Err(AppError::StaleHolder {
            key: key.to_string(),
            token,
            current: task.run_token,
        });
    }
    task.run_token = token;
    Ok(())
}

async fn apply_fenced(
    ports: &Ports,
    settings: &Settings,
    account: &str,
    id: &TaskId,
    action: Action,
    token: Option<u64>,
) -> Result<Option<Versioned<RelayTask>>, AppError> {
    let key = RelayTask::store_key(account, id);
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(
                rand::random::<u64>() % (2 + u64::from(attempt) * 3),
            ))
            .await;
        }
        let Some(current) = ports.store.load::<RelayTask>(&key).await? else {
            return Ok(None);
        };
        let now = ports.clock.now_ms();
        let mut task = current.value.clone();
        fence(&mut task, &key, token)?;
        let events = match task.apply(action.clone(), now) {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(task = %id, error = %e, "transition refused");
                return Ok(Some(current));
            }
        };
        let event_refs: Vec<&TaskEvent> = events.iter().collect();
        match write_task(
            ports,
            settings,
            &task,
            Condition::Version(current.version),
            &event_refs,
            Vec::new(),
            now,
        )
        .await
        {
            Ok(entries) => {
                let version = current.version + 1;
                for entry in entries {
                    queue_entry(ports, entry).await?;
                }
                if task.state == TaskState::Starting && current.value.state != TaskState::Starting {
                    enqueue_job(ports, &task).await;
                }
                return Ok(Some(Versioned {
                    value: task,
                    version,
                }));
            }
            Err(AppError::Store(StoreError::ConditionFailed { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AppError::Contention(key))
}

/// Writes a worker's figures onto the task without a state change (compare-and-set, retried):
/// bitrate, fps, position, the current source and each destination's pusher, for the query
/// APIs. A task that is no longer active keeps what it had (a late report of a stopped run).
pub async fn record_run_stats(
    ports: &Ports,
    account: &str,
    id: &TaskId,
    stats: RunStats,
    token: u64,
) -> Result<(), AppError> {
    let key = RelayTask::store_key(account, id);
    for _ in 0..10 {
        let Some(current) = ports.store.load::<RelayTask>(&key).await? else {
            return Ok(());
        };
        if !current.value.state.is_active() {
            return Ok(());
        }
        let mut task = current.value;
        fence(&mut task, &key, Some(token))?;
        // Figures that did not move (a stalled source) are not written again just to change
        // the report's time: the lease already says the worker is alive.
        if (RunStats {
            reported_at_ms: task.stats.reported_at_ms,
            ..stats.clone()
        }) == task.stats
        {
            return Ok(());
        }
        task.stats = stats.clone();
        match ports
            .store
            .save(&task, Condition::Version(current.version))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Contention(key))
}

/// Every active task (scheduled, starting, running, retrying) of every account: one status
/// look-up each, so the cost follows the number of live tasks, not of all tasks ever made.
pub async fn list_active_tasks(ports: &Ports) -> Result<Vec<RelayTask>, AppError> {
    let mut tasks = Vec::new();
    for status in ["scheduled", "starting", "running", "retrying"] {
        tasks.extend(list_tasks(ports, QueryIndex::Status(status.into())).await?);
    }
    Ok(tasks)
}

/// Every task of an account.
pub async fn list_account_tasks(ports: &Ports, account: &str) -> Result<Vec<RelayTask>, AppError> {
    list_tasks(ports, QueryIndex::Account(account.to_string())).await
}

/// Every task of a look-up, all pages.
pub async fn list_tasks(ports: &Ports, index: QueryIndex) -> Result<Vec<RelayTask>, AppError> {
    let mut tasks = Vec::new();
    let mut cursor = None;
    loop {
        let mut query = Query::new(RelayTask::KIND, index.clone());
        query.limit = 1000;
        query.cursor = cursor;
        let (page, next) = ports.store.query_typed::<RelayTask>(query).await?;
        tasks.extend(page.into_iter().map(|v| v.value));
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(tasks),
        }
    }
}

fn request_ids(req: &ForwardRequest) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = match &req.command {
        Command::CreateTasks(items) => items.iter().map(|t| t.id.clone()).collect(),
        Command::StopTasks(items) => items.iter().map(|t| t.id.clone()).collect(),
        Command::UpdateSources(items) => items.iter().map(|t| t.id.clone()).collect(),
        Command::ResumeTasks(items) => items.iter().map(|t| t.id.clone()).collect(),
    };
    ids.sort();
    ids.dedup();
    ids
}

/// Refuses URLs that point at internal addresses, with the seed's message for the field.
fn refuse_internal_targets(req: &ForwardRequest) -> Result<(), RequestError> {
    if req.callback_url.as_ref().is_some_and(|u| u.is_internal()) {
        return Err(RequestError::field("transcallbackurl"));
    }
    let check_sources = |sources: &[Source]| -> Result<(), RequestError> {
        for s in sources {
            if s.url.is_internal() {
                return Err(RequestError::BadSrc);
            }
            if s.wm_image
                .as_ref()
                .is_some_and(|w| w.urls().iter().any(|u| u.is_internal()))
            {
                return Err(RequestError::field("wmImage"));
            }
        }
        Ok(())
    };
    match &req.command {
        Command::CreateTasks(items) => {
            for t in items {
                check_sources(&t.sources)?;
                if t.forwards.iter().any(|f| f.is_internal()) {
                    return Err(RequestError::BadForward);
                }
            }
        }
        Command::UpdateSources(items) => {
            for t in items {
                check_sources(&t.sources)?;
            }
        }
        Command::ResumeTasks(items) => {
            if items
                .iter()
                .flat_map(|t| &t.forwards)
                .any(|(_, reset)| reset.as_ref().is_some_and(|r| r.is_internal()))
            {
                return Err(RequestError::BadForward);
            }
        }
        Command::StopTasks(_) => {}
    }
    Ok(())
}
