//! `[auth]` in forecourt.toml.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, check_range};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The token file `forecourt token` manages; default `<data_dir>/tokens.json`.
    pub tokens_file: Option<PathBuf>,
    /// Serve every route without a token while no token exists, even on an address other than
    /// loopback. Off: such an appliance refuses to start until a token is added.
    pub allow_anonymous: bool,
    /// How often the token file is checked for changes (a revocation takes effect within this).
    pub reload_interval_ms: u64,
    /// Denied requests written to the audit trail per second at most (a flood of bad tokens
    /// must not fill the disk); the rest are counted in metrics only.
    pub audit_denials_per_sec: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { tokens_file: None, allow_anonymous: false, reload_interval_ms: 1000, audit_denials_per_sec: 10 }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("auth.reload_interval_ms", self.reload_interval_ms, 50, 3_600_000)?;
        check_range("auth.audit_denials_per_sec", self.audit_denials_per_sec, 1, 100_000)?;
        Ok(())
    }
}
