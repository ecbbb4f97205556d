//! Policy's errors, and the one place that chooses their gRPC status.

use muster_runtime::DbError;
use muster_runtime::status::rule_status;
use tonic::Code;

use crate::domain::settings::Violation;

/// Everything that can go wrong in policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// No such thing.
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A request field is malformed.
    #[error("{message}")]
    InvalidArgument {
        /// Rule name.
        rule: &'static str,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Settings break one or more rules.
    #[error("settings rejected: {}", .0.iter().map(|v| format!("{} ({})", v.description, v.rule)).collect::<Vec<_>>().join("; "))]
    InvalidSettings(Vec<Violation>),
    /// The state of things forbids it.
    #[error("{message}")]
    FailedPrecondition {
        /// Rule name.
        rule: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The caller read an older version.
    #[error("settings changed since version {expected} was read (now version {actual}); read them again and retry")]
    VersionConflict {
        /// What the caller named.
        expected: i64,
        /// What is stored.
        actual: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Stored data could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl From<diesel::result::Error> for PolicyError {
    fn from(e: diesel::result::Error) -> Self {
        PolicyError::Db(DbError::Query(e))
    }
}

impl PolicyError {
    /// A malformed field.
    pub fn invalid(rule: &'static str, field: &str, message: impl Into<String>) -> Self {
        PolicyError::InvalidArgument { rule, field: field.to_string(), message: message.into() }
    }
}

impl From<PolicyError> for tonic::Status {
    fn from(e: PolicyError) -> Self {
        match &e {
            PolicyError::NotFound { .. } => rule_status(Code::NotFound, "not_found", "", e.to_string()),
            PolicyError::InvalidArgument { rule, field, message } => {
                rule_status(Code::InvalidArgument, rule, field, message.clone())
            }
            PolicyError::InvalidSettings(violations) => {
                let mut details = tonic_types::ErrorDetails::new();
                let first = violations.first().map(|v| v.rule).unwrap_or("invalid_settings");
                details.set_error_info(
                    first,
                    muster_runtime::status::ERROR_DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                );
                for v in violations {
                    details.add_bad_request_violation(v.field.clone(), format!("{} ({})", v.description, v.rule));
                }
                <tonic::Status as tonic_types::StatusExt>::with_error_details(
                    Code::InvalidArgument,
                    e.to_string(),
                    details,
                )
            }
            PolicyError::FailedPrecondition { rule, message } => {
                rule_status(Code::FailedPrecondition, rule, "", message.clone())
            }
            PolicyError::VersionConflict { .. } => {
                rule_status(Code::Aborted, "version_conflict", "expected_version", e.to_string())
            }
            PolicyError::Db(db) => muster_runtime::status::db_status(db),
            PolicyError::Corrupt(message) => {
                tracing::error!(error = %message, "corrupt stored data");
                tonic::Status::internal("stored data is unreadable")
            }
        }
    }
}
