//! What can be wrong with a bundle's files, keys or transport archive: everything the
//! formats themselves can refuse, before anything is loaded.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BundleFileError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },

    #[error("invalid manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },

    #[error("{file} in {dir} does not match the manifest's sha256 (expected {expected}, found {actual})")]
    Digest { dir: PathBuf, file: String, expected: String, actual: String },

    /// A key file (`.key`, `.pub`) or the trusted keys' folder is unusable.
    #[error("key {path}: {reason}")]
    Key { path: PathBuf, reason: String },

    #[error("bundle {dir} is unsigned (no bundle.sig) and only signed bundles are trusted")]
    Unsigned { dir: PathBuf },

    #[error("bundle {dir} is signed by key {key_id}, which is not trusted")]
    UntrustedKey { dir: PathBuf, key_id: String },

    #[error("bundle {dir} has a bad signature by key {key_id}: {reason}")]
    BadSignature { dir: PathBuf, key_id: String, reason: String },

    #[error("invalid signature file {path}: {reason}")]
    MalformedSignature { path: PathBuf, reason: String },

    /// A `.fcb` transport file that cannot be made or is refused on unpacking.
    #[error("bundle archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
}
