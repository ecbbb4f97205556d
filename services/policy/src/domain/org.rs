//! Parent organizations, organizations and which products a parent may hold.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// The kind of a parent organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParentKind {
    /// Holds Enterprise and Console orgs.
    Enterprise,
    /// Holds Team and Console orgs.
    Team,
    /// A Console org's own parent.
    Console,
}

/// A product an org runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProductKind {
    /// Claude Team.
    ClaudeTeam,
    /// Seat-based Claude Enterprise.
    ClaudeEnterpriseSeat,
    /// Usage-based Claude Enterprise.
    ClaudeEnterpriseUsage,
    /// Claude Console.
    Console,
}

impl ProductKind {
    /// Every product, in catalog order.
    pub const ALL: [ProductKind; 4] = [
        ProductKind::ClaudeTeam,
        ProductKind::ClaudeEnterpriseSeat,
        ProductKind::ClaudeEnterpriseUsage,
        ProductKind::Console,
    ];

    /// The catalog name.
    pub fn name(self) -> &'static str {
        match self {
            ProductKind::ClaudeTeam => "claude_team",
            ProductKind::ClaudeEnterpriseSeat => "claude_enterprise_seat",
            ProductKind::ClaudeEnterpriseUsage => "claude_enterprise_usage",
            ProductKind::Console => "console",
        }
    }

    /// Whether it is one of the Enterprise products.
    pub fn is_enterprise(self) -> bool {
        matches!(self, ProductKind::ClaudeEnterpriseSeat | ProductKind::ClaudeEnterpriseUsage)
    }
}

impl ParentKind {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            ParentKind::Enterprise => "enterprise",
            ParentKind::Team => "team",
            ParentKind::Console => "console",
        }
    }

    /// Whether a parent of this kind may hold an org of `product`.
    pub fn may_hold(self, product: ProductKind) -> bool {
        match self {
            ParentKind::Enterprise => product.is_enterprise() || product == ProductKind::Console,
            ParentKind::Team => matches!(product, ProductKind::ClaudeTeam | ProductKind::Console),
            ParentKind::Console => product == ProductKind::Console,
        }
    }
}

/// A stored name that is not one we know.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownName {
    /// What kind of name.
    pub what: &'static str,
    /// The name.
    pub value: String,
}

impl FromStr for ParentKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [ParentKind::Enterprise, ParentKind::Team, ParentKind::Console]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownName { what: "parent kind", value: s.to_string() })
    }
}

impl FromStr for ProductKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProductKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownName { what: "product", value: s.to_string() })
    }
}

impl fmt::Display for ProductKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for ParentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parent organization.
#[derive(Clone, Debug, PartialEq)]
pub struct ParentOrg {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind.
    pub kind: ParentKind,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// An organization.
#[derive(Clone, Debug, PartialEq)]
pub struct Org {
    /// Id.
    pub id: String,
    /// Its parent.
    pub parent_id: String,
    /// Display name.
    pub name: String,
    /// Product.
    pub product: ProductKind,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Longest display name we accept.
pub const MAX_NAME_CHARS: usize = 200;

/// A display name, trimmed, if it is acceptable (1 to 200 characters, no control characters).
pub fn clean_name(name: &str) -> Option<String> {
    let trimmed = name.trim();
    let count = trimmed.chars().count();
    (count > 0 && count <= MAX_NAME_CHARS && !trimmed.chars().any(char::is_control)).then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_hold_only_their_products() {
        use ParentKind::*;
        use ProductKind::*;
        let table = [
            (Enterprise, ClaudeTeam, false),
            (Enterprise, ClaudeEnterpriseSeat, true),
            (Enterprise, ClaudeEnterpriseUsage, true),
            (Enterprise, ProductKind::Console, true),
            (Team, ClaudeTeam, true),
            (Team, ClaudeEnterpriseSeat, false),
            (Team, ClaudeEnterpriseUsage, false),
            (Team, ProductKind::Console, true),
            (ParentKind::Console, ClaudeTeam, false),
            (ParentKind::Console, ClaudeEnterpriseSeat, false),
            (ParentKind::Console, ClaudeEnterpriseUsage, false),
            (ParentKind::Console, ProductKind::Console, true),
        ];
        for (parent, product, ok) in table {
            assert_eq!(parent.may_hold(product), ok, "{parent} holding {product}");
        }
    }

    #[test]
    fn names_round_trip_and_validate() {
        for p in ProductKind::ALL {
            assert_eq!(p.name().parse::<ProductKind>().unwrap(), p);
        }
        assert!("x".parse::<ParentKind>().is_err());
        assert_eq!(clean_name("  Acme "), Some("Acme".into()));
        assert_eq!(clean_name("   "), None);
        assert_eq!(clean_name(&"a".repeat(201)), None);
        assert_eq!(clean_name("a\nb"), None);
    }
}
