//! The /v1 API, health and /openapi.json against the real binary: every endpoint's shape,
//! predictions of the three example bundles, their stored records, batches and the audit
//! trail.

use forecourt_testkit::{Server, all_bundles, assert_close, car, golden, with};
use serde_json::{Value, json};

const CAR_FIELDS: [&str; 10] = [
    "make",
    "body",
    "mileage",
    "cylinders",
    "doors",
    "cruise",
    "sound",
    "leather",
    "forecast_months",
    "annual_mileage",
];

fn is_uuid_v7(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
        && id.as_bytes()[14] == b'7'
}

fn is_sha256(value: &Value) -> bool {
    value.as_str().is_some_and(|text| text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()))
}

fn number(value: &Value, what: &str) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

#[test]
fn health_bundles_and_openapi_answer_with_their_shapes() {
    let server = Server::start(&all_bundles());

    let health = server.get("/health");
    assert_eq!((health.status, &health.json), (200, &json!({"status": "ready", "ready": true})));
    assert_eq!(health.header("content-type"), Some("application/json"));

    let detailed = server.get("/health/detailed");
    assert_eq!(detailed.status, 200, "{detailed:?}");
    let d = &detailed.json;
    assert_eq!((d["status"].as_str(), d["ready"].as_bool()), (Some("ready"), Some(true)), "{d}");
    assert!(d["version"].as_str().is_some_and(|v| !v.is_empty()), "{d}");
    assert!(number(&d["uptime_seconds"], "uptime_seconds") > 0.0);
    assert_eq!(d["store"]["ok"], true, "{d}");
    assert!(number(&d["store"]["stats"]["audit_records"], "audit_records") >= 1.0, "{d}");
    assert_eq!(d["onnxruntime"]["ok"], true, "{d}");
    assert!(d["onnxruntime"]["library"].as_str().is_some_and(|l| l.contains("onnxruntime")), "{d}");
    let mut names: Vec<&str> = d["bundles"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["car-price", "hostile", "housing", "iris"]);
    assert!(d["bundles"].as_array().unwrap().iter().all(|b| b["ok"] == true && b["active_version"].is_string()));
    for key in ["depth", "capacity", "workers"] {
        assert!(d["inference_queue"][key].is_u64(), "inference_queue.{key} in {d}");
    }
    assert!(d["system"].is_object(), "{d}");

    let bundles = server.get("/v1/bundles");
    assert_eq!(bundles.status, 200);
    let list = bundles.json["bundles"].as_array().expect("a bundles array");
    let car = list.iter().find(|b| b["name"] == "car-price").expect("car-price is listed");
    assert_eq!((car["active_version"].as_str(), &car["versions"]), (Some("1.0.0"), &json!(["1.0.0"])));
    assert!(is_sha256(&car["plugin_sha256"]) && is_sha256(&car["model_sha256"]), "{car}");
    let fields: Vec<&str> = car["inputs"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(fields, CAR_FIELDS);
    assert!(list.iter().any(|b| b["name"] == "iris") && list.iter().any(|b| b["name"] == "housing"));

    let openapi = server.get("/openapi.json");
    assert_eq!(openapi.status, 200);
    assert!(openapi.is_json(), "/openapi.json is not JSON: {}", openapi.text);
    assert!(openapi.json["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", openapi.json["openapi"]);
    let paths = openapi.json["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/predict/{bundle}", "post"),
        ("/v1/predict/{bundle}/batch", "post"),
        ("/v1/bundles", "get"),
        ("/v1/predictions/{id}", "get"),
        ("/v1/audit", "get"),
        ("/v1/audit/verify", "get"),
        ("/health", "get"),
        ("/health/detailed", "get"),
        ("/metrics", "get"),
        ("/v2", "get"),
        ("/v2/health/live", "get"),
        ("/v2/health/ready", "get"),
        ("/v2/models/{model}", "get"),
        ("/v2/models/{model}/ready", "get"),
        ("/v2/models/{model}/infer", "post"),
        ("/v2/models/{model}/versions/{version}", "get"),
        ("/v2/models/{model}/versions/{version}/ready", "get"),
        ("/v2/models/{model}/versions/{version}/infer", "post"),
    ] {
        assert!(paths.get(path).is_some_and(|item| item.get(method).is_some()), "{method} {path} not in the document");
    }

    // The address line is the only thing on stdout: logs go to stderr.
    assert_eq!(server.stdout().lines().count(), 1, "stdout: {:?}", server.stdout());
}

#[test]
fn a_car_price_prediction_is_answered_stored_and_retrievable() {
    let server = Server::start(&all_bundles());
    let request = with(with(car(), "forecast_months", json!([6, 24, 36])), "annual_mileage", json!(10000));
    let reply = server.post_json("/v1/predict/car-price", &request);
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = &reply.json;
    let id = body["prediction_id"].as_str().expect("a prediction id");
    assert!(is_uuid_v7(id), "{id} is not a UUIDv7");
    assert_eq!(reply.request_id(), id, "x-request-id must be the prediction id");
    assert_eq!((body["bundle"].as_str(), body["version"].as_str()), (Some("car-price"), Some("1.0.0")));
    assert!(number(&body["latency_ms"], "latency_ms") >= 0.0);
    let outputs = &body["outputs"];
    assert_eq!(outputs["currency"], "USD");
    let price = number(&outputs["price"], "price");
    assert!(price.is_finite() && price > 0.0, "{outputs}");
    let forecast = outputs["forecast"].as_array().expect("a forecast per month asked");
    let months: Vec<u64> = forecast.iter().map(|entry| entry["months"].as_u64().unwrap()).collect();
    assert_eq!(months, [6, 24, 36], "{outputs}");
    assert!(forecast.iter().all(|entry| entry["price"].as_f64().is_some_and(|p| p.is_finite() && p > 0.0)));

    let one = server.post_json("/v1/predict/car-price", &with(car(), "forecast_months", json!([12])));
    assert_eq!(one.json["outputs"]["forecast"].as_array().map(Vec::len), Some(1), "{one:?}");
    let none = server.post_json("/v1/predict/car-price", &car());
    assert_eq!(none.status, 200);
    assert!(none.json["outputs"].get("forecast").is_none(), "no forecast asked, none given: {:?}", none.json);

    let stored = server.get(&format!("/v1/predictions/{id}"));
    assert_eq!(stored.status, 200, "{stored:?}");
    let record = &stored.json;
    let bundles = server.get("/v1/bundles").json;
    let listed = bundles["bundles"].as_array().unwrap().iter().find(|b| b["name"] == "car-price").unwrap().clone();
    assert_eq!(record["id"].as_str(), Some(id));
    assert_eq!((record["bundle"].as_str(), record["version"].as_str()), (Some("car-price"), Some("1.0.0")));
    assert_eq!(record["plugin_sha256"], listed["plugin_sha256"]);
    assert_eq!(record["model_sha256"], listed["model_sha256"]);
    assert!(is_sha256(&record["input_sha256"]), "{record}");
    assert!(record["time"].as_str().is_some_and(|t| !t.is_empty()), "{record}");
    assert_eq!(record["input"], request, "the stored input is the request");
    assert_eq!(&record["outputs"], outputs, "the stored outputs are the answered ones");
}

#[test]
fn housing_and_iris_predictions_match_their_golden_rows() {
    let server = Server::start(&all_bundles());
    for row in golden("housing").iter().take(10) {
        let reply = server.post_json("/v1/predict/housing", &row.request);
        assert_eq!(reply.status, 200, "{reply:?}");
        let expected = row.expected["price"][0].as_f64().unwrap();
        assert_close(number(&reply.json["outputs"]["price"], "price"), expected, 1e-3, "housing price");
    }
    const SPECIES: [&str; 3] = ["setosa", "versicolor", "virginica"];
    for row in golden("iris").iter().take(10) {
        let reply = server.post_json("/v1/predict/iris", &row.request);
        assert_eq!(reply.status, 200, "{reply:?}");
        let outputs = &reply.json["outputs"];
        let label = row.expected["label"][0].as_u64().unwrap() as usize;
        assert_eq!(outputs["class"], SPECIES[label], "{outputs} for {}", row.request);
        for (species, expected) in SPECIES.iter().zip(row.expected["probabilities"][0].as_array().unwrap()) {
            let actual = number(&outputs["probabilities"][species], species);
            assert!((actual - expected.as_f64().unwrap()).abs() < 1e-5, "{species}: {actual} vs {expected}");
        }
        let stored = server.get(&format!("/v1/predictions/{}", reply.json["prediction_id"].as_str().unwrap()));
        assert_eq!((stored.json["bundle"].as_str(), &stored.json["outputs"]), (Some("iris"), outputs));
    }
}

#[test]
fn golden_car_price_rows_through_http_give_the_golden_prices() {
    let server = Server::start(&all_bundles());
    let rows = golden("car-price");
    assert!(rows.len() > 100);
    for row in &rows {
        let reply = server.post_json("/v1/predict/car-price", &row.request);
        assert_eq!(reply.status, 200, "{reply:?}");
        let outputs = &reply.json["outputs"];
        let expected: Vec<f64> =
            row.expected["price"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_close(number(&outputs["price"], "price"), expected[0], 1e-3, &format!("price of {}", row.request));
        let asked = row.request.get("forecast_months").and_then(Value::as_array).cloned().unwrap_or_default();
        let forecast = outputs.get("forecast").and_then(Value::as_array).cloned().unwrap_or_default();
        assert_eq!(forecast.len(), asked.len(), "{outputs} for {}", row.request);
        for ((entry, months), expected) in forecast.iter().zip(&asked).zip(&expected[1..]) {
            assert_eq!(&entry["months"], months);
            assert_close(number(&entry["price"], "forecast price"), *expected, 1e-3, "forecast price");
        }
    }
}

#[test]
fn a_batch_answers_the_valid_instances_and_reports_the_invalid_one_at_its_index() {
    let server = Server::start(&all_bundles());
    let instances = vec![
        with(car(), "forecast_months", json!([6, 24, 36])),
        with(car(), "make", json!("ford")),
        with(with(car(), "mileage", json!(120000)), "forecast_months", json!([12])),
        with(car(), "body", json!("wagon")),
    ];
    let reply = server.post_json("/v1/predict/car-price/batch", &json!({"instances": instances}));
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = &reply.json;
    assert_eq!((body["bundle"].as_str(), body["version"].as_str()), (Some("car-price"), Some("1.0.0")));
    assert_eq!((body["succeeded"].as_u64(), body["failed"].as_u64()), (Some(3), Some(1)), "{body}");
    assert!(number(&body["latency_ms"], "latency_ms") >= 0.0);
    let items = body["predictions"].as_array().expect("predictions");
    assert_eq!(items.len(), 4);
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item["index"].as_u64(), Some(index as u64), "{item}");
    }
    let failed = &items[1];
    assert_eq!(
        (failed["error"]["code"].as_str(), failed["error"]["field"].as_str()),
        (Some("invalid_field"), Some("make"))
    );
    assert!(failed.get("prediction_id").is_none() && failed.get("outputs").is_none(), "{failed}");

    let mut ids = Vec::new();
    for index in [0, 2, 3] {
        let item = &items[index];
        assert!(item.get("error").is_none(), "{item}");
        let id = item["prediction_id"].as_str().expect("an id").to_owned();
        assert!(is_uuid_v7(&id), "{id}");
        // The same instance alone gives the same answer.
        let single = server.post_json("/v1/predict/car-price", &instances[index]);
        assert_eq!(single.status, 200, "{single:?}");
        let (batch_out, single_out) = (&item["outputs"], &single.json["outputs"]);
        assert_close(number(&batch_out["price"], "price"), number(&single_out["price"], "price"), 1e-6, "batch price");
        assert_eq!(batch_out["forecast"].as_array().map(Vec::len), single_out["forecast"].as_array().map(Vec::len));
        // And it is stored as answered.
        let stored = server.get(&format!("/v1/predictions/{id}"));
        assert_eq!(stored.status, 200, "{stored:?}");
        assert_eq!((&stored.json["input"], &stored.json["outputs"]), (&instances[index], batch_out));
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "batch prediction ids are distinct");
}

#[test]
fn a_batch_larger_than_the_plugin_pool_answers_every_row_as_a_single_prediction_would() {
    // Three instances for the whole appliance: a batch's rows hold theirs from preprocess
    // to postprocess, so the batch must run in pieces that fit the pool, and a row refused
    // in the middle must not shift the others.
    let server = Server::builder(&all_bundles()).env("FORECOURT_PLUGINS__MAX_INSTANCES", "3").start();
    let instances: Vec<Value> = (0..20)
        .map(
            |index| {
                if index == 9 { with(car(), "doors", json!(7)) } else { with(car(), "mileage", json!(4000 * index)) }
            },
        )
        .collect();
    let reply = server.post_json("/v1/predict/car-price/batch", &json!({"instances": instances}));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!((reply.json["succeeded"].as_u64(), reply.json["failed"].as_u64()), (Some(19), Some(1)), "{reply:?}");
    let items = reply.json["predictions"].as_array().expect("predictions");
    assert_eq!(items[9]["error"]["field"].as_str(), Some("doors"), "{}", items[9]);
    for (index, item) in items.iter().enumerate().filter(|(index, _)| *index != 9) {
        assert_eq!(item["index"].as_u64(), Some(index as u64), "{item}");
        let single = server.post_json("/v1/predict/car-price", &instances[index]);
        assert_eq!(single.status, 200, "{single:?}");
        let (batch_price, single_price) = (&item["outputs"]["price"], &single.json["outputs"]["price"]);
        assert_close(number(batch_price, "price"), number(single_price, "price"), 1e-6, &format!("row {index}"));
    }
}

#[test]
fn the_audit_trail_pages_with_after_and_limit_and_verifies() {
    let server = Server::start(&all_bundles());
    let all = server.get("/v1/audit?limit=1000");
    assert_eq!(all.status, 200, "{all:?}");
    let records = all.json["records"].as_array().expect("records").clone();
    assert!(all.json["next_after"].is_null(), "{}", all.json);
    let kinds: Vec<&str> = records.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    for kind in ["started", "config_loaded", "bundle_loaded", "bundle_activated"] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "bundle_loaded").count(), 4, "{kinds:?}");
    assert!(records.len() >= 7, "{kinds:?}");
    // A hash chain: seq 1, 2, 3, ...; each record's prev_hash is the hash before it.
    let mut previous = "0".repeat(64);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["seq"].as_u64(), Some(index as u64 + 1), "{record}");
        assert_eq!(record["prev_hash"].as_str(), Some(previous.as_str()), "{record}");
        assert!(is_sha256(&record["hash"]) && record["time"].is_string() && record["details"].is_object());
        previous = record["hash"].as_str().unwrap().to_owned();
    }

    // Pages of 3, following next_after, give the same records.
    let mut paged = Vec::new();
    let mut after: Option<u64> = None;
    for _ in 0..=records.len() {
        let query = after.map(|seq| format!("&after={seq}")).unwrap_or_default();
        let page = server.get(&format!("/v1/audit?limit=3{query}"));
        assert_eq!(page.status, 200, "{page:?}");
        let got = page.json["records"].as_array().unwrap();
        assert!(got.len() <= 3);
        paged.extend(got.iter().cloned());
        match page.json["next_after"].as_u64() {
            Some(next) => {
                assert_eq!(Some(next), got.last().and_then(|r| r["seq"].as_u64()), "next_after is the last seq");
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(paged, records);
    let from_two = server.get("/v1/audit?after=2&limit=2");
    let seqs: Vec<u64> =
        from_two.json["records"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4]);
    let past_end = server.get(&format!("/v1/audit?after={}", records.len()));
    assert_eq!((past_end.status, &past_end.json["records"]), (200, &json!([])));
    for bad in ["limit=0", "limit=1001", "after=soon", "colour=red"] {
        let reply = server.get(&format!("/v1/audit?{bad}"));
        assert_eq!(
            (reply.status, reply.json["error"]["code"].as_str()),
            (422, Some("invalid_field")),
            "{bad}: {reply:?}"
        );
    }

    let verify = server.get("/v1/audit/verify");
    assert_eq!(verify.status, 200);
    let report = &verify.json;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"].as_u64(), Some(records.len() as u64), "{report}");
    assert_eq!(report["head_seq"].as_u64(), Some(records.len() as u64), "{report}");
    assert_eq!(report["head_hash"].as_str(), Some(previous.as_str()), "{report}");
    assert_eq!(report["problems"], json!([]));
    assert!(report.get("next_after").is_none(), "one page holds it all: {report}");

    // Page by page, each linked to the one before, to the same end.
    let (mut after, mut verified) = (0, 0);
    loop {
        let page = server.get(&format!("/v1/audit/verify?after={after}&limit=2")).json;
        assert_eq!(page["ok"], true, "{page}");
        verified += page["records"].as_u64().unwrap();
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => {
                assert_eq!(page["head_hash"].as_str(), Some(previous.as_str()), "{page}");
                break;
            }
        }
    }
    assert_eq!(verified, records.len() as u64);
    for bad in ["limit=0", "limit=1000001", "after=-1", "from=3"] {
        let reply = server.get(&format!("/v1/audit/verify?{bad}"));
        assert_eq!(
            (reply.status, reply.json["error"]["code"].as_str()),
            (422, Some("invalid_field")),
            "{bad}: {reply:?}"
        );
    }
}

#[test]
fn one_bundle_reads_at_its_own_path_and_trailing_slashes_are_tolerated() {
    let server = Server::start(&all_bundles());
    let one = server.get("/v1/bundles/car-price");
    assert_eq!(one.status, 200, "{one:?}");
    let listed = server.get("/v1/bundles").json["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|bundle| bundle["name"] == "car-price")
        .cloned()
        .unwrap();
    assert_eq!(one.json, listed, "the same summary as in the list");
    let unknown = server.get(&format!("/v1/bundles/{}", "n".repeat(3000)));
    assert_eq!((unknown.status, unknown.json["error"]["code"].as_str()), (404, Some("unknown_bundle")), "{unknown:?}");
    assert!(unknown.text.len() < 400, "the name is not echoed whole: {}", unknown.text.len());

    for path in ["/v1/bundles/", "/v1/bundles/car-price/", "/health/"] {
        assert_eq!(server.get(path).status, 200, "{path}");
    }
    let slashed = server.post_json("/v1/predict/car-price/", &car());
    assert_eq!(slashed.status, 200, "{slashed:?}");
}

#[test]
fn cors_is_off_by_default_and_answers_only_the_configured_origins() {
    let preflight = [
        ("origin", "https://kiosk.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization, content-type"),
    ];
    let off = Server::start(&all_bundles());
    let reply = off.request_with_headers("OPTIONS", "/v1/predict/car-price", &preflight, None);
    assert!(reply.headers.get("access-control-allow-origin").is_none(), "no CORS unless configured: {reply:?}");

    let on = Server::builder(&all_bundles())
        .env("FORECOURT_SERVER__CORS_ALLOWED_ORIGINS", "https://kiosk.example.com,http://localhost:3000")
        .start();
    let reply = on.request_with_headers("OPTIONS", "/v1/predict/car-price", &preflight, None);
    assert!((200..300).contains(&reply.status), "{reply:?}");
    let header = |reply: &forecourt_testkit::Reply, name: &str| reply.header(name).map(str::to_ascii_lowercase);
    assert_eq!(header(&reply, "access-control-allow-origin").as_deref(), Some("https://kiosk.example.com"));
    let methods = header(&reply, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("post"), "{methods}");
    let headers = header(&reply, "access-control-allow-headers").unwrap_or_default();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");

    let body = car().to_string();
    let actual = on.request_with_headers(
        "POST",
        "/v1/predict/car-price",
        &[("origin", "https://kiosk.example.com")],
        Some(body.as_bytes()),
    );
    assert_eq!(actual.status, 200, "{actual:?}");
    assert_eq!(header(&actual, "access-control-allow-origin").as_deref(), Some("https://kiosk.example.com"));
    let exposed = header(&actual, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    let foreign = on.request_with_headers(
        "OPTIONS",
        "/v1/predict/car-price",
        &[preflight[1], ("origin", "https://evil.example")],
        None,
    );
    assert!(foreign.headers.get("access-control-allow-origin").is_none(), "another origin is not allowed: {foreign:?}");

    let refused = Server::builder(&all_bundles())
        .env("FORECOURT_SERVER__CORS_ALLOWED_ORIGINS", "[\"kiosk.example.com/\"]")
        .run_to_exit(std::time::Duration::from_secs(30));
    assert!(!refused.status.success(), "an origin that is not scheme://host is refused at start");
    assert!(refused.stderr.contains("cors_allowed_origins"), "{}", refused.stderr);
}
