//! Typed configuration, layered: the struct's defaults, then an optional TOML file,
//! then `MUSTER_*` environment variables. Every struct denies unknown fields, so a
//! typo in a file or a variable fails start-up with the key named instead of being
//! silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The cause is the error's source, which error chains print after this.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A value has the wrong type or a key is unknown.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// An environment variable names no known key.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// A secret value: shown as `[redacted]` by `Debug` and `Display`, so that logging a
/// config or an error never leaks it. Read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call it only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Serialization only feeds the layered loader; it must round-trip the value.
        serializer.serialize_str(&self.0)
    }
}

/// How a secret may be written in a service config: the value itself, or where to
/// read it — `{ file = "/run/secrets/token" }` (a Kubernetes Secret mount; a trailing
/// newline is dropped) or `{ env = "VAR" }` (the service's own environment).
#[derive(Deserialize)]
#[serde(untagged)]
enum SecretInput {
    Value(String),
    Reference(SecretReference),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretReference {
    file: Option<String>,
    env: Option<String>,
}

impl SecretReference {
    fn resolve(self) -> Result<String, String> {
        match (self.file, self.env) {
            (Some(path), None) => std::fs::read_to_string(&path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read secret file {path}: {e}")),
            (None, Some(var)) => {
                std::env::var(&var).map_err(|_| format!("secret environment variable {var} is not set"))
            }
            _ => Err("a secret reference is { file = \"/path\" } or { env = \"VAR\" }, exactly one of them".into()),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match SecretInput::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a secret: a string, { file = \"/path\" } or { env = \"VAR\" }")
        })? {
            SecretInput::Value(v) => Ok(Secret(v)),
            SecretInput::Reference(r) => r.resolve().map(Secret).map_err(serde::de::Error::custom),
        }
    }
}

/// Loads a config: `T::default()`, overlaid by the TOML file (if given), overlaid by
/// environment variables `{prefix}__{SECTION}__{KEY}` (a double underscore after the
/// prefix and between nesting levels; single underscores stay inside a key, so
/// `MUSTER_POLICY__DATABASE__MAX_CONNECTIONS` sets `database.max_connections`). Values in the environment
/// are read as TOML literals when they parse as one (`8`, `true`, `["a","b"]`) and as
/// plain strings otherwise.
pub fn load<T>(file: Option<&Path>, prefix: &str) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    load_from(file, prefix, &vars)
}

/// [`load`] with the environment given explicitly (for tests).
pub fn load_from<T>(file: Option<&Path>, prefix: &str, env: &BTreeMap<String, String>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let mut merged = toml::Table::try_from(T::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })?;
        merge(&mut merged, table);
    }
    let var_prefix = format!("{prefix}__");
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(&var_prefix) else { continue };
        let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::Env { var: var.clone(), message: "empty key segment".into() });
        }
        set_path(&mut merged, &keys, env_value(raw))
            .map_err(|message| ConfigError::Env { var: var.clone(), message })?;
    }
    toml::Value::Table(merged).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))
}

fn env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    match keys {
        [] => Err("no key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(format!("`{first}` is a value, not a section")),
            }
        }
    }
}

/// Output format of logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging settings shared by every service.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `muster_policy=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

/// Where a service listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// gRPC address, e.g. `127.0.0.1:50051`.
    pub grpc: String,
    /// Prometheus metrics address (`/metrics`); empty turns metrics serving off.
    pub metrics: String,
    /// Longest time one RPC may run before it is cancelled with DEADLINE_EXCEEDED.
    pub request_timeout_secs: u64,
    /// After SIGTERM, how long in-flight calls may finish before connections are closed.
    pub shutdown_grace_secs: u64,
}

impl ListenConfig {
    /// How long one RPC may run.
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// How long shutdown waits for in-flight calls.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Defaults for a service whose gRPC port is `grpc_port`.
    pub fn on_ports(grpc_port: u16, metrics_port: u16) -> Self {
        Self {
            grpc: format!("127.0.0.1:{grpc_port}"),
            metrics: format!("127.0.0.1:{metrics_port}"),
            request_timeout_secs: 30,
            shutdown_grace_secs: 10,
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self::on_ports(50051, 9464)
    }
}

/// The database a service owns.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (or a plain path) or `postgres://…`. May hold a password, hence secret.
    pub url: Secret,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// Run even when the database's schema is newer than this binary (after a newer
    /// release migrated it): only for a deliberate rollback, see docs/operations.md.
    pub allow_newer_schema: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: Secret::new("sqlite://muster.db"), max_connections: 8, allow_newer_schema: false }
    }
}

/// Who may call a service: SHA-256 hashes (hex) of the bearer tokens it accepts.
/// Plain tokens never sit in a config file; `muster token hash` prints a hash.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Hex SHA-256 of each accepted token.
    pub token_sha256: Vec<String>,
}

/// How a service reaches another.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `http://host:port` of the other service.
    pub url: String,
    /// The bearer token to present.
    pub token: Secret,
    /// Deadline of each call, in milliseconds (0: 10 s).
    pub timeout_ms: u64,
    /// How often to check that the upstream accepts the token, in seconds (0: 30 s).
    pub check_interval_secs: u64,
}

impl UpstreamConfig {
    /// How often to check that the upstream accepts the token.
    pub fn check_interval(&self) -> std::time::Duration {
        match self.check_interval_secs {
            0 => crate::upstream_check::DEFAULT_CHECK_INTERVAL,
            s => std::time::Duration::from_secs(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        name: String,
        db: DatabaseConfig,
        listen: ListenConfig,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self { name: "x".into(), db: DatabaseConfig::default(), listen: ListenConfig::default() }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "name = \"file\"\n[db]\nmax_connections = 3\n").unwrap();
        let cfg: Sample =
            load_from(Some(&path), "MUSTER", &env(&[("MUSTER__DB__MAX_CONNECTIONS", "5"), ("OTHER_X", "1")])).unwrap();
        assert_eq!(cfg.name, "file");
        assert_eq!(cfg.db.max_connections, 5);
        assert_eq!(cfg.listen.grpc, "127.0.0.1:50051");
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[db]\nmax_conections = 3\n").unwrap();
        let err = load_from::<Sample>(Some(&path), "MUSTER", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("max_conections"), "{err}");
        let err = load_from::<Sample>(None, "MUSTER", &env(&[("MUSTER__LISTEN__GRCP", "x")])).unwrap_err();
        assert!(err.to_string().contains("grcp"), "{err}");
    }

    #[test]
    fn strings_that_are_not_toml_stay_strings() {
        let cfg: Sample = load_from(None, "MUSTER", &env(&[("MUSTER__DB__URL", "postgres://u:pw@h/db")])).unwrap();
        assert_eq!(cfg.db.url.expose(), "postgres://u:pw@h/db");
    }

    #[test]
    fn secrets_may_be_read_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("db-url");
        std::fs::write(&secret, "postgres://u:pw@h/db\n").unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("[db]\nurl = {{ file = \"{}\" }}\n", secret.display())).unwrap();
        let cfg: Sample = load_from(Some(&path), "MUSTER", &env(&[])).unwrap();
        assert_eq!(cfg.db.url.expose(), "postgres://u:pw@h/db", "the mount's trailing newline is dropped");

        // The process's own environment (setting a variable would need unsafe code):
        // PATH is always there.
        std::fs::write(&path, "[db]\nurl = { env = \"PATH\" }\n").unwrap();
        let cfg: Sample = load_from(Some(&path), "MUSTER", &env(&[])).unwrap();
        assert_eq!(cfg.db.url.expose(), std::env::var("PATH").unwrap());

        // Each failure names what is missing, never a value.
        for (text, want) in [
            ("url = { file = \"/nonexistent/secret\" }", "cannot read secret file /nonexistent/secret"),
            ("url = { env = \"MUSTER_TEST_SECRET_UNSET\" }", "MUSTER_TEST_SECRET_UNSET is not set"),
            ("url = { file = \"/a\", env = \"B\" }", "exactly one"),
            ("url = { path = \"/a\" }", "expected a secret"),
        ] {
            std::fs::write(&path, format!("[db]\n{text}\n")).unwrap();
            let err = load_from::<Sample>(Some(&path), "MUSTER", &env(&[])).unwrap_err();
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let cfg = DatabaseConfig {
            url: Secret::new("postgres://u:hunter2@h/db"),
            max_connections: 1,
            allow_newer_schema: false,
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
