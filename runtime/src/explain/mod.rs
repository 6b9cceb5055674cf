//! Explanations of tree-model predictions: why this price.
//!
//! Owns `trees.json` (the ensemble with its node covers, exported by `train.py`, see
//! [`trees`]), exact path-dependent TreeSHAP over it ([`treeshap`]), and turning one
//! request's SHAP values into an [`Explanation`]: the baseline, each request field's
//! contribution in the model's output units (one-hot columns summed into their field, SHAP
//! values being additive), the forecast rows' change split into "the inputs changed" and
//! "the output scale" (car-price's age), and the same in words for a kiosk.
//!
//! It reads tensors and JSON values and knows nothing of HTTP, bundles or the store; the
//! bundle decides when to load an [`Explainer`] and checks it against its model.

pub mod trees;
pub mod treeshap;
mod words;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::tensor::{Tensor, TensorData};
pub use trees::Ensemble;
pub use treeshap::Scratch;

/// Why an explanation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("invalid trees.json: {reason}")]
    InvalidTrees { reason: String },
    #[error("the trees do not fit the model: {reason}")]
    Mismatch { reason: String },
    #[error("cannot explain these inputs: {reason}")]
    Inputs { reason: String },
    #[error("this bundle's model cannot be explained: it carries no trees.json (only tree ensembles can be)")]
    Unavailable,
}

/// What the words need to know of the request's fields and the output.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Each request field's unit, when it has one ("mi").
    pub field_units: Vec<(String, String)>,
    /// The output's unit ("USD").
    pub output_unit: Option<String>,
    /// Each optional request field's default, shown for a field the request left out.
    pub field_defaults: Vec<(String, Value)>,
}

/// An ensemble ready to explain requests.
#[derive(Debug, Clone)]
pub struct Explainer {
    ensemble: Ensemble,
    /// Request fields in first-column order, each with its columns.
    fields: Vec<FieldColumns>,
    vocabulary: Vocabulary,
}

#[derive(Debug, Clone)]
struct FieldColumns {
    name: String,
    columns: Vec<usize>,
}

/// One prediction explained.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    /// `tree_shap_path_dependent`: exact Shapley values of the trees (Lundberg et al. 2018).
    pub method: &'static str,
    /// The average prediction over the training rows, in output units.
    pub baseline: f64,
    /// The explained prediction (row 0): `baseline` plus every contribution.
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Per request field, largest effect first.
    pub contributions: Vec<Contribution>,
    /// For each further row (car-price's forecasts): how it differs from row 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forecast: Vec<ForecastChange>,
    /// The same in words.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Contribution {
    /// The request field, as the kiosk names it.
    pub field: String,
    /// Its value, as the request gave it (or its default): a number, string or boolean.
    pub value: Value,
    /// How much it moves the prediction from the baseline, in output units.
    pub contribution: f64,
    /// The model columns behind the field and their shares (one-hot columns of a category).
    pub columns: Map<String, Value>,
}

/// A further row (a forecast) against row 0, split exactly and symmetrically (the Shapley
/// values of two players) into what the changed inputs do and what the output scale does.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ForecastChange {
    /// The model row (1 is the first forecast).
    pub row: usize,
    /// The scale's input for the row (car-price: years ahead).
    pub scale_input: f64,
    /// The row's predicted value.
    pub value: f64,
    /// `value` minus row 0's value: `from_inputs + from_scale`.
    pub change: f64,
    /// The share of the change due to the inputs that differ from row 0 (car-price: mileage).
    pub from_inputs: f64,
    /// The share due to the output scale (car-price: age).
    pub from_scale: f64,
    /// The fields whose values differ from row 0, with their values in this row.
    #[schema(value_type = Object)]
    pub changed: Map<String, Value>,
}

impl Explainer {
    pub fn new(ensemble: Ensemble, vocabulary: Vocabulary) -> Self {
        let mut fields: Vec<FieldColumns> = Vec::new();
        for (index, column) in ensemble.columns.iter().enumerate() {
            match fields.iter_mut().find(|field| field.name == column.field) {
                Some(field) => field.columns.push(index),
                None => fields.push(FieldColumns { name: column.field.clone(), columns: vec![index] }),
            }
        }
        Self { ensemble, fields, vocabulary }
    }

    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }

    /// Checks that the trees compute the model: for each row of the given inputs, the
    /// ensemble (times its output scale) must match the model's output within `rtol`.
    pub fn check_against(&self, inputs: &[Tensor], outputs: &[Tensor], rtol: f64) -> Result<(), ExplainError> {
        let rows = self.rows(inputs, outputs)?;
        for (index, row) in rows.iter().enumerate() {
            let predicted = self.ensemble.predict(&row.x) * row.scale;
            if (predicted - row.output).abs() > rtol * row.output.abs().max(1e-12) {
                return Err(ExplainError::Mismatch {
                    reason: format!(
                        "row {index}: the trees give {predicted} but the model {} (relative tolerance {rtol})",
                        row.output
                    ),
                });
            }
        }
        Ok(())
    }

    /// Explains one request's prediction: row 0 by its SHAP values, each further row by its
    /// change from row 0. `request` is the client's JSON object, for the values as sent.
    pub fn explain(&self, request: &Value, inputs: &[Tensor], outputs: &[Tensor]) -> Result<Explanation, ExplainError> {
        let rows = self.rows(inputs, outputs)?;
        let first = &rows[0];
        let mut scratch = Scratch::for_ensemble(&self.ensemble);
        let mut phi = vec![0.0; self.ensemble.columns.len()];
        self.ensemble.shap_into(&first.x, &mut phi, &mut scratch);
        let scale = first.scale;
        let mut contributions: Vec<Contribution> = self
            .fields
            .iter()
            .map(|field| Contribution {
                field: field.name.clone(),
                value: self.field_value(request, field, &first.x),
                contribution: field.columns.iter().map(|&c| phi[c]).sum::<f64>() * scale,
                columns: field
                    .columns
                    .iter()
                    .map(|&c| (self.ensemble.columns[c].name.clone(), Value::from(phi[c] * scale)))
                    .collect(),
            })
            .collect();
        contributions.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        let baseline = self.ensemble.expected_value * scale;
        let value = baseline + contributions.iter().map(|c| c.contribution).sum::<f64>();

        let raw_first = self.ensemble.predict(&first.x);
        let forecast = rows[1..]
            .iter()
            .enumerate()
            .map(|(offset, row)| {
                let raw = self.ensemble.predict(&row.x);
                let row_value = raw * row.scale;
                ForecastChange {
                    row: offset + 1,
                    scale_input: row.scale_input,
                    value: row_value,
                    change: row_value - raw_first * scale,
                    from_inputs: 0.5 * (raw - raw_first) * (scale + row.scale),
                    from_scale: 0.5 * (row.scale - scale) * (raw + raw_first),
                    changed: self.changed_fields(&first.x, &row.x),
                }
            })
            .collect();
        let mut explanation = Explanation {
            method: "tree_shap_path_dependent",
            baseline,
            value,
            unit: self.vocabulary.output_unit.clone(),
            contributions,
            forecast,
            text: String::new(),
        };
        explanation.text = words::describe(&explanation, &self.vocabulary, self.ensemble.output_scale.as_ref());
        Ok(explanation)
    }

    /// The field's value as the request sent it; for a field the request left out (a
    /// default), as the model saw it.
    fn field_value(&self, request: &Value, field: &FieldColumns, x: &[f64]) -> Value {
        if let Some(value) = request.get(&field.name) {
            return value.clone();
        }
        match self.vocabulary.field_defaults.iter().find(|(name, _)| *name == field.name) {
            Some((_, default)) => default.clone(),
            None => self.model_value(field, x),
        }
    }

    fn model_value(&self, field: &FieldColumns, x: &[f64]) -> Value {
        match field.columns.as_slice() {
            [single] if self.ensemble.columns[*single].value.is_none() => Value::from(x[*single]),
            columns => columns
                .iter()
                .find(|&&c| x[c] == 1.0)
                .and_then(|&c| self.ensemble.columns[c].value.clone())
                .map_or(Value::Null, Value::from),
        }
    }

    fn changed_fields(&self, first: &[f64], row: &[f64]) -> Map<String, Value> {
        self.fields
            .iter()
            .filter(|field| field.columns.iter().any(|&c| first[c] != row[c]))
            .map(|field| (field.name.clone(), self.model_value(field, row)))
            .collect()
    }

    /// Each model row: its columns, its output scale and the model's output.
    fn rows(&self, inputs: &[Tensor], outputs: &[Tensor]) -> Result<Vec<Row>, ExplainError> {
        let bad = |reason: String| ExplainError::Inputs { reason };
        let columns = self.ensemble.columns.len();
        let features = floats(inputs, &self.ensemble.input).map_err(bad)?;
        if features.0.len() != 2 || features.0[1] != columns || features.0[0] == 0 {
            return Err(bad(format!(
                "input `{}` has shape {:?}, not [rows, {columns}]",
                self.ensemble.input, features.0
            )));
        }
        let count = features.0[0];
        let output = floats(outputs, &self.ensemble.output).map_err(bad)?;
        if output.1.len() != count {
            return Err(bad(format!(
                "output `{}` has {} values for {count} rows",
                self.ensemble.output,
                output.1.len()
            )));
        }
        let scale_inputs = match &self.ensemble.output_scale {
            None => vec![0.0; count],
            Some(scale) => {
                let (_, values) = floats(inputs, &scale.input).map_err(bad)?;
                if values.len() != count {
                    return Err(bad(format!("input `{}` has {} values for {count} rows", scale.input, values.len())));
                }
                values
            }
        };
        let rate = self.ensemble.output_scale.as_ref().map_or(0.0, |scale| scale.rate);
        let mut rows = Vec::with_capacity(count);
        for (index, x) in features.1.chunks_exact(columns).enumerate() {
            if x.iter().any(|v| !v.is_finite()) || !scale_inputs[index].is_finite() {
                return Err(bad(format!("row {index} holds a missing or non-finite value")));
            }
            rows.push(Row {
                x: x.to_vec(),
                scale: (rate * scale_inputs[index]).exp(),
                scale_input: scale_inputs[index],
                output: output.1[index],
            });
        }
        Ok(rows)
    }
}

struct Row {
    x: Vec<f64>,
    scale: f64,
    scale_input: f64,
    output: f64,
}

/// The named tensor's shape and values as f64.
fn floats(tensors: &[Tensor], name: &str) -> Result<(Vec<usize>, Vec<f64>), String> {
    let tensor = tensors.iter().find(|t| t.name == name).ok_or_else(|| format!("there is no tensor `{name}`"))?;
    let values = match &tensor.data {
        TensorData::Float32(values) => values.iter().map(|&v| f64::from(v)).collect(),
        TensorData::Float64(values) => values.clone(),
        _ => return Err(format!("tensor `{name}` is not floating point")),
    };
    Ok((tensor.shape.clone(), values))
}

#[cfg(test)]
mod tests {
    use super::trees::tests::{parse, small};
    use super::*;
    use serde_json::json;

    fn explainer(value: Value) -> Explainer {
        let vocabulary = Vocabulary {
            field_units: vec![("a".to_owned(), "mi".to_owned())],
            output_unit: Some("USD".to_owned()),
            field_defaults: vec![("b".to_owned(), json!("x"))],
        };
        Explainer::new(parse(&value).unwrap(), vocabulary)
    }

    #[test]
    fn fields_sum_their_columns_and_everything_adds_up() {
        let explainer = explainer(small());
        let x = [3.0, 0.0, 1.0];
        let inputs = [Tensor::float32("features", vec![1, 3], vec![3.0, 0.0, 1.0])];
        let predicted = explainer.ensemble().predict(&x);
        let outputs = [Tensor::float32("price", vec![1, 1], vec![predicted as f32])];
        explainer.check_against(&inputs, &outputs, 1e-6).unwrap();
        let explanation = explainer.explain(&json!({"a": 3000, "b": "y"}), &inputs, &outputs).unwrap();
        let defaulted = explainer.explain(&json!({"a": 3000}), &inputs, &outputs).unwrap();
        assert_eq!(defaulted.contributions.iter().find(|c| c.field == "b").unwrap().value, json!("x"));
        let total: f64 = explanation.contributions.iter().map(|c| c.contribution).sum();
        assert!((explanation.baseline + total - predicted).abs() < 1e-9);
        assert_eq!(explanation.contributions.len(), 2);
        let b = explanation.contributions.iter().find(|c| c.field == "b").unwrap();
        assert_eq!(b.value, json!("y"));
        let columns: f64 = b.columns.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((columns - b.contribution).abs() < 1e-12);
        assert!(explanation.text.starts_with("Valued at $105."), "{}", explanation.text);
        assert!(explanation.text.contains("a 3,000 mi"), "{}", explanation.text);
    }

    #[test]
    fn a_model_the_trees_do_not_compute_is_refused() {
        let explainer = explainer(small());
        let inputs = [Tensor::float32("features", vec![1, 3], vec![3.0, 0.0, 1.0])];
        let outputs = [Tensor::float32("price", vec![1, 1], vec![200.0])];
        let error = explainer.check_against(&inputs, &outputs, 1e-4).unwrap_err();
        assert!(error.to_string().contains("the trees give 105"), "{error}");
        let nan = [Tensor::float32("features", vec![1, 3], vec![f32::NAN, 0.0, 1.0])];
        assert!(explainer.explain(&Value::Null, &nan, &outputs).is_err());
        let narrow = [Tensor::float32("features", vec![1, 2], vec![1.0, 0.0])];
        assert!(explainer.explain(&Value::Null, &narrow, &outputs).is_err());
    }

    #[test]
    fn a_forecast_row_splits_its_change_between_inputs_and_scale() {
        let mut value = small();
        value["output_scale"] = json!({"input": "years", "rate": -0.1, "label": "age", "unit": "years"});
        let explainer = explainer(value);
        let inputs = [
            Tensor::float32("features", vec![2, 3], vec![3.0, 0.0, 1.0, 12.0, 0.0, 1.0]),
            Tensor::float32("years", vec![2, 1], vec![0.0, 2.0]),
        ];
        let today = explainer.ensemble().predict(&[3.0, 0.0, 1.0]);
        let later = explainer.ensemble().predict(&[12.0, 0.0, 1.0]) * (-0.2f64).exp();
        let outputs = [Tensor::float32("price", vec![2, 1], vec![today as f32, later as f32])];
        explainer.check_against(&inputs, &outputs, 1e-6).unwrap();
        let explanation = explainer.explain(&json!({"a": 3}), &inputs, &outputs).unwrap();
        let step = &explanation.forecast[0];
        assert!((step.value - later).abs() < 1e-9);
        assert!((step.from_inputs + step.from_scale - (later - today)).abs() < 1e-9);
        assert!(step.from_scale < 0.0 && step.from_inputs < 0.0, "{step:?}");
        assert_eq!(step.changed, json!({"a": 12.0}).as_object().unwrap().clone());
        assert!(explanation.text.contains("2 years"), "{}", explanation.text);
    }
}
