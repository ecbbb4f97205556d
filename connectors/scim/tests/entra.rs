//! Replays of what Microsoft Entra ID's provisioning service sends, with the
//! request bodies of Microsoft's "Tutorial: Develop and plan provisioning for
//! a SCIM endpoint" ("User operations" / "Group operations" request
//! examples), its "Known issues and resolutions with SCIM 2.0 protocol
//! compliance" page (the `aadOptscim062020` flag section) and the checks of
//! its SCIM validator. Ids are replaced by the ids this server assigns.

// Test helpers outside #[test] fns: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Scim, assert_error, q, scim};
use serde_json::{Value, json};

/// Tutorial, "Create User" request.
fn entra_create_user_body() -> Value {
    json!({
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
        "active": true,
        "emails": [{
            "primary": true,
            "type": "work",
            "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"
        }],
        "meta": {
            "resourceType": "User"
        },
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName"
        },
        "roles": []
    })
}

async fn create_user(s: &Scim) -> String {
    let r = s.post("/Users", entra_create_user_body()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn create_group(s: &Scim) -> String {
    // Tutorial, "Create Group" request, with Microsoft's ADSCIM schema URN.
    let r = s
        .post(
            "/Groups",
            json!({
                "schemas": [
                    "urn:ietf:params:scim:schemas:core:2.0:Group",
                    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName": "displayName",
                "meta": {
                    "resourceType": "Group"
                }
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["externalId"], "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159");
    r.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn entra_user_operations() {
    let s = scim().await;
    // Entra's flag is appended to the tenant URL and so to every request.
    let r = s
        .get(&format!(
            "/Users?aadOptscim062020&filter={}",
            q(r#"userName eq "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1""#)
        ))
        .await;
    assert_eq!((r.status.as_u16(), r.body["totalResults"].clone()), (200, json!(0)));

    let id = create_user(&s).await;
    let r = s.get(&format!("/Users/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:schemas:core:2.0:User");
    assert!(r.body.get("roles").is_none(), "an empty roles list is unassigned");

    // Tutorial, "Get User by query".
    let r =
        s.get(&format!("/Users?filter={}", q(r#"userName eq "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1""#))).await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], id.as_str());
    // Tutorial, "Get User by query - Zero results".
    let r = s.get(&format!("/Users?filter={}", q(r#"userName eq "non-existent user""#))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["totalResults"], 0);
    assert_eq!(r.body["Resources"], json!([]));

    // Lookups by externalId: quoted, and the unquoted legacy form.
    for f in [
        r#"externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef""#,
        "externalId eq 0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    ] {
        let r = s.get(&format!("/Users?filter={}", q(f))).await;
        assert_eq!(r.status, 200, "{f}: {}", r.body);
        assert_eq!(r.body["totalResults"], 1, "{f}");
    }
    // Lookup by work email, Entra's non-RFC `[...].value eq` form.
    let r = s
        .get(&format!(
            "/Users?filter={}",
            q(r#"emails[type eq "work"].value eq "test_user_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com""#)
        ))
        .await;
    assert_eq!(r.body["totalResults"], 1, "email compare is case-insensitive");

    // Tutorial, "Update User [Multi-valued properties]".
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {
                        "op": "Replace",
                        "path": "emails[type eq \"work\"].value",
                        "value": "updatedEmail@microsoft.com"
                    },
                    {
                        "op": "Replace",
                        "path": "name.familyName",
                        "value": "updatedFamilyName"
                    }
                ]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["emails"][0]["value"], "updatedEmail@microsoft.com");
    assert_eq!(r.body["emails"][0]["primary"], true);
    assert_eq!(r.body["name"]["familyName"], "updatedFamilyName");
    assert_eq!(r.body["name"]["givenName"], "givenName");

    // Tutorial, "Update User [Single-valued properties]".
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "Replace",
                    "path": "userName",
                    "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
                }]
            }),
        )
        .await;
    assert_eq!(r.body["userName"], "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com");

    // Tutorial, "Disable User".
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({
                "Operations": [{
                    "op": "Replace",
                    "path": "active",
                    "value": false
                }],
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]
            }),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.body["active"].clone()), (200, json!(false)));
    // Still readable and filterable.
    let r = s.get(&format!("/Users?filter={}", q(r#"externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef""#))).await;
    assert_eq!(r.body["Resources"][0]["active"], false);

    // Tutorial, "Delete User".
    assert_eq!(s.delete(&format!("/Users/{id}")).await.status, 204);
    assert_error(&s.get(&format!("/Users/{id}")).await, 404, None);
}

#[tokio::test]
async fn entra_compliance_flag_dialect() {
    let s = scim().await;
    let id = create_user(&s).await;
    // Known-issues page: without the flag, ops are capitalised and booleans
    // are strings.
    let r = s
        .patch(
            &format!("/Users/{id}?aadOptscim062020"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Replace", "path": "active", "value": "False"}]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Add", "path": "nickName", "value": "Babs"}]
            }),
        )
        .await;
    assert_eq!(r.body["nickName"], "Babs");
    // Path-less replace whose keys are dotted paths and URN-qualified names.
    let r = s
        .patch(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "replace",
                    "value": {
                        "active": "True",
                        "name.givenName": "Pat",
                        "name.familyName": "Doe",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7865",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Tour Operations",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": {"value": "2819c223"}
                    }
                }]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["name"]["givenName"], "Pat");
    assert_eq!(r.body["name"]["formatted"], "givenName familyName");
    let ext = &r.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"];
    assert_eq!(ext["employeeNumber"], "7865");
    assert_eq!(ext["department"], "Tour Operations");
    assert_eq!(ext["manager"]["value"], "2819c223");
    assert!(
        r.body["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"))
    );
    // And the extension is filterable by its URN-qualified name.
    let f = r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7865""#;
    assert_eq!(s.get(&format!("/Users?filter={}", q(f))).await.body["totalResults"], 1);
}

#[tokio::test]
async fn entra_group_operations() {
    let s = scim().await;
    let uid = create_user(&s).await;
    let mut second = entra_create_user_body();
    second["userName"] = json!("second@testuser.com");
    second["externalId"] = json!("second");
    let uid2 = s.post("/Users", second).await.body["id"].as_str().unwrap().to_string();
    let gid = create_group(&s).await;

    // Tutorial, "Get Group" (Entra reads groups without members).
    let r = s.get(&format!("/Groups/{gid}?excludedAttributes=members")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("members").is_none());
    assert_eq!(r.body["displayName"], "displayName");
    // Tutorial, "Get Group by displayName".
    let r = s.get(&format!("/Groups?excludedAttributes=members&filter={}", q(r#"displayName eq "displayName""#))).await;
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("members").is_none());

    // Tutorial, "Update Group [Non-member attributes]".
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "Replace",
                    "path": "displayName",
                    "value": "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
                }]
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    // Tutorial, "Update Group [Add Members]" (note the null $ref).
    for id in [&uid, &uid2] {
        let r = s
            .patch(
                &format!("/Groups/{gid}"),
                json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{
                        "op": "Add",
                        "path": "members",
                        "value": [{
                            "$ref": null,
                            "value": id
                        }]
                    }]
                }),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    assert_eq!(s.store.member_count("dir-a", &gid).await, 2);

    // Validator: membership check by filter.
    let f = format!(r#"id eq "{gid}" and members[value eq "{uid}"]"#);
    let r = s.get(&format!("/Groups?excludedAttributes=members&filter={}", q(&f))).await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    assert!(r.body["Resources"][0].get("members").is_none());

    // Tutorial, "Update Group [Remove Members]": path "members" with a value
    // list removes only those members, never the whole list.
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "Remove",
                    "path": "members",
                    "value": [{
                        "$ref": null,
                        "value": uid
                    }]
                }]
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = s.get(&format!("/Groups/{gid}")).await;
    let members = r.body["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["value"], uid2.as_str());

    // Known-issues page, with aadOptscim062020: removal by value filter.
    let r = s
        .patch(
            &format!("/Groups/{gid}?aadOptscim062020"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{
                    "op": "remove",
                    "path": format!("members[value eq \"{uid2}\"]")
                }]
            }),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(s.store.member_count("dir-a", &gid).await, 0);

    // Tutorial, "Delete Group".
    assert_eq!(s.delete(&format!("/Groups/{gid}")).await.status, 204);
}

#[tokio::test]
async fn entra_test_connection_with_random_ids_is_an_empty_list() {
    let s = scim().await;
    // Entra's "Test connection" and validator probe with random GUIDs.
    for f in [
        r#"userName eq "b5b2b8e1-37d4-4d1a-9d1b-5e4c2b7a9f10""#,
        r#"id eq "b5b2b8e1-37d4-4d1a-9d1b-5e4c2b7a9f10""#,
        r#"externalId eq "b5b2b8e1-37d4-4d1a-9d1b-5e4c2b7a9f10""#,
    ] {
        let r = s.get(&format!("/Users?aadOptscim062020&filter={}", q(f))).await;
        assert_eq!(r.status, 200, "{f}");
        assert_eq!(r.body["totalResults"], 0);
        assert_eq!(r.body["Resources"], json!([]));
    }
    let r = s
        .get(&format!(
            "/Groups?excludedAttributes=members&filter={}",
            q(r#"displayName eq "b5b2b8e1-37d4-4d1a-9d1b-5e4c2b7a9f10""#)
        ))
        .await;
    assert_eq!((r.status.as_u16(), r.body["totalResults"].clone()), (200, json!(0)));
}
