//! Secrets by reference, and a value type that never reaches a log.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConnectorError;

/// A secret value. `Debug` and `Display` print `[redacted]`; only
/// [`Secret::expose`] gives the text, at the one place it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret lives: a file (`{ file = "/run/secrets/okta" }`) or an
/// environment variable (`{ env = "OKTA_TOKEN" }`). Configuration stores the
/// reference, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

impl SecretRef {
    /// Reads the secret now. A file's trailing newline is dropped.
    pub fn resolve(&self) -> Result<Secret, ConnectorError> {
        match self {
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| ConnectorError::Secret { reference: self.to_string(), reason: e.to_string() }),
            Self::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|e| ConnectorError::Secret { reference: self.to_string(), reason: e.to_string() }),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reads_file_reference_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let r: SecretRef = serde_json::from_str(&format!(r#"{{"file": {:?}}}"#, path)).unwrap();
        assert_eq!(r.resolve().unwrap().expose(), "abc");
        let missing = SecretRef::Env("MUSTER_TEST_SURELY_UNSET_VAR".into());
        let err = missing.resolve().unwrap_err().to_string();
        assert!(err.contains("MUSTER_TEST_SURELY_UNSET_VAR"), "{err}");
    }
}
