//! Replays of what Okta sends, with the request bodies of Okta's "SCIM 2.0
//! protocol reference" (developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20)
//! and the checks of Okta's SCIM 2.0 spec test suite (the Runscope/BlazeMeter
//! "Okta SCIM 2.0 SPEC Test"). Ids in Okta's examples are replaced by the ids
//! this server assigns.

// Test helpers outside #[test] fns: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_error, q, scim};
use serde_json::{Value, json};

/// Okta reference, "Create Users": the POST after an empty userName lookup.
fn okta_create_user_body() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "test.user@okta.local",
        "name": {
            "givenName": "Test",
            "familyName": "User"
        },
        "emails": [{
            "primary": true,
            "value": "test.user@okta.local",
            "type": "work"
        }],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": true
    })
}

#[tokio::test]
async fn okta_spec_test_suite_basics() {
    let s = scim().await;
    // "Test Users endpoint": Okta's first call.
    let r = s.get("/Users?count=1&startIndex=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:ListResponse");
    assert_eq!(r.body["totalResults"], 0);
    assert!(r.body["Resources"].as_array().unwrap().is_empty());
    // "Get Users by filter ... that does not exist": 200 and an empty list.
    let r = s.get(&format!("/Users?filter={}", q(r#"userName eq "doesnotexist@example.com""#))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["totalResults"], 0);
    assert_eq!(r.body["Resources"], json!([]));
    // "Get a user that does not exist": 404 with the Error schema.
    let r = s.get("/Users/010101001010101").await;
    assert_error(&r, 404, None);
    // "Groups endpoint".
    let r = s.get("/Groups?startIndex=1&count=100").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["totalResults"], 0);
}

#[tokio::test]
async fn okta_user_lifecycle() {
    let s = scim().await;
    // Okta looks the user up by userName before creating it.
    let lookup = format!("/Users?filter={}&startIndex=1&count=100", q(r#"userName eq "test.user@okta.local""#));
    let r = s.get(&lookup).await;
    assert_eq!((r.status.as_u16(), r.body["totalResults"].clone()), (200, json!(0)));

    let r = s.post("/Users", okta_create_user_body()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let location = format!("https://muster.example.com/scim/v2/dir-a/Users/{id}");
    assert_eq!(r.header("location"), Some(location.as_str()));
    assert_eq!(r.body["meta"]["location"], location);
    assert_eq!(r.body["meta"]["resourceType"], "User");
    assert_eq!(r.body["userName"], "test.user@okta.local");
    assert_eq!(r.body["externalId"], "00ujl29u0le5T6Aj10h7");
    assert_eq!(r.body["active"], true);
    assert!(r.body.get("password").is_none(), "password is never returned");
    assert_eq!(r.header("etag"), r.body["meta"]["version"].as_str());

    // Duplicate POST of an active user: 409 uniqueness (spec test "Create duplicate user").
    let r = s.post("/Users", okta_create_user_body()).await;
    assert_error(&r, 409, Some("uniqueness"));
    // userName is unique case-insensitively.
    let mut upper = okta_create_user_body();
    upper["userName"] = json!("TEST.USER@OKTA.LOCAL");
    assert_error(&s.post("/Users", upper).await, 409, Some("uniqueness"));

    // The lookup now finds it.
    let r = s.get(&lookup).await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());

    // Okta reference, "Retrieve Users" by id.
    let r = s.get(&format!("/Users/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"]["givenName"], "Test");

    // Okta reference, "Update a specific User (PUT)": the whole user, echoing
    // read-only id, meta and groups, which are ignored.
    let r = s
        .put(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": id,
                "userName": "test.user@okta.local",
                "name": {
                    "givenName": "Another",
                    "middleName": "",
                    "familyName": "User"
                },
                "emails": [{
                    "primary": true,
                    "value": "test.user@okta.local",
                    "type": "work"
                }],
                "displayName": "Another User",
                "locale": "en-US",
                "externalId": "00ujl29u0le5T6Aj10h7",
                "groups": [],
                "password": "1mz050nq",
                "active": true,
                "meta": {
                    "resourceType": "User",
                    "created": "2010-01-23T04:56:22Z",
                    "lastModified": "2011-05-13T04:42:34Z"
                }
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["name"]["givenName"], "Another");
    assert_eq!(r.body["displayName"], "Another User");
    assert_ne!(r.body["meta"]["created"], "2010-01-23T04:56:22Z", "meta is read-only");

    // Okta reference, "Update a specific User (PATCH)": deactivation.
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "replace",
                    "value": {"active": false}
                }]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);

    // Deactivated users stay readable and filterable.
    assert_eq!(s.get(&format!("/Users/{id}")).await.body["active"], false);
    let r = s.get(&lookup).await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["active"], false);
    let r = s.get(&format!("/Users?filter={}", q("active eq false"))).await;
    assert_eq!(r.body["totalResults"], 1);

    // Re-assignment: the lookup found the retained user; Okta re-activates it.
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": true}}]
            }),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["id"], id.as_str());

    // Deactivation by PUT with active:false works the same.
    let mut body = okta_create_user_body();
    body["active"] = json!(false);
    let r = s.put(&format!("/Users/{id}"), body).await;
    assert_eq!((r.status.as_u16(), r.body["active"].clone()), (200, json!(false)));
}

#[tokio::test]
async fn okta_post_for_a_deactivated_user_revives_it() {
    let s = scim().await;
    let id = s.post("/Users", okta_create_user_body()).await.body["id"].as_str().unwrap().to_string();
    s.patch(
        &format!("/Users/{id}"),
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "replace", "value": {"active": false}}]}),
    )
    .await;
    // The person is assigned again and Okta POSTs the user: same id, active,
    // no 409 locking them out.
    let mut body = okta_create_user_body();
    body["name"]["givenName"] = json!("Returning");
    let r = s.post("/Users", body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["name"]["givenName"], "Returning");
    let all = s.get("/Users").await;
    assert_eq!(all.body["totalResults"], 1);
}

#[tokio::test]
async fn okta_group_push() {
    let s = scim().await;
    let user_id = s.post("/Users", okta_create_user_body()).await.body["id"].as_str().unwrap().to_string();

    // Okta reference, "Create Groups".
    let r = s
        .post(
            "/Groups",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Test SCIMv2",
                "members": []
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(format!("https://muster.example.com/scim/v2/dir-a/Groups/{gid}").as_str()));

    // Okta looks groups up by displayName.
    let r = s.get(&format!("/Groups?filter={}&startIndex=1&count=100", q(r#"displayName eq "Test SCIMv2""#))).await;
    assert_eq!(r.body["totalResults"], 1);

    // Okta reference, "Update a specific Group name": a rename PATCH that
    // echoes the id, sent before membership PATCHes.
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "replace",
                    "value": {
                        "id": gid,
                        "displayName": "Test SCIMv2 Renamed"
                    }
                }]
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    // Okta reference, "Update a specific Group membership": add.
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "add",
                    "path": "members",
                    "value": [{
                        "value": user_id,
                        "display": "test.user@okta.local"
                    }]
                }]
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = s.get(&format!("/Groups/{gid}")).await;
    assert_eq!(r.body["displayName"], "Test SCIMv2 Renamed");
    assert_eq!(r.body["members"][0]["value"], user_id.as_str());
    assert_eq!(r.body["members"][0]["display"], "test.user@okta.local");
    assert_eq!(r.body["members"][0]["type"], "User");
    assert_eq!(r.body["members"][0]["$ref"], format!("https://muster.example.com/scim/v2/dir-a/Users/{user_id}"));
    // The user's read-only groups attribute follows.
    let r = s.get(&format!("/Users/{user_id}")).await;
    assert_eq!(r.body["groups"][0]["value"], gid.as_str());
    assert_eq!(r.body["groups"][0]["display"], "Test SCIMv2 Renamed");

    // Okta reference: remove a member with a value filter.
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "remove",
                    "path": format!("members[value eq \"{user_id}\"]")
                }]
            }),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(s.store.member_count("dir-a", &gid).await, 0);

    // Okta reference, "Delete a specific Group".
    assert_eq!(s.delete(&format!("/Groups/{gid}")).await.status, 204);
    assert_error(&s.get(&format!("/Groups/{gid}")).await, 404, None);
}

#[tokio::test]
async fn okta_batches_of_1000_members_and_members_in_post_and_put() {
    let s = scim().await;
    let mut ids = Vec::new();
    for i in 0..1000 {
        let r = s
            .post(
                "/Users",
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                   "userName": format!("user{i}@okta.local")}),
            )
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    // members inside the POST body are honoured.
    let r = s
        .post(
            "/Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                   "displayName": "Engineering",
                   "members": [{"value": ids[0], "display": "user0@okta.local"}]}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 1);
    let gid = r.body["id"].as_str().unwrap().to_string();

    // Okta batches membership changes up to 1,000 per request.
    let members: Vec<Value> = ids.iter().map(|i| json!({"value": i})).collect();
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "add", "path": "members", "value": members}]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(s.store.member_count("dir-a", &gid).await, 1000);
    let r = s.get(&format!("/Groups/{gid}?excludedAttributes=members")).await;
    assert!(r.body.get("members").is_none());
    assert_eq!(r.body["displayName"], "Engineering");

    // members inside a PUT body replace the membership.
    let r = s
        .put(
            &format!("/Groups/{gid}"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                   "id": gid,
                   "displayName": "Engineering",
                   "members": [{"value": ids[1]}, {"value": ids[2]}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 2);
    assert_eq!(s.store.member_count("dir-a", &gid).await, 2);

    // groups inside a user POST body are honoured.
    let r = s
        .post(
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "joiner@okta.local",
                   "groups": [{"value": gid, "display": "Engineering"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["groups"][0]["value"], gid.as_str());
    assert_eq!(s.store.member_count("dir-a", &gid).await, 3);
}
