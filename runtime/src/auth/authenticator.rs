//! The appliance's view of the token file: which tokens are valid now, what each may do, and
//! each one's rate limit. Reloaded when the file changes; a file that cannot be read keeps
//! the tokens loaded before (and says so), so a bad edit never opens the appliance.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::file::{TokenEntry, TokenFile, TokenFileError};
use super::role::{Permission, Role};
use super::token::{PresentedToken, TokenId, TokenParseError};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No token exists and anonymous access is allowed: every route is open.
    Unrestricted,
    /// No token was presented, and tokens are required.
    Anonymous,
    /// A valid token.
    Token(Arc<ActiveToken>),
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        match self {
            Self::Unrestricted => true,
            Self::Anonymous => permission == Permission::Open,
            Self::Token(token) => token.role.grants(permission),
        }
    }

    pub fn token_id(&self) -> Option<&TokenId> {
        match self {
            Self::Token(token) => Some(&token.id),
            _ => None,
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Self::Token(token) => Some(token.role),
            _ => None,
        }
    }

    /// Fails when the token has used up its rate; `Ok` for callers without a limit.
    pub fn check_rate(&self) -> Result<(), RateLimited> {
        let Self::Token(token) = self else { return Ok(()) };
        let Some(limiter) = &token.limiter else { return Ok(()) };
        limiter
            .check()
            .map_err(|not_until| RateLimited { retry_after: not_until.wait_time_from(limiter.clock().now()) })
    }
}

/// A token that has used up its rate: it may try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("the bearer token is malformed: {0}")]
    Malformed(TokenParseError),
    #[error("no token has the id {0}")]
    Unknown(TokenId),
    #[error("the token {0} was revoked")]
    Revoked(TokenId),
    #[error("the token {0}'s secret is wrong")]
    WrongSecret(TokenId),
}

impl Denial {
    /// A stable word for metrics and the audit trail.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotBearer | Self::Malformed(_) => "malformed_token",
            Self::Unknown(_) => "unknown_token",
            Self::Revoked(_) => "revoked_token",
            Self::WrongSecret(_) => "wrong_secret",
        }
    }

    /// The id the caller claimed, if it read as one.
    pub fn token_id(&self) -> Option<&TokenId> {
        match self {
            Self::Unknown(id) | Self::Revoked(id) | Self::WrongSecret(id) => Some(id),
            Self::NotBearer | Self::Malformed(_) => None,
        }
    }
}

/// A token the appliance accepts now.
pub struct ActiveToken {
    pub id: TokenId,
    pub name: String,
    pub role: Role,
    entry: TokenEntry,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl std::fmt::Debug for ActiveToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveToken").field("id", &self.id).field("name", &self.name).field("role", &self.role).finish()
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    /// Active tokens by id.
    active: HashMap<TokenId, Arc<ActiveToken>>,
    /// Ids of revoked tokens, so their use is reported as such.
    revoked: HashMap<TokenId, String>,
    /// Whether requests need a token: any token exists, or anonymous access is not allowed.
    required: bool,
}

/// What a reload changed, for the audit trail.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<(TokenId, String, Role)>,
    pub revoked: Vec<(TokenId, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.revoked.is_empty()
    }
}

/// Checks bearer tokens against the token file.
#[derive(Debug)]
pub struct Authenticator {
    file: TokenFile,
    anonymous_allowed: bool,
    snapshot: ArcSwap<Snapshot>,
    /// The file's identity when last read: (modified, length, inode).
    seen: std::sync::Mutex<Option<(SystemTime, u64, u64)>>,
}

impl Authenticator {
    /// Reads the token file. `anonymous_allowed`: while no token exists, requests need none.
    pub fn open(file: TokenFile, anonymous_allowed: bool) -> Result<Self, TokenFileError> {
        let authenticator = Self {
            file,
            anonymous_allowed,
            snapshot: ArcSwap::from_pointee(Snapshot { required: !anonymous_allowed, ..Snapshot::default() }),
            seen: std::sync::Mutex::new(None),
        };
        authenticator.reload_if_changed()?;
        Ok(authenticator)
    }

    pub fn file(&self) -> &TokenFile {
        &self.file
    }

    /// Whether requests need a token now.
    pub fn required(&self) -> bool {
        self.snapshot.load().required
    }

    /// Tokens accepted now.
    pub fn active_count(&self) -> usize {
        self.snapshot.load().active.len()
    }

    /// The caller behind an `Authorization` header value (`None`: no header).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, Denial> {
        let snapshot = self.snapshot.load();
        if !snapshot.required {
            return Ok(Principal::Unrestricted);
        }
        let Some(value) = authorization else { return Ok(Principal::Anonymous) };
        let token = bearer(value).ok_or(Denial::NotBearer)?;
        let presented: PresentedToken = token.parse().map_err(Denial::Malformed)?;
        match snapshot.active.get(&presented.id) {
            Some(active) if active.entry.secret_sha256.matches(&presented.digest) => {
                Ok(Principal::Token(Arc::clone(active)))
            }
            Some(_) => Err(Denial::WrongSecret(presented.id)),
            None if snapshot.revoked.contains_key(&presented.id) => Err(Denial::Revoked(presented.id)),
            None => Err(Denial::Unknown(presented.id)),
        }
    }

    /// Reads the file again if it changed since it was last read; returns what changed.
    /// On an error the tokens loaded before stay in force.
    pub fn reload_if_changed(&self) -> Result<Changes, TokenFileError> {
        {
            let identity = file_identity(self.file.path());
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == identity {
                return Ok(Changes::default());
            }
            // Recorded before reading, so a damaged file is reported once, not on every check.
            *seen = identity;
        }
        self.reload()
    }

    fn reload(&self) -> Result<Changes, TokenFileError> {
        let entries = self.file.read()?;
        let old = self.snapshot.load();
        let mut next = Snapshot { required: !self.anonymous_allowed || !entries.is_empty(), ..Snapshot::default() };
        let mut changes = Changes::default();
        for entry in entries {
            if !entry.is_active() {
                if old.active.contains_key(&entry.id) {
                    changes.revoked.push((entry.id.clone(), entry.name.clone()));
                }
                next.revoked.insert(entry.id.clone(), entry.name.clone());
                continue;
            }
            let token = match old.active.get(&entry.id) {
                // Unchanged: keep it, and its bucket's state with it.
                Some(existing) if existing.entry == entry => Arc::clone(existing),
                known => {
                    if known.is_none() {
                        changes.added.push((entry.id.clone(), entry.name.clone(), entry.role));
                    }
                    Arc::new(ActiveToken {
                        id: entry.id.clone(),
                        name: entry.name.clone(),
                        role: entry.role,
                        limiter: entry.rate_per_sec.map(|rate| Arc::new(limiter(rate, entry.burst))),
                        entry,
                    })
                }
            };
            next.active.insert(token.id.clone(), token);
        }
        self.snapshot.store(Arc::new(next));
        Ok(changes)
    }
}

fn limiter(rate: NonZeroU32, burst: Option<NonZeroU32>) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst.unwrap_or(rate)))
}

/// `Bearer <token>`, the scheme in any case (RFC 9110 says schemes are case-insensitive).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn file_identity(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn tokens_are_checked_and_a_revocation_takes_effect_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path().join("tokens.json"));
        let auth = Authenticator::open(file.clone(), false).unwrap();
        assert!(auth.required());
        assert!(matches!(auth.authenticate(None), Ok(Principal::Anonymous)));

        let (_, kiosk) = file.add("kiosk-1", Role::Kiosk, None, None).unwrap();
        let changes = auth.reload_if_changed().unwrap();
        assert_eq!(changes.added.len(), 1);
        let principal = auth.authenticate(Some(&header(&kiosk.token))).unwrap();
        assert_eq!(principal.role(), Some(Role::Kiosk));
        assert!(principal.may(Permission::Predict) && !principal.may(Permission::Inspect));
        let lower = format!("bearer {}", kiosk.token).into_bytes();
        assert!(auth.authenticate(Some(&lower)).is_ok(), "the scheme is case-insensitive");

        assert_eq!(auth.authenticate(Some(b"Basic abc")).unwrap_err(), Denial::NotBearer);
        assert_eq!(auth.authenticate(Some(b"Bearer nope")).unwrap_err().reason(), "malformed_token");
        let unknown = crate::auth::IssuedToken::generate();
        assert_eq!(auth.authenticate(Some(&header(&unknown.token))).unwrap_err(), Denial::Unknown(unknown.id));
        let wrong = format!("{}{}", &kiosk.token[..21], &unknown.token[21..]);
        assert_eq!(auth.authenticate(Some(&header(&wrong))).unwrap_err(), Denial::WrongSecret(kiosk.id.clone()));

        file.revoke("kiosk-1").unwrap();
        let changes = auth.reload_if_changed().unwrap();
        assert_eq!(changes.revoked, vec![(kiosk.id.clone(), "kiosk-1".to_owned())]);
        assert_eq!(auth.authenticate(Some(&header(&kiosk.token))).unwrap_err(), Denial::Revoked(kiosk.id));
        assert!(auth.reload_if_changed().unwrap().is_empty(), "an unchanged file is not read again");
    }

    #[test]
    fn anonymous_access_only_while_allowed_and_no_token_exists() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path().join("tokens.json"));
        let auth = Authenticator::open(file.clone(), true).unwrap();
        assert!(!auth.required());
        assert!(matches!(auth.authenticate(Some(b"garbage")), Ok(Principal::Unrestricted)));
        let (_, admin) = file.add("ops", Role::Admin, None, None).unwrap();
        auth.reload_if_changed().unwrap();
        assert!(auth.required(), "once a token exists, every caller needs one");
        assert!(matches!(auth.authenticate(None), Ok(Principal::Anonymous)));
        file.revoke("ops").unwrap();
        auth.reload_if_changed().unwrap();
        assert!(auth.required(), "revoking the last token does not open the appliance");
        assert!(auth.authenticate(Some(&header(&admin.token))).is_err());
    }

    #[test]
    fn a_damaged_file_keeps_the_tokens_loaded_before() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path().join("tokens.json"));
        let (_, viewer) = file.add("screen", Role::Viewer, None, None).unwrap();
        let auth = Authenticator::open(file.clone(), false).unwrap();
        std::fs::write(file.path(), "not json at all, and longer than before").unwrap();
        assert!(auth.reload_if_changed().is_err());
        assert!(auth.authenticate(Some(&header(&viewer.token))).is_ok());
    }

    #[test]
    fn a_token_over_its_rate_is_limited_and_told_when_to_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path().join("tokens.json"));
        let (_, kiosk) = file.add("slow", Role::Kiosk, NonZeroU32::new(1), NonZeroU32::new(3)).unwrap();
        let auth = Authenticator::open(file.clone(), false).unwrap();
        let principal = auth.authenticate(Some(&header(&kiosk.token))).unwrap();
        for _ in 0..3 {
            principal.check_rate().unwrap();
        }
        let limited = principal.check_rate().unwrap_err();
        assert!(limited.retry_after > Duration::ZERO && limited.retry_after <= Duration::from_secs(1), "{limited:?}");
        // A reload that does not touch this token keeps its bucket (no fresh burst).
        file.add("other", Role::Viewer, None, None).unwrap();
        auth.reload_if_changed().unwrap();
        let again = auth.authenticate(Some(&header(&kiosk.token))).unwrap();
        assert!(again.check_rate().is_err());
    }
}
