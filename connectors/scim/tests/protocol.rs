//! RFC 7643/7644 behaviour of the router: auth and directory isolation,
//! content types, errors, atomicity, paging, sorting, projection, ETags,
//! `.search` and discovery.

// Test helpers outside #[test] fns: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use common::{BASE, DIR_B, Scim, TOKEN_A, TOKEN_B, assert_error, q, scim, scim_with};
use http::{Method, Request};
use muster_scim::{DirectoryStore, MemoryDirectoryStore, ScimConfig, router};
use serde_json::{Value, json};

fn user(name: &str) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name})
}

async fn new_user(s: &Scim, name: &str) -> String {
    let r = s.post("/Users", user(name)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn new_group(s: &Scim, name: &str) -> String {
    let r = s
        .post("/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

fn raw(method: &str, uri: &str, auth: Option<&str>, ct: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    if let Some(c) = ct {
        b = b.header("content-type", c);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_with_error_schema() {
    let s = scim().await;
    for auth in [None, Some("Bearer nope"), Some("Basic dXNlcjpwYXNz"), Some("Bearer ")] {
        let r = s.send(raw("GET", "/scim/v2/dir-a/Users", auth, None, "")).await;
        assert_error(&r, 401, None);
        assert!(r.header("www-authenticate").is_some());
    }
    // The scheme is case-insensitive.
    let r = s.send(raw("GET", "/scim/v2/dir-a/Users", Some(&format!("bearer {TOKEN_A}")), None, "")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_token_never_reaches_another_directory() {
    let s = scim().await;
    let id = new_user(&s, "alice@a.example").await;
    // Directory B's token at directory A's URL: 404, not 403.
    for path in ["/Users", &format!("/Users/{id}"), "/Groups", "/ServiceProviderConfig"] {
        let r =
            s.send(raw("GET", &format!("/scim/v2/dir-a{path}"), Some(&format!("Bearer {TOKEN_B}")), None, "")).await;
        assert_error(&r, 404, None);
    }
    // And at its own URL it does not see A's user.
    let b = Scim {
        app: s.app.clone(),
        store: Arc::clone(&s.store),
        prefix: format!("/scim/v2/{DIR_B}"),
        token: TOKEN_B.into(),
    };
    assert_error(&b.get(&format!("/Users/{id}")).await, 404, None);
    assert_eq!(b.get("/Users").await.body["totalResults"], 0);
    assert_error(&b.delete(&format!("/Users/{id}")).await, 404, None);
    let r = b
        .patch(&format!("/Users/{id}"), json!({"Operations": [{"op": "replace", "path": "active", "value": false}]}))
        .await;
    assert_error(&r, 404, None);
    // Untouched: created without `active`, it still reads back without it.
    assert!(s.get(&format!("/Users/{id}")).await.body.get("active").is_none());
}

#[tokio::test]
async fn token_alone_picks_the_directory_when_mounted_without_an_id() {
    let store = Arc::new(MemoryDirectoryStore::new());
    store.add_token("dir-a", TOKEN_A).await;
    let app = Router::new().nest("/scim/v2", router(Arc::clone(&store), ScimConfig::with_base_url(format!("{BASE}/"))));
    let s = Scim { app, store, prefix: "/scim/v2".into(), token: TOKEN_A.into() };
    let r = s.post("/Users", user("bob@a.example")).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap();
    assert_eq!(r.header("location").unwrap(), format!("{BASE}/Users/{id}"));
    assert_eq!(s.store.find_user_by_user_name_for_test("dir-a", "bob@a.example").await, Some(id.to_string()));
}

#[tokio::test]
async fn content_types() {
    let s = scim().await;
    let auth = format!("Bearer {TOKEN_A}");
    for ct in [
        "application/json",
        "application/scim+json",
        "application/json; charset=utf-8",
        "Application/SCIM+JSON;charset=UTF-8",
    ] {
        let body = user(&format!("{}@ct.example", ct.len())).to_string();
        let r = s.send(raw("POST", "/scim/v2/dir-a/Users", Some(&auth), Some(ct), &body)).await;
        // The same userName twice gives 409: first call creates.
        assert!(r.status == 201 || r.status == 409, "{ct}: {}", r.status);
        assert_eq!(r.header("content-type"), Some("application/scim+json"));
    }
    let r = s.send(raw("POST", "/scim/v2/dir-a/Users", Some(&auth), Some("text/plain"), &user("x").to_string())).await;
    assert_error(&r, 415, None);
}

#[tokio::test]
async fn malformed_bodies_are_400_never_500() {
    let s = scim().await;
    let auth = format!("Bearer {TOKEN_A}");
    let id = new_user(&s, "carol@a.example").await;
    let cases: &[(&str, &str, &str, &str)] = &[
        ("POST", "/Users", "{not json", "invalidSyntax"),
        ("POST", "/Users", "", "invalidSyntax"),
        ("POST", "/Users", "[1,2]", "invalidSyntax"),
        ("POST", "/Users", r#"{"userName": 42}"#, "invalidValue"),
        ("POST", "/Users", r#"{"userName": "x", "active": "sometimes"}"#, "invalidValue"),
        ("POST", "/Users", r#"{"userName": "x", "emails": "x@y"}"#, "invalidValue"),
        ("POST", "/Users", r#"{"schemas": ["urn:bogus:User"], "userName": "x"}"#, "invalidValue"),
        (
            "POST",
            "/Users",
            r#"{"schemas": "urn:ietf:params:scim:schemas:core:2.0:User", "userName": "x"}"#,
            "invalidSyntax",
        ),
        ("POST", "/Users", r#"{"name": {"givenName": "no userName"}}"#, "invalidValue"),
        ("POST", "/Groups", r#"{"members": []}"#, "invalidValue"),
        ("POST", "/Groups", r#"{"displayName": "g", "members": [{"display": "no value"}]}"#, "invalidValue"),
        ("POST", "/Groups", r#"{"displayName": "g", "members": [{"value": "not-a-user"}]}"#, "invalidValue"),
        ("PATCH", "/Users/ID", r#"{"Operations": "nope"}"#, "invalidSyntax"),
        (
            "PATCH",
            "/Users/ID",
            r#"{"Operations": [{"op": "replace", "path": "meta.version", "value": "1"}]}"#,
            "mutability",
        ),
        (
            "PATCH",
            "/Users/ID",
            r#"{"Operations": [{"op": "add", "path": "groups", "value": [{"value": "g"}]}]}"#,
            "mutability",
        ),
        (
            "PATCH",
            "/Users/ID",
            r#"{"Operations": [{"op": "replace", "path": "emails[type eq \"work\"", "value": "x"}]}"#,
            "invalidPath",
        ),
        (
            "POST",
            "/Users/.search",
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName eq"}"#,
            "invalidFilter",
        ),
        (
            "POST",
            "/Users/.search",
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "count": "many"}"#,
            "invalidValue",
        ),
    ];
    for (method, path, body, scim_type) in cases {
        let path = path.replace("ID", &id);
        let r = s
            .send(raw(method, &format!("/scim/v2/dir-a{path}"), Some(&auth), Some("application/scim+json"), body))
            .await;
        assert_error(&r, 400, Some(scim_type));
    }
    // Bad filters and paging values in query strings.
    assert_error(&s.get(&format!("/Users?filter={}", q("userName eq \"x"))).await, 400, Some("invalidFilter"));
    assert_error(&s.get(&format!("/Users?filter={}", q("active gt true"))).await, 400, Some("invalidFilter"));
    assert_error(&s.get("/Users?startIndex=abc").await, 400, Some("invalidValue"));
    assert_error(&s.get("/Users?sortBy=userName&sortOrder=sideways").await, 400, Some("invalidValue"));
    // The user is untouched by all of that.
    let r = s.get(&format!("/Users/{id}")).await;
    assert_eq!(r.body["userName"], "carol@a.example");
    assert_eq!(r.body["meta"]["version"], r.header("etag").unwrap());
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let mut config = ScimConfig::with_base_url(format!("{BASE}/{{directory_id}}"));
    config.max_body_bytes = 1024;
    let s = scim_with(config).await;
    let mut body = user("big@a.example");
    body["displayName"] = json!("x".repeat(2000));
    assert_error(&s.post("/Users", body).await, 413, None);
    // Without Content-Length (streamed), too.
    let auth = format!("Bearer {TOKEN_A}");
    let chunks: Vec<Result<String, std::io::Error>> = (0..10).map(|_| Ok("x".repeat(200))).collect();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/scim/v2/dir-a/Users")
        .header("authorization", auth)
        .header("content-type", "application/scim+json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    assert_error(&s.send(req).await, 413, None);
}

#[tokio::test]
async fn each_request_is_atomic() {
    let s = scim().await;
    let id = new_user(&s, "dave@a.example").await;
    let before = s.get(&format!("/Users/{id}")).await.body;
    // The first op is fine, the second is not: nothing is applied.
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
                {"op": "replace", "path": "displayName", "value": "Dave"},
                {"op": "replace", "path": "id", "value": "stolen"}
            ]}),
        )
        .await;
    assert_error(&r, 400, Some("mutability"));
    assert_eq!(s.get(&format!("/Users/{id}")).await.body, before);

    // A group PATCH adding a known and an unknown member adds neither.
    let gid = new_group(&s, "atomic").await;
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({"Operations": [
                {"op": "replace", "path": "displayName", "value": "renamed"},
                {"op": "add", "path": "members", "value": [{"value": id}, {"value": "ghost"}]}
            ]}),
        )
        .await;
    assert_error(&r, 400, Some("invalidValue"));
    let g = s.get(&format!("/Groups/{gid}")).await.body;
    assert_eq!(g["displayName"], "atomic");
    assert_eq!(s.store.member_count("dir-a", &gid).await, 0);

    // A rename onto a taken userName: 409 and nothing changes.
    new_user(&s, "erin@a.example").await;
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({"Operations": [{"op": "replace", "path": "userName", "value": "ERIN@a.example"}]}),
        )
        .await;
    assert_error(&r, 409, Some("uniqueness"));
    assert_eq!(s.get(&format!("/Users/{id}")).await.body["userName"], "dave@a.example");
}

#[tokio::test]
async fn paging_is_one_based_stable_and_clamped() {
    let mut config = ScimConfig::with_base_url(format!("{BASE}/{{directory_id}}"));
    config.max_results = 5;
    let s = scim_with(config).await;
    for i in 0..12 {
        new_user(&s, &format!("user{i:02}@a.example")).await;
    }
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let r = s.get(&format!("/Users?startIndex={start}&count=4")).await;
        assert_eq!(r.body["totalResults"], 12);
        assert_eq!(r.body["startIndex"], start);
        let page = r.body["Resources"].as_array().unwrap().clone();
        assert_eq!(r.body["itemsPerPage"], page.len());
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        start += page.len();
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (12, 12), "pages neither overlap nor skip");
    // count above maxResults is clamped; count=0 only counts; startIndex<1 is 1.
    assert_eq!(s.get("/Users?count=100").await.body["itemsPerPage"], 5);
    let r = s.get("/Users?count=0").await;
    assert_eq!((r.body["totalResults"].clone(), r.body["itemsPerPage"].clone()), (json!(12), json!(0)));
    assert_eq!(s.get("/Users?startIndex=-3&count=1").await.body["startIndex"], 1);
    let r = s.get("/ServiceProviderConfig").await;
    assert_eq!(r.body["filter"]["maxResults"], 5);
}

#[tokio::test]
async fn sorting_and_filter_operators() {
    let s = scim().await;
    for (name, title) in [("b@x.example", "Zed"), ("A@x.example", "alpha"), ("c@x.example", "Mid")] {
        let mut u = user(name);
        u["title"] = json!(title);
        s.post("/Users", u).await;
    }
    let names = |r: &common::Reply| -> Vec<String> {
        r.body["Resources"].as_array().unwrap().iter().map(|u| u["userName"].as_str().unwrap().to_string()).collect()
    };
    let r = s.get("/Users?sortBy=userName").await;
    assert_eq!(names(&r), ["A@x.example", "b@x.example", "c@x.example"]);
    let r = s.get("/Users?sortBy=title&sortOrder=descending").await;
    assert_eq!(names(&r), ["b@x.example", "c@x.example", "A@x.example"]);
    for (f, n) in [
        (r#"userName sw "a""#, 1),
        (r#"userName ew "EXAMPLE""#, 3),
        (r#"title co "i""#, 1),
        (r#"title ne "Zed""#, 2),
        (r#"title gt "b""#, 2),
        (r#"title le "mid""#, 2),
        (r#"title pr and not (userName eq "b@x.example")"#, 2),
        (r#"(title eq "zed" or title eq "alpha") and userName sw "b""#, 1),
        (r#"meta.created gt "2000-01-01T00:00:00Z""#, 3),
        (r#"nickName pr"#, 0),
    ] {
        let r = s.get(&format!("/Users?filter={}", q(f))).await;
        assert_eq!(r.body["totalResults"], n, "{f}");
    }
}

#[tokio::test]
async fn attributes_and_excluded_attributes() {
    let s = scim().await;
    let mut u = user("frank@a.example");
    u["name"] = json!({"givenName": "Frank", "familyName": "F"});
    u["emails"] = json!([{"value": "frank@a.example", "type": "work"}]);
    let id = s.post("/Users", u).await.body["id"].as_str().unwrap().to_string();
    let r = s.get(&format!("/Users/{id}?attributes=userName,name.givenName")).await;
    assert_eq!(
        r.body,
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": id,
               "userName": "frank@a.example", "name": {"givenName": "Frank"}})
    );
    let r = s.get(&format!("/Users?attributes=emails&filter={}", q(r#"userName eq "frank@a.example""#))).await;
    assert_eq!(r.body["Resources"][0]["emails"][0]["value"], "frank@a.example");
    assert!(r.body["Resources"][0].get("userName").is_none());
    let r = s.get(&format!("/Users/{id}?excludedAttributes=emails,name.familyName,meta,id")).await;
    assert!(r.body.get("emails").is_none());
    assert!(r.body.get("meta").is_none());
    assert_eq!(r.body["id"], id.as_str(), "id is returned always");
    assert_eq!(r.body["name"], json!({"givenName": "Frank"}));
}

#[tokio::test]
async fn etags_and_preconditions() {
    let s = scim().await;
    let id = new_user(&s, "gina@a.example").await;
    let r = s.get(&format!("/Users/{id}")).await;
    let etag = r.header("etag").unwrap().to_string();
    assert!(etag.starts_with("W/\""));
    let auth = format!("Bearer {TOKEN_A}");
    // If-None-Match with the current version: 304.
    let req = Request::builder()
        .uri(format!("/scim/v2/dir-a/Users/{id}"))
        .header("authorization", &auth)
        .header("if-none-match", &etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.send(req).await.status, 304);
    // A write changes the version.
    let patch = json!({"Operations": [{"op": "replace", "path": "title", "value": "Boss"}]}).to_string();
    let with_if_match = |tag: &str| {
        Request::builder()
            .method("PATCH")
            .uri(format!("/scim/v2/dir-a/Users/{id}"))
            .header("authorization", &auth)
            .header("content-type", "application/scim+json")
            .header("if-match", tag)
            .body(Body::from(patch.clone()))
            .unwrap()
    };
    let r = s.send(with_if_match(&etag)).await;
    assert_eq!(r.status, 200);
    let new_etag = r.header("etag").unwrap().to_string();
    assert_ne!(new_etag, etag);
    // The stale version: 412, and nothing applied.
    assert_error(&s.send(with_if_match(&etag)).await, 412, None);
    // DELETE with a stale If-Match: 412; with the current: 204.
    let del = |tag: &str| {
        Request::builder()
            .method("DELETE")
            .uri(format!("/scim/v2/dir-a/Users/{id}"))
            .header("authorization", &auth)
            .header("if-match", tag)
            .body(Body::empty())
            .unwrap()
    };
    assert_error(&s.send(del(&etag)).await, 412, None);
    assert_eq!(s.send(del(&new_etag)).await.status, 204);
    assert_error(&s.delete(&format!("/Users/{id}")).await, 404, None);
    // Group membership changes bump the group's version.
    let gid = new_group(&s, "versioned").await;
    let v1 = s.get(&format!("/Groups/{gid}")).await.body["meta"]["version"].clone();
    let uid = new_user(&s, "hank@a.example").await;
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}]}),
        )
        .await;
    assert_ne!(r.header("etag").unwrap(), v1.as_str().unwrap());
}

#[tokio::test]
async fn group_patch_forms() {
    let s = scim().await;
    let a = new_user(&s, "a@g.example").await;
    let b = new_user(&s, "b@g.example").await;
    let c = new_user(&s, "c@g.example").await;
    let gid = new_group(&s, "forms").await;
    let members = |r: &common::Reply| -> Vec<String> {
        let mut v: Vec<String> = r.body["members"]
            .as_array()
            .map(|a| a.iter().map(|m| m["value"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut expect = vec![a.clone(), b.clone(), c.clone()];
    expect.sort();
    // Path-less add with members, returned on request.
    let r = s
        .patch(
            &format!("/Groups/{gid}?attributes=members"),
            json!({"Operations": [{"op": "add", "value": {"members": [{"value": a}, {"value": b}, {"value": c, "display": "C"}]}}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(&r), expect);
    // Fallback path: a filter on display needs the member list.
    let r = s
        .patch(
            &format!("/Groups/{gid}?attributes=members"),
            json!({"Operations": [{"op": "remove", "path": "members[display eq \"c\"]"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(&r).len(), 2);
    // replace members with a filter that matches nothing: noTarget.
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({"Operations": [{"op": "replace", "path": "members[value eq \"zzz\"].display", "value": "x"}]}),
        )
        .await;
    assert_error(&r, 400, Some("noTarget"));
    // replace all members.
    let r = s
        .patch(
            &format!("/Groups/{gid}?attributes=members"),
            json!({"Operations": [{"op": "replace", "path": "members", "value": [{"value": c}]}]}),
        )
        .await;
    assert_eq!(members(&r), vec![c.clone()]);
    // remove all members.
    let r = s.patch(&format!("/Groups/{gid}"), json!({"Operations": [{"op": "remove", "path": "members"}]})).await;
    assert_eq!(r.status, 204);
    assert_eq!(s.store.member_count("dir-a", &gid).await, 0);
    // Nested groups are members too.
    let inner = new_group(&s, "inner").await;
    let r = s
        .patch(
            &format!("/Groups/{gid}?attributes=members"),
            json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": inner}]}]}),
        )
        .await;
    assert_eq!(r.body["members"][0]["type"], "Group");
    // Deleting a user removes it from its groups.
    s.patch(
        &format!("/Groups/{gid}"),
        json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": a}]}]}),
    )
    .await;
    assert_eq!(s.store.member_count("dir-a", &gid).await, 2);
    s.delete(&format!("/Users/{a}")).await;
    assert_eq!(s.store.member_count("dir-a", &gid).await, 1);
}

#[tokio::test]
async fn search_endpoints() {
    let s = scim().await;
    new_user(&s, "ivy@a.example").await;
    new_user(&s, "jim@a.example").await;
    new_group(&s, "ivy-group").await;
    let body = |filter: &str, start: i64, count: i64| {
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
               "attributes": ["userName", "displayName"], "filter": filter,
               "startIndex": start, "count": count})
    };
    let r = s.post("/Users/.search", body(r#"userName sw "ivy""#, 1, 10)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("meta").is_none());
    let r = s.post("/Groups/.search", body(r#"displayName sw "ivy""#, 1, 10)).await;
    assert_eq!(r.body["totalResults"], 1);
    // Root search spans users then groups, paged as one list.
    let r = s.post("/.search", body(r#"userName sw "ivy" or displayName sw "ivy""#, 1, 10)).await;
    assert_eq!(r.body["totalResults"], 2);
    assert_eq!(r.body["Resources"].as_array().unwrap().len(), 2);
    let r = s.post("/.search", body(r#"userName pr or displayName pr"#, 3, 10)).await;
    assert_eq!(r.body["totalResults"], 3);
    assert_eq!(r.body["Resources"][0]["displayName"], "ivy-group");
}

#[tokio::test]
async fn discovery_tells_the_truth() {
    let s = scim().await;
    let r = s.get("/ServiceProviderConfig").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["patch"]["supported"], true);
    assert_eq!(r.body["bulk"]["supported"], false);
    assert_eq!(r.body["filter"]["supported"], true);
    assert_eq!(r.body["sort"]["supported"], true);
    assert_eq!(r.body["etag"]["supported"], true);
    assert_eq!(r.body["changePassword"]["supported"], false);
    assert_eq!(r.body["authenticationSchemes"][0]["type"], "oauthbearertoken");
    assert_eq!(r.body["meta"]["location"], format!("{BASE}/dir-a/ServiceProviderConfig"));
    let r = s.get("/ResourceTypes").await;
    assert_eq!(r.body["totalResults"], 2);
    let r = s.get("/ResourceTypes/User").await;
    assert_eq!(r.body["endpoint"], "/Users");
    assert_eq!(r.body["schemaExtensions"][0]["schema"], "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User");
    let r = s.get("/Schemas").await;
    assert_eq!(r.body["totalResults"], 3);
    let r = s.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").await;
    assert_eq!(r.status, 200);
    let user_name = r.body["attributes"].as_array().unwrap().iter().find(|a| a["name"] == "userName").unwrap();
    assert_eq!(user_name["caseExact"], false);
    assert_eq!(user_name["uniqueness"], "server");
    assert_error(&s.get("/Schemas/urn:nope").await, 404, None);
    assert_error(&s.get("/ResourceTypes/Printer").await, 404, None);
    assert_error(&s.get("/Printers").await, 404, None);
    assert_error(&s.call(Method::DELETE, "/Users", None).await, 405, None);
}

#[tokio::test]
async fn removing_active_reads_back_without_it_and_stays_assigned() {
    let s = scim().await;
    let r = s.post("/Users", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ann@a.example", "active": true})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["active"], true);

    let r = s.patch(&format!("/Users/{id}"), json!({"Operations": [{"op": "remove", "path": "active"}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("active").is_none(), "PATCH answer still has active: {}", r.body);
    let r = s.get(&format!("/Users/{id}")).await;
    assert!(r.body.get("active").is_none(), "GET still has active: {}", r.body);

    // Absent `active` is still an assigned user for provisioning: the store says so.
    let stored = s.store.get_user(common::DIR_A, &id).await.unwrap().unwrap();
    assert_eq!(stored.data.active, None);
    assert!(stored.data.assigned());

    // `active: false` is what deactivates, and it reads back as sent.
    let r = s
        .patch(&format!("/Users/{id}"), json!({"Operations": [{"op": "replace", "path": "active", "value": false}]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    let stored = s.store.get_user(common::DIR_A, &id).await.unwrap().unwrap();
    assert!(!stored.data.assigned());
}
