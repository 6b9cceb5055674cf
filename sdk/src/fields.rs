//! Typed request fields.
//!
//! Each field type is built with `const fn`s, so a plugin declares its fields once as
//! constants; the declaration serves both `describe` (documentation, the host's API
//! schema) and [`Request::get`](crate::Request::get) (validation). A field without a
//! default is required.

use serde_json::Value;

use crate::{ErrorCode, FieldSpec, FieldType, InputError};

/// What every field can say about itself.
pub trait Field: Sync {
    fn name(&self) -> &'static str;
    /// Whether a request must carry the field (it has no default). Cheap: checked on every
    /// request, where [`spec`](Self::spec) would build strings.
    fn required(&self) -> bool;
    /// The field's description for `describe`.
    fn spec(&self) -> FieldSpec;
}

/// A field that can be read from a request as a typed value.
pub trait ReadField: Field {
    type Value;
    /// Reads the value, `None` when the request does not carry the field.
    fn read(&self, value: Option<&Value>) -> Result<Self::Value, InputError>;
}

pub(crate) fn input_error(code: ErrorCode, field: &str, message: String) -> InputError {
    InputError { code, field: Some(field.to_owned()), message }
}

fn missing(field: &str) -> InputError {
    input_error(ErrorCode::MissingField, field, format!("`{field}` is required"))
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> InputError {
    let got = match got {
        // The number itself says more than "a number" (`4.5` for a whole number).
        Value::Number(number) => number.to_string(),
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    };
    input_error(ErrorCode::WrongType, field, format!("`{field}` must be {expected}, not {got}"))
}

fn spec(name: &str, kind: FieldType, description: &str, default_json: Option<String>) -> FieldSpec {
    FieldSpec {
        name: name.to_owned(),
        type_: kind,
        required: default_json.is_none(),
        description: description.to_owned(),
        unit: None,
        minimum: None,
        maximum: None,
        categories: Vec::new(),
        default_json,
        max_items: None,
    }
}

/// A real number within an inclusive range.
#[derive(Debug, Clone, Copy)]
pub struct Number {
    pub name: &'static str,
    pub description: &'static str,
    pub unit: Option<&'static str>,
    pub min: f64,
    pub max: f64,
    pub default: Option<f64>,
}

impl Number {
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        Self { name, description, unit: None, min: f64::MIN, max: f64::MAX, default: None }
    }

    pub const fn unit(self, unit: &'static str) -> Self {
        Self { unit: Some(unit), ..self }
    }

    pub const fn range(self, min: f64, max: f64) -> Self {
        Self { min, max, ..self }
    }

    /// Makes the field optional, with this value when absent.
    pub const fn default(self, value: f64) -> Self {
        Self { default: Some(value), ..self }
    }

    fn check_range(&self, value: f64) -> Result<f64, InputError> {
        if value < self.min || value > self.max {
            return Err(input_error(
                ErrorCode::OutOfRange,
                self.name,
                range_message(self.name, self.min, self.max, self.unit),
            ));
        }
        Ok(value)
    }
}

fn range_message(name: &str, min: impl std::fmt::Display, max: impl std::fmt::Display, unit: Option<&str>) -> String {
    match unit {
        Some(unit) => format!("`{name}` must be between {min} and {max} ({unit})"),
        None => format!("`{name}` must be between {min} and {max}"),
    }
}

fn bound(value: f64) -> Option<f64> {
    (value != f64::MIN && value != f64::MAX).then_some(value)
}

impl Field for Number {
    fn name(&self) -> &'static str {
        self.name
    }

    fn required(&self) -> bool {
        self.default.is_none()
    }

    fn spec(&self) -> FieldSpec {
        FieldSpec {
            unit: self.unit.map(str::to_owned),
            minimum: bound(self.min),
            maximum: bound(self.max),
            ..spec(self.name, FieldType::Number, self.description, self.default.map(|v| v.to_string()))
        }
    }
}

impl ReadField for Number {
    type Value = f64;

    fn read(&self, value: Option<&Value>) -> Result<f64, InputError> {
        match value {
            None => self.default.ok_or_else(|| missing(self.name)),
            Some(Value::Number(number)) => match number.as_f64() {
                Some(value) => self.check_range(value),
                None => Err(wrong_type(self.name, "a number", &Value::Number(number.clone()))),
            },
            Some(other) => Err(wrong_type(self.name, "a number", other)),
        }
    }
}

/// A whole number within an inclusive range. `4.0` is accepted as 4; `4.5` is not.
#[derive(Debug, Clone, Copy)]
pub struct Integer {
    pub name: &'static str,
    pub description: &'static str,
    pub unit: Option<&'static str>,
    pub min: i64,
    pub max: i64,
    pub default: Option<i64>,
}

impl Integer {
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        Self { name, description, unit: None, min: i64::MIN, max: i64::MAX, default: None }
    }

    pub const fn unit(self, unit: &'static str) -> Self {
        Self { unit: Some(unit), ..self }
    }

    pub const fn range(self, min: i64, max: i64) -> Self {
        Self { min, max, ..self }
    }

    /// Makes the field optional, with this value when absent.
    pub const fn default(self, value: i64) -> Self {
        Self { default: Some(value), ..self }
    }
}

fn as_integer(value: &Value) -> Option<i64> {
    let number = value.as_number()?;
    number.as_i64().or_else(|| {
        let float = number.as_f64()?;
        // The bounds are exactly representable and keep the cast from saturating.
        (float.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&float))
            .then_some(float as i64)
    })
}

fn read_integer(name: &str, value: &Value, min: i64, max: i64, unit: Option<&str>) -> Result<i64, InputError> {
    let integer = as_integer(value).ok_or_else(|| wrong_type(name, "a whole number", value))?;
    if integer < min || integer > max {
        return Err(input_error(ErrorCode::OutOfRange, name, range_message(name, min, max, unit)));
    }
    Ok(integer)
}

impl Field for Integer {
    fn name(&self) -> &'static str {
        self.name
    }

    fn required(&self) -> bool {
        self.default.is_none()
    }

    fn spec(&self) -> FieldSpec {
        FieldSpec {
            unit: self.unit.map(str::to_owned),
            minimum: (self.min != i64::MIN).then_some(self.min as f64),
            maximum: (self.max != i64::MAX).then_some(self.max as f64),
            ..spec(self.name, FieldType::Integer, self.description, self.default.map(|v| v.to_string()))
        }
    }
}

impl ReadField for Integer {
    type Value = i64;

    fn read(&self, value: Option<&Value>) -> Result<i64, InputError> {
        match value {
            None => self.default.ok_or_else(|| missing(self.name)),
            Some(value) => read_integer(self.name, value, self.min, self.max, self.unit),
        }
    }
}

/// A yes/no field: JSON `true` or `false`.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub description: &'static str,
    pub default: Option<bool>,
}

impl Flag {
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        Self { name, description, default: None }
    }

    /// Makes the field optional, with this value when absent.
    pub const fn default(self, value: bool) -> Self {
        Self { default: Some(value), ..self }
    }
}

impl Field for Flag {
    fn name(&self) -> &'static str {
        self.name
    }

    fn required(&self) -> bool {
        self.default.is_none()
    }

    fn spec(&self) -> FieldSpec {
        spec(self.name, FieldType::Boolean, self.description, self.default.map(|v| v.to_string()))
    }
}

impl ReadField for Flag {
    type Value = bool;

    fn read(&self, value: Option<&Value>) -> Result<bool, InputError> {
        match value {
            None => self.default.ok_or_else(|| missing(self.name)),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(other) => Err(wrong_type(self.name, "true or false", other)),
        }
    }
}

/// A string from a fixed vocabulary, matched without regard to ASCII case. Reading it
/// gives the value's index in the vocabulary, ready for [`Features::one_hot`] or
/// [`Features::ordinal`](crate::Features::ordinal).
///
/// [`Features::one_hot`]: crate::Features::one_hot
#[derive(Debug, Clone, Copy)]
pub struct Category {
    pub name: &'static str,
    pub description: &'static str,
    pub values: &'static [&'static str],
    pub default: Option<&'static str>,
}

impl Category {
    pub const fn new(name: &'static str, description: &'static str, values: &'static [&'static str]) -> Self {
        Self { name, description, values, default: None }
    }

    /// Makes the field optional, with this value (which must be in the vocabulary) when absent.
    pub const fn default(self, value: &'static str) -> Self {
        Self { default: Some(value), ..self }
    }

    /// The index of `value` in the vocabulary.
    pub fn index_of(&self, value: &str) -> Result<usize, InputError> {
        self.values.iter().position(|known| known.eq_ignore_ascii_case(value)).ok_or_else(|| {
            input_error(
                ErrorCode::UnknownCategory,
                self.name,
                format!("`{}` must be one of {}, not {value:?}", self.name, self.values.join(", ")),
            )
        })
    }
}

impl Field for Category {
    fn name(&self) -> &'static str {
        self.name
    }

    fn required(&self) -> bool {
        self.default.is_none()
    }

    fn spec(&self) -> FieldSpec {
        FieldSpec {
            categories: self.values.iter().map(|value| (*value).to_owned()).collect(),
            ..spec(
                self.name,
                FieldType::Category,
                self.description,
                self.default.map(|value| Value::from(value).to_string()),
            )
        }
    }
}

impl ReadField for Category {
    type Value = usize;

    fn read(&self, value: Option<&Value>) -> Result<usize, InputError> {
        match value {
            None => self.index_of(self.default.ok_or_else(|| missing(self.name))?),
            Some(Value::String(text)) => self.index_of(text),
            Some(other) => Err(wrong_type(self.name, "a string", other)),
        }
    }
}

/// Free text up to a maximum length in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Text {
    pub name: &'static str,
    pub description: &'static str,
    pub max_len: usize,
    pub default: Option<&'static str>,
}

impl Text {
    pub const fn new(name: &'static str, description: &'static str, max_len: usize) -> Self {
        Self { name, description, max_len, default: None }
    }

    /// Makes the field optional, with this value when absent.
    pub const fn default(self, value: &'static str) -> Self {
        Self { default: Some(value), ..self }
    }
}

impl Field for Text {
    fn name(&self) -> &'static str {
        self.name
    }

    fn required(&self) -> bool {
        self.default.is_none()
    }

    fn spec(&self) -> FieldSpec {
        spec(self.name, FieldType::Text, self.description, self.default.map(|value| Value::from(value).to_string()))
    }
}

impl ReadField for Text {
    type Value = String;

    fn read(&self, value: Option<&Value>) -> Result<String, InputError> {
        match value {
            None => self.default.map(str::to_owned).ok_or_else(|| missing(self.name)),
            Some(Value::String(text)) if text.len() <= self.max_len => Ok(text.clone()),
            Some(Value::String(_)) => Err(input_error(
                ErrorCode::InvalidValue,
                self.name,
                format!("`{}` must be at most {} bytes long", self.name, self.max_len),
            )),
            Some(other) => Err(wrong_type(self.name, "a string", other)),
        }
    }
}

/// A list of whole numbers, each within an inclusive range; absent means empty.
#[derive(Debug, Clone, Copy)]
pub struct IntegerList {
    pub name: &'static str,
    pub description: &'static str,
    pub unit: Option<&'static str>,
    pub min: i64,
    pub max: i64,
    pub max_len: usize,
}

impl IntegerList {
    pub const fn new(name: &'static str, description: &'static str, max_len: usize) -> Self {
        Self { name, description, unit: None, min: i64::MIN, max: i64::MAX, max_len }
    }

    pub const fn unit(self, unit: &'static str) -> Self {
        Self { unit: Some(unit), ..self }
    }

    /// The range of each element.
    pub const fn range(self, min: i64, max: i64) -> Self {
        Self { min, max, ..self }
    }
}

impl Field for IntegerList {
    fn name(&self) -> &'static str {
        self.name
    }

    fn required(&self) -> bool {
        false
    }

    fn spec(&self) -> FieldSpec {
        FieldSpec {
            unit: self.unit.map(str::to_owned),
            minimum: (self.min != i64::MIN).then_some(self.min as f64),
            maximum: (self.max != i64::MAX).then_some(self.max as f64),
            max_items: Some(u32::try_from(self.max_len).unwrap_or(u32::MAX)),
            ..spec(self.name, FieldType::IntegerList, self.description, Some("[]".to_owned()))
        }
    }
}

impl ReadField for IntegerList {
    type Value = Vec<i64>;

    fn read(&self, value: Option<&Value>) -> Result<Vec<i64>, InputError> {
        let items = match value {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong_type(self.name, "a list of whole numbers", other)),
        };
        if items.len() > self.max_len {
            return Err(input_error(
                ErrorCode::InvalidValue,
                self.name,
                format!("`{}` may hold at most {} values", self.name, self.max_len),
            ));
        }
        items.iter().map(|item| read_integer(self.name, item, self.min, self.max, self.unit)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MILEAGE: Number = Number::new("mileage", "Odometer").unit("mi").range(0.0, 1_000_000.0);
    const DOORS: Integer = Integer::new("doors", "Doors").range(2, 5).default(4);
    const MAKE: Category = Category::new("make", "Make", &["buick", "saab"]);
    const MONTHS: IntegerList = IntegerList::new("forecast_months", "Horizons", 3).range(1, 120);

    #[test]
    fn number_enforces_presence_type_and_range() {
        assert_eq!(MILEAGE.read(Some(&json!(12.5))).unwrap(), 12.5);
        assert_eq!(MILEAGE.read(None).unwrap_err().code, ErrorCode::MissingField);
        assert_eq!(MILEAGE.read(Some(&json!("12"))).unwrap_err().code, ErrorCode::WrongType);
        let error = MILEAGE.read(Some(&json!(-1))).unwrap_err();
        assert_eq!(error.code, ErrorCode::OutOfRange);
        assert_eq!(error.field.as_deref(), Some("mileage"));
        assert_eq!(error.message, "`mileage` must be between 0 and 1000000 (mi)");
    }

    #[test]
    fn integer_accepts_integral_floats_only() {
        assert_eq!(DOORS.read(Some(&json!(2.0))).unwrap(), 2);
        assert_eq!(DOORS.read(Some(&json!(2.5))).unwrap_err().code, ErrorCode::WrongType);
        assert_eq!(DOORS.read(Some(&json!(1e300))).unwrap_err().code, ErrorCode::WrongType);
        assert_eq!(DOORS.read(Some(&json!(9))).unwrap_err().code, ErrorCode::OutOfRange);
        assert_eq!(DOORS.read(None).unwrap(), 4);
    }

    #[test]
    fn category_matches_case_insensitively_and_names_the_vocabulary() {
        assert_eq!(MAKE.read(Some(&json!("SAAB"))).unwrap(), 1);
        let error = MAKE.read(Some(&json!("volvo"))).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownCategory);
        assert!(error.message.contains("buick, saab"), "{}", error.message);
    }

    #[test]
    fn integer_list_checks_length_and_each_element() {
        assert_eq!(MONTHS.read(None).unwrap(), Vec::<i64>::new());
        assert_eq!(MONTHS.read(Some(&json!([6, 12]))).unwrap(), vec![6, 12]);
        assert_eq!(MONTHS.read(Some(&json!([1, 2, 3, 4]))).unwrap_err().code, ErrorCode::InvalidValue);
        assert_eq!(MONTHS.read(Some(&json!([0]))).unwrap_err().code, ErrorCode::OutOfRange);
        assert_eq!(MONTHS.read(Some(&json!(6))).unwrap_err().code, ErrorCode::WrongType);
    }

    #[test]
    fn specs_describe_ranges_units_defaults_and_vocabularies() {
        let mileage = MILEAGE.spec();
        assert!(mileage.required);
        assert_eq!((mileage.minimum, mileage.maximum), (Some(0.0), Some(1_000_000.0)));
        assert_eq!(mileage.unit.as_deref(), Some("mi"));
        let doors = DOORS.spec();
        assert!(!doors.required);
        assert_eq!(doors.default_json.as_deref(), Some("4"));
        assert_eq!(MAKE.spec().categories, vec!["buick", "saab"]);
        assert_eq!((MONTHS.spec().max_items, MILEAGE.spec().max_items), (Some(3), None), "lists carry their cap");
    }
}
