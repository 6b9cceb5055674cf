//! One car-price preprocess call in a fresh instance: the cost every prediction pays for
//! its plugin. Criterion reports the mean and median; the tail (p50/p99/p99.9) is
//! measured after it over 100,000 calls, since p99 is what a kiosk feels.
//!
//!     cargo bench -p forecourt --bench plugin_host

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use forecourt::plugin::{PluginConfig, PluginHost};
use forecourt_testkit::example_plugin;

const REQUEST: &str = r#"{"make": "chevrolet", "body": "sedan", "mileage": 20105, "cylinders": 6,
    "doors": 4, "cruise": true, "sound": false, "leather": true}"#;

fn plugin() -> forecourt::plugin::Plugin {
    let host = PluginHost::new(&PluginConfig::default(), None).expect("plugin host");
    host.load(&example_plugin("car_price")).expect("car-price plugin")
}

fn fresh_instance_preprocess(c: &mut Criterion) {
    let plugin = plugin();
    c.bench_function("car_price_preprocess_fresh_instance", |b| {
        b.iter(|| black_box(plugin.preprocess(black_box(REQUEST)).expect("preprocess")))
    });
    c.bench_function("car_price_preprocess_and_postprocess_one_instance", |b| {
        let prices =
            forecourt::tensor::Tensor::new("price", vec![1, 1], forecourt::tensor::TensorData::Float32(vec![21000.0]))
                .expect("tensor");
        b.iter(|| {
            let mut instance = plugin.instantiate().expect("instance");
            black_box(instance.preprocess(REQUEST).expect("preprocess"));
            black_box(instance.postprocess(REQUEST, std::slice::from_ref(&prices)).expect("postprocess"))
        })
    });
}

/// Latency percentiles of `calls` fresh-instance calls.
fn report_percentiles(calls: usize) {
    let plugin = plugin();
    for _ in 0..1_000 {
        plugin.preprocess(REQUEST).expect("warm-up");
    }
    let mut samples: Vec<Duration> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            black_box(plugin.preprocess(REQUEST).expect("preprocess"));
            start.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "car_price_preprocess_fresh_instance over {calls} calls: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

criterion_group!(benches, fresh_instance_preprocess);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs benches once as tests; skip the long tail measurement then.
    if std::env::args().any(|arg| arg == "--bench") {
        report_percentiles(100_000);
    }
}
