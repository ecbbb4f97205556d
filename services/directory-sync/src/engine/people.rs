//! The people of a run. A run starts from *seeds* — mirror users it was told about
//! (a push, a pull, a queue entry, a listing of a directory) or members of an org —
//! and turns them into persons, each with everything the parent's directories say of
//! them ([`Evidence`]) and what that adds up to ([`Verdict`]).
//!
//! A person is membership's person: seeds are resolved through `LookupMembers`
//! (identity link first, then email), and a person's sightings are the mirror users
//! their identity links name in any directory of the parent (which alone may say they
//! left), plus mirror users of the parent with their email (which may only say they
//! are assigned).

use std::collections::{HashMap, HashSet};

use muster_proto::membership::v1 as mpb;

use crate::domain::directory::Directory;
use crate::domain::evidence::{Evidence, Sighting, Verdict, verdict};
use crate::domain::mirror::member_ref;
use crate::domain::run::SyncRun;
use crate::error::SyncError;
use crate::store::UserWithGroups;

use super::Engine;

/// A mirror user a run was told about (it may have been deleted since).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MirrorRef {
    /// Its directory.
    pub directory_id: String,
    /// Its mirror id.
    pub user_id: String,
    /// Its email as last known (lowercase; kept on queue entries of deleted users).
    pub email: String,
    /// Its name as last known.
    pub display_name: String,
}

/// Where a person comes into a run from.
#[derive(Clone, Debug)]
pub(crate) enum Seed {
    /// A mirror user.
    Mirror(MirrorRef),
    /// A member of the org (with their person's links).
    Member(Box<mpb::Member>),
}

/// A person with what the parent's directories say of them.
#[derive(Clone, Debug)]
pub(crate) struct Person {
    /// Their member in the org being reconciled.
    pub member: Option<mpb::Member>,
    /// Membership's person, with their identity links (none for someone new).
    pub user: Option<mpb::User>,
    /// The mirror users that brought them into the run.
    pub seeds: Vec<MirrorRef>,
    /// What the directories say.
    pub evidence: Evidence,
    /// What it adds up to.
    pub verdict: Verdict,
}

impl Person {
    /// The sighting that speaks for them first: an active linked one, else any active,
    /// else a linked one, else any.
    fn primary(&self) -> Option<&Sighting> {
        let s = &self.evidence.sightings;
        s.iter()
            .find(|x| x.active && x.linked)
            .or_else(|| s.iter().find(|x| x.active))
            .or_else(|| s.iter().find(|x| x.linked))
            .or_else(|| s.first())
    }

    /// How runs and previews refer to them: a mirror user id, else `member:<id>`.
    pub fn user_ref(&self) -> String {
        match (self.primary(), self.seeds.first(), &self.member) {
            (Some(s), _, _) => s.user_id.clone(),
            (None, Some(seed), _) => seed.user_id.clone(),
            (None, None, Some(m)) => member_ref(&m.id),
            (None, None, None) => String::new(),
        }
    }

    /// Their email: the member's, else what the directories say.
    pub fn email(&self) -> String {
        if let Some(u) = self.member.as_ref().and_then(|m| m.user.as_ref()) {
            return u.email.clone();
        }
        self.primary()
            .and_then(|s| s.email.clone())
            .or_else(|| self.seeds.first().map(|s| s.email.clone()))
            .unwrap_or_default()
    }

    /// Their name.
    pub fn display_name(&self) -> String {
        if let Some(u) = self.member.as_ref().and_then(|m| m.user.as_ref()) {
            return u.display_name.clone();
        }
        self.primary()
            .map(|s| s.display_name.clone())
            .or_else(|| self.seeds.first().map(|s| s.display_name.clone()))
            .unwrap_or_default()
    }

    fn linked(&self, dir: &str, id: &str) -> bool {
        self.user.as_ref().is_some_and(|u| u.links.iter().any(|l| l.directory_id == dir && l.external_id == id))
    }

    /// The identity membership resolves them by.
    pub fn identity(&self) -> mpb::Identity {
        match self.primary() {
            Some(s) => mpb::Identity {
                directory_id: s.directory_id.clone(),
                external_id: s.user_id.clone(),
                email: s.email.clone().unwrap_or_default(),
                display_name: s.display_name.clone(),
            },
            None => match self.seeds.first() {
                Some(seed) => mpb::Identity {
                    directory_id: seed.directory_id.clone(),
                    external_id: seed.user_id.clone(),
                    email: seed.email.clone(),
                    display_name: seed.display_name.clone(),
                },
                None => mpb::Identity { email: self.email(), display_name: self.display_name(), ..Default::default() },
            },
        }
    }

    /// Their other active identities in the parent's directories, which membership
    /// links to them (so the person is found by link from then on, whatever their email).
    pub fn also_known_as(&self) -> Vec<mpb::Identity> {
        let primary = self.primary().map(|s| (s.directory_id.clone(), s.user_id.clone()));
        self.evidence
            .sightings
            .iter()
            .filter(|s| s.active && Some((s.directory_id.clone(), s.user_id.clone())) != primary)
            .map(|s| mpb::Identity {
                directory_id: s.directory_id.clone(),
                external_id: s.user_id.clone(),
                email: s.email.clone().unwrap_or_default(),
                display_name: s.display_name.clone(),
            })
            .collect()
    }

    /// Whether membership should hear of them even when nothing about their
    /// membership changes: an active identity is not linked to them yet, or a linked
    /// one says an email or name the person does not have (an IdP change to follow).
    pub fn needs_learning(&self) -> bool {
        let Some(user) = &self.user else { return false };
        let unlinked = self.evidence.sightings.iter().any(|s| s.active && !self.linked(&s.directory_id, &s.user_id));
        // Only the primary identity is compared: two directories may spell a name two
        // ways for ever, and membership follows each only when it changes.
        let differs = self.primary().filter(|s| s.active).is_some_and(|s| {
            s.email.as_deref().is_some_and(|e| !e.is_empty() && e != user.email)
                || (!s.display_name.is_empty() && s.display_name != user.display_name)
        });
        unlinked || differs
    }
}

fn sighting(u: &UserWithGroups, linked: bool) -> Sighting {
    let (m, groups) = u;
    Sighting {
        directory_id: m.directory_id.clone(),
        user_id: m.id.clone(),
        email: m.email.clone(),
        display_name: m.display_name.clone(),
        active: m.active,
        linked,
        groups: groups.clone(),
    }
}

/// A person being put together.
struct Draft {
    member: Option<mpb::Member>,
    user: Option<mpb::User>,
    seeds: Vec<MirrorRef>,
}

impl Engine {
    /// Turns seeds into the people of one org, each with their evidence and verdict.
    /// With `skip_members`, people who are members of the org are left out (a full
    /// run has decided them already from the member side).
    pub(crate) async fn people(
        &self,
        run: &mut SyncRun,
        org_id: &str,
        dirs: &[Directory],
        seeds: Vec<Seed>,
        skip_members: bool,
    ) -> Result<Vec<Person>, SyncError> {
        let mirror: Vec<MirrorRef> = seeds
            .iter()
            .filter_map(|s| match s {
                Seed::Mirror(m) => Some(m.clone()),
                Seed::Member(_) => None,
            })
            .collect();
        let looked_up = if mirror.is_empty() {
            Vec::new()
        } else {
            let identities: Vec<mpb::Identity> = mirror
                .iter()
                .map(|m| mpb::Identity {
                    directory_id: m.directory_id.clone(),
                    external_id: m.user_id.clone(),
                    email: m.email.clone(),
                    display_name: m.display_name.clone(),
                })
                .collect();
            self.patient(run, || self.up.lookup_members(org_id, identities.clone())).await?
        };

        // One draft per person: by membership's person id, else by email (membership
        // would make one person of one email), else by the mirror user itself.
        let mut order: Vec<String> = Vec::new();
        let mut drafts: HashMap<String, Draft> = HashMap::new();
        let mut add = |key: String, member: Option<mpb::Member>, user: Option<mpb::User>, seed: Option<MirrorRef>| {
            let d = drafts.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Draft { member: None, user: None, seeds: Vec::new() }
            });
            d.member = d.member.take().or(member);
            d.user = d.user.take().or(user);
            d.seeds.extend(seed);
        };
        let mut mirror_answers = looked_up.into_iter();
        for seed in seeds {
            match seed {
                Seed::Member(m) => {
                    let user = m.user.clone();
                    let key = format!("u:{}", user.as_ref().map(|u| u.id.as_str()).unwrap_or(&m.id));
                    add(key, Some(*m), user, None);
                }
                Seed::Mirror(r) => {
                    let (member, user) = mirror_answers.next().unwrap_or((None, None));
                    let key = match (&user, r.email.is_empty()) {
                        (Some(u), _) => format!("u:{}", u.id),
                        (None, false) => format!("e:{}", r.email),
                        (None, true) => format!("m:{}:{}", r.directory_id, r.user_id),
                    };
                    add(key, member, user, Some(r));
                }
            }
        }
        let drafts: Vec<Draft> = order
            .into_iter()
            .filter_map(|k| drafts.remove(&k))
            .filter(|d| !(skip_members && d.member.is_some()))
            .collect();

        // Everything the parent's directories hold on them, in two reads.
        let dir_ids: HashSet<&str> = dirs.iter().map(|d| d.id.as_str()).collect();
        let mut refs: HashSet<(String, String)> = HashSet::new();
        let mut emails: HashSet<String> = HashSet::new();
        for d in &drafts {
            if let Some(u) = &d.user {
                for l in u.links.iter().filter(|l| dir_ids.contains(l.directory_id.as_str())) {
                    refs.insert((l.directory_id.clone(), l.external_id.clone()));
                }
                if !u.email.is_empty() {
                    emails.insert(u.email.clone());
                }
            }
            for s in &d.seeds {
                refs.insert((s.directory_id.clone(), s.user_id.clone()));
                if !s.email.is_empty() {
                    emails.insert(s.email.clone());
                }
            }
        }
        let by_ref: HashMap<(String, String), UserWithGroups> = self
            .store
            .users_by_refs(refs.into_iter().collect())
            .await?
            .into_iter()
            .map(|u| ((u.0.directory_id.clone(), u.0.id.clone()), u))
            .collect();
        let mut by_email: HashMap<String, Vec<UserWithGroups>> = HashMap::new();
        if !emails.is_empty() {
            let ids = dirs.iter().map(|d| d.id.clone()).collect();
            for u in self.store.users_by_emails(ids, emails.into_iter().collect()).await? {
                if let Some(e) = u.0.email.clone() {
                    by_email.entry(e).or_default().push(u);
                }
            }
        }

        Ok(drafts
            .into_iter()
            .map(|d| {
                let links: HashSet<(String, String)> = d
                    .user
                    .iter()
                    .flat_map(|u| u.links.iter())
                    .filter(|l| dir_ids.contains(l.directory_id.as_str()))
                    .map(|l| (l.directory_id.clone(), l.external_id.clone()))
                    .collect();
                let mut evidence = Evidence::default();
                let mut seen: HashSet<(String, String)> = HashSet::new();
                let mut sorted_links: Vec<&(String, String)> = links.iter().collect();
                sorted_links.sort();
                for key in sorted_links {
                    match by_ref.get(key) {
                        Some(u) => {
                            seen.insert(key.clone());
                            evidence.sightings.push(sighting(u, true));
                        }
                        None => evidence.deleted_in.push(key.0.clone()),
                    }
                }
                for s in &d.seeds {
                    let key = (s.directory_id.clone(), s.user_id.clone());
                    if let Some(u) = by_ref.get(&key)
                        && seen.insert(key)
                    {
                        evidence.sightings.push(sighting(u, false));
                    }
                }
                let mut person_emails: Vec<String> = d.seeds.iter().map(|s| s.email.clone()).collect();
                person_emails.extend(d.user.as_ref().map(|u| u.email.clone()));
                person_emails.sort();
                person_emails.dedup();
                for e in person_emails.iter().filter(|e| !e.is_empty()) {
                    for u in by_email.get(e).into_iter().flatten() {
                        let key = (u.0.directory_id.clone(), u.0.id.clone());
                        if seen.insert(key.clone()) {
                            evidence.sightings.push(sighting(u, links.contains(&key)));
                        }
                    }
                }
                evidence.deleted_in.sort();
                evidence.deleted_in.dedup();
                let verdict = verdict(dirs, &evidence);
                Person { member: d.member, user: d.user, seeds: d.seeds, evidence, verdict }
            })
            .collect())
    }
}
