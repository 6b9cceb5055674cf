//! The fleet link: the appliance's side of MQTT (status, deployments, telemetry) and the
//! fleet manager's side (`forecourt fleet`).
//!
//! - [`config`]: the `mqtt` section of forecourt.toml.
//! - [`topics`] and [`messages`]: the wire contract of api-shapes.md section 3, shared by
//!   both sides.
//! - [`manager`]: the fleet manager's MQTT session: statuses, publishing requests, and
//!   following deployments to one outcome per device.
//!
//! This module drives the registry and the store through their public APIs; it knows
//! nothing of HTTP.

pub mod agent;
pub mod config;
pub mod deploy;
pub mod error;
pub mod link;
pub mod manager;
pub mod messages;
pub mod outbox;
pub mod state;
pub mod topics;

pub use agent::{Fleet, FleetHealth, Running};
pub use config::MqttConfig;
pub use topics::Topics;
