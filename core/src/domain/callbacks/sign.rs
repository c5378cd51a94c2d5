//! Signatures on callbacks: CSS's `sign = md5(key + t)` (SCHEMAS.md §2.1), both to check inbound
//! events and to sign the ones we send, and the `X-Relaycast-Signature` header every callback we
//! send carries.
//!
//! `X-Relaycast-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>." + raw body)>`. A
//! receiver verifies it in a few lines: split on `,`, recompute the HMAC over the decimal `t`, a
//! dot and the exact bytes received, compare in constant time, and refuse a `t` older than it
//! tolerates (5 minutes is usual).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::domain::auth::{constant_time_eq, SecretKey};

/// The header carrying our HMAC signature.
pub const SIGNATURE_HEADER: &str = "X-Relaycast-Signature";
/// The header carrying the stable event id.
pub const EVENT_ID_HEADER: &str = "X-Relaycast-Event-Id";
/// How long a CSS `sign` we produce stays valid: `t = now + 600` (SCHEMAS.md §2.1).
pub const CSS_SIGN_VALIDITY_SECS: i64 = 600;

/// `md5(key + t)` as 32 lower-case hex digits.
pub fn css_sign(key: &SecretKey, t: i64) -> String {
    let mut h = Md5::new();
    h.update(key.expose().as_bytes());
    h.update(t.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Checks a CSS `sign`/`t` pair at `now_secs`: the expiry first (so a replay of an old event
/// is refused whatever its signature), then the signature, in constant time.
pub fn verify_css_sign(
    key: &SecretKey,
    t: i64,
    sign: &str,
    now_secs: i64,
) -> Result<(), super::InboundError> {
    if now_secs > t {
        return Err(super::InboundError::Expired);
    }
    let want = css_sign(key, t);
    if constant_time_eq(want.as_bytes(), sign.trim().to_ascii_lowercase().as_bytes()) {
        Ok(())
    } else {
        Err(super::InboundError::BadSign)
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `t_secs`.
pub fn relaycast_signature(key: &SecretKey, t_secs: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(t_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t_secs},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies a [`SIGNATURE_HEADER`] value, as a receiver would (used by our tests and as the
/// reference for the documentation): `Ok(t)` when it matches and is at most `tolerance_secs` old.
pub fn verify_relaycast_signature(
    key: &SecretKey,
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<i64, String> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (t, v1) = t.zip(v1).ok_or("header has no t or v1")?;
    if (now_secs - t).abs() > tolerance_secs {
        return Err(format!("t={t} is outside the tolerance"));
    }
    let want = relaycast_signature(key, t, body);
    if constant_time_eq(want.as_bytes(), format!("t={t},v1={v1}").as_bytes()) {
        Ok(t)
    } else {
        Err("signature does not match".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn css_sign_matches_the_documented_example() {
        let key = SecretKey::new("mykey");
        assert_eq!(
            css_sign(&key, 1545030873),
            "f84ae4d84acdc8c7e4e793915145b8c4"
        );
        assert!(verify_css_sign(
            &key,
            1545030873,
            "F84AE4D84ACDC8C7E4E793915145B8C4",
            1545030000
        )
        .is_ok());
        assert_eq!(
            verify_css_sign(&key, 1545030873, "00", 1545030000),
            Err(super::super::InboundError::BadSign)
        );
        assert_eq!(
            verify_css_sign(
                &key,
                1545030873,
                "f84ae4d84acdc8c7e4e793915145b8c4",
                1545030874
            ),
            Err(super::super::InboundError::Expired)
        );
    }

    #[test]
    fn relaycast_signature_round_trips_and_binds_body_and_time() {
        let key = SecretKey::new("k");
        let h = relaycast_signature(&key, 1_700_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(
            verify_relaycast_signature(&key, &h, b"{\"a\":1}", 1_700_000_010, 300),
            Ok(1_700_000_000)
        );
        assert!(verify_relaycast_signature(&key, &h, b"{\"a\":2}", 1_700_000_010, 300).is_err());
        assert!(verify_relaycast_signature(&key, &h, b"{\"a\":1}", 1_700_001_000, 300).is_err());
        assert!(verify_relaycast_signature(
            &SecretKey::new("other"),
            &h,
            b"{\"a\":1}",
            1_700_000_010,
            300
        )
        .is_err());
    }
}
