//! The plugin sandbox's limits.

use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, check_range};

/// Fuel is wasmtime's deterministic count of executed work. This rate was measured on our
/// reference machine (a 2-core cloud VM: an infinite loop burns about 24M units per ms), so
/// `cpu_limit_ms` means "about this much CPU time there"; on faster cores the same budget
/// takes less time. Fuel rather than wall-clock epochs keeps the limit reproducible and
/// needs no ticker thread.
pub const FUEL_PER_MS: u64 = 24_000_000;

/// `[plugins]` in forecourt.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// CPU budget of one plugin call (instantiation included), in milliseconds of work.
    pub cpu_limit_ms: u64,
    /// Linear memory one plugin instance may use, in MiB.
    pub memory_limit_mib: u64,
    /// Largest output one call may return (tensors or response JSON), in bytes.
    pub max_output_bytes: usize,
    /// Instances that may exist at once across all plugins (the pooling allocator's size).
    pub max_instances: u32,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self { cpu_limit_ms: 10, memory_limit_mib: 64, max_output_bytes: 1024 * 1024, max_instances: 256 }
    }
}

impl PluginConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("plugins.cpu_limit_ms", self.cpu_limit_ms, 1, 60_000)?;
        check_range("plugins.memory_limit_mib", self.memory_limit_mib, 1, 4096)?;
        check_range("plugins.max_output_bytes", self.max_output_bytes, 1024, self.memory_limit_bytes())?;
        check_range("plugins.max_instances", self.max_instances, 1, 10_000)?;
        Ok(())
    }

    pub fn fuel_per_call(&self) -> u64 {
        self.cpu_limit_ms.saturating_mul(FUEL_PER_MS)
    }

    pub fn memory_limit_bytes(&self) -> usize {
        usize::try_from(self.memory_limit_mib).unwrap_or(usize::MAX / (1 << 20)) << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PluginConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let config = PluginConfig { cpu_limit_ms: 0, ..PluginConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "plugins.cpu_limit_ms");
        let config = PluginConfig { memory_limit_mib: 1, max_output_bytes: 2 << 20, ..PluginConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "plugins.max_output_bytes");
    }
}
