//! `[bundles]` and `[trust]` in forecourt.toml.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{BundleError, TrustedKeys};

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

impl TrustConfig {
    /// The keys of `[trust]`: `None` when no `keys_dir` is configured; an unusable folder
    /// or key file is an error naming the path.
    pub fn trusted_keys(&self) -> Result<Option<TrustedKeys>, BundleError> {
        Ok(self.keys_dir.as_deref().map(TrustedKeys::load_dir).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_keys_folder_trusts_no_keys_and_a_missing_one_is_an_error() {
        assert!(TrustConfig::default().trusted_keys().unwrap().is_none());
        let missing = TrustConfig { keys_dir: Some(PathBuf::from("/nonexistent/keys")) };
        assert!(missing.trusted_keys().unwrap_err().to_string().contains("/nonexistent/keys"));
    }
}
