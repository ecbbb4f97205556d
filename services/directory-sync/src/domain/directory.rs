//! Directories: kinds, states, brake settings, and the checks on what a caller may
//! store (names, connector config with secrets by reference only).

use serde_json::Value;

use super::brake::Brake;

/// The kind of IdP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SCIM push.
    Scim,
    /// Okta API pull.
    Okta,
    /// Entra ID (Graph) pull.
    Entra,
    /// Google Workspace pull.
    Google,
}

impl Kind {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Scim => "scim",
            Kind::Okta => "okta",
            Kind::Entra => "entra",
            Kind::Google => "google",
        }
    }

    /// From a stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "scim" => Kind::Scim,
            "okta" => Kind::Okta,
            "entra" => Kind::Entra,
            "google" => Kind::Google,
            _ => return None,
        })
    }
}

/// Whether a directory reconciles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Reconciles as changes arrive.
    Active,
    /// Mirrors and queues, but does not reconcile.
    Paused,
    /// Being deleted: every user of its mirror counts as unassigned, so its members
    /// leave through a normal, brake-guarded run. Resuming cancels the deletion.
    Leaving,
}

impl State {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Paused => "paused",
            State::Leaving => "leaving",
        }
    }

    /// From a stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "active" => Some(State::Active),
            "paused" => Some(State::Paused),
            "leaving" => Some(State::Leaving),
            _ => None,
        }
    }
}

/// Whether a directory may remove people it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// It adds and updates people, and removes the people it itself deactivates or
    /// deletes; members it has never known are not its to remove. SCIM directories
    /// start so: a SCIM client pushes only what it is told to, so an absence proves nothing.
    ProvisioningOnly,
    /// SPEC §4: members who are not assigned users are removed. For a pull directory
    /// this takes effect once a full listing has completed (see [`Directory::removes_unknown`]).
    Authoritative,
}

impl Authority {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            Authority::ProvisioningOnly => "provisioning_only",
            Authority::Authoritative => "authoritative",
        }
    }

    /// From a stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "provisioning_only" => Some(Authority::ProvisioningOnly),
            "authoritative" => Some(Authority::Authoritative),
            _ => None,
        }
    }

    /// What a new directory of `kind` starts with.
    pub fn initial(kind: Kind) -> Self {
        if kind == Kind::Scim { Authority::ProvisioningOnly } else { Authority::Authoritative }
    }
}

/// A directory as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Directory {
    /// Id.
    pub id: String,
    /// Parent org id (in policy).
    pub parent_id: String,
    /// Kind.
    pub kind: Kind,
    /// Display name.
    pub display_name: String,
    /// Connector config (JSON object text).
    pub config_json: String,
    /// Seconds between scheduled pulls.
    pub sync_interval_secs: u32,
    /// The brake.
    pub brake: Brake,
    /// Active or paused.
    pub state: State,
    /// Last reconcile error ("" when the last attempt succeeded).
    pub last_error: String,
    /// Days the SCIM request log is kept; 0 = the log is off.
    pub scim_log_days: u32,
    /// Whether it may remove people it does not know.
    pub authority: Authority,
    /// Pull kinds: when a full listing first completed (none: never; its mirror is
    /// unproven, and it removes only people it knows as deactivated or deleted).
    pub proven_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl Directory {
    /// Whether its silence about a member counts: authoritative, and (for a pull
    /// kind) proven by a completed full listing. A leaving directory removes only its own.
    pub fn removes_unknown(&self) -> bool {
        self.state != State::Leaving
            && self.authority == Authority::Authoritative
            && (self.kind == Kind::Scim || self.proven_at.is_some())
    }
}

/// A rule a directory input breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    /// Rule name.
    pub rule: &'static str,
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn input_error(rule: &'static str, field: &'static str, message: impl Into<String>) -> InputError {
    InputError { rule, field, message: message.into() }
}

/// A display name: trimmed, 1 to 200 characters, no control characters.
pub fn clean_name(raw: &str) -> Result<String, InputError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(input_error(
            "name_invalid",
            "display_name",
            "display_name must be 1 to 200 characters with no control characters",
        ));
    }
    Ok(name.to_string())
}

/// Key fragments that name a secret. A value under such a key must be a reference.
const SECRET_WORDS: &[&str] = &["secret", "token", "password", "private_key", "privatekey", "api_key", "apikey"];

fn names_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// `{"env": "VAR"}` or `{"file": "/path"}`.
fn is_reference(v: &Value) -> bool {
    match v {
        Value::Object(m) if m.len() == 1 => {
            matches!(m.get("env"), Some(Value::String(s)) if !s.is_empty())
                || matches!(m.get("file"), Some(Value::String(s)) if !s.is_empty())
        }
        _ => false,
    }
}

fn check_secrets(path: &str, v: &Value) -> Result<(), InputError> {
    if let Value::Object(m) = v {
        for (k, child) in m {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if names_secret(k) {
                if !is_reference(child) {
                    return Err(input_error(
                        "secret_inline",
                        "config_json",
                        format!(
                            "config_json.{here} names a secret: give it by reference, {{\"env\": \"VAR\"}} or {{\"file\": \"/path\"}}, never inline"
                        ),
                    ));
                }
            } else {
                check_secrets(&here, child)?;
            }
        }
    }
    Ok(())
}

/// Checks connector config: empty (stored as `{}`) or a JSON object whose secrets are
/// references. Returns the normalized text to store.
pub fn clean_config(raw: &str) -> Result<String, InputError> {
    if raw.trim().is_empty() {
        return Ok("{}".into());
    }
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| input_error("config_not_json", "config_json", format!("config_json is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(input_error("config_not_object", "config_json", "config_json must be a JSON object"));
    }
    check_secrets("", &v)?;
    Ok(v.to_string())
}

/// Checks a sync interval for the kind: SCIM directories are pushed to, so they take none.
pub fn check_interval(kind: Kind, secs: u32) -> Result<(), InputError> {
    if kind == Kind::Scim && secs != 0 {
        return Err(input_error(
            "interval_not_for_scim",
            "sync_interval_seconds",
            "a SCIM directory is pushed to; it takes no sync interval",
        ));
    }
    if secs != 0 && secs < 60 {
        return Err(input_error(
            "interval_too_short",
            "sync_interval_seconds",
            "sync interval must be 0 or at least 60 seconds",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_must_be_references() {
        assert_eq!(clean_config("").unwrap(), "{}");
        assert!(clean_config(r#"{"domain":"acme.okta.com","api_token":{"env":"OKTA_TOKEN"}}"#).is_ok());
        assert!(clean_config(r#"{"auth":{"private_key":{"file":"/etc/key.pem"}}}"#).is_ok());
        let err = clean_config(r#"{"auth":{"client_secret":"hunter2"}}"#).unwrap_err();
        assert_eq!(err.rule, "secret_inline");
        assert!(err.message.contains("auth.client_secret"), "{}", err.message);
        assert!(!err.message.contains("hunter2"));
        assert_eq!(clean_config("[1]").unwrap_err().rule, "config_not_object");
        assert_eq!(clean_config("{").unwrap_err().rule, "config_not_json");
    }

    #[test]
    fn names_and_intervals() {
        assert_eq!(clean_name("  Okta prod ").unwrap(), "Okta prod");
        assert!(clean_name(" ").is_err());
        assert!(check_interval(Kind::Scim, 0).is_ok());
        assert_eq!(check_interval(Kind::Scim, 300).unwrap_err().rule, "interval_not_for_scim");
        assert_eq!(check_interval(Kind::Okta, 5).unwrap_err().rule, "interval_too_short");
        assert!(check_interval(Kind::Okta, 900).is_ok());
    }
}
