//! A deliberately broken copy of the Example Directory connector: the same
//! requests and mapping as `src/lib.rs`, with one [`Mistake`] switched on at a
//! time, each one a connector that an older kit passed. `tests/mistakes.rs`
//! proves the kit now fails every one of them. Keep it a copy, not a wrapper:
//! each mistake must be made where a real connector would make it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::sync::Arc;

use async_trait::async_trait;
use muster_connector::http::{ApiResponse, Url, Verdict};
use muster_connector::{
    ApiClient, ApiRequest, Assignment, BaseUrl, Capabilities, CheckReport, Clock, ConnectorError, ConnectorSpec,
    Cursor, CursorTrail, Group, Membership, MembershipChange, Page, PageWriter, PullConnector, PullMode, Secret,
    TokenPool, User,
};
use muster_connector_example::ExampleConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The one thing the copy gets wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mistake {
    #[default]
    None,
    /// Reads the first page of groups only (the old kit's groups fit one page).
    GroupPagesNotFollowed,
    /// Puts the token in the message of a refused request.
    TokenInErrors,
    /// Passes on every member of a group, guests of other tenants included.
    OutsideMembersKept,
    /// Answers the template's kind, not its own.
    WrongKind,
    /// Answers `Resume` by listing everything itself and returning no cursor,
    /// so `run_pull` lists everything a second time.
    ResumeListsInFull,
    /// Never sends the token.
    NoCredentials,
    /// Follows whatever cursor the API hands out, even one it followed before.
    CursorsTrusted,
}

/// The good config plus the mistake (which the kit never serializes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokenConfig {
    #[serde(flatten)]
    pub example: ExampleConfig,
    #[serde(skip)]
    pub mistake: Mistake,
}

/// Registered like the real one, under the same kind.
pub struct Broken;

impl ConnectorSpec for Broken {
    const KIND: &'static str = "example";
    const TITLE: &'static str = "Example Directory, broken on purpose";
    const SECRET_FIELDS: &'static [&'static str] = &["token"];
    type Config = BrokenConfig;

    fn connect(
        config: BrokenConfig,
        clock: Arc<dyn Clock>,
        _tokens: &TokenPool,
    ) -> Result<Box<dyn PullConnector>, ConnectorError> {
        let base = BaseUrl::parse("base_url", &config.example.base_url)?;
        let token = config.example.token.resolve()?;
        let api = ApiClient::new(&config.example.http, clock)?;
        Ok(Box::new(BrokenConnector { base, page_size: config.example.page_size, api, token, mistake: config.mistake }))
    }
}

pub struct BrokenConnector {
    base: BaseUrl,
    page_size: u32,
    api: ApiClient,
    token: Secret,
    mistake: Mistake,
}

impl std::fmt::Debug for BrokenConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokenConnector").field("mistake", &self.mistake).finish_non_exhaustive()
    }
}

impl BrokenConnector {
    fn verdict(&self, response: &ApiResponse) -> Verdict {
        let status = response.status.as_u16();
        if response.status.is_success() {
            return Verdict::Accept;
        }
        if matches!(status, 429 | 500 | 502 | 503 | 504) {
            return Verdict::Retry;
        }
        let detail = format!("{status} {}: {}", response.url.path(), response.detail());
        Verdict::Fail(match status {
            401 if self.mistake == Mistake::TokenInErrors => {
                ConnectorError::Unauthorized(format!("token {} was refused: {detail}", self.token.expose()))
            }
            401 => ConnectorError::Unauthorized(detail),
            403 => ConnectorError::Forbidden(detail),
            404 => ConnectorError::NotFound(detail),
            _ => ConnectorError::Http { status, detail },
        })
    }

    async fn get(&self, url: Url) -> Result<Value, ConnectorError> {
        let mut request = ApiRequest::get(url);
        if self.mistake != Mistake::NoCredentials {
            request = request.authorization("Bearer", &self.token);
        }
        self.api.send_with(&request, &|r| self.verdict(r)).await?.json()
    }

    /// Every page of one list, handed to `each`; only the first when `first_only`.
    async fn list(
        &self,
        listing: &str,
        segments: &[&str],
        first_only: bool,
        out: &mut PageWriter<'_>,
        each: &(dyn Fn(Vec<Value>) -> Result<Page, ConnectorError> + Sync),
    ) -> Result<Vec<Value>, ConnectorError> {
        let mut trail = CursorTrail::new();
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let mut url = self.base.join_segments(segments.iter().copied());
            url.query_pairs_mut().append_pair("limit", &self.page_size.to_string());
            if let Some(c) = &cursor {
                url.query_pairs_mut().append_pair("cursor", c);
            }
            let body = self.get(url).await?;
            let data: Vec<Value> = body["data"].as_array().cloned().unwrap_or_default();
            seen.extend(data.iter().cloned());
            out.write(each(data)?).await?;
            match body["next_cursor"].as_str() {
                Some(next) if !first_only => {
                    if self.mistake != Mistake::CursorsTrusted {
                        trail.follow(listing, next)?;
                    }
                    cursor = Some(next.to_owned());
                }
                _ => return Ok(seen),
            }
        }
    }

    async fn refresh(&self, out: &mut PageWriter<'_>) -> Result<(), ConnectorError> {
        let users = |items: Vec<Value>| {
            let users = items
                .into_iter()
                .map(|raw| User {
                    id: raw["id"].as_str().unwrap_or_default().to_owned(),
                    user_name: raw["login"].as_str().unwrap_or_default().to_owned(),
                    email: raw["email"].as_str().map(str::to_owned),
                    given_name: raw["given_name"].as_str().map(str::to_owned),
                    family_name: raw["family_name"].as_str().map(str::to_owned),
                    display_name: raw["display_name"].as_str().map(str::to_owned),
                    active: raw["status"] == "active",
                    assignment: Assignment::Scope,
                    raw,
                })
                .collect();
            Ok(Page { users, ..Page::default() })
        };
        self.list("users", &["v1", "users"], false, out, &users).await?;
        let groups = |items: Vec<Value>| {
            let groups = items
                .into_iter()
                .map(|raw| Group {
                    id: raw["id"].as_str().unwrap_or_default().to_owned(),
                    name: raw["name"].as_str().unwrap_or_default().to_owned(),
                    description: None,
                    raw,
                })
                .collect();
            Ok(Page { groups, ..Page::default() })
        };
        let first_only = self.mistake == Mistake::GroupPagesNotFollowed;
        let listed = self.list("groups", &["v1", "groups"], first_only, out, &groups).await?;
        for g in listed {
            let gid = g["id"].as_str().unwrap_or_default().to_owned();
            let keep_all = self.mistake == Mistake::OutsideMembersKept;
            let members = |items: Vec<Value>| {
                let memberships = items
                    .into_iter()
                    .filter(|m| keep_all || m["type"] == "user")
                    .map(|m| MembershipChange::Added(Membership::new(&gid, m["id"].as_str().unwrap_or_default())))
                    .collect();
                Ok(Page { memberships, ..Page::default() })
            };
            self.list("members", &["v1", "groups", &gid, "members"], false, out, &members).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl PullConnector for BrokenConnector {
    fn kind(&self) -> &'static str {
        if self.mistake == Mistake::WrongKind { "template" } else { "example" }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { incremental: false }
    }

    async fn check(&self) -> Result<CheckReport, ConnectorError> {
        let mut url = self.base.join("/v1/users");
        url.query_pairs_mut().append_pair("limit", "1");
        self.get(url).await?;
        Ok(CheckReport { summary: "readable".into() })
    }

    async fn pull(&self, mode: &PullMode, out: &mut PageWriter<'_>) -> Result<Option<Cursor>, ConnectorError> {
        match mode {
            PullMode::Resume { .. } if self.mistake != Mistake::ResumeListsInFull => {
                Err(ConnectorError::ResyncRequired("no change feed".into()))
            }
            PullMode::Resume { .. } | PullMode::Refresh => self.refresh(out).await.map(|()| None),
        }
    }
}
