//! What membership needs to know of an org's product (roles, guardian role, seat
//! tiers), asked of policy once per org and kept: an org's product never changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use muster_proto::policy::v1 as pb;
use muster_runtime::client::{PolicyClient, RetryPolicy, retry_unavailable};

use crate::error::MembershipError;

/// An org's product, as membership uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgProduct {
    /// The org.
    pub org_id: String,
    /// Roles, highest first.
    pub roles: Vec<String>,
    /// Seat tiers, highest first (empty on Console).
    pub seat_tiers: Vec<String>,
}

impl OrgProduct {
    /// The guardian role (the first).
    pub fn guardian_role(&self) -> &str {
        self.roles.first().map(String::as_str).unwrap_or_default()
    }

    /// The default role (the last).
    pub fn default_role(&self) -> &str {
        self.roles.last().map(String::as_str).unwrap_or_default()
    }

    /// Checks a role name.
    pub fn check_role(&self, role: &str, field: &str) -> Result<(), MembershipError> {
        if self.roles.iter().any(|r| r == role) {
            Ok(())
        } else {
            Err(MembershipError::invalid(
                "unknown_role",
                field,
                format!("`{role}` is not a role of this org's product (known: {})", self.roles.join(", ")),
            ))
        }
    }

    /// Checks a seat tier name.
    pub fn check_tier(&self, tier: &str, field: &str) -> Result<(), MembershipError> {
        if self.seat_tiers.is_empty() {
            return Err(MembershipError::invalid("no_seat_tiers", field, "this org's product has no seat tiers"));
        }
        if self.seat_tiers.iter().any(|t| t == tier) {
            Ok(())
        } else {
            Err(MembershipError::invalid(
                "unknown_seat_tier",
                field,
                format!("`{tier}` is not a seat tier of this org's product (known: {})", self.seat_tiers.join(", ")),
            ))
        }
    }
}

/// Orgs' products, from policy, cached.
#[derive(Clone)]
pub struct OrgCatalog {
    policy: PolicyClient,
    cache: Arc<Mutex<HashMap<String, Arc<OrgProduct>>>>,
}

impl std::fmt::Debug for OrgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrgCatalog")
    }
}

impl OrgCatalog {
    /// Asking `policy`.
    pub fn new(policy: PolicyClient) -> Self {
        Self { policy, cache: Arc::default() }
    }

    /// The policy client (for decisions).
    pub fn policy(&self) -> PolicyClient {
        self.policy.clone()
    }

    /// The product of `org_id`.
    pub async fn product(&self, org_id: &str) -> Result<Arc<OrgProduct>, MembershipError> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(org_id) {
            return Ok(hit.clone());
        }
        if org_id.is_empty() {
            return Err(MembershipError::invalid("org_required", "org_id", "org_id is required"));
        }
        let mut policy = self.policy.clone();
        let org = retry_unavailable(RetryPolicy::default(), || {
            let mut p = policy.clone();
            let id = org_id.to_string();
            async move { p.get_org(pb::GetOrgRequest { id }).await }
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => MembershipError::NotFound { what: "org", id: org_id.to_string() },
            _ => MembershipError::from_policy(s),
        })?
        .into_inner();
        let product = policy
            .get_product(pb::GetProductRequest { kind: org.product })
            .await
            .map_err(MembershipError::from_policy)?
            .into_inner();
        let found =
            Arc::new(OrgProduct { org_id: org.id.clone(), roles: product.roles, seat_tiers: product.seat_tiers });
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(org.id, found.clone());
        Ok(found)
    }

    /// Whether the org uses advanced group mapping now (for the note on manual
    /// changes). `None` when policy cannot say; a manual change never fails for it.
    pub async fn uses_group_mapping(&self, org_id: &str) -> Option<(bool, i32)> {
        let mut policy = self.policy.clone();
        let s = policy.get_settings(pb::GetSettingsRequest { org_id: org_id.to_string() }).await.ok()?.into_inner();
        Some((s.advanced_group_mapping, s.mode))
    }
}
