//! The pull contract: what a connector implements and how a pull is driven.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::error::ConnectorError;
use crate::model::{Cursor, Page};
use crate::retry::{WaitLog, Waits};
use crate::sink::{DirectorySink, PullEnd, PullKind, SinkError};
use crate::token_pool::TokenPool;

/// What to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullMode {
    /// A full listing of the directory's scope.
    Refresh,
    /// The changes since `cursor` (returned by an earlier pull).
    Resume { cursor: Cursor },
}

/// What a connector can do, so the kit knows what to expect of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The connector has a change feed: `Resume` reads only what changed.
    /// Without one, `Resume` answers [`ConnectorError::ResyncRequired`] and
    /// [`run_pull`] does a full listing instead.
    pub incremental: bool,
}

/// The answer of a successful connection test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// One line for the operator, e.g. `okta app "Muster" reachable, users and groups readable`.
    pub summary: String,
}

/// A pull connector: one IdP's management API turned into pages of the
/// normalized model. Implementations hold their config, HTTP client and
/// clock; they never hold a whole directory in memory and never decide that
/// a listing is complete: they return, and [`run_pull`] reports it.
///
/// `Debug` is required so that the conformance kit can prove it never shows a
/// secret: implement it by hand, naming the base URL and scope, never a token.
#[async_trait]
pub trait PullConnector: Send + Sync + fmt::Debug {
    /// `okta`, `entra`, `google`, …: the same name as [`ConnectorSpec::KIND`].
    fn kind(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Tests the credentials and the configured scope with a few cheap
    /// requests. The error says what is wrong: [`ConnectorError::Unauthorized`]
    /// (bad token or key), [`ConnectorError::Forbidden`] (missing scope or
    /// role), [`ConnectorError::NotFound`] (unknown app, group, org unit).
    async fn check(&self) -> Result<CheckReport, ConnectorError>;
    /// Pulls into `out`, page by page. Returns the cursor for the next
    /// `Resume` (none when the connector has no change feed).
    async fn pull(&self, mode: &PullMode, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError>;
    /// Where the connector's HTTP client records its waits (rate limits,
    /// retries after errors): [`run_pull`] reports them in
    /// [`PullOutcome::waits`] and tells the sink of each as it starts
    /// ([`DirectorySink::waiting`]). None for a connector that records none.
    fn wait_log(&self) -> Option<Arc<WaitLog>> {
        None
    }
}

/// A connector crate's one declaration of itself: its kind's name, its config
/// schema (which fields are secrets) and how to build it. Directory-sync's
/// connector registry takes one line per connector built from this, and the
/// conformance kit builds the connector through it, so the name a directory is
/// stored under, the fields refused inline and the connector the kit tested can
/// never disagree.
pub trait ConnectorSpec: 'static {
    /// The kind's name: stored with every directory, sent on the wire
    /// (`kind_name`), typed after `muster directory create --kind`. Lowercase
    /// ASCII letters, digits and `_`; it never changes once released, and
    /// [`PullConnector::kind`] answers the same.
    const KIND: &'static str;
    /// One line for operators (`muster directory kinds`).
    const TITLE: &'static str;
    /// The config fields that hold secrets, as dotted paths (`auth.token`).
    /// Directory-sync refuses an inline value in exactly these fields and takes
    /// every other field as given; the kit fails a config holding a
    /// [`SecretRef`](crate::SecretRef) anywhere else.
    const SECRET_FIELDS: &'static [&'static str];
    /// The connector's config: serde with `deny_unknown_fields`, secrets as
    /// [`SecretRef`](crate::SecretRef). `Serialize` lets the kit find the
    /// secrets it must never see printed.
    type Config: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static;
    /// A connector for `config`: secrets resolved now, waits through `clock`,
    /// access tokens (if the vendor uses any) from `tokens`, which outlives it.
    fn connect(
        config: Self::Config,
        clock: Arc<dyn Clock>,
        tokens: &TokenPool,
    ) -> Result<Box<dyn PullConnector>, ConnectorError>;
}

/// A page on its way to the sink, and where the sink's answer goes.
struct Delivery {
    page: Page,
    done: oneshot::Sender<Result<(), SinkError>>,
}

enum Target<'a> {
    Sink(&'a mut dyn DirectorySink),
    /// Through [`run_pull`]'s relay, which also tells the sink of waits.
    Relay(mpsc::Sender<Delivery>),
}

/// The only door from a connector to the sink: it forwards pages and counts
/// them; it cannot report a listing complete.
pub struct PageWriter<'a> {
    target: Target<'a>,
    pages: usize,
    users: usize,
    groups: usize,
}

impl<'a> PageWriter<'a> {
    pub fn new(sink: &'a mut dyn DirectorySink) -> Self {
        Self { target: Target::Sink(sink), pages: 0, users: 0, groups: 0 }
    }

    fn relay(to: mpsc::Sender<Delivery>) -> Self {
        Self { target: Target::Relay(to), pages: 0, users: 0, groups: 0 }
    }

    /// Hands one page to the sink and waits until it is stored. Empty pages
    /// without a checkpoint are skipped.
    pub async fn write(&mut self, page: Page) -> Result<(), ConnectorError> {
        if page.is_empty() && page.checkpoint.is_none() {
            return Ok(());
        }
        self.pages += 1;
        self.users += page.users.len();
        self.groups += page.groups.len();
        match &mut self.target {
            Target::Sink(sink) => sink.page(page).await?,
            Target::Relay(to) => {
                let (done, stored) = oneshot::channel();
                let gone = || SinkError("the sink stopped taking pages".into());
                to.send(Delivery { page, done }).await.map_err(|_| gone())?;
                stored.await.map_err(|_| gone())??;
            }
        }
        Ok(())
    }

    pub fn pages(&self) -> usize {
        self.pages
    }

    pub fn users(&self) -> usize {
        self.users
    }
}

/// Options of one pull.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullOptions {
    /// Accept a full listing with no user as "the directory is empty". Off by
    /// default: an empty answer is far more often a scope or permission
    /// mistake than a real empty directory.
    pub allow_empty_listing: bool,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOutcome {
    /// Whether a full listing was done (asked for, or after an expired cursor).
    pub full_listing: bool,
    /// True when a `Resume` had to fall back to a full listing.
    pub resynced: bool,
    /// The cursor to store for the next pull.
    pub cursor: Option<Cursor>,
    pub pages: usize,
    pub users: usize,
    /// What the connector waited for during this pull (rate limits, retries
    /// after errors); `Display` is the sentence for the run's outcome.
    pub waits: Waits,
}

/// One `connector.pull` into `sink`; with a wait log, through a relay that
/// also tells the sink of each wait as it starts (between pages, while the
/// pull goes on). Answers the pull's result and its (pages, users).
async fn pull_into(
    connector: &dyn PullConnector,
    mode: &PullMode,
    sink: &mut dyn DirectorySink,
    log: Option<&WaitLog>,
) -> (Result<Option<Cursor>, ConnectorError>, usize, usize) {
    let Some(log) = log else {
        let mut writer = PageWriter::new(sink);
        let result = connector.pull(mode, &mut writer).await;
        return (result, writer.pages, writer.users);
    };
    // One page at a time: the connector still waits for each to be stored.
    let (to_sink, mut deliveries) = mpsc::channel::<Delivery>(1);
    let producer = async move {
        let mut writer = PageWriter::relay(to_sink);
        let result = connector.pull(mode, &mut writer).await;
        // The writer (and its sender) goes here: the relay below then ends.
        (result, writer.pages, writer.users)
    };
    let relay = async {
        loop {
            tokio::select! {
                biased;
                delivery = deliveries.recv() => match delivery {
                    Some(Delivery { page, done }) => {
                        let _ = done.send(sink.page(page).await);
                    }
                    None => break,
                },
                () = log.noted() => {
                    for note in log.take_notes() {
                        sink.waiting(&note).await;
                    }
                }
            }
        }
        for note in log.take_notes() {
            sink.waiting(&note).await;
        }
    };
    let (out, ()) = tokio::join!(producer, relay);
    out
}

/// Drives one pull of `connector` into `sink`: the entry point directory-sync
/// calls. A `Resume` whose cursor is refused falls back to a full listing. A
/// full listing is reported complete only when the connector returned
/// without error and (unless allowed) saw at least one user; a failed,
/// partial or empty listing never removes anything.
pub async fn run_pull(
    connector: &dyn PullConnector,
    mode: PullMode,
    sink: &mut dyn DirectorySink,
    options: &PullOptions,
) -> Result<PullOutcome, ConnectorError> {
    let log = connector.wait_log();
    // The log may outlive one pull (a connector pulled twice): report this pull's part.
    let before = log.as_deref().map(|l| {
        l.take_notes();
        l.waits()
    });
    let waits = || match (log.as_deref(), &before) {
        (Some(l), Some(before)) => l.waits().since(before),
        _ => Waits::default(),
    };
    let mut resynced = false;
    if let PullMode::Resume { .. } = &mode {
        sink.begin(PullKind::Changes).await?;
        let (result, pages, users) = pull_into(connector, &mode, sink, log.as_deref()).await;
        match result {
            Ok(Some(cursor)) => {
                sink.finish(PullEnd::ChangesApplied { cursor: cursor.clone() }).await?;
                info!(connector = connector.kind(), pages, users, "change feed applied");
                return Ok(PullOutcome {
                    full_listing: false,
                    resynced: false,
                    cursor: Some(cursor),
                    pages,
                    users,
                    waits: waits(),
                });
            }
            Ok(None) => {
                warn!(connector = connector.kind(), "change feed returned no cursor; doing a full listing");
                resynced = true;
            }
            Err(e) if e.requires_resync() => {
                warn!(connector = connector.kind(), reason = %e, "cursor refused; doing a full listing");
                resynced = true;
            }
            Err(e) => return Err(e),
        }
    }
    sink.begin(PullKind::Listing).await?;
    let (result, pages, users) = pull_into(connector, &PullMode::Refresh, sink, log.as_deref()).await;
    let cursor = result?;
    if users == 0 && !options.allow_empty_listing {
        warn!(connector = connector.kind(), "full listing returned no users; not reporting it complete");
        return Err(ConnectorError::EmptyListing);
    }
    sink.finish(PullEnd::ListingComplete { cursor: cursor.clone() }).await?;
    let waits = waits();
    info!(connector = connector.kind(), pages, users, resynced, waits = %waits, "full listing complete");
    Ok(PullOutcome { full_listing: true, resynced, cursor, pages, users, waits })
}

/// Chooses the next pull: a full listing when there is no cursor or the
/// last full listing is older than `full_listing_every` (to catch drift a
/// change feed never reports), otherwise the change feed.
pub fn plan_pull(
    cursor: Option<Cursor>,
    last_full_listing: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    full_listing_every: Duration,
) -> PullMode {
    let stale = match last_full_listing {
        None => true,
        Some(at) => now.signed_duration_since(at).to_std().map(|age| age >= full_listing_every).unwrap_or(false),
    };
    match cursor {
        Some(cursor) if !stale => PullMode::Resume { cursor },
        _ => PullMode::Refresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_prefers_the_feed_until_a_full_listing_is_due() {
        let now = Utc::now();
        let c = Cursor::new("c");
        let day = Duration::from_secs(86_400);
        assert_eq!(plan_pull(None, Some(now), now, day), PullMode::Refresh);
        assert_eq!(plan_pull(Some(c.clone()), None, now, day), PullMode::Refresh);
        assert_eq!(plan_pull(Some(c.clone()), Some(now), now, day), PullMode::Resume { cursor: c.clone() });
        let old = now - chrono::Duration::days(2);
        assert_eq!(plan_pull(Some(c), Some(old), now, day), PullMode::Refresh);
    }
}
