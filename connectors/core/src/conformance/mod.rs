//! The conformance kit: one call, [`run_conformance`], that a connector's
//! tests make against the connector's fake server. The kit builds the
//! connector the way directory-sync does (through its [`ConnectorSpec`], with
//! a shared [`TokenPool`]), drives the fake through [`FakeDirectory`] (create,
//! change, delete, inject failures) and the connector through [`run_pull`]
//! into a [`MemorySink`], and checks after every step that the mirror equals
//! what the fake holds. The steps, in order, are [`STEPS`]:
//!
//! 1. every config field holding a secret reference is declared in
//!    `SECRET_FIELDS`, and every declared one present can be read;
//! 2. `kind()` answers the name the connector is registered under;
//! 3. `check()` passes with good credentials;
//! 4. a full listing returns everything, paging to the end: more users than
//!    two pages, more groups than one page, a group whose members span pages;
//! 5. people with one name only (no family name, no given name) are listed;
//! 6. a member the vendor lists in a group but who is not a user of the scope
//!    (a guest, an account of another org unit) is left out: no membership
//!    names someone the mirror does not hold;
//! 7. changes and removals arrive by the change feed, read by a *new*
//!    connector instance from the stored cursor (a restart);
//! 8. replaying an older cursor changes nothing wrongly;
//! 9. a connector without a change feed answers `Resume` with
//!    `ResyncRequired` at once, so a resume costs one full listing, not two;
//! 10. 429 and 5xx answers are retried (waits go through the clock);
//! 11. an expired cursor leads to a full resync;
//! 12. a full listing removes what is gone;
//! 13. an API that hands out a paging cursor again stops the listing with an
//!     error instead of reading the same pages forever;
//! 14. a user deleted while a listing runs makes no one else go missing
//!     (keyset paging, or a connector that does not trust a shifted listing);
//! 15. a listing that fails midway removes nothing and is not complete;
//! 16. an empty answer is refused, in both modes;
//! 17. `check()` with rejected credentials answers `Unauthorized`;
//! 18. wrong credentials are refused by the fake itself (its own credential
//!     check, no injected failure), in `check()` and in a pull;
//! 19. no secret value ever shows in an error, a check summary, or the
//!     `Debug` of the connector or its config (checked as they happen);
//! 20. everything recovers.
//!
//! Steps 6, 13 and 14 need a fake that can express them
//! ([`FakeDirectory::add_outside_member`], a fake built on [`FakeControls`]);
//! without, they are reported in [`ConformanceReport::skipped`], never passed.
//! In step 10 a connector with a wait log must also report the waits in
//! [`PullOutcome::waits`] and tell the sink of them.
//!
//! It also offers the fakes [`Flakiness`]: a share of their data requests
//! failing as the vendor's 429, 500, 503 and hangs ending in 504, for tests
//! of pulls under failures (module [`flaky`]).

pub mod controls;
pub mod flaky;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

pub use controls::{FakeControls, Listing, PageError, Paged, Paging};
pub use flaky::{FLAKY_HANG, FakeLoad, Flakiness, FlakyAnswer, FlakyTally};

use crate::clock::{Clock, ManualClock};
use crate::contract::{ConnectorSpec, PageWriter, PullConnector, PullMode, PullOptions, PullOutcome, run_pull};
use crate::error::ConnectorError;
use crate::model::{Cursor, Membership, Page};
use crate::secret::SecretRef;
use crate::sink::{DirectorySink, MemorySink, PullEnd, PullKind, SinkError};
use crate::token_pool::TokenPool;

/// A user as the kit asks the fake to hold it. An empty name means the
/// vendor holds none (people with one name only): the fake leaves it out or
/// empty, as the vendor would.
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
///
/// A fake built on [`FakeControls`] returns it from
/// [`FakeDirectory::controls`] and need not implement the failure, hiding and
/// expiry methods: their defaults forward to it. A fake without must
/// implement them all.
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

    /// The shared scaffolding the fake is built on, if it is: the kit then
    /// also counts requests, repeats a paging cursor and changes the directory
    /// during a listing through it.
    fn controls(&self) -> Option<&FakeControls> {
        None
    }

    /// Adds to `group_id` a member the vendor lists among the group's members
    /// but who is not a user of the directory's scope (a guest of another
    /// directory, a user of another org unit, a service account) and returns
    /// its id; `None` when the fake cannot (the step is skipped).
    fn add_outside_member(&self, _group_id: &str) -> Option<String> {
        None
    }

    /// The next requests (any endpoint, token endpoint included) answer
    /// these failures, one each, in order.
    fn fail_next(&self, failures: &[Failure]) {
        if let Some(c) = self.controls() {
            c.fail_next(failures);
        }
    }

    /// After `ok_requests` more successful requests, every request fails
    /// with `failure` until [`FakeDirectory::clear_failures`].
    fn fail_after(&self, ok_requests: usize, failure: Failure) {
        if let Some(c) = self.controls() {
            c.fail_after(ok_requests, failure);
        }
    }

    fn clear_failures(&self) {
        if let Some(c) = self.controls() {
            c.clear_failures();
        }
    }

    /// Every cursor (delta token, log position, paging cursor) handed out so
    /// far becomes expired: the vendor's "resync required" answer.
    fn expire_cursors(&self) {
        if let Some(c) = self.controls() {
            c.expire_cursors();
        }
    }

    /// The API answers every list as if the scope held nothing (what a wrong
    /// scope or a permission filter looks like); `false` restores it.
    fn set_hidden(&self, hidden: bool) {
        if let Some(c) = self.controls() {
            c.set_hidden(hidden);
        }
    }

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

/// A running fake and a directory config pointing at it: what an end-to-end
/// test needs to create a directory of the connector's kind. A connector
/// crate's `testing::deployment` returns one, and the end-to-end suite runs
/// its whole pull story against it from one line.
pub struct FakeDeployment {
    /// The kind's name ([`ConnectorSpec::KIND`]).
    pub kind: &'static str,
    pub fake: Arc<dyn FakeDirectory>,
    /// The directory's `config_json`, secrets by reference.
    pub config: serde_json::Value,
    /// Keeps what the config's references point at (files in a temp dir).
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for FakeDeployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDeployment").field("kind", &self.kind).field("config", &self.config).finish()
    }
}

/// Every step of the kit, in order.
pub const STEPS: &[&str] = &[
    SECRET_FIELDS_STEP,
    "kind",
    "check",
    "full listing",
    "single-name users",
    OUTSIDE_STEP,
    "incremental changes after restart",
    "replayed cursor",
    RESUME_STEP,
    "retry on 429 and 5xx",
    "expired cursor",
    "full listing removes",
    REPEAT_STEP,
    CHANGING_STEP,
    "failed listing",
    "empty listing",
    "check with rejected credentials",
    WRONG_STEP,
    SECRETS_STEP,
    "recovery",
];

const SECRET_FIELDS_STEP: &str = "secret fields declared";
const OUTSIDE_STEP: &str = "members outside the scope";
const RESUME_STEP: &str = "resume without a change feed";
const REPEAT_STEP: &str = "repeated paging cursor";
const CHANGING_STEP: &str = "directory changing during a listing";
const WRONG_STEP: &str = "wrong credentials refused by the fake";
const SECRETS_STEP: &str = "secrets never shown";

/// Secret values shorter than this cannot be looked for reliably in text.
const MIN_SECRET_LEN: usize = 8;

/// A step of the kit that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("conformance step `{step}` failed: {detail}")]
pub struct ConformanceFailure {
    pub step: &'static str,
    pub detail: String,
}

/// The steps that passed, and those the fake could not express.
#[derive(Debug, Clone, Default)]
pub struct ConformanceReport {
    pub passed: Vec<&'static str>,
    /// A step and why it could not run.
    pub skipped: Vec<(&'static str, &'static str)>,
}

impl ConformanceReport {
    /// The names of the skipped steps.
    pub fn skipped_steps(&self) -> Vec<&'static str> {
        self.skipped.iter().map(|(step, _)| *step).collect()
    }
}

fn fail(step: &'static str, detail: impl Into<String>) -> ConformanceFailure {
    ConformanceFailure { step, detail: detail.into() }
}

#[derive(Default)]
struct World {
    users: BTreeMap<String, FakeUser>,
    groups: BTreeMap<String, String>,
    memberships: BTreeSet<Membership>,
}

/// A name as the mirror holds it, against the name the kit gave: none and
/// empty are the same (a vendor may send `""` or leave the field out).
fn same_name(seen: Option<&str>, want: &str) -> bool {
    seen.unwrap_or_default() == want
}

impl World {
    fn add_user(&mut self, fake: &dyn FakeDirectory, user: FakeUser) -> String {
        let id = fake.create_user(&user);
        self.users.insert(id.clone(), user);
        id
    }

    fn add_group(&mut self, fake: &dyn FakeDirectory, name: &str) -> String {
        let id = fake.create_group(name);
        self.groups.insert(id.clone(), name.to_owned());
        id
    }

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
        self.compare_allowing(sink, None)
    }

    /// The mirror against the world; `maybe` (a user deleted while a listing
    /// ran) may be there or not, with or without its memberships.
    fn compare_allowing(&self, sink: &MemorySink, maybe: Option<&str>) -> Result<(), String> {
        // A membership naming someone the mirror does not hold is a connector
        // passing on a member it should have left out.
        if let Some(m) = sink.memberships.iter().find(|m| !sink.users.contains_key(&m.user_id)) {
            return Err(format!(
                "group {} has member {}, who is not a user of the listing (a member outside the scope passed on?)",
                m.group_id, m.user_id
            ));
        }
        if let Some(m) = sink.memberships.iter().find(|m| !sink.groups.contains_key(&m.group_id)) {
            return Err(format!("user {} is a member of {}, a group the listing does not hold", m.user_id, m.group_id));
        }
        let unsure = |id: &str| maybe == Some(id);
        let missing: Vec<&String> =
            self.users.keys().filter(|id| !sink.users.contains_key(*id) && !unsure(id)).collect();
        let extra: Vec<&String> = sink.users.keys().filter(|id| !self.users.contains_key(*id)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(format!("users differ: missing {missing:?}, unexpected {extra:?}"));
        }
        for (id, user) in &self.users {
            let Some(seen) = sink.users.get(id) else { continue };
            let same = seen.user_name.eq_ignore_ascii_case(&user.user_name)
                && same_name(seen.given_name.as_deref(), &user.given_name)
                && same_name(seen.family_name.as_deref(), &user.family_name)
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
        let missing: Vec<&Membership> =
            self.memberships.iter().filter(|m| !sink.memberships.contains(*m) && !unsure(&m.user_id)).collect();
        let extra: Vec<&Membership> = sink.memberships.difference(&self.memberships).collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(format!("memberships differ: missing {missing:?}, unexpected {extra:?}"));
        }
        Ok(())
    }
}

fn person(i: usize, active: bool) -> FakeUser {
    FakeUser {
        user_name: format!("user{i}@example.com"),
        given_name: format!("Given{i}"),
        family_name: format!("Family{i}"),
        active,
    }
}

fn resume(cursor: &Option<Cursor>) -> PullMode {
    match cursor {
        Some(cursor) => PullMode::Resume { cursor: cursor.clone() },
        None => PullMode::Refresh,
    }
}

/// A secret value of the connector's configs, and where it came from.
struct Needle {
    field: String,
    text: String,
}

/// The texts to look for of one secret value: the value, each long line of
/// it (a PEM key's body), and the lines of a JSON key file's `private_key`.
fn needles_of(field: &str, value: &str, out: &mut Vec<Needle>) {
    let mut texts = vec![value.trim().to_owned()];
    let mut lines = |text: &str| {
        for line in text.lines().map(str::trim) {
            if line.len() >= 16 && !line.starts_with("-----") {
                texts.push(line.to_owned());
            }
        }
    };
    lines(value);
    if let Ok(serde_json::Value::Object(key)) = serde_json::from_str::<serde_json::Value>(value)
        && let Some(serde_json::Value::String(private_key)) = key.get("private_key")
    {
        lines(private_key);
    }
    for text in texts {
        if !out.iter().any(|n| n.text == text) {
            out.push(Needle { field: field.to_owned(), text });
        }
    }
}

/// The dotted paths under `v` holding a secret reference.
fn reference_paths(path: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    if serde_json::from_value::<SecretRef>(v.clone()).is_ok() {
        out.push(path.to_owned());
    } else if let serde_json::Value::Object(m) = v {
        for (k, child) in m {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            reference_paths(&here, child, out);
        }
    }
}

/// Checks a config against `C::SECRET_FIELDS` and adds its secret values to `out`.
fn secrets_of<C: ConnectorSpec>(what: &str, config: &C::Config, out: &mut Vec<Needle>) -> Result<(), String> {
    let json = serde_json::to_value(config).map_err(|e| format!("the {what} config does not serialize: {e}"))?;
    let mut found = Vec::new();
    reference_paths("", &json, &mut found);
    if let Some(undeclared) = found.iter().find(|p| !C::SECRET_FIELDS.contains(&p.as_str())) {
        return Err(format!(
            "config field `{undeclared}` holds a secret reference but SECRET_FIELDS does not declare it: \
             directory-sync would store an inline secret there"
        ));
    }
    for field in C::SECRET_FIELDS {
        let Some(value) = field.split('.').try_fold(&json, |at, key| at.get(key)) else { continue };
        let reference: SecretRef = serde_json::from_value(value.clone())
            .map_err(|_| format!("SECRET_FIELDS declares `{field}`, but the {what} config holds no reference there"))?;
        let secret = reference.resolve().map_err(|e| format!("the {what} config's `{field}`: {e}"))?;
        if secret.expose().trim().len() < MIN_SECRET_LEN {
            return Err(format!(
                "the {what} config's `{field}` is shorter than {MIN_SECRET_LEN} characters: \
                 the kit cannot look for it in what the connector prints; use a longer test secret"
            ));
        }
        needles_of(field, secret.expose(), out);
    }
    Ok(())
}

/// A sink that refuses pages past a budget: a connector following a cursor
/// the API repeats would otherwise never return.
struct BudgetSink<'s> {
    inner: &'s mut MemorySink,
    left: usize,
    spent: bool,
}

#[async_trait]
impl DirectorySink for BudgetSink<'_> {
    async fn begin(&mut self, kind: PullKind) -> Result<(), SinkError> {
        self.inner.begin(kind).await
    }

    async fn page(&mut self, page: Page) -> Result<(), SinkError> {
        if self.left == 0 {
            self.spent = true;
            return Err(SinkError("the conformance kit's page budget is spent".into()));
        }
        self.left -= 1;
        self.inner.page(page).await
    }

    async fn finish(&mut self, end: PullEnd) -> Result<(), SinkError> {
        self.inner.finish(end).await
    }
}

/// The state of one run of the kit.
struct Kit<'a, C: ConnectorSpec> {
    fake: &'a dyn FakeDirectory,
    clock: Arc<ManualClock>,
    pool: TokenPool,
    config: C::Config,
    wrong: C::Config,
    needles: Vec<Needle>,
    world: World,
    sink: MemorySink,
    report: ConformanceReport,
}

impl<C: ConnectorSpec> Kit<'_, C> {
    /// Every secret value in `text` replaced, for the kit's own messages.
    fn redact(&self, text: &str) -> String {
        self.needles.iter().fold(text.to_owned(), |t, n| t.replace(&n.text, "[secret]"))
    }

    fn fail(&self, step: &'static str, detail: impl Into<String>) -> ConformanceFailure {
        fail(step, self.redact(&detail.into()))
    }

    /// Fails when `text` (an error, a summary, a `Debug`) shows a secret.
    fn watch(&self, step: &'static str, what: &str, text: &str) -> Result<(), ConformanceFailure> {
        match self.needles.iter().find(|n| text.contains(&n.text)) {
            Some(n) => Err(fail(
                SECRETS_STEP,
                format!("the secret of `{}` shows in {what} (during `{step}`): {}", n.field, self.redact(text)),
            )),
            None => Ok(()),
        }
    }

    fn watch_error(&self, step: &'static str, e: &ConnectorError) -> Result<(), ConformanceFailure> {
        self.watch(step, "an error's text", &e.to_string())?;
        self.watch(step, "an error's Debug", &format!("{e:?}"))
    }

    fn connect_with(
        &self,
        step: &'static str,
        config: &C::Config,
    ) -> Result<Box<dyn PullConnector>, ConformanceFailure> {
        let clock: Arc<dyn Clock> = self.clock.clone();
        match C::connect(config.clone(), clock, &self.pool) {
            Ok(c) => {
                self.watch(step, "the connector's Debug", &format!("{c:?}"))?;
                Ok(c)
            }
            Err(e) => {
                self.watch_error(step, &e)?;
                Err(self.fail(step, format!("the connector could not be built: {e}")))
            }
        }
    }

    fn connect(&self, step: &'static str) -> Result<Box<dyn PullConnector>, ConformanceFailure> {
        self.connect_with(step, &self.config)
    }

    fn requests(&self) -> Option<usize> {
        self.fake.controls().map(FakeControls::request_count)
    }

    /// One pull by a new connector into the kit's sink, which must succeed.
    async fn pull(&mut self, step: &'static str, mode: PullMode) -> Result<PullOutcome, ConformanceFailure> {
        let connector = self.connect(step)?;
        match run_pull(connector.as_ref(), mode, &mut self.sink, &PullOptions::default()).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                self.watch_error(step, &e)?;
                Err(self.fail(step, format!("pull failed: {e}")))
            }
        }
    }

    /// One pull that must fail, by `connector` (a new one when none): the
    /// mirror keeps everyone and no listing is reported complete.
    async fn pull_refused(
        &mut self,
        step: &'static str,
        connector: Option<Box<dyn PullConnector>>,
        mode: PullMode,
    ) -> Result<ConnectorError, ConformanceFailure> {
        let connector = match connector {
            Some(c) => c,
            None => self.connect(step)?,
        };
        let before = self.sink.clone();
        let result = run_pull(connector.as_ref(), mode, &mut self.sink, &PullOptions::default()).await;
        self.fake.clear_failures();
        let e = match result {
            Ok(_) => return Err(self.fail(step, "the pull was reported successful")),
            Err(e) => e,
        };
        self.watch_error(step, &e)?;
        self.unharmed(step, &before)?;
        Ok(e)
    }

    /// Nothing was removed and no listing completed since `before`.
    fn unharmed(&self, step: &'static str, before: &MemorySink) -> Result<(), ConformanceFailure> {
        if self.sink.listings_completed != before.listings_completed {
            return Err(self.fail(step, "a failed listing was reported complete"));
        }
        if let Some(lost) = before.users.keys().find(|id| !self.sink.users.contains_key(*id)) {
            return Err(self.fail(step, format!("a failed pull removed user {lost}")));
        }
        Ok(())
    }

    fn compare(&self, step: &'static str) -> Result<(), ConformanceFailure> {
        self.world.compare(&self.sink).map_err(|d| self.fail(step, d))
    }

    fn passed(&mut self, step: &'static str) {
        self.report.passed.push(step);
    }

    fn skipped(&mut self, step: &'static str, why: &'static str) {
        self.report.skipped.push((step, why));
    }
}

/// Runs every step of the kit against `fake`, building connectors of `C` from
/// `config` (and, for the wrong-credentials step, from `wrong_credentials`:
/// the same config with a token, secret, key or client the fake does not
/// accept), all waiting through `clock`. The fake must start empty.
pub async fn run_conformance<C: ConnectorSpec>(
    fake: &dyn FakeDirectory,
    clock: &Arc<ManualClock>,
    config: C::Config,
    wrong_credentials: C::Config,
) -> Result<ConformanceReport, ConformanceFailure> {
    let mut needles = Vec::new();
    secrets_of::<C>("good", &config, &mut needles).map_err(|d| fail(SECRET_FIELDS_STEP, d))?;
    secrets_of::<C>("wrong-credentials", &wrong_credentials, &mut needles).map_err(|d| fail(SECRET_FIELDS_STEP, d))?;
    let mut kit = Kit::<C> {
        fake,
        clock: clock.clone(),
        pool: TokenPool::new(),
        config,
        wrong: wrong_credentials,
        needles,
        world: World::default(),
        sink: MemorySink::new(),
        report: ConformanceReport::default(),
    };
    kit.watch(SECRET_FIELDS_STEP, "the config's Debug", &format!("{:?}", kit.config))?;
    kit.watch(SECRET_FIELDS_STEP, "the config's Debug", &format!("{:?}", kit.wrong))?;
    kit.passed(SECRET_FIELDS_STEP);

    let step = "kind";
    let connector = kit.connect(step)?;
    if connector.kind() != C::KIND {
        return Err(kit.fail(
            step,
            format!("kind() answers {:?}, but the connector is registered as {:?}", connector.kind(), C::KIND),
        ));
    }
    let incremental = connector.capabilities().incremental;
    kit.passed(step);

    let step = "check";
    match kit.connect(step)?.check().await {
        Ok(report) => kit.watch(step, "the check summary", &report.summary)?,
        Err(e) => {
            kit.watch_error(step, &e)?;
            return Err(kit.fail(step, format!("check failed with good credentials: {e}")));
        }
    }
    kit.passed(step);

    // Full listing: more users than two pages, more groups than one.
    let step = "full listing";
    let page = fake.page_size().max(1);
    let count = (2 * page + 1).max(6);
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(kit.world.add_user(fake, person(i, i != count - 1)));
    }
    let everyone = kit.world.add_group(fake, "everyone");
    let small = kit.world.add_group(fake, "small");
    let doomed = kit.world.add_group(fake, "doomed");
    let group_count = (page + 1).max(3);
    for i in 3..group_count {
        let extra = kit.world.add_group(fake, &format!("extra{i}"));
        kit.world.add_member(fake, &extra, &ids[i % count]);
    }
    for id in &ids {
        kit.world.add_member(fake, &everyone, id);
    }
    kit.world.add_member(fake, &small, &ids[0]);
    kit.world.add_member(fake, &small, &ids[1]);
    kit.world.add_member(fake, &doomed, &ids[2]);
    let outcome = kit.pull(step, PullMode::Refresh).await?;
    kit.compare(step)?;
    if !outcome.full_listing || kit.sink.listings_completed != 1 {
        return Err(kit.fail(step, "the listing was not reported complete"));
    }
    if outcome.pages < 3 {
        return Err(kit.fail(step, format!("{count} users at page size {page} came in {} pages", outcome.pages)));
    }
    if incremental && outcome.cursor.is_none() {
        return Err(kit.fail(step, "an incremental connector returned no cursor after a full listing"));
    }
    let listing_pages = outcome.pages;
    kit.passed(step);

    // People with one name only.
    let step = "single-name users";
    let cher = FakeUser {
        user_name: format!("cher{count}@example.com"),
        given_name: "Cher".into(),
        family_name: String::new(),
        active: true,
    };
    let teller = FakeUser {
        user_name: format!("teller{count}@example.com"),
        given_name: String::new(),
        family_name: "Teller".into(),
        active: true,
    };
    for user in [cher, teller] {
        let id = kit.world.add_user(fake, user);
        kit.world.add_member(fake, &everyone, &id);
    }
    let outcome = kit.pull(step, resume(&outcome.cursor)).await?;
    kit.compare(step)?;
    kit.passed(step);

    // A member of a group who is not a user of the scope.
    let mut cursor = outcome.cursor;
    match fake.add_outside_member(&small) {
        Some(outsider) => {
            let step = OUTSIDE_STEP;
            let outcome = kit.pull(step, resume(&cursor)).await?;
            if kit.sink.users.contains_key(&outsider) {
                return Err(kit.fail(step, format!("{outsider}, a member outside the scope, was listed as a user")));
            }
            kit.compare(step)?;
            cursor = outcome.cursor;
            kit.passed(step);
        }
        None => kit.skipped(OUTSIDE_STEP, "the fake cannot add a member outside the scope (add_outside_member)"),
    }

    // Changes and removals through the feed, after a restart.
    let step = "incremental changes after restart";
    let first_cursor = cursor;
    kit.world.update(fake, &ids[0], |u| u.family_name = "Renamed".into());
    kit.world.update(fake, &ids[3], |u| u.active = false);
    let newcomer = kit.world.add_user(fake, person(count, true));
    kit.world.add_member(fake, &everyone, &newcomer);
    kit.world.delete_user(fake, &ids[1]);
    kit.world.remove_member(fake, &small, &ids[0]);
    kit.world.add_member(fake, &small, &ids[4]);
    kit.world.delete_group(fake, &doomed);
    let outcome = kit.pull(step, resume(&first_cursor)).await?;
    kit.compare(step)?;
    if incremental && outcome.full_listing {
        return Err(kit.fail(step, "an incremental connector fell back to a full listing on a valid cursor"));
    }
    kit.passed(step);

    // Replay of an older cursor.
    let step = "replayed cursor";
    kit.pull(step, resume(&first_cursor)).await?;
    kit.compare(step)?;
    let outcome = kit.pull(step, resume(&outcome.cursor)).await?;
    kit.compare(step)?;
    kit.passed(step);

    // Without a change feed, a resume is one full listing.
    if incremental {
        kit.skipped(RESUME_STEP, "the connector has a change feed");
    } else {
        let step = RESUME_STEP;
        let asked = PullMode::Resume { cursor: Cursor::new("conformance") };
        let connector = kit.connect(step)?;
        let mut scratch = MemorySink::new();
        let requests_before = kit.requests();
        let answered = {
            let mut writer = PageWriter::new(&mut scratch);
            connector.pull(&asked, &mut writer).await
        };
        let sent = kit.requests().zip(requests_before).map(|(after, before)| after - before).unwrap_or(0);
        match answered {
            Err(e) if e.requires_resync() && scratch.pages == 0 && sent == 0 => {}
            Err(e) if e.requires_resync() => {
                return Err(kit.fail(
                    step,
                    format!("{} pages and {sent} requests before answering ResyncRequired", scratch.pages),
                ));
            }
            Err(e) => {
                kit.watch_error(step, &e)?;
                return Err(kit.fail(step, format!("Resume answered {e}, not ResyncRequired")));
            }
            Ok(_) => {
                return Err(kit.fail(
                    step,
                    format!(
                        "a connector without a change feed answered Resume itself ({} pages, {sent} requests): \
                         it must answer ResyncRequired at once, or run_pull lists the directory a second time",
                        scratch.pages
                    ),
                ));
            }
        }
        let (pages, requests) = (kit.sink.pages, kit.requests());
        kit.pull(step, PullMode::Refresh).await?;
        let refresh = (kit.sink.pages - pages, kit.requests().zip(requests).map(|(a, b)| a - b));
        let (pages, requests) = (kit.sink.pages, kit.requests());
        let resumed = kit.pull(step, asked).await?;
        let resume_cost = (kit.sink.pages - pages, kit.requests().zip(requests).map(|(a, b)| a - b));
        if !resumed.full_listing || !resumed.resynced {
            return Err(kit.fail(step, "a resume without a change feed was not one full listing"));
        }
        if resume_cost.0 > refresh.0 || resume_cost.1 > refresh.1 {
            return Err(
                kit.fail(step, format!("a resume cost {resume_cost:?} (pages, requests), a full listing {refresh:?}"))
            );
        }
        kit.compare(step)?;
        kit.passed(step);
    }

    // 429 and 5xx retried.
    let step = "retry on 429 and 5xx";
    let waits_before = clock.sleeps().len();
    let notes_before = kit.sink.waits.len();
    kit.world.update(fake, &ids[4], |u| u.given_name = "Retried".into());
    fake.fail_next(&[Failure::RateLimited, Failure::ServerError, Failure::RateLimited]);
    let outcome = kit.pull(step, resume(&outcome.cursor)).await?;
    kit.compare(step)?;
    if clock.sleeps().len() < waits_before + 3 {
        return Err(kit.fail(step, "three failures were retried without waiting through the clock"));
    }
    if kit.connect(step)?.wait_log().is_some() {
        let counted = outcome.waits.rate_limit_waits + outcome.waits.retries();
        if counted < 3 {
            return Err(kit.fail(step, format!("three waits, but the outcome reports {counted}: {}", outcome.waits)));
        }
        if kit.sink.waits.len() < notes_before + 3 {
            return Err(kit.fail(step, "the sink did not hear of the three waits"));
        }
    }
    kit.passed(step);

    // Expired cursor -> full resync.
    let step = "expired cursor";
    fake.expire_cursors();
    kit.world.update(fake, &ids[5], |u| u.given_name = "AfterExpiry".into());
    let outcome = kit.pull(step, resume(&outcome.cursor)).await?;
    kit.compare(step)?;
    if !outcome.full_listing {
        return Err(kit.fail(step, "an expired cursor did not lead to a full listing"));
    }
    if incremental && !outcome.resynced {
        return Err(kit.fail(step, "the fall-back to a full listing was not reported"));
    }
    kit.passed(step);

    // A full listing removes what is gone.
    let step = "full listing removes";
    kit.world.delete_user(fake, &ids[6 % count]);
    let outcome = kit.pull(step, PullMode::Refresh).await?;
    kit.compare(step)?;
    kit.passed(step);

    // A paging cursor handed out again.
    match fake.controls() {
        Some(controls) => {
            let step = REPEAT_STEP;
            let connector = kit.connect(step)?;
            let before = kit.sink.clone();
            let budget = 4 * listing_pages + 16;
            controls.repeat_cursors(true);
            let mut sink = BudgetSink { inner: &mut kit.sink, left: budget, spent: false };
            let result = run_pull(connector.as_ref(), PullMode::Refresh, &mut sink, &PullOptions::default()).await;
            let spent = sink.spent;
            controls.repeat_cursors(false);
            match result {
                Ok(_) => {
                    return Err(
                        kit.fail(step, "a listing over an API that repeats a paging cursor was reported complete")
                    );
                }
                Err(_) if spent => {
                    return Err(kit.fail(
                        step,
                        format!(
                            "the connector read {budget} pages following a paging cursor the API had handed out \
                             before; it must stop with an error (muster_connector::paging::CursorTrail)"
                        ),
                    ));
                }
                Err(e) => kit.watch_error(step, &e)?,
            }
            kit.unharmed(step, &before)?;
            kit.passed(step);
        }
        None => kit.skipped(REPEAT_STEP, "the fake is not built on FakeControls"),
    }

    // A user deleted while the listing runs.
    match fake.controls() {
        Some(controls) => {
            let step = CHANGING_STEP;
            controls.hide_during_next_listing();
            let connector = kit.connect(step)?;
            let before = kit.sink.clone();
            let result = run_pull(connector.as_ref(), PullMode::Refresh, &mut kit.sink, &PullOptions::default()).await;
            let hidden = controls.hidden_during_listing();
            controls.stop_hiding();
            let Some(hidden) = hidden else {
                return Err(kit.fail(
                    step,
                    "the fake's users listing does not page through FakeControls::page(Listing::Users, …)",
                ));
            };
            match result {
                Ok(_) => kit
                    .world
                    .compare_allowing(&kit.sink, Some(&hidden))
                    .map_err(|d| kit.fail(step, format!("{d} (user {hidden} was deleted while the listing ran)")))?,
                // Refusing a listing the directory changed under is correct too,
                // as long as it removes nobody.
                Err(e) => {
                    kit.watch_error(step, &e)?;
                    kit.unharmed(step, &before)?;
                }
            }
            kit.pull(step, PullMode::Refresh).await?;
            kit.compare(step)?;
            kit.passed(step);
        }
        None => kit.skipped(CHANGING_STEP, "the fake is not built on FakeControls"),
    }

    // A listing that fails midway removes nothing and is not complete.
    let step = "failed listing";
    kit.world.delete_user(fake, &ids[2]);
    fake.fail_after(2, Failure::ServerError);
    kit.pull_refused(step, None, PullMode::Refresh).await?;
    kit.passed(step);

    // An empty answer is refused, in both modes.
    let step = "empty listing";
    let before = kit.sink.clone();
    fake.set_hidden(true);
    let connector = kit.connect(step)?;
    let refresh = run_pull(connector.as_ref(), PullMode::Refresh, &mut kit.sink, &PullOptions::default()).await;
    let resumed = run_pull(connector.as_ref(), resume(&outcome.cursor), &mut kit.sink, &PullOptions::default()).await;
    fake.set_hidden(false);
    for result in [&refresh, &resumed] {
        if let Err(e) = result {
            kit.watch_error(step, e)?;
        }
    }
    if !matches!(refresh, Err(ConnectorError::EmptyListing)) {
        return Err(kit.fail(step, format!("an empty full listing answered {refresh:?}")));
    }
    if let Err(e) = &resumed
        && !matches!(e, ConnectorError::EmptyListing)
    {
        return Err(kit.fail(step, format!("a change feed over a hidden scope failed with {e}")));
    }
    if kit.sink.users.len() < before.users.len() || kit.sink.listings_completed != before.listings_completed {
        return Err(kit.fail(step, "an empty answer emptied the mirror"));
    }
    kit.passed(step);

    // check() names rejected credentials.
    let step = "check with rejected credentials";
    fake.fail_after(0, Failure::Unauthorized);
    let checked = kit.connect(step)?.check().await;
    fake.clear_failures();
    match &checked {
        Err(ConnectorError::Unauthorized(_)) => {}
        other => return Err(kit.fail(step, format!("expected Unauthorized, got {other:?}"))),
    }
    if let Err(e) = &checked {
        kit.watch_error(step, e)?;
    }
    kit.passed(step);

    // Wrong credentials, refused by the fake itself.
    let step = WRONG_STEP;
    if serde_json::to_value(&kit.wrong).ok() == serde_json::to_value(&kit.config).ok() {
        return Err(kit.fail(step, "the wrong-credentials config is the good one"));
    }
    fake.clear_failures();
    let refused_before = fake.controls().map(FakeControls::refused_count);
    let wrong = kit.wrong.clone();
    match kit.connect_with(step, &wrong)?.check().await {
        Err(ConnectorError::Unauthorized(d)) => kit.watch(step, "an error's text", &d)?,
        Err(e) => {
            kit.watch_error(step, &e)?;
            return Err(kit.fail(step, format!("check() with wrong credentials answered {e}, not Unauthorized")));
        }
        Ok(report) => {
            kit.watch(step, "the check summary", &report.summary)?;
            return Err(kit.fail(
                step,
                "check() passed with wrong credentials: the fake must refuse them by itself, \
                 and the connector must send them",
            ));
        }
    }
    let connector = kit.connect_with(step, &wrong)?;
    match kit.pull_refused(step, Some(connector), PullMode::Refresh).await? {
        ConnectorError::Unauthorized(_) => {}
        e => return Err(kit.fail(step, format!("a pull with wrong credentials failed with {e}, not Unauthorized"))),
    }
    if let (Some(controls), Some(before)) = (fake.controls(), refused_before)
        && controls.refused_count() == before
    {
        return Err(kit.fail(step, "the fake's own credential check refused nothing"));
    }
    kit.passed(step);

    // Every text seen so far was watched as it came.
    kit.passed(SECRETS_STEP);

    // Everything recovers.
    let step = "recovery";
    kit.pull(step, PullMode::Refresh).await?;
    kit.compare(step)?;
    kit.passed(step);
    Ok(kit.report)
}
