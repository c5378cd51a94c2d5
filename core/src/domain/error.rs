//! The one error type of the control API's rules, carrying what the wire needs: the HTTP status,
//! the business `http_code` and the seed's exact `msg` (seed 001, "JSON 본문의 비즈니스 레벨
//! http_code"). Messages are copied verbatim from the seed's table, Korean included, because
//! clients of the CDNetworks API match on them.

use serde_json::json;

/// A request the control API refuses. `Display` is the exact wire `msg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    // ---- 400 / 1001: the request body or query is wrong -------------------------------------
    /// `cmd` missing or not one of 1, 2, 3, 5.
    #[error("cmd가 잘못되었습니다")]
    BadCmd,
    /// `type` missing or not `live`/`video`.
    #[error("type이 잘못되었습니다")]
    BadType,
    /// `list` missing, null or empty.
    #[error("list가 비어 있습니다")]
    EmptyList,
    /// A list item's `id` missing or empty.
    #[error("params id가 비어 있습니다")]
    EmptyId,
    /// A list item's `src` missing, null or empty.
    #[error("params src list가 비어 있습니다")]
    EmptySrcList,
    /// More than [`crate::domain::relay::MAX_SOURCES`] sources.
    #[error("params src num이 너무 많습니다")]
    TooManySources,
    /// The `src` array's JSON is longer than [`crate::domain::relay::MAX_SRC_JSON_CHARS`].
    #[error("params src length is too long")]
    SrcTooLong,
    /// A source object without a usable `url` (missing, empty, wrong type, or refused scheme).
    #[error("params src is error")]
    BadSrc,
    /// `relofftime` not in the format its task type requires.
    #[error("params relofftime is error")]
    BadRelOffTime,
    /// `forward` missing, null or empty.
    #[error("params forward list is null")]
    EmptyForwardList,
    /// A forward object without a usable RTMP `url`.
    #[error("params forward is error")]
    BadForward,
    /// `start` is not a 13-digit ms timestamp.
    #[error("params start format is error")]
    BadStart,
    /// `end` is not a 13-digit ms timestamp.
    #[error("params end format is error")]
    BadEnd,
    /// `end` is not in the future.
    #[error("params end plan is error!")]
    EndInPast,
    /// `end - start` is shorter than five minutes.
    #[error("params start and end interval Too Brief!")]
    IntervalTooBrief,
    /// Any other field in the wrong format, of the wrong JSON type, or unknown; names the field.
    #[error("params {0} format is error")]
    FieldFormat(String),
    /// A task query names none of `id`, `src`, `forward` (seed: "at least one is required").
    #[error("params id, src, forward not exist or empty")]
    QueryCriteriaMissing,

    // ---- 413 / 1001: the body is over the host's limit (`http.max_body_bytes`) --------------
    /// The request body is longer than the limit, in bytes. Worded like the seed's
    /// `params src length is too long`; HTTP 413 because no part of it was read.
    #[error("params body length is too long (at most {0} bytes)")]
    BodyTooLong(usize),

    // ---- 403 / 1002: authentication and authorisation ---------------------------------------
    /// `n`, `r` or `k` missing or empty.
    #[error("apiName, n, r, k not exist or empty")]
    AuthMissing,
    /// `r` longer than 32 characters or `k` not exactly 32.
    #[error("random.length gt 32 or key.length ne 32")]
    AuthLength,
    /// The account has API access disabled (or does not exist: never reveal which).
    #[error("you do not have right to access this api")]
    NoRight,
    /// The signature `k` does not match.
    #[error("k is error")]
    BadSignature,
    /// The account exceeded its calls per window.
    #[error("frequency is great than limitCount")]
    RateLimited,
    /// The random `r` was already used within the replay window.
    #[error("random is repeat")]
    RandomRepeat,
    /// The account may not push to a destination host of the request.
    #[error("user and host not relation")]
    HostNotRelated,
}

impl RequestError {
    /// Shorthand for [`RequestError::FieldFormat`].
    pub fn field(name: impl Into<String>) -> Self {
        Self::FieldFormat(name.into())
    }

    /// Whether this is an authentication/authorisation refusal (403 / 1002).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Self::AuthMissing
                | Self::AuthLength
                | Self::NoRight
                | Self::BadSignature
                | Self::RateLimited
                | Self::RandomRepeat
                | Self::HostNotRelated
        )
    }

    /// The HTTP status: 403 for authentication, 413 for a body over the limit, 400 for
    /// everything else.
    pub fn http_status(&self) -> u16 {
        if self.is_auth() {
            403
        } else if matches!(self, Self::BodyTooLong(_)) {
            413
        } else {
            400
        }
    }

    /// The business code of the JSON body: `"1002"` for authentication, `"1001"` otherwise.
    pub fn http_code(&self) -> &'static str {
        if self.is_auth() {
            "1002"
        } else {
            "1001"
        }
    }

    /// The exact wire message.
    pub fn msg(&self) -> String {
        self.to_string()
    }

    /// The JSON body to answer with: `{"http_code": "...", "msg": "...", "call_time": ms}`.
    pub fn to_wire(&self, call_time_ms: i64) -> serde_json::Value {
        json!({ "http_code": self.http_code(), "msg": self.msg(), "call_time": call_time_ms })
    }
}

/// The seed's success message of `forwardRequest.action`.
pub const ACCEPTED_MSG: &str = "작업 수신 성공!";

/// The 200 body of an accepted `forwardRequest.action`.
pub fn accepted_wire(call_time_ms: i64) -> serde_json::Value {
    json!({ "http_code": "200", "msg": ACCEPTED_MSG, "call_time": call_time_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_are_400_1001_with_the_seed_message() {
        let e = RequestError::BadCmd;
        assert_eq!(
            (e.http_status(), e.http_code(), e.msg().as_str()),
            (400, "1001", "cmd가 잘못되었습니다")
        );
        assert_eq!(
            RequestError::field("res").msg(),
            "params res format is error"
        );
        assert_eq!(RequestError::EndInPast.msg(), "params end plan is error!");
        assert_eq!(
            RequestError::IntervalTooBrief.msg(),
            "params start and end interval Too Brief!"
        );
    }

    #[test]
    fn a_body_over_the_limit_is_413_1001_naming_the_limit() {
        let e = RequestError::BodyTooLong(6 * 1024 * 1024);
        assert_eq!(
            (e.http_status(), e.http_code(), e.msg().as_str()),
            (
                413,
                "1001",
                "params body length is too long (at most 6291456 bytes)"
            )
        );
    }

    #[test]
    fn auth_errors_are_403_1002() {
        for e in [
            RequestError::AuthMissing,
            RequestError::AuthLength,
            RequestError::NoRight,
            RequestError::BadSignature,
            RequestError::RateLimited,
            RequestError::RandomRepeat,
            RequestError::HostNotRelated,
        ] {
            assert_eq!((e.http_status(), e.http_code()), (403, "1002"), "{e}");
        }
        assert_eq!(RequestError::BadSignature.msg(), "k is error");
    }

    #[test]
    fn wire_bodies_have_the_seed_shape() {
        assert_eq!(
            RequestError::EmptyList.to_wire(1479952114000),
            json!({"http_code": "1001", "msg": "list가 비어 있습니다", "call_time": 1479952114000i64})
        );
        assert_eq!(
            accepted_wire(1479952114000),
            json!({"http_code": "200", "msg": "작업 수신 성공!", "call_time": 1479952114000i64})
        );
    }
}
