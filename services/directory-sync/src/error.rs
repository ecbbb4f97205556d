//! Directory-sync's errors, and the one place that chooses their gRPC status.

use muster_runtime::DbError;
use muster_runtime::status::rule_status;
use tonic::Code;

use crate::domain::directory::InputError;

/// Everything that can go wrong in directory-sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
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
    /// The state of things forbids it.
    #[error("{message}")]
    FailedPrecondition {
        /// Rule name.
        rule: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Policy or membership did not answer (or the database is unreachable): the
    /// work waits, it never reads "no answer" as "no users".
    #[error("{service} unavailable: {message}")]
    Unavailable {
        /// Which dependency.
        service: &'static str,
        /// What it said.
        message: String,
    },
    /// Policy or membership answered with an error that retrying does not fix.
    #[error("{service} refused: {status}")]
    Upstream {
        /// Which dependency.
        service: &'static str,
        /// Its answer.
        status: tonic::Status,
    },
    /// The service is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Stored data could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl From<diesel::result::Error> for SyncError {
    fn from(e: diesel::result::Error) -> Self {
        SyncError::Db(DbError::Query(e))
    }
}

impl From<InputError> for SyncError {
    fn from(e: InputError) -> Self {
        SyncError::InvalidArgument { rule: e.rule, field: e.field.to_string(), message: e.message }
    }
}

impl SyncError {
    /// A malformed field.
    pub fn invalid(rule: &'static str, field: &str, message: impl Into<String>) -> Self {
        SyncError::InvalidArgument { rule, field: field.to_string(), message: message.into() }
    }

    /// Whether waiting and retrying may fix it (a dependency or the database away).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Unavailable { .. } => true,
            SyncError::Db(db) => db.is_unavailable(),
            _ => false,
        }
    }

    /// An upstream answer: UNAVAILABLE (and a deadline) is "no answer", anything else is an answer.
    pub fn upstream(service: &'static str, status: tonic::Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
                SyncError::Unavailable { service, message: status.message().to_string() }
            }
            // Our token, not our caller's: waited out like an outage (nothing is decided
            // on a refusal), and named so the operator fixes the right config.
            code if muster_runtime::upstream_check::is_refusal(code) => SyncError::Unavailable {
                service,
                message: muster_runtime::upstream_check::refused_message(service, "directory-sync"),
            },
            _ => SyncError::Upstream { service, status },
        }
    }
}

impl From<SyncError> for tonic::Status {
    fn from(e: SyncError) -> Self {
        match &e {
            SyncError::NotFound { .. } => rule_status(Code::NotFound, "not_found", "", e.to_string()),
            SyncError::InvalidArgument { rule, field, message } => {
                rule_status(Code::InvalidArgument, rule, field, message.clone())
            }
            SyncError::FailedPrecondition { rule, message } => {
                rule_status(Code::FailedPrecondition, rule, "", message.clone())
            }
            SyncError::Unavailable { .. } => {
                tracing::warn!(error = %e, "dependency unavailable");
                rule_status(Code::Unavailable, "dependency_unavailable", "", e.to_string())
            }
            SyncError::Upstream { service, status } => {
                // Pass the dependency's own refusal on: its rule names what is wrong
                // (an unknown org, settings that break a rule).
                tracing::info!(service, code = ?status.code(), reason = status.message(), "dependency refused");
                status.clone()
            }
            SyncError::ShuttingDown => tonic::Status::unavailable("shutting down; retry"),
            SyncError::Db(db) => muster_runtime::status::db_status(db),
            SyncError::Corrupt(message) => {
                tracing::error!(error = %message, "corrupt stored data");
                tonic::Status::internal("stored data is unreadable")
            }
        }
    }
}
