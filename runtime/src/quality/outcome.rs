//! One outcome: what really happened to a prediction, checked against its bundle's
//! `[outcome]`, and the record kept of it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::QualityError;
use crate::bundle::{OutcomeKind, OutcomeSpec, Point};

/// An outcome as stored in the `outcomes` table (JSON, under the prediction id's 16 bytes),
/// and as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredOutcome {
    pub prediction_id: Uuid,
    pub bundle: String,
    /// The version that made the prediction.
    pub version: String,
    /// The response field the outcome is compared with.
    pub field: String,
    /// What the prediction said (`outputs[field]`).
    #[schema(schema_with = number_or_string)]
    pub predicted: Value,
    /// What really happened.
    #[schema(schema_with = number_or_string)]
    pub actual: Value,
    /// RFC 3339 UTC with milliseconds.
    pub recorded: String,
    /// The id of the token that recorded it (never the token); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

/// The schema of an outcome's value: a number (a regression's) or a string (a class);
/// which one, and its range or classes, is the bundle's `[outcome]`.
pub fn number_or_string() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .build(),
    )
}

/// `actual` checked against `spec`: the value to store and the point it adds to the
/// accuracy (with `predicted`, the stored prediction's `outputs[field]`).
pub fn judge(spec: &OutcomeSpec, predicted: &Value, actual: &Value) -> Result<Point, QualityError> {
    let field = &spec.field;
    let invalid = |message: String| QualityError::Invalid { message };
    let unjudgeable = || QualityError::NotJudgeable {
        reason: format!("the prediction's outputs have no usable `{field}` to compare an outcome with"),
    };
    match &spec.kind {
        OutcomeKind::Regression { minimum, maximum } => {
            let actual = actual.as_f64().filter(|value| value.is_finite()).ok_or_else(|| {
                invalid(format!("`actual` must be a number (the real {field}), not {}", kind(actual)))
            })?;
            if !(*minimum..=*maximum).contains(&actual) {
                return Err(invalid(format!("`actual` must be from {minimum} to {maximum}, not {actual}")));
            }
            let predicted = predicted.as_f64().filter(|value| value.is_finite()).ok_or_else(unjudgeable)?;
            Ok(Point::Regression { predicted, actual })
        }
        OutcomeKind::Classification { classes } => {
            let index_of = |value: &Value| value.as_str().and_then(|name| classes.iter().position(|c| c == name));
            let actual = index_of(actual)
                .ok_or_else(|| invalid(format!("`actual` must be one of {} (the real {field})", classes.join(", "))))?;
            let predicted = index_of(predicted).ok_or_else(unjudgeable)?;
            Ok(Point::Classification { predicted, actual })
        }
    }
}

/// The point a stored outcome adds, judged again (a stored one passed the check once; one
/// that no longer fits, after a change of the rule, is not counted).
pub fn point_of(spec: &OutcomeSpec, stored: &StoredOutcome) -> Option<Point> {
    (stored.field == spec.field).then(|| judge(spec, &stored.predicted, &stored.actual).ok()).flatten()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number out of range",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn price() -> OutcomeSpec {
        OutcomeSpec { field: "price".into(), kind: OutcomeKind::Regression { minimum: 0.0, maximum: 1e6 } }
    }

    fn species() -> OutcomeSpec {
        OutcomeSpec {
            field: "class".into(),
            kind: OutcomeKind::Classification { classes: vec!["setosa".into(), "virginica".into()] },
        }
    }

    #[test]
    fn a_good_outcome_becomes_a_point() {
        assert_eq!(
            judge(&price(), &json!(21000.5), &json!(20000)).unwrap(),
            Point::Regression { predicted: 21000.5, actual: 20000.0 }
        );
        assert_eq!(
            judge(&species(), &json!("setosa"), &json!("virginica")).unwrap(),
            Point::Classification { predicted: 0, actual: 1 }
        );
    }

    #[test]
    fn a_bad_outcome_names_the_rule() {
        let message = |result: Result<Point, QualityError>| result.unwrap_err().to_string();
        assert!(message(judge(&price(), &json!(1.0), &json!("20000"))).contains("must be a number"));
        assert!(message(judge(&price(), &json!(1.0), &json!(-5))).contains("from 0 to 1000000"));
        assert!(message(judge(&price(), &json!(1.0), &json!(2e6))).contains("from 0 to 1000000"));
        assert!(message(judge(&species(), &json!("setosa"), &json!("rose"))).contains("one of setosa, virginica"));
        assert!(message(judge(&species(), &json!("setosa"), &json!(1))).contains("one of"));
        assert!(matches!(judge(&price(), &json!("n/a"), &json!(5)), Err(QualityError::NotJudgeable { .. })));
    }
}
