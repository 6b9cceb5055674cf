//! The Open Inference Protocol v2 under /v2 (api-shapes.md section 1), against the real
//! binary: metadata and health shapes, raw-tensor inference matching the golden rows, the
//! protocol's error shape, Triton's binary tensor data extension, and Triton's own Python
//! client with JSON tensors and with its defaults (binary tensors).

use forecourt_testkit::{
    Golden, Reply, Server, TritonTensors, all_bundles, assert_close, golden, golden_car_with_forecast, preprocess,
    triton_infer,
};
use serde_json::{Value, json};

/// The preprocessed tensors as protocol inputs (flat data).
fn infer_inputs(tensors: &[Value]) -> Vec<Value> {
    tensors
        .iter()
        .map(|tensor| {
            assert_eq!(tensor["data"]["type"], "float32", "{tensor}");
            json!({"name": tensor["name"], "shape": tensor["shape"], "datatype": "FP32", "data": tensor["data"]["values"]})
        })
        .collect()
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("an array").iter().map(|v| v.as_f64().expect("a number")).collect()
}

#[track_caller]
fn assert_v2_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{reply:?}");
    let body = reply.json.as_object().unwrap_or_else(|| panic!("not a JSON object: {reply:?}"));
    assert!(body.len() == 1 && body["error"].as_str().is_some_and(|m| !m.is_empty()), "{reply:?}");
}

#[test]
fn server_model_and_health_metadata_have_the_protocol_shapes() {
    let server = Server::start(&all_bundles());
    let version = server.get("/health/detailed").json["version"].clone();
    let meta = server.get("/v2");
    assert_eq!((meta.status, &meta.json), (200, &json!({"name": "forecourt", "version": version, "extensions": []})));
    assert_eq!(server.get("/v2/health/live").json, json!({"live": true}));
    let ready = server.get("/v2/health/ready");
    assert_eq!((ready.status, &ready.json), (200, &json!({"ready": true})));

    let car = json!({
        "name": "car-price", "versions": ["1.0.0"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 17]},
                   {"name": "years_ahead", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "price", "datatype": "FP32", "shape": [-1, 1]}]
    });
    for path in ["/v2/models/car-price", "/v2/models/car-price/versions/1.0.0"] {
        let reply = server.get(path);
        assert_eq!((reply.status, &reply.json), (200, &car), "{path}");
    }
    for path in ["/v2/models/car-price/ready", "/v2/models/car-price/versions/1.0.0/ready"] {
        let reply = server.get(path);
        assert_eq!((reply.status, &reply.json), (200, &json!({"name": "car-price", "ready": true})), "{path}");
    }
    let iris = server.get("/v2/models/iris").json;
    assert_eq!(iris["inputs"], json!([{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]));
    assert_eq!(iris["outputs"][0]["datatype"], "INT64");
    assert_eq!(iris["outputs"][1], json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}));

    for path in [
        "/v2/models/lorry-price",
        "/v2/models/lorry-price/ready",
        "/v2/models/car-price/versions/9.9.9",
        "/v2/models/car-price/versions/9.9.9/ready",
        "/v2/models/car-price/versions/latest",
    ] {
        assert_v2_error(&server.get(path), 404);
    }
}

#[test]
fn infer_on_raw_tensors_gives_the_golden_prices() {
    let server = Server::start(&all_bundles());
    let row = golden_car_with_forecast();
    let expected = floats(&row.expected["price"]);
    let inputs = infer_inputs(&preprocess("car_price", &row.request));
    assert_eq!(inputs[0]["shape"], json!([2, 17]), "one row now and one per forecast month");

    let request = json!({"id": "req-42", "parameters": {}, "inputs": inputs, "outputs": [{"name": "price"}]});
    for path in ["/v2/models/car-price/infer", "/v2/models/car-price/versions/1.0.0/infer"] {
        let reply = server.post_json(path, &request);
        assert_eq!(reply.status, 200, "{reply:?}");
        let body = &reply.json;
        assert_eq!((body["model_name"].as_str(), body["model_version"].as_str()), (Some("car-price"), Some("1.0.0")));
        assert_eq!(body["id"], "req-42");
        let outputs = body["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(
            (&outputs[0]["name"], &outputs[0]["shape"], &outputs[0]["datatype"]),
            (&json!("price"), &json!([2, 1]), &json!("FP32"))
        );
        for (actual, expected) in floats(&outputs[0]["data"]).iter().zip(&expected) {
            assert_close(*actual, *expected, 1e-4, "price through /v2");
        }
    }

    // Nested data, no id and no outputs asked (all outputs) give the same prices.
    let nested: Vec<Value> = inputs
        .iter()
        .map(|input| {
            let width = input["shape"][1].as_u64().unwrap() as usize;
            let rows: Vec<Value> = input["data"].as_array().unwrap().chunks(width).map(|row| json!(row)).collect();
            json!({"name": input["name"], "shape": input["shape"], "datatype": "FP32", "data": rows})
        })
        .collect();
    let reply = server.post_json("/v2/models/car-price/infer", &json!({"inputs": nested}));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.json.get("id").is_none(), "{}", reply.json);
    assert_eq!(reply.json["outputs"].as_array().map(Vec::len), Some(1));
    for (actual, expected) in floats(&reply.json["outputs"][0]["data"]).iter().zip(&expected) {
        assert_close(*actual, *expected, 1e-4, "price through /v2, nested data");
    }

    // Iris: an INT64 label and FP32 probabilities.
    let iris = &golden("iris")[0];
    let reply =
        server.post_json("/v2/models/iris/infer", &json!({"inputs": infer_inputs(&preprocess("iris", &iris.request))}));
    assert_eq!(reply.status, 200, "{reply:?}");
    let outputs = reply.json["outputs"].as_array().unwrap();
    let label = outputs.iter().find(|o| o["name"] == "label").expect("label");
    assert_eq!((&label["datatype"], &label["data"]), (&json!("INT64"), &iris.expected["label"]));
    let probabilities = outputs.iter().find(|o| o["name"] == "probabilities").expect("probabilities");
    assert_eq!((&probabilities["datatype"], &probabilities["shape"]), (&json!("FP32"), &json!([1, 3])));
    for (actual, expected) in floats(&probabilities["data"]).iter().zip(floats(&iris.expected["probabilities"][0])) {
        assert!((actual - expected).abs() < 1e-5, "{actual} vs {expected}");
    }
}

#[test]
fn infer_errors_have_the_protocol_shape() {
    let server = Server::start(&all_bundles());
    let row = golden_car_with_forecast();
    let inputs = infer_inputs(&preprocess("car_price", &row.request));
    let infer = |body: &Value| server.post_json("/v2/models/car-price/infer", body);
    let with_input = |index: usize, key: &str, value: Value| {
        let mut changed = inputs.clone();
        changed[index][key] = value;
        json!({"inputs": changed})
    };

    assert_v2_error(&server.post_json("/v2/models/lorry-price/infer", &json!({"inputs": inputs})), 404);
    assert_v2_error(&server.post_json("/v2/models/car-price/versions/9.9.9/infer", &json!({"inputs": inputs})), 404);
    let bad = [
        ("an input missing", json!({"inputs": [inputs[0]]})),
        (
            "an unknown input",
            json!({"inputs": [inputs[0], inputs[1], {"name": "colour", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]}),
        ),
        ("too few values for the shape", with_input(0, "data", json!(vec![1.0; 33]))),
        ("a width the model does not take", with_input(0, "shape", json!([1, 34]))),
        ("a negative dimension", with_input(0, "shape", json!([-2, 17]))),
        ("a string in FP32 data", with_input(1, "data", json!(["soon", 1.0]))),
        ("an unsupported datatype", with_input(1, "datatype", json!("FP16"))),
        ("a datatype the model does not take", with_input(1, "datatype", json!("INT64"))),
        ("rows that differ between inputs", with_input(1, "shape", json!([1, 1]))),
        ("an unknown output", json!({"inputs": inputs, "outputs": [{"name": "colour"}]})),
    ];
    for (what, body) in bad {
        let reply = infer(&body);
        assert_eq!(reply.status, 400, "{what}: {reply:?}");
        assert_v2_error(&reply, 400);
    }
    assert_v2_error(&server.post_body("/v2/models/car-price/infer", Some("application/json"), b"{\"inputs\": ["), 400);
    let after = infer(&json!({"inputs": inputs}));
    assert_eq!(after.status, 200, "the server still infers: {after:?}");
}

/// BUG (runtime/src/http/v2.rs `infer`/`infer_version` use the /v1 `JsonBody` extractor,
/// whose `json_bytes` in runtime/src/http/extract.rs refuses a request without
/// `content-type: application/json` with 415): Triton's tritonclient.http (2.73) sends its
/// JSON inference requests with no content-type at all, so every real Triton client fails.
#[test]
fn infer_without_a_content_type_is_served_as_tritonclient_sends_it() {
    let server = Server::start(&all_bundles());
    let row = golden_car_with_forecast();
    let body = json!({"inputs": infer_inputs(&preprocess("car_price", &row.request))}).to_string();
    let reply = server.post_body("/v2/models/car-price/infer", None, body.as_bytes());
    assert_eq!(reply.status, 200, "an inference request without content-type: {reply:?}");
    for (actual, expected) in floats(&reply.json["outputs"][0]["data"]).iter().zip(floats(&row.expected["price"])) {
        assert_close(*actual, expected, 1e-4, "price");
    }
}

/// api-shapes.md: errors under /v2 are 400, 404 or 503. A request that is JSON but not an
/// inference request is a bad request.
#[test]
fn a_malformed_infer_request_is_400() {
    let server = Server::start(&all_bundles());
    for body in [
        json!({}),
        json!({"inputs": "features"}),
        json!({"inputs": [{"name": "features", "datatype": "FP32", "data": [1.0]}]}),
        json!([]),
    ] {
        let reply = server.post_json("/v2/models/car-price/infer", &body);
        assert_v2_error(&reply, 400);
    }
}

#[test]
fn tritons_python_client_infers_the_golden_prices_like_v1() {
    let server = Server::start(&all_bundles());
    let row = golden_car_with_forecast();
    let result = triton_infer(server.host_port(), &triton_argument(&row), TritonTensors::Json, None, None);
    assert_eq!((&result["live"], &result["ready"]), (&json!(true), &json!(true)), "{result}");
    assert_eq!(result["metadata"]["name"], "car-price");
    assert_eq!(result["metadata"]["platform"], "onnxruntime_onnx");
    assert_eq!(result["price_shape"], json!([2, 1]));
    let prices = floats(&result["prices"]);
    for (actual, expected) in prices.iter().zip(floats(&row.expected["price"])) {
        assert_close(*actual, expected, 1e-4, "price through tritonclient");
    }

    // The same car through /v1: today's price and the one forecast.
    let v1 = server.post_json("/v1/predict/car-price", &row.request);
    assert_eq!(v1.status, 200, "{v1:?}");
    let outputs = &v1.json["outputs"];
    assert_close(outputs["price"].as_f64().unwrap(), prices[0], 1e-5, "/v1 price vs tritonclient");
    assert_close(outputs["forecast"][0]["price"].as_f64().unwrap(), prices[1], 1e-5, "/v1 forecast vs tritonclient");
}

/// The golden car with one forecast as tritonclient's argument: `features` and
/// `years_ahead` as rows.
fn triton_argument(row: &Golden) -> Value {
    let tensors = preprocess("car_price", &row.request);
    let as_rows = |tensor: &Value| {
        let width = tensor["shape"][1].as_u64().unwrap() as usize;
        tensor["data"]["values"].as_array().unwrap().chunks(width).map(|row| json!(row)).collect::<Vec<_>>()
    };
    json!({"features": as_rows(&tensors[0]), "years_ahead": as_rows(&tensors[1])})
}

/// tritonclient.http with its defaults sends binary inputs and asks for binary outputs
/// (today's default; a server that only speaks JSON tensors answers it 400 "trailing
/// characters"). Both ways of asking, every output (`binary_data_output`) and `price` by
/// name, give the JSON path's prices, and the response really was binary.
#[test]
fn tritons_python_client_with_its_defaults_gets_the_json_paths_prices() {
    let server = Server::start(&all_bundles());
    let row = golden_car_with_forecast();
    let argument = triton_argument(&row);
    let json = triton_infer(server.host_port(), &argument, TritonTensors::Json, None, None);
    let binary = triton_infer(server.host_port(), &argument, TritonTensors::Binary, None, None);
    assert_eq!(binary["price_shape"], json!([2, 1]), "{binary}");
    let json_prices = floats(&json["prices"]);
    for prices in [floats(&binary["prices"]), floats(&binary["requested_prices"])] {
        assert_eq!(prices.len(), 2, "{binary}");
        for ((actual, via_json), expected) in prices.iter().zip(&json_prices).zip(floats(&row.expected["price"])) {
            assert_close(*actual, *via_json, 1e-6, "binary price vs the JSON path's");
            assert_close(*actual, expected, 1e-4, "binary price vs the golden row");
        }
    }
    // The client read the prices from binary data: 2 FP32 elements, no JSON `data`.
    for response in [&binary["response"], &binary["requested_response"]] {
        let output = &response["outputs"][0];
        assert_eq!((&output["name"], &output["datatype"]), (&json!("price"), &json!("FP32")), "{response}");
        assert_eq!(output["parameters"], json!({"binary_data_size": 8}), "{response}");
        assert!(output.get("data").is_none(), "{response}");
    }
    assert_eq!(binary["response"]["id"], "triton-client-1");
    assert_eq!(binary["requested_response"]["id"], "triton-client-2");
}

fn le_f32(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|value| (*value as f32).to_le_bytes()).collect()
}

/// A body in the binary framing: `request`'s JSON, then `binary`; and the JSON's length
/// for the `Inference-Header-Content-Length` header.
fn framed(request: &Value, binary: &[&[u8]]) -> (Vec<u8>, String) {
    let json = request.to_string();
    let length = json.len().to_string();
    let mut body = json.into_bytes();
    binary.iter().for_each(|part| body.extend_from_slice(part));
    (body, length)
}

/// POSTs `body` as tritonclient does: no content type, the header length.
fn post_framed(server: &Server, path: &str, body: &[u8], header_length: &str) -> Reply {
    server.post_with_headers(path, &[("inference-header-content-length", header_length)], None, body)
}

/// A binary reply split as the extension says: the JSON by the header's length, and the
/// bytes after it.
fn unframe(reply: &Reply) -> (Value, &[u8]) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/octet-stream"), "{reply:?}");
    let length: usize = reply.header("inference-header-content-length").expect("the header").parse().unwrap();
    let (json, binary) = reply.bytes.split_at(length);
    (serde_json::from_slice(json).expect("a JSON part"), binary)
}

/// The binary framing on the wire, built by hand: binary inputs next to JSON ones, binary
/// and JSON outputs in one answer, INT64 and FP32 outputs as little-endian bytes, and a
/// framed request whose outputs are all JSON answered as plain JSON.
#[test]
fn binary_tensors_on_the_wire_give_the_golden_answers() {
    let server = Server::start(&all_bundles());
    let row = golden_car_with_forecast();
    let expected = floats(&row.expected["price"]);
    let inputs = infer_inputs(&preprocess("car_price", &row.request));
    let features = le_f32(&floats(&inputs[0]["data"]));
    assert_eq!(features.len(), 2 * 17 * 4);
    let request = json!({
        "id": "bin-1",
        "inputs": [
            {"name": "features", "shape": [2, 17], "datatype": "FP32", "parameters": {"binary_data_size": features.len()}},
            inputs[1],
        ],
        "outputs": [{"name": "price", "parameters": {"binary_data": true}}]
    });
    let (body, length) = framed(&request, &[&features]);
    for path in ["/v2/models/car-price/infer", "/v2/models/car-price/versions/1.0.0/infer"] {
        let reply = post_framed(&server, path, &body, &length);
        let (json, binary) = unframe(&reply);
        assert_eq!(json["id"], "bin-1");
        assert_eq!(
            json["outputs"],
            json!([{"name": "price", "shape": [2, 1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}])
        );
        let prices: Vec<f64> =
            binary.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap()))).collect();
        assert_eq!(prices.len(), 2);
        for (actual, expected) in prices.iter().zip(&expected) {
            assert_close(*actual, *expected, 1e-4, "price from binary tensors");
        }
    }

    // The same framing with the output asked as JSON: a plain JSON answer.
    let mut as_json = request.clone();
    as_json["outputs"][0]["parameters"]["binary_data"] = json!(false);
    let (body, length) = framed(&as_json, &[&features]);
    let reply = post_framed(&server, "/v2/models/car-price/infer", &body, &length);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("inference-header-content-length").is_none(), "{reply:?}");
    for (actual, expected) in floats(&reply.json["outputs"][0]["data"]).iter().zip(&expected) {
        assert_close(*actual, *expected, 1e-4, "JSON price from binary inputs");
    }

    // Iris, every output binary (binary_data_output), one overridden back to JSON.
    let iris = &golden("iris")[0];
    let iris_inputs = infer_inputs(&preprocess("iris", &iris.request));
    let iris_features = le_f32(&floats(&iris_inputs[0]["data"]));
    let request = json!({
        "parameters": {"binary_data_output": true},
        "inputs": [{"name": "features", "shape": iris_inputs[0]["shape"], "datatype": "FP32",
                    "parameters": {"binary_data_size": iris_features.len()}}],
    });
    let (body, length) = framed(&request, &[&iris_features]);
    let reply = post_framed(&server, "/v2/models/iris/infer", &body, &length);
    let (json, binary) = unframe(&reply);
    let outputs = json["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2, "{json}");
    let mut offset = 0;
    for output in outputs {
        let size = output["parameters"]["binary_data_size"].as_u64().expect("a binary output") as usize;
        let bytes = &binary[offset..offset + size];
        offset += size;
        match output["name"].as_str().unwrap() {
            "label" => {
                assert_eq!(output["datatype"], "INT64");
                let labels: Vec<i64> =
                    bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
                assert_eq!(json!(labels), iris.expected["label"]);
            }
            "probabilities" => {
                assert_eq!((&output["datatype"], &output["shape"]), (&json!("FP32"), &json!([1, 3])));
                let probabilities: Vec<f64> =
                    bytes.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap()))).collect();
                for (actual, expected) in probabilities.iter().zip(floats(&iris.expected["probabilities"][0])) {
                    assert!((actual - expected).abs() < 1e-5, "{actual} vs {expected}");
                }
            }
            other => panic!("an unexpected output {other}"),
        }
    }
    assert_eq!(offset, binary.len(), "the outputs' sizes add up to the binary part");
}

/// Malformed binary bodies, sent raw (no curl): each a 400 in the protocol's shape whose
/// message names the input and the rule; a compressed body a 415; the server serves on.
#[test]
fn malformed_binary_bodies_are_refused_with_the_input_and_the_rule() {
    let server = Server::start(&all_bundles());
    let row = golden_car_with_forecast();
    let inputs = infer_inputs(&preprocess("car_price", &row.request));
    let features = le_f32(&floats(&inputs[0]["data"]));
    let years = le_f32(&floats(&inputs[1]["data"]));
    let binary_input = |name: &str, width: usize, size: u64| json!({"name": name, "shape": [2, width], "datatype": "FP32", "parameters": {"binary_data_size": size}});
    let both = |features_size: u64, years_size: u64| json!({"inputs": [binary_input("features", 17, features_size), binary_input("years_ahead", 1, years_size)]});
    let path = "/v2/models/car-price/infer";
    let refused = |body: &[u8], length: &str, needles: &[&str]| {
        let reply = post_framed(&server, path, body, length);
        assert_v2_error(&reply, 400);
        let message = reply.json["error"].as_str().unwrap();
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    };

    let (body, length) = framed(&both(136, 8), &[&features, &years]);
    assert_eq!(post_framed(&server, path, &body, &length).status, 200, "the well-formed body is served");

    // A size that is not the shape's: the input, its shape and both sizes.
    let (body, length) = framed(&both(132, 12), &[&features[..132], &years, &[0; 4]]);
    refused(&body, &length, &["input `features`", "[2, 17]", "136 bytes", "binary_data_size is 132"]);
    // The data stops short of the last input.
    let (body, length) = framed(&both(136, 8), &[&features, &years[..4]]);
    refused(&body, &length, &["input `years_ahead`", "binary_data_size 8", "ends after 140 bytes"]);
    // Bytes that no input claims.
    let (body, length) = framed(&both(136, 8), &[&features, &years, b"xx"]);
    refused(&body, &length, &["146 bytes", "add up to 144"]);
    // A header length beyond the body, and one that is no number.
    let (body, _) = framed(&both(136, 8), &[&features, &years]);
    refused(&body, &(body.len() + 1).to_string(), &["Inference-Header-Content-Length", "the body is"]);
    refused(&body, "lots", &["Inference-Header-Content-Length", "whole number"]);
    // A header length that cuts the JSON: the JSON part is not JSON.
    refused(&body, "10", &["not valid JSON"]);
    // `data` next to binary_data_size.
    let mut with_data = both(136, 8);
    with_data["inputs"][1]["data"] = inputs[1]["data"].clone();
    let (body, length) = framed(&with_data, &[&features, &years]);
    refused(&body, &length, &["input `years_ahead`", "both `data` and parameters.binary_data_size"]);
    // A hostile size: far past the end of any body.
    let (body, length) = framed(&both(136, u64::MAX), &[&features, &years]);
    refused(&body, &length, &["input `years_ahead`", "18446744073709551615"]);
    // binary_data_size without the header: the whole body is taken for JSON.
    let (body, _) = framed(&both(136, 8), &[]);
    let reply = server.post_body(path, None, &body);
    assert_v2_error(&reply, 400);
    assert!(reply.json["error"].as_str().unwrap().contains("no Inference-Header-Content-Length header"), "{reply:?}");

    // A compressed body is not supported: 415, in the protocol's shape.
    let (body, length) = framed(&both(136, 8), &[&features, &years]);
    let reply = server.post_with_headers(
        path,
        &[("inference-header-content-length", &length), ("content-encoding", "gzip")],
        None,
        &body,
    );
    assert_v2_error(&reply, 415);
    assert!(reply.json["error"].as_str().unwrap().contains("Content-Encoding"), "{reply:?}");

    let (body, length) = framed(&both(136, 8), &[&features, &years]);
    assert_eq!(post_framed(&server, path, &body, &length).status, 200, "the server still infers");
}
