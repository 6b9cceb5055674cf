//! Every way a request can go wrong, against the real binary: each gets its status, the
//! api-shapes.md error body with the request id, and leaves the server serving.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use forecourt_testkit::{Reply, Server, all_bundles, car, with};
use serde_json::{Value, json};

/// Asserts the /v1 error shape: status, `error.code`, `error.field`, a message, and the
/// request id in the body equal to the x-request-id header.
#[track_caller]
fn assert_error(reply: &Reply, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(reply.status, status, "{reply:?}");
    let body = &reply.json;
    assert_eq!(body["error"]["code"].as_str(), Some(code), "{body}");
    assert_eq!(body["error"]["field"].as_str(), field, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["request_id"].as_str(), Some(reply.request_id()), "the body's request_id is the header's");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error", "request_id"], "{body}");
}

#[track_caller]
fn assert_serving(server: &Server) {
    assert_eq!(server.get("/health").status, 200, "/health after the failure");
    let reply = server.post_json("/v1/predict/car-price", &car());
    assert_eq!(reply.status, 200, "a normal request after the failure: {reply:?}");
}

#[test]
fn malformed_json_is_400_invalid_json() {
    let server = Server::start(&all_bundles());
    for body in [&b"{bad"[..], b"", b"{\"make\": \"saab\",}", b"[1, 2", b"{\"a\": 1} trailing", b"nul"] {
        let reply = server.post_body("/v1/predict/car-price", Some("application/json"), body);
        assert_error(&reply, 400, "invalid_json", None);
    }
    // Well-formed JSON that is not an object.
    for body in ["[1, 2]", "\"car\"", "null", "42"] {
        let reply = server.post_body("/v1/predict/car-price", Some("application/json"), body.as_bytes());
        assert_error(&reply, 400, "invalid_json", None);
    }
    let reply = server.post_body("/v1/predict/car-price/batch", Some("application/json"), b"{\"instances\": [");
    assert_error(&reply, 400, "invalid_json", None);
    assert_serving(&server);
}

#[test]
fn a_body_that_is_not_json_by_content_type_is_415() {
    let server = Server::start(&all_bundles());
    let body = car().to_string();
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/xml")] {
        for path in ["/v1/predict/car-price", "/v1/predict/car-price/batch"] {
            let reply = server.post_body(path, content_type, body.as_bytes());
            assert_error(&reply, 415, "unsupported_media_type", None);
        }
    }
    // Parameters and case do not matter.
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let reply = server.post_body("/v1/predict/car-price", Some(content_type), body.as_bytes());
        assert_eq!(reply.status, 200, "{content_type}: {reply:?}");
    }
}

#[test]
fn a_body_over_the_limit_is_413_and_one_at_the_limit_is_served() {
    let server = Server::builder(&all_bundles()).env("FORECOURT_SERVER__MAX_BODY_BYTES", "2048").start();
    let padded = |size: usize| {
        let mut body = car().to_string();
        body.insert_str(1, &" ".repeat(size - body.len()));
        assert_eq!(body.len(), size);
        body
    };
    let at_limit = server.post_body("/v1/predict/car-price", Some("application/json"), padded(2048).as_bytes());
    assert_eq!(at_limit.status, 200, "a body of exactly max_body_bytes is allowed: {at_limit:?}");
    let over = server.post_body("/v1/predict/car-price", Some("application/json"), padded(2049).as_bytes());
    assert_error(&over, 413, "payload_too_large", None);
    // Bodies stay a few KiB over the limit: the server answers 413 from content-length alone and
    // closes the connection, so a client still writing a large body sees a broken pipe instead.
    let big = json!({"instances": vec![car(); 30]});
    let reply = server.post_json("/v1/predict/car-price/batch", &big);
    assert_error(&reply, 413, "payload_too_large", None);
    let reply = server.post_json("/v2/models/car-price/infer", &json!({"inputs": [], "pad": " ".repeat(3000)}));
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_serving(&server);
}

#[test]
fn an_unknown_bundle_is_404_unknown_bundle() {
    let server = Server::start(&all_bundles());
    for path in ["/v1/predict/lorry-price", "/v1/predict/lorry-price/batch"] {
        let body = if path.ends_with("batch") { json!({"instances": [car()]}) } else { car() };
        let reply = server.post_json(path, &body);
        assert_error(&reply, 404, "unknown_bundle", None);
        assert!(reply.json["error"]["message"].as_str().unwrap().contains("lorry-price"), "{reply:?}");
    }
}

#[test]
fn plugin_input_errors_are_422_naming_the_field() {
    let server = Server::start(&all_bundles());
    let mut missing = car();
    missing.as_object_mut().unwrap().remove("mileage");
    let cases = [
        (missing, "missing_field", "mileage"),
        (with(car(), "mileage", json!(-5)), "invalid_field", "mileage"),
        (with(car(), "mileage", json!(2_000_000)), "invalid_field", "mileage"),
        (with(car(), "cylinders", json!(1)), "invalid_field", "cylinders"),
        (with(car(), "doors", json!(4.5)), "invalid_field", "doors"),
        (with(car(), "make", json!("ford")), "invalid_field", "make"),
        (with(car(), "body", json!("lorry")), "invalid_field", "body"),
        (with(car(), "mileage", json!("far")), "invalid_field", "mileage"),
        (with(car(), "cruise", json!("yes")), "invalid_field", "cruise"),
        (with(car(), "make", json!(7)), "invalid_field", "make"),
        (with(car(), "colour", json!("red")), "invalid_field", "colour"),
        (with(car(), "forecast_months", json!([0])), "invalid_field", "forecast_months"),
        (with(car(), "forecast_months", json!(12)), "invalid_field", "forecast_months"),
        (with(car(), "forecast_months", json!((1..=13).collect::<Vec<_>>())), "invalid_field", "forecast_months"),
        (with(car(), "annual_mileage", json!(-1)), "invalid_field", "annual_mileage"),
    ];
    for (request, code, field) in cases {
        let reply = server.post_json("/v1/predict/car-price", &request);
        assert_error(&reply, 422, code, Some(field));
    }
    let iris = server.post_json(
        "/v1/predict/iris",
        &json!({"sepal_length": "long", "sepal_width": 3.0, "petal_length": 1.4, "petal_width": 0.2}),
    );
    assert_eq!((iris.status, iris.json["error"]["field"].as_str()), (422, Some("sepal_length")), "{iris:?}");
}

#[test]
fn a_plugin_trap_timeout_or_memory_bomb_is_500_plugin_failed_and_the_server_stays_healthy() {
    let server = Server::start(&all_bundles());
    for attack in ["panic", "loop", "memory", "abort", "stack", "oversized", "bad-shape", "bad-response"] {
        let started = Instant::now();
        let reply = server.post_json("/v1/predict/hostile", &json!({"attack": attack}));
        assert_error(&reply, 500, "plugin_failed", None);
        assert!(started.elapsed() < Duration::from_secs(10), "{attack} took {:?}", started.elapsed());
        assert_serving(&server);
        let fine = server.post_json("/v1/predict/hostile", &json!({"attack": "none"}));
        assert_eq!((fine.status, &fine.json["outputs"]), (200, &json!({"echo": 1.0})), "after {attack}: {fine:?}");
    }
    let message = |attack: &str| {
        server.post_json("/v1/predict/hostile", &json!({"attack": attack})).json["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(message("loop").contains("CPU limit"), "{}", message("loop"));
    assert!(message("memory").contains("memory limit"), "{}", message("memory"));
    // The sandbox: no clock, environment, files or network inside the plugin.
    for attack in ["clock", "env", "files", "network"] {
        let reply = server.post_json("/v1/predict/hostile", &json!({"attack": attack}));
        assert_eq!((reply.status, &reply.json["outputs"]), (200, &json!({"echo": 0.0})), "{attack}: {reply:?}");
    }
}

#[test]
fn a_failing_plugin_in_a_batch_fails_only_its_instance() {
    let server = Server::start(&all_bundles());
    let attacks = ["none", "panic", "loop", "memory", "bad-shape", "bogus", "none"];
    let instances: Vec<Value> = attacks.iter().map(|attack| json!({"attack": attack})).collect();
    let reply = server.post_json("/v1/predict/hostile/batch", &json!({"instances": instances}));
    assert_eq!(reply.status, 200, "{reply:?}");
    let items = reply.json["predictions"].as_array().unwrap();
    let codes: Vec<Option<&str>> = items.iter().map(|item| item["error"]["code"].as_str()).collect();
    assert_eq!(
        codes,
        [
            None,
            Some("plugin_failed"),
            Some("plugin_failed"),
            Some("plugin_failed"),
            Some("plugin_failed"),
            Some("invalid_field"),
            None
        ]
    );
    assert_eq!(items[5]["error"]["field"], "attack");
    for index in [0, 6] {
        assert_eq!(items[index]["outputs"], json!({"echo": 1.0}), "{}", items[index]);
    }
    assert_eq!((reply.json["succeeded"].as_u64(), reply.json["failed"].as_u64()), (Some(2), Some(5)));
    assert_serving(&server);
}

#[test]
fn a_batch_over_max_batch_empty_or_not_a_list_is_422_on_instances() {
    let server = Server::builder(&all_bundles()).env("FORECOURT_SERVER__MAX_BATCH", "3").start();
    let at_max = server.post_json("/v1/predict/car-price/batch", &json!({"instances": vec![car(); 3]}));
    assert_eq!((at_max.status, at_max.json["succeeded"].as_u64()), (200, Some(3)), "{at_max:?}");
    let over = server.post_json("/v1/predict/car-price/batch", &json!({"instances": vec![car(); 4]}));
    assert_error(&over, 422, "invalid_field", Some("instances"));
    let empty = server.post_json("/v1/predict/car-price/batch", &json!({"instances": []}));
    assert_error(&empty, 422, "invalid_field", Some("instances"));
    let not_a_list = server.post_json("/v1/predict/car-price/batch", &json!({"instances": car()}));
    assert_error(&not_a_list, 422, "invalid_field", Some("instances"));
    assert_eq!(not_a_list.json["error"]["message"], "`instances` must be an array, not an object", "{not_a_list:?}");
    let nothing = server.post_json("/v1/predict/car-price/batch", &json!({}));
    assert_error(&nothing, 422, "missing_field", Some("instances"));
}

#[test]
fn an_array_body_is_400_invalid_json_on_every_route() {
    let server = Server::start(&all_bundles());
    for path in ["/v1/predict/car-price", "/v1/predict/car-price/batch"] {
        let reply = server.post_json(path, &json!([car()]));
        assert_error(&reply, 400, "invalid_json", None);
    }
}

#[test]
fn every_missing_field_is_named_and_numbers_are_quoted_in_messages() {
    let server = Server::start(&all_bundles());
    let empty = server.post_json("/v1/predict/car-price", &json!({}));
    assert_error(&empty, 422, "missing_field", Some("make"));
    assert_eq!(
        empty.json["error"]["message"], "`make`, `body`, `mileage`, `cylinders` and `doors` are required",
        "{empty:?}"
    );
    let half = server.post_json("/v1/predict/car-price", &with(car(), "cylinders", json!(4.5)));
    assert_eq!(half.json["error"]["message"], "`cylinders` must be a whole number, not 4.5", "{half:?}");
}

#[test]
fn overload_answers_429_overloaded_never_hangs_and_recovers() {
    let server = Server::builder(&all_bundles())
        .env("FORECOURT_SERVER__WORKERS", "1")
        .env("FORECOURT_SERVER__QUEUE_CAPACITY", "1")
        .env("FORECOURT_PLUGINS__CPU_LIMIT_MS", "200")
        .start();
    const CLIENTS: usize = 16;
    let barrier = Barrier::new(CLIENTS);
    let replies: Vec<(Reply, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let client = server.client();
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let started = Instant::now();
                    let reply = client.post_json("/v1/predict/hostile", &json!({"attack": "loop"}));
                    (reply, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("a client thread")).collect()
    });
    let overloaded = replies.iter().filter(|(reply, _)| reply.status == 429).count();
    for (reply, elapsed) in &replies {
        match reply.status {
            429 => assert_error(reply, 429, "overloaded", None),
            500 => assert_error(reply, 500, "plugin_failed", None),
            _ => panic!("a loop attack under overload got {reply:?}"),
        }
        // One worker, one queued job, 200 ms each: nobody waits for the whole crowd.
        assert!(*elapsed < Duration::from_secs(10), "a request took {elapsed:?}");
    }
    assert!(overloaded >= CLIENTS / 4, "only {overloaded} of {CLIENTS} were refused with 429");
    assert!(replies.iter().any(|(reply, _)| reply.status == 500), "no request was served at all");
    assert_serving(&server);
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405() {
    let server = Server::start(&all_bundles());
    for path in ["/nope", "/v1", "/v1/predict", "/v1/predict/car-price/batch/extra", "/v3/models"] {
        let reply = server.get(path);
        assert_error(&reply, 404, "not_found", None);
    }
    for (method, path) in [
        ("GET", "/v1/predict/car-price"),
        ("DELETE", "/v1/bundles"),
        ("PUT", "/v1/predict/car-price"),
        ("POST", "/health"),
        ("POST", "/v1/audit/verify"),
    ] {
        let body = (method != "GET" && method != "DELETE").then_some(&b"{}"[..]);
        let reply = server.request(method, path, Some("application/json"), body);
        assert_error(&reply, 405, "method_not_allowed", None);
    }
}

#[test]
fn prediction_lookups_refuse_bad_ids_and_miss_unknown_ones() {
    let server = Server::start(&all_bundles());
    let bad = server.get("/v1/predictions/not-an-id");
    assert_error(&bad, 422, "invalid_field", Some("id"));
    let long = server.get(&format!("/v1/predictions/{}", "x".repeat(5000)));
    assert_error(&long, 422, "invalid_field", Some("id"));
    assert!(long.text.len() < 400, "the id is not echoed: {} bytes", long.text.len());
    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=-1", "after"),
        ("colour=red", "query"),
    ] {
        let reply = server.get(&format!("/v1/audit?{query}"));
        assert_error(&reply, 422, "invalid_field", Some(field));
        assert!(!reply.json["error"]["message"].as_str().unwrap().contains("deserialize"), "{reply:?}");
    }
    let unknown = server.get("/v1/predictions/01a20690-29fe-72b5-bff2-d20cb1747d57");
    assert_error(&unknown, 404, "not_found", None);
}

#[test]
fn no_input_makes_the_server_panic_garbage_gets_a_clean_4xx() {
    let server = Server::start(&all_bundles());
    let mut bodies: Vec<Vec<u8>> = vec![
        (0..=255u8).cycle().take(4096).collect(),
        vec![0xff, 0xfe, 0x00, 0x01],
        b"{\"make\": \"\xff\xfe\"}".to_vec(),
        "[".repeat(100_000).into_bytes(),
        "{\"a\":".repeat(50_000).into_bytes(),
        format!("{}{}", "[".repeat(120), "]".repeat(120)).into_bytes(),
        "{\"make\": \"saab\u{0}\", \"body\": \"s\u{e9}dan \u{1F697}\", \"mileage\": 1}".as_bytes().to_vec(),
        "{\"\u{1F697}\": \"\u{202E}\u{FEFF}\", \"make\": \"\u{10FFFF}\"}".as_bytes().to_vec(),
        b"{\"mileage\": 1e999999}".to_vec(),
        b"{\"mileage\": -0.0e-99999, \"make\": null, \"body\": [], \"doors\": {}}".to_vec(),
        b"{\"make\": \"\\ud800\"}".to_vec(),
        format!("{{\"make\": \"{}\"}}", "x".repeat(500_000)).into_bytes(),
        format!("{{\"forecast_months\": [{}1]}}", "1,".repeat(100_000)).into_bytes(),
        b"\xef\xbb\xbf{}".to_vec(),
    ];
    let keys: String = (0..20_000).map(|i| format!("\"k{i}\": {i},")).collect();
    bodies.push(format!("{{{keys} \"make\": \"saab\"}}").into_bytes());
    // Random bytes drawn mostly from JSON's alphabet (xorshift, fixed seed: reproducible).
    let alphabet = b"{}[]\":,0123456789.eE-+truefalsnul \\\xc3\xa9\xff";
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20 {
        let length = (next() % 2000) as usize;
        bodies.push((0..length).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect());
    }
    for (index, body) in bodies.iter().enumerate() {
        for path in ["/v1/predict/car-price", "/v1/predict/car-price/batch", "/v1/predict/hostile"] {
            let reply = server.post_body(path, Some("application/json"), body);
            let preview = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
            assert!(
                (400..500).contains(&reply.status),
                "body {index} ({preview:?}) to {path}: expected a 4xx, got {reply:?}"
            );
            assert!(reply.json["error"]["code"].is_string(), "body {index} to {path}: not an error body: {reply:?}");
            assert_eq!(reply.json["request_id"].as_str(), Some(reply.request_id()));
        }
        let v2 = server.post_body("/v2/models/car-price/infer", Some("application/json"), body);
        assert!((400..500).contains(&v2.status) && v2.json["error"].is_string(), "body {index} to /v2: {v2:?}");
    }
    assert_serving(&server);
}
