//! The Open Inference Protocol over gRPC (`[grpc]`), against the real binary and Triton's
//! own gRPC client (tritonclient.grpc, through tests/triton_grpc.py): health, metadata and
//! readiness as HTTP /v2 reports them, inference with the client's default raw tensors
//! giving what HTTP /v2 gives for the same input, each refusal with its status code and a
//! message naming the input and the rule, tokens and roles as over HTTP, the limits, and TLS
//! with the API's certificate beside HTTPS.

use forecourt_testkit::{
    Golden, Server, TestCertificates, add_token, all_bundles, assert_close, certificate_serial,
    golden_car_with_forecast, preprocess, served_certificate_serial, temp_dir, triton_grpc, triton_grpc_over_tls,
};
use serde_json::{Value, json};

/// The golden car's model inputs as the example plugin makes them: `features` [2, 17] and
/// `years_ahead` [2, 1], as rows.
fn car_inputs(row: &Golden) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let tensors = preprocess("car_price", &row.request);
    let rows = |tensor: &Value| -> Vec<Vec<f64>> {
        let width = tensor["shape"][1].as_u64().expect("a width") as usize;
        flat(&tensor["data"]["values"]).chunks(width).map(<[f64]>::to_vec).collect()
    };
    (rows(&tensors[0]), rows(&tensors[1]))
}

fn infer_call(model: &str, inputs: Value) -> Value {
    json!({"call": "infer", "model": model, "inputs": inputs})
}

fn car_call(features: &[Vec<f64>], years: &[Vec<f64>]) -> Value {
    infer_call(
        "car-price",
        json!([{"name": "features", "datatype": "FP32", "data": features},
               {"name": "years_ahead", "datatype": "FP32", "data": years}]),
    )
}

/// The same inputs as an HTTP /v2 JSON request.
fn http_body(inputs: &[(&str, &[Vec<f64>])]) -> Value {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|(name, rows)| json!({"name": name, "datatype": "FP32", "shape": [rows.len(), rows[0].len()], "data": rows}))
        .collect();
    json!({"inputs": inputs})
}

fn flat(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap_or_else(|| panic!("a number: {other}"))],
    }
}

#[track_caller]
fn ok(result: &Value) -> &Value {
    result.get("ok").unwrap_or_else(|| panic!("the call failed: {result}"))
}

#[track_caller]
fn refused(result: &Value, code: &str, needles: &[&str]) {
    let error = result.get("error").unwrap_or_else(|| panic!("expected {code}, got {result}"));
    assert_eq!(error["code"], code, "{result}");
    let message = error["message"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

#[test]
fn tritonclient_grpc_gets_what_http_v2_gives() {
    let server = Server::builder(&all_bundles()).grpc().start();
    let grpc = server.grpc_address();
    let row = golden_car_with_forecast();
    let (features, years) = car_inputs(&row);
    let iris_features = vec![vec![5.1, 3.5, 1.4, 0.2]];
    let mut car = car_call(&features, &years);
    car["id"] = json!("grpc-1");
    let results = triton_grpc(
        &grpc,
        &json!([
            {"call": "live"},
            {"call": "ready"},
            {"call": "server_metadata"},
            {"call": "model_metadata", "model": "car-price"},
            {"call": "model_metadata", "model": "iris", "version": "1.0.0"},
            {"call": "model_ready", "model": "car-price"},
            {"call": "model_ready", "model": "car-price", "version": "1.0.0"},
            car,
            infer_call("iris", json!([{"name": "features", "datatype": "FP32", "data": iris_features}])),
            {"call": "infer", "model": "iris", "outputs": ["probabilities"],
             "inputs": [{"name": "features", "datatype": "FP32", "data": iris_features}]},
        ]),
    );
    assert_eq!((ok(&results[0]), ok(&results[1])), (&json!(true), &json!(true)));
    let version = server.get("/v2").json["version"].clone();
    assert_eq!(ok(&results[2]), &json!({"name": "forecourt", "version": version}), "no extensions, as over HTTP");
    // Metadata as HTTP /v2 gives it (protobuf's JSON leaves out nothing else here).
    assert_eq!(ok(&results[3]), &server.get("/v2/models/car-price").json);
    assert_eq!(ok(&results[4]), &server.get("/v2/models/iris").json);
    assert_eq!((ok(&results[5]), ok(&results[6])), (&json!(true), &json!(true)));

    // car-price with the client's defaults (raw tensors both ways): HTTP /v2's prices, and
    // the golden row's.
    let car = ok(&results[7]);
    assert_eq!(car["response"]["id"], "grpc-1");
    assert_eq!(
        (&car["response"]["model_name"], &car["response"]["model_version"]),
        (&json!("car-price"), &json!("1.0.0"))
    );
    assert!(car["response"]["outputs"][0].get("contents").is_none(), "raw outputs: {car}");
    let price = &car["outputs"]["price"];
    assert_eq!((&price["datatype"], &price["shape"]), (&json!("FP32"), &json!([2, 1])));
    let http =
        server.post_json("/v2/models/car-price/infer", &http_body(&[("features", &features), ("years_ahead", &years)]));
    assert_eq!(http.status, 200, "{http:?}");
    let http_prices = flat(&http.json["outputs"][0]["data"]);
    let grpc_prices = flat(&price["data"]);
    assert_eq!(grpc_prices.len(), 2);
    for ((grpc, http), golden) in grpc_prices.iter().zip(&http_prices).zip(flat(&row.expected["price"])) {
        assert_eq!(grpc, http, "gRPC and HTTP /v2 run the same model on the same FP32 input");
        assert_close(*grpc, golden, 1e-4, "gRPC price vs the golden row");
    }

    // iris: an INT64 label and FP32 probabilities, as HTTP gives them; then one output asked.
    let http = server.post_json("/v2/models/iris/infer", &http_body(&[("features", &iris_features)]));
    let iris = ok(&results[8]);
    for output in http.json["outputs"].as_array().unwrap() {
        let name = output["name"].as_str().unwrap();
        let read = &iris["outputs"][name];
        assert_eq!((&read["datatype"], &read["shape"]), (&output["datatype"], &output["shape"]), "{name}");
        assert_eq!(flat(&read["data"]), flat(&output["data"]), "{name}");
    }
    let only = ok(&results[9]);
    assert_eq!(
        only["outputs"].as_object().map(|outputs| outputs.keys().collect::<Vec<_>>()),
        Some(vec![&"probabilities".to_owned()])
    );

    // Each call counted by method and code, beside HTTP's metrics.
    let metrics = server.get("/metrics").text;
    for line in [
        r#"forecourt_grpc_requests_total{method="ModelInfer",code="OK"} 3"#,
        r#"forecourt_grpc_requests_total{method="ModelMetadata",code="OK"} 2"#,
        r#"forecourt_grpc_requests_total{method="ServerLive",code="OK"} 1"#,
    ] {
        assert!(metrics.lines().any(|metric| metric == line), "{line} not in /metrics");
    }
}

#[test]
fn each_refusal_has_its_code_and_names_the_input_and_the_rule() {
    let server = Server::builder(&all_bundles()).grpc().env("FORECOURT_SERVER__MAX_BODY_BYTES", "4096").start();
    let grpc = server.grpc_address();
    let (features, years) = car_inputs(&golden_car_with_forecast());
    let years_as_int: Vec<Vec<i64>> = years.iter().map(|row| row.iter().map(|&v| v as i64).collect()).collect();
    let eighty_rows = vec![features[0].clone(); 80];
    let eighty_years = vec![vec![0.0]; 80];
    let mut unknown_model = car_call(&features, &years);
    unknown_model["model"] = json!("lorry-price");
    let results = triton_grpc(
        &grpc,
        &json!([
            // A datatype the model does not take.
            infer_call("car-price", json!([{"name": "features", "datatype": "FP32", "data": features},
                                            {"name": "years_ahead", "datatype": "INT64", "data": years_as_int}])),
            // A declared shape the raw bytes do not fill.
            infer_call("car-price", json!([{"name": "features", "datatype": "FP32", "data": features, "shape": [2, 18]},
                                            {"name": "years_ahead", "datatype": "FP32", "data": years}])),
            // A width the model does not take, consistent on the client's side.
            infer_call("car-price", json!([{"name": "features", "datatype": "FP32", "data": [[1.0, 2.0], [3.0, 4.0]]},
                                            {"name": "years_ahead", "datatype": "FP32", "data": years}])),
            // An input missing, and an output the model does not have.
            infer_call("car-price", json!([{"name": "features", "datatype": "FP32", "data": features}])),
            {"call": "infer", "model": "car-price", "outputs": ["colour"],
             "inputs": [{"name": "features", "datatype": "FP32", "data": features},
                        {"name": "years_ahead", "datatype": "FP32", "data": years}]},
            // Unknown models and versions, on every call that names one.
            unknown_model,
            {"call": "infer", "model": "car-price", "version": "9.9.9",
             "inputs": [{"name": "features", "datatype": "FP32", "data": features},
                        {"name": "years_ahead", "datatype": "FP32", "data": years}]},
            {"call": "model_metadata", "model": "lorry-price"},
            {"call": "model_ready", "model": "car-price", "version": "latest"},
            // A message over server.max_body_bytes (80 rows of 17 FP32: 5440 bytes).
            infer_call("car-price", json!([{"name": "features", "datatype": "FP32", "data": eighty_rows},
                                            {"name": "years_ahead", "datatype": "FP32", "data": eighty_years}])),
            // After all that, the server still infers.
            car_call(&features, &years),
        ]),
    );
    refused(&results[0], "INVALID_ARGUMENT", &["input `years_ahead` must be", "Float32", "Int64"]);
    refused(
        &results[1],
        "INVALID_ARGUMENT",
        &[
            "input `features` (FP32, shape [2, 18]) takes 144 bytes of binary data, but its raw_input_contents entry's size is 136",
        ],
    );
    refused(&results[2], "INVALID_ARGUMENT", &["features"]);
    refused(&results[3], "INVALID_ARGUMENT", &["input `years_ahead` is missing"]);
    refused(&results[4], "INVALID_ARGUMENT", &["the model has no output `colour`"]);
    refused(&results[5], "NOT_FOUND", &["lorry-price"]);
    refused(&results[6], "NOT_FOUND", &["car-price", "9.9.9"]);
    refused(&results[7], "NOT_FOUND", &["unknown model lorry-price"]);
    refused(&results[8], "NOT_FOUND", &["unknown model car-price version latest"]);
    refused(&results[9], "OUT_OF_RANGE", &["too large", "4096"]);
    assert_eq!(flat(&ok(&results[10])["outputs"]["price"]["data"]).len(), 2, "{}", results[10]);
}

#[test]
fn tokens_and_roles_guard_grpc_as_they_guard_http() {
    let data = temp_dir();
    let data_dir = data.path().join("data");
    let kiosk = add_token(&data_dir, "kiosk", "front-desk", &[]);
    let viewer = add_token(&data_dir, "viewer", "manager", &[]);
    let metrics = add_token(&data_dir, "metrics", "scraper", &[]);
    let limited = add_token(&data_dir, "kiosk", "limited", &["--rate", "1", "--burst", "2"]);
    let server = Server::builder(&all_bundles()).grpc().data_dir(&data_dir).start();
    let grpc = server.grpc_address();
    let (features, years) = car_inputs(&golden_car_with_forecast());
    let with_token = |mut call: Value, token: Option<&str>| {
        if let Some(token) = token {
            call["token"] = json!(token);
        }
        call
    };
    let metadata = json!({"call": "model_metadata", "model": "car-price"});
    // The kiosk token's id with the viewer token's secret (`fct_` and 16 hex digits, `_`,
    // the secret): well formed, wrong.
    let wrong_secret = format!("{}_{}", &kiosk[..20], &viewer[21..]);
    let results = triton_grpc(
        &grpc,
        &json!([
            {"call": "live"},
            {"call": "ready"},
            metadata,
            with_token(car_call(&features, &years), None),
            with_token(car_call(&features, &years), Some("not-a-token")),
            with_token(car_call(&features, &years), Some(&wrong_secret)),
            with_token(car_call(&features, &years), Some(&metrics)),
            with_token(car_call(&features, &years), Some(&viewer)),
            with_token(metadata.clone(), Some(&metrics)),
            with_token(metadata.clone(), Some(&viewer)),
            with_token(json!({"call": "model_ready", "model": "car-price"}), Some(&kiosk)),
            with_token(car_call(&features, &years), Some(&kiosk)),
            with_token(car_call(&features, &years), Some(&limited)),
            with_token(car_call(&features, &years), Some(&limited)),
            with_token(car_call(&features, &years), Some(&limited)),
            with_token(car_call(&features, &years), Some(&limited)),
        ]),
    );
    assert_eq!((ok(&results[0]), ok(&results[1])), (&json!(true), &json!(true)), "health is open");
    refused(&results[2], "UNAUTHENTICATED", &["needs a bearer token"]);
    refused(&results[3], "UNAUTHENTICATED", &["needs a bearer token"]);
    refused(&results[4], "UNAUTHENTICATED", &["malformed"]);
    refused(&results[5], "UNAUTHENTICATED", &["secret is wrong"]);
    refused(&results[6], "PERMISSION_DENIED", &["the role metrics", "needs one of: kiosk, admin"]);
    refused(&results[7], "PERMISSION_DENIED", &["the role viewer"]);
    refused(&results[8], "PERMISSION_DENIED", &["the role metrics", "needs one of: kiosk, viewer, admin"]);
    assert_eq!(ok(&results[9])["name"], "car-price");
    assert_eq!(ok(&results[10]), &json!(true));
    assert_eq!(flat(&ok(&results[11])["outputs"]["price"]["data"]).len(), 2);
    // A token over its rate (burst 2, then 1 a second): RESOURCE_EXHAUSTED, as HTTP's 429,
    // saying when to retry. Four calls back to back; a slow machine may refill one token.
    ok(&results[12]);
    ok(&results[13]);
    let over: Vec<&Value> = results[14..].iter().filter(|result| result.get("error").is_some()).collect();
    assert!(!over.is_empty(), "a token with burst 2 made 4 calls unrefused: {:?}", &results[14..]);
    for result in over {
        refused(result, "RESOURCE_EXHAUSTED", &["rate", "retry in"]);
    }

    // Denials are counted with HTTP's, by reason.
    let scrape = server.as_token(Some(&metrics)).get("/metrics").text;
    for line in [
        r#"forecourt_http_denied_total{reason="forbidden"} 3"#,
        r#"forecourt_http_denied_total{reason="missing_token"} 2"#,
    ] {
        assert!(scrape.lines().any(|metric| metric == line), "{line} not in /metrics");
    }
}

#[test]
fn beside_https_grpc_speaks_tls_with_the_api_certificate_and_drains_on_sigterm() {
    let certificates = TestCertificates::generate();
    // A handshake may take an hour: only handshakes on their own tasks let the calls below
    // through while one connection stalls.
    let server = Server::builder(&all_bundles())
        .tls(&certificates)
        .grpc()
        .env("FORECOURT_SERVER__TLS_HANDSHAKE_TIMEOUT_SECS", "3600")
        .start();
    let grpc = server.grpc_address();
    assert_eq!(served_certificate_serial(&grpc, &certificates.ca), certificate_serial(&certificates.cert));

    // Triton's client over TLS, trusting the test CA: the same prices as HTTPS /v2 gives,
    // while a client that opened a connection and never said a word holds up nobody.
    let stalled = std::net::TcpStream::connect(&grpc).expect("the gRPC port takes connections");
    let (features, years) = car_inputs(&golden_car_with_forecast());
    let results =
        triton_grpc_over_tls(&grpc, &certificates.ca, &json!([{"call": "live"}, car_call(&features, &years)]));
    assert_eq!(ok(&results[0]), &json!(true));
    let https =
        server.post_json("/v2/models/car-price/infer", &http_body(&[("features", &features), ("years_ahead", &years)]));
    assert_eq!(https.status, 200, "{https:?}");
    assert_eq!(flat(&ok(&results[1])["outputs"]["price"]["data"]), flat(&https.json["outputs"][0]["data"]));
    drop(stalled);

    // In clear, the port serves nothing: a plaintext client gets no answer.
    let clear = triton_grpc(&grpc, &json!([{"call": "live"}]));
    assert_eq!(clear[0]["error"]["code"], "UNAVAILABLE", "{clear:?}");

    // A renewed certificate reaches the gRPC port with the same reload as HTTPS (SIGHUP).
    let second = certificates.renew();
    let status = std::process::Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    server
        .wait_for_log_line(std::time::Duration::from_secs(15), |line| line.contains("HTTPS certificate reloaded"))
        .expect("the signal reloads the certificate");
    assert_eq!(served_certificate_serial(&grpc, &certificates.ca), second);
    assert_eq!(ok(&triton_grpc_over_tls(&grpc, &certificates.ca, &json!([{"call": "live"}]))[0]), &json!(true));

    server.sigterm();
    let status = server.wait_exit(std::time::Duration::from_secs(60)).expect("the server exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(server.logs().contains("shut down cleanly"), "{}", server.logs());
}
