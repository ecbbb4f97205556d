//! Configuration of a Google Workspace directory, as directory-sync stores it.

use muster_connector::{HttpSettings, SecretRef};
use serde::{Deserialize, Serialize};

/// The config fields that hold secrets (dotted paths): directory-sync refuses
/// an inline value there; every other field (`token_url` included) may be
/// given as it is.
pub const SECRET_FIELDS: &[&str] = &["service_account_key"];

/// One Google Workspace customer to pull from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// The service account's JSON key file (`client_email`, `private_key`,
    /// `private_key_id`, `token_uri`), by reference.
    pub service_account_key: SecretRef,
    /// The administrator the service account impersonates (`sub` of the
    /// assertion). Needs the admin privileges to read users and groups.
    pub admin_email: String,
    /// `my_customer` (the admin's own account) or a customer id (`C0…`).
    #[serde(default = "default_customer")]
    pub customer: String,
    /// What to pull: the whole customer (default), some org units, or the
    /// members of some groups.
    #[serde(default)]
    pub scope: GoogleScope,
    /// The Admin SDK's base URL. Its path is kept: API paths are appended to it.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The token endpoint (a URL, not a secret); the key file's `token_uri`
    /// when absent.
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_customer() -> String {
    "my_customer".into()
}

fn default_api_url() -> String {
    "https://admin.googleapis.com".into()
}

/// Which users and groups are in the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GoogleScope {
    /// Every user and group of the customer.
    #[default]
    Customer,
    /// The users of these org units (and the org units below them), e.g.
    /// `["/Engineering"]`; every group of the customer, with the members
    /// that are in scope.
    OrgUnits { paths: Vec<String> },
    /// Only these groups (email or id), and their members, nested groups expanded.
    Groups { groups: Vec<String> },
}

/// The read-only scopes the service account's client id must be granted in
/// the Admin console (Security > API controls > Domain-wide delegation).
pub const GOOGLE_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
];

/// Google's token endpoint, when neither the config nor the key names one.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
