//! The store's settings: `[store]` in forecourt.toml.

use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, check_range};

/// When a prediction counts as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledged once its group's flush (fsync) returned: survives a crash or power loss.
    #[default]
    Durable,
    /// Acknowledged once inserted; flushed in the background every `relaxed_flush_interval_ms`, so a crash
    /// loses at most that much. Audit events are still flushed before they are acknowledged.
    Relaxed,
}

/// `[store]` in forecourt.toml.
///
/// The retention limits are optional; TOML has no null, so `0` means "no limit" (and a limit that is `None`
/// serializes as `0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub durability: Durability,
    /// In relaxed mode, the longest an acknowledged prediction waits for its flush, in milliseconds.
    pub relaxed_flush_interval_ms: u64,
    /// Whether the pipeline keeps each request's input JSON. The store itself keeps whatever
    /// [`PredictionRecord::input`](super::PredictionRecord::input) holds; this flag is the pipeline's to honour.
    pub store_inputs: bool,
    /// Writes (single or batch predictions, audit events) that may wait for the writer; beyond this,
    /// `record` fails at once with [`StoreError::Overloaded`](super::StoreError::Overloaded).
    pub queue_capacity: usize,
    /// Most records written per flush; a larger batch request is still written in one piece.
    pub max_group: usize,
    /// Keep at most this many predictions (the oldest go first); `0` in TOML: no limit.
    #[serde(with = "limit")]
    pub retention_max_predictions: Option<u64>,
    /// Drop predictions older than this many days; `0` in TOML: no limit.
    #[serde(with = "limit")]
    pub retention_max_age_days: Option<u64>,
    /// How often the retention limits are enforced, in seconds.
    pub prune_interval_secs: u64,
    /// sled's page cache, in MiB. Writes go to the newest leaf (keys are UUIDv7s) and reads are
    /// mostly of recent predictions, so a small cache holds what is used; sled's real use is
    /// a few times this figure.
    pub cache_capacity_mib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            relaxed_flush_interval_ms: 100,
            store_inputs: true,
            queue_capacity: 8192,
            max_group: 1024,
            retention_max_predictions: Some(1_000_000),
            retention_max_age_days: Some(90),
            prune_interval_secs: 60,
            cache_capacity_mib: 4,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("store.relaxed_flush_interval_ms", self.relaxed_flush_interval_ms, 1, 60_000)?;
        check_range("store.queue_capacity", self.queue_capacity, 1, 1_000_000)?;
        check_range("store.max_group", self.max_group, 1, 1_000_000)?;
        if let Some(days) = self.retention_max_age_days {
            // More than a century would overflow nothing, but is surely a typo.
            check_range("store.retention_max_age_days", days, 1, 36_500)?;
        }
        if let Some(count) = self.retention_max_predictions {
            check_range("store.retention_max_predictions", count, 1, u64::MAX)?;
        }
        check_range("store.prune_interval_secs", self.prune_interval_secs, 1, 86_400)?;
        check_range("store.cache_capacity_mib", self.cache_capacity_mib, 1, 1 << 20)?;
        Ok(())
    }
}

/// An optional limit as TOML can write it: `0` stands for `None`.
mod limit {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        Ok(Some(u64::deserialize(deserializer)?).filter(|&value| value > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        StoreConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let config = StoreConfig { queue_capacity: 0, ..StoreConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "store.queue_capacity");
        let config = StoreConfig { max_group: 0, ..StoreConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "store.max_group");
        let config = StoreConfig { retention_max_age_days: Some(100_000), ..StoreConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "store.retention_max_age_days");
        let config = StoreConfig { prune_interval_secs: 0, ..StoreConfig::default() };
        assert_eq!(config.validate().unwrap_err().key, "store.prune_interval_secs");
    }

    #[test]
    fn reads_toml_with_defaults_and_zero_as_no_limit() {
        let config: StoreConfig =
            toml::from_str("durability = \"relaxed\"\nretention_max_predictions = 0\nretention_max_age_days = 7")
                .unwrap();
        assert_eq!(config.durability, Durability::Relaxed);
        assert_eq!(config.retention_max_predictions, None);
        assert_eq!(config.retention_max_age_days, Some(7));
        assert_eq!(config.queue_capacity, 8192);
        assert_eq!(toml::from_str::<StoreConfig>(&toml::to_string(&config).unwrap()).unwrap(), config);
        assert!(toml::from_str::<StoreConfig>("durable = true").is_err());
    }
}
