//! `[bundles]` in forecourt.toml.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BundlesConfig {
    /// Folder of bundles, laid out `<name>/<version>/bundle.toml`; all are loaded at start.
    pub dir: PathBuf,
}

impl Default for BundlesConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("bundles") }
    }
}
