//! Drives the SCIM router in-process with `tower::ServiceExt::oneshot`.
// Test helpers: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use muster_scim::{MemoryDirectoryStore, ScimConfig, router};
use serde_json::Value;
use tower::ServiceExt;

pub const BASE: &str = "https://muster.example.com/scim/v2";
pub const DIR_A: &str = "dir-a";
pub const DIR_B: &str = "dir-b";
pub const TOKEN_A: &str = "token-for-directory-a";
pub const TOKEN_B: &str = "token-for-directory-b";

pub struct Scim {
    pub app: Router,
    pub store: Arc<MemoryDirectoryStore>,
    /// Path prefix of directory A's SCIM base.
    pub prefix: String,
    pub token: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Directory-sync's shape: the router nested under `/scim/v2/{directory_id}`.
pub async fn scim() -> Scim {
    scim_with(ScimConfig::with_base_url(format!("{BASE}/{{directory_id}}"))).await
}

pub async fn scim_with(config: ScimConfig) -> Scim {
    let store = Arc::new(MemoryDirectoryStore::new());
    store.add_token(DIR_A, TOKEN_A).await;
    store.add_token(DIR_B, TOKEN_B).await;
    let app = Router::new().nest("/scim/v2/{directory_id}", router(Arc::clone(&store), config));
    Scim { app, store, prefix: format!("/scim/v2/{DIR_A}"), token: TOKEN_A.to_string() }
}

impl Scim {
    /// A request with directory A's token, relative to directory A's base.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.prefix, path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/scim+json");
        let req = match body {
            Some(b) => {
                req.header("content-type", "application/scim+json; charset=utf-8").body(Body::from(b.to_string()))
            }
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        if !body.is_null() {
            assert_eq!(
                headers.get("content-type").unwrap(),
                "application/scim+json",
                "every SCIM body is application/scim+json"
            );
        }
        Reply { status, headers, body }
    }
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asserts an RFC 7644 §3.12 error.
#[track_caller]
pub fn assert_error(r: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.body);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "body: {}", r.body);
    assert_eq!(r.body["status"], status.to_string());
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    match scim_type {
        Some(t) => assert_eq!(r.body["scimType"], t, "body: {}", r.body),
        None => assert!(r.body.get("scimType").is_none(), "body: {}", r.body),
    }
}
