//! The connector registry: the one table of directory kinds. A kind's stored
//! name (also its wire `kind_name` and what `muster directory create --kind`
//! takes), its legacy proto enum value, whether it is pulled, which config
//! fields are secrets, config validation and connector building all come from
//! its line in [`REGISTRY`]; nothing else in directory-sync names a connector,
//! and no `match` anywhere lists kinds, so a kind left out of one place cannot
//! be created yet never pulled. Adding a connector is its crate (with a
//! [`ConnectorSpec`]), one line below, and one Cargo dependency.

use std::sync::Arc;

use muster_connector::{Clock, ConnectorError, ConnectorSpec, PullConnector, TokenPool};
use muster_proto::directory::v1 as pb;

type Validate = fn(&str) -> Result<(), ConnectorError>;
type Build = fn(&str, Arc<dyn Clock>, &TokenPool) -> Result<Box<dyn PullConnector>, ConnectorError>;

/// A pull connector's entry points, from its [`ConnectorSpec`].
#[derive(Clone, Copy)]
struct PullEntry {
    secret_fields: &'static [&'static str],
    validate: Validate,
    build: Build,
}

/// One kind of directory.
pub struct ConnectorEntry {
    name: &'static str,
    title: &'static str,
    /// Its value of the proto's `DirectoryKind`, for the kinds that have one
    /// (wire compatibility); a kind added since is named by `kind_name` only.
    legacy: Option<pb::DirectoryKind>,
    /// `None`: the IdP pushes (SCIM), there is no connector.
    pull: Option<PullEntry>,
}

fn parse<C: ConnectorSpec>(config_json: &str) -> Result<C::Config, ConnectorError> {
    serde_json::from_str(config_json).map_err(|e| ConnectorError::Config(format!("{} config: {e}", C::KIND)))
}

fn validate<C: ConnectorSpec>(config_json: &str) -> Result<(), ConnectorError> {
    parse::<C>(config_json).map(|_| ())
}

fn build<C: ConnectorSpec>(
    config_json: &str,
    clock: Arc<dyn Clock>,
    tokens: &TokenPool,
) -> Result<Box<dyn PullConnector>, ConnectorError> {
    C::connect(parse::<C>(config_json)?, clock, tokens)
}

impl ConnectorEntry {
    /// The entry of a pull connector crate, with its legacy enum value if it has one.
    pub const fn pull<C: ConnectorSpec>(legacy: Option<pb::DirectoryKind>) -> Self {
        Self {
            name: C::KIND,
            title: C::TITLE,
            legacy,
            pull: Some(PullEntry { secret_fields: C::SECRET_FIELDS, validate: validate::<C>, build: build::<C> }),
        }
    }
}

const SCIM: ConnectorEntry = ConnectorEntry {
    name: "scim",
    title: "SCIM 2.0 push: the IdP sends users and groups to Muster's SCIM endpoint",
    legacy: Some(pb::DirectoryKind::Scim),
    pull: None,
};

/// Every kind, one line each. A name is stored with every directory of its
/// kind: never rename one. A new connector takes no enum value (`None`).
static REGISTRY: &[ConnectorEntry] = &[
    SCIM,
    ConnectorEntry::pull::<muster_connector_okta::Okta>(Some(pb::DirectoryKind::Okta)),
    ConnectorEntry::pull::<muster_connector_entra::Entra>(Some(pb::DirectoryKind::Entra)),
    ConnectorEntry::pull::<muster_connector_google::Google>(Some(pb::DirectoryKind::Google)),
    // The template's proof (connectors/example), a made-up IdP: registered only in
    // builds that ask for it (the end-to-end tests), never offered to operators.
    #[cfg(feature = "example-connector")]
    ConnectorEntry::pull::<muster_connector_example::Example>(None),
];

/// A directory's kind: a line of the registry.
#[derive(Clone, Copy)]
pub struct Kind(&'static ConnectorEntry);

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Kind {}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kind({})", self.0.name)
    }
}

impl Kind {
    /// SCIM push: the one kind with rules of its own (a token, a request log, no interval).
    pub const SCIM: Kind = Kind(&SCIM);

    /// Every kind, in registry order.
    pub fn all() -> impl Iterator<Item = Kind> {
        REGISTRY.iter().map(Kind)
    }

    /// The kind stored (and sent) under `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Self::all().find(|k| k.0.name == name)
    }

    /// The kind of a legacy enum value (none for `UNSPECIFIED`).
    pub fn from_proto(value: pb::DirectoryKind) -> Option<Kind> {
        Self::all().find(|k| k.0.legacy == Some(value))
    }

    /// Its stored name.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// One line for operators.
    pub fn title(self) -> &'static str {
        self.0.title
    }

    /// Its legacy enum value; `UNSPECIFIED` for a kind named by name only.
    pub fn proto(self) -> pb::DirectoryKind {
        self.0.legacy.unwrap_or(pb::DirectoryKind::Unspecified)
    }

    /// Whether its directories are pulled by a connector (else the IdP pushes).
    pub fn is_pull(self) -> bool {
        self.0.pull.is_some()
    }

    /// The config fields that hold secrets (dotted paths), as the kind's
    /// connector declares them; `None` for SCIM, which has no connector config.
    pub fn secret_fields(self) -> Option<&'static [&'static str]> {
        self.0.pull.map(|p| p.secret_fields)
    }

    /// Checks that `config_json` parses as the connector's config (secrets
    /// are not read). A SCIM config has no parser: always accepted here.
    pub fn validate(self, config_json: &str) -> Result<(), ConnectorError> {
        match self.0.pull {
            Some(pull) => (pull.validate)(config_json),
            None => Ok(()),
        }
    }

    /// A connector for a directory of this kind (its secrets read now).
    pub fn build(
        self,
        config_json: &str,
        clock: Arc<dyn Clock>,
        tokens: &TokenPool,
    ) -> Result<Box<dyn PullConnector>, ConnectorError> {
        match self.0.pull {
            Some(pull) => (pull.build)(config_json, clock, tokens),
            None => {
                Err(ConnectorError::Config(format!("a {} directory is pushed to; it has no connector", self.0.name)))
            }
        }
    }

    /// The names of the pulled kinds: which stored directories the puller looks at.
    pub fn pull_names() -> Vec<&'static str> {
        Self::all().filter(|k| k.is_pull()).map(Kind::name).collect()
    }

    /// Every name, for messages (`scim, okta, entra, google`).
    pub fn names() -> String {
        Self::all().map(Kind::name).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name_and_the_proto() {
        let kinds: Vec<Kind> = Kind::all().collect();
        assert!(kinds.len() >= 4);
        for kind in &kinds {
            let name = kind.name();
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name:?} is not a plain lowercase name"
            );
            assert_eq!(Kind::from_name(name), Some(*kind), "{name}");
            assert_eq!(kinds.iter().filter(|k| k.name() == name).count(), 1, "{name} is registered twice");
            match kind.0.legacy {
                Some(value) => assert_eq!(Kind::from_proto(value), Some(*kind), "{name}"),
                None => assert_eq!(kind.proto(), pb::DirectoryKind::Unspecified, "{name}"),
            }
            assert!(!kind.title().is_empty(), "{name}");
        }
        assert_eq!(Kind::from_name("SCIM"), None, "names are exact; the wire layer lowercases");
        assert_eq!(Kind::from_name("nope"), None);
        assert_eq!(Kind::from_proto(pb::DirectoryKind::Unspecified), None);
    }

    #[test]
    fn every_enum_value_is_a_registered_kind() {
        // A value added to the proto enum without a registry line would be
        // accepted on the wire and then be nothing.
        for raw in 1..64 {
            if let Ok(value) = pb::DirectoryKind::try_from(raw) {
                let kind = Kind::from_proto(value).unwrap_or_else(|| panic!("{value:?} has no registry line"));
                assert_eq!(kind.proto(), value);
            }
        }
    }

    #[test]
    fn pulled_kinds_declare_their_secrets_and_scim_is_pushed() {
        assert!(!Kind::SCIM.is_pull());
        assert_eq!(Kind::from_name("scim"), Some(Kind::SCIM));
        assert_eq!(Kind::SCIM.secret_fields(), None);
        let pulled = Kind::pull_names();
        assert!(!pulled.contains(&"scim"));
        for kind in Kind::all().filter(|k| k.is_pull()) {
            assert!(pulled.contains(&kind.name()), "{} is not pulled", kind.name());
            assert!(kind.secret_fields().is_some_and(|f| !f.is_empty()), "{} declares no secret", kind.name());
        }
        assert_eq!(pulled.len(), Kind::all().count() - 1);
    }

    #[test]
    fn configs_are_checked_by_their_connector() {
        let okta = Kind::from_name("okta").unwrap();
        assert!(
            okta.validate(r#"{"org_url":"https://a.okta.com","auth":{"type":"api_token","token":{"env":"T"}}}"#)
                .is_ok()
        );
        let err = okta.validate(r#"{"org_url":"https://a.okta.com"}"#).unwrap_err();
        assert!(matches!(err, ConnectorError::Config(ref m) if m.starts_with("okta config:")), "{err}");
        // Google's token_url is a setting like any other.
        let google = Kind::from_name("google").unwrap();
        let with_url = r#"{"service_account_key":{"file":"/k.json"},"admin_email":"a@b.c","token_url":"https://oauth2.googleapis.com/token"}"#;
        assert!(google.validate(with_url).is_ok());
        assert!(Kind::SCIM.validate("{\"anything\":1}").is_ok());
        let err = Kind::SCIM.build("{}", Arc::new(muster_connector::SystemClock), &TokenPool::new()).unwrap_err();
        assert!(err.to_string().contains("pushed to"), "{err}");
    }
}
