//! The gRPC face of policy: thin handlers that translate, call [`Policy`], and map errors.

use muster_proto::policy::v1 as pb;
use muster_proto::policy::v1::policy_service_server::PolicyService;
use tonic::{Request, Response, Status};

use crate::app::Policy;
use crate::convert;
use crate::store::PolicyStore;

/// Serves `muster.policy.v1.PolicyService`.
pub struct PolicyGrpc<S> {
    policy: Policy<S>,
}

impl<S: PolicyStore> PolicyGrpc<S> {
    /// Handlers over `policy`.
    pub fn new(policy: Policy<S>) -> Self {
        Self { policy }
    }
}

#[tonic::async_trait]
impl<S: PolicyStore> PolicyService for PolicyGrpc<S> {
    async fn create_parent_org(
        &self,
        r: Request<pb::CreateParentOrgRequest>,
    ) -> Result<Response<pb::ParentOrg>, Status> {
        let r = r.into_inner();
        let kind = convert::parent_kind(r.kind)?;
        Ok(Response::new(convert::parent_pb(self.policy.create_parent(&r.name, kind).await?)))
    }

    async fn get_parent_org(&self, r: Request<pb::GetParentOrgRequest>) -> Result<Response<pb::ParentOrg>, Status> {
        Ok(Response::new(convert::parent_pb(self.policy.get_parent(&r.into_inner().id).await?)))
    }

    async fn list_parent_orgs(
        &self,
        r: Request<pb::ListParentOrgsRequest>,
    ) -> Result<Response<pb::ListParentOrgsResponse>, Status> {
        let r = r.into_inner();
        let page = self.policy.list_parents(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListParentOrgsResponse {
            parent_orgs: page.items.into_iter().map(convert::parent_pb).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    async fn update_parent_org(
        &self,
        r: Request<pb::UpdateParentOrgRequest>,
    ) -> Result<Response<pb::ParentOrg>, Status> {
        let r = r.into_inner();
        Ok(Response::new(convert::parent_pb(self.policy.rename_parent(&r.id, &r.name).await?)))
    }

    async fn delete_parent_org(
        &self,
        r: Request<pb::DeleteParentOrgRequest>,
    ) -> Result<Response<pb::DeleteParentOrgResponse>, Status> {
        self.policy.delete_parent(&r.into_inner().id).await?;
        Ok(Response::new(pb::DeleteParentOrgResponse {}))
    }

    async fn create_org(&self, r: Request<pb::CreateOrgRequest>) -> Result<Response<pb::Org>, Status> {
        let r = r.into_inner();
        let product = convert::product_kind(r.product, "product")?;
        Ok(Response::new(convert::org_pb(self.policy.create_org(&r.parent_id, &r.name, product).await?)))
    }

    async fn get_org(&self, r: Request<pb::GetOrgRequest>) -> Result<Response<pb::Org>, Status> {
        Ok(Response::new(convert::org_pb(self.policy.get_org(&r.into_inner().id).await?)))
    }

    async fn list_orgs(&self, r: Request<pb::ListOrgsRequest>) -> Result<Response<pb::ListOrgsResponse>, Status> {
        let r = r.into_inner();
        let page = self.policy.list_orgs(&r.parent_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListOrgsResponse {
            orgs: page.items.into_iter().map(convert::org_pb).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    async fn update_org(&self, r: Request<pb::UpdateOrgRequest>) -> Result<Response<pb::Org>, Status> {
        let r = r.into_inner();
        Ok(Response::new(convert::org_pb(self.policy.rename_org(&r.id, &r.name).await?)))
    }

    async fn delete_org(&self, r: Request<pb::DeleteOrgRequest>) -> Result<Response<pb::DeleteOrgResponse>, Status> {
        self.policy.delete_org(&r.into_inner().id).await?;
        Ok(Response::new(pb::DeleteOrgResponse {}))
    }

    async fn list_products(
        &self,
        _r: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Ok(Response::new(pb::ListProductsResponse {
            products: self.policy.catalog().products().map(convert::product_pb).collect(),
        }))
    }

    async fn get_product(&self, r: Request<pb::GetProductRequest>) -> Result<Response<pb::Product>, Status> {
        let kind = convert::product_kind(r.into_inner().kind, "kind")?;
        Ok(Response::new(convert::product_pb(self.policy.catalog().product(kind))))
    }

    async fn get_settings(&self, r: Request<pb::GetSettingsRequest>) -> Result<Response<pb::Settings>, Status> {
        Ok(Response::new(convert::settings_pb(self.policy.get_settings(&r.into_inner().org_id).await?)))
    }

    async fn update_settings(&self, r: Request<pb::UpdateSettingsRequest>) -> Result<Response<pb::Settings>, Status> {
        let r = r.into_inner();
        let data = convert::settings_input(r.settings)?;
        let saved = self.policy.update_settings(&r.org_id, r.expected_version, data, convert::actor(r.actor)).await?;
        Ok(Response::new(convert::settings_pb(saved)))
    }

    async fn validate_settings(
        &self,
        r: Request<pb::ValidateSettingsRequest>,
    ) -> Result<Response<pb::ValidateSettingsResponse>, Status> {
        let r = r.into_inner();
        let data = convert::settings_input(r.settings)?;
        let violations = self.policy.validate_settings(&r.org_id, &data).await?;
        Ok(Response::new(pb::ValidateSettingsResponse {
            violations: violations.into_iter().map(convert::violation_pb).collect(),
        }))
    }

    async fn decide(&self, r: Request<pb::DecideRequest>) -> Result<Response<pb::DecideResponse>, Status> {
        let r = r.into_inner();
        let trigger = convert::trigger(r.trigger)?;
        let subjects = convert::subjects(r.subjects)?;
        let proposed = r.proposed_settings.map(|p| convert::settings_input(Some(p))).transpose()?;
        let (decisions, settings_version) = self.policy.decide(&r.org_id, trigger, &subjects, proposed).await?;
        Ok(Response::new(pb::DecideResponse {
            decisions: decisions.into_iter().map(convert::decision_pb).collect(),
            settings_version,
        }))
    }
}
