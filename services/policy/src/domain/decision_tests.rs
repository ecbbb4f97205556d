//! Every row of SPEC §4, for every product of the catalog.

use super::*;
use crate::domain::catalog::Catalog;
use crate::domain::org::ProductKind;
use crate::domain::settings::Mapping;

struct Case {
    product: Product,
    settings: SettingsData,
}

impl Case {
    fn new(kind: ProductKind, mode: Mode, agm: bool) -> Self {
        let product = Catalog::builtin().product(kind).clone();
        let mut settings = SettingsData { mode, advanced_group_mapping: agm, ..Default::default() };
        settings.role_mappings = vec![
            Mapping { target: product.roles[0].clone(), groups: vec![GroupRef::id("g-top")] },
            Mapping { target: product.roles[1].clone(), groups: vec![GroupRef::named("Leads")] },
        ];
        if product.has_seat_tiers() {
            settings.seat_tier_mappings = vec![
                Mapping { target: product.seat_tiers[0].clone(), groups: vec![GroupRef::id("g-prem")] },
                Mapping { target: product.seat_tiers[1].clone(), groups: vec![GroupRef::named("basic")] },
            ];
        }
        Self { product, settings }
    }

    fn decide(&self, trigger: Trigger, subject: &Subject) -> Decision {
        DecisionEngine::new(&self.product, &self.settings).decide(trigger, subject)
    }

    fn guardian(&self) -> String {
        self.product.roles[0].clone()
    }
    fn second(&self) -> String {
        self.product.roles[1].clone()
    }
    fn default_role(&self) -> String {
        self.product.default_role().to_string()
    }
    fn tier(&self, i: usize) -> Option<String> {
        self.product.seat_tiers.get(i).cloned()
    }
    fn highest_free(&self) -> Option<TierChoice> {
        self.product.has_seat_tiers().then_some(TierChoice::HighestFree)
    }
    fn mapped(&self, i: usize) -> Option<TierChoice> {
        self.tier(i).map(TierChoice::Mapped)
    }
}

fn subject(assigned: bool, groups: &[GroupRef], current: Option<(&str, Option<&str>)>) -> Subject {
    Subject {
        user_ref: "u1".into(),
        assigned,
        groups: groups.to_vec(),
        current: current.map(|(role, tier)| Current {
            role: role.to_string(),
            seat_tier: tier.map(str::to_string),
            source: Source::Directory,
        }),
    }
}

fn top_group() -> GroupRef {
    GroupRef { id: "g-top".into(), name: "eng-admins".into() }
}
fn leads_group() -> GroupRef {
    GroupRef { id: "g-leads".into(), name: "LEADS".into() }
}
fn premium_group() -> GroupRef {
    GroupRef { id: "g-prem".into(), name: "premium".into() }
}
fn basic_group() -> GroupRef {
    GroupRef::named("Basic")
}
fn unmapped_group() -> GroupRef {
    GroupRef { id: "g-other".into(), name: "everyone".into() }
}

const SYNC_TRIGGERS: [Trigger; 2] = [Trigger::DirectorySync, Trigger::SyncNow];

fn each_product(mode: Mode, agm: bool, check: impl Fn(&Case)) {
    for kind in ProductKind::ALL {
        check(&Case::new(kind, mode, agm));
    }
}

// ---- manual ----

#[test]
fn manual_directories_change_nothing() {
    each_product(Mode::Manual, false, |c| {
        for t in SYNC_TRIGGERS {
            assert_eq!(c.decide(t, &subject(true, &[top_group()], None)).action, Action::None);
            let d = c.decide(t, &subject(false, &[], Some((&c.default_role(), None))));
            assert_eq!(d.action, Action::None, "manual: a directory never removes");
        }
    });
}

#[test]
fn manual_login_only_for_members_added_by_an_administrator() {
    each_product(Mode::Manual, false, |c| {
        let d = c.decide(Trigger::Login, &subject(true, &[top_group()], None));
        assert_eq!((d.action, d.login_allowed), (Action::DenyLogin, false));
        let d = c.decide(Trigger::Login, &subject(true, &[top_group()], Some((&c.second(), None))));
        assert_eq!((d.action, d.login_allowed), (Action::AllowLogin, true));
        assert_eq!(d.role, c.second(), "manual: login never changes the role");
        let d = c.decide(Trigger::Login, &subject(false, &[], Some((&c.second(), None))));
        assert_eq!((d.action, d.login_allowed), (Action::DenyLogin, false), "manual: only an administrator removes");
    });
}

// ---- jit ----

#[test]
fn jit_first_login_provisions_with_the_default_role() {
    each_product(Mode::Jit, false, |c| {
        let d = c.decide(Trigger::Login, &subject(true, &[top_group()], None));
        assert_eq!(d.action, Action::Provision);
        assert!(d.login_allowed);
        assert_eq!(d.role, c.default_role(), "without AGM groups do not decide the role");
        assert_eq!(d.seat_tier, c.highest_free());
    });
}

#[test]
fn jit_login_never_changes_role_or_tier() {
    each_product(Mode::Jit, false, |c| {
        let tier = c.tier(1);
        let d = c.decide(
            Trigger::Login,
            &subject(true, &[top_group(), premium_group()], Some((&c.default_role(), tier.as_deref()))),
        );
        assert_eq!(d.action, Action::AllowLogin);
        assert!(d.login_allowed);
        assert_eq!(d.role, c.default_role());
        assert_eq!(d.seat_tier, None);
    });
}

#[test]
fn jit_unassigned_login_is_denied_and_removes_the_member() {
    each_product(Mode::Jit, false, |c| {
        let d = c.decide(Trigger::Login, &subject(false, &[], Some((&c.default_role(), None))));
        assert_eq!((d.action, d.login_allowed), (Action::Remove, false));
        assert!(d.reasons[0].contains("not assigned"), "{:?}", d.reasons);
        let d = c.decide(Trigger::Login, &subject(false, &[], None));
        assert_eq!((d.action, d.login_allowed), (Action::DenyLogin, false));
    });
}

#[test]
fn jit_members_stay_listed_until_they_try_to_log_in() {
    each_product(Mode::Jit, false, |c| {
        for t in SYNC_TRIGGERS {
            let d = c.decide(t, &subject(false, &[], Some((&c.default_role(), None))));
            assert_eq!(d.action, Action::None, "jit: directories never remove");
            assert_eq!(c.decide(t, &subject(true, &[], None)).action, Action::None, "jit: directories never add");
        }
    });
}

// ---- jit + AGM ----

#[test]
fn jit_agm_provisions_people_in_a_mapped_group_with_the_highest_role() {
    each_product(Mode::Jit, true, |c| {
        let d = c.decide(Trigger::Login, &subject(true, &[leads_group(), top_group(), unmapped_group()], None));
        assert_eq!(d.action, Action::Provision);
        assert!(d.login_allowed);
        assert_eq!(d.role, c.guardian());
        assert_eq!(
            d.reasons[0],
            format!("{}: highest of {} (group eng-admins), {} (group LEADS)", c.guardian(), c.guardian(), c.second())
        );
        assert_eq!(d.seat_tier, c.highest_free(), "no tier-mapped group: highest free tier");
    });
}

#[test]
fn jit_agm_default_role_when_only_in_seat_tier_groups() {
    for kind in [ProductKind::ClaudeTeam, ProductKind::ClaudeEnterpriseSeat, ProductKind::ClaudeEnterpriseUsage] {
        let c = Case::new(kind, Mode::Jit, true);
        let d = c.decide(Trigger::Login, &subject(true, &[basic_group()], None));
        assert_eq!(d.action, Action::Provision);
        assert_eq!(d.role, c.default_role());
        assert!(d.reasons[0].contains("default role"), "{:?}", d.reasons);
        assert_eq!(d.seat_tier, c.mapped(1));
    }
}

#[test]
fn jit_agm_seat_tier_is_the_highest_mapped() {
    for kind in [ProductKind::ClaudeTeam, ProductKind::ClaudeEnterpriseSeat, ProductKind::ClaudeEnterpriseUsage] {
        let c = Case::new(kind, Mode::Jit, true);
        let d = c.decide(Trigger::Login, &subject(true, &[basic_group(), premium_group()], None));
        assert_eq!(d.seat_tier, c.mapped(0));
    }
}

#[test]
fn jit_agm_recomputes_role_and_tier_at_every_login() {
    each_product(Mode::Jit, true, |c| {
        let low = c.tier(1);
        let d = c.decide(Trigger::Login, &subject(true, &[top_group()], Some((&c.default_role(), low.as_deref()))));
        assert_eq!(d.action, Action::Update);
        assert!(d.login_allowed);
        assert_eq!(d.role, c.guardian());
        assert_eq!(d.seat_tier, c.product.has_seat_tiers().then_some(TierChoice::Keep), "no tier group: tier kept");

        let d = c.decide(Trigger::Login, &subject(true, &[top_group()], Some((&c.guardian(), low.as_deref()))));
        assert_eq!((d.action, d.login_allowed), (Action::AllowLogin, true), "already right: nothing changes");

        if c.product.has_seat_tiers() {
            let d = c.decide(
                Trigger::Login,
                &subject(true, &[top_group(), premium_group()], Some((&c.guardian(), low.as_deref()))),
            );
            assert_eq!(d.action, Action::Update);
            assert_eq!(d.seat_tier, c.mapped(0), "likewise the seat tier");
        }
    });
}

#[test]
fn jit_agm_no_mapped_group_denies_and_removes_at_login() {
    each_product(Mode::Jit, true, |c| {
        let d = c.decide(Trigger::Login, &subject(true, &[unmapped_group()], Some((&c.guardian(), None))));
        assert_eq!((d.action, d.login_allowed), (Action::Remove, false));
        let d = c.decide(Trigger::Login, &subject(true, &[unmapped_group()], None));
        assert_eq!((d.action, d.login_allowed), (Action::DenyLogin, false));
        let d = c.decide(Trigger::Login, &subject(false, &[top_group()], Some((&c.guardian(), None))));
        assert_eq!((d.action, d.login_allowed), (Action::Remove, false), "unassigned wins over groups");
        for t in SYNC_TRIGGERS {
            let d = c.decide(t, &subject(true, &[unmapped_group()], Some((&c.guardian(), None))));
            assert_eq!(d.action, Action::None, "jit+AGM: they stay listed until their next login");
        }
    });
}

#[test]
fn group_names_match_case_insensitively_and_ids_exactly() {
    let c = Case::new(ProductKind::ClaudeEnterpriseSeat, Mode::Jit, true);
    let d = c.decide(Trigger::Login, &subject(true, &[GroupRef::named("lEaDs")], None));
    assert_eq!(d.role, c.second());
    let d = c.decide(Trigger::Login, &subject(true, &[GroupRef::id("G-TOP")], None));
    assert_eq!(d.action, Action::DenyLogin, "ids are exact");
    let d = c.decide(Trigger::Login, &subject(true, &[GroupRef::named("g-top")], None));
    assert_eq!(d.action, Action::DenyLogin, "a mapping by id does not match a group's name");
}

// ---- scim ----

#[test]
fn scim_provisions_every_assigned_user_with_the_default_role() {
    each_product(Mode::Scim, false, |c| {
        for t in SYNC_TRIGGERS {
            let d = c.decide(t, &subject(true, &[top_group()], None));
            assert_eq!(d.action, Action::Provision);
            assert_eq!(d.role, c.default_role());
            assert_eq!(d.seat_tier, c.highest_free());
            assert!(!d.login_allowed, "not a login");
        }
    });
}

#[test]
fn scim_syncs_never_change_role_or_tier() {
    each_product(Mode::Scim, false, |c| {
        let d = c.decide(
            Trigger::DirectorySync,
            &subject(true, &[top_group(), premium_group()], Some((&c.default_role(), c.tier(1).as_deref()))),
        );
        assert_eq!(d.action, Action::None);
        assert_eq!(d.role, c.default_role());
    });
}

#[test]
fn scim_removes_members_who_are_not_assigned_users() {
    each_product(Mode::Scim, false, |c| {
        for source in [Source::Manual, Source::Jit, Source::Directory] {
            let mut s = subject(false, &[], Some((&c.second(), None)));
            if let Some(cur) = s.current.as_mut() {
                cur.source = source;
            }
            let d = c.decide(Trigger::SyncNow, &s);
            assert_eq!(d.action, Action::Remove, "the directory is authoritative ({source:?})");
        }
        assert_eq!(c.decide(Trigger::DirectorySync, &subject(false, &[], None)).action, Action::None);
    });
}

#[test]
fn scim_logins_do_not_provision_or_remove() {
    each_product(Mode::Scim, false, |c| {
        let d = c.decide(Trigger::Login, &subject(true, &[], None));
        assert_eq!((d.action, d.login_allowed), (Action::DenyLogin, false));
        let d = c.decide(Trigger::Login, &subject(true, &[], Some((&c.default_role(), None))));
        assert_eq!((d.action, d.login_allowed), (Action::AllowLogin, true));
        let d = c.decide(Trigger::Login, &subject(false, &[], Some((&c.default_role(), None))));
        assert_eq!((d.action, d.login_allowed), (Action::DenyLogin, false), "removal is the directory's job");
    });
}

// ---- scim + AGM ----

#[test]
fn scim_agm_provisions_people_in_a_mapped_group_with_the_mapped_role() {
    each_product(Mode::Scim, true, |c| {
        let d = c.decide(Trigger::DirectorySync, &subject(true, &[leads_group(), premium_group()], None));
        assert_eq!(d.action, Action::Provision);
        assert_eq!(d.role, c.second());
        assert_eq!(d.reasons[0], format!("{}: from {} (group LEADS)", c.second(), c.second()));
        assert_eq!(d.seat_tier, c.mapped(0));
        let d = c.decide(Trigger::DirectorySync, &subject(true, &[unmapped_group()], None));
        assert_eq!(d.action, Action::None, "no mapped group: not provisioned");
    });
}

#[test]
fn scim_agm_roles_follow_group_membership() {
    each_product(Mode::Scim, true, |c| {
        let d = c.decide(Trigger::DirectorySync, &subject(true, &[leads_group()], Some((&c.guardian(), None))));
        assert_eq!(d.action, Action::Update);
        assert_eq!(d.role, c.second());
        let d = c.decide(Trigger::SyncNow, &subject(true, &[leads_group()], Some((&c.second(), None))));
        assert_eq!(d.action, Action::None);
    });
}

#[test]
fn scim_agm_tiers_follow_group_membership() {
    for kind in [ProductKind::ClaudeTeam, ProductKind::ClaudeEnterpriseSeat, ProductKind::ClaudeEnterpriseUsage] {
        let c = Case::new(kind, Mode::Scim, true);
        let top = c.tier(0);
        let d = c.decide(
            Trigger::DirectorySync,
            &subject(true, &[leads_group(), basic_group()], Some((&c.second(), top.as_deref()))),
        );
        assert_eq!(d.action, Action::Update);
        assert_eq!(d.role, c.second());
        assert_eq!(d.seat_tier, c.mapped(1));
    }
}

#[test]
fn scim_agm_removes_people_without_a_mapped_group() {
    each_product(Mode::Scim, true, |c| {
        let d = c.decide(Trigger::DirectorySync, &subject(true, &[unmapped_group()], Some((&c.second(), None))));
        assert_eq!(d.action, Action::Remove);
        assert!(d.role.is_empty());
        let d = c.decide(Trigger::DirectorySync, &subject(false, &[top_group()], Some((&c.guardian(), None))));
        assert_eq!(d.action, Action::Remove, "deactivated or unassigned");
    });
}

#[test]
fn console_decisions_carry_no_seat_tier() {
    for (mode, agm) in [(Mode::Jit, false), (Mode::Jit, true), (Mode::Scim, false), (Mode::Scim, true)] {
        let c = Case::new(ProductKind::Console, mode, agm);
        let trigger = if mode == Mode::Jit { Trigger::Login } else { Trigger::DirectorySync };
        let d = c.decide(trigger, &subject(true, &[top_group()], None));
        assert_eq!(d.action, Action::Provision);
        assert_eq!(d.seat_tier, None);
    }
}
