//! Configuration of an Entra directory, as directory-sync stores it, and the
//! defaults that depend on the cloud (global, US Government, China).

use muster_connector::{BaseUrl, HttpSettings, SecretRef};
use serde::{Deserialize, Serialize};

/// The config fields that hold secrets (dotted paths): directory-sync refuses
/// an inline value there; every other field may be given as it is.
pub const SECRET_FIELDS: &[&str] = &["credential.secret", "credential.private_key"];

/// One Entra tenant to pull from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    /// Directory (tenant) id or primary domain.
    pub tenant_id: String,
    /// Application (client) id of the app registration.
    pub client_id: String,
    pub credential: EntraCredential,
    /// `https://login.microsoftonline.com`; `https://login.microsoftonline.us`
    /// or `https://login.chinacloudapi.cn` for national clouds. Its path is kept.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// `https://graph.microsoft.com` (or `graph.microsoft.us`,
    /// `dod-graph.microsoft.us`, `microsoftgraph.chinacloudapi.cn`, or a
    /// proxy or gateway in front of one). Its path is kept.
    #[serde(default = "default_graph")]
    pub graph_url: String,
    /// The OAuth scope asked for in the token request: the Graph resource id
    /// with `/.default`. When absent it follows the cloud (see
    /// [`EntraConfig::token_scope`]); set it when `graph_url` is a proxy or
    /// gateway, whose URL is not the Graph resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_scope: Option<String>,
    /// Which users and groups are pulled; the whole tenant when absent.
    #[serde(default)]
    pub scope: EntraScope,
    #[serde(default)]
    pub http: HttpSettings,
}

/// Which users and groups the connector pulls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntraScope {
    /// Every user and group of the tenant, by delta queries (incremental).
    #[default]
    Tenant,
    /// The users and groups assigned to one enterprise application: the
    /// object id of its service principal (not the application/client id).
    /// Assigned groups are expanded to their direct user members (nested
    /// groups are not). Every pull is a full listing.
    App { service_principal_id: String },
}

/// The app registration's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntraCredential {
    ClientSecret {
        secret: SecretRef,
    },
    /// A certificate uploaded to the app registration: its private key (PEM)
    /// and the SHA-1 thumbprint the portal shows (hex).
    Certificate {
        private_key: SecretRef,
        thumbprint: String,
    },
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}

fn default_graph() -> String {
    "https://graph.microsoft.com".into()
}

/// The Graph endpoint of each cloud ("National cloud deployments" in the
/// Graph docs): (Graph host, the sign-in host of that cloud).
const CLOUDS: [(&str, &str); 4] = [
    ("graph.microsoft.com", "login.microsoftonline.com"),
    // US Government L4; DoD shares the sign-in host, so it is known by its Graph host only.
    ("graph.microsoft.us", "login.microsoftonline.us"),
    ("dod-graph.microsoft.us", ""),
    // Operated by 21Vianet.
    ("microsoftgraph.chinacloudapi.cn", "login.chinacloudapi.cn"),
];

/// The scope of the global cloud, for a `graph_url` and an `authority` that
/// name no known cloud.
pub const GLOBAL_TOKEN_SCOPE: &str = "https://graph.microsoft.com/.default";

impl EntraConfig {
    /// The scope of the token request: `token_scope` when set; else
    /// `https://{graph host}/.default` when `graph_url` is a cloud's Graph
    /// endpoint; else the Graph of the cloud `authority` signs in to (a proxy
    /// in front of US Government Graph with the `.us` authority asks for
    /// `graph.microsoft.us`); else the global cloud's.
    pub fn token_scope(&self) -> String {
        if let Some(scope) = self.token_scope.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            return scope.to_owned();
        }
        let host = |text: &str| BaseUrl::parse("url", text).ok().and_then(|u| u.host().map(str::to_ascii_lowercase));
        let graph = host(&self.graph_url);
        if let Some((cloud, _)) = CLOUDS.iter().find(|(g, _)| graph.as_deref() == Some(*g)) {
            return format!("https://{cloud}/.default");
        }
        let login = host(&self.authority);
        if let Some((cloud, _)) = CLOUDS.iter().find(|(_, l)| !l.is_empty() && login.as_deref() == Some(*l)) {
            return format!("https://{cloud}/.default");
        }
        GLOBAL_TOKEN_SCOPE.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(graph_url: &str, authority: &str, token_scope: Option<&str>) -> EntraConfig {
        EntraConfig {
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: EntraCredential::ClientSecret { secret: SecretRef::Env("X".into()) },
            authority: authority.into(),
            graph_url: graph_url.into(),
            token_scope: token_scope.map(str::to_owned),
            scope: EntraScope::Tenant,
            http: HttpSettings::default(),
        }
    }

    #[test]
    fn the_token_scope_follows_the_cloud() {
        let global = "https://login.microsoftonline.com";
        let us = "https://login.microsoftonline.us";
        let cn = "https://login.chinacloudapi.cn";
        for (graph, authority, want) in [
            ("https://graph.microsoft.com", global, "https://graph.microsoft.com/.default"),
            ("https://graph.microsoft.us", us, "https://graph.microsoft.us/.default"),
            ("https://dod-graph.microsoft.us", us, "https://dod-graph.microsoft.us/.default"),
            ("https://microsoftgraph.chinacloudapi.cn", cn, "https://microsoftgraph.chinacloudapi.cn/.default"),
            // A proxy: the cloud of the authority, else the global one.
            ("https://proxy.example/graph", us, "https://graph.microsoft.us/.default"),
            ("https://proxy.example/graph", cn, "https://microsoftgraph.chinacloudapi.cn/.default"),
            ("https://proxy.example/graph", "https://login.proxy.example", GLOBAL_TOKEN_SCOPE),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080", GLOBAL_TOKEN_SCOPE),
        ] {
            assert_eq!(config(graph, authority, None).token_scope(), want, "{graph} with {authority}");
        }
        let custom = config("https://proxy.example/graph", global, Some("api://graph-gateway/.default"));
        assert_eq!(custom.token_scope(), "api://graph-gateway/.default");
    }

    #[test]
    fn token_scope_parses_and_is_optional() {
        let json = serde_json::json!({"tenant_id": "t", "client_id": "c",
            "credential": {"type": "client_secret", "secret": {"env": "X"}},
            "graph_url": "https://proxy.example/graph", "token_scope": "https://graph.microsoft.us/.default"});
        let cfg: EntraConfig = serde_json::from_value(json).unwrap();
        assert_eq!(cfg.token_scope.as_deref(), Some("https://graph.microsoft.us/.default"));
        let round: serde_json::Value = serde_json::to_value(config("https://graph.microsoft.com", "x", None)).unwrap();
        assert!(round.get("token_scope").is_none(), "absent stays absent: {round}");
    }
}
