//! The SCIM request log's rules, pure: which directories may log and for how long,
//! which headers are kept, how secrets are stripped from bodies and queries, and how
//! bodies are capped so a large PATCH cannot bloat the table.

use serde_json::Value;

use super::directory::{InputError, Kind};

/// Longest retention an operator may ask for, in days.
pub const MAX_SCIM_LOG_DAYS: u32 = 90;

/// Largest stored body (request or response), in bytes; longer ones are cut and flagged.
pub const BODY_CAP: usize = 64 * 1024;

/// What a redacted value becomes.
pub const REDACTED: &str = "[redacted]";

/// Checks a retention: 0 (off) for every kind; 1 to [`MAX_SCIM_LOG_DAYS`] for SCIM
/// directories only (a pull directory receives no SCIM requests).
pub fn check_scim_log_days(kind: Kind, days: u32) -> Result<(), InputError> {
    if days == 0 {
        return Ok(());
    }
    if kind != Kind::SCIM {
        return Err(InputError {
            rule: "scim_log_not_for_pull",
            field: "scim_log_days",
            message: "only a SCIM directory receives SCIM requests to log".into(),
        });
    }
    if days > MAX_SCIM_LOG_DAYS {
        return Err(InputError {
            rule: "scim_log_days_out_of_range",
            field: "scim_log_days",
            message: format!("scim_log_days must be 0 (off) to {MAX_SCIM_LOG_DAYS}"),
        });
    }
    Ok(())
}

/// Whether a name (header, query parameter) names a credential.
fn names_credential(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "cookie"
        || n.contains("authorization")
        || n.contains("token")
        || n.contains("secret")
        || n.contains("password")
        || n.contains("api-key")
        || n.contains("api_key")
        || n.contains("apikey")
}

/// The request headers worth keeping: everything but Authorization, Cookie and any
/// header naming a token, secret, password or API key. Names lowercase; repeated
/// headers joined with ", ".
pub fn loggable_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if names_credential(&name) {
            continue;
        }
        let value = String::from_utf8_lossy(value).into_owned();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
    out
}

/// A path with query whose credential-like query parameters have their values replaced.
pub fn redact_path(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if names_credential(k) => format!("{k}={REDACTED}"),
            _ => p.to_string(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

fn is_password_name(s: &str) -> bool {
    // "password", any case, alone or schema-qualified (urn:...:User:password).
    let last = s.rsplit(':').next().unwrap_or(s);
    last.eq_ignore_ascii_case("password")
}

/// Replaces, at any depth, the value of every attribute named `password` (any case),
/// and the `value` of a SCIM PATCH operation whose `path` is `password`. True if it
/// replaced anything.
pub fn redact_json(v: &mut Value) -> bool {
    let mut changed = false;
    match v {
        Value::Object(m) => {
            let patch_of_password = m.get("path").and_then(Value::as_str).is_some_and(is_password_name);
            for (k, child) in m.iter_mut() {
                if k.eq_ignore_ascii_case("password") || (patch_of_password && k.eq_ignore_ascii_case("value")) {
                    *child = Value::String(REDACTED.into());
                    changed = true;
                } else {
                    changed |= redact_json(child);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= redact_json(item);
            }
        }
        _ => {}
    }
    changed
}

/// A body as stored: as sent, or, when it held a password, the JSON re-serialized with
/// passwords redacted; then cut to `cap` bytes (on a character boundary). Returns the
/// text and whether it was cut. A body that is not JSON but mentions a password is
/// replaced whole: it cannot be redacted safely.
pub fn capture_body(raw: &[u8], cap: usize) -> (String, bool) {
    if raw.is_empty() {
        return (String::new(), false);
    }
    let text = match serde_json::from_slice::<Value>(raw) {
        Ok(mut v) => {
            if redact_json(&mut v) {
                v.to_string()
            } else {
                String::from_utf8_lossy(raw).into_owned()
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(raw);
            if text.to_ascii_lowercase().contains("password") {
                format!("{REDACTED}: a body that is not JSON and mentions a password")
            } else {
                text.into_owned()
            }
        }
    };
    truncate(text, cap)
}

/// Cuts `text` to at most `cap` bytes on a character boundary; true if it was cut.
pub fn truncate(mut text: String, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut end = cap;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// The directory id of a SCIM path (`/scim/v2/{id}/...`), if it is one.
pub fn directory_of_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/scim/v2/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn passwords_are_redacted_at_any_depth_and_case() {
        let mut v = json!({
            "userName": "ann@acme.io",
            "password": "hunter2",
            "Password": "x",
            "nested": {"deeper": [{"PASSWORD": "y", "keep": 1}]},
            "Operations": [
                {"op": "replace", "path": "password", "value": "z"},
                {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:password", "value": "w"},
                {"op": "replace", "value": {"password": "v", "active": false}},
                {"op": "replace", "path": "active", "value": true}
            ]
        });
        assert!(redact_json(&mut v));
        let text = v.to_string();
        for secret in ["hunter2", "\"x\"", "\"y\"", "\"z\"", "\"w\"", "\"v\""] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(v["password"], REDACTED);
        assert_eq!(v["nested"]["deeper"][0]["keep"], 1);
        assert_eq!(v["Operations"][2]["value"]["active"], false);
        assert_eq!(v["Operations"][3]["value"], true);
        assert_eq!(v["userName"], "ann@acme.io");
    }

    #[test]
    fn bodies_are_captured_redacted_and_capped() {
        let (text, cut) = capture_body(br#"{"userName":"a","password":"hunter2"}"#, BODY_CAP);
        assert!(!cut);
        assert!(!text.contains("hunter2") && text.contains(REDACTED), "{text}");
        assert_eq!(capture_body(b"", BODY_CAP), (String::new(), false));
        let (text, _) = capture_body(b"password=hunter2", BODY_CAP);
        assert!(!text.contains("hunter2"));
        assert_eq!(capture_body(b"not json", BODY_CAP), ("not json".into(), false));
        // Without a password the body is kept byte for byte (key order, spacing).
        let raw = br#"{ "z": 1, "a": {"b": [true]} }"#;
        assert_eq!(capture_body(raw, BODY_CAP), (String::from_utf8_lossy(raw).into_owned(), false));

        let members: Vec<_> =
            (0..1000).map(|i| json!({"value": format!("member-{i:04}-{}", "x".repeat(80))})).collect();
        let big = json!({"Operations": [{"op": "add", "path": "members", "value": members}]}).to_string();
        let (text, cut) = capture_body(big.as_bytes(), BODY_CAP);
        assert!(cut);
        assert_eq!(text.len(), BODY_CAP);
        // Never cut inside a character.
        let (text, cut) = truncate("ééé".into(), 3);
        assert!(cut);
        assert_eq!(text, "é");
        assert_eq!(truncate("abc".into(), 3), ("abc".into(), false));
    }

    #[test]
    fn credentials_leave_headers_and_queries() {
        let headers: Vec<(&str, &[u8])> = vec![
            ("Authorization", b"Bearer mscim_abc"),
            ("cookie", b"s=1"),
            ("X-Api-Token", b"t"),
            ("x-client-secret", b"s"),
            ("Proxy-Authorization", b"Basic x"),
            ("Content-Type", b"application/scim+json"),
            ("accept", b"a"),
            ("Accept", b"b"),
        ];
        let kept = loggable_headers(headers);
        assert_eq!(
            kept,
            vec![("content-type".to_string(), "application/scim+json".to_string()), ("accept".into(), "a, b".into())]
        );
        assert_eq!(redact_path("/Users?filter=x&access_token=abc"), format!("/Users?filter=x&access_token={REDACTED}"));
        assert_eq!(redact_path("/Users"), "/Users");
    }

    #[test]
    fn retention_and_paths() {
        assert!(check_scim_log_days(Kind::SCIM, 0).is_ok());
        assert!(check_scim_log_days(Kind::SCIM, 7).is_ok());
        assert!(check_scim_log_days(Kind::from_name("okta").unwrap(), 0).is_ok());
        assert_eq!(check_scim_log_days(Kind::from_name("okta").unwrap(), 7).unwrap_err().rule, "scim_log_not_for_pull");
        assert_eq!(check_scim_log_days(Kind::SCIM, 91).unwrap_err().rule, "scim_log_days_out_of_range");
        assert_eq!(directory_of_path("/scim/v2/abc/Users/1"), Some("abc"));
        assert_eq!(directory_of_path("/scim/v2/abc"), Some("abc"));
        assert_eq!(directory_of_path("/scim/v2/"), None);
        assert_eq!(directory_of_path("/health"), None);
    }
}
