//! The gRPC face of membership: thin handlers that translate, call [`Membership`],
//! and map errors.

use std::pin::Pin;
use std::time::Duration;

use muster_proto::membership::v1 as pb;
use muster_proto::membership::v1::membership_service_server::MembershipService;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::app::{MAX_BATCH, MAX_PREVIEW_ITEMS, Membership};
use crate::convert;
use crate::error::MembershipError;
use crate::store::{AuditFilter, MemberFilter};

/// Page size when none is asked.
const DEFAULT_PAGE: usize = 100;
/// Largest page.
const MAX_PAGE: usize = 1000;
/// How often a watcher polls the outbox when nothing wakes it (events committed by
/// another replica do not ring this process's bell).
const WATCH_POLL: Duration = Duration::from_millis(500);

fn page_size(n: i32) -> Result<usize, MembershipError> {
    match n {
        0 => Ok(DEFAULT_PAGE),
        n if n < 0 => {
            Err(MembershipError::invalid("page_size_negative", "page_size", "page_size must not be negative"))
        }
        n => Ok((n as usize).min(MAX_PAGE)),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Serves `muster.membership.v1.MembershipService`.
pub struct MembershipGrpc {
    app: Membership,
}

impl MembershipGrpc {
    /// Handlers over `app`.
    pub fn new(app: Membership) -> Self {
        Self { app }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::MemberEvent, Status>> + Send>>;
type ApplyStream = Pin<Box<dyn Stream<Item = Result<pb::ApplyResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MembershipService for MembershipGrpc {
    async fn add_member(&self, r: Request<pb::AddMemberRequest>) -> Result<Response<pb::MemberChange>, Status> {
        let r = r.into_inner();
        let (member, notes) = self
            .app
            .add_member(
                &r.org_id,
                &r.email,
                &r.display_name,
                r.role.trim(),
                r.seat_tier.trim(),
                convert::actor(r.actor),
            )
            .await?;
        Ok(Response::new(pb::MemberChange { member: Some(convert::member_pb(member)), notes }))
    }

    async fn update_member(&self, r: Request<pb::UpdateMemberRequest>) -> Result<Response<pb::MemberChange>, Status> {
        let r = r.into_inner();
        let (member, notes) = self
            .app
            .update_member(&r.org_id, &r.member_id, r.expected_version, r.role, r.seat_tier, convert::actor(r.actor))
            .await?;
        Ok(Response::new(pb::MemberChange { member: Some(convert::member_pb(member)), notes }))
    }

    async fn remove_member(
        &self,
        r: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let r = r.into_inner();
        self.app.remove_member(&r.org_id, &r.member_id, convert::actor(r.actor)).await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn get_member(&self, r: Request<pb::GetMemberRequest>) -> Result<Response<pb::Member>, Status> {
        let r = r.into_inner();
        Ok(Response::new(convert::member_pb(self.app.get_member(&r.org_id, &r.member_id).await?)))
    }

    async fn list_members(
        &self,
        r: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let r = r.into_inner();
        let limit = page_size(r.page_size)?;
        let filter = MemberFilter {
            role: non_empty(r.role),
            seat_tier: non_empty(r.seat_tier),
            status: convert::status(r.status),
            source: convert::source(r.source),
            email_prefix: non_empty(r.email_prefix.trim().to_lowercase()),
        };
        let (mut members, total_size) =
            self.app.list_members(&r.org_id, filter, non_empty(r.page_token), limit + 1).await?;
        let more = members.len() > limit;
        members.truncate(limit);
        let next_page_token =
            if more { members.last().map(|m| m.id.clone()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListMembersResponse {
            members: members.into_iter().map(convert::member_pb).collect(),
            next_page_token,
            total_size,
        }))
    }

    async fn lookup_members(
        &self,
        r: Request<pb::LookupMembersRequest>,
    ) -> Result<Response<pb::LookupMembersResponse>, Status> {
        let r = r.into_inner();
        let identities = r.identities.into_iter().map(|i| convert::identity(Some(i))).collect();
        let found = self.app.lookup(&r.org_id, identities).await?;
        Ok(Response::new(pb::LookupMembersResponse {
            results: found
                .into_iter()
                .map(|(m, u)| pb::LookupResult { member: m.map(convert::member_pb), user: u.map(convert::user_pb) })
                .collect(),
        }))
    }

    async fn set_seats(&self, r: Request<pb::SetSeatsRequest>) -> Result<Response<pb::SeatUsage>, Status> {
        let r = r.into_inner();
        let usage = self.app.set_seats(&r.org_id, r.seat_tier.trim(), r.purchased, convert::actor(r.actor)).await?;
        Ok(Response::new(convert::usage_pb(usage)))
    }

    async fn get_seat_usage(&self, r: Request<pb::GetSeatUsageRequest>) -> Result<Response<pb::SeatUsage>, Status> {
        Ok(Response::new(convert::usage_pb(self.app.seat_usage(&r.into_inner().org_id).await?)))
    }

    async fn apply(&self, r: Request<pb::ApplyRequest>) -> Result<Response<pb::ApplyResponse>, Status> {
        let r = r.into_inner();
        if r.items.len() > MAX_BATCH {
            return Err(MembershipError::invalid(
                "batch_too_large",
                "items",
                format!("at most {MAX_BATCH} items per call, got {}", r.items.len()),
            )
            .into());
        }
        // The key's first answer is returned for the same request; the hash tells a
        // retry from a different batch that reuses the key by mistake.
        let hash = hex::encode(Sha256::digest(pb::ApplyRequest { actor: None, ..r.clone() }.encode_to_vec()));
        let items = convert::desired(r.items)?;
        let (results, replayed) = self
            .app
            .apply(&r.org_id, &r.idempotency_key, hash, &r.directory_id, convert::actor(r.actor), items)
            .await?;
        Ok(Response::new(pb::ApplyResponse { results: convert::results_pb(results), replayed }))
    }

    type PreviewApplyStream = ApplyStream;

    async fn preview_apply(
        &self,
        r: Request<tonic::Streaming<pb::ApplyRequest>>,
    ) -> Result<Response<ApplyStream>, Status> {
        let mut stream = r.into_inner();
        let mut org_id: Option<String> = None;
        let mut actor = None;
        let mut batches = Vec::new();
        let mut total = 0usize;
        while let Some(req) = stream.message().await? {
            match &org_id {
                None => org_id = Some(req.org_id.clone()),
                Some(o) if *o != req.org_id => {
                    return Err(MembershipError::invalid(
                        "org_mismatch",
                        "org_id",
                        "every batch of one preview names the same org",
                    )
                    .into());
                }
                Some(_) => {}
            }
            total += req.items.len();
            // Checked as the stream arrives, so an oversized preview is refused before it is all read.
            if total > MAX_PREVIEW_ITEMS {
                return Err(MembershipError::invalid(
                    "preview_too_large",
                    "items",
                    format!("at most {MAX_PREVIEW_ITEMS} items per preview"),
                )
                .into());
            }
            actor = actor.or(req.actor);
            batches.push((req.directory_id, convert::desired(req.items)?));
        }
        let Some(org_id) = org_id else {
            return Ok(Response::new(Box::pin(tokio_stream::iter(Vec::new()))));
        };
        let answers = self.app.preview_apply(&org_id, convert::actor(actor), batches).await?;
        let out: Vec<Result<pb::ApplyResponse, Status>> = answers
            .into_iter()
            .map(|results| Ok(pb::ApplyResponse { results: convert::results_pb(results), replayed: false }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }

    async fn login(&self, r: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let r = r.into_inner();
        let result = self.app.login(&r.org_id, convert::identity(r.identity), r.assigned, r.groups).await?;
        Ok(Response::new(pb::LoginResponse {
            allowed: result.allowed,
            member: result.member.map(convert::member_pb),
            action: result.action as i32,
            reasons: result.reasons,
        }))
    }

    async fn retry_pending(
        &self,
        r: Request<pb::RetryPendingRequest>,
    ) -> Result<Response<pb::RetryPendingResponse>, Status> {
        let r = r.into_inner();
        let (activated, still_pending) = self.app.retry_pending(&r.org_id, convert::actor(r.actor)).await?;
        Ok(Response::new(pb::RetryPendingResponse { activated, still_pending }))
    }

    async fn list_audit(&self, r: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = r.into_inner();
        let limit = page_size(r.page_size)?;
        let before = match r.page_token.as_str() {
            "" => None,
            t => Some(t.parse::<i64>().map_err(|_| {
                MembershipError::invalid("page_token_invalid", "page_token", "page_token is not one this service gave")
            })?),
        };
        let filter = AuditFilter {
            user_id: non_empty(r.user_id),
            actor: non_empty(r.actor),
            since: convert::time(r.since),
            until: convert::time(r.until),
        };
        let mut entries = self.app.list_audit(&r.org_id, filter, before, limit + 1).await?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_page_token =
            if more { entries.last().map(|e| e.id.to_string()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.into_iter().map(convert::audit_pb).collect(),
            next_page_token,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(&self, r: Request<pb::WatchEventsRequest>) -> Result<Response<EventStream>, Status> {
        let r = r.into_inner();
        if r.after_sequence < 0 {
            return Err(MembershipError::invalid(
                "cursor_negative",
                "after_sequence",
                "after_sequence must not be negative",
            )
            .into());
        }
        let app = self.app.clone();
        let signal = app.event_signal();
        let stopping = app.stopping();
        let org = non_empty(r.org_id);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut cursor = r.after_sequence;
            loop {
                // Register for the wake-up before reading, so a commit between the read
                // and the wait is not missed.
                let woken = signal.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                match app.events_after(cursor, org.clone(), 500).await {
                    Ok(batch) if !batch.is_empty() => {
                        for event in batch {
                            cursor = event.sequence;
                            if tx.send(Ok(convert::event_pb(event))).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(WATCH_POLL) => {}
                    _ = tx.closed() => return,
                    _ = stopping.wait() => {
                        let _ = tx.send(Err(Status::unavailable("server is shutting down: reconnect and resume after your last sequence"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
