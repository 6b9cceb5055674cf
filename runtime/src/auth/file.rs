//! The token file: every token ever made (revoked ones stay, marked, so their ids keep
//! meaning something in the audit trail), as JSON, with only each secret's digest.
//!
//! `forecourt token` writes it while the appliance may be reading it: every change takes a
//! lock file, writes a temporary file and renames it over the old one, so a reader sees the
//! old file or the new one, never half of one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::role::Role;
use super::token::{IssuedToken, SecretDigest, TokenId};

/// A token file larger than this is refused: it holds a few hundred bytes a token.
const MAX_FILE_BYTES: u64 = 16 << 20;
const FORMAT_VERSION: u32 = 1;

/// One token as the file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub id: TokenId,
    /// Who or what holds it, e.g. `front-desk`: unique among the tokens not revoked.
    pub name: String,
    pub role: Role,
    pub secret_sha256: SecretDigest,
    /// RFC 3339 UTC.
    pub created: String,
    /// Requests per second this token may make (a token bucket); `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<NonZeroU32>,
    /// The bucket's size: how many requests may come at once. Default: one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<NonZeroU32>,
    /// When it was revoked (RFC 3339 UTC); a revoked token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

impl TokenEntry {
    pub fn is_active(&self) -> bool {
        self.revoked.is_none()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the token file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the token file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("a token name is 1 to 64 letters, digits, `.`, `_` or `-`, not {0:?}")]
    InvalidName(String),
    #[error("a token named {0:?} exists already; revoke it first or choose another name")]
    DuplicateName(String),
    #[error("no token has the id or name {0:?} (see `forecourt token list`)")]
    NotFound(String),
    #[error("the token {0} is revoked already")]
    AlreadyRevoked(TokenId),
}

/// The token file at one path.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token; none when the file does not exist.
    pub fn read(&self) -> Result<Vec<TokenEntry>, TokenFileError> {
        let read_error = |source| TokenFileError::Read { path: self.path.clone(), source };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(read_error(error)),
        };
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(read_error)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(self.invalid(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let document: Document = serde_json::from_str(&text).map_err(|error| self.invalid(error.to_string()))?;
        if document.version != FORMAT_VERSION {
            return Err(
                self.invalid(format!("format version {} (this build reads {FORMAT_VERSION})", document.version))
            );
        }
        Ok(document.tokens)
    }

    /// Makes a token: the returned [`IssuedToken`] holds the only copy of its secret.
    pub fn add(
        &self,
        name: &str,
        role: Role,
        rate_per_sec: Option<NonZeroU32>,
        burst: Option<NonZeroU32>,
    ) -> Result<(TokenEntry, IssuedToken), TokenFileError> {
        check_name(name)?;
        self.update(|tokens| {
            if tokens.iter().any(|token| token.is_active() && token.name == name) {
                return Err(TokenFileError::DuplicateName(name.to_owned()));
            }
            let issued = IssuedToken::generate();
            let entry = TokenEntry {
                id: issued.id.clone(),
                name: name.to_owned(),
                role,
                secret_sha256: issued.digest.clone(),
                created: crate::store::rfc3339_millis(crate::store::now_unix_ms()),
                rate_per_sec,
                burst,
                revoked: None,
            };
            tokens.push(entry.clone());
            Ok((entry, issued))
        })
    }

    /// Revokes the token with this id, or the active token with this name.
    pub fn revoke(&self, id_or_name: &str) -> Result<TokenEntry, TokenFileError> {
        self.update(|tokens| {
            let index = tokens
                .iter()
                .position(|token| token.id.as_str() == id_or_name)
                .or_else(|| tokens.iter().position(|token| token.is_active() && token.name == id_or_name))
                .ok_or_else(|| TokenFileError::NotFound(id_or_name.to_owned()))?;
            let token = &mut tokens[index];
            if !token.is_active() {
                return Err(TokenFileError::AlreadyRevoked(token.id.clone()));
            }
            token.revoked = Some(crate::store::rfc3339_millis(crate::store::now_unix_ms()));
            Ok(token.clone())
        })
    }

    fn invalid(&self, message: String) -> TokenFileError {
        TokenFileError::Invalid { path: self.path.clone(), message }
    }

    /// Read, change and write back under the lock.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<TokenEntry>) -> Result<T, TokenFileError>,
    ) -> Result<T, TokenFileError> {
        let write_error = |source| TokenFileError::Write { path: self.path.clone(), source };
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(write_error)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.path.with_extension("lock"))
            .map_err(write_error)?;
        lock.lock().map_err(write_error)?;

        let mut tokens = self.read()?;
        let result = change(&mut tokens)?;
        let text = serde_json::to_string_pretty(&Document { version: FORMAT_VERSION, tokens })
            .map_err(|error| self.invalid(error.to_string()))?;

        // Keep an existing file's owner and mode; a new one gets the folder's owner and group
        // (so `sudo forecourt token add` leaves a file the service's user can read) and 0640.
        let (uid, gid, mode) = match std::fs::metadata(&self.path) {
            Ok(meta) => (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
            Err(_) => {
                let meta = std::fs::metadata(&dir).map_err(write_error)?;
                (meta.uid(), meta.gid(), 0o640)
            }
        };
        let temporary = self.path.with_extension("tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(write_error)?;
        file.write_all(text.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        if let Err(error) = std::os::unix::fs::chown(&temporary, Some(uid), Some(gid))
            && error.kind() != std::io::ErrorKind::PermissionDenied
        {
            return Err(write_error(error));
        }
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode)).map_err(write_error)?;
        std::fs::rename(&temporary, &self.path).map_err(write_error)?;
        File::open(&dir).and_then(|dir| dir.sync_all()).map_err(write_error)?;
        Ok(result)
    }
}

fn check_name(name: &str) -> Result<(), TokenFileError> {
    let valid = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid { Ok(()) } else { Err(TokenFileError::InvalidName(name.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_added_listed_and_revoked_and_only_digests_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path().join("tokens.json"));
        assert!(file.read().unwrap().is_empty(), "a missing file holds no tokens");

        let (entry, issued) = file.add("front-desk", Role::Kiosk, NonZeroU32::new(5), None).unwrap();
        assert_eq!((entry.role, entry.rate_per_sec.map(NonZeroU32::get)), (Role::Kiosk, Some(5)));
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(!text.contains(&issued.token[21..]), "the secret is never written");
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);

        assert!(matches!(file.add("front-desk", Role::Viewer, None, None), Err(TokenFileError::DuplicateName(_))));
        assert!(matches!(file.add("front desk", Role::Viewer, None, None), Err(TokenFileError::InvalidName(_))));
        assert!(matches!(file.add("", Role::Viewer, None, None), Err(TokenFileError::InvalidName(_))));
        file.add("scraper", Role::Metrics, None, None).unwrap();

        let revoked = file.revoke("front-desk").unwrap();
        assert_eq!(revoked.id, entry.id);
        assert!(matches!(file.revoke(entry.id.as_str()), Err(TokenFileError::AlreadyRevoked(_))));
        assert!(matches!(file.revoke("nobody"), Err(TokenFileError::NotFound(_))));
        // The name is free again once its token is revoked.
        file.add("front-desk", Role::Kiosk, None, None).unwrap();

        let tokens = file.read().unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens.iter().filter(|token| token.is_active()).count(), 2);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path().join("tokens.json"));
        std::fs::write(file.path(), "{\"version\": 1, \"tokens\": [{\"id\": \"x\"}]}").unwrap();
        let error = file.read().unwrap_err().to_string();
        assert!(error.contains("tokens.json") && error.contains("not valid"), "{error}");
        assert!(file.add("a", Role::Admin, None, None).is_err(), "a damaged file is never overwritten");
    }
}
