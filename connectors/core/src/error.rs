//! The one error type of connectors, classified so a CLI can say what is wrong.

use std::time::Duration;

use crate::sink::SinkError;

/// What went wrong in a connector. `check()` returns these as they are, so
/// the variants say what the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("secret {reference} could not be read: {reason}")]
    Secret { reference: String, reason: String },
    /// Bad or expired token, wrong client secret or key, unknown client id.
    #[error("credentials rejected: {0}")]
    Unauthorized(String),
    /// Authenticated, but a scope, role or admin privilege is missing.
    #[error("permission missing: {0}")]
    Forbidden(String),
    /// A configured object (app id, group, org unit) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Still throttled after the retries, or asked to wait longer than allowed.
    #[error("rate limited by the api{}", wait.map(|w| format!(" (asked to wait {}s)", w.as_secs())).unwrap_or_default())]
    RateLimited { wait: Option<Duration> },
    /// The cursor expired or was refused: only a full listing can continue.
    #[error("cursor no longer valid, a full listing is needed: {0}")]
    ResyncRequired(String),
    #[error("unexpected http status {status}: {detail}")]
    Http { status: u16, detail: String },
    #[error("transport error: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// A full listing delivered no user at all: treated as a failure, never as
    /// "the directory is now empty" (unless the options allow it).
    #[error("the full listing returned no users; refusing to treat the directory as empty")]
    EmptyListing,
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl ConnectorError {
    /// True when only a full listing can recover (expired or foreign cursor).
    pub fn requires_resync(&self) -> bool {
        matches!(self, Self::ResyncRequired(_))
    }
}
