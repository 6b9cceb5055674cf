//! /metrics after real traffic: valid Prometheus text (promtool), and the series the
//! dashboards read.

use forecourt_testkit::{Server, all_bundles, assert_close, golden, promtool_check};
use serde_json::json;

/// One sample line: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
            let value = value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inside = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                    let labels = inside
                        .split("\",")
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) =
                                pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                            (key.to_owned(), value.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), Vec::new()),
            };
            Sample { name, labels, value }
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
#[track_caller]
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.iter().any(|(key, value)| key == k && value == v)))
        .collect();
    assert_eq!(found.len(), 1, "expected one {name}{labels:?}, found {found:?}");
    found[0].value
}

#[test]
fn metrics_after_traffic_pass_promtool_and_carry_the_documented_series() {
    let server = Server::start(&all_bundles());
    let mut prices = Vec::new();
    for row in golden("car-price").iter().take(3) {
        let reply = server.post_json("/v1/predict/car-price", &row.request);
        assert_eq!(reply.status, 200, "{reply:?}");
        prices.push(reply.json["outputs"]["price"].as_f64().unwrap());
    }
    let cars: Vec<_> = golden("car-price").iter().skip(3).take(2).map(|row| row.request.clone()).collect();
    let batch = server.post_json("/v1/predict/car-price/batch", &json!({"instances": cars}));
    assert_eq!(batch.status, 200, "{batch:?}");
    prices
        .extend(batch.json["predictions"].as_array().unwrap().iter().map(|p| p["outputs"]["price"].as_f64().unwrap()));
    let refused = server.post_json("/v1/predict/car-price", &json!({"make": "ford"}));
    assert_eq!(refused.status, 422);
    assert_eq!(server.post_json("/v1/predict/iris", &golden("iris")[0].request).status, 200);
    assert_eq!(server.post_json("/v1/predict/hostile", &json!({"attack": "panic"})).status, 500);

    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{:?}", reply.headers);
    let text = reply.text;

    promtool_check(&text);

    let samples = parse(&text);
    assert!(text.contains("# TYPE forecourt_requests_total counter"), "{text}");
    let requests = |status: &str| {
        value(
            &samples,
            "forecourt_requests_total",
            &[("bundle", "car-price"), ("version", "1.0.0"), ("status", status)],
        )
    };
    assert_eq!(requests("ok"), 4.0, "three single requests and one batch");
    assert_eq!(requests("missing_field"), 1.0, "the car without mileage");
    let hostile = &[("bundle", "hostile"), ("version", "0.1.0"), ("status", "plugin_failed")];
    assert_eq!(value(&samples, "forecourt_requests_total", hostile), 1.0);

    let car = &[("bundle", "car-price"), ("output", "price")];
    assert_eq!(value(&samples, "forecourt_predicted_value_count", car), prices.len() as f64);
    let sum: f64 = prices.iter().sum();
    // The answers are rounded to cents; the metric sees the model's values.
    assert_close(value(&samples, "forecourt_predicted_value_sum", car), sum, 1e-6, "forecourt_predicted_value_sum");

    // A histogram (Prometheus' convention for a distribution), every price within its buckets.
    assert!(text.contains("# TYPE forecourt_predicted_value histogram"), "{text}");
    let all = value(&samples, "forecourt_predicted_value_bucket", &[car[0], car[1], ("le", "+Inf")]);
    assert_eq!(all, prices.len() as f64);
    let below_1e7 = value(&samples, "forecourt_predicted_value_bucket", &[car[0], car[1], ("le", "10000000")]);
    assert_eq!(below_1e7, prices.len() as f64, "car prices fall within the buckets");
    // Idle now: the queue gauge says what /health/detailed says, and the refusal counter
    // exists before the first refusal.
    assert_eq!(value(&samples, "forecourt_inference_queue_depth", &[]), 0.0);
    assert_eq!(server.get("/health/detailed").json["inference_queue"]["depth"], 0, "the same fact at /health/detailed");
    assert_eq!(value(&samples, "forecourt_rejected_requests_total", &[]), 0.0);

    assert!(value(&samples, "process_resident_memory_bytes", &[]) > 1e6);
    // A counter of seconds with their fraction (the exporter's own counters are whole numbers).
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
    assert!(value(&samples, "process_cpu_seconds_total", &[]) > 0.0, "{text}");
    let build = samples.iter().find(|s| s.name == "forecourt_build_info").expect("forecourt_build_info");
    assert_eq!(build.value, 1.0);
    assert!(build.labels.iter().any(|(k, v)| k == "version" && !v.is_empty()), "{build:?}");
}
