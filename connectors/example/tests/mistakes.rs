//! The kit against deliberately broken copies of this connector (`broken/`):
//! each test switches on one mistake that an older kit let through and
//! checks the kit fails, at the step meant to catch it. The copy without a
//! mistake passes, so each failure is the mistake's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod broken;
mod fake;

use std::sync::Arc;

use broken::{Broken, BrokenConfig, Mistake};
use fake::{ExampleFake, FakeOptions, TOKEN};
use muster_connector::conformance::{ConformanceFailure, Paging, run_conformance};
use muster_connector::{HttpSettings, ManualClock, SecretRef};
use muster_connector_example::{Example, ExampleConfig};

struct Env {
    _dir: tempfile::TempDir,
    good: ExampleConfig,
    wrong: ExampleConfig,
}

fn env(fake: &ExampleFake) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        SecretRef::File(path)
    };
    let config =
        |token| ExampleConfig { base_url: fake.base.clone(), token, page_size: 200, http: HttpSettings::default() };
    let (good, wrong) = (config(write("token", TOKEN)), config(write("wrong", "exd_live_not_the_tenants_token")));
    Env { _dir: dir, good, wrong }
}

/// The kit's verdict on the copy with `mistake`, against a fake started with `options`.
async fn kit(mistake: Mistake, options: FakeOptions) -> Result<(), ConformanceFailure> {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fake = ExampleFake::start_with(3, options).await;
    let env = env(&fake);
    let good = BrokenConfig { example: env.good.clone(), mistake };
    let wrong = BrokenConfig { example: env.wrong.clone(), mistake };
    run_conformance::<Broken>(&fake, &clock, good, wrong).await.map(|_| ())
}

async fn fails_at(mistake: Mistake, step: &str) {
    fails_at_with(mistake, FakeOptions::default(), step).await;
}

async fn fails_at_with(mistake: Mistake, options: FakeOptions, step: &str) {
    match kit(mistake, options).await {
        Ok(()) => panic!("the kit passed a connector with {mistake:?}"),
        Err(failure) => assert_eq!(failure.step, step, "{mistake:?}: {failure}"),
    }
}

#[tokio::test]
async fn the_copy_without_a_mistake_passes() {
    kit(Mistake::None, FakeOptions::default()).await.unwrap();
}

#[tokio::test]
async fn groups_paging_not_followed() {
    fails_at(Mistake::GroupPagesNotFollowed, "full listing").await;
}

#[tokio::test]
async fn a_token_in_an_error_message() {
    fails_at(Mistake::TokenInErrors, "secrets never shown").await;
}

#[tokio::test]
async fn member_ids_of_users_not_in_the_listing() {
    fails_at(Mistake::OutsideMembersKept, "members outside the scope").await;
}

#[tokio::test]
async fn a_wrong_kind() {
    fails_at(Mistake::WrongKind, "kind").await;
}

#[tokio::test]
async fn resume_without_a_change_feed_lists_twice() {
    fails_at(Mistake::ResumeListsInFull, "resume without a change feed").await;
}

/// The mistake the old kit missed is a pair: a connector that never sends its
/// credentials, tested against a fake that never checks them. The kit now
/// asks the fake itself to refuse wrong ones, so the pair fails there; and
/// against a fake that does check, the connector fails at once.
#[tokio::test]
async fn a_connector_that_never_sends_its_credentials() {
    let lax = FakeOptions { checks_credentials: false, ..FakeOptions::default() };
    fails_at_with(Mistake::NoCredentials, lax.clone(), "wrong credentials refused by the fake").await;
    fails_at(Mistake::NoCredentials, "check").await;
    // A right connector against the lax fake fails too: the fake is the problem.
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let fake = ExampleFake::start_with(3, lax).await;
    let env = env(&fake);
    let failure = run_conformance::<Example>(&fake, &clock, env.good.clone(), env.wrong.clone()).await.unwrap_err();
    assert_eq!(failure.step, "wrong credentials refused by the fake", "{failure}");
}

#[tokio::test]
async fn a_repeated_paging_cursor_followed() {
    fails_at(Mistake::CursorsTrusted, "repeated paging cursor").await;
}

/// The same right connector over an API whose cursors are offsets: a user
/// deleted during the listing makes the next page skip someone, and the
/// sweep would remove them. The kit sees it.
#[tokio::test]
async fn an_offset_paged_listing_trusted_while_the_directory_changes() {
    let offsets = FakeOptions { paging: Paging::Offset, ..FakeOptions::default() };
    fails_at_with(Mistake::None, offsets, "directory changing during a listing").await;
}
