//! Errors of bundles: reading and checking them, and running them.

use forecourt_protocol::bundle::BundleFileError;

use crate::model::ModelError;
use crate::plugin::{InputError, PluginError};
use crate::tensor::TensorError;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle's files, signature, keys or archive: what the formats refuse.
    #[error(transparent)]
    File(#[from] BundleFileError),

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
