//! Leases: a worker owns a running task by holding a lease row in the store (holder +
//! expiry), renewed by heartbeat. A lease not renewed in time is stale; the scheduler's reaper
//! finds stale leases and re-queues their work, so a killed worker's tasks come back on another
//! worker. Every take-over bumps a fencing `token`, and every renewal is a compare-and-set, so
//! the previous holder learns at its next heartbeat that it lost the lease and stops: a task never
//! runs on two workers past one heartbeat.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ports::{
    Clock, Condition, Entity, IndexKeys, Kind, Query, QueryIndex, Store, StoreError, TypedStore,
};

/// A lease row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// What is leased, e.g. `relay:{account}:{task id}`.
    pub resource: String,
    /// Who holds it (a worker instance id).
    pub holder: String,
    /// When it goes stale unless renewed, Unix ms.
    pub expires_at_ms: i64,
    /// Fencing token: grows by one at every change of holder.
    pub token: u64,
}

const HELD: &str = "held";

impl Entity for Lease {
    const KIND: Kind = Kind("lease");

    fn key(&self) -> String {
        self.resource.clone()
    }

    // Not a store TTL: the reaper must still see stale leases to re-queue their work.
    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: None,
            status: Some(HELD.into()),
            time_ms: Some(self.expires_at_ms),
        }
    }
}

/// Proof of holding a lease; pass it back to renew or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGuard {
    /// The lease as last written.
    pub lease: Lease,
    version: u64,
}

/// Takes, renews, releases and finds stale leases.
#[derive(Clone)]
pub struct Leases {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl_ms: i64,
}

impl Leases {
    /// Leases in `store` that go stale `ttl_ms` after their last renewal.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, ttl_ms: u64) -> Self {
        Self {
            store,
            clock,
            ttl_ms: ttl_ms as i64,
        }
    }

    /// Takes the lease on `resource` for `holder` if it is free, stale, or already `holder`'s.
    /// `None` when another holder has a live lease.
    pub async fn acquire(
        &self,
        resource: &str,
        holder: &str,
    ) -> Result<Option<LeaseGuard>, StoreError> {
        let now = self.clock.now_ms();
        let current = self.store.load::<Lease>(resource).await?;
        let (condition, token) = match &current {
            None => (Condition::Absent, 1),
            Some(v) if v.value.holder == holder => (Condition::Version(v.version), v.value.token),
            Some(v) if v.value.expires_at_ms <= now => {
                (Condition::Version(v.version), v.value.token + 1)
            }
            Some(_) => return Ok(None),
        };
        let lease = Lease {
            resource: resource.into(),
            holder: holder.into(),
            expires_at_ms: now + self.ttl_ms,
            token,
        };
        match self.store.save(&lease, condition).await {
            Ok(version) => Ok(Some(LeaseGuard { lease, version })),
            // Someone else took or renewed it between our read and write.
            Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Extends the lease; `false` when it was lost (taken over after going stale, or released).
    pub async fn renew(&self, guard: &mut LeaseGuard) -> Result<bool, StoreError> {
        let mut lease = guard.lease.clone();
        lease.expires_at_ms = self.clock.now_ms() + self.ttl_ms;
        match self
            .store
            .save(&lease, Condition::Version(guard.version))
            .await
        {
            Ok(version) => {
                guard.lease = lease;
                guard.version = version;
                Ok(true)
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The live holder of `resource`, if any (a stale lease has none).
    pub async fn holder(&self, resource: &str) -> Result<Option<String>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self
            .store
            .load::<Lease>(resource)
            .await?
            .filter(|l| l.value.expires_at_ms > now)
            .map(|l| l.value.holder))
    }

    /// Gives the lease up; a lease already lost is not an error.
    pub async fn release(&self, guard: LeaseGuard) -> Result<(), StoreError> {
        match self
            .store
            .delete(
                Lease::KIND,
                &guard.lease.resource,
                Condition::Version(guard.version),
            )
            .await
        {
            Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Up to `limit` leases that went stale before now, oldest first.
    pub async fn stale(&self, limit: usize) -> Result<Vec<Lease>, StoreError> {
        let mut query = Query::new(Lease::KIND, QueryIndex::Status(HELD.into()));
        query.time_to_ms = Some(self.clock.now_ms());
        query.limit = limit.clamp(1, 1000);
        let (leases, _) = self.store.query_typed::<Lease>(query).await?;
        Ok(leases.into_iter().map(|v| v.value).collect())
    }

    /// Removes a stale lease so its work can be re-queued exactly once: only one reaper wins.
    pub async fn reap(&self, stale: &Lease) -> Result<bool, StoreError> {
        let Some(current) = self.store.load::<Lease>(&stale.resource).await? else {
            return Ok(false);
        };
        if current.value != *stale || current.value.expires_at_ms > self.clock.now_ms() {
            return Ok(false);
        }
        match self
            .store
            .delete(
                Lease::KIND,
                &stale.resource,
                Condition::Version(current.version),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
