//! Authentication of the control API (seed 001, "인증"): `n` (account), `r` (a random string of
//! at most 32 characters, used once), `k = md5(r + key)` (32 hex digits); plus an optional
//! HMAC-SHA256 request signature for operators who want more than MD5, and the `Account` record
//! the checks run against.
//!
//! The stateless checks live here; the stateful ones (replayed `r`, calls per window) are done by
//! the handler with the store, reporting the [`RequestError`] variants defined next to these so
//! every refusal is 403 / 1002 with the seed's message.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::error::RequestError;
use crate::ports::store::{Entity, IndexKeys, Kind};

/// The longest accepted random `r`.
pub const MAX_RANDOM_LEN: usize = 32;
/// The rate-limit window of the seed ("일반적으로 5분에 100회").
pub const RATE_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Calls per window when the account does not say otherwise.
pub const DEFAULT_CALL_LIMIT: u32 = 100;
/// How long a used `r` is remembered (and refused as `random is repeat`): the seed says "within a
/// short time"; one rate window keeps the replay table small and bounded.
pub const REPLAY_WINDOW_MS: i64 = RATE_WINDOW_MS;

/// The `n`, `r`, `k` of a request, checked for presence and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParams {
    /// The account name `n`.
    pub account: String,
    /// The random `r`.
    pub random: String,
    /// The signature `k`, lower-cased.
    pub signature: String,
}

impl AuthParams {
    /// Checks the presence (`apiName, n, r, k not exist or empty`) and the lengths (`random.length
    /// gt 32 or key.length ne 32`) of the query parameters.
    pub fn parse(n: Option<&str>, r: Option<&str>, k: Option<&str>) -> Result<Self, RequestError> {
        let (n, r, k) = match (n, r, k) {
            (Some(n), Some(r), Some(k)) if !n.is_empty() && !r.is_empty() && !k.is_empty() => {
                (n, r, k)
            }
            _ => return Err(RequestError::AuthMissing),
        };
        if r.chars().count() > MAX_RANDOM_LEN || k.chars().count() != 32 {
            return Err(RequestError::AuthLength);
        }
        Ok(Self {
            account: n.to_string(),
            random: r.to_string(),
            signature: k.to_ascii_lowercase(),
        })
    }

    /// Checks `k == md5(r + key)` in constant time (`k is error` otherwise).
    pub fn verify(&self, key: &SecretKey) -> Result<(), RequestError> {
        let expected = sign_k(&self.random, key);
        if constant_time_eq(expected.as_bytes(), self.signature.as_bytes()) {
            Ok(())
        } else {
            Err(RequestError::BadSignature)
        }
    }

    /// The store key remembering this `r` for the replay check: `{account}:{r}`.
    pub fn nonce_key(&self) -> String {
        format!("{}:{}", self.account, self.random)
    }
}

/// `k = md5(r + key)` as 32 lower-case hex digits.
pub fn sign_k(random: &str, key: &SecretKey) -> String {
    let mut h = Md5::new();
    h.update(random.as_bytes());
    h.update(key.expose().as_bytes());
    hex::encode(h.finalize())
}

/// Compares without leaking, through timing, how long a matching prefix is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The start of the rate-limit window containing `now_ms` (fixed 5-minute windows, like the
/// seed's "resets every 5 minutes").
pub fn rate_window_start(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(RATE_WINDOW_MS)
}

/// The text an HMAC-SHA256 request signature covers: method, path, query and the SHA-256 of the
/// body, one per line. Hashing the body keeps the canonical string small and unambiguous.
pub fn hmac_canonical(method: &str, path: &str, query: &str, body: &[u8]) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        query,
        hex::encode(Sha256::digest(body))
    )
}

/// The HMAC-SHA256 signature (lower-case hex) of a request, keyed by the account's secret.
pub fn hmac_signature(
    key: &SecretKey,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> String {
    let mut mac = new_mac(key);
    mac.update(hmac_canonical(method, path, query, body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks an HMAC-SHA256 signature in constant time; a refusal is `k is error` like the MD5 mode.
pub fn verify_hmac_signature(
    key: &SecretKey,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    signature_hex: &str,
) -> Result<(), RequestError> {
    let sig = hex::decode(signature_hex.trim()).map_err(|_| RequestError::BadSignature)?;
    let mut mac = new_mac(key);
    mac.update(hmac_canonical(method, path, query, body).as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| RequestError::BadSignature)
}

fn new_mac(key: &SecretKey) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key rather than
    // panic should that ever change.
    <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new_from_slice(&[]).expect("empty HMAC key"))
}

/// An account's secret API key. `Debug` and `Display` never print it, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// A new random key of 32 hex digits.
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(hex::encode(bytes))
    }

    /// The key itself, for signing. Named so that every use is easy to find.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl std::fmt::Display for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// An API account (`n`), stored as kind `account` under its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account name, as sent in `n`.
    pub name: String,
    /// The secret key `k` is signed with.
    pub secret_key: SecretKey,
    /// Whether the account may call the API (`you do not have right to access this api`).
    pub api_enabled: bool,
    /// Calls allowed per 5-minute window.
    #[serde(default = "default_call_limit")]
    pub call_limit_per_window: u32,
    /// Destination hosts this account may push to; `None` allows any (`user and host not
    /// relation` otherwise). Matched case-insensitively on the URL's host, without port.
    #[serde(default)]
    pub allowed_push_hosts: Option<Vec<String>>,
}

fn default_call_limit() -> u32 {
    DEFAULT_CALL_LIMIT
}

impl Account {
    /// An enabled account with the default limit and no host restriction.
    pub fn new(name: impl Into<String>, secret_key: SecretKey) -> Self {
        Self {
            name: name.into(),
            secret_key,
            api_enabled: true,
            call_limit_per_window: DEFAULT_CALL_LIMIT,
            allowed_push_hosts: None,
        }
    }

    /// Refuses a disabled account.
    pub fn check_enabled(&self) -> Result<(), RequestError> {
        if self.api_enabled {
            Ok(())
        } else {
            Err(RequestError::NoRight)
        }
    }

    /// Refuses once `calls_in_window` (this call included) passes the account's limit.
    pub fn check_rate(&self, calls_in_window: u32) -> Result<(), RequestError> {
        if calls_in_window <= self.call_limit_per_window {
            Ok(())
        } else {
            Err(RequestError::RateLimited)
        }
    }

    /// Refuses when a destination host is not in the account's allowed hosts.
    pub fn check_push_hosts<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), RequestError> {
        let Some(allowed) = &self.allowed_push_hosts else {
            return Ok(());
        };
        for host in hosts {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
                return Err(RequestError::HostNotRelated);
            }
        }
        Ok(())
    }
}

impl Entity for Account {
    const KIND: Kind = Kind("account");

    fn key(&self) -> String {
        self.name.clone()
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.name.clone()),
            status: None,
            time_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::new("012f37a3f2952")
    }

    #[test]
    fn the_seed_worked_example_signs_to_its_k() {
        assert_eq!(
            sign_k("1409284800", &key()),
            "b9fed80be752551834eec3e52fa94115"
        );
        let p = AuthParams::parse(
            Some("acc"),
            Some("1409284800"),
            Some("b9fed80be752551834eec3e52fa94115"),
        )
        .unwrap();
        assert_eq!(p.verify(&key()), Ok(()));
        // Upper-case hex is the same signature.
        let p = AuthParams::parse(
            Some("acc"),
            Some("1409284800"),
            Some("B9FED80BE752551834EEC3E52FA94115"),
        )
        .unwrap();
        assert_eq!(p.verify(&key()), Ok(()));
    }

    #[test]
    fn a_wrong_k_is_refused() {
        let p = AuthParams::parse(
            Some("acc"),
            Some("1409284801"),
            Some("b9fed80be752551834eec3e52fa94115"),
        )
        .unwrap();
        let e = p.verify(&key()).unwrap_err();
        assert_eq!(
            (e.http_status(), e.http_code(), e.msg().as_str()),
            (403, "1002", "k is error")
        );
    }

    #[test]
    fn missing_or_empty_parameters_are_refused() {
        let k = Some("b9fed80be752551834eec3e52fa94115");
        for (n, r, k) in [
            (None, Some("1"), k),
            (Some("a"), None, k),
            (Some("a"), Some("1"), None),
            (Some(""), Some("1"), k),
            (Some("a"), Some(""), k),
            (Some("a"), Some("1"), Some("")),
        ] {
            let e = AuthParams::parse(n, r, k).unwrap_err();
            assert_eq!(e.msg(), "apiName, n, r, k not exist or empty");
        }
    }

    #[test]
    fn lengths_of_r_and_k_are_checked() {
        let k = "b9fed80be752551834eec3e52fa94115";
        assert!(AuthParams::parse(Some("a"), Some(&"r".repeat(32)), Some(k)).is_ok());
        let e = AuthParams::parse(Some("a"), Some(&"r".repeat(33)), Some(k)).unwrap_err();
        assert_eq!(e.msg(), "random.length gt 32 or key.length ne 32");
        assert_eq!(
            AuthParams::parse(Some("a"), Some("1"), Some(&k[..31])),
            Err(RequestError::AuthLength)
        );
        assert_eq!(
            AuthParams::parse(Some("a"), Some("1"), Some(&format!("{k}0"))),
            Err(RequestError::AuthLength)
        );
    }

    #[test]
    fn stateful_refusals_have_the_seed_messages() {
        assert_eq!(RequestError::RandomRepeat.msg(), "random is repeat");
        assert_eq!(
            RequestError::RateLimited.msg(),
            "frequency is great than limitCount"
        );
        let mut acc = Account::new("acc", key());
        assert_eq!(acc.check_rate(100), Ok(()));
        assert_eq!(
            acc.check_rate(101).unwrap_err().msg(),
            "frequency is great than limitCount"
        );
        acc.api_enabled = false;
        assert_eq!(
            acc.check_enabled().unwrap_err().msg(),
            "you do not have right to access this api"
        );
        acc.allowed_push_hosts = Some(vec!["Push.Example.com".into()]);
        assert_eq!(acc.check_push_hosts(["push.example.com"]), Ok(()));
        assert_eq!(
            acc.check_push_hosts(["push.example.com", "evil.example"])
                .unwrap_err()
                .msg(),
            "user and host not relation"
        );
    }

    #[test]
    fn the_secret_key_never_prints() {
        let acc = Account::new("acc", key());
        assert!(!format!("{acc:?}").contains("012f37a3f2952"));
        assert!(!format!("{}", acc.secret_key).contains("012f37a3f2952"));
        assert_eq!(SecretKey::generate().expose().len(), 32);
    }

    #[test]
    fn account_is_an_entity_and_round_trips() {
        let acc = Account::new("acc", key());
        let rec = acc.to_record().unwrap();
        assert_eq!((rec.kind.as_str(), rec.key.as_str()), ("account", "acc"));
        assert_eq!(Account::from_record(rec).unwrap().value, acc);
        // Older records without the optional fields get the defaults.
        let old: Account =
            serde_json::from_str(r#"{"name":"a","secret_key":"s","api_enabled":true}"#).unwrap();
        assert_eq!(
            (old.call_limit_per_window, old.allowed_push_hosts),
            (100, None)
        );
    }

    #[test]
    fn hmac_signatures_cover_method_path_query_and_body() {
        let sig = hmac_signature(
            &key(),
            "post",
            "/api/cdn/v2/forwardRequest.action",
            "n=a",
            b"{}",
        );
        assert_eq!(sig.len(), 64);
        assert_eq!(
            verify_hmac_signature(
                &key(),
                "POST",
                "/api/cdn/v2/forwardRequest.action",
                "n=a",
                b"{}",
                &sig
            ),
            Ok(())
        );
        for (m, p, q, b) in [
            (
                "GET",
                "/api/cdn/v2/forwardRequest.action",
                "n=a",
                &b"{}"[..],
            ),
            ("POST", "/x", "n=a", b"{}"),
            ("POST", "/api/cdn/v2/forwardRequest.action", "n=b", b"{}"),
            ("POST", "/api/cdn/v2/forwardRequest.action", "n=a", b"{ }"),
        ] {
            assert_eq!(
                verify_hmac_signature(&key(), m, p, q, b, &sig),
                Err(RequestError::BadSignature)
            );
        }
        assert_eq!(
            verify_hmac_signature(&key(), "POST", "/", "", b"", "not hex"),
            Err(RequestError::BadSignature)
        );
    }

    #[test]
    fn rate_windows_are_five_minutes() {
        assert_eq!(rate_window_start(1_000_000), 900_000);
        assert_eq!(rate_window_start(900_000), 900_000);
        assert!(
            constant_time_eq(b"ab", b"ab")
                && !constant_time_eq(b"ab", b"ac")
                && !constant_time_eq(b"a", b"ab")
        );
    }
}
