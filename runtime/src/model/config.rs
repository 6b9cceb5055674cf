//! `[onnxruntime]` in forecourt.toml.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, check_range};

/// ONNX Runtime's graph optimisation level for new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphOptimization {
    Disable,
    Basic,
    Extended,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxRuntimeConfig {
    /// Path of `libonnxruntime.so`. Unset: `ORT_DYLIB_PATH`, then `lib/` beside the
    /// binary, then the project's cache (`scripts/fetch-onnxruntime.sh`).
    pub library: Option<PathBuf>,
    /// Threads one model run may use. One suits small models under many concurrent
    /// requests: parallelism comes from the worker pool, not from inside a run.
    pub intra_op_threads: usize,
    pub graph_optimization: GraphOptimization,
}

impl Default for OnnxRuntimeConfig {
    fn default() -> Self {
        Self { library: None, intra_op_threads: 1, graph_optimization: GraphOptimization::All }
    }
}

impl OnnxRuntimeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("onnxruntime.intra_op_threads", self.intra_op_threads, 1, 256)
    }
}
