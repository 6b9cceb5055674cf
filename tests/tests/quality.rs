//! Outcomes and live accuracy against the real binary: outcomes recorded once and checked
//! against each bundle's `[outcome]`, stored, audited, counted into the live figures of the
//! version that predicted (beside training's), exported to Prometheus, and kept across a
//! restart.

use forecourt_testkit::{
    Client, Server, add_token, all_bundles, golden, metric_sample, model_file, promtool_check, temp_dir,
};
use serde_json::{Value, json};

struct Tokens {
    kiosk: String,
    other_kiosk: String,
    viewer: String,
    admin: String,
}

fn tokens(data_dir: &std::path::Path) -> Tokens {
    Tokens {
        kiosk: add_token(data_dir, "kiosk", "lot-a", &[]),
        other_kiosk: add_token(data_dir, "kiosk", "lot-b", &[]),
        viewer: add_token(data_dir, "viewer", "manager", &[]),
        admin: add_token(data_dir, "admin", "ops", &[]),
    }
}

/// The held-out figures of a bundle's training (`metrics.test` of its metrics.json).
fn training(plugin: &str) -> Value {
    let text = std::fs::read_to_string(model_file(plugin, "metrics.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["metrics"]["test"].clone()
}

fn predict(client: &Client, bundle: &str, request: &Value) -> (String, Value) {
    let reply = client.post_json(&format!("/v1/predict/{bundle}"), request);
    assert_eq!(reply.status, 200, "{reply:?}");
    (reply.json["prediction_id"].as_str().unwrap().to_owned(), reply.json["outputs"].clone())
}

fn record(client: &Client, id: &str, actual: Value) -> forecourt_testkit::Reply {
    client.post_json(&format!("/v1/predictions/{id}/outcome"), &json!({ "actual": actual }))
}

#[track_caller]
fn assert_near(actual: &Value, expected: f64, what: &str) {
    let actual = actual.as_f64().unwrap_or_else(|| panic!("{what}: {actual} is not a number"));
    assert!((actual - expected).abs() <= 1e-9 * expected.abs().max(1.0), "{what}: {actual} against {expected}");
}

#[test]
fn outcomes_give_live_accuracy_beside_training_and_survive_a_restart() {
    let data = temp_dir();
    let tokens = tokens(data.path());
    let mut server = Server::builder(&all_bundles()).data_dir(data.path()).start();
    let kiosk = server.client().as_token(Some(&tokens.kiosk));

    // 20 valuations, each sold for a known share above or below it.
    let shares = [1.10, 0.90, 1.25, 0.95, 1.02];
    let (mut abs, mut pct, mut squared) = (0.0, 0.0, 0.0);
    let mut ids = Vec::new();
    for (index, row) in golden("car-price").iter().take(20).enumerate() {
        let (id, outputs) = predict(&kiosk, "car-price", &row.request);
        let predicted = outputs["price"].as_f64().unwrap();
        let actual = (predicted * shares[index % shares.len()]).round();
        let reply = record(&kiosk, &id, json!(actual));
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(reply.json["prediction_id"], id.as_str());
        assert_eq!((reply.json["field"].as_str(), reply.json["actual"].as_f64()), (Some("price"), Some(actual)));
        assert_eq!(reply.json["predicted"].as_f64(), Some(predicted));
        let error = predicted - actual;
        (abs, pct, squared) = (abs + error.abs(), pct + (error / actual).abs(), squared + error * error);
        ids.push(id);
    }
    let (mae, mape, rmse) = (abs / 20.0, pct / 20.0, (squared / 20.0).sqrt());

    // Once only: a second outcome is refused, and nothing changes.
    let again = record(&kiosk, &ids[0], json!(1000));
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.json["error"]["code"], "conflict");
    assert!(again.json["error"]["message"].as_str().unwrap().contains("not replaced"), "{again:?}");

    // Hostile or wrong outcomes get the rule, never a panic, and record nothing.
    let (fresh, _) = predict(&kiosk, "car-price", &golden("car-price")[20].request);
    for (body, code, rule) in [
        (json!({"actual": "twelve grand"}), "invalid_field", "must be a number"),
        (json!({"actual": -5}), "invalid_field", "from 0 to"),
        (json!({"actual": 1e300}), "invalid_field", "from 0 to"),
        (json!({"actual": null}), "invalid_field", "must be a number"),
        (json!({}), "missing_field", "actual"),
        (json!({"actual": 5, "reason": "typo"}), "invalid_field", "reason"),
    ] {
        let reply = kiosk.post_json(&format!("/v1/predictions/{fresh}/outcome"), &body);
        assert_eq!((reply.status, reply.json["error"]["code"].as_str()), (422, Some(code)), "{body}: {reply:?}");
        assert!(reply.text.contains(rule), "{body}: {reply:?}");
    }
    let reply = record(&kiosk, "not-a-uuid", json!(5));
    assert_eq!((reply.status, reply.json["error"]["field"].as_str()), (422, Some("id")), "{reply:?}");
    let reply = record(&kiosk, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", json!(5));
    assert_eq!(reply.status, 404, "{reply:?}");
    // Another kiosk cannot see, so cannot judge, this kiosk's predictions; a viewer only looks.
    let reply = record(&server.client().as_token(Some(&tokens.other_kiosk)), &fresh, json!(5));
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = record(&server.client().as_token(Some(&tokens.viewer)), &fresh, json!(5));
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(kiosk.get(&format!("/v1/predictions/{fresh}")).json.get("outcome").is_none());
    // A bundle without [outcome] takes none.
    let admin = server.client().as_token(Some(&tokens.admin));
    let (hostile_id, _) = predict(&admin, "hostile", &json!({"attack": "none"}));
    let reply = record(&admin, &hostile_id, json!(1.5));
    assert_eq!((reply.status, reply.json["error"]["code"].as_str()), (409, Some("conflict")), "{reply:?}");
    assert!(reply.text.contains("takes no outcomes"), "{reply:?}");

    // The stored prediction carries its outcome.
    let stored = kiosk.get(&format!("/v1/predictions/{}", ids[2]));
    assert_eq!(stored.json["outcome"]["prediction_id"], ids[2].as_str(), "{stored:?}");

    let check = |client: &Client| {
        let viewer = client.as_token(Some(&tokens.viewer));
        let quality = viewer.get("/v1/bundles/car-price/quality");
        assert_eq!(quality.status, 200, "{quality:?}");
        assert_eq!(quality.json["outcome"]["field"], "price");
        let version = &quality.json["versions"][0];
        assert_eq!(version["active"], true);
        for window in ["since_loaded", "recent"] {
            let live = &version["live"][window];
            assert_eq!((live["kind"].as_str(), live["outcomes"].as_u64()), (Some("regression"), Some(20)), "{live}");
            assert_near(&live["mae"], mae, "mae");
            assert_near(&live["mape"], mape, "mape");
            assert_near(&live["rmse"], rmse, "rmse");
        }
        let trained = training("car-price");
        for figure in ["mae", "mape", "rmse", "r2"] {
            assert_eq!(version["training"][figure], trained[figure], "{figure}");
        }
        assert_eq!(viewer.get("/v1/bundles/nothing/quality").json["error"]["code"], "unknown_bundle");

        let exposition = client.as_token(Some(&tokens.admin)).get("/metrics").text;
        let labels = [("bundle", "car-price"), ("window", "since_loaded")];
        assert_eq!(metric_sample(&exposition, "forecourt_live_outcomes", &labels), Some(20.0));
        let scraped = metric_sample(&exposition, "forecourt_live_mape", &labels).expect("forecourt_live_mape");
        assert!((scraped - mape).abs() < 1e-9, "{scraped} against {mape}");
        let training_mae =
            metric_sample(&exposition, "forecourt_training_metric", &[("bundle", "car-price"), ("metric", "mae")]);
        assert_eq!(training_mae, trained["mae"].as_f64());
        exposition
    };
    let exposition = check(&server.client());
    assert_eq!(metric_sample(&exposition, "forecourt_outcomes_total", &[("bundle", "car-price")]), Some(20.0));
    promtool_check(&exposition);

    // Each outcome is in the audit trail, which still verifies.
    let admin = server.client().as_token(Some(&tokens.admin));
    let audit = admin.get("/v1/audit?limit=1000");
    let outcomes: Vec<&Value> =
        audit.json["records"].as_array().unwrap().iter().filter(|r| r["kind"] == "outcome_recorded").collect();
    assert_eq!(outcomes.len(), 20, "{audit:?}");
    assert_eq!(outcomes[0]["details"]["prediction_id"], ids[0].as_str());
    assert_eq!(admin.get("/v1/audit/verify").json["ok"], true);

    // Killed and started again: the figures are counted back from the stored outcomes.
    server.restart();
    check(&server.client());
    let reply = record(&server.client().as_token(Some(&tokens.kiosk)), &ids[0], json!(1000));
    assert_eq!(reply.status, 409, "still once only after a restart: {reply:?}");
}

#[test]
fn a_classifiers_outcomes_give_its_accuracy_and_confusion() {
    let server = Server::start(&all_bundles());
    let client = server.client();
    let classes = ["setosa", "versicolor", "virginica"];
    let mut confusion = [[0u64; 3]; 3];
    let rows = golden("iris");
    for (index, row) in rows.iter().enumerate() {
        let (id, outputs) = predict(&client, "iris", &row.request);
        let predicted = classes.iter().position(|c| outputs["class"] == *c).unwrap();
        // Every fourth flower turns out to be the next species.
        let actual = if index % 4 == 0 { (predicted + 1) % 3 } else { predicted };
        let reply = record(&client, &id, json!(classes[actual]));
        assert_eq!(reply.status, 201, "{reply:?}");
        confusion[actual][predicted] += 1;
    }
    let reply = record(&client, &predict(&client, "iris", &rows[0].request).0, json!("rose"));
    assert_eq!(reply.status, 422);
    assert!(reply.text.contains("one of setosa, versicolor, virginica"), "{reply:?}");

    let quality = client.get("/v1/bundles/iris/quality");
    let live = &quality.json["versions"][0]["live"]["since_loaded"];
    let wrong = rows.len().div_ceil(4);
    assert_eq!((live["kind"].as_str(), live["outcomes"].as_u64()), (Some("classification"), Some(rows.len() as u64)));
    assert_near(&live["accuracy"], 1.0 - wrong as f64 / rows.len() as f64, "accuracy");
    assert_eq!(live["confusion_matrix"]["labels"], json!(classes));
    assert_eq!(live["confusion_matrix"]["rows_true_cols_predicted"], json!(confusion));
    assert_eq!(quality.json["versions"][0]["training"]["accuracy"], training("iris")["accuracy"]);
    let exposition = client.get("/metrics").text;
    let accuracy = metric_sample(&exposition, "forecourt_live_accuracy", &[("bundle", "iris"), ("window", "recent")]);
    assert_eq!(accuracy, live["accuracy"].as_f64());
}
