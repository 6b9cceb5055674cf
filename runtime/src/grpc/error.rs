//! Every refusal of the gRPC service, and the one mapping from them (and from the
//! pipeline's errors) to gRPC status codes, as HTTP's /v2 maps them to statuses: a client
//! fault is INVALID_ARGUMENT, an unknown model NOT_FOUND, a full appliance
//! RESOURCE_EXHAUSTED, starting or draining UNAVAILABLE.

use tonic::{Code, Status};

use crate::bundle::InferenceError;
use crate::model::ModelError;
use crate::oip::{TensorFault, UnknownModel};
use crate::pipeline::PipelineError;

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// No valid token where one is needed.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token whose role does not grant the call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The token's request rate is used up.
    #[error("this token's request rate is used up; retry in {0} s")]
    RateLimited(u64),
    #[error("not ready: the appliance is starting or draining")]
    NotReady,
    /// `server.max_concurrent_requests` calls are in flight.
    #[error("the appliance is answering as many requests as it can; retry shortly")]
    Shed,
    #[error("the request took longer than server.request_timeout_secs ({0} s)")]
    Timeout(u64),
    #[error(transparent)]
    UnknownModel(#[from] UnknownModel),
    #[error(transparent)]
    Tensor(#[from] TensorFault),
    /// A fault of the request's protobuf form (its raw contents against its inputs).
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl GrpcError {
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::RateLimited(_) | Self::Shed => Code::ResourceExhausted,
            Self::NotReady => Code::Unavailable,
            Self::Timeout(_) => Code::DeadlineExceeded,
            Self::UnknownModel(_) => Code::NotFound,
            Self::Tensor(fault) if fault.is_client_error() => Code::InvalidArgument,
            Self::Tensor(_) => Code::Internal,
            Self::InvalidRequest(_) => Code::InvalidArgument,
            Self::Pipeline(error) => match error {
                PipelineError::UnknownBundle { .. } | PipelineError::UnknownVersion { .. } => Code::NotFound,
                PipelineError::Overloaded(_) => Code::ResourceExhausted,
                PipelineError::BatchTooLarge { .. }
                | PipelineError::Inference(InferenceError::Model(ModelError::InputMismatch { .. })) => {
                    Code::InvalidArgument
                }
                _ => Code::Internal,
            },
        }
    }
}

impl From<GrpcError> for Status {
    fn from(error: GrpcError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

/// The code's name as gRPC spells it, for metrics and logs (a fixed, small set).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_code() {
        let cases = [
            (GrpcError::NotReady, Code::Unavailable),
            (GrpcError::Shed, Code::ResourceExhausted),
            (GrpcError::Timeout(30), Code::DeadlineExceeded),
            (GrpcError::UnknownModel(UnknownModel { name: "lorry".into(), version: None }), Code::NotFound),
            (GrpcError::Tensor(TensorFault::NegativeDimension { input: "x".into() }), Code::InvalidArgument),
            (GrpcError::Tensor(TensorFault::ElementTooLong { output: "y".into(), length: 1 << 33 }), Code::Internal),
            (GrpcError::Pipeline(PipelineError::Overloaded("queue full".into())), Code::ResourceExhausted),
            (GrpcError::Pipeline(PipelineError::UnknownBundle { name: "lorry".into() }), Code::NotFound),
            (
                GrpcError::Pipeline(PipelineError::Inference(InferenceError::Model(ModelError::InputMismatch {
                    reason: "no input `x`".into(),
                }))),
                Code::InvalidArgument,
            ),
            (
                GrpcError::Pipeline(PipelineError::Inference(InferenceError::Model(ModelError::Run {
                    reason: "boom".into(),
                }))),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }
}
