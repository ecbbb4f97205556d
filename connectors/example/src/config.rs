//! Configuration of an Example Directory directory, as directory-sync stores it.

use muster_connector::{HttpSettings, SecretRef};
use serde::{Deserialize, Serialize};

/// The config fields that hold secrets (dotted paths): directory-sync refuses
/// an inline value there; every other field may be given as it is.
pub const SECRET_FIELDS: &[&str] = &["token"];

/// One Example Directory tenant to pull from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleConfig {
    /// The API's base URL (`https://acme.example-directory.test`, or a proxy
    /// in front of it). Its path is kept: API paths are appended to it.
    pub base_url: String,
    /// The API token, sent as `Authorization: Bearer …`.
    pub token: SecretRef,
    /// `limit` of list requests (the API answers at most 500 a page).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_page_size() -> u32 {
    200
}
