//! Bundles: the versioned unit a model ships in (a `bundle.toml` manifest beside
//! `preprocess.wasm` and `model.onnx`), and the registry that owns the loaded ones.
//!
//! - [`Manifest`]: the manifest's format, reading, and checks of the files it names.
//! - [`BundleLoader`]: from a folder to a [`Bundle`]: checks, plugin, model, and whether they
//!   fit (`loader`), then the samples (`smoke_test`).
//! - [`Bundle`]: a loaded bundle (plugin + model) and its synchronous inference: one
//!   request or a batch through plugin and model, shaped by the plugin or by `response`.
//! - [`Registry`]: every loaded version of every bundle, one active version per name,
//!   switched atomically while requests are in flight; the routing itself (active version,
//!   canary share) is `routes`, which holds any versioned value.
//! - [`build`]: `forecourt bundle build`, assembling a bundle from a plugin folder.
//! - [`manifest`], [`signature`] and [`archive`]: the formats (`bundle.toml`, `bundle.sig`,
//!   the `.fcb` transport file), from the `forecourt-protocol` crate the fleet manager's
//!   tools share.
//! - [`VersionStats`] and [`VersionAccuracy`]: what a version's requests and the outcomes
//!   of its predictions came to.
//!
//! This module knows nothing of HTTP, the store or the worker pool: callers run its
//! synchronous calls where they see fit.

mod accuracy;
pub mod build;
mod config;
mod error;
mod loaded;
mod loader;
mod profile;
mod registry;
mod response;
mod routes;
mod smoke_test;
mod stats;
mod training;

pub use accuracy::{AccuracyReport, ConfusionMatrix, Counts, Figures, Point, RECENT_OUTCOMES, VersionAccuracy};
pub use config::{BundlesConfig, TrustConfig};
pub use error::{BundleError, InferenceError};
// The formats are shared with the fleet manager's tools: they live in the protocol crate.
pub use forecourt_protocol::bundle::{
    BundleFileError, DriftThresholds, MANIFEST_FILE, MAX_BUNDLE_NAME_LEN, MODEL_FILE, Manifest, OutcomeKind,
    OutcomeSpec, PLUGIN_FILE, SIGNATURE_FILE, Sample, TrustedKeys, archive, check_bundle_name, manifest, signature,
};
pub use loaded::{Bundle, Inference};
pub use loader::{BundleLoader, Verified};
pub use profile::{DriftWindow, Feature, Profile, WindowCounts};
pub use registry::{BundleSummary, CanarySummary, LoadReport, Registry};
pub use response::default_response;
pub use routes::{Routes, Versioned};
pub use stats::{StatsSnapshot, VersionStats};
pub use training::TrainingFigures;
