//! The stateful half of n/r/k authentication: the account look-up, the replayed-`r` check and the
//! calls-per-window limit, over the store. The stateless rules are in [`crate::domain::auth`].

use serde::{Deserialize, Serialize};

use super::AppError;
use crate::config::TimingSettings;
use crate::domain::auth::{Account, AuthParams};
use crate::domain::RequestError;
use crate::ports::{Condition, Entity, Kind, Ports, StoreError, TypedStore};

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

/// Calls of one account in one rate window: a store counter.
const CALL_COUNT: Kind = Kind("call_count");

/// Stores the accounts `accounts` declares; the declaration wins over what is stored (a key
/// changed in the config takes effect at the next start). Run by every host at start: `relaycast
/// up`, and the Lambda functions whose settings declare accounts (the stack gives them to the
/// `api` function).
pub async fn store_declared_accounts(
    ports: &Ports,
    accounts: &[crate::config::AccountSettings],
) -> Result<(), StoreError> {
    for declared in accounts {
        let account = Account {
            name: declared.name.clone(),
            secret_key: declared.key.clone(),
            api_enabled: declared.api_enabled,
            call_limit_per_window: declared.call_limit,
            allowed_push_hosts: (!declared.allowed_push_hosts.is_empty())
                .then(|| declared.allowed_push_hosts.clone()),
        };
        ports.store.save(&account, Condition::Any).await?;
    }
    Ok(())
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
    let account = ports
        .store
        .load::<Account>(&params.account)
        .await?
        .ok_or(RequestError::NoRight)?
        .value;
    account.check_enabled()?;
    params.verify(&account.secret_key)?;

    let now = ports.clock.now_ms();
    let window = timing.rate_window_ms.max(1) as i64;
    let window_start = now - now.rem_euclid(window);
    let key = format!("{}:{window_start}", account.name);
    let used = UsedRandom {
        key: params.nonce_key(),
        expires_at_ms: now + timing.replay_window_ms as i64,
    };
    // Both writes at once, so they share one commit; the answers are then read in the seed's
    // order (a rate-limited request also uses up its `r`, which a client never reuses anyway).
    let (calls, replay) = tokio::join!(
        ports
            .store
            .increment(CALL_COUNT, &key, Some(window_start + window)),
        ports.store.save(&used, Condition::Absent)
    );
    account.check_rate(u32::try_from(calls?).unwrap_or(u32::MAX))?;
    match replay {
        Ok(_) => Ok(account),
        Err(StoreError::ConditionFailed { .. }) => Err(RequestError::RandomRepeat.into()),
        Err(e) => Err(e.into()),
    }
}
