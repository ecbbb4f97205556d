//! What directory-sync asks of policy and membership, behind one trait so the engine
//! can be tested without them. The gRPC implementation retries UNAVAILABLE briefly;
//! anything still unanswered comes back as [`SyncError::Unavailable`], which the
//! engine waits out — it never reads "no answer" as "no users".

use async_trait::async_trait;
use muster_proto::common::v1 as common;
use muster_proto::membership::v1 as mpb;
use muster_proto::policy::v1 as ppb;
use muster_runtime::client::{AuthedChannel, PolicyClient, RetryPolicy, retry_unavailable, upstream_channel};
use muster_runtime::config::UpstreamConfig;

use crate::error::SyncError;

/// A membership client.
pub type MembershipClient = mpb::membership_service_client::MembershipServiceClient<AuthedChannel>;

/// An org a directory drives, and the settings it was read with.
#[derive(Clone, Debug, PartialEq)]
pub struct OrgTarget {
    /// The org.
    pub org_id: String,
    /// Its settings version.
    pub settings_version: i64,
    /// Its settings.
    pub settings: ppb::Settings,
    /// Its product's guardian role (Owner, or Admin on Console): demotions out of it
    /// count as removals for the brake.
    pub guardian_role: String,
}

/// What LookupMembers says of one identity: the member in the org, and the person.
pub type LookupAnswer = (Option<mpb::Member>, Option<mpb::User>);

/// Policy and membership, as directory-sync uses them.
#[async_trait]
pub trait Upstreams: Send + Sync + 'static {
    /// Every org of the parent, with its settings (all modes: the caller picks).
    async fn orgs_of_parent(&self, parent_id: &str) -> Result<Vec<OrgTarget>, SyncError>;
    /// One org, with its settings.
    async fn org(&self, org_id: &str) -> Result<(ppb::Org, ppb::Settings), SyncError>;
    /// The catalog entry of a product.
    async fn product(&self, kind: i32) -> Result<ppb::Product, SyncError>;
    /// Whether a parent org exists.
    async fn parent_exists(&self, parent_id: &str) -> Result<bool, SyncError>;
    /// policy.Decide.
    async fn decide(&self, request: ppb::DecideRequest) -> Result<Vec<ppb::Decision>, SyncError>;
    /// membership.LookupMembers: one answer per identity, in order.
    async fn lookup_members(
        &self,
        org_id: &str,
        identities: Vec<mpb::Identity>,
    ) -> Result<Vec<LookupAnswer>, SyncError>;
    /// membership.Apply.
    async fn apply(&self, request: mpb::ApplyRequest) -> Result<mpb::ApplyResponse, SyncError>;
    /// membership.PreviewApply: the batches, dry, in order; one answer per batch.
    async fn preview_apply(&self, requests: Vec<mpb::ApplyRequest>) -> Result<Vec<mpb::ApplyResponse>, SyncError>;
    /// How many members an org has (membership.ListMembers' total_size).
    async fn member_count(&self, org_id: &str) -> Result<i64, SyncError>;
    /// One page of membership.ListMembers.
    async fn list_members(&self, org_id: &str, page_token: &str) -> Result<(Vec<mpb::Member>, String), SyncError>;
    /// membership.RetryPending.
    async fn retry_pending(&self, org_id: &str, actor: common::Actor) -> Result<mpb::RetryPendingResponse, SyncError>;
    /// membership.GetSeatUsage.
    async fn seat_usage(&self, org_id: &str) -> Result<mpb::SeatUsage, SyncError>;
    /// membership.GetMember.
    async fn member(&self, org_id: &str, member_id: &str) -> Result<Option<mpb::Member>, SyncError>;
}

/// [`Upstreams`] over gRPC.
#[derive(Clone)]
pub struct GrpcUpstreams {
    policy: PolicyClient,
    membership: MembershipClient,
    retry: RetryPolicy,
}

impl std::fmt::Debug for GrpcUpstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcUpstreams")
    }
}

/// Largest message exchanged with policy and membership: 10,000-person batches.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

impl GrpcUpstreams {
    /// Clients for the configured upstreams (channels connect lazily).
    pub fn new(
        policy: &UpstreamConfig,
        membership: &UpstreamConfig,
    ) -> Result<Self, muster_runtime::client::ClientError> {
        Ok(Self {
            policy: PolicyClient::new(upstream_channel(policy)?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            membership: MembershipClient::new(upstream_channel(membership)?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            // A short retry here smooths a blip; longer outages are waited out by the engine.
            retry: RetryPolicy::default(),
        })
    }
}

fn policy_err(s: tonic::Status) -> SyncError {
    SyncError::upstream("policy", s)
}

fn membership_err(s: tonic::Status) -> SyncError {
    SyncError::upstream("membership", s)
}

#[async_trait]
impl Upstreams for GrpcUpstreams {
    async fn orgs_of_parent(&self, parent_id: &str) -> Result<Vec<OrgTarget>, SyncError> {
        let mut out = Vec::new();
        let mut products: Vec<ppb::Product> = Vec::new();
        let mut token = String::new();
        loop {
            let req = ppb::ListOrgsRequest { parent_id: parent_id.to_string(), page_size: 1000, page_token: token };
            let page = retry_unavailable(self.retry, || {
                let mut c = self.policy.clone();
                let r = req.clone();
                async move { c.list_orgs(r).await }
            })
            .await
            .map_err(policy_err)?
            .into_inner();
            if products.is_empty() && !page.orgs.is_empty() {
                products = retry_unavailable(self.retry, || {
                    let mut c = self.policy.clone();
                    async move { c.list_products(ppb::ListProductsRequest {}).await }
                })
                .await
                .map_err(policy_err)?
                .into_inner()
                .products;
            }
            for org in page.orgs {
                let guardian_role = products
                    .iter()
                    .find(|p| p.kind == org.product)
                    .map(|p| p.guardian_role.clone())
                    .unwrap_or_default();
                let req = ppb::GetSettingsRequest { org_id: org.id.clone() };
                let settings = match retry_unavailable(self.retry, || {
                    let mut c = self.policy.clone();
                    let r = req.clone();
                    async move { c.get_settings(r).await }
                })
                .await
                {
                    Ok(s) => s.into_inner(),
                    // Deleted between the listing and this read: it drives nothing.
                    Err(s) if s.code() == tonic::Code::NotFound => continue,
                    Err(s) => return Err(policy_err(s)),
                };
                out.push(OrgTarget { org_id: org.id, settings_version: settings.version, settings, guardian_role });
            }
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    async fn org(&self, org_id: &str) -> Result<(ppb::Org, ppb::Settings), SyncError> {
        let req = ppb::GetOrgRequest { id: org_id.to_string() };
        let org = retry_unavailable(self.retry, || {
            let mut c = self.policy.clone();
            let r = req.clone();
            async move { c.get_org(r).await }
        })
        .await
        .map_err(policy_err)?
        .into_inner();
        let req = ppb::GetSettingsRequest { org_id: org_id.to_string() };
        let settings = retry_unavailable(self.retry, || {
            let mut c = self.policy.clone();
            let r = req.clone();
            async move { c.get_settings(r).await }
        })
        .await
        .map_err(policy_err)?
        .into_inner();
        Ok((org, settings))
    }

    async fn product(&self, kind: i32) -> Result<ppb::Product, SyncError> {
        let req = ppb::GetProductRequest { kind };
        Ok(retry_unavailable(self.retry, || {
            let mut c = self.policy.clone();
            let r = req;
            async move { c.get_product(r).await }
        })
        .await
        .map_err(policy_err)?
        .into_inner())
    }

    async fn parent_exists(&self, parent_id: &str) -> Result<bool, SyncError> {
        let req = ppb::GetParentOrgRequest { id: parent_id.to_string() };
        match retry_unavailable(self.retry, || {
            let mut c = self.policy.clone();
            let r = req.clone();
            async move { c.get_parent_org(r).await }
        })
        .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(policy_err(s)),
        }
    }

    async fn decide(&self, request: ppb::DecideRequest) -> Result<Vec<ppb::Decision>, SyncError> {
        Ok(retry_unavailable(self.retry, || {
            let mut c = self.policy.clone();
            let r = request.clone();
            async move { c.decide(r).await }
        })
        .await
        .map_err(policy_err)?
        .into_inner()
        .decisions)
    }

    async fn lookup_members(
        &self,
        org_id: &str,
        identities: Vec<mpb::Identity>,
    ) -> Result<Vec<LookupAnswer>, SyncError> {
        let req = mpb::LookupMembersRequest { org_id: org_id.to_string(), identities };
        let n = req.identities.len();
        let results = retry_unavailable(self.retry, || {
            let mut c = self.membership.clone();
            let r = req.clone();
            async move { c.lookup_members(r).await }
        })
        .await
        .map_err(membership_err)?
        .into_inner()
        .results;
        if results.len() != n {
            // A short answer must not read as "these people are not members".
            return Err(SyncError::Upstream {
                service: "membership",
                status: tonic::Status::internal(format!("LookupMembers answered {} of {n} identities", results.len())),
            });
        }
        Ok(results.into_iter().map(|r| (r.member, r.user)).collect())
    }

    async fn preview_apply(&self, requests: Vec<mpb::ApplyRequest>) -> Result<Vec<mpb::ApplyResponse>, SyncError> {
        let n = requests.len();
        let answers = retry_unavailable(self.retry, || {
            let mut c = self.membership.clone();
            let stream = tokio_stream::iter(requests.clone());
            async move {
                let mut answers = c.preview_apply(stream).await?.into_inner();
                let mut out = Vec::new();
                while let Some(a) = answers.message().await? {
                    out.push(a);
                }
                Ok(out)
            }
        })
        .await
        .map_err(membership_err)?;
        if answers.len() != n {
            return Err(SyncError::Upstream {
                service: "membership",
                status: tonic::Status::internal(format!("PreviewApply answered {} of {n} batches", answers.len())),
            });
        }
        Ok(answers)
    }

    async fn member_count(&self, org_id: &str) -> Result<i64, SyncError> {
        let req = mpb::ListMembersRequest { org_id: org_id.to_string(), page_size: 1, ..Default::default() };
        Ok(retry_unavailable(self.retry, || {
            let mut c = self.membership.clone();
            let r = req.clone();
            async move { c.list_members(r).await }
        })
        .await
        .map_err(membership_err)?
        .into_inner()
        .total_size)
    }

    async fn apply(&self, request: mpb::ApplyRequest) -> Result<mpb::ApplyResponse, SyncError> {
        // Same idempotency key on every attempt: a retry never applies twice.
        Ok(retry_unavailable(self.retry, || {
            let mut c = self.membership.clone();
            let r = request.clone();
            async move { c.apply(r).await }
        })
        .await
        .map_err(membership_err)?
        .into_inner())
    }

    async fn list_members(&self, org_id: &str, page_token: &str) -> Result<(Vec<mpb::Member>, String), SyncError> {
        let req = mpb::ListMembersRequest {
            org_id: org_id.to_string(),
            page_size: 1000,
            page_token: page_token.to_string(),
            ..Default::default()
        };
        let page = retry_unavailable(self.retry, || {
            let mut c = self.membership.clone();
            let r = req.clone();
            async move { c.list_members(r).await }
        })
        .await
        .map_err(membership_err)?
        .into_inner();
        Ok((page.members, page.next_page_token))
    }

    async fn retry_pending(&self, org_id: &str, actor: common::Actor) -> Result<mpb::RetryPendingResponse, SyncError> {
        let req = mpb::RetryPendingRequest { org_id: org_id.to_string(), actor: Some(actor) };
        Ok(retry_unavailable(self.retry, || {
            let mut c = self.membership.clone();
            let r = req.clone();
            async move { c.retry_pending(r).await }
        })
        .await
        .map_err(membership_err)?
        .into_inner())
    }

    async fn seat_usage(&self, org_id: &str) -> Result<mpb::SeatUsage, SyncError> {
        let req = mpb::GetSeatUsageRequest { org_id: org_id.to_string() };
        Ok(retry_unavailable(self.retry, || {
            let mut c = self.membership.clone();
            let r = req.clone();
            async move { c.get_seat_usage(r).await }
        })
        .await
        .map_err(membership_err)?
        .into_inner())
    }

    async fn member(&self, org_id: &str, member_id: &str) -> Result<Option<mpb::Member>, SyncError> {
        let req = mpb::GetMemberRequest { org_id: org_id.to_string(), member_id: member_id.to_string() };
        match retry_unavailable(self.retry, || {
            let mut c = self.membership.clone();
            let r = req.clone();
            async move { c.get_member(r).await }
        })
        .await
        {
            Ok(m) => Ok(Some(m.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(membership_err(s)),
        }
    }
}
