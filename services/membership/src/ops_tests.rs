//! The transaction rules on an in-memory [`Ledger`]: idempotency, seats and the
//! guardian guard across a batch.

use std::collections::HashMap;

use super::*;
use crate::domain::member::IdentityLink;
use crate::domain::seats::TierSeats;
use crate::store::LinkedUsers;

#[derive(Default)]
struct MemoryLedger {
    users: Vec<User>,
    links: HashMap<(String, String), LinkRecord>,
    members: Vec<Member>,
    seats: HashMap<String, Option<i64>>,
    audit: Vec<AuditRecord>,
    events: Vec<EventRecord>,
    applied: HashMap<(String, String), (String, String)>,
}

impl Ledger for MemoryLedger {
    fn lock_org(&mut self, _org_id: &str) -> Result<(), MembershipError> {
        Ok(())
    }
    fn user_by_email(&mut self, email: &str) -> Result<Option<User>, MembershipError> {
        Ok(self.users.iter().find(|u| u.email == email).cloned())
    }
    fn user_by_link(&mut self, d: &str, x: &str) -> Result<Option<(User, LinkRecord)>, MembershipError> {
        let record = self.links.get(&(d.to_string(), x.to_string())).cloned();
        Ok(record.and_then(|r| self.users.iter().find(|u| u.id == r.user_id).cloned().map(|u| (u, r))))
    }
    fn users_for(
        &mut self,
        links: &[(String, String)],
        emails: &[String],
    ) -> Result<(LinkedUsers, HashMap<String, User>), MembershipError> {
        let mut by_link = HashMap::new();
        for l in links {
            if let Some(u) = self.user_by_link(&l.0, &l.1)? {
                by_link.insert(l.clone(), u);
            }
        }
        let mut by_email = HashMap::new();
        for e in emails {
            if let Some(u) = self.user_by_email(e)? {
                by_email.insert(e.clone(), u);
            }
        }
        Ok((by_link, by_email))
    }
    fn members_of(&mut self, org_id: &str, user_ids: &[String]) -> Result<Vec<Member>, MembershipError> {
        Ok(self.members.iter().filter(|m| m.org_id == org_id && user_ids.contains(&m.user.id)).cloned().collect())
    }
    fn members_by_id(&mut self, org_id: &str, ids: &[String]) -> Result<Vec<Member>, MembershipError> {
        Ok(self.members.iter().filter(|m| m.org_id == org_id && ids.contains(&m.id)).cloned().collect())
    }
    fn memberships_of_user(&mut self, user_id: &str) -> Result<Vec<Member>, MembershipError> {
        Ok(self.members.iter().filter(|m| m.user.id == user_id).cloned().collect())
    }
    fn links_of(&mut self, user_ids: &[String]) -> Result<HashMap<String, Vec<IdentityLink>>, MembershipError> {
        let mut out: HashMap<String, Vec<IdentityLink>> = HashMap::new();
        for ((d, x), r) in &self.links {
            if user_ids.contains(&r.user_id) {
                out.entry(r.user_id.clone())
                    .or_default()
                    .push(IdentityLink { directory_id: d.clone(), external_id: x.clone() });
            }
        }
        Ok(out)
    }
    fn insert_users(&mut self, users: &[User]) -> Result<(), MembershipError> {
        for u in users {
            assert!(self.users.iter().all(|x| x.email != u.email), "email unique");
            self.users.push(u.clone());
        }
        Ok(())
    }
    fn insert_links(&mut self, links: &[NewLink]) -> Result<(), MembershipError> {
        for l in links {
            let record =
                LinkRecord { user_id: l.user_id.clone(), email: l.email.clone(), display_name: l.display_name.clone() };
            assert!(
                self.links.insert((l.directory_id.clone(), l.external_id.clone()), record).is_none(),
                "link unique"
            );
        }
        Ok(())
    }
    fn update_links(&mut self, links: &[NewLink]) -> Result<(), MembershipError> {
        for l in links {
            let r = self.links.get_mut(&(l.directory_id.clone(), l.external_id.clone())).expect("link exists");
            assert_eq!(r.user_id, l.user_id, "a link never moves to another person");
            r.email = l.email.clone();
            r.display_name = l.display_name.clone();
        }
        Ok(())
    }
    fn update_users(&mut self, users: &[User]) -> Result<(), MembershipError> {
        for u in users {
            assert!(self.users.iter().all(|x| x.id == u.id || x.email != u.email), "email unique");
            let stored = self.users.iter_mut().find(|x| x.id == u.id).expect("user exists");
            stored.email = u.email.clone();
            stored.display_name = u.display_name.clone();
        }
        for m in &mut self.members {
            if let Some(u) = users.iter().find(|u| u.id == m.user.id) {
                m.user.email = u.email.clone();
                m.user.display_name = u.display_name.clone();
            }
        }
        Ok(())
    }
    fn replace_members(&mut self, gone: &[String], rows: &[Member]) -> Result<(), MembershipError> {
        self.members.retain(|m| !gone.contains(&m.id));
        for r in rows {
            assert!(self.members.iter().all(|m| m.id != r.id), "member id unique");
            self.members.push(r.clone());
        }
        Ok(())
    }
    fn member(&mut self, org_id: &str, member_id: &str) -> Result<Option<Member>, MembershipError> {
        Ok(self.members.iter().find(|m| m.org_id == org_id && m.id == member_id).cloned())
    }
    fn member_of_user(&mut self, org_id: &str, user: &User) -> Result<Option<Member>, MembershipError> {
        Ok(self.members.iter().find(|m| m.org_id == org_id && m.user.id == user.id).cloned())
    }
    fn count_active_role(&mut self, org_id: &str, role: &str) -> Result<i64, MembershipError> {
        Ok(self.members.iter().filter(|m| m.org_id == org_id && m.role == role && m.status == Status::Active).count()
            as i64)
    }
    fn seat_ledger(&mut self, org_id: &str, tiers: &[String]) -> Result<SeatLedger, MembershipError> {
        Ok(SeatLedger::new(
            tiers
                .iter()
                .map(|t| TierSeats {
                    tier: t.clone(),
                    purchased: self.seats.get(t).copied().flatten(),
                    used: self
                        .members
                        .iter()
                        .filter(|m| m.org_id == org_id && m.status == Status::Active && m.seat_tier.as_ref() == Some(t))
                        .count() as i64,
                })
                .collect(),
        ))
    }
    fn set_seats(&mut self, _org_id: &str, tier: &str, purchased: Option<i64>) -> Result<(), MembershipError> {
        self.seats.insert(tier.to_string(), purchased);
        Ok(())
    }
    fn pending(&mut self, org_id: &str) -> Result<Vec<Member>, MembershipError> {
        let mut list: Vec<Member> = self
            .members
            .iter()
            .filter(|m| m.org_id == org_id && (m.status == Status::PendingSeat || m.wanted_seat_tier.is_some()))
            .cloned()
            .collect();
        list.sort_by(|a, b| (a.waiting_since, &a.id).cmp(&(b.waiting_since, &b.id)));
        Ok(list)
    }
    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), MembershipError> {
        self.audit.extend_from_slice(records);
        Ok(())
    }
    fn append_events(&mut self, events: &[EventRecord]) -> Result<(), MembershipError> {
        self.events.extend_from_slice(events);
        Ok(())
    }
    fn stored_apply(&mut self, org_id: &str, key: &str) -> Result<Option<(String, String)>, MembershipError> {
        Ok(self.applied.get(&(org_id.to_string(), key.to_string())).cloned())
    }
    fn store_apply(&mut self, org_id: &str, key: &str, hash: &str, answer: &str) -> Result<(), MembershipError> {
        self.applied.insert((org_id.to_string(), key.to_string()), (hash.to_string(), answer.to_string()));
        Ok(())
    }
}

fn product() -> OrgProduct {
    OrgProduct {
        org_id: "org".into(),
        roles: vec!["Owner".into(), "Admin".into(), "User".into()],
        seat_tiers: vec!["Premium".into(), "Standard".into()],
    }
}

fn desired(email: &str, want: Want, role: &str, tier: TierPref) -> Desired {
    Desired {
        identity: IdentityIn {
            directory_id: "dir".into(),
            external_id: format!("x-{email}"),
            email: email.into(),
            display_name: String::new(),
        },
        also_known_as: Vec::new(),
        member_id: None,
        want,
        role: role.into(),
        tier,
        reasons: vec!["test".into()],
    }
}

fn run<T>(ledger: &mut MemoryLedger, f: impl FnOnce(&mut Session<'_, MemoryLedger>) -> T) -> T {
    let p = product();
    let mut s = Session::begin(ledger, &p, "sync_run:r1".into()).unwrap();
    let out = f(&mut s);
    s.finish().unwrap();
    out
}

#[test]
fn the_same_key_applies_once() {
    let mut ledger = MemoryLedger::default();
    let items = vec![desired("a@x.test", Want::Member, "User", TierPref::HighestFree)];
    let (first, replayed) = run(&mut ledger, |s| apply_once(s, "org", "k1", "h1", &items, "dir").unwrap());
    assert!(!replayed);
    assert_eq!(first[0].outcome, Outcome::Applied);
    let (second, replayed) = run(&mut ledger, |s| apply_once(s, "org", "k1", "h1", &items, "dir").unwrap());
    assert!(replayed);
    assert_eq!(second, first);
    assert_eq!(ledger.members.len(), 1);
    assert_eq!(ledger.events.len(), 1, "a replay publishes nothing");
    let reused = run(&mut ledger, |s| apply_once(s, "org", "k1", "other", &items, "dir"));
    assert!(matches!(reused, Err(MembershipError::Refused { rule: "idempotency_key_reused", .. })));
}

#[test]
fn a_batch_never_takes_more_seats_than_bought() {
    let mut ledger = MemoryLedger::default();
    ledger.seats.insert("Premium".into(), Some(2));
    ledger.seats.insert("Standard".into(), Some(1));
    let items: Vec<Desired> =
        (0..5).map(|i| desired(&format!("u{i}@x.test"), Want::Member, "User", TierPref::HighestFree)).collect();
    let results = run(&mut ledger, |s| apply_batch(s, &items, "dir").unwrap());
    let outcomes: Vec<Outcome> = results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Applied, Outcome::Applied, Outcome::Applied, Outcome::PendingSeat, Outcome::PendingSeat]
    );
    ledger.seats.insert("Standard".into(), Some(2));
    let (done, still) = run(&mut ledger, |s| s.retry_waiting().unwrap());
    assert_eq!((done, still), (1, 1));
}

#[test]
fn the_last_guardian_is_held_within_a_batch() {
    let mut ledger = MemoryLedger::default();
    let owners = vec![
        desired("o1@x.test", Want::Member, "Owner", TierPref::HighestFree),
        desired("o2@x.test", Want::Member, "Owner", TierPref::HighestFree),
    ];
    run(&mut ledger, |s| apply_batch(s, &owners, "dir").unwrap());
    let gone = vec![
        desired("o1@x.test", Want::Gone, "", TierPref::Keep),
        desired("o2@x.test", Want::Gone, "", TierPref::Keep),
    ];
    let results = run(&mut ledger, |s| apply_batch(s, &gone, "dir").unwrap());
    assert_eq!(results[0].outcome, Outcome::Applied);
    assert_eq!(results[1].outcome, Outcome::HeldGuardian, "the guard counts removals made earlier in the batch");
    assert_eq!(ledger.members.len(), 1);
    assert!(ledger.audit.iter().any(|a| a.action == "member.held_guardian"));
}

#[test]
fn a_move_to_a_full_tier_keeps_the_seat_held() {
    let mut ledger = MemoryLedger::default();
    ledger.seats.insert("Premium".into(), Some(0));
    let add = vec![desired("a@x.test", Want::Member, "User", TierPref::Mapped("Standard".into()))];
    run(&mut ledger, |s| apply_batch(s, &add, "dir").unwrap());
    let up = vec![desired("a@x.test", Want::Member, "User", TierPref::Mapped("Premium".into()))];
    let results = run(&mut ledger, |s| apply_batch(s, &up, "dir").unwrap());
    assert_eq!(results[0].outcome, Outcome::PendingSeat);
    let m = &ledger.members[0];
    assert_eq!(
        (m.status, m.seat_tier.as_deref(), m.wanted_seat_tier.as_deref()),
        (Status::Active, Some("Standard"), Some("Premium"))
    );
    ledger.seats.insert("Premium".into(), Some(1));
    run(&mut ledger, |s| s.retry_waiting().unwrap());
    let m = &ledger.members[0];
    assert_eq!((m.seat_tier.as_deref(), m.wanted_seat_tier.as_deref()), (Some("Premium"), None));
}

#[test]
fn invalid_items_fail_alone() {
    let mut ledger = MemoryLedger::default();
    let items = vec![
        desired("a@x.test", Want::Member, "Wizard", TierPref::HighestFree),
        desired("b@x.test", Want::Member, "User", TierPref::HighestFree),
        desired("not-an-email", Want::Member, "User", TierPref::HighestFree),
    ];
    let results = run(&mut ledger, |s| apply_batch(s, &items, "dir").unwrap());
    let outcomes: Vec<Outcome> = results.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Error, Outcome::Applied, Outcome::Error]);
    assert!(results[0].error.contains("Wizard"));
}

#[test]
fn a_person_is_found_by_email_then_linked() {
    let mut ledger = MemoryLedger::default();
    let mut jit = desired("Ada@X.test", Want::Member, "User", TierPref::HighestFree);
    jit.identity.directory_id = "sso".into();
    run(&mut ledger, |s| apply_one(s, &jit, Source::Jit, None).unwrap());
    let scim = desired("ada@x.test", Want::Member, "Admin", TierPref::Keep);
    // Found by email, then linked: a removal by the same identity is no longer "by email".
    let r = run(&mut ledger, |s| apply_one(s, &scim, Source::Directory, Some("dir")).unwrap());
    assert_eq!(r.outcome, Outcome::Applied);
    assert_eq!(ledger.users.len(), 1, "the same person across sources");
    assert_eq!(ledger.links.len(), 2);
    assert_eq!(ledger.members[0].source, Source::Jit, "the source is who put them there");
    assert_eq!(ledger.members[0].role, "Admin");
}

fn in_org(ledger: &MemoryLedger, email: &str) -> Option<Member> {
    ledger.members.iter().find(|m| m.user.email == email).cloned()
}

#[test]
fn an_email_change_in_the_idp_updates_the_person_once_and_keeps_the_role() {
    let mut ledger = MemoryLedger::default();
    let add = desired("old@x.test", Want::Member, "Admin", TierPref::HighestFree);
    run(&mut ledger, |s| apply_batch(s, std::slice::from_ref(&add), "dir").unwrap());
    let id = in_org(&ledger, "old@x.test").unwrap().id;
    // The same identity (directory, external id) now reports a new email.
    let mut changed = desired("old@x.test", Want::Nothing, "", TierPref::Keep);
    changed.identity.email = "New@X.test".into();
    run(&mut ledger, |s| apply_batch(s, &[changed.clone()], "dir").unwrap());
    let m = in_org(&ledger, "new@x.test").expect("same member, new email");
    assert_eq!((m.id.as_str(), m.role.as_str()), (id.as_str(), "Admin"));
    assert_eq!(ledger.users.len(), 1);
    let entries: Vec<&AuditRecord> = ledger.audit.iter().filter(|a| a.action == "member.updated").collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].reasons[0].contains("old@x.test -> new@x.test"), "{:?}", entries[0].reasons);
    // Said again: nothing new.
    run(&mut ledger, |s| apply_batch(s, &[changed], "dir").unwrap());
    assert_eq!(ledger.audit.iter().filter(|a| a.action == "member.updated").count(), 1);
}

#[test]
fn two_directories_that_disagree_do_not_flip_the_person() {
    let mut ledger = MemoryLedger::default();
    let mut a = desired("ann@x.test", Want::Member, "User", TierPref::HighestFree);
    a.identity.directory_id = "a".into();
    let mut b = a.clone();
    b.identity.directory_id = "b".into();
    run(&mut ledger, |s| apply_batch(s, &[a.clone()], "a").unwrap());
    run(&mut ledger, |s| apply_batch(s, &[b.clone()], "b").unwrap());
    assert_eq!(ledger.links.len(), 2);
    // Directory a changes her email; b still says the old one.
    a.identity.email = "ann.new@x.test".into();
    for _ in 0..3 {
        run(&mut ledger, |s| apply_batch(s, &[a.clone()], "a").unwrap());
        run(&mut ledger, |s| apply_batch(s, &[b.clone()], "b").unwrap());
    }
    assert!(in_org(&ledger, "ann.new@x.test").is_some());
    assert_eq!(ledger.audit.iter().filter(|a| a.action == "member.updated").count(), 1);
}

#[test]
fn an_email_someone_else_has_is_not_taken() {
    let mut ledger = MemoryLedger::default();
    let items = vec![
        desired("a@x.test", Want::Member, "User", TierPref::HighestFree),
        desired("b@x.test", Want::Member, "User", TierPref::HighestFree),
    ];
    run(&mut ledger, |s| apply_batch(s, &items, "dir").unwrap());
    let mut clash = items[0].clone();
    clash.identity.email = "b@x.test".into();
    let r = run(&mut ledger, |s| apply_batch(s, &[clash], "dir").unwrap());
    assert!(r[0].error.contains("another person has that email"), "{r:?}");
    assert!(in_org(&ledger, "a@x.test").is_some());
}

#[test]
fn an_email_match_alone_never_removes() {
    let mut ledger = MemoryLedger::default();
    let mut manual = desired("m@x.test", Want::Member, "User", TierPref::HighestFree);
    manual.identity.directory_id = String::new();
    manual.identity.external_id = String::new();
    run(&mut ledger, |s| apply_batch(s, &[manual], "").unwrap());
    // Another identity with the same email says "gone": not proof.
    let gone = desired("m@x.test", Want::Gone, "", TierPref::Keep);
    let r = run(&mut ledger, |s| apply_batch(s, &[gone], "dir").unwrap());
    assert_eq!(r[0].outcome, Outcome::Unchanged);
    assert!(r[0].error.contains("email only"), "{r:?}");
    assert_eq!(ledger.members.len(), 1);
    // By member id it is exact.
    let mut by_id = desired("m@x.test", Want::Gone, "", TierPref::Keep);
    by_id.member_id = Some(ledger.members[0].id.clone());
    let r = run(&mut ledger, |s| apply_batch(s, &[by_id], "dir").unwrap());
    assert_eq!(r[0].outcome, Outcome::Applied);
    assert!(ledger.members.is_empty());
}

#[test]
fn other_identities_of_a_person_are_linked() {
    let mut ledger = MemoryLedger::default();
    let mut item = desired("p@x.test", Want::Member, "User", TierPref::HighestFree);
    let mut other = item.identity.clone();
    other.directory_id = "dir2".into();
    other.external_id = "y-1".into();
    item.also_known_as = vec![other];
    run(&mut ledger, |s| apply_batch(s, &[item], "dir").unwrap());
    let user = &ledger.users[0].id;
    assert_eq!(ledger.links.values().filter(|l| &l.user_id == user).count(), 2);
}

#[test]
fn a_freed_seat_goes_to_the_longest_waiting_at_once() {
    let mut ledger = MemoryLedger::default();
    ledger.seats.insert("Premium".into(), Some(1));
    ledger.seats.insert("Standard".into(), Some(0));
    let first = vec![desired("a@x.test", Want::Member, "User", TierPref::HighestFree)];
    run(&mut ledger, |s| apply_batch(s, &first, "dir").unwrap());
    // Two people wait, in this order.
    run(&mut ledger, |s| {
        apply_batch(s, &[desired("w1@x.test", Want::Member, "User", TierPref::HighestFree)], "dir").unwrap()
    });
    run(&mut ledger, |s| {
        apply_batch(s, &[desired("w2@x.test", Want::Member, "User", TierPref::HighestFree)], "dir").unwrap()
    });
    assert_eq!(in_org(&ledger, "w1@x.test").unwrap().status, Status::PendingSeat);
    // A removal frees the seat: w1 gets it in the same transaction, w2 still waits.
    run(&mut ledger, |s| apply_batch(s, &[desired("a@x.test", Want::Gone, "", TierPref::Keep)], "dir").unwrap());
    assert_eq!(in_org(&ledger, "w1@x.test").unwrap().status, Status::Active);
    assert_eq!(in_org(&ledger, "w2@x.test").unwrap().status, Status::PendingSeat);
}

#[test]
fn a_dry_session_writes_nothing_and_sees_its_own_changes() {
    let mut ledger = MemoryLedger::default();
    ledger.seats.insert("Premium".into(), Some(1));
    ledger.seats.insert("Standard".into(), Some(0));
    run(&mut ledger, |s| {
        apply_batch(s, &[desired("a@x.test", Want::Member, "Owner", TierPref::HighestFree)], "dir").unwrap()
    });
    let p = product();
    let batches = vec![
        ("dir".to_string(), vec![desired("b@x.test", Want::Member, "User", TierPref::HighestFree)]),
        ("dir".to_string(), vec![desired("a@x.test", Want::Gone, "", TierPref::Keep)]),
    ];
    let audit_before = ledger.audit.len();
    let out = {
        let mut s = Session::begin_dry(&mut ledger, &p, "preview".into()).unwrap();
        let out = preview_batches(&mut s, &batches).unwrap();
        s.finish().unwrap();
        out
    };
    // b waits in batch 1; a is the last Owner, so the guard holds the removal: b stays pending.
    assert_eq!(out[0][0].outcome, Outcome::PendingSeat);
    assert_eq!(out[1][0].outcome, Outcome::HeldGuardian);
    assert_eq!(ledger.members.len(), 1, "nothing written");
    assert_eq!(ledger.users.len(), 1);
    assert_eq!(ledger.audit.len(), audit_before);
    // With a second Owner the removal goes through and b gets the freed seat at the end.
    ledger.seats.insert("Standard".into(), Some(1));
    run(&mut ledger, |s| {
        apply_batch(s, &[desired("o2@x.test", Want::Member, "Owner", TierPref::HighestFree)], "dir").unwrap()
    });
    ledger.seats.insert("Standard".into(), Some(1));
    let batches = vec![
        ("dir".to_string(), vec![desired("b@x.test", Want::Member, "User", TierPref::HighestFree)]),
        ("dir".to_string(), vec![desired("a@x.test", Want::Gone, "", TierPref::Keep)]),
    ];
    let mut s = Session::begin_dry(&mut ledger, &p, "preview".into()).unwrap();
    let out = preview_batches(&mut s, &batches).unwrap();
    drop(s);
    assert_eq!(out[0][0].outcome, Outcome::PendingSeat);
    assert_eq!(out[1][0].outcome, Outcome::Applied);
    let b = out[0][0].member.as_ref().expect("the member as they end up");
    assert_eq!((b.status, b.seat_tier.as_deref()), (Status::Active, Some("Premium")));
    assert_eq!(ledger.members.len(), 2, "still nothing written");
}
