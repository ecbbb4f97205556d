//! Example Directory's wire types, private to the crate (the API reference is
//! the fake, `tests/fake/mod.rs`).

use serde::Deserialize;
use serde_json::Value;

/// Every list: `{"data": [...], "next_cursor": "…" | null}`.
#[derive(Debug, Deserialize)]
pub struct ListPage {
    pub data: Vec<Value>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `GET /v1/users` items. Names are absent for people who have none.
#[derive(Debug, Deserialize)]
pub struct ApiUser {
    pub id: String,
    pub login: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub family_name: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    /// `active`, `suspended` or `deprovisioned`.
    pub status: String,
}

/// `GET /v1/groups` items.
#[derive(Debug, Deserialize)]
pub struct ApiGroup {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `GET /v1/groups/{id}/members` items: `type` is `user`, or `guest` for an
/// account of another tenant, which `/v1/users` does not list.
#[derive(Debug, Deserialize)]
pub struct ApiMember {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Every error: `{"error": {"code": "…", "message": "…"}}`.
#[derive(Debug, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorBody,
}

#[derive(Debug, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}
