//! The MQTT topics of api-shapes.md section 3, built in one place for the appliance and
//! the fleet manager alike.

/// The topics of one prefix (default `forecourt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// Device -> fleet, retained; also the Last Will.
    pub fn status(&self, device: &str) -> String {
        format!("{}/{device}/status", self.prefix)
    }

    /// Every device's status (the fleet manager subscribes to it).
    pub fn all_statuses(&self) -> String {
        format!("{}/+/status", self.prefix)
    }

    /// Fleet -> one device.
    pub fn device_deploy(&self, device: &str) -> String {
        format!("{}/{device}/deploy", self.prefix)
    }

    /// Fleet -> every device of a group.
    pub fn group_deploy(&self, group: &str) -> String {
        format!("{}/groups/{group}/deploy", self.prefix)
    }

    /// Device -> fleet: progress and outcome of one deployment.
    pub fn deployment(&self, device: &str, deployment: &str) -> String {
        format!("{}/{device}/deployments/{deployment}", self.prefix)
    }

    /// Every device's progress on one deployment (the fleet manager subscribes to it).
    pub fn all_deployments(&self, deployment: &str) -> String {
        format!("{}/+/deployments/{deployment}", self.prefix)
    }

    /// Device -> fleet, retained: the device's latest deployments.
    pub fn history(&self, device: &str) -> String {
        format!("{}/{device}/history", self.prefix)
    }

    /// Every device's history (`forecourt fleet history` without --device).
    pub fn all_histories(&self) -> String {
        format!("{}/+/history", self.prefix)
    }

    pub fn metrics(&self, device: &str) -> String {
        format!("{}/{device}/metrics", self.prefix)
    }

    pub fn events(&self, device: &str) -> String {
        format!("{}/{device}/events", self.prefix)
    }

    /// The device of a device-level topic (`<prefix>/<device>/...`), if it is one of ours.
    /// `groups` is not a device: it is the first level of group topics.
    pub fn device_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let device = rest.split('/').next()?;
        (!device.is_empty() && device != "groups").then_some(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_api_shapes() {
        let topics = Topics::new("forecourt");
        assert_eq!(topics.status("kiosk-1"), "forecourt/kiosk-1/status");
        assert_eq!(topics.device_deploy("kiosk-1"), "forecourt/kiosk-1/deploy");
        assert_eq!(topics.group_deploy("east"), "forecourt/groups/east/deploy");
        assert_eq!(topics.deployment("kiosk-1", "d1"), "forecourt/kiosk-1/deployments/d1");
        assert_eq!(topics.metrics("kiosk-1"), "forecourt/kiosk-1/metrics");
        assert_eq!(topics.events("kiosk-1"), "forecourt/kiosk-1/events");
        assert_eq!(topics.history("kiosk-1"), "forecourt/kiosk-1/history");
        assert_eq!(topics.all_histories(), "forecourt/+/history");
    }

    #[test]
    fn the_device_is_read_back_from_its_topics() {
        let topics = Topics::new("fc");
        assert_eq!(topics.device_of("fc/kiosk-1/status"), Some("kiosk-1"));
        assert_eq!(topics.device_of("fc/kiosk-1/deployments/d1"), Some("kiosk-1"));
        assert_eq!(topics.device_of("fc/groups/east/deploy"), None);
        assert_eq!(topics.device_of("other/kiosk-1/status"), None);
        assert_eq!(topics.device_of("fcx/kiosk-1/status"), None);
    }
}
