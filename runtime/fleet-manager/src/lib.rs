//! The operator's side of the fleet: `forecourt fleet`, run by a fleet manager on their own
//! machine, never on an appliance.
//!
//! - [`manager`]: one short MQTT session: the devices' retained statuses, publishing a
//!   signed deployment request, and following it to one outcome per device.
//! - [`cli`]: the `forecourt fleet` arguments, the live progress and the tables printed.
//!
//! It speaks to appliances only through the wire contract they share (the topics,
//! messages and signed envelopes of `forecourt::fleet`, the manifest and `.fcb` archive of
//! `forecourt::bundle`), so the two sides cannot drift apart; the appliance's library
//! carries none of this code.

pub mod cli;
pub mod manager;
