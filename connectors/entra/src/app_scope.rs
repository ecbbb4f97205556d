//! The full listing of [`EntraScope::App`](crate::EntraScope::App): the users
//! and groups assigned to one enterprise application, at a request cost close
//! to the tenant's delta listing instead of one request per user.
//!
//! 1. `GET /servicePrincipals/{id}/appRoleAssignedTo?$top=999` (Graph "List
//!    appRoleAssignments granted for a service principal": `principalId`,
//!    `principalType` `User` | `Group` | `ServicePrincipal`), paged by
//!    `@odata.nextLink` to the end. The directly assigned users of each page
//!    are read with `GET /users?$filter=id in (…15 ids…)&$select=…` (the `in`
//!    operator takes 15 values by default, Graph "known issues"), 20 such
//!    reads to a `$batch`: 300 users per round trip. A user the filter does
//!    not return was deleted since: not in scope.
//! 2. The assigned groups, 10 to a `$batch`, each as `GET /groups/{id}` and
//!    the first page of `GET /groups/{id}/members?$select=…&$top=999` (direct
//!    members only; the user properties are selected on the members, so a
//!    member needs no read of its own). Further member pages are batched by
//!    their `@odata.nextLink`, 20 to a `$batch`. Nested groups and service
//!    principals are not people and are skipped.
//!
//! Batches go `http.concurrency` (at most [`BATCH_CONCURRENCY`](crate::BATCH_CONCURRENCY)) at a time. Only ids (users in scope,
//! assigned groups, pending paging links) are held in memory; users, groups
//! and memberships are written page by page.

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use muster_connector::http::odata_next_link;
use muster_connector::{ConnectorError, Group, Membership, MembershipChange, Page, PageWriter};
use serde_json::Value;

use crate::batch::{BatchGet, MAX_BATCH};
use crate::{APP_GROUP_SELECT, EntraConnector, USER_SELECT, app_scope_error, graph_user, text};

/// The largest page Graph serves of directory objects (`$top` 1 to 999).
pub const PAGE_TOP: &str = "999";
/// Each assigned group takes two requests of a batch: itself and its first member page.
const GROUPS_PER_BATCH: usize = MAX_BATCH / 2;

/// What a listing has written so far.
#[derive(Default)]
struct Seen {
    /// Users written (in scope): a user met again only adds memberships.
    users: HashSet<String>,
    /// Directly assigned users whose profile was asked for already.
    asked: HashSet<String>,
    /// Members Graph returned without the selected properties (never seen
    /// in practice): read at the end, their memberships written then.
    late: Vec<Membership>,
}

impl Seen {
    /// The user members of one page of `GET /groups/{id}/members` into `page`.
    fn members(&mut self, group_id: &str, body: &Value, page: &mut Page) {
        for member in body.get("value").and_then(Value::as_array).into_iter().flatten() {
            if member["@odata.type"] != "#microsoft.graph.user" {
                continue;
            }
            let Some(user_id) = text(member, "id") else { continue };
            let membership = Membership::new(group_id, user_id.clone());
            if !self.users.contains(&user_id) {
                match graph_user(member.clone()) {
                    Some(user) => {
                        self.users.insert(user_id);
                        page.users.push(user);
                    }
                    None => {
                        self.late.push(membership);
                        continue;
                    }
                }
            }
            page.memberships.push(MembershipChange::Added(membership));
        }
    }
}

impl EntraConnector {
    /// `GET /users?$filter=id in (…)` for `ids`, batched: the users that
    /// still exist, in no particular order.
    pub(crate) async fn read_profiles(&self, ids: &[String]) -> Result<Vec<crate::User>, ConnectorError> {
        let gets = ids
            .chunks(crate::IDS_PER_FILTER)
            .map(|chunk| {
                let quoted: Vec<String> = chunk.iter().map(|id| format!("'{}'", id.replace('\'', "''"))).collect();
                let filter = format!("id in ({})", quoted.join(","));
                BatchGet::new("/users", &[("$filter", &filter), ("$select", USER_SELECT)])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut users = Vec::with_capacity(ids.len());
        for answer in self.batch_all(gets).await? {
            let mut body = answer?;
            loop {
                for item in body.get("value").and_then(Value::as_array).into_iter().flatten() {
                    users.extend(graph_user(item.clone()));
                }
                // Fifteen ids never fill a page; a next link would still be followed.
                match odata_next_link(&body) {
                    Some(next) => body = self.get(self.same_origin(next)?).await?,
                    None => break,
                }
            }
        }
        Ok(users)
    }

    pub(crate) async fn app_listing(&self, sp: &str, out: &mut PageWriter<'_>) -> Result<(), ConnectorError> {
        let mut seen = Seen::default();
        let mut groups: Vec<String> = Vec::new();
        let mut assigned_groups = HashSet::new();
        let mut url = self.url(&format!("/v1.0/servicePrincipals/{sp}/appRoleAssignedTo"));
        url.query_pairs_mut().append_pair("$top", PAGE_TOP);
        loop {
            let body = self.get(url).await.map_err(|e| app_scope_error(e, sp))?;
            let mut direct = Vec::new();
            for item in body.get("value").and_then(Value::as_array).into_iter().flatten() {
                let Some(id) = text(item, "principalId") else { continue };
                match item.get("principalType").and_then(Value::as_str) {
                    Some("User") if seen.asked.insert(id.clone()) => direct.push(id),
                    Some("Group") if assigned_groups.insert(id.clone()) => groups.push(id),
                    _ => {}
                }
            }
            let users = self.read_profiles(&direct).await?;
            seen.users.extend(users.iter().map(|u| u.id.clone()));
            out.write(Page { users, ..Page::default() }).await?;
            match odata_next_link(&body) {
                Some(next) => url = self.same_origin(next)?,
                None => break,
            }
        }
        let more = self.assigned_groups(&groups, &mut seen, out).await?;
        self.further_member_pages(more, &mut seen, out).await?;
        if !seen.late.is_empty() {
            let ids: Vec<String> =
                seen.late.iter().map(|m| m.user_id.clone()).collect::<HashSet<_>>().into_iter().collect();
            let users = self.read_profiles(&ids).await?;
            let found: HashSet<String> = users.iter().map(|u| u.id.clone()).collect();
            let memberships = std::mem::take(&mut seen.late)
                .into_iter()
                .filter(|m| found.contains(&m.user_id))
                .map(MembershipChange::Added)
                .collect();
            out.write(Page { users, memberships, ..Page::default() }).await?;
        }
        Ok(())
    }

    /// Each group and its first member page; answers the member pages still
    /// to read, as (group id, `@odata.nextLink`).
    async fn assigned_groups(
        &self,
        groups: &[String],
        seen: &mut Seen,
        out: &mut PageWriter<'_>,
    ) -> Result<Vec<(String, String)>, ConnectorError> {
        let mut more = Vec::new();
        // The futures are made first: a stream mapping by a closure over borrowed
        // chunks trips the compiler's Send analysis inside async_trait.
        let reads: Vec<_> = groups.chunks(GROUPS_PER_BATCH).map(|chunk| self.groups_batch(chunk)).collect();
        let reads = stream::iter(reads).buffered(self.concurrency);
        let mut reads = std::pin::pin!(reads);
        while let Some(read) = reads.next().await {
            let (chunk, answers) = read?;
            let mut answers = answers.into_iter();
            for group_id in chunk {
                let (Some(group), Some(members)) = (answers.next(), answers.next()) else {
                    return Err(ConnectorError::Protocol("$batch answered fewer requests than sent".into()));
                };
                let raw = match group {
                    Ok(raw) => raw,
                    // Deleted since the assignments were read: not in scope any more.
                    Err(ConnectorError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                let Some(name) = text(&raw, "displayName") else { continue };
                let description = text(&raw, "description");
                let mut page =
                    Page { groups: vec![Group { id: group_id.clone(), name, description, raw }], ..Page::default() };
                match members {
                    Ok(body) => {
                        seen.members(group_id, &body, &mut page);
                        if let Some(next) = odata_next_link(&body) {
                            more.push((group_id.clone(), next.to_owned()));
                        }
                    }
                    Err(ConnectorError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                out.write(page).await?;
            }
        }
        Ok(more)
    }

    /// One batch for `chunk`: each group and the first page of its members.
    async fn groups_batch<'a>(
        &self,
        chunk: &'a [String],
    ) -> Result<(&'a [String], Vec<Result<Value, ConnectorError>>), ConnectorError> {
        let mut gets = Vec::with_capacity(chunk.len() * 2);
        for id in chunk {
            gets.push(BatchGet::new(&format!("/groups/{id}"), &[("$select", APP_GROUP_SELECT)])?);
            gets.push(BatchGet::new(
                &format!("/groups/{id}/members"),
                &[("$select", USER_SELECT), ("$top", PAGE_TOP)],
            )?);
        }
        self.batch(&gets).await.map(|answers| (chunk, answers))
    }

    /// Follows member paging links, batched, until every group is read to its end.
    async fn further_member_pages(
        &self,
        mut more: Vec<(String, String)>,
        seen: &mut Seen,
        out: &mut PageWriter<'_>,
    ) -> Result<(), ConnectorError> {
        while !more.is_empty() {
            let round = std::mem::take(&mut more);
            let gets = round
                .iter()
                .map(|(_, link)| {
                    BatchGet::relative_to(&self.version_root, link)
                        .ok_or_else(|| ConnectorError::Protocol("graph returned a link outside graph_url".into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let answers = self.batch_all(gets).await?;
            for ((group_id, _), answer) in round.iter().zip(answers) {
                let body = match answer {
                    Ok(body) => body,
                    // The group was deleted while it was read.
                    Err(ConnectorError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                let mut page = Page::default();
                seen.members(group_id, &body, &mut page);
                if let Some(next) = odata_next_link(&body) {
                    more.push((group_id.clone(), next.to_owned()));
                }
                out.write(page).await?;
            }
        }
        Ok(())
    }
}
