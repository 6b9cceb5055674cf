//! Request ids: every response carries one in x-request-id, a prediction's is its id, and
//! with JSON logs every line of a request carries it.

use std::time::Duration;

use forecourt_testkit::{Server, all_bundles};
use serde_json::{Value, json};

fn is_uuid_v7(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
        && id.as_bytes()[14] == b'7'
}

/// Whether any field named `request_id`, at any depth, equals `id`.
fn carries(value: &Value, id: &str) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, v)| (key == "request_id" && v == id) || carries(v, id)),
        Value::Array(items) => items.iter().any(|v| carries(v, id)),
        _ => false,
    }
}

#[test]
fn every_response_has_a_request_id_and_a_predictions_is_its_id() {
    let server = Server::start(&all_bundles());
    let car = json!({"make": "saab", "body": "sedan", "mileage": 1000, "cylinders": 4, "doors": 4});
    let replies = [
        server.post_json("/v1/predict/car-price", &car),
        server.post_json("/v1/predict/car-price", &car),
        server.post_json("/v1/predict/car-price", &json!({"make": "saab"})),
        server.get("/health"),
        server.get("/metrics"),
        server.get("/v2/models/nope"),
        server.get("/nowhere"),
    ];
    let ids: Vec<&str> = replies.iter().map(|reply| reply.request_id()).collect();
    for id in &ids {
        assert!(is_uuid_v7(id), "{id} is not a UUIDv7");
    }
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    for reply in &replies[..2] {
        assert_eq!(reply.json["prediction_id"].as_str(), Some(reply.request_id()));
    }
    assert_eq!(replies[2].json["request_id"].as_str(), Some(replies[2].request_id()));

    // The default (human-readable) log, written to a file as to the journal: each request's
    // access line with its id, and no terminal colour codes.
    let id = replies[0].request_id();
    let access = server
        .wait_for_log_line(Duration::from_secs(10), |line| line.contains(id) && line.contains("forecourt::access"))
        .unwrap_or_else(|| panic!("no access log line for {id}:\n{}", server.logs()));
    assert!(access.contains("status=200"), "{access}");
    assert!(!server.logs().contains('\u{1b}'), "colour codes in a log that is no terminal:\n{}", server.logs());
}

#[test]
fn json_logs_carry_the_request_id_of_a_failing_request() {
    let server = Server::builder(&all_bundles()).env("FORECOURT_LOGGING__FORMAT", "json").start();
    let reply = server.post_json("/v1/predict/hostile", &json!({"attack": "panic"}));
    assert_eq!(reply.status, 500, "{reply:?}");
    let id = reply.request_id().to_owned();
    assert_eq!(reply.json["request_id"].as_str(), Some(id.as_str()));

    let line = server
        .wait_for_log_line(Duration::from_secs(10), |line| line.contains(&id))
        .unwrap_or_else(|| panic!("no log line carries request id {id}"));
    let entry: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line}"));
    assert!(carries(&entry, &id), "{entry}");
    assert_eq!(entry["level"], "WARN", "{entry}");
    assert!(line.contains("panicked on purpose"), "the plugin's failure is in the log: {line}");
    for line in server.logs().lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()), "not a JSON log line: {line}");
    }
}

#[test]
fn a_clients_request_id_is_kept_beside_ours_and_each_request_has_one_access_log_line() {
    let server = Server::builder(&all_bundles()).env("FORECOURT_LOGGING__FORMAT", "json").start();
    let car = json!({"make": "saab", "body": "sedan", "mileage": 1000, "cylinders": 4, "doors": 4}).to_string();
    let reply = server.request_with_headers(
        "POST",
        "/v1/predict/car-price",
        &[("x-request-id", "kiosk-7:abc-123")],
        Some(car.as_bytes()),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let id = reply.request_id().to_owned();
    assert!(is_uuid_v7(&id), "ours stays the id (and the prediction's): {id}");
    assert_eq!(reply.json["prediction_id"].as_str(), Some(id.as_str()));
    assert_eq!(reply.header("x-client-request-id"), Some("kiosk-7:abc-123"), "the client's is returned beside it");
    let stored = server.get(&format!("/v1/predictions/{id}")).json;
    assert_eq!(stored["client_request_id"], "kiosk-7:abc-123", "and kept in the record: {stored}");

    let access = server
        .wait_for_log_line(Duration::from_secs(10), |line| line.contains(&id) && line.contains("forecourt::access"))
        .unwrap_or_else(|| panic!("no access log line for {id}:\n{}", server.logs()));
    let entry: Value = serde_json::from_str(&access).unwrap();
    let fields = &entry["fields"];
    assert_eq!(entry["level"], "INFO", "{entry}");
    assert_eq!(fields["route"], "/v1/predict/{bundle}", "{entry}");
    assert_eq!(fields["status"], 200, "{entry}");
    assert_eq!((fields["bundle"].as_str(), fields["version"].as_str()), (Some("car-price"), Some("1.0.0")), "{entry}");
    assert!(fields["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{entry}");
    assert_eq!(entry["span"]["client_request_id"], "kiosk-7:abc-123", "{entry}");
    assert!(!access.contains("saab"), "no inputs in the access log: {access}");

    // A refusal has its line too; an id with spaces or over 128 characters is ignored.
    let long = "x".repeat(129);
    for bad in ["has spaces", long.as_str()] {
        let refused = server.request_with_headers("GET", "/v1/predictions/nope", &[("x-request-id", bad)], None);
        assert_eq!(refused.status, 422, "{refused:?}");
        assert!(refused.headers.get("x-client-request-id").is_none(), "{refused:?}");
        let id = refused.request_id().to_owned();
        let line = server
            .wait_for_log_line(Duration::from_secs(10), |line| line.contains(&id) && line.contains("forecourt::access"))
            .expect("a refused request is logged too");
        assert!(line.contains("\"status\":422"), "{line}");
    }
    // ONNX Runtime's own INFO lines stay out at the default level.
    assert!(
        !server.logs().lines().any(|line| line.contains("\"target\":\"ort") && line.contains("\"INFO\"")),
        "{}",
        server.logs()
    );
}
