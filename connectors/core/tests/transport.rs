//! A transport error names the endpoint that could not be reached (scheme,
//! host, port and path) and never its query, which may carry a token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use chrono::Utc;
use muster_connector::http::Url;
use muster_connector::{ApiClient, ApiRequest, ConnectorError, HttpSettings, ManualClock};

#[tokio::test]
async fn a_refused_connection_names_scheme_host_and_port() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let settings = HttpSettings { max_attempts: 2, ..HttpSettings::default() };
    let api = ApiClient::new(&settings, clock.clone()).unwrap();
    let url = Url::parse(&format!("http://127.0.0.1:{port}/graph/v1.0/users?$skiptoken=secret-ish")).unwrap();
    let err = api.send(&ApiRequest::get(url)).await.unwrap_err();
    let ConnectorError::Transport(text) = &err else { panic!("not a transport error: {err}") };
    assert!(text.contains(&format!("http://127.0.0.1:{port}/graph/v1.0/users")), "{text}");
    assert!(!text.contains("secret-ish"), "the query stays out of errors: {text}");
    assert_eq!(clock.sleeps().len(), 1, "retried once, through the clock");
}

#[tokio::test]
async fn a_default_port_is_written_out() {
    // The URL says no port; the error still names it (443), whatever answers there.
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let settings = HttpSettings { max_attempts: 1, connect_timeout_secs: 2, ..HttpSettings::default() };
    let api = ApiClient::new(&settings, clock).unwrap();
    let err = api.send(&ApiRequest::get(Url::parse("https://127.0.0.1/v1.0/users").unwrap())).await.unwrap_err();
    let ConnectorError::Transport(text) = &err else { panic!("not a transport error: {err}") };
    assert!(text.contains("https://127.0.0.1:443/v1.0/users"), "{text}");
}
