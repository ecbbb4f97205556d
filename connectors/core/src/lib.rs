//! The kit every pull connector of Muster is built from: the normalized
//! directory model (users, groups, memberships, app assignment, with the
//! vendor's raw attributes kept), the pull contract ([`PullConnector`]: a full
//! listing or the changes since a cursor, delivered page by page into a
//! [`DirectorySink`]), the HTTP helpers every vendor connector reuses (paging
//! links, the one retry policy of [`RetryPolicy::decide`] over `Retry-After`,
//! vendor rate-limit headers, backoff with jitter and timeouts, the waits
//! recorded for a pull's outcome in a [`WaitLog`], reads a bounded number at a
//! time through a [`ReadQueue`], an injectable [`Clock`], [`BaseUrl`]s whose path is kept, redacted
//! [`Secret`]s, RS256 client assertions, access tokens shared across pulls
//! through a [`TokenPool`], a [`CursorTrail`] against repeated paging cursors),
//! the [`ConnectorSpec`] a connector crate declares itself by (directory-sync's
//! registry line and the kit both build from it), and the [`conformance`] kit that
//! a connector's tests run against the connector's fake server, with the shared
//! fake scaffolding (`conformance::FakeControls`, and `fake::serve` with the
//! `fake` feature). Connectors know nothing of services: directory-sync
//! implements [`DirectorySink`] on its database and drives pulls through
//! [`run_pull`], which alone decides when a full listing is complete.
//! `docs/connectors.md` is the author's guide.

pub mod auth;
pub mod base_url;
pub mod clock;
pub mod conformance;
pub mod contract;
pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod http;
pub mod model;
pub mod paging;
pub mod read_queue;
pub mod retry;
pub mod secret;
pub mod sink;
pub mod token_pool;

pub use auth::{AccessToken, TokenCache, fetch_oauth_token, sign_rs256};
pub use base_url::BaseUrl;
pub use clock::{Clock, ManualClock, SystemClock};
pub use contract::{
    Capabilities, CheckReport, ConnectorSpec, PageWriter, PullConnector, PullMode, PullOptions, PullOutcome, plan_pull,
    run_pull,
};
pub use error::ConnectorError;
pub use http::{ApiClient, ApiRequest, ApiResponse, HttpSettings, RateLimitHeaders, Verdict};
pub use model::{Assignment, Cursor, Group, Membership, MembershipChange, Page, Removal, RemovalReason, User};
pub use paging::CursorTrail;
pub use read_queue::ReadQueue;
pub use retry::{RateSignal, RetryDecision, RetryPolicy, Trouble, WaitCause, WaitLog, WaitNote, WaitReason, Waits};
pub use secret::{Secret, SecretRef};
pub use sink::{DirectorySink, MemorySink, PullEnd, PullKind, SinkError};
pub use token_pool::{CredentialKey, TokenPool};
