//! The fleet link: the appliance's side of MQTT (status, deployments, telemetry), and the
//! wire contract the fleet manager's side (`forecourt fleet`, crate
//! `forecourt-fleet-manager`) shares with it.
//!
//! - [`config`]: the `mqtt` section of forecourt.toml.
//! - [`topics`] and [`messages`]: the wire contract of api-shapes.md section 3, shared by
//!   both sides through the `forecourt-protocol` crate (with [`signed`]).
//! - [`agent`]: the appliance's side: opens the fleet's state at every start (deployed
//!   bundles, interrupted deployments) and, with a broker configured, runs the link and
//!   the tasks around it.
//! - [`link`]: the rumqttc connection: Last Will, persistent session, backoff, publishing
//!   confirmed by PUBACK.
//! - [`canary`]: how a canary is judged on live accuracy.
//! - [`deploy`]: carries a request through its steps to one outcome; [`error`] maps every
//!   failure to the outcome's reason code, in one place.
//! - [`state`]: deployment records and each bundle's preferred version, in the store's
//!   tables; [`outbox`]: the bounded store-and-forward queue of everything published.
//!
//! Dependencies flow one way: the fleet drives the registry and the store through their
//! public APIs, and neither knows of it; it knows nothing of HTTP.

pub mod agent;
pub mod canary;
pub mod config;
pub mod deploy;
pub mod error;
pub mod link;
pub mod outbox;
pub mod state;

pub use agent::{Fleet, FleetHealth, Running};
pub use config::MqttConfig;
// The wire contract is shared with the fleet manager: it lives in the protocol crate.
pub use forecourt_protocol::fleet::{Topics, messages, signed, topics};
