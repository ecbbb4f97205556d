//! Arbitrary bodies, paths and query strings through the router: always a
//! 2xx or a 4xx with the Error schema, never a 5xx or a panic.

// Test helpers outside #[test] fns: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Scim, q, scim};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 .@\\[\\]\"]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("schemas".to_string()),
                    Just("userName".to_string()),
                    Just("displayName".to_string()),
                    Just("members".to_string()),
                    Just("emails".to_string()),
                    Just("active".to_string()),
                    Just("value".to_string()),
                    Just("op".to_string()),
                    Just("path".to_string()),
                    Just("Operations".to_string()),
                    Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_string()),
                    "[a-zA-Z.]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

async fn check(s: &Scim, method: &str, path: &str, body: Option<Value>) {
    let r = s.call(method.parse().unwrap(), path, body.clone()).await;
    assert!(r.status.as_u16() < 500, "{method} {path} {body:?} -> {} {}", r.status, r.body);
    if r.status.is_client_error() {
        assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn router_never_fails_on_input(
        body in arb_json(),
        filter in "[a-zA-Z .\\[\\]()\"]{0,30}",
        attrs in "[a-zA-Z.,:]{0,20}",
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = scim().await;
            let uid = s
                .post("/Users", json!({"userName": "fuzz@example.com"}))
                .await
                .body["id"].as_str().unwrap().to_string();
            let gid = s
                .post("/Groups", json!({"displayName": "fuzz", "members": [{"value": uid}]}))
                .await
                .body["id"].as_str().unwrap().to_string();
            check(&s, "POST", "/Users", Some(body.clone())).await;
            check(&s, "POST", "/Groups", Some(body.clone())).await;
            check(&s, "PUT", &format!("/Users/{uid}"), Some(body.clone())).await;
            check(&s, "PUT", &format!("/Groups/{gid}"), Some(body.clone())).await;
            check(&s, "PATCH", &format!("/Users/{uid}"), Some(body.clone())).await;
            check(&s, "PATCH", &format!("/Groups/{gid}"), Some(body.clone())).await;
            let ops = json!({"Operations": [body.clone()]});
            check(&s, "PATCH", &format!("/Users/{uid}"), Some(ops.clone())).await;
            check(&s, "PATCH", &format!("/Groups/{gid}"), Some(ops)).await;
            check(&s, "POST", "/.search", Some(body)).await;
            let query = format!("?filter={}&attributes={}&sortBy={}", q(&filter), q(&attrs), q(&attrs));
            check(&s, "GET", &format!("/Users{query}"), None).await;
            check(&s, "GET", &format!("/Groups{query}"), None).await;
            check(&s, "GET", &format!("/Users/{uid}?excludedAttributes={}", q(&attrs)), None).await;
        });
    }
}
