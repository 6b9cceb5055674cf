//! Typed configuration: one struct per concern, every key with a default, validated once
//! at load with messages naming the key. Each concern's struct lives beside the code it
//! configures (for example [`crate::plugin::PluginConfig`]); this module gathers them into
//! [`Config`] and loads it; the error type and checks they share are in [`crate::settings`].
//!
//! Sources, later overriding earlier: built-in defaults, the TOML file, then environment
//! variables `FORECOURT_<KEY>` for top-level keys and `FORECOURT_<SECTION>__<KEY>` for keys
//! in a section (`FORECOURT_SERVER__LISTEN=0.0.0.0:8080`, `FORECOURT_STORE__DURABILITY=relaxed`).

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::auth::AuthConfig;
use crate::bundle::{BundlesConfig, TrustConfig};
use crate::fleet::MqttConfig;
use crate::grpc::GrpcConfig;
use crate::http::ServerConfig;
use crate::model::OnnxRuntimeConfig;
use crate::plugin::PluginConfig;
use crate::quality::QualityConfig;
pub use crate::settings::ConfigError;
use crate::store::StoreConfig;
use crate::telemetry::LoggingConfig;

/// The whole of forecourt.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the appliance keeps its state (the store, compiled plugins).
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    /// The Open Inference Protocol over gRPC on a port of its own; none without `[grpc]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcConfig>,
    pub auth: AuthConfig,
    pub bundles: BundlesConfig,
    pub trust: TrustConfig,
    pub plugins: PluginConfig,
    pub onnxruntime: OnnxRuntimeConfig,
    pub store: StoreConfig,
    pub logging: LoggingConfig,
    pub mqtt: MqttConfig,
    pub quality: QualityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            grpc: None,
            auth: AuthConfig::default(),
            bundles: BundlesConfig::default(),
            trust: TrustConfig::default(),
            plugins: PluginConfig::default(),
            onnxruntime: OnnxRuntimeConfig::default(),
            store: StoreConfig::default(),
            logging: LoggingConfig::default(),
            mqtt: MqttConfig::default(),
            quality: QualityConfig::default(),
        }
    }
}

/// Top-level keys and sections: only these environment variables are configuration
/// (others, such as `FORECOURT_ORT_CACHE` for the fetch script, are not).
const ENV_KEYS: &[&str] = &["data_dir"];
const ENV_SECTIONS: &[&str] =
    &["server", "grpc", "auth", "bundles", "trust", "plugins", "onnxruntime", "store", "logging", "mqtt", "quality"];

impl Config {
    /// Defaults, then `file` (which must exist when given), then the environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::new("--config", format!("{} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        let env = Env::prefixed("FORECOURT_")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                match key.split_once("__") {
                    Some((section, _)) => ENV_SECTIONS.contains(&section),
                    None => ENV_KEYS.contains(&key.as_str()),
                }
            })
            .split("__");
        let config: Config = figment.merge(env).extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        if let Some(grpc) = &self.grpc {
            grpc.validate(self.server.listen)?;
        }
        self.auth.validate()?;
        self.plugins.validate()?;
        self.onnxruntime.validate()?;
        self.store.validate()?;
        self.mqtt.validate()?;
        self.quality.validate()?;
        Ok(())
    }

    /// The store's folder inside the data folder.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The API token file: `auth.tokens_file`, or tokens.json in the data folder.
    pub fn tokens_file(&self) -> PathBuf {
        self.auth.tokens_file.clone().unwrap_or_else(|| self.data_dir.join("tokens.json"))
    }

    /// The compiled-plugin cache inside the data folder.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.data_dir.join("plugin-cache")
    }
}

fn from_figment(error: figment::Error) -> ConfigError {
    let key = if error.path.is_empty() { "(file)".to_owned() } else { error.path.join(".") };
    let source = error.metadata.as_ref().map(|meta| format!(" (from {})", meta.name)).unwrap_or_default();
    ConfigError::new(key, format!("{}{source}", error.kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_gives_the_defaults() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("data"));
    }

    #[test]
    fn a_file_overrides_defaults_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("forecourt.toml");
        std::fs::write(&file, "data_dir = \"/var/lib/forecourt\"\n[server]\nmax_batch = 10\n").unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!((config.data_dir, config.server.max_batch), (PathBuf::from("/var/lib/forecourt"), 10));

        std::fs::write(&file, "[server]\nmax_batch = \"many\"\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap_err().key, "server.max_batch");
        std::fs::write(&file, "[server]\nmax_batch = 0\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap_err().key, "server.max_batch");
        std::fs::write(&file, "[server]\nlisten_on = \"x\"\n").unwrap();
        let error = Config::load(Some(&file)).unwrap_err();
        assert!(error.message.contains("listen_on"), "{error}");
        assert_eq!(Config::load(Some(&dir.path().join("missing.toml"))).unwrap_err().key, "--config");
    }

    #[test]
    fn grpc_is_off_until_its_section_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("forecourt.toml");
        assert_eq!(Config::load(None).unwrap().grpc, None);
        std::fs::write(&file, "[grpc]\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().grpc, Some(GrpcConfig::default()));
        std::fs::write(&file, "[grpc]\nlisten = \"127.0.0.1:0\"\nmax_concurrent_streams = 8\n").unwrap();
        let grpc = Config::load(Some(&file)).unwrap().grpc.unwrap();
        assert_eq!((grpc.listen.port(), grpc.max_concurrent_streams), (0, 8));
        std::fs::write(&file, "[grpc]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap_err().key, "grpc.listen");
        std::fs::write(&file, "[grpc]\nport = 9\n").unwrap();
        assert!(Config::load(Some(&file)).unwrap_err().message.contains("port"));
    }
}
