//! `[mqtt]` in forecourt.toml: the link to the fleet's broker. Without `broker` the
//! appliance runs stand-alone (no fleet client starts).

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, check_range};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker, `mqtt://host:port` (port 1883 when left out). Unset: no fleet link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// This appliance's id in topics and as the MQTT client id. Default: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Groups whose deployments this appliance takes (`<prefix>/groups/<group>/deploy`).
    pub groups: Vec<String>,
    /// The first level of every topic.
    pub topic_prefix: String,
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
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker: None,
            device_id: None,
            groups: Vec::new(),
            topic_prefix: "forecourt".to_owned(),
            username: None,
            password: None,
            keep_alive_secs: 15,
            metrics_interval_secs: 30,
            max_bundle_mib: 64,
            outbox_capacity: 10_000,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
        }
    }
}

/// Where the broker is, parsed from `broker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

impl BrokerAddress {
    /// `mqtt://host[:port]` or `tcp://host[:port]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: axum::http::Uri = url.parse().map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        match uri.scheme_str() {
            Some("mqtt" | "tcp") => {}
            Some(other) => return Err(format!("scheme {other:?} is not supported; use mqtt://host:port")),
            None => return Err(format!("{url:?} has no scheme; use mqtt://host:port")),
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("{url:?} must be mqtt://host:port, without a path or query"));
        }
        let host = uri.host().filter(|host| !host.is_empty()).ok_or_else(|| format!("{url:?} has no host"))?;
        Ok(Self { host: host.trim_matches(['[', ']']).to_owned(), port: uri.port_u16().unwrap_or(1883) })
    }
}

impl MqttConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(broker) = &self.broker else { return Ok(()) };
        BrokerAddress::parse(broker).map_err(|message| ConfigError::new("mqtt.broker", message))?;
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
        Ok(())
    }

    /// The broker's address, when the fleet link is configured (validated at load).
    pub fn broker_address(&self) -> Option<BrokerAddress> {
        self.broker.as_deref().and_then(|url| BrokerAddress::parse(url).ok())
    }

    /// The largest packet the client accepts: the bundle in base64 plus room for the JSON.
    pub fn max_incoming_packet_bytes(&self) -> usize {
        let bundle = (self.max_bundle_mib as usize) << 20;
        bundle / 3 * 4 + (64 << 10)
    }
}

/// One level of a topic: not empty, no `/`, and none of MQTT's wildcards `+` and `#`.
pub fn check_topic_level(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 128 {
        return Err(ConfigError::new(key, format!("{value:?} must be 1 to 128 characters")));
    }
    if let Some(bad) = value.chars().find(|c| matches!(c, '/' | '+' | '#') || c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::new(key, format!("{value:?} may not contain {bad:?} (it is one level of a topic)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_the_default_port() {
        assert_eq!(
            BrokerAddress::parse("mqtt://broker.local").unwrap(),
            BrokerAddress { host: "broker.local".into(), port: 1883 }
        );
        assert_eq!(
            BrokerAddress::parse("mqtt://10.0.0.5:2883").unwrap(),
            BrokerAddress { host: "10.0.0.5".into(), port: 2883 }
        );
        assert_eq!(BrokerAddress::parse("tcp://[::1]:1884").unwrap(), BrokerAddress { host: "::1".into(), port: 1884 });
        for bad in ["broker:1883", "http://broker", "mqtt://", "mqtt://b/path", "mqtts://b"] {
            assert!(BrokerAddress::parse(bad).is_err(), "{bad} should be refused");
        }
    }

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
