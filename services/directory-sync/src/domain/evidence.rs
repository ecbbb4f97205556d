//! What a parent's directories say of one person, together (the reconcile rules in
//! docs/directory-sync.md): a person is assigned when any directory of the parent
//! assigns them, with the union of their groups there; they are gone only when a
//! directory that knows them (by identity link) deactivated or deleted them, or when
//! no directory assigns them and one of the parent's directories is authoritative
//! for people it does not know. Otherwise nobody may say they left, and they stay.
//!
//! Pure: the engine gathers the sightings (by the person's identity links into the
//! parent's directories, and by email), this module says what they add up to.

use std::collections::BTreeMap;

use super::directory::{Directory, State};

/// One mirror user of the parent that speaks for the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// Its directory.
    pub directory_id: String,
    /// Its mirror id.
    pub user_id: String,
    /// Its email (lowercase).
    pub email: Option<String>,
    /// Its name.
    pub display_name: String,
    /// Active (assigned) in the IdP.
    pub active: bool,
    /// The person is linked to this very user (membership's identity link), not just
    /// someone with the same email: only a linked user can say the person left.
    pub linked: bool,
    /// Its direct groups: (mirror group id, name).
    pub groups: Vec<(String, String)>,
}

/// Everything the parent's directories say of one person.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The mirror users that speak for them.
    pub sightings: Vec<Sighting>,
    /// Directories of the parent the person is linked to whose linked user is no
    /// longer in the mirror (deleted in the IdP, or swept by a full listing).
    pub deleted_in: Vec<String>,
}

/// What the directories add up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Assigned by at least one directory; their groups, over every assigning one.
    Assigned {
        /// (mirror group id, name), each once.
        groups: Vec<(String, String)>,
    },
    /// Not assigned, and a directory may say so.
    Gone {
        /// Why, for the run's items and the audit log.
        why: String,
    },
    /// Not assigned, but no directory may say they left: they stay as they are.
    Unknown {
        /// Why they are kept.
        why: String,
    },
}

fn name_of<'a>(dirs: &'a [Directory], id: &'a str) -> &'a str {
    dirs.iter().find(|d| d.id == id).map(|d| d.display_name.as_str()).unwrap_or(id)
}

fn leaving(dirs: &[Directory], id: &str) -> bool {
    dirs.iter().find(|d| d.id == id).is_none_or(|d| d.state == State::Leaving)
}

/// The verdict of `dirs` (every directory of the parent) on one person.
pub fn verdict(dirs: &[Directory], evidence: &Evidence) -> Verdict {
    let assigning: Vec<&Sighting> =
        evidence.sightings.iter().filter(|s| s.active && !leaving(dirs, &s.directory_id)).collect();
    if !assigning.is_empty() {
        let mut groups = BTreeMap::new();
        for s in assigning {
            for (id, name) in &s.groups {
                groups.entry(id.clone()).or_insert_with(|| name.clone());
            }
        }
        return Verdict::Assigned { groups: groups.into_iter().collect() };
    }
    // Who knows them and says they left.
    let mut said = Vec::new();
    for s in evidence.sightings.iter().filter(|s| s.linked) {
        let name = name_of(dirs, &s.directory_id);
        if leaving(dirs, &s.directory_id) {
            said.push(format!("directory {name} is being deleted"));
        } else if !s.active {
            said.push(format!("deactivated or unassigned in directory {name}"));
        }
    }
    for d in &evidence.deleted_in {
        said.push(format!("deleted in directory {}", name_of(dirs, d)));
    }
    said.sort();
    said.dedup();
    if !said.is_empty() {
        return Verdict::Gone { why: said.join("; ") };
    }
    if let Some(d) = dirs.iter().find(|d| d.removes_unknown()) {
        return Verdict::Gone {
            why: format!("assigned by no directory of the parent, and directory {} is authoritative", d.display_name),
        };
    }
    Verdict::Unknown {
        why: "kept: no directory of the parent assigns them, and none that knows them removed them; \
              no directory is authoritative for people it does not know"
            .into(),
    }
}

/// What a person's next login would find, as the parent's directories predict it (for
/// previews of `jit` settings): the IdP lets them in if a directory assigns them; a
/// directory that has them deactivated or deleted predicts a refused login (whether
/// or not they are linked: the login itself, not this prediction, removes anyone);
/// people no directory has are left to the login, which alone knows.
pub fn predicted_at_login(dirs: &[Directory], evidence: &Evidence) -> Verdict {
    match verdict(dirs, evidence) {
        Verdict::Assigned { groups } => Verdict::Assigned { groups },
        _ => {
            let mut said: Vec<String> = evidence
                .sightings
                .iter()
                .filter(|s| !s.active || leaving(dirs, &s.directory_id))
                .map(|s| format!("not assigned in directory {}", name_of(dirs, &s.directory_id)))
                .chain(evidence.deleted_in.iter().map(|d| format!("deleted in directory {}", name_of(dirs, d))))
                .collect();
            said.sort();
            said.dedup();
            if said.is_empty() {
                Verdict::Unknown { why: "in no directory of the parent: their next login decides".into() }
            } else {
                Verdict::Gone { why: said.join("; ") }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::brake::Brake;
    use crate::domain::directory::{Authority, Kind};

    fn dir(id: &str, kind: Kind, authority: Authority, proven: bool, state: State) -> Directory {
        Directory {
            id: id.into(),
            parent_id: "p".into(),
            kind,
            display_name: id.to_uppercase(),
            config_json: "{}".into(),
            sync_interval_secs: 0,
            brake: Brake::default(),
            state,
            last_error: String::new(),
            scim_log_days: 0,
            authority,
            proven_at: proven.then(chrono::Utc::now),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn seen(dir: &str, active: bool, linked: bool, groups: &[&str]) -> Sighting {
        Sighting {
            directory_id: dir.into(),
            user_id: format!("{dir}-u"),
            email: Some("p@x.test".into()),
            display_name: "P".into(),
            active,
            linked,
            groups: groups.iter().map(|g| (format!("{dir}-{g}"), g.to_string())).collect(),
        }
    }

    fn scim(id: &str) -> Directory {
        dir(id, Kind::SCIM, Authority::ProvisioningOnly, false, State::Active)
    }

    fn okta(id: &str, proven: bool) -> Directory {
        dir(id, Kind::from_name("okta").unwrap(), Authority::Authoritative, proven, State::Active)
    }

    #[test]
    fn any_directory_assigning_wins_with_the_union_of_groups() {
        let dirs = [scim("a"), okta("b", true)];
        let ev = Evidence {
            sightings: vec![seen("a", true, true, &["admins"]), seen("b", false, true, &["everyone"])],
            deleted_in: vec![],
        };
        assert_eq!(verdict(&dirs, &ev), Verdict::Assigned { groups: vec![("a-admins".into(), "admins".into())] });
        let ev = Evidence {
            sightings: vec![seen("a", true, true, &["admins"]), seen("b", true, false, &["everyone"])],
            deleted_in: vec!["c".into()],
        };
        match verdict(&dirs, &ev) {
            Verdict::Assigned { groups } => assert_eq!(groups.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_directory_that_knows_them_may_say_they_left() {
        let dirs = [scim("a")];
        let deactivated = Evidence { sightings: vec![seen("a", false, true, &[])], deleted_in: vec![] };
        assert!(matches!(verdict(&dirs, &deactivated), Verdict::Gone { why } if why.contains("deactivated")));
        let deleted = Evidence { sightings: vec![], deleted_in: vec!["a".into()] };
        assert!(matches!(verdict(&dirs, &deleted), Verdict::Gone { why } if why.contains("deleted in directory A")));
    }

    #[test]
    fn an_email_match_never_says_they_left() {
        let dirs = [scim("a")];
        let ev = Evidence { sightings: vec![seen("a", false, false, &[])], deleted_in: vec![] };
        assert!(matches!(verdict(&dirs, &ev), Verdict::Unknown { .. }));
    }

    #[test]
    fn silence_counts_only_from_a_proven_authoritative_directory() {
        let nobody = Evidence::default();
        assert!(matches!(verdict(&[scim("a")], &nobody), Verdict::Unknown { .. }));
        assert!(matches!(verdict(&[okta("b", false)], &nobody), Verdict::Unknown { .. }), "never listed in full");
        assert!(
            matches!(verdict(&[scim("a"), okta("b", true)], &nobody), Verdict::Gone { why } if why.contains("B is authoritative"))
        );
        let marked = dir("a", Kind::SCIM, Authority::Authoritative, false, State::Active);
        assert!(matches!(verdict(&[marked], &nobody), Verdict::Gone { .. }));
        let leaving = dir("b", Kind::from_name("okta").unwrap(), Authority::Authoritative, true, State::Leaving);
        assert!(
            matches!(verdict(&[leaving], &nobody), Verdict::Unknown { .. }),
            "a leaving directory removes only its own"
        );
    }

    #[test]
    fn a_leaving_directory_assigns_nobody_but_lets_its_own_go() {
        let dirs = [dir("a", Kind::SCIM, Authority::ProvisioningOnly, false, State::Leaving), scim("b")];
        let only_a = Evidence { sightings: vec![seen("a", true, true, &["admins"])], deleted_in: vec![] };
        assert!(matches!(verdict(&dirs, &only_a), Verdict::Gone { why } if why.contains("being deleted")));
        let also_b = Evidence {
            sightings: vec![seen("a", true, true, &["admins"]), seen("b", true, true, &["everyone"])],
            deleted_in: vec![],
        };
        assert_eq!(
            verdict(&dirs, &also_b),
            Verdict::Assigned { groups: vec![("b-everyone".into(), "everyone".into())] }
        );
    }

    #[test]
    fn a_login_is_predicted_from_any_sighting() {
        let dirs = [scim("a")];
        // An email match cannot remove anyone, but it predicts what the IdP says at login.
        let deactivated = Evidence { sightings: vec![seen("a", false, false, &[])], deleted_in: vec![] };
        assert!(matches!(verdict(&dirs, &deactivated), Verdict::Unknown { .. }));
        assert!(matches!(predicted_at_login(&dirs, &deactivated), Verdict::Gone { .. }));
        let active = Evidence { sightings: vec![seen("a", true, false, &["admins"])], deleted_in: vec![] };
        assert!(matches!(predicted_at_login(&dirs, &active), Verdict::Assigned { .. }));
        let authoritative = [okta("b", true)];
        assert!(
            matches!(predicted_at_login(&authoritative, &Evidence::default()), Verdict::Unknown { .. }),
            "absence from the mirror predicts nothing about a login"
        );
    }

    #[test]
    fn a_paused_directory_still_assigns() {
        let dirs = [dir("a", Kind::SCIM, Authority::ProvisioningOnly, false, State::Paused)];
        let ev = Evidence { sightings: vec![seen("a", true, true, &[])], deleted_in: vec![] };
        assert!(matches!(verdict(&dirs, &ev), Verdict::Assigned { .. }));
    }
}
