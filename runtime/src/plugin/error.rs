//! Everything that can go wrong loading or calling a plugin.

use std::path::PathBuf;

use super::info::InputError;
use crate::tensor::TensorError;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot start the plugin engine: {reason}")]
    Engine { reason: String },

    #[error("cannot read plugin {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },

    #[error("plugin {path} is not a valid WebAssembly component: {reason}")]
    Compile { path: PathBuf, reason: String },

    /// The component imports something the host does not provide; `reason` names it.
    #[error("plugin {path} cannot be linked: {reason}")]
    Link { path: PathBuf, reason: String },

    /// The component's exports do not match `forecourt:plugin/plugin`.
    #[error("plugin {path} does not export the forecourt:plugin@0.2.0 world: {reason}")]
    Interface { path: PathBuf, reason: String },

    /// `describe` returned something unusable.
    #[error("plugin {path} describes itself incorrectly: {reason}")]
    Description { path: PathBuf, reason: String },

    /// The client's request broke one of the plugin's rules: the client's fault.
    #[error("{}", .0.message)]
    Input(InputError),

    #[error("plugin exceeded its CPU limit of {limit_ms} ms")]
    CpuLimit { limit_ms: u64 },

    #[error("plugin exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: usize },

    /// Recursion too deep for the engine's stack (wasmtime's `max_wasm_stack`).
    #[error("plugin exceeded its call stack limit of {limit_bytes} bytes")]
    StackOverflow { limit_bytes: usize },

    #[error("plugin output of {bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    OutputTooLarge { bytes: usize, limit_bytes: usize },

    /// The plugin trapped (a panic, an unreachable, a bad memory access...).
    #[error("plugin failed: {message}")]
    Trap { message: String },

    /// The plugin returned malformed tensors or response.
    #[error("plugin returned invalid output: {reason}")]
    InvalidOutput { reason: String },

    /// `postprocess` refused the model's outputs.
    #[error("plugin could not shape the response: {message}")]
    Postprocess { message: String },

    /// Every instance slot of the pool is in use.
    #[error("no plugin instance slot is free ({reason})")]
    Exhausted { reason: String },
}

impl PluginError {
    /// Whether the client caused the error (as opposed to the plugin or the host).
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::Input(_))
    }
}

impl From<TensorError> for PluginError {
    fn from(error: TensorError) -> Self {
        Self::InvalidOutput { reason: error.to_string() }
    }
}
