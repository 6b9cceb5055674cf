//! The fleet over MQTT against a real Mosquitto: appliances (the real binary) linked to a
//! private broker, bundles pushed with `forecourt fleet push` and raw requests with
//! `mosquitto_pub`, progress watched on the broker as a fleet manager would.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use forecourt_testkit::{Broker, FleetKit, Message, Packaging, SHIPPED, Server, Subscription, forecourt, sha256_hex};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn car() -> Value {
    json!({"make": "saab", "body": "sedan", "mileage": 42000, "cylinders": 4, "doors": 4})
}

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

/// `forecourt fleet push` of `fcb` to one device, as deployment `id`, plus `extra` options.
fn push(broker: &Broker, fcb: &Path, device: &str, id: &str, extra: &[&str]) -> Output {
    let url = broker.url();
    let mut args: Vec<&dyn AsRef<OsStr>> =
        vec![&"fleet", &"push", &"--broker", &url, &"--bundle", &fcb, &"--device", &device, &"--id", &id];
    args.extend(extra.iter().map(|arg| arg as &dyn AsRef<OsStr>));
    forecourt(&args)
}

/// `forecourt fleet push` like [`push`], left running in the background (output discarded),
/// for tests that stop the broker or the appliance under it.
fn spawn_push(broker: &Broker, fcb: &Path, device: &str, id: &str, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(forecourt_testkit::forecourt_binary())
        .args(["fleet", "push", "--broker", &broker.url(), "--device", device, "--id", id])
        .args(extra)
        .arg("--bundle")
        .arg(fcb)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("forecourt runs")
}

/// Requests car-price in a loop on its own thread, counting failures and versions served.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<LoadReport>>,
}

#[derive(Debug, Default)]
struct LoadReport {
    ok: u64,
    failures: Vec<String>,
    versions: Vec<(Instant, String)>,
}

impl Load {
    fn start(server: &Server) -> Self {
        let client = server.client();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut report = LoadReport::default();
            while !flag.load(Ordering::SeqCst) {
                match client.try_post_json("/v1/predict/car-price", &car()) {
                    Ok(reply) if reply.status == 200 => {
                        report.ok += 1;
                        let version = reply.json["version"].as_str().unwrap_or_default().to_owned();
                        if report.versions.last().is_none_or(|(_, last)| *last != version) {
                            report.versions.push((Instant::now(), version));
                        }
                    }
                    Ok(reply) => report.failures.push(format!("{}: {}", reply.status, reply.json)),
                    Err(error) => report.failures.push(error.to_string()),
                }
            }
            report
        });
        Self { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn a_signed_bundle_pushed_to_a_device_serves_at_once_without_a_failed_request_and_rolls_back() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    let server = kit.appliance(&broker, "kiosk-1", &["east"]).start();
    let status = await_online(&broker, "kiosk-1");
    assert_eq!(status["bundles"]["car-price"], "1.0.0", "{status}");
    assert_eq!(status["groups"], json!(["east"]));
    let progress = broker.subscribe("forecourt/kiosk-1/deployments/+");
    let fcb = kit.package("1.1.0", Packaging::Signed);

    let load = Load::start(&server);
    let pushed = Instant::now();
    let pushed_output = push(&broker, &fcb, "kiosk-1", "rollout-1", &["--timeout", "30s"]);
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

    let rollback = forecourt(&[
        &"fleet",
        &"rollback",
        &"--broker",
        &broker.url(),
        &"--bundle",
        &"car-price",
        &"--device",
        &"kiosk-1",
    ]);
    assert!(rollback.status.success(), "{}", String::from_utf8_lossy(&rollback.stderr));
    assert_eq!(served_version(&server), "1.0.0");
    assert_eq!(car_price_versions(&server).0, "1.0.0");

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
    let again = push(&broker, &fcb, "kiosk-1", "rollout-1", &[]);
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
        let pushed = push(&broker, &fcb, "kiosk-2", &id, &[]);
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

    // Not even JSON, and JSON breaking a rule: each answered on its deployment topic.
    broker.publish("forecourt/kiosk-2/deploy", b"{\"action\": \"deploy\", \"id\": \"bad-json\", ", false);
    let answer = progress.wait_for(WAIT, |m| m.topic.contains("/deployments/invalid-")).expect("an answer to garbage");
    assert_eq!(answer.json()["reason"]["code"], "malformed_request", "{}", answer.text());
    broker.publish(
        "forecourt/kiosk-2/deploy",
        br#"{"action":"deploy","id":"no-sha","bundle":{"inline":"AAAA"}}"#,
        false,
    );
    let outcome = await_outcome(&progress, "no-sha").last().unwrap().json();
    assert_eq!(outcome["reason"]["code"], "malformed_request");
    assert!(outcome["reason"]["message"].as_str().unwrap().contains("sha256"), "{outcome}");
    broker.publish(
        "forecourt/kiosk-2/deploy",
        br#"{"action":"rollback","id":"nothing-before","bundle":"car-price"}"#,
        false,
    );
    let outcome = await_outcome(&progress, "nothing-before").last().unwrap().json();
    assert_eq!((outcome["step"].clone(), outcome["reason"]["code"].clone()), (json!("rejected"), json!("not_found")));

    // Oversized: answered with an outcome (its id read leniently), and the link stays up.
    let oversized = format!(
        r#"{{"action":"deploy","id":"too-big","bundle":{{"inline":"{}","sha256":"{}"}}}}"#,
        "A".repeat(2 << 20),
        "0".repeat(64)
    );
    broker.publish("forecourt/kiosk-2/deploy", oversized.as_bytes(), false);
    let outcome = await_outcome(&progress, "too-big").last().unwrap().json();
    assert_eq!(outcome["reason"]["code"], "too_large", "{outcome}");
    assert_eq!(server.get("/health/detailed").json["mqtt"]["connected"], true);

    // By URL: the sha256 must match what is downloaded.
    let fcb = kit.package("1.5.0", Packaging::Signed);
    let files = HttpFiles::serve(fcb.parent().unwrap());
    let url = files.url(fcb.file_name().unwrap().to_str().unwrap());
    let by_url = |id: &str, sha256: &str| {
        let request = json!({"action": "deploy", "id": id, "bundle": {"url": url, "sha256": sha256}});
        broker.publish("forecourt/kiosk-2/deploy", request.to_string().as_bytes(), false);
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

    // A p99 threshold no request can meet: rolled back on its first figures.
    let load = Load::start(&server);
    let strict = push(
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
    let load = Load::start(&server);
    let healthy = push(
        &broker,
        &kit.package("1.2.0", Packaging::Signed),
        "kiosk-5",
        "canary-healthy",
        &["--canary", "50", "--canary-window", "2s", "--max-p99-ms", "1000", "--max-error-rate", "0.01"],
    );
    let report = load.finish();
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));
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
    let mut pushing = spawn_push(&broker, &fcb, "kiosk-6", "during-outage", &canary);
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

    // Metrics snapshots taken during the outage arrive too.
    let snapshot_times: Vec<String> =
        metrics.received().iter().map(|m| m.json()["time"].as_str().unwrap().to_owned()).collect();
    assert!(
        snapshot_times.iter().any(|time| *time > promoted_at),
        "no snapshot from the outage arrived: {snapshot_times:?}"
    );
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
        let mut pushing = spawn_push(&broker, &fcb, "kiosk-7", &id, &[]);
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
