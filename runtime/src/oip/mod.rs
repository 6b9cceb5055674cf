//! The Open Inference Protocol v2 (KServe, Triton), whatever carries it: what its tensors
//! and model descriptions mean to the host. HTTP under /v2 ([`crate::http`]: JSON and
//! Triton's binary framing) and gRPC ([`crate::grpc`]: protobuf) each parse their own wire
//! form and then share these rules, so one request gets the same verdict, in the same
//! words, over either.
//!
//! This module owns: the datatypes the host takes, input shapes, raw element bytes
//! ([`raw`]), which outputs a request gets, and a model's metadata. It must not know a
//! transport (no headers, no JSON bodies, no protobuf) nor run anything: inference is the
//! pipeline's.

mod raw;

use std::sync::Arc;

use semver::Version;
use serde::Serialize;

pub use raw::{Datatype, check_size, decode, encode};

use crate::bundle::{Bundle, Registry};
use crate::model::OutputForm;
use crate::tensor::{Tensor, TensorError};
use crate::text::echo;

/// The server's name in its metadata.
pub const SERVER_NAME: &str = "forecourt";
/// Every model's platform in its metadata.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Why a request's tensor (or the outputs it asks for) is refused. Each message names the
/// input or output at fault and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorFault {
    #[error("input `{input}`: datatype {datatype} is not supported")]
    UnsupportedDatatype { input: String, datatype: String },
    #[error("input `{input}` has a negative dimension")]
    NegativeDimension { input: String },
    #[error(
        "input `{input}` ({datatype}, shape {shape:?}) takes {expected} bytes of binary data, but its {declared_in} is \
         {declared}"
    )]
    SizeMismatch {
        input: String,
        datatype: &'static str,
        shape: Vec<usize>,
        expected: u64,
        declared: u64,
        declared_in: &'static str,
    },
    #[error("input `{input}` has a shape {shape:?} too large to hold in memory")]
    Overflow { input: String, shape: Vec<usize> },
    #[error("input `{input}` (BYTES) element {index}: {problem}")]
    BytesElement { input: String, index: usize, problem: &'static str },
    #[error(
        "input `{input}` (BYTES) has {actual} elements in its binary data, but its shape {shape:?} holds {expected}"
    )]
    BytesTooFew { input: String, shape: Vec<usize>, expected: usize, actual: usize },
    #[error("input `{input}` (BYTES) has more elements in its binary data than its shape {shape:?} holds ({expected})")]
    BytesTooMany { input: String, shape: Vec<usize>, expected: usize },
    #[error("the model has no output `{name}`")]
    UnknownOutput { name: String },
    #[error(transparent)]
    Malformed(#[from] TensorError),
    #[error("output `{output}` (BYTES) has an element of {length} bytes, more than a 4-byte length can give")]
    ElementTooLong { output: String, length: usize },
}

impl TensorFault {
    /// Whether the client is at fault; otherwise the server is.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::ElementTooLong { .. })
    }
}

/// An input's shape as the host's dimensions; every dimension of an input is known.
pub fn input_shape(input: &str, dims: &[i64]) -> Result<Vec<usize>, TensorFault> {
    dims.iter()
        .map(|&dim| usize::try_from(dim).map_err(|_| TensorFault::NegativeDimension { input: input.to_owned() }))
        .collect()
}

/// The datatype an input names, if the host takes it.
pub fn input_datatype(input: &str, datatype: &str) -> Result<Datatype, TensorFault> {
    Datatype::parse(datatype)
        .ok_or_else(|| TensorFault::UnsupportedDatatype { input: input.to_owned(), datatype: echo(datatype) })
}

/// The model's output `name`, for a request that names the outputs it wants.
pub fn output_named(outputs: &[Tensor], name: &str) -> Result<Tensor, TensorFault> {
    outputs
        .iter()
        .find(|tensor| tensor.name == name)
        .cloned()
        .ok_or_else(|| TensorFault::UnknownOutput { name: name.to_owned() })
}

/// The protocol's name for the element type of an output.
pub fn datatype_of(tensor: &Tensor) -> &'static str {
    crate::model::ElementType::of(&tensor.data).protocol_name()
}

/// No model of that name (or no such version of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {name}{}", version.as_ref().map(|v| format!(" version {v}")).unwrap_or_default())]
pub struct UnknownModel {
    pub name: String,
    pub version: Option<String>,
}

/// The bundle named, at `version` or its active version. A version that is not semver
/// names no bundle either.
pub fn find_model(registry: &Registry, name: &str, version: Option<&str>) -> Result<Arc<Bundle>, UnknownModel> {
    let unknown = || UnknownModel { name: name.to_owned(), version: version.map(str::to_owned) };
    match version {
        None => registry.active(name).ok_or_else(unknown),
        Some(version) => {
            let version = Version::parse(version).map_err(|_| unknown())?;
            registry.version(name, &version).ok_or_else(unknown)
        }
    }
}

/// A version a request names, parsed; one that is not semver names no bundle.
pub fn parse_version(name: &str, version: &str) -> Result<Version, UnknownModel> {
    Version::parse(version).map_err(|_| UnknownModel { name: name.to_owned(), version: Some(version.to_owned()) })
}

/// An input or output as model metadata describes it; -1 for a dimension of any size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// A model's metadata: what a client needs to build its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// The metadata of `bundle`, with every version of it loaded in `registry`.
pub fn model_metadata(registry: &Registry, bundle: &Bundle) -> ModelMetadata {
    let model = bundle.model();
    ModelMetadata {
        name: bundle.name().to_owned(),
        versions: registry.versions(bundle.name()).iter().map(|b| b.version().to_string()).collect(),
        platform: PLATFORM,
        inputs: model
            .inputs()
            .iter()
            .map(|input| TensorMetadata {
                name: input.name.clone(),
                datatype: input.element_type.protocol_name(),
                shape: input.shape.clone(),
            })
            .collect(),
        outputs: model
            .outputs()
            .iter()
            .map(|output| TensorMetadata {
                name: output.name.clone(),
                datatype: output.element_type.protocol_name(),
                shape: match &output.form {
                    OutputForm::Tensor { shape } => shape.clone(),
                    OutputForm::ClassMaps => vec![-1, -1],
                },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    #[test]
    fn shapes_and_datatypes_are_refused_naming_the_input() {
        assert_eq!(input_shape("x", &[2, 17]), Ok(vec![2, 17]));
        assert_eq!(input_shape("x", &[]), Ok(vec![]));
        assert_eq!(input_shape("x", &[2, -1]).unwrap_err().to_string(), "input `x` has a negative dimension");
        assert_eq!(input_datatype("x", "FP32"), Ok(Datatype::Fp32));
        assert_eq!(
            input_datatype("half", "FP16").unwrap_err().to_string(),
            "input `half`: datatype \"FP16\" is not supported"
        );
        let long = input_datatype("x", &"F".repeat(10_000)).unwrap_err().to_string();
        assert!(long.len() < 120, "an outside datatype is echoed cut short: {long}");
    }

    #[test]
    fn outputs_are_found_by_name() {
        let outputs = vec![Tensor::new("p", vec![1, 1], TensorData::Float32(vec![0.5])).unwrap()];
        assert_eq!(output_named(&outputs, "p").unwrap(), outputs[0]);
        assert_eq!(output_named(&outputs, "q").unwrap_err().to_string(), "the model has no output `q`");
        assert_eq!(datatype_of(&outputs[0]), "FP32");
    }

    #[test]
    fn an_unknown_model_names_the_version_asked() {
        let plain = UnknownModel { name: "lorry".into(), version: None };
        assert_eq!(plain.to_string(), "unknown model lorry");
        assert_eq!(parse_version("car", "latest").unwrap_err().to_string(), "unknown model car version latest");
        assert_eq!(parse_version("car", "1.0.0").unwrap(), Version::new(1, 0, 0));
    }
}
