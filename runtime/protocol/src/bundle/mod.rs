//! The bundle's formats: what a bundle is on disk and in transit, read and checked the
//! same way by the appliance that loads it and the operator's tools that make and send it.
//!
//! - [`Manifest`]: `bundle.toml`, its reading, and the checks of the files it names.
//! - [`interface`]: the request fields and outputs a manifest declares.
//! - [`signature`]: ed25519 keys, `bundle.sig`, and the trusted keys a loader checks.
//! - [`archive`]: the `.fcb` transport file (`forecourt bundle pack` / `unpack`).
//!
//! Nothing here loads a plugin or a model.

pub mod archive;
mod error;
pub mod interface;
pub mod manifest;
pub mod signature;

pub use error::BundleFileError;
pub use interface::{FieldSpec, FieldType, OutputSpec};
pub use manifest::{
    DriftThresholds, MANIFEST_FILE, MAX_BUNDLE_NAME_LEN, MODEL_FILE, Manifest, OutcomeKind, OutcomeSpec, PLUGIN_FILE,
    Sample, check_bundle_name,
};
pub use signature::{SIGNATURE_FILE, TrustedKeys};
