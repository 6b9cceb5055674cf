//! Typed configuration: one struct per concern, every key with a default, validated once
//! at load with messages naming the key. This module owns the shared error type; each
//! concern's struct lives beside the code it configures (for example
//! [`crate::plugin::PluginConfig`]) and is gathered here.

/// A configuration value that breaks a rule. `key` is the dotted TOML path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// Fails with a [`ConfigError`] for `key` unless `value` lies in `min..=max`.
pub fn check_range<T: PartialOrd + std::fmt::Display>(key: &str, value: T, min: T, max: T) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(key, format!("must be between {min} and {max}, not {value}")));
    }
    Ok(())
}
