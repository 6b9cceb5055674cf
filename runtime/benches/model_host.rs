//! ONNX Runtime runs of the car-price model (300 trees, 17 features, plus the
//! depreciation factor) at 1, 64 and 1024 rows per run, one intra-op thread: what a
//! single request and a batch request cost. Criterion's throughput line gives the
//! per-row cost.
//!
//!     cargo bench -p forecourt --bench model_host

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use forecourt::model::{Model, OnnxRuntime, OnnxRuntimeConfig};
use forecourt::tensor::{Tensor, TensorData};
use forecourt_testkit::{ensure_onnxruntime, model_file};

/// Rows of a realistic car (a 2005 Chevrolet sedan, 6 cylinders, 20k miles) with varying mileage.
fn batch(rows: usize) -> Vec<Tensor> {
    let features = (0..rows)
        .flat_map(|row| {
            let mut features = vec![20_000.0 + row as f32 * 100.0, 6.0, 4.0, 1.0, 0.0, 1.0];
            features.extend([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
            features
        })
        .collect();
    vec![
        Tensor::new("features", vec![rows, 17], TensorData::Float32(features)).expect("features"),
        Tensor::new("years_ahead", vec![rows, 1], TensorData::Float32(vec![0.0; rows])).expect("years"),
    ]
}

fn car_price_runs(c: &mut Criterion) {
    ensure_onnxruntime();
    let runtime = OnnxRuntime::init(&OnnxRuntimeConfig::default()).expect("ONNX Runtime");
    let model = Model::load(&runtime, &model_file("car-price", "model.onnx"), 1).expect("car-price model");
    let mut group = c.benchmark_group("car_price_onnx_run");
    for rows in [1, 64, 1024] {
        let inputs = batch(rows);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(rows), &inputs, |b, inputs| {
            b.iter(|| black_box(model.run(black_box(inputs)).expect("run")))
        });
    }
    group.finish();
}

criterion_group!(benches, car_price_runs);
criterion_main!(benches);
