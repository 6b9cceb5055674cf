//! What model quality costs a car-price prediction, beside the prediction itself (one
//! request through the loaded bundle: fresh plugin instance, ONNX Runtime run, as
//! `POST /v1/predict/car-price` runs it on a worker):
//! - explaining it (300 trees of depth 3, 17 columns): exact TreeSHAP of one row alone, the
//!   whole explanation (SHAP, per-field sums, the words), and the prediction with `explain`;
//! - the drift window: counting one request's features into a full window of 1000 rows
//!   alone, and the prediction with the window kept against without (`[quality] drift`).
//!
//!     cargo bench -p forecourt --bench quality

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use forecourt::bundle::{Bundle, BundleLoader};
use forecourt::explain::Scratch;
use forecourt::model::{OnnxRuntime, OnnxRuntimeConfig};
use forecourt::plugin::{PluginConfig, PluginHost};
use forecourt_testkit::{ensure_onnxruntime, example_bundles};

const REQUEST: &str = r#"{"make": "chevrolet", "body": "sedan", "mileage": 20105, "cylinders": 6,
    "doors": 4, "cruise": true, "sound": false, "leather": true}"#;

/// The appliance's default window: `[quality] drift_window`.
const DRIFT_WINDOW: usize = 1000;

/// car-price as the appliance loads it; `drift_window` 0 keeps no window (drift off).
fn car_price(drift_window: usize) -> Bundle {
    ensure_onnxruntime();
    let runtime = OnnxRuntime::init(&OnnxRuntimeConfig::default()).expect("ONNX Runtime");
    let host = PluginHost::new(&PluginConfig::default(), None).expect("plugin host");
    let versions = example_bundles().join("car-price");
    let dir = std::fs::read_dir(&versions).expect("car-price bundle").next().expect("a version").expect("entry").path();
    BundleLoader::new(Arc::new(host), runtime, 1)
        .with_drift_window(drift_window)
        .load(&dir)
        .expect("car-price bundle loads")
}

fn explain(c: &mut Criterion) {
    let bundle = car_price(0);
    let explainer = bundle.explainer().expect("car-price carries trees.json");
    let tensors = bundle.plugin().preprocess(REQUEST).expect("preprocess");
    let outputs = bundle.model().run(&tensors).expect("run");
    let request: serde_json::Value = serde_json::from_str(REQUEST).expect("JSON");
    let ensemble = explainer.ensemble();
    let row: Vec<f64> = match &tensors[0].data {
        forecourt::tensor::TensorData::Float32(values) => values.iter().map(|&v| f64::from(v)).collect(),
        other => panic!("features are f32, not {}", other.element_type()),
    };

    let mut scratch = Scratch::for_ensemble(ensemble);
    let mut phi = vec![0.0; row.len()];
    c.bench_function("car_price_treeshap_one_row", |b| {
        b.iter(|| ensemble.shap_into(black_box(&row), black_box(&mut phi), &mut scratch))
    });
    c.bench_function("car_price_explanation_one_row", |b| {
        b.iter(|| black_box(explainer.explain(black_box(&request), &tensors, &outputs).expect("explain")))
    });
    let mut group = c.benchmark_group("car_price_predict");
    group.bench_function("plain", |b| b.iter(|| black_box(bundle.infer(black_box(REQUEST)).expect("infer"))));
    group.bench_function("explained", |b| {
        b.iter(|| black_box(bundle.infer_explained(black_box(REQUEST)).expect("infer")))
    });
    group.finish();
}

fn drift(c: &mut Criterion) {
    let plain = car_price(0);
    let watched = car_price(DRIFT_WINDOW);
    let window = watched.drift().expect("car-price carries profile.json");
    let tensors = watched.plugin().preprocess(REQUEST).expect("preprocess");
    // Full, as under steady traffic: each request then also drops the oldest row.
    for _ in 0..DRIFT_WINDOW {
        window.observe(&tensors);
    }
    assert_eq!(window.counts().rows, DRIFT_WINDOW);
    c.bench_function("car_price_drift_observe_one_row", |b| b.iter(|| window.observe(black_box(&tensors))));
    let mut group = c.benchmark_group("car_price_predict_drift");
    group.bench_function("off", |b| b.iter(|| black_box(plain.infer(black_box(REQUEST)).expect("infer"))));
    group.bench_function("on", |b| b.iter(|| black_box(watched.infer(black_box(REQUEST)).expect("infer"))));
    group.finish();
}

criterion_group!(benches, explain, drift);
criterion_main!(benches);
