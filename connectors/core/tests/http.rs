//! The HTTP helpers against a local server: retries, Retry-After, rate-limit
//! headers, token caching and RS256 assertions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::{TimeZone, Utc};
use muster_connector::http::Url;
use muster_connector::{
    ApiClient, ApiRequest, ConnectorError, HttpSettings, ManualClock, RateLimitHeaders, Secret, TokenCache,
    fetch_oauth_token, sign_rs256,
};

async fn serve(router: Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Url::parse(&format!("http://{addr}/")).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()))
}

#[tokio::test]
async fn retry_after_is_obeyed_exactly_and_5xx_backs_off() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let base = serve(Router::new().route(
        "/x",
        get(move || {
            let n = h.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down").into_response(),
                    1 => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
                    _ => (StatusCode::OK, "{\"ok\":true}").into_response(),
                }
            }
        }),
    ))
    .await;
    let clock = clock();
    let api = ApiClient::new(&HttpSettings::default(), clock.clone()).unwrap();
    let response = api.send(&ApiRequest::get(base.join("x").unwrap())).await.unwrap();
    assert_eq!(response.json::<serde_json::Value>().unwrap()["ok"], true);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 2);
    assert_eq!(sleeps[0], Duration::from_secs(7));
    assert!(sleeps[1] >= Duration::from_millis(500) && sleeps[1] <= Duration::from_millis(1000), "{sleeps:?}");
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_classifies_statuses() {
    let base = serve(
        Router::new()
            .route("/busy", get(|| async { (StatusCode::TOO_MANY_REQUESTS, "no") }))
            .route("/denied", get(|| async { (StatusCode::FORBIDDEN, "missing scope") }))
            .route("/gone", get(|| async { (StatusCode::GONE, "expired") })),
    )
    .await;
    let clock = clock();
    let settings = HttpSettings { max_attempts: 3, ..HttpSettings::default() };
    let api = ApiClient::new(&settings, clock.clone()).unwrap();
    let busy = api.send(&ApiRequest::get(base.join("busy").unwrap())).await;
    assert!(matches!(busy, Err(ConnectorError::RateLimited { .. })), "{busy:?}");
    assert_eq!(clock.sleeps().len(), 2);
    let denied = api.send(&ApiRequest::get(base.join("denied").unwrap())).await;
    assert!(matches!(denied, Err(ConnectorError::Forbidden(ref d)) if d.contains("missing scope")), "{denied:?}");
    let gone = api.send(&ApiRequest::get(base.join("gone").unwrap())).await;
    assert!(gone.unwrap_err().requires_resync());
}

#[tokio::test]
async fn a_too_long_retry_after_fails_instead_of_waiting() {
    let base = serve(
        Router::new().route("/x", get(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "86400")], "") })),
    )
    .await;
    let clock = clock();
    let api = ApiClient::new(&HttpSettings::default(), clock.clone()).unwrap();
    let result = api.send(&ApiRequest::get(base.join("x").unwrap())).await;
    assert!(matches!(result, Err(ConnectorError::RateLimited { wait: Some(w) }) if w.as_secs() == 86400));
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn exhausted_rate_limit_window_waits_for_reset_before_the_next_request() {
    let clock = clock();
    let reset = (clock.now_epoch() + 30).to_string();
    let base = serve(Router::new().route(
        "/x",
        get(move || {
            let reset = reset.clone();
            async move {
                let mut h = HeaderMap::new();
                h.insert("x-rate-limit-limit", "600".parse().unwrap());
                h.insert("x-rate-limit-remaining", "0".parse().unwrap());
                h.insert("x-rate-limit-reset", reset.parse().unwrap());
                (StatusCode::OK, h, "[]")
            }
        }),
    ))
    .await;
    let api = ApiClient::new(&HttpSettings::default(), clock.clone())
        .unwrap()
        .with_rate_limit_headers(RateLimitHeaders::OKTA);
    api.send(&ApiRequest::get(base.join("x").unwrap())).await.unwrap();
    assert!(clock.sleeps().is_empty());
    api.send(&ApiRequest::get(base.join("x").unwrap())).await.unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(30)]);
}

trait Epoch {
    fn now_epoch(&self) -> i64;
}
impl Epoch for ManualClock {
    fn now_epoch(&self) -> i64 {
        muster_connector::Clock::now(self).timestamp()
    }
}

#[tokio::test]
async fn token_is_cached_until_shortly_before_expiry_and_errors_are_classified() {
    let issued = Arc::new(AtomicUsize::new(0));
    let forms = Arc::new(Mutex::new(Vec::<String>::new()));
    let (i, f) = (issued.clone(), forms.clone());
    let base = serve(Router::new().route(
        "/token",
        post(move |body: String| {
            let n = i.fetch_add(1, Ordering::SeqCst);
            f.lock().unwrap().push(body.clone());
            async move {
                if body.contains("client_secret=wrong") {
                    return (
                        StatusCode::UNAUTHORIZED,
                        r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
                    )
                        .into_response();
                }
                (StatusCode::OK, format!(r#"{{"access_token":"tok{n}","token_type":"Bearer","expires_in":3600}}"#))
                    .into_response()
            }
        }),
    ))
    .await;
    let clock = clock();
    let api = ApiClient::new(&HttpSettings::default(), clock.clone()).unwrap();
    let cache = TokenCache::new(Duration::from_secs(300));
    let url = base.join("token").unwrap();
    let form = || vec![("client_secret".to_owned(), "right".to_owned())];
    let t1 = cache.get(clock_now(&clock), || fetch_oauth_token(&api, url.clone(), form())).await.unwrap();
    clock.advance(Duration::from_secs(3000));
    let t2 = cache.get(clock_now(&clock), || fetch_oauth_token(&api, url.clone(), form())).await.unwrap();
    assert_eq!(t1, t2);
    clock.advance(Duration::from_secs(301));
    let t3 = cache.get(clock_now(&clock), || fetch_oauth_token(&api, url.clone(), form())).await.unwrap();
    assert_ne!(t1, t3, "refreshed before expiry");
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    let bad = fetch_oauth_token(&api, url.clone(), vec![("client_secret".into(), "wrong".into())]).await;
    assert!(matches!(bad, Err(ConnectorError::Unauthorized(ref d)) if d.contains("AADSTS7000215")), "{bad:?}");
    assert!(!format!("{t1:?}").contains("tok"));
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<Utc> {
    muster_connector::Clock::now(clock)
}

#[test]
fn rs256_assertion_verifies_with_the_public_key() {
    let pem = Secret::new(include_str!("test-key.pem"));
    let claims = serde_json::json!({"iss": "a", "sub": "a", "aud": "https://t/token", "exp": 4_000_000_000u64});
    let jwt = sign_rs256(&claims, &pem, Some("kid1".into()), Some("thumb".into())).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(include_bytes!("test-key.pub.pem")).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://t/token"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt.expose(), &key, &validation).unwrap();
    assert_eq!(data.header.kid.as_deref(), Some("kid1"));
    assert_eq!(data.header.x5t.as_deref(), Some("thumb"));
    assert!(sign_rs256(&claims, &Secret::new("not a key"), None, None).is_err());
}

fn okta_headers(remaining: i64, reset: i64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-rate-limit-limit", "600".parse().unwrap());
    h.insert("x-rate-limit-remaining", remaining.to_string().parse().unwrap());
    h.insert("x-rate-limit-reset", reset.to_string().parse().unwrap());
    h
}

/// Issue 14: a 500 whose rate-limit headers name a reset a minute away, with
/// plenty left, backs off; it does not wait for the reset.
#[tokio::test]
async fn a_5xx_with_a_far_off_reset_backs_off() {
    let clock = clock();
    let reset = clock.now_epoch() + 60;
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let base = serve(Router::new().route(
        "/api/v1/users",
        get(move || {
            let n = h.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if n == 0 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
                (status, okta_headers(999_999, reset), "[]").into_response()
            }
        }),
    ))
    .await;
    let api = ApiClient::new(&HttpSettings::default(), clock.clone())
        .unwrap()
        .named("Okta")
        .with_rate_limit_headers(RateLimitHeaders::OKTA);
    api.send(&ApiRequest::get(base.join("api/v1/users").unwrap())).await.unwrap();
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 1);
    assert!(sleeps[0] >= Duration::from_millis(250) && sleeps[0] <= Duration::from_millis(500), "{sleeps:?}");
    assert_eq!(api.wait_log().waits().to_string(), "1 retry after 5xx");
}

/// A spent window holds up its own endpoint family only: Okta counts the
/// System Log apart from the users.
#[tokio::test]
async fn a_spent_window_holds_up_only_its_endpoint_family() {
    let clock = clock();
    let reset = clock.now_epoch() + 30;
    let base = serve(
        Router::new()
            .route("/api/v1/logs", get(move || async move { (StatusCode::OK, okta_headers(0, reset), "[]") }))
            .route("/api/v1/users", get(move || async move { (StatusCode::OK, okta_headers(500, reset), "[]") })),
    )
    .await;
    let api = ApiClient::new(&HttpSettings::default(), clock.clone())
        .unwrap()
        .named("Okta")
        .with_rate_limit_headers(RateLimitHeaders::OKTA);
    api.send(&ApiRequest::get(base.join("api/v1/logs").unwrap())).await.unwrap();
    api.send(&ApiRequest::get(base.join("api/v1/users").unwrap())).await.unwrap();
    assert!(clock.sleeps().is_empty(), "the users do not wait for the log's window");
    api.send(&ApiRequest::get(base.join("api/v1/logs?since=x").unwrap())).await.unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(30)]);
    let waits = api.wait_log().waits();
    assert_eq!(waits.to_string(), "waited 30 s for Okta's rate limit");
}

/// A 503 with `Retry-After` is throttling (Graph's way): it waits as asked.
/// A 504 with one is an error: it backs off.
#[tokio::test]
async fn a_503_with_retry_after_waits_for_it_and_a_504_backs_off() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let base = serve(Router::new().route(
        "/x",
        get(move || {
            let n = h.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "4")], "busy").into_response(),
                    1 => (StatusCode::GATEWAY_TIMEOUT, [("retry-after", "120")], "slow").into_response(),
                    _ => (StatusCode::OK, "{}").into_response(),
                }
            }
        }),
    ))
    .await;
    let clock = clock();
    let api = ApiClient::new(&HttpSettings::default(), clock.clone()).unwrap().named("Microsoft Graph");
    api.send(&ApiRequest::get(base.join("x").unwrap())).await.unwrap();
    let sleeps = clock.sleeps();
    assert_eq!(sleeps[0], Duration::from_secs(4));
    assert!(sleeps[1] <= Duration::from_secs(1), "{sleeps:?}");
    let notes = api.wait_log().take_notes();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].to_string(), "4.0 s for Microsoft Graph's rate limit (503 with Retry-After)");
    assert!(notes[1].to_string().contains("before retry 2 after a 504 from Microsoft Graph"), "{}", notes[1]);
}

/// A request that outlasts the timeout is retried with a backoff, counted
/// as a retry after a timeout.
#[tokio::test]
async fn a_timeout_is_retried_with_a_backoff() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let base = serve(Router::new().route(
        "/slow",
        get(move || {
            let n = h.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                "{}"
            }
        }),
    ))
    .await;
    let clock = clock();
    let settings = HttpSettings { timeout_ms: Some(200), ..HttpSettings::default() };
    let api = ApiClient::new(&settings, clock.clone()).unwrap();
    api.send(&ApiRequest::get(base.join("slow").unwrap())).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let waits = api.wait_log().waits();
    assert_eq!((waits.retries_after_timeouts, waits.retries()), (1, 1), "{waits:?}");
}

/// Never more requests in flight than the client's bound, however many are sent.
#[tokio::test]
async fn requests_in_flight_stay_within_the_bound() {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), most.clone());
    let base = serve(Router::new().route(
        "/x",
        get(move || {
            let (n, m) = (n.clone(), m.clone());
            async move {
                let in_flight = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(in_flight, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                "{}"
            }
        }),
    ))
    .await;
    let api = ApiClient::new(&HttpSettings::default(), clock()).unwrap().with_concurrency(3);
    let request = ApiRequest::get(base.join("x").unwrap());
    let sends: Vec<_> = (0..12).map(|_| api.send(&request)).collect();
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 3);
}

/// A `Retry-After` too long for the calendar fails the request as too long a
/// wait; nothing overflows.
#[tokio::test]
async fn an_absurd_retry_after_is_refused_without_overflow() {
    let base =
        serve(Router::new().route(
            "/x",
            get(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "18446744073709551615")], "") }),
        ))
        .await;
    let clock = clock();
    let api = ApiClient::new(&HttpSettings::default(), clock.clone()).unwrap();
    let result = api.send(&ApiRequest::get(base.join("x").unwrap())).await;
    assert!(matches!(result, Err(ConnectorError::RateLimited { wait: Some(_) })), "{result:?}");
    assert!(clock.sleeps().is_empty());
}
