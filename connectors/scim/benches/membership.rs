//! Membership benchmark on the in-memory store, through the real router
//! (request parsing, PATCH planning, store delta, response), in process.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-scim cargo bench -p muster-scim --bench membership`
//!
//! Measures, as the issue asks: a PATCH adding one member to a 10-member and
//! to a 100,000-member group (ops/s; each measured add is undone, untimed, so
//! the group keeps its size), one PATCH adding 10,000 members to the
//! 100,000-member group, and `GET /Groups/{id}?excludedAttributes=members` on
//! the 100,000-member group.

// A benchmark binary: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use muster_scim::store::{GroupData, NewMember, UserData};
use muster_scim::{DirectoryStore, MemoryDirectoryStore, ScimConfig, router};
use serde_json::{Map, json};
use tower::ServiceExt;

const DIR: &str = "bench";
const TOKEN: &str = "bench-token";
const BIG: usize = 100_000;
const BATCH: usize = 10_000;
const SINGLE_ADDS: usize = 2_000;
const GETS: usize = 2_000;

async fn call(app: &Router, method: &str, uri: &str, body: Option<String>) -> (u16, usize) {
    let mut req = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {TOKEN}"));
    if body.is_some() {
        req = req.header("content-type", "application/scim+json");
    }
    let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.len())
}

fn add_body(ids: &[String]) -> String {
    let members: Vec<_> = ids.iter().map(|i| json!({"value": i})).collect();
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": "add", "path": "members", "value": members}]})
    .to_string()
}

fn remove_body(id: &str) -> String {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]})
    .to_string()
}

/// Times `SINGLE_ADDS` single-member adds to `group`, undoing each untimed.
async fn single_adds(app: &Router, group: &str, pool: &[String]) -> Duration {
    let uri = format!("/scim/v2/{DIR}/Groups/{group}");
    let mut timed = Duration::ZERO;
    for id in pool.iter().take(SINGLE_ADDS) {
        let body = add_body(std::slice::from_ref(id));
        let t = Instant::now();
        let (status, _) = call(app, "PATCH", &uri, Some(body)).await;
        timed += t.elapsed();
        assert_eq!(status, 204);
        let (status, _) = call(app, "PATCH", &uri, Some(remove_body(id))).await;
        assert_eq!(status, 204);
    }
    timed
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Arc::new(MemoryDirectoryStore::new());
        store.add_token(DIR, TOKEN).await;
        let app = Router::new().nest(
            "/scim/v2/{directory_id}",
            router(Arc::clone(&store), ScimConfig::with_base_url("https://muster.example/scim/v2/{directory_id}")),
        );

        let t = Instant::now();
        let total_users = BIG + BATCH + SINGLE_ADDS;
        let mut ids = Vec::with_capacity(total_users);
        for i in 0..total_users {
            let u = store
                .create_user(
                    DIR,
                    UserData {
                        user_name: format!("user{i}@bench.example"),
                        external_id: Some(format!("ext-{i}")),
                        active: Some(true),
                        attributes: Map::new(),
                    },
                    &[],
                )
                .await
                .unwrap();
            ids.push(u.id);
        }
        let (big_members, rest) = ids.split_at(BIG);
        let (batch_members, pool) = rest.split_at(BATCH);
        let group = |name: &str| GroupData {
            display_name: name.into(),
            external_id: None,
            attributes: Map::new(),
        };
        let to_members = |ids: &[String]| -> Vec<NewMember> {
            ids.iter().map(|i| NewMember { value: i.clone(), display: None }).collect()
        };
        let small = store
            .create_group(DIR, group("small"), to_members(&big_members[..10]))
            .await
            .unwrap()
            .id;
        let big = store
            .create_group(DIR, group("big"), to_members(big_members))
            .await
            .unwrap()
            .id;
        println!(
            "setup: {} users, groups of {} and {} members in {:.2?}",
            total_users,
            store.member_count(DIR, &small).await,
            store.member_count(DIR, &big).await,
            t.elapsed()
        );

        // Warm up.
        single_adds(&app, &small, &pool[..50]).await;

        let d_small = single_adds(&app, &small, pool).await;
        println!(
            "PATCH add 1 member to a {}-member group:      {:>9.0} ops/s ({:.1} µs/op, n={SINGLE_ADDS})",
            store.member_count(DIR, &small).await,
            per_sec(SINGLE_ADDS, d_small),
            d_small.as_secs_f64() * 1e6 / SINGLE_ADDS as f64
        );
        let d_big = single_adds(&app, &big, pool).await;
        println!(
            "PATCH add 1 member to a {}-member group:  {:>9.0} ops/s ({:.1} µs/op, n={SINGLE_ADDS})",
            store.member_count(DIR, &big).await,
            per_sec(SINGLE_ADDS, d_big),
            d_big.as_secs_f64() * 1e6 / SINGLE_ADDS as f64
        );

        let body = add_body(batch_members);
        let bytes = body.len();
        let t = Instant::now();
        let (status, _) = call(&app, "PATCH", &format!("/scim/v2/{DIR}/Groups/{big}"), Some(body)).await;
        let d = t.elapsed();
        assert_eq!(status, 204);
        println!(
            "one PATCH adding {BATCH} members ({} KiB body) to the {BIG}-member group: {:.1?} -> {} members",
            bytes / 1024,
            d,
            store.member_count(DIR, &big).await
        );

        let uri = format!("/scim/v2/{DIR}/Groups/{big}?excludedAttributes=members");
        let t = Instant::now();
        let mut size = 0;
        for _ in 0..GETS {
            let (status, len) = call(&app, "GET", &uri, None).await;
            assert_eq!(status, 200);
            size = len;
        }
        let d = t.elapsed();
        println!(
            "GET /Groups/{{id}}?excludedAttributes=members ({} members): {:>9.0} ops/s ({:.1} µs/op, {size} B body, n={GETS})",
            store.member_count(DIR, &big).await,
            per_sec(GETS, d),
            d.as_secs_f64() * 1e6 / GETS as f64
        );

        let t = Instant::now();
        let (status, len) = call(&app, "GET", &format!("/scim/v2/{DIR}/Groups/{big}"), None).await;
        assert_eq!(status, 200);
        println!(
            "for contrast, GET /Groups/{{id}} with all members: {:.1?} ({} KiB body)",
            t.elapsed(),
            len / 1024
        );
    });
}
