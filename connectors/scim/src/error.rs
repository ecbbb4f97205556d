//! SCIM errors (RFC 7644 §3.12) and the one place that maps them to an HTTP
//! status and a `scimType`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::store::StoreError;

/// The `scimType` values of RFC 7644 §3.12 table 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    /// The filter syntax or the compared attribute is invalid.
    InvalidFilter,
    /// The PATCH path is invalid.
    InvalidPath,
    /// A required value is missing or a value is not compatible.
    InvalidValue,
    /// The request body is not parsable or violates the schema.
    InvalidSyntax,
    /// A PATCH target (path filter) matched nothing.
    NoTarget,
    /// An attempt to change a read-only or immutable attribute.
    Mutability,
    /// A value that must be unique is already taken.
    Uniqueness,
    /// The query would return more results than allowed.
    TooMany,
}

impl ScimType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::InvalidPath => "invalidPath",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::NoTarget => "noTarget",
            ScimType::Mutability => "mutability",
            ScimType::Uniqueness => "uniqueness",
            ScimType::TooMany => "tooMany",
        }
    }
}

/// Everything a SCIM request can fail with. Details are lowercase and meant
/// for the IdP administrator reading a provisioning log; internal causes are
/// logged, never returned.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ScimError {
    /// 400 with a `scimType`.
    #[error("{detail}")]
    BadRequest {
        /// The RFC 7644 error kind.
        scim_type: ScimType,
        /// What was wrong.
        detail: String,
    },
    /// 401: no or an unknown bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: no such resource (or a directory the token does not open).
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 `uniqueness`.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` did not match the current version.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: the body is larger than the configured limit.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: neither `application/scim+json` nor `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the store is unavailable; the client should retry.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or a store failure; the cause is logged, not returned.
    #[error("internal error")]
    Internal,
}

impl ScimError {
    /// A 400 with `scimType`.
    pub fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        ScimError::BadRequest { scim_type, detail: detail.into() }
    }

    /// 400 `invalidFilter`.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidFilter, detail)
    }

    /// 400 `invalidPath`.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidPath, detail)
    }

    /// 400 `invalidValue`.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidValue, detail)
    }

    /// 400 `invalidSyntax`.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidSyntax, detail)
    }

    /// 400 `noTarget`.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::NoTarget, detail)
    }

    /// 400 `mutability`.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::Mutability, detail)
    }

    /// The HTTP status and `scimType` of this error: the only place that
    /// decides them.
    pub fn status_and_type(&self) -> (StatusCode, Option<ScimType>) {
        match self {
            ScimError::BadRequest { scim_type, .. } => (StatusCode::BAD_REQUEST, Some(*scim_type)),
            ScimError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, None),
            ScimError::NotFound(_) => (StatusCode::NOT_FOUND, None),
            ScimError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, None),
            ScimError::Conflict(_) => (StatusCode::CONFLICT, Some(ScimType::Uniqueness)),
            ScimError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, None),
            ScimError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
            ScimError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, None),
            ScimError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            ScimError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, None),
        }
    }

    /// The RFC 7644 §3.12 error body.
    pub fn to_json(&self) -> serde_json::Value {
        let (status, scim_type) = self.status_and_type();
        let mut body = json!({
            "schemas": [crate::schema::ERROR_URN],
            "status": status.as_u16().to_string(),
            "detail": self.to_string(),
        });
        if let (Some(t), Some(obj)) = (scim_type, body.as_object_mut()) {
            obj.insert("scimType".into(), t.as_str().into());
        }
        body
    }
}

impl From<StoreError> for ScimError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ScimError::NotFound("resource not found".into()),
            StoreError::UserNameTaken => ScimError::Conflict("userName is already taken in this directory".into()),
            StoreError::VersionMismatch => {
                ScimError::PreconditionFailed("resource changed since it was read (version mismatch)".into())
            }
            StoreError::UnknownMember(id) => {
                ScimError::invalid_value(format!("member {id:?} is not a user or group of this directory"))
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "scim store unavailable");
                ScimError::Unavailable("directory store unavailable, retry later".into())
            }
            StoreError::Internal(cause) => {
                tracing::error!(%cause, "scim store failed");
                ScimError::Internal
            }
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_type();
        let body = self.to_json().to_string();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::router::SCIM_CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"scim\""));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_string_status_and_scim_type() {
        let e = ScimError::invalid_filter("unexpected end of filter");
        let v = e.to_json();
        assert_eq!(v["status"], "400");
        assert_eq!(v["scimType"], "invalidFilter");
        assert_eq!(v["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
        assert_eq!(v["detail"], "unexpected end of filter");
    }

    #[test]
    fn conflict_is_uniqueness_and_not_found_has_no_type() {
        let v = ScimError::Conflict("taken".into()).to_json();
        assert_eq!(v["status"], "409");
        assert_eq!(v["scimType"], "uniqueness");
        let v = ScimError::NotFound("x".into()).to_json();
        assert_eq!(v["status"], "404");
        assert!(v.get("scimType").is_none());
    }
}
