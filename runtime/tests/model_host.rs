//! The model host on real ONNX Runtime and the real example models.
//!
//! Parity: for every held-out row of each model's golden.jsonl, the real plugin (wasm)
//! plus ONNX Runtime in Rust reproduce the original (non-ONNX) model's prediction within
//! 1e-3 relative, row by row and as one stacked batch. This is the proof that the
//! plugins' feature engineering matches training.

use std::path::Path;
use std::sync::LazyLock;

use forecourt::model::{ElementType, Model, ModelError, OnnxRuntime, OnnxRuntimeConfig, OutputForm};
use forecourt::plugin::{PluginConfig, PluginHost};
use forecourt::tensor::{Tensor, TensorData, split, stack};
use forecourt_testkit::{Golden, ensure_onnxruntime, example_plugin, golden, model_file, repo_root, temp_dir};
use serde_json::Value;

const RELATIVE_TOLERANCE: f64 = 1e-3;

static RUNTIME: LazyLock<OnnxRuntime> = LazyLock::new(|| {
    ensure_onnxruntime();
    OnnxRuntime::init(&OnnxRuntimeConfig::default()).expect("ONNX Runtime loads")
});
static CACHE: LazyLock<tempfile::TempDir> = LazyLock::new(temp_dir);
static PLUGINS: LazyLock<PluginHost> =
    LazyLock::new(|| PluginHost::new(&PluginConfig::default(), Some(CACHE.path().to_owned())).unwrap());

fn model(path: &Path) -> Model {
    Model::load(&RUNTIME, path, 2).unwrap()
}

/// Every number in a (possibly nested) JSON array, in row-major order.
fn flatten(value: &Value, into: &mut Vec<f64>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, into)),
        Value::Number(number) => into.push(number.as_f64().unwrap()),
        other => panic!("unexpected expected value {other}"),
    }
}

fn as_f64(tensor: &Tensor) -> Vec<f64> {
    match &tensor.data {
        TensorData::Float32(values) => values.iter().map(|&v| f64::from(v)).collect(),
        TensorData::Float64(values) => values.clone(),
        TensorData::Int64(values) => values.iter().map(|&v| v as f64).collect(),
        TensorData::Text(_) => panic!("text output {}", tensor.name),
    }
}

fn assert_close(context: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{context}: {actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        let tolerance = RELATIVE_TOLERANCE * e.abs().max(f64::MIN_POSITIVE);
        assert!((a - e).abs() <= tolerance, "{context}: got {a}, expected {e} (within {RELATIVE_TOLERANCE} relative)");
    }
}

fn assert_matches_golden(context: &str, outputs: &[Tensor], golden: &Golden) {
    for (name, expected) in &golden.expected {
        let output = outputs.iter().find(|tensor| &tensor.name == name).unwrap_or_else(|| panic!("no output {name}"));
        let mut expected_values = Vec::new();
        flatten(expected, &mut expected_values);
        let actual = as_f64(output);
        if let TensorData::Int64(_) = output.data {
            assert_eq!(actual, expected_values, "{context}: output {name} (class labels must be equal)");
        } else {
            assert_close(&format!("{context}: output {name}"), &actual, &expected_values);
        }
    }
}

fn check_parity(plugin_crate: &str, plugin_folder: &str) {
    let plugin = PLUGINS.load(&example_plugin(plugin_crate)).unwrap();
    let model = model(&model_file(plugin_folder, "model.onnx"));
    let rows = golden(plugin_folder);
    assert!(rows.len() >= 30, "{plugin_folder} has {} golden rows", rows.len());

    let instances: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|row| plugin.preprocess(&row.request.to_string()).unwrap_or_else(|e| panic!("{}: {e}", row.request)))
        .collect();
    for (index, (row, tensors)) in rows.iter().zip(&instances).enumerate() {
        let outputs = model.run(tensors).unwrap();
        assert_matches_golden(&format!("{plugin_folder} row {index} {}", row.request), &outputs, row);
    }

    let (batch, counts) = stack(&instances).unwrap();
    let outputs = model.run(&batch).unwrap();
    for (index, (row, outputs)) in rows.iter().zip(split(&outputs, &counts).unwrap()).enumerate() {
        assert_matches_golden(&format!("{plugin_folder} batch row {index}"), &outputs, row);
    }
}

#[test]
fn car_price_matches_the_original_xgboost_model_including_forecasts() {
    check_parity("car_price", "car-price");
}

#[test]
fn housing_matches_the_original_gradient_boosting_model() {
    check_parity("housing", "housing");
}

#[test]
fn iris_matches_the_original_classifier_labels_and_probabilities() {
    check_parity("iris", "iris");
}

#[test]
fn inputs_and_outputs_are_introspected() {
    let car = model(&model_file("car-price", "model.onnx"));
    let inputs: Vec<_> = car.inputs().iter().map(|i| (i.name.as_str(), i.element_type, i.shape.clone())).collect();
    assert_eq!(
        inputs,
        [("features", ElementType::Float32, vec![-1, 17]), ("years_ahead", ElementType::Float32, vec![-1, 1])]
    );
    assert_eq!(car.outputs()[0].name, "price");
    assert_eq!(car.sha256().len(), 64);
    let iris = model(&model_file("iris", "model.onnx"));
    let outputs: Vec<_> = iris.outputs().iter().map(|o| (o.name.as_str(), o.element_type)).collect();
    assert_eq!(outputs, [("label", ElementType::Int64), ("probabilities", ElementType::Float32)]);
}

#[test]
fn a_plugin_whose_tensors_do_not_fit_the_model_is_named_at_check_time() {
    let iris = PLUGINS.load(&example_plugin("iris")).unwrap();
    let tensors =
        iris.preprocess(r#"{"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 0.2}"#).unwrap();
    let car = model(&model_file("car-price", "model.onnx"));
    match car.check_inputs(&tensors) {
        Err(ModelError::InputMismatch { reason }) => {
            assert_eq!(reason, "input `features` must have shape [-1, 17] (-1: any), not [1, 4]")
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(matches!(car.run(&tensors), Err(ModelError::InputMismatch { .. })));
}

#[test]
fn files_that_are_not_models_fail_to_load_with_the_path() {
    let dir = temp_dir();
    let bogus = dir.path().join("bogus.onnx");
    std::fs::write(&bogus, b"not a protobuf").unwrap();
    match Model::load(&RUNTIME, &bogus, 1) {
        Err(error @ ModelError::Load { .. }) => assert!(error.to_string().contains("bogus.onnx"), "{error}"),
        other => panic!("expected a load error, got {other:?}"),
    }
    assert!(matches!(Model::load(&RUNTIME, &dir.path().join("missing.onnx"), 1), Err(ModelError::Read { .. })));
}

mod converter_output_forms {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        repo_root().join("runtime/tests/fixtures/models").join(name)
    }

    fn expected() -> Value {
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
    }

    fn run_fixture(name: &str) -> Vec<Tensor> {
        let model = model(&fixture(&format!("{name}.onnx")));
        let mut inputs = Vec::new();
        flatten(&expected()["inputs"], &mut inputs);
        let features = inputs.iter().map(|&v| v as f32).collect();
        model.run(&[Tensor::new("features", vec![3, 4], TensorData::Float32(features)).unwrap()]).unwrap()
    }

    fn probabilities_of(name: &str) -> Vec<f64> {
        let mut values = Vec::new();
        flatten(&expected()[name]["probabilities"], &mut values);
        values
    }

    #[test]
    fn sequence_of_maps_with_integer_classes_becomes_a_rows_by_classes_tensor() {
        let model = model(&fixture("iris_zipmap.onnx"));
        assert_eq!(model.outputs()[1].form, OutputForm::ClassMaps);
        let outputs = run_fixture("iris_zipmap");
        assert_eq!(outputs[0].data, TensorData::Int64(vec![0, 1, 2]));
        assert_eq!(outputs[1].shape, vec![3, 3]);
        assert_close("zipmap probabilities", &as_f64(&outputs[1]), &probabilities_of("iris_zipmap"));
    }

    #[test]
    fn string_labels_and_string_keyed_maps_are_read() {
        let outputs = run_fixture("iris_string_labels");
        let labels = ["setosa", "versicolor", "virginica"].map(String::from).to_vec();
        assert_eq!(outputs[0].data, TensorData::Text(labels));
        assert_close("string-keyed probabilities", &as_f64(&outputs[1]), &probabilities_of("iris_string_labels"));
    }
}
