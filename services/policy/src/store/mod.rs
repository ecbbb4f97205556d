//! Where policy keeps its data: the [`PolicyStore`] trait, and its diesel
//! implementation over SQLite or PostgreSQL.

mod diesel_store;
pub mod schema;

pub use diesel_store::DieselPolicyStore;

use async_trait::async_trait;

use crate::domain::org::{Org, ParentKind, ParentOrg, ProductKind};
use crate::domain::settings::{SettingsData, StoredSettings};
use crate::error::PolicyError;

/// A page of results and where the next one starts.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// This page.
    pub items: Vec<T>,
    /// The last id of this page when more follow.
    pub next_after: Option<String>,
}

/// Policy's storage. Every method is one atomic operation.
#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Creates a parent org.
    async fn create_parent(&self, name: String, kind: ParentKind) -> Result<ParentOrg, PolicyError>;
    /// Reads a parent org (NotFound if absent).
    async fn get_parent(&self, id: &str) -> Result<ParentOrg, PolicyError>;
    /// Parent orgs with ids after `after`, in id (creation) order.
    async fn list_parents(&self, after: Option<String>, limit: usize) -> Result<Page<ParentOrg>, PolicyError>;
    /// Renames a parent org.
    async fn rename_parent(&self, id: &str, name: String) -> Result<ParentOrg, PolicyError>;
    /// Deletes a parent org; FailedPrecondition `parent_has_orgs` while it has orgs.
    async fn delete_parent(&self, id: &str) -> Result<(), PolicyError>;

    /// Creates an org under an existing parent (the caller checked the product may go there).
    async fn create_org(&self, parent_id: &str, name: String, product: ProductKind) -> Result<Org, PolicyError>;
    /// Reads an org.
    async fn get_org(&self, id: &str) -> Result<Org, PolicyError>;
    /// Orgs (of one parent when given) with ids after `after`, in id order.
    async fn list_orgs(
        &self,
        parent_id: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<Org>, PolicyError>;
    /// Renames an org.
    async fn rename_org(&self, id: &str, name: String) -> Result<Org, PolicyError>;
    /// Deletes an org and its settings (history stays).
    async fn delete_org(&self, id: &str) -> Result<(), PolicyError>;

    /// The org's settings; version 0 defaults if never saved.
    async fn get_settings(&self, org_id: &str) -> Result<StoredSettings, PolicyError>;
    /// Saves settings if the stored version is still `expected_version` (compare and
    /// set); VersionConflict otherwise. Records the version in the history.
    async fn save_settings(
        &self,
        org_id: &str,
        expected_version: i64,
        data: SettingsData,
        actor: String,
    ) -> Result<StoredSettings, PolicyError>;
}
