//! The transaction rules on an in-memory [`Ledger`]: idempotency, seats and the
//! guardian guard across a batch.

use std::collections::HashMap;

use super::*;
use crate::domain::seats::TierSeats;

#[derive(Default)]
struct MemoryLedger {
    users: Vec<User>,
    links: HashMap<(String, String), String>,
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
    fn user_by_link(&mut self, d: &str, x: &str) -> Result<Option<User>, MembershipError> {
        let id = self.links.get(&(d.to_string(), x.to_string()));
        Ok(id.and_then(|id| self.users.iter().find(|u| &u.id == id).cloned()))
    }
    fn users_for(
        &mut self,
        links: &[(String, String)],
        emails: &[String],
    ) -> Result<(HashMap<(String, String), User>, HashMap<String, User>), MembershipError> {
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
    fn insert_users(&mut self, users: &[User]) -> Result<(), MembershipError> {
        for u in users {
            assert!(self.users.iter().all(|x| x.email != u.email), "email unique");
            self.users.push(u.clone());
        }
        Ok(())
    }
    fn insert_links(&mut self, links: &[(String, String, String)]) -> Result<(), MembershipError> {
        for (d, x, u) in links {
            assert!(self.links.insert((d.clone(), x.clone()), u.clone()).is_none(), "link unique");
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
        Ok(self
            .members
            .iter()
            .filter(|m| m.org_id == org_id && (m.status == Status::PendingSeat || m.wanted_seat_tier.is_some()))
            .cloned()
            .collect())
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
    let r = run(&mut ledger, |s| apply_one(s, &scim, Source::Directory, Some("dir")).unwrap());
    assert_eq!(r.outcome, Outcome::Applied);
    assert_eq!(ledger.users.len(), 1, "the same person across sources");
    assert_eq!(ledger.links.len(), 2);
    assert_eq!(ledger.members[0].source, Source::Jit, "the source is who put them there");
    assert_eq!(ledger.members[0].role, "Admin");
}
