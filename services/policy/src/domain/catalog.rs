//! The product catalog (SPEC §2): each product's roles and seat tiers, highest first.
//! Shipped as data in the binary; an operator may load a replacement at start.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::org::ProductKind;

const DEFAULT_CATALOG: &str = include_str!("catalog.toml");

/// One product: its roles (highest privilege first) and seat tiers (highest first).
#[derive(Clone, Debug, PartialEq)]
pub struct Product {
    /// Which product.
    pub kind: ProductKind,
    /// Human name.
    pub display_name: String,
    /// Roles, highest privilege first. Never empty.
    pub roles: Vec<String>,
    /// Seat tiers, highest first. Empty for Console.
    pub seat_tiers: Vec<String>,
}

impl Product {
    /// The role someone must always hold (the first).
    pub fn guardian_role(&self) -> &str {
        self.roles.first().map(String::as_str).unwrap_or_default()
    }

    /// The role given when nothing else decides (the last).
    pub fn default_role(&self) -> &str {
        self.roles.last().map(String::as_str).unwrap_or_default()
    }

    /// Rank of a role (0 = highest), matched exactly.
    pub fn role_rank(&self, role: &str) -> Option<usize> {
        self.roles.iter().position(|r| r == role)
    }

    /// Rank of a seat tier (0 = highest), matched exactly.
    pub fn tier_rank(&self, tier: &str) -> Option<usize> {
        self.seat_tiers.iter().position(|t| t == tier)
    }

    /// Whether members of this product hold seat tiers.
    pub fn has_seat_tiers(&self) -> bool {
        !self.seat_tiers.is_empty()
    }
}

/// Why a catalog file was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CatalogError {
    /// Not valid TOML or not the expected shape.
    #[error("catalog is not valid: {0}")]
    Syntax(String),
    /// A product name we do not know.
    #[error(
        "catalog names unknown product `{0}` (known: claude_team, claude_enterprise_seat, claude_enterprise_usage, console)"
    )]
    UnknownProduct(String),
    /// A product listed twice.
    #[error("catalog lists product `{0}` more than once")]
    DuplicateProduct(String),
    /// A product missing.
    #[error("catalog does not list product `{0}`")]
    MissingProduct(String),
    /// A product without roles.
    #[error("product `{0}` has no roles: at least one is required")]
    NoRoles(String),
    /// A role or tier listed twice, or empty.
    #[error("product `{product}` lists {what} `{name}` twice or empty")]
    BadName {
        /// The product.
        product: String,
        /// "role" or "seat tier".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Console with seat tiers.
    #[error("product `console` cannot have seat tiers")]
    ConsoleTiers,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    product: Vec<ProductEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductEntry {
    name: String,
    display_name: String,
    roles: Vec<String>,
    #[serde(default)]
    seat_tiers: Vec<String>,
}

/// Every product, by kind.
#[derive(Clone, Debug)]
pub struct Catalog {
    products: BTreeMap<ProductKind, Product>,
}

impl Catalog {
    /// The catalog shipped in the binary.
    pub fn builtin() -> Self {
        match Self::parse(DEFAULT_CATALOG) {
            Ok(catalog) => catalog,
            // The shipped file is checked by a unit test; reaching this is a build defect.
            Err(e) => unreachable!("built-in catalog is invalid: {e}"),
        }
    }

    /// Parses and validates a catalog file.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Syntax(e.message().to_string()))?;
        let mut products = BTreeMap::new();
        for entry in file.product {
            let kind: ProductKind = entry.name.parse().map_err(|_| CatalogError::UnknownProduct(entry.name.clone()))?;
            if products.contains_key(&kind) {
                return Err(CatalogError::DuplicateProduct(entry.name));
            }
            if entry.roles.is_empty() {
                return Err(CatalogError::NoRoles(entry.name));
            }
            if kind == ProductKind::Console && !entry.seat_tiers.is_empty() {
                return Err(CatalogError::ConsoleTiers);
            }
            for (what, names) in [("role", &entry.roles), ("seat tier", &entry.seat_tiers)] {
                let mut seen = HashSet::new();
                for name in names {
                    if name.trim().is_empty() || !seen.insert(name.to_lowercase()) {
                        return Err(CatalogError::BadName { product: entry.name.clone(), what, name: name.clone() });
                    }
                }
            }
            products.insert(
                kind,
                Product { kind, display_name: entry.display_name, roles: entry.roles, seat_tiers: entry.seat_tiers },
            );
        }
        if let Some(missing) = ProductKind::ALL.into_iter().find(|k| !products.contains_key(k)) {
            return Err(CatalogError::MissingProduct(missing.name().to_string()));
        }
        Ok(Self { products })
    }

    /// One product. Every kind is present (checked at load).
    pub fn product(&self, kind: ProductKind) -> &Product {
        match self.products.get(&kind) {
            Some(p) => p,
            None => unreachable!("catalog validated to hold every product"),
        }
    }

    /// Every product, in catalog order.
    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.products.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_matches_spec() {
        let c = Catalog::builtin();
        let team = c.product(ProductKind::ClaudeTeam);
        assert_eq!(team.roles, ["Owner", "Admin", "User"]);
        assert_eq!(team.seat_tiers, ["Premium", "Standard"]);
        assert_eq!(team.guardian_role(), "Owner");
        assert_eq!(team.default_role(), "User");
        let usage = c.product(ProductKind::ClaudeEnterpriseUsage);
        assert_eq!(usage.seat_tiers, ["Chat + Claude Code", "Chat"]);
        let console = c.product(ProductKind::Console);
        assert_eq!(console.roles, ["Admin", "Developer", "Billing", "Claude Code User", "User"]);
        assert!(!console.has_seat_tiers());
        assert_eq!(console.guardian_role(), "Admin");
    }

    fn with(extra: &str) -> String {
        format!("{DEFAULT_CATALOG}\n{extra}")
    }

    #[test]
    fn replacement_files_are_validated() {
        assert_eq!(
            Catalog::parse(&with("[[product]]\nname = \"console\"\ndisplay_name = \"x\"\nroles = [\"A\"]\n"))
                .unwrap_err(),
            CatalogError::DuplicateProduct("console".into())
        );
        assert_eq!(
            Catalog::parse("[[product]]\nname = \"claude_team\"\ndisplay_name = \"x\"\nroles = []\n").unwrap_err(),
            CatalogError::NoRoles("claude_team".into())
        );
        assert_eq!(
            Catalog::parse("[[product]]\nname = \"claude_team\"\ndisplay_name = \"x\"\nroles = [\"A\"]\n").unwrap_err(),
            CatalogError::MissingProduct("claude_enterprise_seat".into())
        );
        assert!(matches!(
            Catalog::parse("[[product]]\nname = \"nope\"\ndisplay_name = \"x\"\nroles = [\"A\"]\n"),
            Err(CatalogError::UnknownProduct(_))
        ));
        let dup_role = DEFAULT_CATALOG.replacen("[\"Owner\", \"Admin\", \"User\"]", "[\"Owner\", \"owner\"]", 1);
        assert!(matches!(Catalog::parse(&dup_role), Err(CatalogError::BadName { what: "role", .. })));
        let console_tiers = DEFAULT_CATALOG.replace("seat_tiers = []", "seat_tiers = [\"Gold\"]");
        assert_eq!(Catalog::parse(&console_tiers).unwrap_err(), CatalogError::ConsoleTiers);
        assert!(matches!(Catalog::parse("product = 3"), Err(CatalogError::Syntax(_))));
    }

    #[test]
    fn an_operator_may_reorder_console_roles() {
        let reordered = DEFAULT_CATALOG.replace(
            "[\"Admin\", \"Developer\", \"Billing\", \"Claude Code User\", \"User\"]",
            "[\"Admin\", \"Billing\", \"Developer\", \"Claude Code User\", \"User\"]",
        );
        let c = Catalog::parse(&reordered).unwrap();
        assert_eq!(c.product(ProductKind::Console).role_rank("Billing"), Some(1));
    }
}
