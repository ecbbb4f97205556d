//! Rules of pull directories (Okta, Entra, Google): how a connector's normalized
//! user becomes a mirror row, when a row changed, when the next pull is due, and
//! how long a failed pull waits before it is tried again. Pure, so they are tested
//! without a database or an IdP.

use std::time::Duration;

use muster_connector::{Group, User};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The mirror id of an IdP object: the directory id and the IdP's immutable id, so
/// two directories reading one tenant never share a row, and a page can name rows
/// (and memberships) without first looking up an id.
pub fn mirror_id(directory: &str, idp_id: &str) -> String {
    format!("{directory}:{idp_id}")
}

/// The attributes a pulled user is stored with: the SCIM-shaped core the rest of
/// directory-sync reads (emails, name, displayName), and the vendor object as received.
pub fn user_attributes(u: &User) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("userName".into(), Value::String(u.user_name.clone()));
    if let Some(d) = u.display_name.as_ref().filter(|d| !d.trim().is_empty()) {
        m.insert("displayName".into(), Value::String(d.clone()));
    }
    let mut name = Map::new();
    if let Some(g) = &u.given_name {
        name.insert("givenName".into(), Value::String(g.clone()));
    }
    if let Some(f) = &u.family_name {
        name.insert("familyName".into(), Value::String(f.clone()));
    }
    if !name.is_empty() {
        m.insert("name".into(), Value::Object(name));
    }
    if let Some(e) = u.email.as_ref().filter(|e| !e.trim().is_empty()) {
        m.insert("emails".into(), json!([{ "value": e, "primary": true }]));
    }
    m.insert("active".into(), Value::Bool(u.active));
    m.insert("assignment".into(), serde_json::to_value(u.assignment).unwrap_or(Value::Null));
    m.insert("raw".into(), u.raw.clone());
    m
}

/// The attributes a pulled group is stored with.
pub fn group_attributes(g: &Group) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(d) = &g.description {
        m.insert("description".into(), Value::String(d.clone()));
    }
    m.insert("raw".into(), g.raw.clone());
    m
}

fn hash_json<T: serde::Serialize>(v: &T) -> String {
    // Serializing our own model cannot fail; an empty hash would only force a rewrite.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// A hash of everything the connector said about a user: equal hashes mean the row
/// needs no write (only the listing's generation stamp).
pub fn user_hash(u: &User) -> String {
    hash_json(u)
}

/// A hash of everything the connector said about a group.
pub fn group_hash(g: &Group) -> String {
    hash_json(g)
}

/// When a pull directory is pulled: its interval (the service default when it has
/// none), unless the service overrides every interval (tests, demos).
pub fn pull_interval(directory_secs: u32, default: Duration, override_every: Option<Duration>) -> Duration {
    match override_every {
        Some(every) => every,
        None if directory_secs == 0 => default,
        None => Duration::from_secs(u64::from(directory_secs)),
    }
}

/// How long a failed pull waits before the next attempt: doubling from `min` with
/// each consecutive failure, never longer than `max` nor than the regular interval
/// (a failing directory is tried at least as often as a healthy one).
pub fn retry_delay(failures: u32, min: Duration, max: Duration, interval: Duration) -> Duration {
    let cap = max.min(interval).max(min);
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_connector::Assignment;

    fn user() -> User {
        User {
            id: "00u1".into(),
            user_name: "ann@acme.io".into(),
            email: Some("Ann@Acme.io".into()),
            given_name: Some("Ann".into()),
            family_name: Some("B".into()),
            display_name: None,
            active: true,
            assignment: Assignment::Direct,
            raw: json!({"id": "00u1"}),
        }
    }

    #[test]
    fn attributes_read_like_scim() {
        let a = user_attributes(&user());
        assert_eq!(crate::domain::mirror::email_of("ann@acme.io", &a).as_deref(), Some("ann@acme.io"));
        assert_eq!(crate::domain::mirror::display_name_of("ann@acme.io", &a), "Ann B");
        assert_eq!(a["raw"], json!({"id": "00u1"}));
    }

    #[test]
    fn hashes_change_with_content_only() {
        let a = user();
        let mut b = user();
        assert_eq!(user_hash(&a), user_hash(&b));
        b.active = false;
        assert_ne!(user_hash(&a), user_hash(&b));
    }

    #[test]
    fn ids_are_scoped_by_directory() {
        assert_ne!(mirror_id("d1", "00u1"), mirror_id("d2", "00u1"));
    }

    #[test]
    fn intervals_and_retries() {
        let default = Duration::from_secs(900);
        assert_eq!(pull_interval(0, default, None), default);
        assert_eq!(pull_interval(120, default, None), Duration::from_secs(120));
        assert_eq!(pull_interval(120, default, Some(Duration::from_millis(50))), Duration::from_millis(50));
        let (min, max, every) = (Duration::from_secs(1), Duration::from_secs(30), Duration::from_secs(600));
        assert_eq!(retry_delay(1, min, max, every), Duration::from_secs(1));
        assert_eq!(retry_delay(2, min, max, every), Duration::from_secs(2));
        assert_eq!(retry_delay(4, min, max, every), Duration::from_secs(8));
        assert_eq!(retry_delay(40, min, max, every), max);
        assert_eq!(retry_delay(40, min, max, Duration::from_secs(5)), Duration::from_secs(5));
    }
}
