//! What a plugin says about itself (`describe`) and how it refuses a request, as host
//! types: serialisable for the API and independent of the generated bindings.

use serde::Serialize;

pub use forecourt_protocol::bundle::{FieldSpec, FieldType, OutputSpec};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub inputs: Vec<FieldSpec>,
    pub outputs: Vec<OutputSpec>,
}

impl PluginInfo {
    /// Checks what the rest of the host relies on; the message names the offending part.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("name {:?} must be non-empty ASCII letters, digits, '-' or '_'", self.name));
        }
        if self.version.is_empty() {
            return Err("version is empty".to_owned());
        }
        for (index, field) in self.inputs.iter().enumerate() {
            if field.name.is_empty() {
                return Err(format!("input {index} has no name"));
            }
            if self.inputs[..index].iter().any(|earlier| earlier.name == field.name) {
                return Err(format!("input `{}` is declared twice", field.name));
            }
            if let (Some(min), Some(max)) = (field.minimum, field.maximum)
                && min > max
            {
                return Err(format!("input `{}` has minimum {min} above maximum {max}", field.name));
            }
            if field.field_type == FieldType::Category && field.categories.is_empty() {
                return Err(format!("category input `{}` lists no categories", field.name));
            }
        }
        Ok(())
    }
}

/// The rule a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputErrorCode {
    MalformedJson,
    NotAnObject,
    UnknownField,
    MissingField,
    WrongType,
    OutOfRange,
    UnknownCategory,
    InvalidValue,
}

/// A plugin's refusal of a request: the rule, the field at fault, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputError {
    pub code: InputErrorCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}
