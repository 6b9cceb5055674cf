//! The fleet's wire contract (api-shapes.md section 3), spoken by the appliance's agent
//! and the fleet manager alike, so the two cannot drift apart.
//!
//! - [`topics`]: every topic of a device, a group and the fleet.
//! - [`messages`]: statuses, requests, progress and history, with their bounded ids.
//! - [`signed`]: the signed envelope every request comes in (target, expiry, key).
//! - [`broker`]: a broker's address (`mqtt://`, `mqtts://`) and the topic levels names
//!   must fit.

pub mod broker;
pub mod messages;
pub mod signed;
pub mod topics;

pub use broker::{BrokerAddress, Tls};
pub use topics::Topics;
