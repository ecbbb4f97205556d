//! Directories: kinds, states, brake settings, and the checks on what a caller may
//! store (names, connector config with secrets by reference only).

use serde_json::Value;

use super::brake::Brake;

/// A directory's kind: a line of the connector registry (`crate::registry`).
pub use crate::registry::Kind;

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
        if kind.is_pull() { Authority::Authoritative } else { Authority::ProvisioningOnly }
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
            && (!self.kind.is_pull() || self.proven_at.is_some())
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

/// Key fragments that name a secret, for a config no connector declares (SCIM).
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

fn secret_inline(here: &str) -> InputError {
    input_error(
        "secret_inline",
        "config_json",
        format!(
            "config_json.{here} names a secret: give it by reference, {{\"env\": \"VAR\"}} or {{\"file\": \"/path\"}}, never inline"
        ),
    )
}

/// Every key naming a secret holds a reference.
fn check_secrets(path: &str, v: &Value) -> Result<(), InputError> {
    if let Value::Object(m) = v {
        for (k, child) in m {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if names_secret(k) {
                if !is_reference(child) {
                    return Err(secret_inline(&here));
                }
            } else {
                check_secrets(&here, child)?;
            }
        }
    }
    Ok(())
}

/// Every declared secret field (a dotted path) that is present holds a reference.
fn check_declared_secrets(v: &Value, fields: &[&str]) -> Result<(), InputError> {
    for field in fields {
        let value = field.split('.').try_fold(v, |at, key| at.get(key));
        if value.is_some_and(|value| !is_reference(value)) {
            return Err(secret_inline(field));
        }
    }
    Ok(())
}

/// Checks connector config: empty (stored as `{}`) or a JSON object whose secrets are
/// references. Returns the normalized text to store. The secrets of a pull kind are the
/// fields its connector declares (so Google's `token_url`, a URL, is not one); its own
/// config parsing then refuses any key it does not know. A SCIM config has no parser
/// behind it, so there every key that names a secret must be a reference.
pub fn clean_config(kind: Kind, raw: &str) -> Result<String, InputError> {
    if raw.trim().is_empty() {
        return Ok("{}".into());
    }
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| input_error("config_not_json", "config_json", format!("config_json is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(input_error("config_not_object", "config_json", "config_json must be a JSON object"));
    }
    match kind.secret_fields() {
        Some(fields) => check_declared_secrets(&v, fields)?,
        None => check_secrets("", &v)?,
    }
    Ok(v.to_string())
}

/// Checks a sync interval for the kind: SCIM directories are pushed to, so they take none.
pub fn check_interval(kind: Kind, secs: u32) -> Result<(), InputError> {
    if kind == Kind::SCIM && secs != 0 {
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

    fn kind(name: &str) -> Kind {
        Kind::from_name(name).unwrap()
    }

    #[test]
    fn secrets_must_be_references() {
        assert_eq!(clean_config(kind("okta"), "").unwrap(), "{}");
        let okta = r#"{"org_url":"https://acme.okta.com","auth":{"type":"api_token","token":{"env":"OKTA_TOKEN"}}}"#;
        assert!(clean_config(kind("okta"), okta).is_ok());
        let inline = r#"{"org_url":"https://acme.okta.com","auth":{"type":"api_token","token":"00abc"}}"#;
        let err = clean_config(kind("okta"), inline).unwrap_err();
        assert_eq!(err.rule, "secret_inline");
        assert!(err.message.contains("auth.token"), "{}", err.message);
        assert!(!err.message.contains("00abc"));
        let key = r#"{"auth":{"type":"private_key_jwt","client_id":"c","private_key":"-----BEGIN"}}"#;
        assert_eq!(clean_config(kind("okta"), key).unwrap_err().rule, "secret_inline");
        let entra = r#"{"tenant_id":"t","client_id":"c","credential":{"type":"client_secret","secret":"hunter2"}}"#;
        let err = clean_config(kind("entra"), entra).unwrap_err();
        assert!(err.message.contains("credential.secret") && !err.message.contains("hunter2"), "{}", err.message);
        let cert = r#"{"credential":{"type":"certificate","private_key":"-----BEGIN","thumbprint":"ab"}}"#;
        assert_eq!(clean_config(kind("entra"), cert).unwrap_err().rule, "secret_inline");
        let google = r#"{"service_account_key":"{\"private_key\":\"x\"}","admin_email":"a@b.c"}"#;
        assert_eq!(clean_config(kind("google"), google).unwrap_err().rule, "secret_inline");
        // A SCIM config has no connector to declare its secrets: names decide.
        let err = clean_config(Kind::SCIM, r#"{"auth":{"client_secret":"hunter2"}}"#).unwrap_err();
        assert_eq!(err.rule, "secret_inline");
        assert!(err.message.contains("auth.client_secret"), "{}", err.message);
        assert_eq!(clean_config(kind("okta"), "[1]").unwrap_err().rule, "config_not_object");
        assert_eq!(clean_config(kind("okta"), "{").unwrap_err().rule, "config_not_json");
    }

    #[test]
    fn only_declared_fields_are_secrets() {
        // Google's documented token_url is a URL: given inline, as it must be.
        let google = r#"{"service_account_key":{"file":"/run/secrets/key.json"},"admin_email":"a@b.c","token_url":"https://oauth2.googleapis.com/token"}"#;
        let stored = clean_config(kind("google"), google).unwrap();
        assert!(stored.contains("\"token_url\":\"https://oauth2.googleapis.com/token\""), "{stored}");
        // Entra's token_scope names no secret either.
        let entra = r#"{"tenant_id":"t","client_id":"c","token_scope":"https://graph.microsoft.us/.default","credential":{"type":"client_secret","secret":{"env":"S"}}}"#;
        assert!(clean_config(kind("entra"), entra).is_ok());
    }

    /// The dotted paths under `v` whose value is a secret reference.
    fn reference_paths(path: &str, v: &Value, out: &mut Vec<String>) {
        if is_reference(v) {
            out.push(path.to_string());
        } else if let Value::Object(m) = v {
            for (k, child) in m {
                reference_paths(&if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, child, out);
            }
        }
    }

    #[test]
    fn every_secret_a_connector_reads_is_declared() {
        use muster_connector::SecretRef;
        let r = || SecretRef::Env("X".into());
        let configs: Vec<(Kind, Value)> = vec![
            (
                kind("okta"),
                serde_json::to_value(muster_connector_okta::OktaConfig {
                    org_url: "https://o".into(),
                    auth: muster_connector_okta::OktaAuth::ApiToken { token: r() },
                    app_id: None,
                    page_size: 1,
                    log_retention_days: 1,
                    http: Default::default(),
                })
                .unwrap(),
            ),
            (
                kind("okta"),
                serde_json::to_value(muster_connector_okta::OktaConfig {
                    org_url: "https://o".into(),
                    auth: muster_connector_okta::OktaAuth::PrivateKeyJwt {
                        client_id: "c".into(),
                        private_key: r(),
                        key_id: None,
                        scopes: None,
                    },
                    app_id: None,
                    page_size: 1,
                    log_retention_days: 1,
                    http: Default::default(),
                })
                .unwrap(),
            ),
            (
                kind("entra"),
                serde_json::to_value(muster_connector_entra::EntraConfig {
                    tenant_id: "t".into(),
                    client_id: "c".into(),
                    credential: muster_connector_entra::EntraCredential::ClientSecret { secret: r() },
                    authority: "https://a".into(),
                    graph_url: "https://g".into(),
                    token_scope: None,
                    scope: Default::default(),
                    http: Default::default(),
                })
                .unwrap(),
            ),
            (
                kind("entra"),
                serde_json::to_value(muster_connector_entra::EntraConfig {
                    tenant_id: "t".into(),
                    client_id: "c".into(),
                    credential: muster_connector_entra::EntraCredential::Certificate {
                        private_key: r(),
                        thumbprint: "ab".into(),
                    },
                    authority: "https://a".into(),
                    graph_url: "https://g".into(),
                    token_scope: None,
                    scope: Default::default(),
                    http: Default::default(),
                })
                .unwrap(),
            ),
            (
                kind("google"),
                serde_json::to_value(muster_connector_google::GoogleConfig {
                    service_account_key: r(),
                    admin_email: "a@b.c".into(),
                    customer: "my_customer".into(),
                    scope: Default::default(),
                    api_url: "https://api".into(),
                    token_url: Some("https://t".into()),
                    http: Default::default(),
                })
                .unwrap(),
            ),
        ];
        for (kind, config) in configs {
            let mut found = Vec::new();
            reference_paths("", &config, &mut found);
            assert!(!found.is_empty());
            for path in found {
                assert!(
                    kind.secret_fields().unwrap_or_default().contains(&path.as_str()),
                    "{} does not declare {path}",
                    kind.name()
                );
            }
        }
    }

    #[test]
    fn names_and_intervals() {
        assert_eq!(clean_name("  Okta prod ").unwrap(), "Okta prod");
        assert!(clean_name(" ").is_err());
        assert!(check_interval(Kind::SCIM, 0).is_ok());
        assert_eq!(check_interval(Kind::SCIM, 300).unwrap_err().rule, "interval_not_for_scim");
        assert_eq!(check_interval(kind("okta"), 5).unwrap_err().rule, "interval_too_short");
        assert!(check_interval(kind("okta"), 900).is_ok());
    }
}
