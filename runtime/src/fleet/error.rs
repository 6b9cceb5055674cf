//! Why a deployment request failed, and the one mapping of every failure to the reason
//! code its outcome message carries.

use super::messages::{Reason, ReasonCode};
use crate::bundle::{BundleError, BundleFileError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the request is {size} bytes, over the limit of {max} (mqtt.max_bundle_mib)")]
    TooLarge { size: usize, max: usize },
    #[error("{0}")]
    Transfer(String),
    #[error("this appliance has no trusted keys ([trust] keys_dir), so it accepts no deployments")]
    NoTrustedKeys,
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Busy(String),
    #[error("{reason}")]
    CanaryFailed { reason: String },
    #[error("the appliance's store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<BundleFileError> for DeployError {
    fn from(error: BundleFileError) -> Self {
        Self::Bundle(error.into())
    }
}

impl DeployError {
    /// The outcome message's reason.
    pub fn reason(&self) -> Reason {
        Reason::new(self.code(), self.to_string())
    }

    fn code(&self) -> ReasonCode {
        match self {
            Self::TooLarge { .. } => ReasonCode::TooLarge,
            Self::Transfer(_) => ReasonCode::TransferFailed,
            Self::NoTrustedKeys => ReasonCode::Untrusted,
            Self::Bundle(error) => bundle_code(error),
            Self::NotFound(_) => ReasonCode::NotFound,
            Self::Refused(_) => ReasonCode::Refused,
            Self::Busy(_) => ReasonCode::Busy,
            Self::CanaryFailed { .. } => ReasonCode::CanaryFailed,
            Self::Store(_) | Self::Internal(_) => ReasonCode::Internal,
        }
    }
}

fn bundle_code(error: &BundleError) -> ReasonCode {
    match error {
        BundleError::File(error) => file_code(error),
        BundleError::RuntimeTooOld { .. } | BundleError::Check { .. } => ReasonCode::Incompatible,
        BundleError::Plugin { .. } | BundleError::Model { .. } => ReasonCode::LoadFailed,
        BundleError::SmokeTest { .. } => ReasonCode::SmokeTestFailed,
        BundleError::UnknownBundle { .. } | BundleError::UnknownVersion { .. } => ReasonCode::NotFound,
        BundleError::InUse { .. } | BundleError::AlreadyLoaded { .. } => ReasonCode::Refused,
        BundleError::Build { .. } => ReasonCode::Internal,
    }
}

fn file_code(error: &BundleFileError) -> ReasonCode {
    match error {
        BundleFileError::Unsigned { .. }
        | BundleFileError::UntrustedKey { .. }
        | BundleFileError::BadSignature { .. }
        | BundleFileError::MalformedSignature { .. } => ReasonCode::Untrusted,
        BundleFileError::Digest { .. } => ReasonCode::Tampered,
        BundleFileError::Archive { .. } | BundleFileError::Manifest { .. } | BundleFileError::Read { .. } => {
            ReasonCode::InvalidBundle
        }
        BundleFileError::Key { .. } => ReasonCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn trust_and_integrity_failures_have_their_own_codes() {
        let dir = PathBuf::from("/staging/x");
        assert_eq!(
            DeployError::from(BundleError::from(BundleFileError::Unsigned { dir: dir.clone() })).reason().code,
            ReasonCode::Untrusted
        );
        let tampered = BundleError::from(BundleFileError::Digest {
            dir,
            file: "model.onnx".into(),
            expected: "a".into(),
            actual: "b".into(),
        });
        let reason = DeployError::from(tampered).reason();
        assert_eq!(reason.code, ReasonCode::Tampered);
        assert!(reason.message.contains("model.onnx"), "{}", reason.message);
        let smoke = BundleError::SmokeTest { name: "n".into(), version: "1.0.0".into(), reason: "sample 0".into() };
        assert_eq!(DeployError::from(smoke).reason().code, ReasonCode::SmokeTestFailed);
        assert_eq!(DeployError::NoTrustedKeys.reason().code, ReasonCode::Untrusted);
    }
}
