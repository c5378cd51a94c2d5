//! Publish authorization for hook senders (nginx-rtmp and SRS refuse a publish whose hook does
//! not answer 2xx / code 0): per push domain, a stream-name allow-list and/or Tencent-style push
//! URL signing, `txSecret = md5(key + StreamName + txTime)` with `txTime` the URL's expiry in
//! upper-case hex Unix seconds. Off unless a rule for the domain is stored and enabled.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::event::{parse_domain, parse_name};
use super::hooks::param;
use crate::domain::api_error::ApiRefusal;
use crate::domain::auth::{constant_time_eq, SecretKey};
use crate::ports::{Entity, IndexKeys, Kind};

const MAX_ALLOWED_STREAMS: usize = 1000;

/// A rule as the API takes it (`PUT /v1/publish-auth/{domain}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PublishAuthInput {
    /// Whether publishes on the domain are checked.
    pub enable: Option<bool>,
    /// Stream names that may publish without a signature.
    pub allowed_streams: Option<Vec<String>>,
    /// The key of `txSecret` (Tencent's MasterAuthKey).
    pub master_auth_key: Option<String>,
    /// A second key accepted while the first is rotated (BackupAuthKey).
    pub backup_auth_key: Option<String>,
}

/// A stored publish authorization rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishAuthRule {
    /// The owning account.
    pub account: String,
    /// The push domain.
    pub domain: String,
    /// Whether it is in force.
    pub enabled: bool,
    /// Streams allowed without a signature.
    pub allowed_streams: Vec<String>,
    /// `txSecret` keys.
    pub master_key: Option<SecretKey>,
    /// `txSecret` backup key.
    pub backup_key: Option<SecretKey>,
    /// Unix ms.
    pub updated_ms: i64,
}

fn key_of(field: &str, raw: Option<String>) -> Result<Option<SecretKey>, ApiRefusal> {
    match raw.filter(|k| !k.is_empty()) {
        None => Ok(None),
        Some(k) if k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(SecretKey::new(k)))
        }
        Some(_) => Err(ApiRefusal::invalid(
            field,
            "1-128 printable ASCII characters without spaces",
        )),
    }
}

/// `md5(key + stream + txTime)`, lower-case hex.
pub fn tx_secret(key: &SecretKey, stream: &str, tx_time_hex: &str) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(key.expose().as_bytes());
    h.update(stream.as_bytes());
    h.update(tx_time_hex.as_bytes());
    hex::encode(h.finalize())
}

impl PublishAuthRule {
    /// The store key of the rule of `domain` of `account`.
    pub fn store_key(account: &str, domain: &str) -> String {
        format!("{account}/{domain}")
    }

    /// A rule from a `PUT`.
    pub fn parse(
        account: &str,
        domain: &str,
        input: PublishAuthInput,
        now_ms: i64,
    ) -> Result<Self, ApiRefusal> {
        let domain = parse_domain(domain).map_err(|e| ApiRefusal::invalid("DomainName", e))?;
        let allowed = input.allowed_streams.unwrap_or_default();
        if allowed.len() > MAX_ALLOWED_STREAMS {
            return Err(ApiRefusal::invalid(
                "AllowedStreams",
                format!("at most {MAX_ALLOWED_STREAMS} names"),
            ));
        }
        for s in &allowed {
            parse_name("stream", s).map_err(|e| ApiRefusal::invalid("AllowedStreams", e))?;
        }
        Ok(Self {
            account: account.to_string(),
            domain,
            enabled: input.enable.unwrap_or(true),
            allowed_streams: allowed,
            master_key: key_of("MasterAuthKey", input.master_auth_key)?,
            backup_key: key_of("BackupAuthKey", input.backup_auth_key)?,
            updated_ms: now_ms,
        })
    }

    /// Whether `stream`, pushed with the query string `params`, may publish at `now_secs`.
    /// An enabled rule with neither an allow-list nor a key lets nobody in.
    pub fn check(&self, stream: &str, params: &str, now_secs: i64) -> Result<(), String> {
        if !self.enabled || self.allowed_streams.iter().any(|s| s == stream) {
            return Ok(());
        }
        let keys: Vec<&SecretKey> = self
            .master_key
            .iter()
            .chain(self.backup_key.iter())
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "stream {stream} is not in the allow-list of {}",
                self.domain
            ));
        }
        let secret = param(params, "txSecret").ok_or("txSecret is missing")?;
        let time = param(params, "txTime").ok_or("txTime is missing")?;
        let expiry = i64::from_str_radix(&time, 16).map_err(|_| "txTime is not hexadecimal")?;
        if now_secs > expiry {
            return Err("txTime has passed".into());
        }
        let given = secret.to_ascii_lowercase();
        if keys
            .iter()
            .any(|k| constant_time_eq(tx_secret(k, stream, &time).as_bytes(), given.as_bytes()))
        {
            Ok(())
        } else {
            Err("txSecret does not match".into())
        }
    }

    /// The rule as the API shows it (keys are not shown again).
    pub fn to_wire(&self) -> Value {
        json!({
            "DomainName": self.domain,
            "Enable": self.enabled,
            "AllowedStreams": self.allowed_streams,
            "MasterAuthKeySet": self.master_key.is_some(),
            "BackupAuthKeySet": self.backup_key.is_some(),
        })
    }
}

impl Entity for PublishAuthRule {
    const KIND: Kind = Kind("publish_auth");

    fn key(&self) -> String {
        Self::store_key(&self.account, &self.domain)
    }

    fn index(&self) -> IndexKeys {
        IndexKeys {
            account: Some(self.account.clone()),
            status: None,
            time_ms: Some(self.updated_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> PublishAuthRule {
        PublishAuthRule::parse("a", "d.com", serde_json::from_str(json).unwrap(), 0).unwrap()
    }

    #[test]
    fn allow_list_and_signed_urls() {
        let r = rule(r#"{"AllowedStreams":["cam1"],"MasterAuthKey":"k1","BackupAuthKey":"k2"}"#);
        assert!(r.check("cam1", "", 0).is_ok());
        let time = format!("{:X}", 2_000);
        let good = format!(
            "txSecret={}&txTime={time}",
            tx_secret(&SecretKey::new("k2"), "cam2", &time)
        );
        assert!(r.check("cam2", &good, 1_000).is_ok());
        assert_eq!(
            r.check("cam2", &good, 3_000),
            Err("txTime has passed".into())
        );
        assert!(
            r.check("cam3", &good, 1_000).is_err(),
            "signed for another stream"
        );
        assert!(r.check("cam2", "", 1_000).is_err());
        assert!(rule(r#"{"Enable":false}"#).check("x", "", 0).is_ok());
        assert!(
            rule(r#"{}"#).check("x", "", 0).is_err(),
            "enabled with nothing to check: nobody"
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert!(PublishAuthRule::parse(
            "a",
            "d.com",
            serde_json::from_str(r#"{"AllowedStreams":["a/b"]}"#).unwrap(),
            0
        )
        .is_err());
        assert!(serde_json::from_str::<PublishAuthInput>(r#"{"Foo":1}"#).is_err());
        assert!(!format!("{:?}", rule(r#"{"MasterAuthKey":"topsecret"}"#)).contains("topsecret"));
    }
}
