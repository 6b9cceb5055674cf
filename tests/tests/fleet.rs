//! The fleet over MQTT against a real Mosquitto: appliances (the real binary) linked to a
//! private broker, bundles pushed with `forecourt fleet push` and raw requests with
//! `mosquitto_pub`, progress watched on the broker as a fleet manager would.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use forecourt_testkit::{
    Broker, FleetKit, Load, Message, Packaging, SHIPPED, Server, Subscription, User, car, forecourt, sha256_hex,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// The version a prediction of car-price was served by.
fn served_version(server: &Server) -> String {
    let reply = server.post_json("/v1/predict/car-price", &car());
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json["version"].as_str().unwrap().to_owned()
}

/// A folder served over HTTP by Python's own file server (a real HTTP server, as a
/// fleet's file host would be); stopped on drop.
struct HttpFiles {
    child: std::process::Child,
    port: u16,
}

impl HttpFiles {
    fn serve(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the file server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for HttpFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// car-price's active version and every loaded one, from /v1/bundles.
fn car_price_versions(server: &Server) -> (String, Vec<String>) {
    let reply = server.get("/v1/bundles");
    let entry = reply.json["bundles"].as_array().unwrap().iter().find(|b| b["name"] == "car-price").unwrap().clone();
    let versions = entry["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    (entry["active_version"].as_str().unwrap().to_owned(), versions)
}

/// Waits for the device's retained status to say it is online.
#[track_caller]
fn await_online(broker: &Broker, device: &str) -> Value {
    let statuses = broker.subscribe(&format!("forecourt/{device}/status"));
    let status = statuses.wait_for(WAIT, |message| message.json()["online"] == true).expect("the device comes online");
    status.json()
}

/// The steps of one deployment's messages, in the order they arrived.
fn steps(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|message| message.json()["step"].as_str().unwrap_or("?").to_owned()).collect()
}

/// Waits for the final message of deployment `id` on `subscription`, returning all of its messages.
#[track_caller]
fn await_outcome(subscription: &Subscription, id: &str) -> Vec<Message> {
    subscription
        .wait_for(WAIT, |message| {
            message.topic.ends_with(&format!("/deployments/{id}")) && message.json()["final"] == true
        })
        .unwrap_or_else(|| panic!("deployment {id} never finished; got {:?}", subscription.received()));
    subscription
        .received()
        .into_iter()
        .filter(|message| message.topic.ends_with(&format!("/deployments/{id}")))
        .collect()
}

/// `forecourt fleet push` of `fcb` to one device, as deployment `id`, signed with the kit's
/// key, plus `extra` options.
fn push(kit: &FleetKit, broker: &Broker, fcb: &Path, device: &str, id: &str, extra: &[&str]) -> Output {
    let mut args = kit.push_args(broker, fcb, device, id);
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    forecourt(&args.iter().map(|arg| arg as &dyn AsRef<OsStr>).collect::<Vec<_>>())
}

/// `forecourt fleet push` like [`push`], left running in the background (output discarded),
/// for tests that stop the broker or the appliance under it.
fn spawn_push(
    kit: &FleetKit,
    broker: &Broker,
    fcb: &Path,
    device: &str,
    id: &str,
    extra: &[&str],
) -> std::process::Child {
    std::process::Command::new(forecourt_testkit::forecourt_binary())
        .args(["fleet", "push", "--broker", &broker.url(), "--device", device, "--id", id])
        .args(extra)
        .arg("--key")
        .arg(kit.key())
        .arg("--bundle")
        .arg(fcb)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("forecourt runs")
}

#[test]
fn a_signed_bundle_pushed_to_a_device_serves_at_once_without_a_failed_request_and_rolls_back() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    let server = kit.appliance(&broker, "kiosk-1", &["east"]).start();
    let status = await_online(&broker, "kiosk-1");
    assert_eq!(status["bundles"]["car-price"], "1.0.0", "{status}");
    assert_eq!(status["groups"], json!(["east"]));
    // The fleet's counters exist at zero before anything happened, for every label.
    let metrics = server.get("/metrics").text;
    for series in [
        r#"forecourt_fleet_deployments_total{action="deploy",outcome="rolled_back"} 0"#,
        r#"forecourt_fleet_deployments_total{action="remove",outcome="rejected"} 0"#,
        r#"forecourt_fleet_published_total{kind="event"} "#,
        "forecourt_fleet_connections_total 1",
    ] {
        assert!(metrics.contains(series), "{series} missing in\n{metrics}");
    }
    let progress = broker.subscribe("forecourt/kiosk-1/deployments/+");
    let fcb = kit.package("1.1.0", Packaging::Signed);

    let load = Load::start(server.client());
    let pushed = Instant::now();
    let pushed_output = push(&kit, &broker, &fcb, "kiosk-1", "rollout-1", &["--timeout", "30s"]);
    // Let the load run on the new version for a moment before stopping it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_version(&server) != "1.1.0" && Instant::now() < deadline {}
    let report = load.finish();
    let stdout = String::from_utf8_lossy(&pushed_output.stdout);
    let stderr = String::from_utf8_lossy(&pushed_output.stderr);
    assert!(pushed_output.status.success(), "push failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("kiosk-1"), "{stdout}");

    assert!(report.failures.is_empty(), "requests failed across the switch: {:?}", report.failures);
    let switched = report.versions.iter().find(|(_, version)| version == "1.1.0").map(|(at, _)| *at);
    let switched =
        switched.unwrap_or_else(|| panic!("the load never saw 1.1.0: {:?} ({} ok)", report.versions, report.ok));
    let took = switched.duration_since(pushed);
    eprintln!("push to first prediction by 1.1.0: {took:?} ({} requests, none failed)", report.ok);
    assert!(took < Duration::from_secs(2), "the new version served only after {took:?}");

    let messages = await_outcome(&progress, "rollout-1");
    assert_eq!(steps(&messages), ["received", "verified", "staged", "loaded", "smoke_tested", "active"]);
    let outcome = messages.last().unwrap().json();
    assert_eq!((outcome["ok"].clone(), outcome["previous"].clone()), (json!(true), json!("1.0.0")), "{outcome}");
    assert_eq!(car_price_versions(&server), ("1.1.0".to_owned(), vec!["1.0.0".to_owned(), "1.1.0".to_owned()]));
    let status =
        broker.subscribe("forecourt/kiosk-1/status").wait_for(WAIT, |m| m.json()["bundles"]["car-price"] == "1.1.0");
    assert!(status.is_some(), "the retained status follows the new version");
    // The published contract follows the activation.
    let documented = |server: &Server| {
        let document = server.get("/openapi.json").json;
        document["components"]["schemas"]["CarPriceRequest"]["description"].as_str().unwrap_or_default().to_owned()
    };
    assert!(documented(&server).contains("(bundle version 1.1.0)"), "{}", documented(&server));

    let rollback = forecourt(&[
        &"fleet",
        &"rollback",
        &"--broker",
        &broker.url(),
        &"--key",
        &kit.key(),
        &"--bundle",
        &"car-price",
        &"--device",
        &"kiosk-1",
    ]);
    assert!(rollback.status.success(), "{}", String::from_utf8_lossy(&rollback.stderr));
    assert_eq!(served_version(&server), "1.0.0");
    assert_eq!(car_price_versions(&server).0, "1.0.0");
    assert!(documented(&server).contains("(bundle version 1.0.0)"), "{}", documented(&server));

    // `fleet status` lists the device from its retained status, as a table and as JSON.
    let url = broker.url();
    let table = forecourt_testkit::succeed(&[&"fleet", &"status", &"--broker", &url]);
    assert!(table.contains("kiosk-1") && table.contains("car-price 1.0.0") && table.contains("east"), "{table}");
    let listed: Value =
        serde_json::from_str(&forecourt_testkit::succeed(&[&"fleet", &"status", &"--broker", &url, &"--json"]))
            .expect("--json prints JSON");
    assert_eq!(listed["kiosk-1"]["bundles"]["car-price"], "1.0.0", "{listed}");

    // The active version cannot be removed; the kept one can, and its files go.
    let remove = |version: &str| {
        forecourt(&[
            &"fleet",
            &"remove",
            &"--broker",
            &url,
            &"--key",
            &kit.key(),
            &"--bundle",
            &"car-price",
            &"--version",
            &version,
            &"--device",
            &"kiosk-1",
        ])
    };
    assert!(!remove("1.0.0").status.success(), "removing the active version must fail");
    let removed = remove("1.1.0");
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    assert_eq!(car_price_versions(&server), ("1.0.0".to_owned(), vec!["1.0.0".to_owned()]));
    assert!(!server.data_dir().join("fleet/bundles/car-price/1.1.0").exists(), "the removed version's files are gone");

    // The same request delivered again is answered with its recorded outcome, not run again.
    let before = server.get("/v1/audit?limit=1000").json["records"].as_array().unwrap().len();
    let again = push(&kit, &broker, &fcb, "kiosk-1", "rollout-1", &[]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(car_price_versions(&server).0, "1.0.0", "a repeated request must not switch again");
    let after = server.get("/v1/audit?limit=1000").json["records"].as_array().unwrap().len();
    assert_eq!(before, after, "a repeated request must not run again");

    // A clean stop says goodbye with the full status; the broker must not follow it with the
    // Last Will (which names no versions).
    let statuses = broker.subscribe("forecourt/kiosk-1/status");
    server.sigterm();
    assert!(server.wait_exit(WAIT).is_some_and(|status| status.success()), "a clean stop");
    let goodbye = statuses.wait_for(WAIT, |m| m.json()["online"] == false).expect("the offline status");
    assert_eq!(goodbye.json()["bundles"]["car-price"], "1.0.0", "{}", goodbye.text());
    let retained = broker.subscribe("forecourt/kiosk-1/status").recv_timeout(WAIT).expect("a retained status");
    assert_eq!(retained.json(), goodbye.json(), "the goodbye stays the retained status");
}

#[test]
fn unsigned_tampered_malformed_and_failing_bundles_are_rejected_while_the_old_version_serves() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    // Requests over 1 MiB of bundle (about 1.4 MB of JSON) are refused.
    let server = kit.appliance(&broker, "kiosk-2", &[]).env("FORECOURT_MQTT__MAX_BUNDLE_MIB", "1").start();
    await_online(&broker, "kiosk-2");
    let progress = broker.subscribe("forecourt/kiosk-2/deployments/+");
    let cases = [
        (Packaging::Unsigned, "untrusted"),
        (Packaging::Tampered, "tampered"),
        (Packaging::FailsSmokeTest, "smoke_test_failed"),
    ];
    for (index, (packaging, code)) in cases.into_iter().enumerate() {
        let fcb = kit.package(&format!("1.{}.0", index + 2), packaging);
        let id = format!("bad-{index}");
        let pushed = push(&kit, &broker, &fcb, "kiosk-2", &id, &[]);
        assert!(!pushed.status.success(), "a {packaging:?} bundle must fail the push");
        let outcome = await_outcome(&progress, &id).last().unwrap().json();
        assert_eq!(
            (outcome["step"].as_str(), outcome["reason"]["code"].as_str()),
            (Some("rejected"), Some(code)),
            "{outcome}"
        );
        assert_eq!(served_version(&server), "1.0.0");
    }
    assert_eq!(car_price_versions(&server), ("1.0.0".to_owned(), vec!["1.0.0".to_owned()]));

    // Not even JSON, and signed JSON breaking a rule: each answered, the first under an id
    // of the appliance's making, the second on its own deployment topic.
    broker.publish("forecourt/kiosk-2/deploy", b"{\"action\": \"deploy\", \"id\": \"bad-json\", ", false);
    let answer = progress.wait_for(WAIT, |m| m.topic.contains("/deployments/refused-")).expect("an answer to garbage");
    assert_eq!(answer.json()["reason"]["code"], "malformed_request", "{}", answer.text());
    let signed = |request: &[u8]| kit.signed_request("kiosk-2", request, &[]);
    broker.publish(
        "forecourt/kiosk-2/deploy",
        &signed(br#"{"action":"deploy","id":"no-sha","bundle":{"inline":"AAAA"}}"#),
        false,
    );
    let outcome = await_outcome(&progress, "no-sha").last().unwrap().json();
    assert_eq!(outcome["reason"]["code"], "malformed_request");
    assert!(outcome["reason"]["message"].as_str().unwrap().contains("sha256"), "{outcome}");
    broker.publish(
        "forecourt/kiosk-2/deploy",
        &signed(br#"{"action":"rollback","id":"nothing-before","bundle":"car-price"}"#),
        false,
    );
    let outcome = await_outcome(&progress, "nothing-before").last().unwrap().json();
    assert_eq!((outcome["step"].clone(), outcome["reason"]["code"].clone()), (json!("rejected"), json!("not_found")));

    // Oversized: the packet is over the largest the appliance takes (its policy's limit), so
    // it is refused from its header, unread; the link comes back on a clean session, which
    // makes the broker drop the packet instead of delivering it again and again.
    let connections = server.get("/health/detailed").json["mqtt"]["connections"].as_u64().unwrap();
    let oversized = format!(
        r#"{{"action":"deploy","id":"too-big","bundle":{{"inline":"{}","sha256":"{}"}}}}"#,
        "A".repeat(2 << 20),
        "0".repeat(64)
    );
    broker.publish("forecourt/kiosk-2/deploy", &signed(oversized.as_bytes()), false);
    server
        .wait_for_log_line(WAIT, |line| line.contains("a packet over mqtt.max_bundle_mib"))
        .expect("the oversized packet is logged");
    await_health(&server, |mqtt| mqtt["connected"] == true && mqtt["connections"].as_u64() > Some(connections));

    // By URL: the sha256 must match what is downloaded.
    let fcb = kit.package("1.5.0", Packaging::Signed);
    let files = HttpFiles::serve(fcb.parent().unwrap());
    let url = files.url(fcb.file_name().unwrap().to_str().unwrap());
    let by_url = |id: &str, sha256: &str| {
        let request = json!({"action": "deploy", "id": id, "bundle": {"url": url, "sha256": sha256}});
        broker.publish("forecourt/kiosk-2/deploy", &signed(request.to_string().as_bytes()), false);
        await_outcome(&progress, id).last().unwrap().json()
    };
    let outcome = by_url("wrong-sha", &"0".repeat(64));
    assert_eq!(outcome["reason"]["code"], "transfer_failed", "{outcome}");
    let outcome = by_url("by-url", &sha256_hex(&std::fs::read(&fcb).unwrap()));
    assert_eq!((outcome["step"].clone(), outcome["version"].clone()), (json!("active"), json!("1.5.0")), "{outcome}");
    assert_eq!(served_version(&server), "1.5.0");

    // Every rejection is in the audit trail.
    let audit = server.get("/v1/audit?limit=1000").json;
    let rejected = audit["records"].as_array().unwrap().iter().filter(|r| r["kind"] == "bundle_rejected").count();
    assert_eq!(rejected, 4, "{audit}");
    assert_eq!(server.get("/health").status, 200);
}

/// Polls `check` until it gives a value, for state only an HTTP endpoint shows (no event
/// to await); panics with `what` after [`WAIT`].
#[track_caller]
fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until car-price's active version is `version`.
fn await_active(server: &Server, version: &str) {
    poll_until(&format!("car-price {version} never became active"), || {
        (car_price_versions(server).0 == version).then_some(())
    });
}

#[test]
fn a_canary_breaking_its_threshold_is_rolled_back_and_a_healthy_one_promoted() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    let server = kit.appliance(&broker, "kiosk-5", &[]).start();
    await_online(&broker, "kiosk-5");
    let progress = broker.subscribe("forecourt/kiosk-5/deployments/+");
    let history = broker.subscribe("forecourt/kiosk-5/history");

    // A p99 threshold no request can meet: rolled back on its first figures.
    let load = Load::start(server.client());
    let strict = push(
        &kit,
        &broker,
        &kit.package("1.1.0", Packaging::Signed),
        "kiosk-5",
        "canary-strict",
        &["--canary", "50", "--canary-window", "30s", "--max-p99-ms", "0.001"],
    );
    let report = load.finish();
    assert!(!strict.status.success(), "a rolled-back canary fails the push");
    let messages = await_outcome(&progress, "canary-strict");
    assert_eq!(steps(&messages), ["received", "verified", "staged", "loaded", "smoke_tested", "canary", "rolled_back"]);
    let outcome = messages.last().unwrap().json();
    assert_eq!(outcome["reason"]["code"], "canary_failed", "{outcome}");
    assert!(outcome["detail"]["requests"].as_u64().is_some_and(|n| n > 0), "{outcome}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(car_price_versions(&server), ("1.0.0".to_owned(), vec!["1.0.0".to_owned()]));

    // Within its thresholds for the whole window: promoted, the old version kept.
    let load = Load::start(server.client());
    let healthy = push(
        &kit,
        &broker,
        &kit.package("1.2.0", Packaging::Signed),
        "kiosk-5",
        "canary-healthy",
        &["--canary", "50", "--canary-window", "2s", "--max-p99-ms", "1000", "--max-error-rate", "0.01"],
    );
    let report = load.finish();
    let said = String::from_utf8_lossy(&healthy.stderr);
    assert!(healthy.status.success(), "{said}");
    // The window is announced, then counted while it runs (a line per quarter of it off a terminal).
    assert!(said.contains("kiosk-5  canary  car-price 1.2.0  50% of requests for 2 s"), "{said}");
    assert!(said.contains("kiosk-5  canary  1 s of 2 s"), "{said}");
    let messages = await_outcome(&progress, "canary-healthy");
    let outcome = messages.last().unwrap().json();
    assert_eq!((outcome["step"].clone(), outcome["ok"].clone()), (json!("active"), json!(true)), "{outcome}");
    let canary_requests = outcome["detail"]["requests"].as_u64().unwrap();
    assert!(canary_requests > 0, "{outcome}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let served: Vec<&str> = report.versions.iter().map(|(_, version)| version.as_str()).collect();
    assert!(
        served.contains(&"1.0.0") && served.contains(&"1.2.0"),
        "both versions served during the canary: {served:?}"
    );
    assert_eq!(car_price_versions(&server), ("1.2.0".to_owned(), vec!["1.0.0".to_owned(), "1.2.0".to_owned()]));

    let audit = server.get("/v1/audit?limit=1000").json;
    let kinds: Vec<&str> = audit["records"].as_array().unwrap().iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"rolled_back"), "the rollback is audited: {kinds:?}");

    // The device's retained history follows each outcome, newest first; `fleet history`
    // reads it from the broker, for one device or for all.
    history
        .wait_for(WAIT, |m| m.json()["deployments"][0]["deployment"] == "canary-healthy")
        .expect("the history follows the outcome");
    let url = broker.url();
    let listed =
        forecourt_testkit::succeed(&[&"fleet", &"history", &"--broker", &url, &"--device", &"kiosk-5", &"--json"]);
    let listed: Value = serde_json::from_str(&listed).expect("--json prints JSON");
    let deployments = listed["kiosk-5"]["deployments"].as_array().unwrap();
    let summary: Vec<(&str, &str, bool)> = deployments
        .iter()
        .map(|d| (d["deployment"].as_str().unwrap(), d["step"].as_str().unwrap(), d["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(summary, [("canary-healthy", "active", true), ("canary-strict", "rolled_back", false)]);
    assert_eq!(deployments[0]["previous"], "1.0.0", "{listed}");
    assert_eq!(deployments[1]["reason"]["code"], "canary_failed", "{listed}");
    let table = forecourt_testkit::succeed(&[&"fleet", &"history", &"--broker", &url]);
    let row = |id: &str| table.lines().find(|line| line.contains(id)).unwrap_or_else(|| panic!("{id} in\n{table}"));
    assert!(row("canary-healthy").contains("ok (active)") && row("canary-healthy").contains("kiosk-5"), "{table}");
    assert!(row("canary-strict").contains("rolled_back") && row("canary-strict").contains("canary_failed"), "{table}");
}

#[test]
fn a_canary_whose_predictions_turn_out_worse_is_rolled_back_on_accuracy() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    let server = kit.appliance(&broker, "kiosk-8", &[]).start();
    await_online(&broker, "kiosk-8");
    let progress = broker.subscribe("forecourt/kiosk-8/deployments/+");
    let telemetry = broker.subscribe("forecourt/kiosk-8/metrics");
    let gate = ["--canary", "50", "--canary-window", "60s", "--max-accuracy-ratio", "1.5", "--min-outcomes", "10"];
    let mut pushing = spawn_push(&kit, &broker, &kit.package("1.1.0", Packaging::Signed), "kiosk-8", "judged", &gate);
    progress
        .wait_for(WAIT, |m| m.json()["deployment"] == "judged" && m.json()["step"] == "canary")
        .expect("the canary starts");

    // Cars sell for 2% under the active version's valuations and a third under the
    // canary's, until the canary is judged on what the outcomes say.
    let client = server.client();
    let finished = |subscription: &Subscription| {
        subscription.received().iter().any(|m| m.json()["deployment"] == "judged" && m.json()["final"] == true)
    };
    let mut recorded = std::collections::BTreeMap::<String, u32>::new();
    while !finished(&progress) {
        let reply = client.post_json("/v1/predict/car-price", &car());
        assert_eq!(reply.status, 200, "{reply:?}");
        let version = reply.json["version"].as_str().unwrap().to_owned();
        let price = reply.json["outputs"]["price"].as_f64().unwrap();
        let actual = if version == "1.1.0" { price / 1.5 } else { price / 1.02 };
        let id = reply.json["prediction_id"].as_str().unwrap();
        let outcome = client.post_json(&format!("/v1/predictions/{id}/outcome"), &json!({"actual": actual}));
        assert_eq!(outcome.status, 201, "{outcome:?}");
        *recorded.entry(version).or_default() += 1;
        assert!(recorded.values().sum::<u32>() < 2000, "never judged: {recorded:?}");
    }
    assert!(!pushing.wait().unwrap().success(), "a rolled-back canary fails the push");
    let messages = await_outcome(&progress, "judged");
    assert_eq!(steps(&messages), ["received", "verified", "staged", "loaded", "smoke_tested", "canary", "rolled_back"]);
    let outcome = messages.last().unwrap().json();
    assert_eq!(outcome["reason"]["code"], "canary_failed", "{outcome}");
    assert!(outcome["reason"]["message"].as_str().unwrap().contains("accuracy"), "{outcome}");
    let judged = &outcome["detail"]["accuracy"];
    assert!(judged["outcomes"].as_u64().is_some_and(|n| n >= 10), "{outcome}");
    assert_eq!(judged["baseline"]["source"], "active version, same window", "{outcome}");
    let (error, baseline) = (judged["error"].as_f64().unwrap(), judged["baseline"]["error"].as_f64().unwrap());
    assert!((error - 0.5).abs() < 1e-3 && (baseline - 0.02).abs() < 1e-3, "{outcome}");
    assert_eq!(car_price_versions(&server), ("1.0.0".to_owned(), vec!["1.0.0".to_owned()]));

    // The fleet sees the live accuracy in the device's metrics messages.
    let live_mape = |message: &Message| {
        message.json()["samples"].as_array().into_iter().flatten().any(|sample| {
            sample["name"] == "forecourt_live_mape"
                && sample["labels"]["version"] == "1.0.0"
                && sample["value"].as_f64().is_some_and(|value| (value - 0.02).abs() < 1e-3)
        })
    };
    telemetry.wait_for(WAIT, live_mape).expect("the live MAPE reaches the fleet");
}

#[test]
fn while_the_broker_is_down_the_appliance_serves_and_queues_then_delivers_everything_in_order() {
    let mut broker = Broker::start();
    let kit = FleetKit::new();
    let server = kit.appliance(&broker, "kiosk-6", &[]).start();
    await_online(&broker, "kiosk-6");
    let events = broker.subscribe("forecourt/kiosk-6/events");
    let metrics = broker.subscribe("forecourt/kiosk-6/metrics");
    let progress = broker.subscribe("forecourt/kiosk-6/deployments/+");
    metrics.wait_for(WAIT, |_| true).expect("metrics snapshots are published");

    // A canary whose window ends while the broker is away: its outcome, and the events of
    // the promotion, can only be queued.
    let fcb = kit.package("1.1.0", Packaging::Signed);
    let canary = ["--canary", "50", "--canary-window", "3s", "--max-p99-ms", "1000"];
    let mut pushing = spawn_push(&kit, &broker, &fcb, "kiosk-6", "during-outage", &canary);
    progress
        .wait_for(WAIT, |m| m.json()["deployment"] == "during-outage" && m.json()["step"] == "canary")
        .expect("the canary starts");
    broker.stop();
    let _ = pushing.kill();
    let _ = pushing.wait();

    // Serving goes on, and the promotion happens, with no broker.
    for _ in 0..20 {
        assert_eq!(server.post_json("/v1/predict/car-price", &car()).status, 200);
    }
    await_active(&server, "1.1.0");
    // Once the promotion is recorded, only metrics snapshots are made: two more queued
    // messages are two snapshots taken during the outage.
    let promoted_at = await_deployment_finished(&server, "during-outage");
    let before = await_health(&server, |mqtt| mqtt["connected"] == false)["outbox"].as_u64().unwrap();
    let queued = await_health(&server, |mqtt| mqtt["outbox"].as_u64() >= Some(before + 2));
    eprintln!("queued during the outage: {} messages", queued["outbox"]);

    broker.restart();
    await_health(&server, |mqtt| mqtt["connected"] == true && mqtt["outbox"] == 0);

    // The deployment's messages, complete and in order (QoS 1 may repeat one: dedupe).
    let outcome = await_outcome(&progress, "during-outage");
    let mut deployment_steps = steps(&outcome);
    deployment_steps.dedup();
    assert_eq!(deployment_steps, ["received", "verified", "staged", "loaded", "smoke_tested", "canary", "active"]);

    // Every audit record since the subscription, as events, in order, none missing.
    let audit = server.get("/v1/audit?limit=1000").json;
    let audited: Vec<(u64, String)> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r["kind"].as_str().unwrap().to_owned()))
        .collect();
    let last_seq = audited.last().unwrap().0;
    events.wait_for(WAIT, |m| m.json()["seq"] == last_seq).expect("the last audit record arrives as an event");
    let mut received: Vec<(u64, String)> = events
        .received()
        .iter()
        .map(|m| (m.json()["seq"].as_u64().unwrap(), m.json()["kind"].as_str().unwrap().to_owned()))
        .collect();
    received.dedup();
    let first = received.first().unwrap().0;
    let expected: Vec<(u64, String)> = audited.into_iter().filter(|(seq, _)| *seq >= first).collect();
    assert_eq!(received, expected, "events must arrive complete and in audit order");
    assert!(received.iter().any(|(_, kind)| kind == "deployment_finished"));

    // Metrics snapshots taken during the outage arrive too: awaited, since the test's own
    // subscriber reconnects to the restarted broker on its own time.
    let after_promotion = |m: &Message| m.json()["time"].as_str().is_some_and(|time| time > promoted_at.as_str());
    let arrived = metrics.wait_for(WAIT, after_promotion);
    let snapshot_times: Vec<String> =
        metrics.received().iter().map(|m| m.json()["time"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(arrived.is_some(), "no snapshot from the outage arrived: {snapshot_times:?}");
}

/// Waits for the `deployment_finished` audit record of `deployment`; its time (RFC 3339,
/// the format of the snapshots' times).
fn await_deployment_finished(server: &Server, deployment: &str) -> String {
    poll_until(&format!("deployment {deployment} was never recorded finished"), || {
        let audit = server.get("/v1/audit?limit=1000").json;
        let records = audit["records"].as_array()?.clone();
        let finished = records
            .into_iter()
            .find(|record| record["kind"] == "deployment_finished" && record["details"]["deployment"] == deployment)?;
        Some(finished["time"].as_str()?.to_owned())
    })
}

/// Waits until /health/detailed's `mqtt` satisfies `ready`; returns it.
#[track_caller]
fn await_health(server: &Server, ready: impl Fn(&Value) -> bool) -> Value {
    poll_until("the fleet link never got to the awaited state", || {
        let mqtt = server.get("/health/detailed").json["mqtt"].clone();
        ready(&mqtt).then_some(mqtt)
    })
}

#[test]
fn an_appliance_killed_mid_deployment_serves_the_old_or_the_new_version_after_a_restart() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    let mut server = kit.appliance(&broker, "kiosk-7", &[]).start();
    await_online(&broker, "kiosk-7");
    let progress = broker.subscribe("forecourt/kiosk-7/deployments/+");
    // Killed while the plugin compiles (after `staged`, before `loaded`): well before the
    // commit point, so the old version must serve. Killed after the smoke test: close to the
    // commit point, so either version may serve, but consistently.
    for (attempt, kill_at) in ["staged", "smoke_tested"].into_iter().enumerate() {
        let id = format!("killed-{attempt}");
        let version = format!("1.{}.0", attempt + 1);
        let fcb = kit.package(&version, Packaging::Signed);
        let mut pushing = spawn_push(&kit, &broker, &fcb, "kiosk-7", &id, &[]);
        // The log line comes before the step's message goes through the outbox: closer to the step.
        let step = format!("step=\"{kill_at}\"");
        server
            .wait_for_log_line(WAIT, |line| {
                line.contains("deployment step") && line.contains(&id) && line.contains(&step)
            })
            .expect("the step is logged");
        server.sigkill();
        let _ = pushing.kill();
        let _ = pushing.wait();
        server.restart();

        let (active, versions) = car_price_versions(&server);
        let served = served_version(&server);
        assert_eq!(served, active, "the version serving is the active one");
        let outcome = await_outcome(&progress, &id).last().unwrap().json();
        eprintln!("killed at {kill_at}: serving {served}, outcome {}", outcome["step"]);
        if kill_at == "staged" {
            assert_eq!(
                (served.as_str(), outcome["reason"]["code"].as_str()),
                (SHIPPED, Some("interrupted")),
                "{outcome}"
            );
        }
        if outcome["step"] == "active" {
            assert_eq!(outcome["version"], active.as_str(), "{outcome}");
        } else {
            assert_eq!(outcome["reason"]["code"], "interrupted", "{outcome}");
            assert!(!versions.contains(&version), "an interrupted version is not loaded: {versions:?}");
            let leftover = server.data_dir().join("fleet/bundles/car-price").join(&version);
            assert!(!leftover.exists(), "an interrupted deployment leaves no files behind");
        }
        let status = broker
            .subscribe("forecourt/kiosk-7/status")
            .wait_for(WAIT, |m| m.json()["online"] == true && m.json()["bundles"]["car-price"] == active.as_str());
        assert!(status.is_some(), "the retained status agrees with what serves");
        let verify = server.get("/v1/audit/verify");
        assert_eq!(verify.json["ok"], true, "{}", verify.json);
    }
}

#[test]
fn the_fleet_link_runs_over_tls_with_a_private_ca_and_refuses_a_broker_it_cannot_verify() {
    let broker = Broker::start_with_tls();
    let kit = FleetKit::new();
    let ca = broker.ca_file();
    let server = kit
        .appliance(&broker, "kiosk-8", &[])
        .env("FORECOURT_MQTT__BROKER", broker.tls_url())
        .env("FORECOURT_MQTT__CA_FILE", ca.to_string_lossy())
        .start();
    await_online(&broker, "kiosk-8");
    assert_eq!(server.get("/health/detailed").json["mqtt"]["broker"], broker.tls_url().as_str());

    let fcb = kit.package("1.1.0", Packaging::Signed);
    let url = broker.tls_url();
    let pushed = forecourt(&[
        &"fleet",
        &"push",
        &"--broker",
        &url,
        &"--ca-file",
        &ca,
        &"--key",
        &kit.key(),
        &"--bundle",
        &fcb,
        &"--device",
        &"kiosk-8",
    ]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    assert_eq!(served_version(&server), "1.1.0");

    // Without the CA the broker's certificate is not trusted: no connection, said in the
    // log, and the appliance serves on.
    let unverified = kit.appliance(&broker, "kiosk-9", &[]).env("FORECOURT_MQTT__BROKER", broker.tls_url()).start();
    let refused = unverified.wait_for_log_line(WAIT, |line| line.contains("the fleet broker is unreachable"));
    assert!(refused.is_some_and(|line| line.to_lowercase().contains("certificate")), "{}", unverified.logs());
    assert_eq!(unverified.get("/health/detailed").json["mqtt"]["connected"], false);
    assert_eq!(served_version(&unverified), "1.0.0");
    let manager = forecourt(&[&"fleet", &"status", &"--broker", &url]);
    assert!(!manager.status.success(), "the manager must not trust the broker without its CA either");
}

/// Every file under `dir` with the sha256 of its bytes (empty when `dir` is missing).
fn tree(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_owned();
                files.insert(relative, sha256_hex(&std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What must not change when hostile requests are refused: the deployed bundles (every
/// byte), the data folder's and the fleet folder's entries, and a file beside the data folder.
#[derive(Debug, PartialEq)]
struct Untouched {
    installed: std::collections::BTreeMap<std::path::PathBuf, String>,
    data: Vec<String>,
    fleet: Vec<String>,
    outside: Vec<String>,
}

impl Untouched {
    fn of(server: &Server) -> Self {
        let data = server.data_dir();
        Self {
            installed: tree(&data.join("fleet/bundles")),
            data: names(data),
            fleet: names(&data.join("fleet")).into_iter().filter(|name| name != "staging").collect(),
            outside: names(data.parent().unwrap()),
        }
    }
}

#[test]
fn hostile_ids_names_and_versions_touch_nothing_outside_their_folder_and_the_appliance_keeps_serving() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    // The data folder inside a folder of the test's, with a file beside it that a path
    // escaping the data folder would reach.
    let home = forecourt_testkit::temp_dir();
    std::fs::write(home.path().join("beside-the-data.txt"), "keep me").unwrap();
    let mut server = kit.appliance(&broker, "kiosk-h", &[]).data_dir(&home.path().join("data")).start();
    await_online(&broker, "kiosk-h");
    let progress = broker.subscribe("forecourt/kiosk-h/deployments/+");
    let pushed = push(&kit, &broker, &kit.package("1.1.0", Packaging::Signed), "kiosk-h", "hostile-base", &[]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let before = Untouched::of(&server);
    // bundle.toml, bundle.sig, the plugin, the model, and training's metrics.json,
    // profile.json and trees.json.
    assert_eq!(before.installed.len(), 7, "the deployed 1.1.0 is on disk: {before:?}");
    let versions = car_price_versions(&server);

    let long = "x".repeat(65);
    let huge = "y".repeat(10_000);
    let ids = [
        "..",
        ".",
        "../x",
        "../../beside-the-data.txt",
        "a/b",
        "a\\b",
        "%2e%2e",
        "",
        "\0",
        "nul\0x",
        "tab\tx",
        "new\nline",
        "\u{7f}",
        "é",
        "日本",
        "+",
        "#",
        "/abs",
        &long,
        &huge,
    ];
    let sha = "0".repeat(64);
    let mut published = 0;
    let publish = |payload: &[u8]| broker.publish("forecourt/kiosk-h/deploy", payload, false);
    for id in ids {
        let requests = [
            // The reported case: a deploy with garbage base64 whose id is `..`.
            json!({"action": "deploy", "id": id, "bundle": {"inline": "!!not base64!!", "sha256": sha}}),
            json!({"action": "rollback", "id": id, "bundle": "car-price"}),
            json!({"action": "remove", "id": id, "bundle": "car-price", "version": "1.0.0"}),
        ];
        for request in &requests {
            publish(&kit.signed_request("kiosk-h", request.to_string().as_bytes(), &[]));
            published += 1;
        }
        publish(requests[1].to_string().as_bytes());
        published += 1;
    }
    // Valid ids, hostile bundle names and versions: answered on their own topics.
    let names = ["..", "../..", "car-price/../..", ".hidden", "Car-Price", "a\\b", "", &long];
    for (index, name) in names.iter().enumerate() {
        let id = format!("bad-name-{index}");
        let request = json!({"action": "rollback", "id": id, "bundle": name});
        publish(&kit.signed_request("kiosk-h", request.to_string().as_bytes(), &[]));
    }
    let bad_versions = ["1.0.0/../..", "..", "1.0.0\0", "../1.1.0"];
    for (index, version) in bad_versions.iter().enumerate() {
        let id = format!("bad-version-{index}");
        let request = json!({"action": "remove", "id": id, "bundle": "car-price", "version": version});
        publish(&kit.signed_request("kiosk-h", request.to_string().as_bytes(), &[]));
    }
    // Requests are taken in order: once this one's outcome is out, every one before is answered.
    let marker = json!({"action": "remove", "id": "marker", "bundle": "car-price", "version": "1.1.0"});
    publish(&kit.signed_request("kiosk-h", marker.to_string().as_bytes(), &[]));
    let outcome = await_outcome(&progress, "marker").last().unwrap().json();
    assert_eq!(outcome["reason"]["code"], "refused", "removing the active version is refused: {outcome}");

    let received = progress.received();
    let refused: Vec<Value> = received
        .iter()
        .filter(|message| message.topic.starts_with("forecourt/kiosk-h/deployments/refused-"))
        .map(Message::json)
        .collect();
    assert_eq!(refused.len(), published, "every request with a hostile id is answered under an id of the device's");
    for answer in &refused {
        let code = answer["reason"]["code"].as_str().unwrap();
        assert!(code == "malformed_request" || code == "untrusted", "{answer}");
        assert_eq!((answer["step"].as_str(), answer["final"].as_bool()), (Some("rejected"), Some(true)), "{answer}");
    }
    for id in (0..names.len()).map(|i| format!("bad-name-{i}")).chain((0..4).map(|i| format!("bad-version-{i}"))) {
        let outcome = await_outcome(&progress, &id).last().unwrap().json();
        assert_eq!(outcome["reason"]["code"], "malformed_request", "{outcome}");
    }

    assert_eq!(Untouched::of(&server), before, "nothing outside a request's own folder changed");
    assert_eq!(car_price_versions(&server), versions);
    assert_eq!(served_version(&server), "1.1.0");
    let audit = server.get("/v1/audit?limit=1000").json;
    let audited = audit["records"].as_array().unwrap().iter().filter(|r| r["details"]["refused"] == true).count();
    assert_eq!(audited, published + names.len() + bad_versions.len(), "every refusal is audited");
    let verify = server.get("/v1/audit/verify");
    assert_eq!(verify.json["ok"], true, "{}", verify.json);

    // Not only in memory: after a restart the same bundles load and serve.
    server.restart();
    assert_eq!(car_price_versions(&server), versions);
    assert_eq!(served_version(&server), "1.1.0");
    assert_eq!(Untouched::of(&server), before);
}

#[test]
fn unsigned_foreign_misdirected_and_expired_rollbacks_and_removes_change_nothing() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    // Its key is not the one the appliance trusts.
    let stranger = FleetKit::new();
    let server = kit.appliance(&broker, "kiosk-s", &[]).start();
    await_online(&broker, "kiosk-s");
    let progress = broker.subscribe("forecourt/kiosk-s/deployments/+");
    let pushed = push(&kit, &broker, &kit.package("1.1.0", Packaging::Signed), "kiosk-s", "signed-base", &[]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let before = Untouched::of(&server);
    let versions = ("1.1.0".to_owned(), vec!["1.0.0".to_owned(), "1.1.0".to_owned()]);
    assert_eq!(car_price_versions(&server), versions);

    let rollback = |id: &str| json!({"action": "rollback", "id": id, "bundle": "car-price"}).to_string();
    let remove =
        |id: &str| json!({"action": "remove", "id": id, "bundle": "car-price", "version": "1.0.0"}).to_string();
    let expiring = kit.signed_request("kiosk-s", rollback("expired-rollback").as_bytes(), &["--valid-for", "1s"]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("unsigned-rollback", rollback("unsigned-rollback").into_bytes(), "not signed"),
        ("unsigned-remove", remove("unsigned-remove").into_bytes(), "not signed"),
        (
            "foreign-rollback",
            stranger.signed_request("kiosk-s", rollback("foreign-rollback").as_bytes(), &[]),
            "not trusted",
        ),
        ("foreign-remove", stranger.signed_request("kiosk-s", remove("foreign-remove").as_bytes(), &[]), "not trusted"),
        (
            "elsewhere-rollback",
            kit.signed_request("kiosk-other", rollback("elsewhere-rollback").as_bytes(), &[]),
            "kiosk-other",
        ),
        ("expired-rollback", expiring.clone(), "expired"),
    ];
    // The expiring request's time runs out: wait for the clock, not for the device.
    let envelope: Value = serde_json::from_slice(&expiring).unwrap();
    let signed: Value = serde_json::from_str(envelope["signed"].as_str().unwrap()).unwrap();
    let not_after = signed["not_after"].as_u64().unwrap();
    poll_until("the clock passes not_after", || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        (now > not_after).then_some(())
    });
    for (id, payload, says) in &cases {
        broker.publish("forecourt/kiosk-s/deploy", payload, false);
        let outcome = await_outcome(&progress, id).last().unwrap().json();
        assert_eq!(
            (outcome["step"].as_str(), outcome["reason"]["code"].as_str()),
            (Some("rejected"), Some("untrusted")),
            "{id}: {outcome}"
        );
        assert!(outcome["reason"]["message"].as_str().unwrap().contains(says), "{id}: {outcome}");
        assert_eq!(car_price_versions(&server), versions, "{id} changed nothing");
    }
    assert_eq!(served_version(&server), "1.1.0");
    assert_eq!(Untouched::of(&server), before);

    // A forgery that takes a real request's id first does not shadow it: the real one runs.
    broker.publish("forecourt/kiosk-s/deploy", rollback("taken-id").as_bytes(), false);
    let forged = await_outcome(&progress, "taken-id").last().unwrap().json();
    assert_eq!(forged["reason"]["code"], "untrusted", "{forged}");
    let url = broker.url();
    let key = kit.key();
    let real = forecourt(&[
        &"fleet",
        &"rollback",
        &"--broker",
        &url,
        &"--key",
        &key,
        &"--bundle",
        &"car-price",
        &"--device",
        &"kiosk-s",
        &"--id",
        &"taken-id",
    ]);
    assert!(real.status.success(), "{}", String::from_utf8_lossy(&real.stderr));
    assert_eq!(served_version(&server), "1.0.0", "the signed rollback ran");

    let audit = server.get("/v1/audit?limit=1000").json;
    let refusals = audit["records"].as_array().unwrap().iter().filter(|r| r["details"]["refused"] == true).count();
    assert_eq!(refusals, cases.len() + 1, "{audit}");
}

#[test]
fn the_shipped_mosquitto_acl_keeps_each_appliance_to_its_own_topics() {
    let fleet = User::new("fleet", "fleet-secret");
    let kiosk_a = User::new("kiosk-a", "a-secret");
    let kiosk_b = User::new("kiosk-b", "b-secret");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-images/mosquitto/acl.example");
    let acl = std::fs::read_to_string(&shipped).expect("the example ACL ships")
        + "user kiosk-a\ntopic read forecourt/groups/east/deploy\n";
    let broker = Broker::start_locked_down(&acl, &[fleet.clone(), kiosk_a.clone(), kiosk_b.clone()], &fleet);
    let kit = FleetKit::new();
    let server = kit
        .appliance(&broker, "kiosk-a", &["east"])
        .env("FORECOURT_MQTT__USERNAME", "kiosk-a")
        .env("FORECOURT_MQTT__PASSWORD", "a-secret")
        .start();
    // The fleet's user reads every status.
    await_online(&broker, "kiosk-a");

    // kiosk-b cannot speak for kiosk-a: its forged status is dropped (MQTT 3.1.1 cannot say
    // no), while kiosk-a's own message on the same topic, sent after it, arrives.
    let status = broker.subscribe("forecourt/kiosk-a/status");
    broker.publish_as(&kiosk_b, "forecourt/kiosk-a/status", br#"{"forged": true}"#);
    broker.publish_as(&kiosk_a, "forecourt/kiosk-a/status", br#"{"marker": true}"#);
    status.wait_for(WAIT, |m| m.text().contains("marker")).expect("kiosk-a's own message arrives");
    assert!(!status.received().iter().any(|m| m.text().contains("forged")), "{:?}", status.received());

    // kiosk-b cannot read kiosk-a's requests: Mosquitto refuses the subscription, or at
    // least never delivers them; its own topic it reads.
    let own = broker.subscribe_as(&kiosk_b, "forecourt/kiosk-b/deploy").expect("kiosk-b reads its own deploy topic");
    let spy = broker.subscribe_as(&kiosk_b, "forecourt/+/deploy");
    broker.publish("forecourt/kiosk-a/deploy", b"secret", false);
    broker.publish("forecourt/kiosk-b/deploy", b"for kiosk-b", false);
    assert_eq!(own.recv_timeout(WAIT).expect("kiosk-b's own request").text(), "for kiosk-b");
    if let Ok(spy) = spy {
        spy.wait_for(WAIT, |m| m.text() == "for kiosk-b").expect("the spy gets what it may read");
        assert!(!spy.received().iter().any(|m| m.text() == "secret"), "{:?}", spy.received());
    }

    // Nor can kiosk-b publish a request to kiosk-a, even a validly signed one: the broker
    // drops it, and the request sent after it by the fleet is the only one answered.
    let progress = broker.subscribe("forecourt/kiosk-a/deployments/+");
    let smuggled = json!({"action": "rollback", "id": "smuggled", "bundle": "car-price"});
    broker.publish_as(
        &kiosk_b,
        "forecourt/kiosk-a/deploy",
        &kit.signed_request("kiosk-a", smuggled.to_string().as_bytes(), &[]),
    );

    // The fleet's user publishes requests, with its password from a file (never on the
    // command line), and reads their progress.
    let password = kit.key().with_file_name("fleet.password");
    std::fs::write(&password, "fleet-secret\n").unwrap();
    let url = broker.url();
    let fcb = kit.package("1.1.0", Packaging::Signed);
    let password = password.to_string_lossy().into_owned();
    let credentials = ["--username", "fleet", "--password-file", password.as_str()];
    let pushed = push(&kit, &broker, &fcb, "kiosk-a", "acl-push", &credentials);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    assert_eq!(served_version(&server), "1.1.0");
    await_outcome(&progress, "acl-push");
    assert!(
        !progress.received().iter().any(|m| m.topic.ends_with("/smuggled")),
        "the smuggled request never reached kiosk-a: {:?}",
        progress.received()
    );
    let anonymous = forecourt(&[&"fleet", &"status", &"--broker", &url]);
    assert!(!anonymous.status.success(), "an anonymous manager is refused");
    let said = String::from_utf8_lossy(&anonymous.stderr);
    assert!(said.contains("refused the connection"), "{said}");
}
