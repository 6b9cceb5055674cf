//! iris: four flower measurements to the iris classifier's input, and its label and
//! probabilities back to the class name with a probability per class.
//!
//! The model (plugins/iris/model/) takes `features` [N, 4] and returns `label` [N]
//! (class index) and `probabilities` [N, 3].

use forecourt_plugin_sdk::prelude::*;
use serde_json::{Map, json};

const SEPAL_LENGTH: Number = Number::new("sepal_length", "Sepal length").unit("cm").range(0.0, 30.0);
const SEPAL_WIDTH: Number = Number::new("sepal_width", "Sepal width").unit("cm").range(0.0, 30.0);
const PETAL_LENGTH: Number = Number::new("petal_length", "Petal length").unit("cm").range(0.0, 30.0);
const PETAL_WIDTH: Number = Number::new("petal_width", "Petal width").unit("cm").range(0.0, 30.0);

const CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];

struct Iris;

impl Plugin for Iris {
    const INFO: Info = Info::new("iris", env!("CARGO_PKG_VERSION"), "Iris species from sepal and petal measurements");
    const FIELDS: &'static [&'static dyn Field] = &[&SEPAL_LENGTH, &SEPAL_WIDTH, &PETAL_LENGTH, &PETAL_WIDTH];
    const OUTPUTS: &'static [Output] = &[
        Output::new("class", "The most likely species: setosa, versicolor or virginica"),
        Output::new("probabilities", "Probability of each species"),
    ];

    fn preprocess(request: &Request) -> Result<Vec<Tensor>, InputError> {
        let mut features = Features::new(4);
        for field in [&SEPAL_LENGTH, &SEPAL_WIDTH, &PETAL_LENGTH, &PETAL_WIDTH] {
            features.number(request.get(field)?);
        }
        Ok(vec![features.into_tensor("features")])
    }

    fn postprocess(_request: &Request, outputs: &Outputs) -> Result<Option<String>, OutputError> {
        let label = outputs.int64("label")?;
        let probabilities = outputs.float32("probabilities")?;
        let class = label
            .first()
            .and_then(|&index| CLASSES.get(usize::try_from(index).ok()?))
            .ok_or_else(|| OutputError { message: format!("the model returned an unknown class {label:?}") })?;
        if probabilities.len() != CLASSES.len() {
            return Err(OutputError { message: format!("expected 3 probabilities, got {}", probabilities.len()) });
        }
        let by_class: Map<String, serde_json::Value> =
            CLASSES.iter().zip(probabilities).map(|(name, p)| ((*name).to_owned(), json!(p))).collect();
        Ok(Some(json!({ "class": class, "probabilities": by_class }).to_string()))
    }
}

export_plugin!(Iris);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_become_one_row_in_training_order() {
        let request = Request::parse(
            r#"{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}"#,
            Iris::FIELDS,
        )
        .unwrap();
        let tensors = Iris::preprocess(&request).unwrap();
        assert_eq!(tensors, vec![Tensor::float32("features", &[1, 4], vec![5.1, 3.5, 1.4, 0.2])]);
    }

    #[test]
    fn postprocess_names_the_class() {
        let request = Request::parse(
            r#"{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}"#,
            Iris::FIELDS,
        )
        .unwrap();
        let outputs = Outputs::new(vec![
            Tensor::int64("label", &[1], vec![2]),
            Tensor::float32("probabilities", &[1, 3], vec![0.0, 0.25, 0.75]),
        ]);
        let response: serde_json::Value =
            serde_json::from_str(&Iris::postprocess(&request, &outputs).unwrap().unwrap()).unwrap();
        assert_eq!(
            response,
            json!({"class": "virginica", "probabilities": {"setosa": 0.0, "versicolor": 0.25, "virginica": 0.75}})
        );
    }
}
