//! The media library: object-created notices become media records and record notices; search,
//! get, delete and retention expiry of the files.

use std::time::Duration;

use serde_json::Value;

use super::callbacks::{find_binding, retry_policy, ConfigCache};
use super::outbox::queue_entry;
use crate::config::Settings;
use crate::domain::api_error::ApiRefusal;
use crate::domain::callbacks::event::RetryClass;
use crate::domain::outbox::{OutboxEntry, Signing};
use crate::domain::recording::media::{
    MediaExpiry, MediaRecord, MediaSearch, Snapshot, MEDIA_EXPIRY_INDEX,
};
use crate::domain::recording::{ObjectCreated, RecordFile, Recording};
use crate::ports::{
    Condition, Entity, ObjectStoreError, Ports, Query, QueryIndex, StoreError, TypedStore,
    Versioned, Write,
};

/// How long the `video_url` of a record notice and the `MediaUrl` of a search answer stay
/// valid: a week, or the file's retention when shorter.
pub const PLAYBACK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What can go wrong in the media library.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The request breaks a rule.
    #[error(transparent)]
    Refused(#[from] ApiRefusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object store failed.
    #[error(transparent)]
    Objects(#[from] ObjectStoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] crate::ports::QueueError),
}

/// What a notice did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// A media record was made, with this many record notices.
    Recorded {
        /// The new `FileId`.
        file_id: String,
        /// Notices queued.
        notices: usize,
    },
    /// This file has its media record already (a repeated notice).
    Repeated,
    /// Not a recording file (no record file names it).
    NotOurs,
}

async fn playback_url(ports: &Ports, media: &MediaRecord) -> Result<String, ObjectStoreError> {
    let now = ports.clock.now_ms();
    let ttl = media.file.expires_ms.map_or(PLAYBACK_TTL, |e| {
        Duration::from_millis((e - now).max(1000) as u64).min(PLAYBACK_TTL)
    });
    ports
        .objects
        .playback_url(&media.file.object_key, ttl)
        .await
}

/// Turns an object-created notice into a media record and its record notices: one to the
/// recording's `RecordNotifyUrl` (signed with its `CallbackKey`) and one to the stream
/// domain's callback template, all in one transaction with the record, so a notice handled
/// twice yields one record and one callback each.
pub async fn handle_object_created(
    ports: &Ports,
    settings: &Settings,
    cache: &ConfigCache,
    notice: &ObjectCreated,
) -> Result<NoticeOutcome, MediaError> {
    let Some(file) = ports.store.load::<RecordFile>(&notice.key).await? else {
        return Ok(NoticeOutcome::NotOurs);
    };
    let now = ports.clock.now_ms();
    let media = MediaRecord::new(file.value, now);
    if ports
        .store
        .load::<MediaRecord>(&media.key())
        .await?
        .is_some()
    {
        return Ok(NoticeOutcome::Repeated);
    }
    let url = playback_url(ports, &media).await?;
    let body = Value::Object(media.record_notice(&url)).to_string();
    let policy = retry_policy(settings, RetryClass::StreamLifecycle);
    // One outbox stream per endpoint: a dead receiver never holds the other's notice back.
    let stream_key = |to: &str| format!("record/{}/{to}", media.file_id);
    let recording_key = Recording::store_key(&media.file.account, &media.file.recording_id);
    let mut entries = Vec::new();
    if let Some(recording) = ports.store.load::<Recording>(&recording_key).await? {
        if let Some(notify) = &recording.value.spec.notify_url {
            let mut entry = OutboxEntry::new(
                &media.file.account,
                &stream_key("recording"),
                1,
                notify,
                body.clone(),
                policy,
                now,
            );
            entry.signing = Signing::RecordingKey {
                recording: recording_key.clone(),
            };
            entries.push(entry);
        }
    }
    if let Some(stream) = &media.file.stream {
        if let Some((_, Some(template))) = find_binding(ports, cache, stream).await? {
            if let Some(notify) = template.urls.record_notify_url.as_deref() {
                let mut entry = OutboxEntry::new(
                    &media.file.account,
                    &stream_key("template"),
                    1,
                    notify,
                    body.clone(),
                    policy,
                    now,
                );
                entry.signing = Signing::CallbackTemplate {
                    template: template.key(),
                    css: true,
                };
                entries.push(entry);
            }
        }
    }
    for entry in &mut entries {
        entry.event_id = Some(format!("record-{}", media.file_id));
        entry.event_kind = Some("record".into());
    }
    let mut writes = vec![Write::Put(media.to_record()?, Condition::Absent)];
    if let Some(due_ms) = media.file.expires_ms {
        let expiry = MediaExpiry {
            account: media.file.account.clone(),
            file_id: media.file_id.clone(),
            due_ms,
        };
        writes.push(Write::Put(expiry.to_record()?, Condition::Any));
    }
    for entry in &entries {
        writes.push(Write::Put(entry.to_record()?, Condition::Absent));
    }
    let versions = match ports.store.transact(writes).await {
        Ok(v) => v,
        Err(StoreError::ConditionFailed { .. }) => return Ok(NoticeOutcome::Repeated),
        Err(e) => return Err(e.into()),
    };
    let first_entry = versions.len() - entries.len();
    for (entry, version) in entries.iter().zip(&versions[first_entry..]) {
        if let Err(e) = queue_entry(
            ports,
            Versioned {
                value: entry.clone(),
                // Written on `Absent`: the store reports its version (1).
                version: version.unwrap_or(1),
            },
        )
        .await
        {
            tracing::warn!(entry = %entry.id, error = %e, "record notice not queued; the outbox sweep will");
        }
    }
    metrics::counter!("relaycast_media_records_total", "format" => media.file.format.as_str())
        .increment(1);
    tracing::info!(file = %media.file_id, key = %media.file.object_key, notices = entries.len(), "media record made");
    Ok(NoticeOutcome::Recorded {
        file_id: media.file_id,
        notices: entries.len(),
    })
}

/// A snapshot landed in the object store: its notice (event 200) goes to the stream domain's
/// callback template (`SnapshotNotifyUrl`). Returns how many notices were queued.
pub async fn snapshot_taken(
    ports: &Ports,
    settings: &Settings,
    cache: &ConfigCache,
    account: &str,
    snapshot: &Snapshot,
) -> Result<usize, MediaError> {
    let Some(stream) = &snapshot.stream else {
        return Ok(0);
    };
    let Some((_, Some(template))) = find_binding(ports, cache, stream).await? else {
        return Ok(0);
    };
    let Some(url) = template.urls.snapshot_notify_url.as_deref() else {
        return Ok(0);
    };
    let now = ports.clock.now_ms();
    let full_url = ports
        .objects
        .playback_url(&snapshot.object_key, PLAYBACK_TTL)
        .await?;
    let body = Value::Object(snapshot.notice(&full_url)).to_string();
    let stream_key = format!(
        "snapshot/{}",
        crate::domain::recording::media::file_id_of(&snapshot.object_key)
    );
    let mut entry = OutboxEntry::new(
        account,
        &stream_key,
        1,
        url,
        body,
        retry_policy(settings, RetryClass::Other),
        now,
    );
    entry.signing = Signing::CallbackTemplate {
        template: template.key(),
        css: true,
    };
    entry.event_kind = Some("snapshot".into());
    let version = match ports.store.save(&entry, Condition::Absent).await {
        Ok(v) => v,
        Err(StoreError::ConditionFailed { .. }) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    queue_entry(
        ports,
        Versioned {
            value: entry,
            version,
        },
    )
    .await
    .map_err(|e| MediaError::Store(StoreError::Backend(e.to_string())))?;
    Ok(1)
}

/// One page of a search, with the total and each record's playback URL.
pub async fn search_media(
    ports: &Ports,
    account: &str,
    search: &MediaSearch,
) -> Result<(u64, Vec<(MediaRecord, String)>), MediaError> {
    let mut query = Query::new(
        MediaRecord::KIND,
        QueryIndex::Status(MediaRecord::namespace_index(account, search.namespace)),
    );
    query.time_from_ms = search.after_ms;
    query.time_to_ms = search.before_ms;
    query.descending = search.descending;
    query.limit = 1000;
    let mut matched = Vec::new();
    loop {
        let (page, next) = ports
            .store
            .query_typed::<MediaRecord>(query.clone())
            .await?;
        matched.extend(
            page.into_iter()
                .map(|v| v.value)
                .filter(|m| search.matches(m)),
        );
        match next {
            Some(cursor)
                if (matched.len() as u64) < crate::domain::recording::media::MAX_SEARCH_WINDOW =>
            {
                query.cursor = Some(cursor)
            }
            _ => break,
        }
    }
    let total = (matched.len() as u64).min(crate::domain::recording::media::MAX_SEARCH_WINDOW);
    let mut out = Vec::new();
    for m in matched
        .into_iter()
        .skip(search.offset as usize)
        .take(search.limit as usize)
    {
        let url = playback_url(ports, &m).await?;
        out.push((m, url));
    }
    Ok((total, out))
}

fn not_found(file_id: &str) -> ApiRefusal {
    ApiRefusal::not_found(
        "ResourceNotFound",
        format!("media {file_id} does not exist"),
    )
}

/// One media record of `account` in `namespace`, with its playback URL.
pub async fn get_media(
    ports: &Ports,
    account: &str,
    namespace: u64,
    file_id: &str,
) -> Result<(MediaRecord, String), MediaError> {
    let media = ports
        .store
        .load::<MediaRecord>(&MediaRecord::store_key(account, file_id))
        .await?
        .map(|v| v.value)
        .filter(|m| m.file.namespace == namespace);
    let media = media.ok_or_else(|| not_found(file_id))?;
    let url = playback_url(ports, &media).await?;
    Ok((media, url))
}

/// `DeleteMedia`: the file's objects first, then its records, so a failure half-way leaves a
/// record that can be deleted again, never an object nobody knows of.
pub async fn delete_media(
    ports: &Ports,
    account: &str,
    namespace: u64,
    file_id: &str,
) -> Result<(), MediaError> {
    let key = MediaRecord::store_key(account, file_id);
    let media = ports
        .store
        .load::<MediaRecord>(&key)
        .await?
        .filter(|m| m.value.file.namespace == namespace)
        .ok_or_else(|| not_found(file_id))?;
    for object in media.value.object_keys() {
        ports.objects.delete(object).await?;
    }
    for (kind, k) in [
        (RecordFile::KIND, media.value.file.object_key.clone()),
        (MediaExpiry::KIND, key.clone()),
        (MediaRecord::KIND, key),
    ] {
        match ports.store.delete(kind, &k, Condition::Any).await {
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(file = %file_id, key = %media.value.file.object_key, "media deleted");
    Ok(())
}

/// Retention: deletes up to `limit` media whose storage time has passed; returns how many.
pub async fn expire_due(ports: &Ports, limit: usize) -> Result<usize, MediaError> {
    let mut query = Query::new(
        MediaExpiry::KIND,
        QueryIndex::Status(MEDIA_EXPIRY_INDEX.into()),
    );
    query.time_to_ms = Some(ports.clock.now_ms() + 1);
    query.limit = limit.clamp(1, 1000);
    let (due, _) = ports.store.query_typed::<MediaExpiry>(query).await?;
    let mut deleted = 0;
    for d in due {
        let media = ports
            .store
            .load::<MediaRecord>(&MediaRecord::store_key(&d.value.account, &d.value.file_id))
            .await?;
        match media {
            Some(m) => {
                delete_media(
                    ports,
                    &d.value.account,
                    m.value.file.namespace,
                    &d.value.file_id,
                )
                .await?;
                deleted += 1;
            }
            None => {
                let _ = ports
                    .store
                    .delete(MediaExpiry::KIND, &d.value.key(), Condition::Any)
                    .await;
            }
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "media past their storage time deleted");
    }
    Ok(deleted)
}
