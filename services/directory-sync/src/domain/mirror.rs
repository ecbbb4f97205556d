//! What the mirror tells the rest of Muster about a person: the email membership
//! matches people by, the name it shows, and the keys that make applies idempotent.

use serde_json::{Map, Value};

fn value_of<'a>(m: &&'a Map<String, Value>) -> Option<&'a str> {
    m.get("value").and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// The email of a SCIM user: the primary email, else the `work` one, else the first,
/// else the userName when it looks like an email. Lowercased (emails match
/// case-insensitively everywhere in Muster).
pub fn email_of(user_name: &str, attributes: &Map<String, Value>) -> Option<String> {
    let emails: Vec<&Map<String, Value>> = attributes
        .get("emails")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let is_true = |v: Option<&Value>| match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let picked = emails
        .iter()
        .find(|m| is_true(m.get("primary")) && value_of(m).is_some())
        .or_else(|| {
            emails.iter().find(|m| {
                m.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("work"))
                    && value_of(m).is_some()
            })
        })
        .or_else(|| emails.iter().find(|m| value_of(m).is_some()))
        .and_then(value_of);
    match picked {
        Some(e) => Some(e.trim().to_lowercase()),
        None if user_name.contains('@') => Some(user_name.trim().to_lowercase()),
        None => None,
    }
}

/// The name to show: displayName, else "given family", else the userName.
pub fn display_name_of(user_name: &str, attributes: &Map<String, Value>) -> String {
    if let Some(d) = attributes.get("displayName").and_then(Value::as_str).filter(|s| !s.trim().is_empty()) {
        return d.trim().to_string();
    }
    let name = attributes.get("name").and_then(Value::as_object);
    let part = |k: &str| name.and_then(|n| n.get(k)).and_then(Value::as_str).unwrap_or("").trim().to_string();
    let full = format!("{} {}", part("givenName"), part("familyName")).trim().to_string();
    if full.is_empty() { user_name.to_string() } else { full }
}

/// The idempotency key of one Apply batch: a retried batch reuses it (and membership
/// answers the first result), a new run never does.
pub fn apply_key(run_id: &str, org_id: &str, phase: &str, batch: u64) -> String {
    format!("dsync:{run_id}:{org_id}:{phase}:{batch}")
}

/// The user reference of an org member who is not in the mirror.
pub fn member_ref(member_id: &str) -> String {
    format!("member:{member_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn email_prefers_primary_then_work_then_first_then_user_name() {
        let a = attrs(json!({"emails": [
            {"value": "Home@x.io", "type": "home"},
            {"value": "Work@X.io", "type": "work"},
            {"value": "Main@X.io", "primary": "True"}]}));
        assert_eq!(email_of("u", &a).as_deref(), Some("main@x.io"));
        let a =
            attrs(json!({"emails": [{"value": "home@x.io", "type": "home"}, {"value": "work@x.io", "type": "Work"}]}));
        assert_eq!(email_of("u", &a).as_deref(), Some("work@x.io"));
        let a = attrs(json!({"emails": [{"value": "home@x.io"}]}));
        assert_eq!(email_of("u", &a).as_deref(), Some("home@x.io"));
        assert_eq!(email_of("Ann@Acme.io", &Map::new()).as_deref(), Some("ann@acme.io"));
        assert_eq!(email_of("ann", &Map::new()), None);
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name_of("u", &attrs(json!({"displayName": "Ann B"}))), "Ann B");
        assert_eq!(display_name_of("u", &attrs(json!({"name": {"givenName": "Ann", "familyName": "B"}}))), "Ann B");
        assert_eq!(display_name_of("u", &Map::new()), "u");
    }

    #[test]
    fn keys_differ_per_batch_and_run() {
        assert_ne!(apply_key("r", "o", "apply", 1), apply_key("r", "o", "apply", 2));
        assert_ne!(apply_key("r", "o", "apply", 1), apply_key("r2", "o", "apply", 1));
        assert_eq!(apply_key("r", "o", "apply", 1), apply_key("r", "o", "apply", 1));
    }
}
