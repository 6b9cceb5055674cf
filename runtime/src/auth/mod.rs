//! Who may do what: API tokens, their roles, and the registry that checks them.
//!
//! A token is `fct_<id>_<secret>`: the id (16 hex digits) is public and names the token in
//! logs, metrics and the audit trail; the secret (32 random bytes, base64url) is shown once,
//! when the token is made, and only its SHA-256 is kept. The token file
//! ([`TokenFile`], `auth.tokens_file`) is written by `forecourt token add|revoke` and read by
//! the appliance, which reloads it when it changes ([`Authenticator`]), so a revocation takes
//! effect without a restart.
//!
//! This module decides whether a presented token is valid and what its role grants. It must
//! not know HTTP: the http module maps routes to [`Permission`]s and denials to responses.

mod authenticator;
mod config;
mod file;
mod role;
mod token;

pub use authenticator::{ActiveToken, Authenticator, Changes, Denial, Principal, RateLimited};
pub use config::AuthConfig;
pub use file::{TokenEntry, TokenFile, TokenFileError};
pub use role::{Permission, Role};
pub use token::{IssuedToken, PresentedToken, TokenId, TokenParseError};
