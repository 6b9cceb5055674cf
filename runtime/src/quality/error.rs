//! What can go wrong recording an outcome or reporting a bundle's quality.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    /// No stored prediction of that id (or one the caller may not see).
    #[error("no prediction {id}")]
    UnknownPrediction { id: uuid::Uuid },
    #[error("there is no bundle named {name}")]
    UnknownBundle { name: String },
    /// The outcome breaks the bundle's `[outcome]` rule.
    #[error("{message}")]
    Invalid { message: String },
    /// An outcome was recorded for this prediction already; outcomes are never replaced.
    #[error("an outcome was recorded for prediction {id} already ({actual} at {recorded}); outcomes are not replaced")]
    AlreadyRecorded { id: uuid::Uuid, actual: String, recorded: String },
    /// The prediction cannot be judged: its bundle takes no outcomes, is not loaded, or its
    /// stored outputs lack the field outcomes are compared with.
    #[error("{reason}")]
    NotJudgeable { reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored outcome that does not decode.
    #[error("stored outcome {key}: {reason}")]
    Corrupt { key: String, reason: String },
}
