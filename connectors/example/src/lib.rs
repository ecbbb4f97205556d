//! The pull connector for Example Directory, a small made-up IdP whose API
//! lists users, groups and group members a page at a time by an opaque
//! cursor, takes a bearer token and throttles with 429 and `Retry-After`. It
//! has no change feed: every pull is a full listing. It exists as the
//! template a new connector is copied from (`docs/connectors.md`, "Step by
//! step") and as the proof that a connector is added by its crate, one line
//! of directory-sync's registry and Cargo: nothing else in the workspace
//! names it. Its fake (`tests/fake`, `testing::*` with the `fake` feature) is
//! built on the kit's shared scaffolding, so it is only routes and shapes.

/// The fake API of this crate's tests (`tests/fake`), compiled in for other
/// crates' end-to-end tests with the `fake` feature. The file stays where the
/// connector's own tests include it, so both build the same fake.
#[cfg(feature = "fake")]
#[path = "../tests/fake/mod.rs"]
pub mod testing;

// tests/fake names this crate `muster_connector_example`, as the crate's own
// tests (which include the same file) must.
#[cfg(feature = "fake")]
extern crate self as muster_connector_example;

mod config;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use muster_connector::http::{ApiResponse, Url, Verdict};
use muster_connector::{
    ApiClient, ApiRequest, Assignment, BaseUrl, Capabilities, CheckReport, Clock, ConnectorError, ConnectorSpec,
    Cursor, CursorTrail, Group, Membership, MembershipChange, Page, PageWriter, PullConnector, PullMode, Secret,
    TokenPool, User, WaitLog,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use config::{ExampleConfig, SECRET_FIELDS};
use wire::{ApiError, ApiGroup, ApiMember, ApiUser, ListPage};

/// Example Directory as directory-sync registers it: one line of its
/// registry, `ConnectorEntry::pull::<Example>(None)`.
#[derive(Debug)]
pub struct Example;

impl ConnectorSpec for Example {
    const KIND: &'static str = "example";
    const TITLE: &'static str = "Example Directory (a made-up IdP; the connector template)";
    const SECRET_FIELDS: &'static [&'static str] = SECRET_FIELDS;
    type Config = ExampleConfig;

    fn connect(
        config: ExampleConfig,
        clock: Arc<dyn Clock>,
        // A static token needs no pool; a vendor with OAuth takes its cache
        // from here (see the Okta connector's `with_token_pool`).
        _tokens: &TokenPool,
    ) -> Result<Box<dyn PullConnector>, ConnectorError> {
        Ok(Box::new(ExampleConnector::new(config, clock)?))
    }
}

/// A pull connector for one Example Directory tenant.
pub struct ExampleConnector {
    base: BaseUrl,
    page_size: u32,
    api: ApiClient,
    token: Secret,
}

impl std::fmt::Debug for ExampleConnector {
    // The base URL only: never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExampleConnector").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// The API's error body folded into the message; 429 and 5xx retried (the
/// client waits for `Retry-After`). The message never holds the token.
fn verdict(response: &ApiResponse) -> Verdict {
    let status = response.status.as_u16();
    if response.status.is_success() {
        return Verdict::Accept;
    }
    if matches!(status, 429 | 500 | 502 | 503 | 504) {
        return Verdict::Retry;
    }
    let detail = match serde_json::from_slice::<ApiError>(&response.body) {
        Ok(e) => format!("{status} {}: {} {}", response.url.path(), e.error.code, e.error.message),
        Err(_) => format!("{status} {}: {}", response.url.path(), response.detail()),
    };
    Verdict::Fail(match status {
        401 => ConnectorError::Unauthorized(detail),
        403 => ConnectorError::Forbidden(detail),
        404 => ConnectorError::NotFound(detail),
        _ => ConnectorError::Http { status, detail },
    })
}

fn item<T: DeserializeOwned>(what: &str, raw: &Value) -> Result<T, ConnectorError> {
    T::deserialize(raw).map_err(|e| ConnectorError::Protocol(format!("{what}: {e}")))
}

fn user(raw: Value) -> Result<User, ConnectorError> {
    let u: ApiUser = item("user", &raw)?;
    Ok(User {
        id: u.id,
        email: u.email.or_else(|| Some(u.login.clone())),
        user_name: u.login,
        given_name: u.given_name,
        family_name: u.family_name,
        display_name: u.display_name,
        active: u.status == "active",
        // Example Directory has no app assignment: the whole tenant is in scope.
        assignment: Assignment::Scope,
        raw,
    })
}

fn group(raw: Value) -> Result<Group, ConnectorError> {
    let g: ApiGroup = item("group", &raw)?;
    Ok(Group { id: g.id, name: g.name, description: g.description, raw })
}

/// One list read page by page, following `next_cursor` to the end and
/// refusing a cursor the API hands out twice.
struct Pages<'c> {
    connector: &'c ExampleConnector,
    listing: String,
    url: Url,
    cursor: Option<String>,
    trail: CursorTrail,
    done: bool,
}

impl Pages<'_> {
    async fn next(&mut self) -> Result<Option<Vec<Value>>, ConnectorError> {
        if self.done {
            return Ok(None);
        }
        let mut url = self.url.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &self.connector.page_size.to_string());
            if let Some(cursor) = &self.cursor {
                query.append_pair("cursor", cursor);
            }
        }
        let page: ListPage = self.connector.get(url).await?;
        match page.next_cursor.filter(|c| !c.is_empty()) {
            Some(next) => {
                self.trail.follow(&self.listing, &next)?;
                self.cursor = Some(next);
            }
            None => self.done = true,
        }
        Ok(Some(page.data))
    }
}

impl ExampleConnector {
    /// Builds the connector; the token is read now, so a missing file or
    /// variable is reported before any request.
    pub fn new(config: ExampleConfig, clock: Arc<dyn Clock>) -> Result<Self, ConnectorError> {
        let base = BaseUrl::parse("base_url", &config.base_url)?;
        if config.page_size == 0 || config.page_size > 500 {
            return Err(ConnectorError::Config("page_size must be 1 to 500".into()));
        }
        let token = config.token.resolve()?;
        // Named, so a run's outcome says whose rate limit it waited for.
        let api = ApiClient::new(&config.http, clock)?.named("Example Directory");
        Ok(Self { base, page_size: config.page_size, api, token })
    }

    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, ConnectorError> {
        let request = ApiRequest::get(url).header("accept", "application/json").authorization("Bearer", &self.token);
        self.api.send_with(&request, &verdict).await?.json()
    }

    fn pages<'c>(&'c self, listing: &str, segments: &[&str]) -> Pages<'c> {
        Pages {
            connector: self,
            listing: listing.to_owned(),
            url: self.base.join_segments(segments.iter().copied()),
            cursor: None,
            trail: CursorTrail::new(),
            done: false,
        }
    }

    /// The members of one group that are users of the tenant, page by page.
    /// A guest (an account of another tenant) is not in `/v1/users`: a
    /// membership naming one would name someone the mirror never holds.
    async fn list_members(&self, group_id: &str, out: &mut PageWriter<'_>) -> Result<(), ConnectorError> {
        let mut pages = self.pages(&format!("members of group {group_id}"), &["v1", "groups", group_id, "members"]);
        while let Some(items) = pages.next().await? {
            let mut page = Page::default();
            for raw in items {
                let member: ApiMember = item("member", &raw)?;
                if member.kind == "user" {
                    page.memberships.push(MembershipChange::Added(Membership::new(group_id, member.id)));
                }
            }
            out.write(page).await?;
        }
        Ok(())
    }

    /// Users first, then groups a page at a time, each page followed by the
    /// members of its groups: nothing but one page's group ids is held.
    async fn refresh(&self, out: &mut PageWriter<'_>) -> Result<(), ConnectorError> {
        let mut users = self.pages("users", &["v1", "users"]);
        while let Some(items) = users.next().await? {
            let users = items.into_iter().map(user).collect::<Result<Vec<_>, _>>()?;
            out.write(Page { users, ..Page::default() }).await?;
        }
        let mut groups = self.pages("groups", &["v1", "groups"]);
        while let Some(items) = groups.next().await? {
            let groups = items.into_iter().map(group).collect::<Result<Vec<_>, _>>()?;
            let ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
            out.write(Page { groups, ..Page::default() }).await?;
            for id in ids {
                self.list_members(&id, out).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl PullConnector for ExampleConnector {
    fn kind(&self) -> &'static str {
        Example::KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { incremental: false }
    }

    async fn check(&self) -> Result<CheckReport, ConnectorError> {
        let one = |path: &str| {
            let mut url = self.base.join(path);
            url.query_pairs_mut().append_pair("limit", "1");
            url
        };
        let (users, groups) = (one("/v1/users"), one("/v1/groups"));
        self.get::<ListPage>(users).await?;
        self.get::<ListPage>(groups).await?;
        Ok(CheckReport { summary: format!("example directory {}: users and groups readable", self.base) })
    }

    async fn pull(&self, mode: &PullMode, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError> {
        match mode {
            PullMode::Refresh => self.refresh(out).await.map(|()| None),
            // No change feed: say so at once, and run_pull lists in full (once).
            PullMode::Resume { .. } => {
                Err(ConnectorError::ResyncRequired("example directory has no change feed".into()))
            }
        }
    }

    /// The client's waits, for the run's outcome and progress.
    fn wait_log(&self) -> Option<Arc<WaitLog>> {
        Some(self.api.wait_log())
    }
}
