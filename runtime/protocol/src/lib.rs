//! What the Forecourt appliance and the fleet manager's tools share: the bundle's formats
//! (manifest, interface, signatures, the `.fcb` archive) and the fleet's wire contract
//! (topics, messages, signed envelopes, broker addresses).
//!
//! It knows nothing of serving: no plugin host, no model, no store, no HTTP. The appliance
//! (`forecourt`) and the fleet manager (`forecourt-fleet-manager`) each depend on it and
//! not on each other.

pub mod bundle;
pub mod fleet;
