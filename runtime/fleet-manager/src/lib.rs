//! The operator's side of the fleet: `forecourt fleet`, run by a fleet manager on their own
//! machine, never on an appliance.
//!
//! - [`manager`]: one short MQTT session: the devices' retained statuses, publishing a
//!   signed deployment request, and following it to one outcome per device.
//! - [`cli`]: the `forecourt fleet` arguments, the live progress and the tables printed.
//!
//! It speaks to appliances only through the contract they share, the `forecourt-protocol`
//! crate (topics, messages, signed envelopes, broker addresses; the manifest, signatures
//! and `.fcb` archive of bundles), so the two sides cannot drift apart. It does not
//! depend on the appliance, and the appliance carries none of this code.

pub mod cli;
pub mod manager;
