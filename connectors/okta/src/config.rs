//! Configuration of an Okta directory, as directory-sync stores it.

use muster_connector::{HttpSettings, SecretRef};
use serde::{Deserialize, Serialize};

/// The config fields that hold secrets (dotted paths): directory-sync refuses
/// an inline value there; every other field may be given as it is.
pub const SECRET_FIELDS: &[&str] = &["auth.token", "auth.private_key"];

/// One Okta org to pull from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaConfig {
    /// `https://acme.okta.com` (or a custom domain, or a proxy in front of
    /// the org). Its path is kept: API paths are appended to it.
    pub org_url: String,
    pub auth: OktaAuth,
    /// Pull only the users and groups assigned to this app (`0oa…`); the
    /// whole org when absent.
    #[serde(default)]
    pub app_id: Option<String>,
    /// `limit` of list requests (Okta caps users at 200 per page).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Older System Log positions than this are not trusted (Okta keeps 90 days).
    #[serde(default = "default_log_retention_days")]
    pub log_retention_days: u32,
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_page_size() -> u32 {
    200
}

fn default_log_retention_days() -> u32 {
    90
}

/// How Muster authenticates to Okta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OktaAuth {
    /// An API token (`Authorization: SSWS …`), created by a read-only admin.
    ApiToken { token: SecretRef },
    /// An OAuth 2.0 service app: client credentials with `private_key_jwt`.
    PrivateKeyJwt {
        client_id: String,
        /// PEM RSA private key whose public half is registered on the app.
        private_key: SecretRef,
        /// `kid` of the registered key, when the app has several.
        #[serde(default)]
        key_id: Option<String>,
        /// Granted scopes to request; defaults to [`OKTA_SCOPES`].
        #[serde(default)]
        scopes: Option<Vec<String>>,
    },
}

/// The read-only scopes the service app needs.
pub const OKTA_SCOPES: [&str; 4] = ["okta.users.read", "okta.groups.read", "okta.apps.read", "okta.logs.read"];
