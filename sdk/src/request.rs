//! A client request, parsed once and read field by field.

use serde_json::{Map, Value};

use crate::fields::{Field, ReadField, input_error};
use crate::{ErrorCode, InputError};

/// A request: a JSON object whose keys are all fields the plugin declared.
#[derive(Debug, Clone)]
pub struct Request {
    object: Map<String, Value>,
}

impl Request {
    /// Parses `json` and refuses anything but an object whose keys are among `fields`.
    pub fn parse(json: &str, fields: &[&dyn Field]) -> Result<Self, InputError> {
        let value: Value = serde_json::from_str(json).map_err(|error| InputError {
            code: ErrorCode::MalformedJson,
            field: None,
            message: format!("the request is not valid JSON: {error}"),
        })?;
        let Value::Object(object) = value else {
            return Err(InputError {
                code: ErrorCode::NotAnObject,
                field: None,
                message: "the request must be a JSON object".to_owned(),
            });
        };
        if let Some(unknown) = object.keys().find(|key| !fields.iter().any(|field| field.name() == key.as_str())) {
            let known: Vec<&str> = fields.iter().map(|field| field.name()).collect();
            return Err(input_error(
                ErrorCode::UnknownField,
                unknown,
                format!("`{unknown}` is not a field of this model; the fields are {}", known.join(", ")),
            ));
        }
        // Every missing field at once, so a client fixes them in one round.
        let mut missing = fields.iter().filter(|field| field.required() && !object.contains_key(field.name()));
        if let Some(first) = missing.next() {
            let mut names: Vec<String> =
                std::iter::once(first).chain(missing).map(|f| format!("`{}`", f.name())).collect();
            let message = match names.pop() {
                Some(last) if !names.is_empty() => format!("{} and {last} are required", names.join(", ")),
                _ => format!("`{}` is required", first.name()),
            };
            return Err(input_error(ErrorCode::MissingField, first.name(), message));
        }
        Ok(Self { object })
    }

    /// Reads one field as its typed value, or the error naming the field and the rule.
    pub fn get<F: ReadField>(&self, field: &F) -> Result<F::Value, InputError> {
        field.read(self.object.get(field.name()))
    }

    /// Whether the request carries `field` (as opposed to relying on its default).
    pub fn has(&self, field: &dyn Field) -> bool {
        self.object.contains_key(field.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Flag, Number};

    const MILEAGE: Number = Number::new("mileage", "Odometer").range(0.0, 1e6);
    const CRUISE: Flag = Flag::new("cruise", "Cruise control").default(false);
    const FIELDS: &[&dyn Field] = &[&MILEAGE, &CRUISE];

    #[test]
    fn malformed_json_and_non_objects_are_refused_without_a_field() {
        let error = Request::parse("{\"mileage\": ", FIELDS).unwrap_err();
        assert_eq!((error.code, error.field), (ErrorCode::MalformedJson, None));
        let error = Request::parse("[1, 2]", FIELDS).unwrap_err();
        assert_eq!((error.code, error.field), (ErrorCode::NotAnObject, None));
    }

    #[test]
    fn unknown_fields_are_named() {
        let error = Request::parse(r#"{"milage": 10}"#, FIELDS).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownField);
        assert_eq!(error.field.as_deref(), Some("milage"));
        assert!(error.message.contains("mileage, cruise"), "{}", error.message);
    }

    #[test]
    fn every_missing_required_field_is_named_at_once() {
        const YEAR: Number = Number::new("year", "Model year");
        const FIELDS: &[&dyn Field] = &[&MILEAGE, &CRUISE, &YEAR];
        let error = Request::parse("{}", FIELDS).unwrap_err();
        assert_eq!((error.code, error.field.as_deref()), (ErrorCode::MissingField, Some("mileage")));
        assert_eq!(error.message, "`mileage` and `year` are required");
        let error = Request::parse(r#"{"year": 2020}"#, FIELDS).unwrap_err();
        assert_eq!(error.message, "`mileage` is required");
    }

    #[test]
    fn fields_read_with_defaults() {
        let request = Request::parse(r#"{"mileage": 10}"#, FIELDS).unwrap();
        assert_eq!(request.get(&MILEAGE).unwrap(), 10.0);
        assert!(!request.get(&CRUISE).unwrap());
        assert!(!request.has(&CRUISE));
    }
}
