//! Policy's use cases: each checks its input against the rules, then reads or writes
//! through the store. The gRPC layer only translates to and from these.

use std::sync::Arc;

use crate::domain::catalog::{Catalog, Product};
use crate::domain::decision::{Decision, DecisionEngine, Subject, Trigger};
use crate::domain::org::{Org, ParentKind, ParentOrg, ProductKind, clean_name};
use crate::domain::settings::{SettingsData, StoredSettings, Violation, validate};
use crate::error::PolicyError;
use crate::store::{Page, PolicyStore};

/// Most subjects one Decide call takes.
pub const MAX_DECIDE_BATCH: usize = 10_000;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Turns a requested page size into one we serve.
pub fn page_size(requested: i32) -> Result<usize, PolicyError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(PolicyError::invalid("page_size_negative", "page_size", "page_size must not be negative")),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

fn name(field: &str, raw: &str) -> Result<String, PolicyError> {
    clean_name(raw).ok_or_else(|| {
        PolicyError::invalid("name_invalid", field, "name must be 1 to 200 characters with no control characters")
    })
}

fn after(token: &str) -> Option<String> {
    (!token.is_empty()).then(|| token.to_string())
}

/// The policy application.
pub struct Policy<S> {
    store: Arc<S>,
    catalog: Arc<Catalog>,
}

impl<S> Clone for Policy<S> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), catalog: self.catalog.clone() }
    }
}

impl<S: PolicyStore> Policy<S> {
    /// Policy over `store` with `catalog`.
    pub fn new(store: S, catalog: Catalog) -> Self {
        Self { store: Arc::new(store), catalog: Arc::new(catalog) }
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Creates a parent org.
    pub async fn create_parent(&self, raw_name: &str, kind: ParentKind) -> Result<ParentOrg, PolicyError> {
        self.store.create_parent(name("name", raw_name)?, kind).await
    }

    /// Reads a parent org.
    pub async fn get_parent(&self, id: &str) -> Result<ParentOrg, PolicyError> {
        self.store.get_parent(id).await
    }

    /// Lists parent orgs.
    pub async fn list_parents(&self, size: i32, token: &str) -> Result<Page<ParentOrg>, PolicyError> {
        self.store.list_parents(after(token), page_size(size)?).await
    }

    /// Renames a parent org.
    pub async fn rename_parent(&self, id: &str, raw_name: &str) -> Result<ParentOrg, PolicyError> {
        self.store.rename_parent(id, name("name", raw_name)?).await
    }

    /// Deletes a parent org without orgs.
    pub async fn delete_parent(&self, id: &str) -> Result<(), PolicyError> {
        self.store.delete_parent(id).await
    }

    /// Creates an org, if its product may live under the parent's kind.
    pub async fn create_org(&self, parent_id: &str, raw_name: &str, product: ProductKind) -> Result<Org, PolicyError> {
        let org_name = name("name", raw_name)?;
        let parent = self.store.get_parent(parent_id).await?;
        if !parent.kind.may_hold(product) {
            return Err(PolicyError::FailedPrecondition {
                rule: "product_not_allowed_for_parent",
                message: format!("a {} parent cannot hold a {} org", parent.kind, product),
            });
        }
        self.store.create_org(parent_id, org_name, product).await
    }

    /// Reads an org.
    pub async fn get_org(&self, id: &str) -> Result<Org, PolicyError> {
        self.store.get_org(id).await
    }

    /// Lists orgs.
    pub async fn list_orgs(&self, parent_id: &str, size: i32, token: &str) -> Result<Page<Org>, PolicyError> {
        let parent = (!parent_id.is_empty()).then(|| parent_id.to_string());
        self.store.list_orgs(parent, after(token), page_size(size)?).await
    }

    /// Renames an org.
    pub async fn rename_org(&self, id: &str, raw_name: &str) -> Result<Org, PolicyError> {
        self.store.rename_org(id, name("name", raw_name)?).await
    }

    /// Deletes an org.
    pub async fn delete_org(&self, id: &str) -> Result<(), PolicyError> {
        self.store.delete_org(id).await
    }

    /// Reads an org's settings.
    pub async fn get_settings(&self, org_id: &str) -> Result<StoredSettings, PolicyError> {
        self.store.get_settings(org_id).await
    }

    async fn org_context(&self, org_id: &str) -> Result<(Org, ParentKind, &Product), PolicyError> {
        let org = self.store.get_org(org_id).await?;
        let parent = self.store.get_parent(&org.parent_id).await?;
        let product = self.catalog.product(org.product);
        Ok((org, parent.kind, product))
    }

    /// Every rule `data` breaks for the org.
    pub async fn validate_settings(&self, org_id: &str, data: &SettingsData) -> Result<Vec<Violation>, PolicyError> {
        let (_, parent, product) = self.org_context(org_id).await?;
        Ok(validate(data, product, parent))
    }

    /// Saves settings after validating them; the caller names the version it read.
    pub async fn update_settings(
        &self,
        org_id: &str,
        expected_version: i64,
        data: SettingsData,
        actor: String,
    ) -> Result<StoredSettings, PolicyError> {
        if expected_version < 0 {
            return Err(PolicyError::invalid(
                "version_negative",
                "expected_version",
                "expected_version must not be negative",
            ));
        }
        let violations = self.validate_settings(org_id, &data).await?;
        if !violations.is_empty() {
            return Err(PolicyError::InvalidSettings(violations));
        }
        let saved = self.store.save_settings(org_id, expected_version, data, actor.clone()).await?;
        tracing::info!(org = org_id, version = saved.version, actor = %actor, mode = saved.data.mode.name(), "settings saved");
        Ok(saved)
    }

    /// Decides for a batch of subjects, with the stored settings or `proposed` ones.
    /// Returns the decisions in subject order and the settings version used (0 for proposed).
    pub async fn decide(
        &self,
        org_id: &str,
        trigger: Trigger,
        subjects: &[Subject],
        proposed: Option<SettingsData>,
    ) -> Result<(Vec<Decision>, i64), PolicyError> {
        if subjects.len() > MAX_DECIDE_BATCH {
            return Err(PolicyError::invalid(
                "batch_too_large",
                "subjects",
                format!("at most {MAX_DECIDE_BATCH} subjects per call, got {}", subjects.len()),
            ));
        }
        let (_, parent, product) = self.org_context(org_id).await?;
        let (settings, version) = match proposed {
            Some(data) => {
                let violations = validate(&data, product, parent);
                if !violations.is_empty() {
                    return Err(PolicyError::InvalidSettings(violations));
                }
                (data, 0)
            }
            None => {
                let stored = self.store.get_settings(org_id).await?;
                (stored.data, stored.version)
            }
        };
        let engine = DecisionEngine::new(product, &settings);
        Ok((subjects.iter().map(|s| engine.decide(trigger, s)).collect(), version))
    }
}
