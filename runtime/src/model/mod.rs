//! The model host: ONNX models run by ONNX Runtime through `ort`.
//!
//! - [`OnnxRuntime`]: the shared library, found at start-up in a documented order, and
//!   the one ONNX Runtime environment of the process.
//! - [`Model`]: one model version: its sessions, its inputs and outputs introspected at
//!   load, a warm-up run, and [`Model::run`] over a whole batch of rows at once.
//!
//! Outputs come back as [`crate::tensor::Tensor`]s whatever form the converter chose:
//! plain tensors, or a classifier's sequence of per-row maps (ZipMap), which becomes a
//! `[rows, classes]` float tensor.
//!
//! This module knows nothing of plugins, bundles or HTTP; its calls are synchronous
//! (a few microseconds per row) and run on [`crate::workers`].

mod config;
mod error;
mod interface;
mod library;
mod session;

pub use config::{GraphOptimization, OnnxRuntimeConfig};
pub use error::ModelError;
pub(crate) use interface::check_inputs;
pub use interface::{ElementType, InputSpec, OutputForm, OutputSpec};
pub use library::OnnxRuntime;
pub use session::Model;
