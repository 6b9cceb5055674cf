//! Errors of bundles: reading and checking them, and running them.

use std::path::PathBuf;

use crate::model::ModelError;
use crate::plugin::{InputError, PluginError};
use crate::tensor::TensorError;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },

    #[error("invalid manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },

    #[error("{file} in {dir} does not match the manifest's sha256 (expected {expected}, found {actual})")]
    Digest { dir: PathBuf, file: String, expected: String, actual: String },

    #[error("bundle {name} {version} needs runtime {required} or newer; this is {running}")]
    RuntimeTooOld { name: String, version: String, required: String, running: String },

    #[error("bundle {name} {version}: {source}")]
    Plugin { name: String, version: String, source: PluginError },

    #[error("bundle {name} {version}: {source}")]
    Model { name: String, version: String, source: ModelError },

    /// The plugin's output does not fit the model, the manifest disagrees with the
    /// plugin, or a sample request does not give its expected output.
    #[error("bundle {name} {version} failed its check: {reason}")]
    Check { name: String, version: String, reason: String },

    /// A sample request of the manifest did not give its expected output.
    #[error("bundle {name} {version} failed its smoke test: {reason}")]
    SmokeTest { name: String, version: String, reason: String },

    #[error("unknown bundle {name}")]
    UnknownBundle { name: String },

    #[error("bundle {name} has no version {version}")]
    UnknownVersion { name: String, version: String },

    #[error("bundle {name} {version} is serving (active or canary); activate another version first")]
    InUse { name: String, version: String },

    #[error("bundle {name} {version} is already loaded")]
    AlreadyLoaded { name: String, version: String },

    #[error("cannot build the bundle: {reason}")]
    Build { reason: String },

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

/// Why one request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The plugin refused the request: the client's fault.
    #[error("{}", .0.message)]
    Input(InputError),

    #[error(transparent)]
    Plugin(PluginError),

    #[error(transparent)]
    Model(#[from] ModelError),

    #[error("the model's outputs could not be split per instance: {0}")]
    Batch(#[from] TensorError),

    #[error(transparent)]
    Explain(#[from] crate::explain::ExplainError),
}

impl From<PluginError> for InferenceError {
    fn from(error: PluginError) -> Self {
        match error {
            PluginError::Input(input) => Self::Input(input),
            other => Self::Plugin(other),
        }
    }
}
