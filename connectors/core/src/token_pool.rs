//! Access tokens kept across connector instances. Directory-sync builds a new
//! connector for every pull; a [`TokenCache`] inside the connector would make
//! every pull fetch a token again (one more request, and for Entra and Google
//! one more signed assertion). A [`TokenPool`] owned by the connector factory
//! hands every connector of the same credential the same cache, so a token is
//! fetched once and reused until shortly before it expires.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::auth::TokenCache;

/// Names one credential by a SHA-256 digest of everything that decides which
/// token the endpoint issues (token endpoint, client, scope, subject) *and*
/// of the secret itself: a directory that names another's client id without
/// its secret gets a key of its own, never the other's token. The secret is
/// only hashed, and `Debug` prints a short prefix of the digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CredentialKey([u8; 32]);

impl CredentialKey {
    /// The digest of `parts`, each length-prefixed so no two lists collide.
    pub fn new(parts: &[&str]) -> Self {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        Self(hash.finalize().into())
    }
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The token caches of every credential in use, shared by clones.
#[derive(Clone, Default)]
pub struct TokenPool {
    caches: Arc<Mutex<HashMap<CredentialKey, Arc<TokenCache>>>>,
}

impl fmt::Debug for TokenPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPool").field("credentials", &self.len()).finish()
    }
}

impl TokenPool {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cache of `key`, created with `margin` when it is new. Caches no
    /// connector holds any more and whose token has expired by `now` are
    /// dropped here, so a pool outliving many config changes stays small.
    pub fn cache(&self, key: &CredentialKey, margin: Duration, now: DateTime<Utc>) -> Arc<TokenCache> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.retain(|k, cache| k == key || Arc::strong_count(cache) > 1 || !cache.is_spent(now));
        caches.entry(key.clone()).or_insert_with(|| Arc::new(TokenCache::new(margin))).clone()
    }

    /// How many credentials have a cache.
    pub fn len(&self) -> usize {
        self.caches.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AccessToken;
    use crate::secret::Secret;

    #[test]
    fn keys_differ_by_every_part_and_never_show_the_secret() {
        let a = CredentialKey::new(&["https://login/t/token", "client", "scope", "hunter2"]);
        assert_eq!(a, CredentialKey::new(&["https://login/t/token", "client", "scope", "hunter2"]));
        assert_ne!(a, CredentialKey::new(&["https://login/t/token", "client", "scope", "hunter3"]));
        assert_ne!(CredentialKey::new(&["ab", "c"]), CredentialKey::new(&["a", "bc"]));
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn one_cache_per_credential_and_spent_ones_are_dropped() {
        let pool = TokenPool::new();
        let now = Utc::now();
        let margin = Duration::from_secs(300);
        let key = CredentialKey::new(&["a"]);
        let first = pool.cache(&key, margin, now);
        let token = AccessToken { token: Secret::new("t"), expires_at: now + chrono::Duration::seconds(3600) };
        first.get(now, || async { Ok(token) }).await.unwrap();
        drop(first);
        let again = pool.cache(&key, margin, now);
        let fetched = again.get(now, || async { panic!("the cached token was not reused") }).await.unwrap();
        assert_eq!(fetched.expose(), "t");
        drop(again);
        // An unused cache with a live token stays; one whose token expired goes.
        pool.cache(&CredentialKey::new(&["b"]), margin, now);
        assert_eq!(pool.len(), 2);
        pool.cache(&CredentialKey::new(&["b"]), margin, now + chrono::Duration::seconds(7200));
        assert_eq!(pool.len(), 1, "a's token expired and nobody holds its cache");
    }
}
