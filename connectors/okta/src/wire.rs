//! Okta's wire shapes, private to this crate. Fields follow the Okta
//! Management API reference (Users, Groups, Applications, System Log).

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OktaError {
    #[serde(default)]
    pub error_code: String,
    #[serde(default)]
    pub error_summary: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Embedded {
    pub user: Option<Value>,
    pub group: Option<Value>,
}

/// An app user (`GET /api/v1/apps/{appId}/users?expand=user`): `scope` is
/// `USER` (direct) or `GROUP`; the Okta user is in `_embedded.user`.
#[derive(Debug, Deserialize)]
pub(crate) struct AppUser {
    pub id: String,
    #[serde(default)]
    pub scope: String,
    #[serde(rename = "_embedded")]
    pub embedded: Option<Embedded>,
}

/// An app group (`GET /api/v1/apps/{appId}/groups?expand=group`).
#[derive(Debug, Deserialize)]
pub(crate) struct AppGroup {
    pub id: String,
    #[serde(rename = "_embedded")]
    pub embedded: Option<Embedded>,
}

/// A System Log event (`GET /api/v1/logs`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogEvent {
    pub uuid: String,
    pub event_type: String,
    #[serde(default)]
    pub target: Option<Vec<LogTarget>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogTarget {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}
