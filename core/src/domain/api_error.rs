//! Refusals of the `/v1` API, in Tencent Cloud API 3.0's terms (SCHEMAS.md §0): a dotted `Code`
//! such as `InvalidParameterValue` or `ResourceNotFound.TemplateNotFound` and a `Message`, sent
//! in the `{"Response": {"Error": {...}, "RequestId": ...}}` envelope with a matching HTTP status.

/// A refused `/v1` request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiRefusal {
    /// Tencent's error code.
    pub code: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
    /// The HTTP status.
    pub status: u16,
}

impl ApiRefusal {
    /// `InvalidParameterValue` (400) about `field`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            code: "InvalidParameterValue",
            message: format!("{field}: {reason}"),
            status: 400,
        }
    }
    /// `MissingParameter` (400).
    pub fn missing(field: &str) -> Self {
        Self {
            code: "MissingParameter",
            message: format!("{field} is required"),
            status: 400,
        }
    }
    /// `UnknownParameter` (400), for fields we do not take.
    pub fn unknown(message: impl Into<String>) -> Self {
        Self {
            code: "UnknownParameter",
            message: message.into(),
            status: 400,
        }
    }
    /// A `ResourceNotFound.*` (404).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: 404,
        }
    }
    /// A conflict with stored state (409), e.g. `FailedOperation.ConfInUsed`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: 409,
        }
    }
    /// The body of a JSON request did not parse as the action's parameters: unknown fields are
    /// `UnknownParameter`, the rest `InvalidParameterValue`.
    pub fn from_json(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        if text.starts_with("unknown field") {
            Self::unknown(text)
        } else {
            Self {
                code: "InvalidParameterValue",
                message: format!("the body does not parse: {text}"),
                status: 400,
            }
        }
    }
}
