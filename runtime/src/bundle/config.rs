//! `[bundles]` and `[trust]` in forecourt.toml.

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

/// `[trust]`: the public keys bundles must be signed with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// A folder of `*.pub` files (`forecourt keygen`). When set, every bundle must carry a
    /// `bundle.sig` by one of these keys; when unset, bundles are not verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_dir: Option<PathBuf>,
}
