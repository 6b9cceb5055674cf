//! The host side of `forecourt:plugin@0.2.0`, generated from sdk/wit, and the
//! conversions from the generated types into the host's own.

use super::info::{FieldSpec, FieldType, InputError, InputErrorCode, OutputSpec, PluginInfo};
use crate::tensor::{Tensor, TensorData, TensorError};

mod generated {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../sdk/wit",
    });
}

pub(super) use generated::Plugin as PluginWorld;
pub(super) use generated::PluginPre as PluginWorldPre;
pub(super) use generated::forecourt::plugin::types as wit;

impl From<wit::FieldType> for FieldType {
    fn from(kind: wit::FieldType) -> Self {
        match kind {
            wit::FieldType::Number => Self::Number,
            wit::FieldType::Integer => Self::Integer,
            wit::FieldType::Boolean => Self::Boolean,
            wit::FieldType::Text => Self::Text,
            wit::FieldType::Category => Self::Category,
            wit::FieldType::NumberList => Self::NumberList,
            wit::FieldType::IntegerList => Self::IntegerList,
        }
    }
}

impl TryFrom<wit::PluginInfo> for PluginInfo {
    type Error = String;

    fn try_from(info: wit::PluginInfo) -> Result<Self, String> {
        let inputs = info
            .inputs
            .into_iter()
            .map(|field| {
                let default = field
                    .default_json
                    .map(|json| {
                        serde_json::from_str(&json)
                            .map_err(|error| format!("input `{}` has a default that is not JSON: {error}", field.name))
                    })
                    .transpose()?;
                Ok(FieldSpec {
                    name: field.name,
                    field_type: field.type_.into(),
                    required: field.required,
                    description: field.description,
                    unit: field.unit,
                    minimum: field.minimum,
                    maximum: field.maximum,
                    categories: field.categories,
                    default,
                    max_items: field.max_items,
                })
            })
            .collect::<Result<_, String>>()?;
        let outputs = info
            .outputs
            .into_iter()
            .map(|output| OutputSpec { name: output.name, description: output.description, unit: output.unit })
            .collect();
        Ok(Self { name: info.name, version: info.version, description: info.description, inputs, outputs })
    }
}

impl From<wit::InputError> for InputError {
    fn from(error: wit::InputError) -> Self {
        let code = match error.code {
            wit::ErrorCode::MalformedJson => InputErrorCode::MalformedJson,
            wit::ErrorCode::NotAnObject => InputErrorCode::NotAnObject,
            wit::ErrorCode::UnknownField => InputErrorCode::UnknownField,
            wit::ErrorCode::MissingField => InputErrorCode::MissingField,
            wit::ErrorCode::WrongType => InputErrorCode::WrongType,
            wit::ErrorCode::OutOfRange => InputErrorCode::OutOfRange,
            wit::ErrorCode::UnknownCategory => InputErrorCode::UnknownCategory,
            wit::ErrorCode::InvalidValue => InputErrorCode::InvalidValue,
        };
        Self { code, field: error.field, message: error.message }
    }
}

/// Moves a guest tensor into a host tensor, checking its shape against its elements.
pub(super) fn tensor_from_guest(tensor: wit::Tensor) -> Result<Tensor, TensorError> {
    let data = match tensor.data {
        wit::TensorData::Float32(values) => TensorData::Float32(values),
        wit::TensorData::Float64(values) => TensorData::Float64(values),
        wit::TensorData::Int64(values) => TensorData::Int64(values),
        wit::TensorData::Text(values) => TensorData::Text(values),
    };
    Tensor::new(tensor.name, tensor.shape.into_iter().map(|dim| dim as usize).collect(), data)
}

/// Copies a host tensor into the guest's representation, for `postprocess`.
pub(super) fn tensor_to_guest(tensor: &Tensor) -> wit::Tensor {
    let data = match &tensor.data {
        TensorData::Float32(values) => wit::TensorData::Float32(values.clone()),
        TensorData::Float64(values) => wit::TensorData::Float64(values.clone()),
        TensorData::Int64(values) => wit::TensorData::Int64(values.clone()),
        TensorData::Text(values) => wit::TensorData::Text(values.clone()),
    };
    let shape = tensor.shape.iter().map(|&dim| u32::try_from(dim).unwrap_or(u32::MAX)).collect();
    wit::Tensor { name: tensor.name.clone(), shape, data }
}
