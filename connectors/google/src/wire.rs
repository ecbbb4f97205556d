//! Google's wire shapes, private to this crate.

use serde::Deserialize;
use serde_json::Value;

/// A service account's JSON key, as the Cloud console downloads it
/// (cloud.google.com/iam/docs/keys-create-delete: `type`, `project_id`,
/// `private_key_id`, `private_key`, `client_email`, `client_id`, `token_uri`, …).
#[derive(Deserialize)]
pub(crate) struct ServiceAccountKey {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub token_uri: Option<String>,
}

/// The JSON error body of Google APIs (developers.google.com/workspace/admin/directory/v1/limits,
/// cloud.google.com/apis/design/errors): `{"error": {"code", "message",
/// "errors": [{"domain", "reason", "message"}], "status"}}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorItem {
    #[serde(default)]
    pub reason: String,
}

impl ErrorBody {
    pub fn reason(&self) -> &str {
        self.error.errors.first().map(|e| e.reason.as_str()).unwrap_or("")
    }
}

/// One page of `users.list` (`{"kind", "etag", "users", "nextPageToken"}`;
/// `users` is left out when there are none).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsersPage {
    #[serde(default)]
    pub users: Vec<Value>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// One page of `groups.list`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupsPage {
    #[serde(default)]
    pub groups: Vec<Value>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// One page of `members.list`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MembersPage {
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// A group member: `type` is `USER`, `GROUP`, `CUSTOMER` (every user of the
/// customer) or `EXTERNAL`.
#[derive(Debug, Deserialize)]
pub(crate) struct Member {
    #[serde(default)]
    pub id: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// Fills in an empty page token as none (Google sends none on the last page).
pub(crate) fn token(t: Option<String>) -> Option<String> {
    t.filter(|t| !t.is_empty())
}
