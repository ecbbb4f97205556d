//! gRPC errors with machine-readable details (google.rpc ErrorInfo and BadRequest),
//! so a caller can tell which rule was broken without parsing the message.

use std::collections::HashMap;

use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every ErrorInfo Muster sends.
pub const ERROR_DOMAIN: &str = "muster";

/// A status naming the broken `rule` (ErrorInfo.reason) and, when given, the
/// offending `field` (BadRequest).
pub fn rule_status(code: tonic::Code, rule: &str, field: &str, message: impl Into<String>) -> tonic::Status {
    let message = message.into();
    let mut details = ErrorDetails::new();
    details.set_error_info(rule, ERROR_DOMAIN, HashMap::<String, String>::new());
    if !field.is_empty() {
        details.add_bad_request_violation(field, message.clone());
    }
    tonic::Status::with_error_details(code, message, details)
}

/// The status for a database failure: UNAVAILABLE when the database is unreachable
/// or overloaded (the caller may retry), INTERNAL otherwise. The cause is logged
/// here and never returned: it may name tables or values.
pub fn db_status(e: &crate::DbError) -> tonic::Status {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "database unavailable");
        tonic::Status::unavailable("database unavailable; retry")
    } else {
        tracing::error!(error = %e, "database error");
        tonic::Status::internal("internal database error")
    }
}

/// The rule named in a status's ErrorInfo, if any (for clients and tests).
pub fn rule_of(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// Every BadRequest field violation in a status, as (field, description).
pub fn field_violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| (v.field, v.description)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_round_trip() {
        let s = rule_status(tonic::Code::FailedPrecondition, "agm_requires_jit_or_scim", "mode", "nope");
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(rule_of(&s).as_deref(), Some("agm_requires_jit_or_scim"));
        assert_eq!(field_violations(&s), vec![("mode".to_string(), "nope".to_string())]);
    }
}
