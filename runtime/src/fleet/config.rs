//! `[mqtt]` in forecourt.toml: the link to the fleet's broker. Without `broker` the
//! appliance runs stand-alone (no fleet client starts).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use forecourt_protocol::fleet::broker::{self, BrokerAddress, Tls};

use super::deploy::DownloadLimits;
use super::state::Retention;
use crate::settings::{ConfigError, check_range};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker, `mqtt://host:port` (port 1883 when left out) or over TLS
    /// `mqtts://host:port` (port 8883). Unset: no fleet link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// This appliance's id in topics and as the MQTT client id. Default: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Groups whose deployments this appliance takes (`<prefix>/groups/<group>/deploy`).
    /// In the environment: `FORECOURT_MQTT__GROUPS=east,north`.
    #[serde(deserialize_with = "crate::settings::list_or_csv")]
    pub groups: Vec<String>,
    /// The first level of every topic.
    pub topic_prefix: String,
    /// With `mqtts://`: the CA certificates (PEM) the broker's certificate must chain to.
    /// Unset: the system's trusted roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// With `mqtts://`: this appliance's certificate and key (PEM), for brokers that
    /// authenticate clients by certificate. Needs `ca_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Never serialized: `forecourt config` and the audit record of the configuration
    /// (which the fleet receives as an event) must not carry it.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// MQTT keep-alive; the broker publishes the Last Will after 1.5 times this without a word.
    pub keep_alive_secs: u64,
    /// How often a metrics snapshot is published (or queued while the broker is away).
    pub metrics_interval_secs: u64,
    /// The largest bundle (.fcb) a deployment may carry inline; incoming packets may be a
    /// third larger (base64) plus the request's JSON.
    pub max_bundle_mib: u64,
    /// Messages the outbox keeps while the broker is unreachable; beyond it the oldest
    /// metrics snapshots are dropped (never events or deployment outcomes).
    pub outbox_capacity: usize,
    /// Reconnection backoff: the first wait, doubled after each failure up to the maximum.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// A bundle download by URL: the time to connect, and to download it all. A server
    /// that never answers holds the deployment queue no longer than the latter.
    pub download_connect_timeout_secs: u64,
    pub download_timeout_secs: u64,
    /// Finished deployment records kept (each answers a repeated request with its
    /// outcome): at most this many, none older than the age below.
    pub deployment_records_max: usize,
    pub deployment_records_max_age_days: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker: None,
            device_id: None,
            groups: Vec::new(),
            topic_prefix: "forecourt".to_owned(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password: None,
            keep_alive_secs: 15,
            metrics_interval_secs: 30,
            max_bundle_mib: 64,
            outbox_capacity: 10_000,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
            download_connect_timeout_secs: 10,
            download_timeout_secs: 300,
            deployment_records_max: 1000,
            deployment_records_max_age_days: 30,
        }
    }
}

impl MqttConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(broker) = &self.broker else { return Ok(()) };
        let address = BrokerAddress::parse(broker).map_err(|message| ConfigError::new("mqtt.broker", message))?;
        self.check_tls_files(address.tls.is_some())?;
        if let Some(device) = &self.device_id {
            check_topic_level("mqtt.device_id", device)?;
        }
        for group in &self.groups {
            check_topic_level("mqtt.groups", group)?;
        }
        check_topic_level("mqtt.topic_prefix", &self.topic_prefix)?;
        check_range("mqtt.keep_alive_secs", self.keep_alive_secs, 5, 3600)?;
        check_range("mqtt.metrics_interval_secs", self.metrics_interval_secs, 1, 86_400)?;
        check_range("mqtt.max_bundle_mib", self.max_bundle_mib, 1, 1024)?;
        check_range("mqtt.outbox_capacity", self.outbox_capacity, 10, 10_000_000)?;
        check_range("mqtt.reconnect_min_ms", self.reconnect_min_ms, 10, 60_000)?;
        check_range("mqtt.reconnect_max_ms", self.reconnect_max_ms, self.reconnect_min_ms, 3_600_000)?;
        check_range("mqtt.download_connect_timeout_secs", self.download_connect_timeout_secs, 1, 300)?;
        check_range(
            "mqtt.download_timeout_secs",
            self.download_timeout_secs,
            self.download_connect_timeout_secs,
            86_400,
        )?;
        check_range("mqtt.deployment_records_max", self.deployment_records_max, 10, 1_000_000)?;
        check_range("mqtt.deployment_records_max_age_days", self.deployment_records_max_age_days, 1, 3650)?;
        Ok(())
    }

    /// The broker's address, when the fleet link is configured (validated at load).
    pub fn broker_address(&self) -> Option<BrokerAddress> {
        let mut address = self.broker.as_deref().and_then(|url| BrokerAddress::parse(url).ok())?;
        if let Some(tls) = &mut address.tls {
            tls.ca_file = self.ca_file.clone();
            tls.client_auth = self.client_cert_file.clone().zip(self.client_key_file.clone());
        }
        Some(address)
    }

    /// The TLS files: only with `mqtts://`, the certificate with its key and the CA, readable.
    fn check_tls_files(&self, tls: bool) -> Result<(), ConfigError> {
        let files = [
            ("mqtt.ca_file", &self.ca_file),
            ("mqtt.client_cert_file", &self.client_cert_file),
            ("mqtt.client_key_file", &self.client_key_file),
        ];
        for (key, file) in files {
            let Some(path) = file else { continue };
            if !tls {
                return Err(ConfigError::new(key, "is only used with an mqtts:// broker"));
            }
            std::fs::File::open(path)
                .map_err(|error| ConfigError::new(key, format!("cannot read {}: {error}", path.display())))?;
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(ConfigError::new("mqtt.client_key_file", "give the client certificate and its key together"));
        }
        if self.client_cert_file.is_some() && self.ca_file.is_none() {
            return Err(ConfigError::new("mqtt.ca_file", "a client certificate needs the CA file too"));
        }
        Ok(())
    }

    pub fn download_limits(&self) -> DownloadLimits {
        DownloadLimits {
            connect: Duration::from_secs(self.download_connect_timeout_secs),
            total: Duration::from_secs(self.download_timeout_secs),
        }
    }

    pub fn retention(&self) -> Retention {
        Retention {
            max_age: Duration::from_secs(self.deployment_records_max_age_days * 86_400),
            max_records: self.deployment_records_max,
        }
    }

    /// The largest packet the client accepts, and the largest request: the bundle in
    /// base64 plus room for the signed envelope's JSON.
    pub fn max_incoming_packet_bytes(&self) -> usize {
        let bundle = (self.max_bundle_mib as usize) << 20;
        bundle / 3 * 4 + (64 << 10)
    }
}

/// One level of a topic (see [`broker::check_topic_level`]), named by its setting.
pub fn check_topic_level(key: &str, value: &str) -> Result<(), ConfigError> {
    broker::check_topic_level(value).map_err(|reason| ConfigError::new(key, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_levels_refuse_wildcards_and_separators() {
        for good in ["kiosk-17", "dealer_42", "Ünïcode"] {
            check_topic_level("k", good).unwrap();
        }
        for bad in ["", "a/b", "+", "a#", "a b"] {
            let error = check_topic_level("mqtt.device_id", bad).unwrap_err();
            assert_eq!(error.key, "mqtt.device_id");
        }
    }

    #[test]
    fn tls_files_go_with_mqtts_and_the_certificate_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "pem").unwrap();
        let plain = MqttConfig { broker: Some("mqtt://b".into()), ca_file: Some(file.clone()), ..Default::default() };
        assert_eq!(plain.validate().unwrap_err().key, "mqtt.ca_file");
        let tls = MqttConfig { broker: Some("mqtts://b".into()), ca_file: Some(file.clone()), ..Default::default() };
        tls.validate().unwrap();
        assert_eq!(tls.broker_address().unwrap().tls.unwrap().ca_file, Some(file.clone()));
        let half = MqttConfig { client_cert_file: Some(file.clone()), ..tls.clone() };
        assert_eq!(half.validate().unwrap_err().key, "mqtt.client_key_file");
        let missing = MqttConfig { ca_file: Some(dir.path().join("missing.pem")), ..tls };
        assert_eq!(missing.validate().unwrap_err().key, "mqtt.ca_file");
    }

    #[test]
    fn the_password_is_never_serialized() {
        let config = MqttConfig { password: Some("hunter2".into()), ..Default::default() };
        assert!(!serde_json::to_string(&config).unwrap().contains("hunter2"));
    }

    #[test]
    fn validation_names_the_key() {
        let config =
            MqttConfig { broker: Some("mqtt://b".into()), groups: vec!["east/west".into()], ..Default::default() };
        assert_eq!(config.validate().unwrap_err().key, "mqtt.groups");
        let config = MqttConfig {
            broker: Some("mqtt://b".into()),
            reconnect_min_ms: 500,
            reconnect_max_ms: 100,
            ..Default::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "mqtt.reconnect_max_ms");
    }
}
