//! Apply throughput: one batch of 10,000 new directory members into an org (one
//! transaction), then the same desired states again (all unchanged), then a batch
//! that re-roles 10,000 members. On SQLite (a temp file) and, when reachable, on
//! PostgreSQL (a scratch database).
//! Run: `cargo bench -p muster-membership --bench apply`

// A benchmark that cannot set up should stop loudly.
#![allow(clippy::expect_used)]

use std::time::Instant;

use diesel::{Connection, PgConnection, RunQueryDsl};
use muster_membership::ops::{self, Desired, IdentityIn, Session, TierPref, Want};
use muster_membership::org_catalog::OrgProduct;
use muster_membership::store::MembershipStore;
use muster_runtime::Db;

const N: usize = 10_000;

fn batch(role: &str) -> Vec<Desired> {
    (0..N)
        .map(|i| Desired {
            identity: IdentityIn {
                directory_id: "dir-bench".into(),
                external_id: format!("ext-{i}"),
                email: format!("user{i}@bench.test"),
                display_name: format!("User {i}"),
            },
            also_known_as: Vec::new(),
            member_id: None,
            want: Want::Member,
            role: role.into(),
            tier: TierPref::HighestFree,
            reasons: vec!["assigned in the directory".into()],
        })
        .collect()
}

async fn measure(label: &str, url: &str) {
    let db = Db::connect(url, 4).expect("database");
    db.migrate(muster_membership::MIGRATIONS).await.expect("migrations");
    let store = MembershipStore::new(db);
    let product = OrgProduct {
        org_id: "org-bench".into(),
        roles: vec!["Owner".into(), "Admin".into(), "User".into()],
        seat_tiers: vec!["Premium".into(), "Standard".into()],
    };
    for (step, role) in [
        ("provision 10,000 new members", "User"),
        ("same batch again (unchanged)", "User"),
        ("re-role 10,000 members", "Admin"),
    ] {
        let items = batch(role);
        let p = product.clone();
        let started = Instant::now();
        let results = store
            .transact(move |ledger| {
                let mut s = Session::begin(ledger, &p, "sync_run:bench".into())?;
                let r = ops::apply_batch(&mut s, &items, "dir-bench")?;
                s.finish()?;
                Ok(r)
            })
            .await
            .expect("apply");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "apply {label:<10} {step:<32} {:>7.2} s  ({:>6.0} items/s, {} results)",
            secs,
            N as f64 / secs,
            results.len()
        );
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    measure("sqlite", &format!("sqlite://{}", dir.path().join("bench.db").display())).await;
    let admin =
        std::env::var("MUSTER_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match PgConnection::establish(&admin) {
        Ok(mut conn) => {
            let name = format!("muster_bench_{}", std::process::id());
            diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn).expect("create database");
            let url = format!("{}/{name}", admin.rsplit_once('/').map(|(s, _)| s).unwrap_or(&admin));
            measure("postgres", &url).await;
            let _ = diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn);
        }
        Err(e) => println!("postgres skipped: {e}"),
    }
}
