//! An org's provisioning settings (SPEC §3) and the rules they must keep.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::catalog::Product;
use super::org::{ParentKind, ProductKind};

/// How people get into an org.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Administrators only. The default.
    #[default]
    Manual,
    /// Just-in-time, at login.
    Jit,
    /// A directory provisions.
    Scim,
}

impl Mode {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Manual => "manual",
            Mode::Jit => "jit",
            Mode::Scim => "scim",
        }
    }

    /// From the stored name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Mode::Manual, Mode::Jit, Mode::Scim].into_iter().find(|m| m.name() == s)
    }
}

/// A group named in a mapping or held by a subject. A mapping names a group by id
/// (directory group id) or, for JIT claims, by name; names compare case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupRef {
    /// Directory group id; empty when the group is named only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Display name; empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl GroupRef {
    /// A group named by id.
    pub fn id(id: &str) -> Self {
        Self { id: id.to_string(), name: String::new() }
    }

    /// A group named by name.
    pub fn named(name: &str) -> Self {
        Self { id: String::new(), name: name.to_string() }
    }

    /// How a person reads it: its name if known, else its id.
    pub fn label(&self) -> &str {
        if self.name.is_empty() { &self.id } else { &self.name }
    }
}

/// Groups mapped to one role or seat tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// The role or seat tier.
    pub target: String,
    /// Its groups.
    pub groups: Vec<GroupRef>,
}

/// The settings of an org, as saved or as proposed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SettingsData {
    /// Mode.
    pub mode: Mode,
    /// Advanced group mapping on.
    pub advanced_group_mapping: bool,
    /// Role -> groups.
    pub role_mappings: Vec<Mapping>,
    /// Seat tier -> groups.
    pub seat_tier_mappings: Vec<Mapping>,
}

/// Saved settings with their version.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSettings {
    /// The org.
    pub org_id: String,
    /// 0 for never-saved defaults; +1 per save.
    pub version: i64,
    /// The settings.
    pub data: SettingsData,
    /// When last saved.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Stable rule name.
    pub rule: &'static str,
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub description: String,
}

impl Violation {
    fn new(rule: &'static str, field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { rule, field: field.into(), description: description.into() }
    }
}

/// Rule: SCIM is for Enterprise products and Console orgs under a Console or
/// Enterprise parent (SPEC §3).
pub fn scim_allowed(product: ProductKind, parent: ParentKind) -> Result<(), Violation> {
    match product {
        ProductKind::ClaudeTeam => Err(Violation::new(
            "scim_not_allowed_for_product",
            "mode",
            "scim provisioning is not available for Claude Team orgs; use manual or jit",
        )),
        ProductKind::Console if parent == ParentKind::Team => Err(Violation::new(
            "scim_not_allowed_for_parent",
            "mode",
            "scim provisioning is not available for a Console org under a Team parent; use manual or jit",
        )),
        _ => Ok(()),
    }
}

/// Every rule `data` breaks for an org of `product` under a `parent` parent; empty when valid.
pub fn validate(data: &SettingsData, product: &Product, parent: ParentKind) -> Vec<Violation> {
    let mut out = Vec::new();
    if data.mode == Mode::Scim
        && let Err(v) = scim_allowed(product.kind, parent)
    {
        out.push(v);
    }
    if data.advanced_group_mapping && data.mode == Mode::Manual {
        out.push(Violation::new(
            "agm_requires_jit_or_scim",
            "advanced_group_mapping",
            "advanced group mapping can only be turned on with jit or scim provisioning, not manual",
        ));
    }
    if !product.has_seat_tiers() && !data.seat_tier_mappings.is_empty() {
        out.push(Violation::new(
            "seat_tiers_on_console",
            "seat_tier_mappings",
            format!("{} orgs have no seat tiers; remove the seat-tier mappings", product.display_name),
        ));
    }
    check_mappings(&mut out, "role_mappings", "role", &data.role_mappings, &product.roles, "unknown_role", product);
    if product.has_seat_tiers() {
        check_mappings(
            &mut out,
            "seat_tier_mappings",
            "seat tier",
            &data.seat_tier_mappings,
            &product.seat_tiers,
            "unknown_seat_tier",
            product,
        );
    }
    out
}

fn check_mappings(
    out: &mut Vec<Violation>,
    field: &str,
    what: &str,
    mappings: &[Mapping],
    known: &[String],
    unknown_rule: &'static str,
    product: &Product,
) {
    let mut seen = HashSet::new();
    for (i, m) in mappings.iter().enumerate() {
        if !known.iter().any(|k| k == &m.target) {
            out.push(Violation::new(
                unknown_rule,
                format!("{field}[{i}].{}", if what == "role" { "role" } else { "seat_tier" }),
                format!("`{}` is not a {what} of {} (known: {})", m.target, product.display_name, known.join(", ")),
            ));
        }
        if !seen.insert(m.target.as_str()) {
            out.push(Violation::new(
                "duplicate_mapping",
                format!("{field}[{i}]"),
                format!("{what} `{}` is mapped more than once; list all its groups in one mapping", m.target),
            ));
        }
        if m.groups.is_empty() {
            out.push(Violation::new(
                "mapping_without_groups",
                format!("{field}[{i}].groups"),
                format!("the mapping for {what} `{}` names no group", m.target),
            ));
        }
        for (j, g) in m.groups.iter().enumerate() {
            if g.id.trim().is_empty() && g.name.trim().is_empty() {
                out.push(Violation::new(
                    "group_ref_empty",
                    format!("{field}[{i}].groups[{j}]"),
                    "a group must be named by its directory group id or by its name",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Catalog;

    fn rules(data: &SettingsData, product: ProductKind, parent: ParentKind) -> Vec<&'static str> {
        validate(data, Catalog::builtin().product(product), parent).into_iter().map(|v| v.rule).collect()
    }

    fn mode(mode: Mode, agm: bool) -> SettingsData {
        SettingsData { mode, advanced_group_mapping: agm, ..Default::default() }
    }

    /// SPEC §3, every row: where each mode is allowed, for every product and parent
    /// that may hold it.
    #[test]
    fn spec_3_modes_per_product_and_parent() {
        use ParentKind as P;
        use ProductKind as K;
        let table: &[(K, P, Mode, bool)] = &[
            (K::ClaudeTeam, P::Team, Mode::Manual, true),
            (K::ClaudeTeam, P::Team, Mode::Jit, true),
            (K::ClaudeTeam, P::Team, Mode::Scim, false),
            (K::ClaudeEnterpriseSeat, P::Enterprise, Mode::Manual, true),
            (K::ClaudeEnterpriseSeat, P::Enterprise, Mode::Jit, true),
            (K::ClaudeEnterpriseSeat, P::Enterprise, Mode::Scim, true),
            (K::ClaudeEnterpriseUsage, P::Enterprise, Mode::Manual, true),
            (K::ClaudeEnterpriseUsage, P::Enterprise, Mode::Jit, true),
            (K::ClaudeEnterpriseUsage, P::Enterprise, Mode::Scim, true),
            (K::Console, P::Console, Mode::Manual, true),
            (K::Console, P::Console, Mode::Jit, true),
            (K::Console, P::Console, Mode::Scim, true),
            (K::Console, P::Enterprise, Mode::Manual, true),
            (K::Console, P::Enterprise, Mode::Jit, true),
            (K::Console, P::Enterprise, Mode::Scim, true),
            (K::Console, P::Team, Mode::Manual, true),
            (K::Console, P::Team, Mode::Jit, true),
            (K::Console, P::Team, Mode::Scim, false),
        ];
        for &(product, parent, m, allowed) in table {
            let got = rules(&mode(m, false), product, parent);
            assert_eq!(got.is_empty(), allowed, "{product} under {parent} in {}: {got:?}", m.name());
            if !allowed {
                let expected = if product == K::ClaudeTeam {
                    "scim_not_allowed_for_product"
                } else {
                    "scim_not_allowed_for_parent"
                };
                assert_eq!(got, [expected]);
            }
        }
    }

    #[test]
    fn agm_only_with_jit_or_scim() {
        for product in ProductKind::ALL {
            let parent = if product == ProductKind::ClaudeTeam { ParentKind::Team } else { ParentKind::Enterprise };
            assert_eq!(rules(&mode(Mode::Manual, true), product, parent), ["agm_requires_jit_or_scim"]);
            assert!(rules(&mode(Mode::Jit, true), product, parent).is_empty());
        }
        assert!(rules(&mode(Mode::Scim, true), ProductKind::ClaudeEnterpriseSeat, ParentKind::Enterprise).is_empty());
    }

    #[test]
    fn mappings_name_known_roles_and_tiers() {
        let mut data = mode(Mode::Scim, true);
        data.role_mappings = vec![
            Mapping { target: "Owner".into(), groups: vec![GroupRef::id("g1")] },
            Mapping { target: "Wizard".into(), groups: vec![GroupRef::named("x")] },
            Mapping { target: "Owner".into(), groups: vec![] },
        ];
        data.seat_tier_mappings = vec![
            Mapping { target: "Premium".into(), groups: vec![GroupRef::default()] },
            Mapping { target: "Chat".into(), groups: vec![GroupRef::id("g")] },
        ];
        let got =
            validate(&data, Catalog::builtin().product(ProductKind::ClaudeEnterpriseSeat), ParentKind::Enterprise);
        let summary: Vec<(&str, &str)> = got.iter().map(|v| (v.rule, v.field.as_str())).collect();
        assert_eq!(
            summary,
            [
                ("unknown_role", "role_mappings[1].role"),
                ("duplicate_mapping", "role_mappings[2]"),
                ("mapping_without_groups", "role_mappings[2].groups"),
                ("group_ref_empty", "seat_tier_mappings[0].groups[0]"),
                ("unknown_seat_tier", "seat_tier_mappings[1].seat_tier"),
            ]
        );
    }

    #[test]
    fn console_has_no_seat_tiers() {
        let mut data = mode(Mode::Jit, true);
        data.seat_tier_mappings = vec![Mapping { target: "Premium".into(), groups: vec![GroupRef::id("g")] }];
        assert_eq!(rules(&data, ProductKind::Console, ParentKind::Console), ["seat_tiers_on_console"]);
        data.role_mappings = vec![Mapping { target: "Developer".into(), groups: vec![GroupRef::named("devs")] }];
        data.seat_tier_mappings.clear();
        assert!(rules(&data, ProductKind::Console, ParentKind::Console).is_empty());
    }
}
