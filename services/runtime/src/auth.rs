//! Caller authentication: bearer tokens, kept only as SHA-256 hashes and compared in
//! constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The hex SHA-256 of a token: what configs store instead of the token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (256 bits, hex), for `muster up` and token rotation.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("mst_{}", hex::encode(bytes))
}

/// Why a token set could not be built.
#[derive(Debug, thiserror::Error)]
#[error("auth.token_sha256[{index}] is not a 64-character hex SHA-256")]
pub struct BadTokenHash {
    /// Which entry.
    pub index: usize,
}

/// Why a service's caller tokens are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenConfigError {
    /// A hash is malformed.
    #[error(transparent)]
    BadHash(#[from] BadTokenHash),
    /// No tokens: nobody could call the service.
    #[error("auth.token_sha256 is empty: configure at least one caller token (see `muster token`)")]
    Empty,
}

/// The tokens a service accepts.
#[derive(Clone, Default)]
pub struct TokenSet {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} tokens)", self.hashes.len())
    }
}

impl TokenSet {
    /// From hex hashes as configs hold them.
    pub fn from_hex_hashes<S: AsRef<str>>(hashes: &[S]) -> Result<Self, BadTokenHash> {
        let mut out = Vec::with_capacity(hashes.len());
        for (index, h) in hashes.iter().enumerate() {
            let bytes = hex::decode(h.as_ref().trim()).map_err(|_| BadTokenHash { index })?;
            let arr: [u8; 32] = bytes.try_into().map_err(|_| BadTokenHash { index })?;
            out.push(arr);
        }
        Ok(Self { hashes: out })
    }

    /// The tokens of a service's `[auth]` config; refuses an empty list, since a
    /// service nobody can call is a misconfiguration, not a locked door.
    pub fn from_config(cfg: &crate::config::AuthConfig) -> Result<Self, TokenConfigError> {
        let tokens = Self::from_hex_hashes(&cfg.token_sha256)?;
        if tokens.is_empty() {
            return Err(TokenConfigError::Empty);
        }
        Ok(tokens)
    }

    /// Whether no token is configured (then nobody gets in).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `token` is one of ours. Every configured hash is compared, each in
    /// constant time, so timing says nothing about which or how much matched.
    pub fn verify(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut ok = subtle::Choice::from(0);
        for h in &self.hashes {
            ok |= h.ct_eq(&digest);
        }
        bool::from(ok)
    }

    /// Checks an `authorization` header value of the form `Bearer <token>`.
    pub fn verify_header(&self, header: Option<&str>) -> bool {
        match header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) {
            Some(token) => self.verify(token.trim()),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let set = TokenSet::from_hex_hashes(&[hash_token("a"), hash_token("b")]).unwrap();
        assert!(set.verify("a"));
        assert!(set.verify("b"));
        assert!(!set.verify("c"));
        assert!(set.verify_header(Some("Bearer b")));
        assert!(!set.verify_header(Some("b")));
        assert!(!set.verify_header(None));
    }

    #[test]
    fn bad_hashes_are_named() {
        let err = TokenSet::from_hex_hashes(&[hash_token("a"), "zz".into()]).unwrap_err();
        assert_eq!(err.index, 1);
    }

    #[test]
    fn generated_tokens_differ() {
        assert_ne!(generate_token(), generate_token());
    }
}
