//! A broker's address as both sides of the fleet take it (`mqtt://host:port`,
//! `mqtts://host:port`), the rumqttc transport that reaches it, and the rule every topic
//! level (device id, group, prefix) must follow.

use std::path::PathBuf;

/// Where the broker is, parsed from `broker`, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    /// `Some` over TLS (`mqtts://`).
    pub tls: Option<Tls>,
}

/// The files of a TLS connection to the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM CA certificates; `None`: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key, to authenticate to the broker.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

impl BrokerAddress {
    /// `mqtt://host[:port]` (or `tcp://`), port 1883 by default; `mqtts://host[:port]` (or
    /// `ssl://`), over TLS, port 8883 by default.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("mqtt" | "tcp") => (None, 1883),
            Some("mqtts" | "ssl") => (Some(Tls::default()), 8883),
            Some(other) => return Err(format!("scheme {other:?} is not supported; use mqtt:// or mqtts://")),
            None => return Err(format!("{url:?} has no scheme; use mqtt://host:port or mqtts://host:port")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("{url:?} must be mqtt://host:port, without a path or query"));
        }
        if uri.authority().is_some_and(|authority| authority.as_str().contains('@')) {
            // The address is printed in logs and status; credentials have their own settings.
            return Err(format!("{url:?} carries credentials; set mqtt.username and mqtt.password instead"));
        }
        let host = uri.host().filter(|host| !host.is_empty()).ok_or_else(|| format!("{url:?} has no host"))?;
        Ok(Self { host: host.trim_matches(['[', ']']).to_owned(), port: uri.port_u16().unwrap_or(default_port), tls })
    }

    /// The rumqttc transport: TCP, or TLS (rustls with the ring provider) with the CA and
    /// client certificate files read now.
    pub fn transport(&self) -> Result<rumqttc::Transport, String> {
        let Some(tls) = &self.tls else { return Ok(rumqttc::Transport::tcp()) };
        // rustls needs a process-wide provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read =
            |path: &PathBuf| std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()));
        match (&tls.ca_file, &tls.client_auth) {
            (None, None) => Ok(rumqttc::Transport::tls_with_default_config()),
            (None, Some(_)) => Err("a client certificate needs the CA file too".to_owned()),
            (Some(ca), client) => {
                let client_auth =
                    client.as_ref().map(|(cert, key)| Ok::<_, String>((read(cert)?, read(key)?))).transpose()?;
                Ok(rumqttc::Transport::tls(read(ca)?, client_auth, None))
            }
        }
    }

    /// `host:port`, bracketing IPv6 addresses, with `mqtts://` before it over TLS.
    pub fn label(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts://" } else { "" };
        if self.host.contains(':') {
            format!("{scheme}[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}{}:{}", self.host, self.port)
        }
    }
}

/// One level of a topic: 1 to 128 characters, no `/`, none of MQTT's wildcards `+` and
/// `#`, no control or space characters. The reason names the rule broken.
pub fn check_topic_level(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 128 {
        return Err(format!("{value:?} must be 1 to 128 characters"));
    }
    if let Some(bad) = value.chars().find(|c| matches!(c, '/' | '+' | '#') || c.is_control() || c.is_whitespace()) {
        return Err(format!("{value:?} may not contain {bad:?} (it is one level of a topic)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_the_default_port() {
        let address = |host: &str, port, tls| BrokerAddress { host: host.into(), port, tls };
        assert_eq!(BrokerAddress::parse("mqtt://broker.local").unwrap(), address("broker.local", 1883, None));
        assert_eq!(BrokerAddress::parse("mqtt://10.0.0.5:2883").unwrap(), address("10.0.0.5", 2883, None));
        assert_eq!(BrokerAddress::parse("tcp://[::1]:1884").unwrap(), address("::1", 1884, None));
        assert_eq!(BrokerAddress::parse("mqtts://b").unwrap(), address("b", 8883, Some(Tls::default())));
        assert_eq!(address("::1", 1884, Some(Tls::default())).label(), "mqtts://[::1]:1884");
        for bad in ["broker:1883", "http://broker", "mqtt://", "mqtt://b/path", "wss://b", "mqtt://u:p@b"] {
            assert!(BrokerAddress::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn topic_levels_refuse_wildcards_and_separators() {
        for good in ["kiosk-17", "dealer_42", "Ünïcode"] {
            check_topic_level(good).unwrap();
        }
        for bad in ["", "a/b", "+", "a#", "a b", &"x".repeat(129)] {
            assert!(check_topic_level(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_topic_level("a/b").unwrap_err().contains("'/'"));
    }
}
