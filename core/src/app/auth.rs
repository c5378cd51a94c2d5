//! The stateful half of n/r/k authentication: the account look-up, the replayed-`r` check and the
//! calls-per-window limit, over the store. The stateless rules are in [`crate::domain::auth`].

use serde::{Deserialize, Serialize};

use super::AppError;
use crate::config::TimingSettings;
use crate::domain::auth::{Account, AuthParams};
use crate::domain::RequestError;
use crate::ports::{Condition, Entity, IndexKeys, Kind, Ports, StoreError, TypedStore};

/// A used `r`, remembered for the replay window (then expired by the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UsedRandom {
    key: String,
    expires_at_ms: i64,
}

impl Entity for UsedRandom {
    const KIND: Kind = Kind("used_random");
    fn key(&self) -> String {
        self.key.clone()
    }
    fn expires_at_ms(&self) -> Option<i64> {
        Some(self.expires_at_ms)
    }
}

/// Calls of one account in one rate window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CallCount {
    key: String,
    calls: u32,
    expires_at_ms: i64,
}

impl Entity for CallCount {
    const KIND: Kind = Kind("call_count");
    fn key(&self) -> String {
        self.key.clone()
    }
    fn index(&self) -> IndexKeys {
        IndexKeys::default()
    }
    fn expires_at_ms(&self) -> Option<i64> {
        Some(self.expires_at_ms)
    }
}

/// Checks a request's `n`, `r`, `k` and returns its account. The order follows the seed's table:
/// presence and lengths, the account's right to the API, the signature, the call limit, then
/// the replay of `r` (so a replayed request still counts as a call).
pub async fn authenticate(
    ports: &Ports,
    timing: &TimingSettings,
    n: Option<&str>,
    r: Option<&str>,
    k: Option<&str>,
) -> Result<Account, AppError> {
    let params = AuthParams::parse(n, r, k)?;
    // An unknown account gets the same answer as a disabled one: never reveal which names exist.
    let account = ports.store.load::<Account>(&params.account).await?.ok_or(RequestError::NoRight)?.value;
    account.check_enabled()?;
    params.verify(&account.secret_key)?;

    let now = ports.clock.now_ms();
    let window = timing.rate_window_ms.max(1) as i64;
    let window_start = now - now.rem_euclid(window);
    let calls = count_call(ports, &format!("{}:{window_start}", account.name), window_start + window).await?;
    account.check_rate(calls)?;

    let used = UsedRandom { key: params.nonce_key(), expires_at_ms: now + timing.replay_window_ms as i64 };
    match ports.store.save(&used, Condition::Absent).await {
        Ok(_) => Ok(account),
        Err(StoreError::ConditionFailed { .. }) => Err(RequestError::RandomRepeat.into()),
        Err(e) => Err(e.into()),
    }
}

/// Adds one call to the counter and returns the new count (compare-and-set, retried on races).
async fn count_call(ports: &Ports, key: &str, expires_at_ms: i64) -> Result<u32, AppError> {
    for _ in 0..20 {
        let (next, condition) = match ports.store.load::<CallCount>(key).await? {
            Some(v) => (v.value.calls.saturating_add(1), Condition::Version(v.version)),
            None => (1, Condition::Absent),
        };
        let counter = CallCount { key: key.to_string(), calls: next, expires_at_ms };
        match ports.store.save(&counter, condition).await {
            Ok(_) => return Ok(next),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Contention(format!("call counter {key}")))
}
