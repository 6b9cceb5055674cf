//! Everything that can go wrong finding ONNX Runtime, loading a model or running it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime library not found. Looked in:\n{}\nFetch it with `scripts/fetch-onnxruntime.sh` (or `make setup`), \
         or set `onnxruntime.library` in the config or ORT_DYLIB_PATH.",
        .searched.iter().map(|place| format!("  - {place}")).collect::<Vec<_>>().join("\n")
    )]
    LibraryNotFound { searched: Vec<String> },

    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    LibraryLoad { path: PathBuf, reason: String },

    #[error("cannot read model {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },

    #[error("cannot load model {path}: {reason}")]
    Load { path: PathBuf, reason: String },

    /// The model has an input or output the host cannot feed or read.
    #[error("model {path} has an unsupported {what}: {reason}")]
    Unsupported { path: PathBuf, what: String, reason: String },

    /// The tensors offered do not match the model's inputs (names, types, shapes).
    #[error("inputs do not match the model: {reason}")]
    InputMismatch { reason: String },

    #[error("model run failed: {reason}")]
    Run { reason: String },
}
