//! The token itself: its public id, its secret, and the digest kept of it.
//!
//! Secrets are 256 random bits, so a plain SHA-256 is enough to keep them: a slow password
//! hash protects guessable secrets, and these cannot be guessed. The digest is compared in
//! constant time all the same, so a check's timing says nothing about how close a guess was.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "fct_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// base64url of 32 bytes, without padding.
const SECRET_CHARS: usize = 43;

/// A token's public id: 16 lowercase hex digits. Safe to log and to audit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    fn random() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TokenId {
    type Error = TokenParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let valid =
            value.len() == ID_BYTES * 2 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid { Ok(Self(value)) } else { Err(TokenParseError::Id) }
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> Self {
        id.0
    }
}

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a presented string is not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    #[error("a token starts with `fct_`")]
    Prefix,
    #[error("a token id is 16 lowercase hex digits")]
    Id,
    #[error("a token's secret is 43 base64url characters")]
    Secret,
}

/// The SHA-256 of a secret: what the token file keeps.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &SecretDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

impl TryFrom<String> for SecretDigest {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&value, &mut bytes).map_err(|_| "a secret digest is 64 hex digits".to_owned())?;
        Ok(Self(bytes))
    }
}

impl From<SecretDigest> for String {
    fn from(digest: SecretDigest) -> Self {
        hex::encode(digest.0)
    }
}

/// A token as a client presented it (`Authorization: Bearer fct_...`), parsed but not yet checked.
#[derive(Clone)]
pub struct PresentedToken {
    pub id: TokenId,
    pub digest: SecretDigest,
}

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedToken").field("id", &self.id).finish_non_exhaustive()
    }
}

impl std::str::FromStr for PresentedToken {
    type Err = TokenParseError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        let rest = token.strip_prefix(PREFIX).ok_or(TokenParseError::Prefix)?;
        let (id, secret) = rest.split_at_checked(ID_BYTES * 2).ok_or(TokenParseError::Id)?;
        let id = TokenId::try_from(id.to_owned())?;
        let secret = secret.strip_prefix('_').ok_or(TokenParseError::Secret)?;
        let valid =
            secret.len() == SECRET_CHARS && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(TokenParseError::Secret);
        }
        Ok(Self { id, digest: SecretDigest::of(secret.as_bytes()) })
    }
}

/// A freshly made token: the whole token is in `token`, shown once and never stored.
pub struct IssuedToken {
    pub id: TokenId,
    pub token: String,
    pub digest: SecretDigest,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("id", &self.id).finish_non_exhaustive()
    }
}

impl IssuedToken {
    pub fn generate() -> Self {
        let id = TokenId::random();
        let mut secret = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut secret);
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let digest = SecretDigest::of(secret.as_bytes());
        Self { token: format!("{PREFIX}{id}_{secret}"), id, digest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_parses_back_to_its_id_and_digest() {
        let issued = IssuedToken::generate();
        let presented: PresentedToken = issued.token.parse().unwrap();
        assert_eq!(presented.id, issued.id);
        assert!(presented.digest.matches(&issued.digest));
        assert_ne!(IssuedToken::generate().token, issued.token);
        assert!(!format!("{issued:?}{presented:?}").contains(&issued.token[21..]), "secrets never in Debug");
    }

    #[test]
    fn malformed_tokens_are_refused_with_the_rule() {
        let good = IssuedToken::generate().token;
        assert_eq!("".parse::<PresentedToken>().unwrap_err(), TokenParseError::Prefix);
        assert_eq!("Bearer x".parse::<PresentedToken>().unwrap_err(), TokenParseError::Prefix);
        assert_eq!("fct_0123".parse::<PresentedToken>().unwrap_err(), TokenParseError::Id);
        assert_eq!(
            good.to_uppercase().replacen("FCT_", "fct_", 1).parse::<PresentedToken>().unwrap_err(),
            TokenParseError::Id
        );
        assert_eq!(format!("{good}x").parse::<PresentedToken>().unwrap_err(), TokenParseError::Secret);
        assert_eq!(good[..good.len() - 1].parse::<PresentedToken>().unwrap_err(), TokenParseError::Secret);
        let with_space = format!("{} ", &good[..good.len() - 1]);
        assert_eq!(with_space.parse::<PresentedToken>().unwrap_err(), TokenParseError::Secret);
        // Multi-byte characters where the id ends must not panic the split.
        assert!("fct_0123456789abcdé_x".parse::<PresentedToken>().is_err());
    }

    #[test]
    fn a_different_secret_does_not_match() {
        let issued = IssuedToken::generate();
        let mut other = issued.token.clone();
        let last = other.pop().unwrap();
        other.push(if last == 'A' { 'B' } else { 'A' });
        let presented: PresentedToken = other.parse().unwrap();
        assert!(!presented.digest.matches(&issued.digest));
    }
}
