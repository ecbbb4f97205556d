//! Tokens: OAuth 2.0 token requests, a cache that refreshes before expiry,
//! and RS256 JWT assertions (RFC 7523) for Okta `private_key_jwt`, Entra
//! certificate credentials and Google service accounts. A cache can be
//! shared by every connector of one credential through a
//! [`TokenPool`](crate::token_pool::TokenPool), so tokens outlive a pull.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::error::ConnectorError;
use crate::http::{ApiClient, ApiRequest, ApiResponse, Url, Verdict};
use crate::secret::Secret;

/// An access token and when it stops working.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
}

/// Holds one access token and fetches a new one `margin` before expiry.
#[derive(Debug)]
pub struct TokenCache {
    current: Mutex<Option<AccessToken>>,
    margin: Duration,
}

impl TokenCache {
    pub fn new(margin: Duration) -> Self {
        Self { current: Mutex::new(None), margin }
    }

    /// The cached token, or a fresh one from `fetch` when it is missing or
    /// about to expire. Concurrent callers wait for one fetch.
    pub async fn get<F, Fut>(&self, now: DateTime<Utc>, fetch: F) -> Result<Secret, ConnectorError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<AccessToken, ConnectorError>> + Send,
    {
        let mut current = self.current.lock().await;
        let margin = chrono::Duration::from_std(self.margin).unwrap_or(chrono::Duration::zero());
        if let Some(token) = current.as_ref()
            && token.expires_at - margin > now
        {
            return Ok(token.token.clone());
        }
        let fresh = fetch().await?;
        let token = fresh.token.clone();
        *current = Some(fresh);
        Ok(token)
    }

    /// A token fetched now whatever is cached, then kept for the next
    /// callers: a connection test must test the credential, not a token
    /// fetched an hour ago. When the fetch fails the cached token stays.
    pub async fn get_fresh<F, Fut>(&self, fetch: F) -> Result<Secret, ConnectorError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<AccessToken, ConnectorError>> + Send,
    {
        let mut current = self.current.lock().await;
        let fresh = fetch().await?;
        let token = fresh.token.clone();
        *current = Some(fresh);
        Ok(token)
    }

    /// Forgets the token (after a 401), so the next call fetches one.
    pub async fn invalidate(&self) {
        *self.current.lock().await = None;
    }

    /// True when the cache holds no token that is still usable at `now`
    /// (none, or one past its refresh point). A cache being refreshed right
    /// now counts as in use.
    pub fn is_spent(&self, now: DateTime<Utc>) -> bool {
        let Ok(current) = self.current.try_lock() else { return false };
        let margin = chrono::Duration::from_std(self.margin).unwrap_or(chrono::Duration::zero());
        current.as_ref().is_none_or(|token| token.expires_at - margin <= now)
    }
}

/// Classifies a token endpoint's answer by its OAuth `error` (RFC 6749 §5.2).
fn token_verdict(response: &ApiResponse) -> Verdict {
    let status = response.status.as_u16();
    if response.status.is_success() {
        return Verdict::Accept;
    }
    if matches!(status, 429 | 500 | 502 | 503 | 504) {
        return Verdict::Retry;
    }
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    let code = body.get("error").and_then(|v| v.as_str()).unwrap_or("");
    let description = body.get("error_description").and_then(|v| v.as_str()).unwrap_or("");
    let detail = format!("token endpoint answered {status} {code}: {description}");
    Verdict::Fail(match code {
        "invalid_scope" => ConnectorError::Forbidden(detail),
        "invalid_client" | "invalid_grant" | "unauthorized_client" | "access_denied" => {
            ConnectorError::Unauthorized(detail)
        }
        _ if status == 401 || status == 400 => ConnectorError::Unauthorized(detail),
        _ if status == 403 => ConnectorError::Forbidden(detail),
        _ => ConnectorError::Http { status, detail },
    })
}

/// POSTs a form to an OAuth 2.0 token endpoint and reads
/// `{access_token, expires_in}` (`expires_in` as a number or a string).
pub async fn fetch_oauth_token(
    api: &ApiClient,
    token_url: Url,
    form: Vec<(String, String)>,
) -> Result<AccessToken, ConnectorError> {
    let response = api.send_with(&ApiRequest::post_form(token_url, form), &token_verdict).await?;
    let body: serde_json::Value = response.json()?;
    let token = body
        .get("access_token")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ConnectorError::Protocol("token response without access_token".into()))?;
    let expires_in = match body.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(3600);
    Ok(AccessToken { token: Secret::new(token), expires_at: api.clock().now() + chrono::Duration::seconds(expires_in) })
}

/// Signs `claims` as an RS256 JWT with a PEM private key (PKCS#1 or
/// PKCS#8). `kid` and `x5t` (base64url certificate thumbprint) go in the header.
pub fn sign_rs256<C: Serialize>(
    claims: &C,
    private_key_pem: &Secret,
    kid: Option<String>,
    x5t: Option<String>,
) -> Result<Secret, ConnectorError> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
        .map_err(|e| ConnectorError::Config(format!("private key is not an RSA PEM key: {e}")))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid;
    header.x5t = x5t;
    jsonwebtoken::encode(&header, claims, &key)
        .map(Secret::new)
        .map_err(|e| ConnectorError::Config(format!("signing the client assertion: {e}")))
}

/// A random `jti` for an assertion.
pub fn random_jti() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
