//! Everything that can go wrong storing or reading predictions and audit records.

use std::path::PathBuf;

/// Cloneable so that one failed flush can be reported to every request of its group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {dir}: {reason}")]
    Open { dir: PathBuf, reason: String },

    /// The write queue is full: the caller should shed the request (HTTP 429), not wait.
    #[error("the store's write queue is full ({capacity} writes waiting)")]
    Overloaded { capacity: usize },

    /// The store was closed, or its writer thread stopped.
    #[error("the store is closed")]
    Closed,

    /// sled failed (an I/O error, a full disk...); the message is sled's.
    #[error("storage failed: {0}")]
    Storage(String),

    /// Something on disk cannot be decoded.
    #[error("stored data is corrupt: {what}")]
    Corrupt { what: String },

    /// The caller handed over something the store cannot keep as asked.
    #[error("invalid record: {reason}")]
    InvalidRecord { reason: String },
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        Self::Storage(error.to_string())
    }
}
