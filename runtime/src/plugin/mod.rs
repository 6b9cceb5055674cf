//! The plugin host: runs untrusted preprocessing plugins (WebAssembly components of the
//! `forecourt:plugin@0.2.0` world, sdk/wit) in a sandbox they cannot leave.
//!
//! - One engine and linker per process; plugins compile once and their compiled artifacts
//!   are cached on disk by the wasm's sha256 ([`cache`](self::cache)).
//! - Every call runs in a fresh instance from the pooling allocator, with a CPU budget
//!   (fuel), a memory limit, a stack limit and an output cap; no WASI capability is
//!   granted, clocks are frozen and randomness is keyed by the request
//!   ([`entropy`](self::entropy)), so a plugin's answer is a pure function of its request.
//! - Traps, limits and refusals come back as [`PluginError`]; the host stays healthy.
//!
//! This module knows nothing of HTTP, models or bundles. Its calls are synchronous and
//! may run up to the CPU limit: callers on an async runtime run them on
//! [`crate::workers`], never on the runtime's own threads.

mod bindings;
mod cache;
mod config;
mod entropy;
mod error;
mod host;
mod info;
mod instance;
mod sandbox;

pub use cache::CompileSource;
pub use config::{FUEL_PER_MS, PluginConfig};
pub use error::PluginError;
pub use host::PluginHost;
pub use info::{FieldSpec, FieldType, InputError, InputErrorCode, OutputSpec, PluginInfo};
pub use instance::{Plugin, PluginInstance};
