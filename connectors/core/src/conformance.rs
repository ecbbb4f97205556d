//! The conformance kit: one call, [`run_conformance`], that a connector's
//! tests make against the connector's fake server. It drives the fake
//! through [`FakeDirectory`] (create, change, delete, inject failures) and
//! the connector through [`run_pull`] into a [`MemorySink`], and checks
//! after every step that the mirror equals what the fake holds:
//!
//! 1. `check()` passes with good credentials;
//! 2. a full listing returns everything, paging to the end (several pages,
//!    a group whose members span pages);
//! 3. changes and removals (users, groups, memberships, deactivation) arrive
//!    by the change feed, read by a *new* connector instance from the stored
//!    cursor (a restart);
//! 4. replaying an older cursor changes nothing wrongly (duplicates tolerated);
//! 5. 429 and 5xx answers are retried (waits go through the clock);
//! 6. an expired cursor leads to a full resync;
//! 7. a full listing removes what is gone;
//! 8. a listing that fails midway, and one that comes back empty, never
//!    report the directory as complete or empty: nothing is removed;
//! 9. `check()` with rejected credentials answers `Unauthorized`.
//!
//! It also offers the fakes [`Flakiness`]: a share of their data requests
//! failing as the vendor's 429, 500, 503 and hangs ending in 504, for tests
//! of pulls under failures.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::clock::ManualClock;
use crate::contract::{PullConnector, PullMode, PullOptions, PullOutcome, run_pull};
use crate::error::ConnectorError;
use crate::model::{Cursor, Membership};
use crate::sink::MemorySink;

/// A user as the kit asks the fake to hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    /// The login the connector must report as `user_name` (an email address).
    pub user_name: String,
    pub given_name: String,
    pub family_name: String,
    pub active: bool,
}

/// A failure the fake must answer with, in the vendor's documented shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The vendor's throttling answer (429, or Google's 403 rate-limit reasons).
    RateLimited,
    /// A 500/503 answer.
    ServerError,
    /// Credentials rejected (401, or the token endpoint's `invalid_client`).
    Unauthorized,
}

/// What a connector's fake server offers the kit. Ids returned are the
/// vendor ids the connector will report. Every change must show up in the
/// fake's change feed (System Log events, delta tokens) when it has one.
pub trait FakeDirectory: Send + Sync {
    /// The page size the fake uses for every list (small, so paging is exercised).
    fn page_size(&self) -> usize;
    fn create_user(&self, user: &FakeUser) -> String;
    fn update_user(&self, id: &str, user: &FakeUser);
    /// Deletes the user, or takes them out of the connector's scope.
    fn delete_user(&self, id: &str);
    fn create_group(&self, name: &str) -> String;
    fn delete_group(&self, id: &str);
    fn add_member(&self, group_id: &str, user_id: &str);
    fn remove_member(&self, group_id: &str, user_id: &str);
    /// The next requests (any endpoint, token endpoint included) answer
    /// these failures, one each, in order.
    fn fail_next(&self, failures: &[Failure]);
    /// After `ok_requests` more successful requests, every request fails
    /// with `failure` until [`FakeDirectory::clear_failures`].
    fn fail_after(&self, ok_requests: usize, failure: Failure);
    fn clear_failures(&self);
    /// Every cursor (delta token, log position) handed out so far becomes
    /// expired: the vendor's "resync required" answer.
    fn expire_cursors(&self);
    /// The API answers every list as if the scope held nothing (what a wrong
    /// scope or a permission filter looks like); `false` restores it.
    fn set_hidden(&self, hidden: bool);
    /// From now on, `share` (0 to 1) of the data requests (not the token
    /// endpoint's) fail as [`Flakiness`] picks, reproducibly from `seed`;
    /// 0 turns it off. A fake that cannot is left as it is.
    fn set_flakiness(&self, share: f64, seed: u64) {
        let _ = (share, seed);
    }
    /// What the flakiness injected so far.
    fn flaky_tally(&self) -> FlakyTally {
        FlakyTally::default()
    }
}

/// How long a flaky fake hangs before it answers 504: a gateway giving up
/// on a slow backend.
pub const FLAKY_HANG: Duration = Duration::from_secs(2);

/// What a flaky fake answers instead of the real answer (each in the
/// vendor's shape, with its rate-limit headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlakyAnswer {
    /// The vendor's throttling answer, with `Retry-After: 1` where the vendor sends one.
    RateLimited,
    /// 500.
    ServerError,
    /// 503.
    Unavailable,
    /// [`FLAKY_HANG`] of silence, then 504.
    Hang,
}

/// What a flaky fake injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlakyTally {
    /// Data requests seen while flaky.
    pub requests: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub unavailable: u64,
    pub hangs: u64,
}

impl FlakyTally {
    pub fn failures(&self) -> u64 {
        self.rate_limited + self.server_errors + self.unavailable + self.hangs
    }
}

/// Picks which data requests of a fake fail, and how: `share` of them, the
/// four [`FlakyAnswer`]s in equal parts, from a seeded sequence (splitmix64)
/// so a run can be repeated.
#[derive(Debug, Clone)]
pub struct Flakiness {
    /// Out of 2^32.
    threshold: u64,
    state: u64,
    tally: FlakyTally,
}

impl Flakiness {
    pub fn new(share: f64, seed: u64) -> Self {
        let share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.0 };
        Self { threshold: (share * 4_294_967_296.0) as u64, state: seed, tally: FlakyTally::default() }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next data request: None to answer it as usual.
    pub fn next_answer(&mut self) -> Option<FlakyAnswer> {
        self.tally.requests += 1;
        let roll = self.next_u64();
        if (roll >> 32) >= self.threshold {
            return None;
        }
        let answer = match roll & 3 {
            0 => FlakyAnswer::RateLimited,
            1 => FlakyAnswer::ServerError,
            2 => FlakyAnswer::Unavailable,
            _ => FlakyAnswer::Hang,
        };
        match answer {
            FlakyAnswer::RateLimited => self.tally.rate_limited += 1,
            FlakyAnswer::ServerError => self.tally.server_errors += 1,
            FlakyAnswer::Unavailable => self.tally.unavailable += 1,
            FlakyAnswer::Hang => self.tally.hangs += 1,
        }
        Some(answer)
    }

    pub fn tally(&self) -> FlakyTally {
        self.tally
    }
}

/// A step of the kit that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("conformance step `{step}` failed: {detail}")]
pub struct ConformanceFailure {
    pub step: &'static str,
    pub detail: String,
}

/// The steps that passed.
#[derive(Debug, Clone, Default)]
pub struct ConformanceReport {
    pub passed: Vec<&'static str>,
}

/// Builds a new connector instance: a "restart" keeps nothing but the cursor.
pub type ConnectorFactory<'a> = &'a (dyn Fn() -> Box<dyn PullConnector> + Sync);

#[derive(Default)]
struct World {
    users: BTreeMap<String, FakeUser>,
    groups: BTreeMap<String, String>,
    memberships: BTreeSet<Membership>,
}

impl World {
    fn delete_user(&mut self, fake: &dyn FakeDirectory, id: &str) {
        fake.delete_user(id);
        self.users.remove(id);
        self.memberships.retain(|m| m.user_id != id);
    }

    fn delete_group(&mut self, fake: &dyn FakeDirectory, id: &str) {
        fake.delete_group(id);
        self.groups.remove(id);
        self.memberships.retain(|m| m.group_id != id);
    }

    fn update(&mut self, fake: &dyn FakeDirectory, id: &str, change: impl FnOnce(&mut FakeUser)) {
        if let Some(user) = self.users.get_mut(id) {
            change(user);
            fake.update_user(id, user);
        }
    }

    fn add_member(&mut self, fake: &dyn FakeDirectory, group: &str, user: &str) {
        fake.add_member(group, user);
        self.memberships.insert(Membership::new(group, user));
    }

    fn remove_member(&mut self, fake: &dyn FakeDirectory, group: &str, user: &str) {
        fake.remove_member(group, user);
        self.memberships.remove(&Membership::new(group, user));
    }

    fn compare(&self, sink: &MemorySink) -> Result<(), String> {
        let want: BTreeSet<&String> = self.users.keys().collect();
        let got: BTreeSet<&String> = sink.users.keys().collect();
        if want != got {
            let missing: Vec<_> = want.difference(&got).collect();
            let extra: Vec<_> = got.difference(&want).collect();
            return Err(format!("users differ: missing {missing:?}, unexpected {extra:?}"));
        }
        for (id, user) in &self.users {
            let Some(seen) = sink.users.get(id) else { continue };
            let same = seen.user_name.eq_ignore_ascii_case(&user.user_name)
                && seen.given_name.as_deref() == Some(user.given_name.as_str())
                && seen.family_name.as_deref() == Some(user.family_name.as_str())
                && seen.active == user.active;
            if !same {
                return Err(format!("user {id}: expected {user:?}, mirror has {seen:?}"));
            }
        }
        let groups: BTreeMap<&String, &String> = sink.groups.iter().map(|(id, g)| (id, &g.name)).collect();
        let want_groups: BTreeMap<&String, &String> = self.groups.iter().collect();
        if groups != want_groups {
            return Err(format!("groups differ: expected {want_groups:?}, mirror has {groups:?}"));
        }
        if sink.memberships != self.memberships {
            let missing: Vec<_> = self.memberships.difference(&sink.memberships).collect();
            let extra: Vec<_> = sink.memberships.difference(&self.memberships).collect();
            return Err(format!("memberships differ: missing {missing:?}, unexpected {extra:?}"));
        }
        Ok(())
    }
}

fn fail(step: &'static str, detail: impl Into<String>) -> ConformanceFailure {
    ConformanceFailure { step, detail: detail.into() }
}

fn person(i: usize, active: bool) -> FakeUser {
    FakeUser {
        user_name: format!("user{i}@example.com"),
        given_name: format!("Given{i}"),
        family_name: format!("Family{i}"),
        active,
    }
}

async fn pull(
    step: &'static str,
    connect: ConnectorFactory<'_>,
    mode: PullMode,
    sink: &mut MemorySink,
) -> Result<PullOutcome, ConformanceFailure> {
    let connector = connect();
    run_pull(connector.as_ref(), mode, sink, &PullOptions::default())
        .await
        .map_err(|e| fail(step, format!("pull failed: {e}")))
}

fn resume(cursor: &Option<Cursor>) -> PullMode {
    match cursor {
        Some(cursor) => PullMode::Resume { cursor: cursor.clone() },
        None => PullMode::Refresh,
    }
}

/// Runs every step of the kit against `fake`, creating connectors with
/// `connect` (all of them must share `clock`). The fake must start empty.
pub async fn run_conformance(
    fake: &dyn FakeDirectory,
    clock: &ManualClock,
    connect: ConnectorFactory<'_>,
) -> Result<ConformanceReport, ConformanceFailure> {
    let mut report = ConformanceReport::default();
    let mut world = World::default();
    let mut sink = MemorySink::new();
    let incremental = connect().capabilities().incremental;

    // 1. check()
    let step = "check";
    connect().check().await.map_err(|e| fail(step, format!("check failed with good credentials: {e}")))?;
    report.passed.push(step);

    // 2. full listing, paging to the end
    let step = "full listing";
    let page = fake.page_size().max(1);
    let count = (2 * page + 1).max(6);
    let mut ids = Vec::new();
    for i in 0..count {
        let user = person(i, i != count - 1);
        let id = fake.create_user(&user);
        world.users.insert(id.clone(), user);
        ids.push(id);
    }
    let everyone = fake.create_group("everyone");
    let small = fake.create_group("small");
    let doomed = fake.create_group("doomed");
    for (id, name) in [(&everyone, "everyone"), (&small, "small"), (&doomed, "doomed")] {
        world.groups.insert(id.clone(), name.to_owned());
    }
    for id in &ids {
        world.add_member(fake, &everyone, id);
    }
    world.add_member(fake, &small, &ids[0]);
    world.add_member(fake, &small, &ids[1]);
    world.add_member(fake, &doomed, &ids[2]);
    let outcome = pull(step, connect, PullMode::Refresh, &mut sink).await?;
    world.compare(&sink).map_err(|d| fail(step, d))?;
    if !outcome.full_listing || sink.listings_completed != 1 {
        return Err(fail(step, "the listing was not reported complete"));
    }
    if outcome.pages < 3 {
        return Err(fail(step, format!("{count} users at page size {page} came in {} pages", outcome.pages)));
    }
    if incremental && outcome.cursor.is_none() {
        return Err(fail(step, "an incremental connector returned no cursor after a full listing"));
    }
    report.passed.push(step);

    // 3. changes and removals through the feed, after a restart
    let step = "incremental changes after restart";
    let first_cursor = outcome.cursor.clone();
    world.update(fake, &ids[0], |u| u.family_name = "Renamed".into());
    world.update(fake, &ids[3], |u| u.active = false);
    let newcomer = person(count, true);
    let newcomer_id = fake.create_user(&newcomer);
    world.users.insert(newcomer_id.clone(), newcomer);
    world.add_member(fake, &everyone, &newcomer_id);
    world.delete_user(fake, &ids[1]);
    world.remove_member(fake, &small, &ids[0]);
    world.add_member(fake, &small, &ids[4]);
    world.delete_group(fake, &doomed);
    let outcome = pull(step, connect, resume(&first_cursor), &mut sink).await?;
    world.compare(&sink).map_err(|d| fail(step, d))?;
    if incremental && outcome.full_listing {
        return Err(fail(step, "an incremental connector fell back to a full listing on a valid cursor"));
    }
    report.passed.push(step);

    // 4. replay of an older cursor
    let step = "replayed cursor";
    pull(step, connect, resume(&first_cursor), &mut sink).await?;
    world.compare(&sink).map_err(|d| fail(step, d))?;
    let outcome = pull(step, connect, resume(&outcome.cursor), &mut sink).await?;
    world.compare(&sink).map_err(|d| fail(step, d))?;
    report.passed.push(step);

    // 5. 429 and 5xx retried
    let step = "retry on 429 and 5xx";
    let waits_before = clock.sleeps().len();
    let notes_before = sink.waits.len();
    world.update(fake, &ids[4], |u| u.given_name = "Retried".into());
    fake.fail_next(&[Failure::RateLimited, Failure::ServerError, Failure::RateLimited]);
    let outcome = pull(step, connect, resume(&outcome.cursor), &mut sink).await?;
    world.compare(&sink).map_err(|d| fail(step, d))?;
    if clock.sleeps().len() < waits_before + 3 {
        return Err(fail(step, "three failures were retried without waiting through the clock"));
    }
    if connect().wait_log().is_some() {
        let counted = outcome.waits.rate_limit_waits + outcome.waits.retries();
        if counted < 3 {
            return Err(fail(step, format!("three waits, but the outcome reports {counted}: {}", outcome.waits)));
        }
        if sink.waits.len() < notes_before + 3 {
            return Err(fail(step, "the sink did not hear of the three waits"));
        }
    }
    report.passed.push(step);

    // 6. expired cursor -> full resync
    let step = "expired cursor";
    fake.expire_cursors();
    world.update(fake, &ids[5], |u| u.given_name = "AfterExpiry".into());
    let outcome = pull(step, connect, resume(&outcome.cursor), &mut sink).await?;
    world.compare(&sink).map_err(|d| fail(step, d))?;
    if !outcome.full_listing {
        return Err(fail(step, "an expired cursor did not lead to a full listing"));
    }
    if incremental && !outcome.resynced {
        return Err(fail(step, "the fall-back to a full listing was not reported"));
    }
    report.passed.push(step);

    // 7. a full listing removes what is gone
    let step = "full listing removes";
    world.delete_user(fake, &ids[6 % count]);
    let outcome = pull(step, connect, PullMode::Refresh, &mut sink).await?;
    world.compare(&sink).map_err(|d| fail(step, d))?;
    report.passed.push(step);

    // 8a. a listing that fails midway removes nothing and is not complete
    let step = "failed listing";
    let before = sink.clone();
    world.delete_user(fake, &ids[2]);
    fake.fail_after(2, Failure::ServerError);
    let connector = connect();
    let result = run_pull(connector.as_ref(), PullMode::Refresh, &mut sink, &PullOptions::default()).await;
    fake.clear_failures();
    if result.is_ok() {
        return Err(fail(step, "a listing that failed midway was reported successful"));
    }
    if sink.listings_completed != before.listings_completed {
        return Err(fail(step, "a failed listing was reported complete"));
    }
    if let Some(lost) = before.users.keys().find(|id| !sink.users.contains_key(*id)) {
        return Err(fail(step, format!("a failed listing removed user {lost}")));
    }
    report.passed.push(step);

    // 8b. an empty answer is refused, in both modes
    let step = "empty listing";
    let before = sink.clone();
    fake.set_hidden(true);
    let connector = connect();
    let refresh = run_pull(connector.as_ref(), PullMode::Refresh, &mut sink, &PullOptions::default()).await;
    let cursor_mode = resume(&outcome.cursor);
    let resumed = run_pull(connector.as_ref(), cursor_mode, &mut sink, &PullOptions::default()).await;
    fake.set_hidden(false);
    if !matches!(refresh, Err(ConnectorError::EmptyListing)) {
        return Err(fail(step, format!("an empty full listing answered {refresh:?}")));
    }
    if let Err(e) = &resumed
        && !matches!(e, ConnectorError::EmptyListing)
    {
        return Err(fail(step, format!("a change feed over a hidden scope failed with {e}")));
    }
    if sink.users.len() < before.users.len() || sink.listings_completed != before.listings_completed {
        return Err(fail(step, "an empty answer emptied the mirror"));
    }
    report.passed.push(step);

    // 9. check() names rejected credentials
    let step = "check with rejected credentials";
    fake.fail_after(0, Failure::Unauthorized);
    let checked = connect().check().await;
    fake.clear_failures();
    if !matches!(checked, Err(ConnectorError::Unauthorized(_))) {
        return Err(fail(step, format!("expected Unauthorized, got {checked:?}")));
    }
    report.passed.push(step);

    // 10. everything recovers
    let step = "recovery";
    pull(step, connect, PullMode::Refresh, &mut sink).await?;
    world.compare(&sink).map_err(|d| fail(step, d))?;
    report.passed.push(step);
    Ok(report)
}

/// What every fake's gate keeps besides its vendor's own answers: answers
/// queued by status, the flakiness, a latency, and the requests in flight.
#[derive(Debug, Default)]
pub struct FakeLoad {
    statuses: VecDeque<(u16, Option<u64>)>,
    flaky: Option<Flakiness>,
    latency: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

impl FakeLoad {
    /// The next request answers `status` (with `Retry-After` when given).
    pub fn fail_next_status(&mut self, status: u16, retry_after: Option<u64>) {
        self.statuses.push_back((status, retry_after));
    }

    /// The status the next request answers, if one was queued.
    pub fn next_status(&mut self) -> Option<(u16, Option<u64>)> {
        self.statuses.pop_front()
    }

    /// See [`FakeDirectory::set_flakiness`]; 0 turns it off.
    pub fn set_flakiness(&mut self, share: f64, seed: u64) {
        self.flaky = (share > 0.0).then(|| Flakiness::new(share, seed));
    }

    /// What the next data request answers instead, if anything.
    pub fn next_flaky(&mut self) -> Option<FlakyAnswer> {
        self.flaky.as_mut().and_then(Flakiness::next_answer)
    }

    pub fn flaky_tally(&self) -> FlakyTally {
        self.flaky.as_ref().map(Flakiness::tally).unwrap_or_default()
    }

    /// Every data request takes this long to answer, so requests overlap.
    pub fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// A request arrives.
    pub fn arrive(&mut self) {
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
    }

    /// A request was answered.
    pub fn leave(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flakiness_fails_its_share_in_four_even_parts_reproducibly() {
        let mut f = Flakiness::new(0.2, 7);
        let answers: Vec<Option<FlakyAnswer>> = (0..10_000).map(|_| f.next_answer()).collect();
        let t = f.tally();
        assert_eq!(t.requests, 10_000);
        assert!((1_800..=2_200).contains(&t.failures()), "{t:?}");
        for kind in [t.rate_limited, t.server_errors, t.unavailable, t.hangs] {
            assert!((400..=600).contains(&kind), "{t:?}");
        }
        let mut again = Flakiness::new(0.2, 7);
        assert!(answers.iter().all(|a| *a == again.next_answer()));
        let mut never = Flakiness::new(0.0, 7);
        assert!((0..1_000).all(|_| never.next_answer().is_none()));
        let mut always = Flakiness::new(1.0, 7);
        assert!((0..1_000).all(|_| always.next_answer().is_some()));
        assert_eq!(Flakiness::new(f64::NAN, 1).next_answer(), None);
    }
}
