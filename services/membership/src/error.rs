//! Membership's errors, and the one place that chooses their gRPC status.

use muster_runtime::DbError;
use muster_runtime::status::rule_status;
use tonic::Code;

/// Everything that can go wrong in membership.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// No such thing.
    #[error("{what} {id} not found")]
    NotFound {
        /// What.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A request field is malformed or names something the org's product lacks.
    #[error("{message}")]
    Invalid {
        /// Rule.
        rule: &'static str,
        /// Field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The state of things forbids it (e.g. the guardian guard).
    #[error("{message}")]
    Refused {
        /// Rule.
        rule: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The caller read an older version.
    #[error("member changed since version {expected} was read; read it again and retry")]
    VersionConflict {
        /// What the caller named.
        expected: i64,
    },
    /// The person is already a member.
    #[error("{0} is already a member of this org")]
    AlreadyMember(String),
    /// Policy could not be reached; nothing was changed.
    #[error("policy is unavailable ({0}); nothing was changed")]
    PolicyUnavailable(String),
    /// A read that needs policy (the org's product) could not be answered.
    #[error("cannot read {what}: policy, which holds the org's product, is unavailable ({message})")]
    ReadUnavailable {
        /// What was asked for.
        what: &'static str,
        /// Why policy did not answer.
        message: String,
    },
    /// Policy refuses membership's own token: a configuration error of membership.
    #[error("{}; nothing was changed", muster_runtime::upstream_check::refused_message("policy", "membership"))]
    TokenRefused,
    /// Policy answered with an error.
    #[error("policy refused: {0}")]
    Policy(tonic::Status),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Stored data could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl From<diesel::result::Error> for MembershipError {
    fn from(e: diesel::result::Error) -> Self {
        MembershipError::Db(DbError::Query(e))
    }
}

impl MembershipError {
    /// A malformed field.
    pub fn invalid(rule: &'static str, field: &str, message: impl Into<String>) -> Self {
        MembershipError::Invalid { rule, field: field.to_string(), message: message.into() }
    }

    /// For a read: a policy outage says what could not be read, not that nothing changed.
    pub fn when_reading(self, what: &'static str) -> Self {
        match self {
            MembershipError::PolicyUnavailable(message) => MembershipError::ReadUnavailable { what, message },
            other => other,
        }
    }

    /// From a failed policy call: UNAVAILABLE (and deadline) means "no answer", which
    /// must never be taken as a decision.
    pub fn from_policy(status: tonic::Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                MembershipError::PolicyUnavailable(status.message().to_string())
            }
            Code::NotFound => MembershipError::NotFound { what: "org", id: status.message().to_string() },
            // Our token, not the caller's: say whose it is and where it is set.
            code if muster_runtime::upstream_check::is_refusal(code) => MembershipError::TokenRefused,
            _ => MembershipError::Policy(status),
        }
    }
}

impl From<MembershipError> for tonic::Status {
    fn from(e: MembershipError) -> Self {
        match &e {
            MembershipError::NotFound { .. } => rule_status(Code::NotFound, "not_found", "", e.to_string()),
            MembershipError::Invalid { rule, field, message } => {
                rule_status(Code::InvalidArgument, rule, field, message.clone())
            }
            MembershipError::Refused { rule, message } => {
                rule_status(Code::FailedPrecondition, rule, "", message.clone())
            }
            MembershipError::VersionConflict { .. } => {
                rule_status(Code::Aborted, "version_conflict", "expected_version", e.to_string())
            }
            MembershipError::AlreadyMember(_) => {
                rule_status(Code::AlreadyExists, "already_member", "email", e.to_string())
            }
            MembershipError::PolicyUnavailable(_) | MembershipError::ReadUnavailable { .. } => {
                rule_status(Code::Unavailable, "policy_unavailable", "", e.to_string())
            }
            MembershipError::TokenRefused => {
                tracing::error!(error = %e, "policy refuses membership's token");
                rule_status(Code::Unavailable, "upstream_refused", "", e.to_string())
            }
            MembershipError::Policy(status) => {
                tracing::warn!(code = ?status.code(), reason = status.message(), "policy refused a call");
                tonic::Status::new(status.code(), e.to_string())
            }
            MembershipError::Db(db) => muster_runtime::status::db_status(db),
            MembershipError::Corrupt(message) => {
                tracing::error!(error = %message, "corrupt stored data");
                tonic::Status::internal("stored data is unreadable")
            }
        }
    }
}
