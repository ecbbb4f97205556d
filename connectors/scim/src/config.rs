//! Router configuration.

use serde::Deserialize;

/// How the SCIM router behaves. Deserializable so directory-sync can embed it
/// in its typed config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScimConfig {
    /// The absolute URL the router is reachable at, used for `Location` and
    /// `meta.location`. `{directory_id}` is replaced by the directory the
    /// request resolved to, e.g. `https://muster.example.com/scim/v2/{directory_id}`.
    pub base_url: String,
    /// The name of the path parameter that carries the directory id when the
    /// router is nested under a path such as `/scim/v2/{directory_id}`. When
    /// the request has it, it must name the token's directory (else 404);
    /// when it does not, the token alone picks the directory.
    pub directory_path_param: String,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Most resources returned in one page; a larger `count` is clamped to
    /// it (RFC 7644 §3.4.2.4). Advertised as `filter.maxResults`.
    pub max_results: usize,
    /// Page size when the request gives no `count`.
    pub default_count: usize,
    /// Schema URNs accepted in `schemas` (and ignored as attribute keys)
    /// besides the ones served. By default Microsoft Entra's
    /// `http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group`.
    pub tolerated_schemas: Vec<String>,
}

impl Default for ScimConfig {
    fn default() -> Self {
        ScimConfig {
            base_url: "http://localhost/scim/v2/{directory_id}".into(),
            directory_path_param: "directory_id".into(),
            max_body_bytes: 4 * 1024 * 1024,
            max_results: 1000,
            default_count: 100,
            tolerated_schemas: vec![crate::schema::ENTRA_ADSCIM_GROUP_URN.to_string()],
        }
    }
}

impl ScimConfig {
    /// The defaults with this base URL.
    pub fn with_base_url(base_url: impl Into<String>) -> Self {
        ScimConfig { base_url: base_url.into(), ..Default::default() }
    }

    /// The base URL for one directory, without a trailing slash.
    pub fn base_url_for(&self, directory: &str) -> String {
        self.base_url.replace("{directory_id}", directory).trim_end_matches('/').to_string()
    }
}
