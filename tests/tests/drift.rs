//! Drift against the real binary: car-price fed cars drawn from its training profile
//! reports no drift; fed a shifted population (mileage doubled, one make only), exactly the
//! shifted features go to alert, in the drift route, the metrics, the audit trail and a
//! `drift` event on the fleet's MQTT broker.
//!
//! The cars are drawn feature by feature from the bundle's own profile.json (each numeric
//! feature's bin by its training share, then a value inside the bin's training range; each
//! categorical value by its share): the training population's marginals, which are what
//! PSI compares.

use std::time::{Duration, Instant};

use forecourt_testkit::{Broker, Client, Server, all_bundles, metric_sample, model_file};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// SplitMix64: a seeded, reproducible stream for the draws.
struct Draws(u64);

impl Draws {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index drawn by `shares`.
    fn pick(&mut self, shares: &[Value]) -> usize {
        let mut left = self.unit();
        for (index, share) in shares.iter().enumerate() {
            left -= share.as_f64().unwrap();
            if left < 0.0 {
                return index;
            }
        }
        shares.iter().rposition(|share| share.as_f64().unwrap() > 0.0).unwrap()
    }
}

/// One car drawn from the training profile; `shifted`: mileage doubled and a Cadillac.
fn draw_car(profile: &Value, draws: &mut Draws, shifted: bool) -> Value {
    let mut car = json!({});
    for feature in profile["features"].as_array().unwrap() {
        let name = feature["name"].as_str().unwrap();
        let bin = draws.pick(feature["shares"].as_array().unwrap());
        if feature["kind"] == "categorical" {
            car[name] = feature["values"][bin].clone();
            continue;
        }
        let (low, high) = (feature["minimums"][bin].as_f64().unwrap(), feature["maximums"][bin].as_f64().unwrap());
        let value = (low + draws.unit() * (high - low)).round();
        car[name] = match name {
            "cruise" | "sound" | "leather" => json!(value == 1.0),
            _ => json!(value as i64),
        };
    }
    if shifted {
        car["mileage"] = json!(car["mileage"].as_i64().unwrap() * 2);
        car["make"] = json!("cadillac");
    }
    car
}

fn feed(client: &Client, profile: &Value, draws: &mut Draws, shifted: bool, count: usize) {
    for _ in 0..count {
        let reply = client.post_json("/v1/predict/car-price", &draw_car(profile, draws, shifted));
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}

fn statuses(drift: &Value) -> Vec<(String, String)> {
    drift["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f["status"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn training_like_cars_show_no_drift_and_a_shifted_population_alerts_on_exactly_what_shifted() {
    let broker = Broker::start();
    let events = broker.subscribe("forecourt/kiosk-9/events");
    let server = Server::builder(&all_bundles())
        .env("FORECOURT_MQTT__BROKER", broker.url())
        .env("FORECOURT_MQTT__DEVICE_ID", "kiosk-9")
        .env("FORECOURT_QUALITY__DRIFT_CHECK_SECS", "1")
        .start();
    let client = server.client();
    let profile: Value =
        serde_json::from_str(&std::fs::read_to_string(model_file("car-price", "profile.json")).unwrap()).unwrap();
    let drift = || client.get("/v1/bundles/car-price/drift").json["versions"][0]["drift"].clone();

    // Too few rows: no figure, rather than noise.
    let mut draws = Draws(20261207);
    feed(&client, &profile, &mut draws, false, 100);
    let early = drift();
    assert_eq!((early["rows"].as_u64(), early["status"].clone()), (Some(100), Value::Null), "{early}");
    assert_eq!(early["features"], json!([]));

    feed(&client, &profile, &mut draws, false, 900);
    let steady = drift();
    assert_eq!(steady["rows"], 1000);
    assert_eq!(steady["status"], "ok", "{steady}");
    for (name, status) in statuses(&steady) {
        assert_eq!(status, "ok", "{name} drifts on training-like cars: {steady}");
    }

    // The window fills with the shifted population: mileage and make alert, nothing else.
    feed(&client, &profile, &mut draws, true, 1000);
    let shifted = drift();
    assert_eq!(shifted["status"], "alert", "{shifted}");
    let alerting: Vec<String> = statuses(&shifted)
        .into_iter()
        .filter(|(_, status)| status != "ok")
        .map(|(name, status)| format!("{name}:{status}"))
        .collect();
    assert_eq!(alerting, ["mileage:alert", "make:alert"], "{shifted}");
    let make = shifted["features"].as_array().unwrap().iter().find(|f| f["name"] == "make").unwrap();
    assert!(make["distance"].as_f64().unwrap() > 0.8, "{make}");

    // The watcher publishes it: gauges, an audit record, and the fleet's `drift` event.
    // It checks every second, so a check may have run while the shifted rows were still
    // coming in (make alerts before mileage does): wait for a check of the whole window.
    let deadline = Instant::now() + WAIT;
    loop {
        let exposition = client.get("/metrics").text;
        let status = metric_sample(&exposition, "forecourt_drift_status", &[("bundle", "car-price")]);
        let psi = metric_sample(&exposition, "forecourt_drift_psi", &[("bundle", "car-price"), ("feature", "mileage")]);
        if status == Some(2.0) && psi.is_some_and(|psi| psi > 0.25) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drift gauges never showed mileage's alert: status {status:?}, psi {psi:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let event = events
        .wait_for(WAIT, |message| message.json()["kind"] == "drift" && message.json()["details"]["status"] == "alert")
        .expect("a drift event reaches the broker");
    let details = &event.json()["details"];
    assert_eq!(
        (details["bundle"].as_str(), details["version"].as_str()),
        (Some("car-price"), Some("1.0.0")),
        "{details}"
    );
    for feature in details["features"].as_array().unwrap() {
        assert!(feature == "mileage" || feature == "make", "{details}");
    }
    let audit = client.get("/v1/audit?limit=1000").json;
    assert!(audit["records"].as_array().unwrap().iter().any(|r| r["kind"] == "drift"), "{audit}");
}
