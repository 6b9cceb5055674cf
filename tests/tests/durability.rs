//! What survives the end of a process: every acknowledged prediction through SIGKILLs
//! while the store commits groups under load, and a clean, audited shutdown on SIGTERM.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forecourt_testkit::{Server, all_bundles, forecourt_binary, metric_sample, with};
use serde_json::{Value, json};

/// A car whose mileage tells the requests apart.
fn car(mileage: u64) -> Value {
    with(forecourt_testkit::car(), "mileage", json!(mileage))
}

/// Every audit record, in order.
fn audit(server: &Server) -> Vec<Value> {
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = server.get(&format!("/v1/audit?after={after}&limit=1000"));
        assert_eq!(page.status, 200, "{page:?}");
        let got = page.json["records"].as_array().unwrap().clone();
        records.extend(got);
        match page.json["next_after"].as_u64() {
            Some(next) => after = next,
            None => return records,
        }
    }
}

fn kinds(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| r["kind"].as_str().unwrap().to_owned()).collect()
}

/// Positions of `kind` in the audit kinds.
fn positions(kinds: &[String], kind: &str) -> Vec<usize> {
    kinds.iter().enumerate().filter(|(_, k)| *k == kind).map(|(i, _)| i).collect()
}

/// Records made durable by flushes of more than one record so far, from /metrics.
fn grouped_flushes(server: &Server) -> f64 {
    let scrape = server.get("/metrics").text;
    let sample = |name: &str, labels: &[(&str, &str)]| metric_sample(&scrape, name, labels).unwrap_or(0.0);
    sample("forecourt_store_group_size_count", &[]) - sample("forecourt_store_group_size_bucket", &[("le", "1")])
}

/// Single kiosk requests and 20-car batches from many clients at once, so that the store
/// writer commits groups (one fsync for many records); the process is killed with SIGKILL
/// twice while it does, and each time every prediction it acknowledged must be there after
/// the restart, and the audit chain must verify.
#[test]
fn every_acknowledged_prediction_survives_sigkills_while_groups_are_committed() {
    const SINGLE_CLIENTS: u64 = 8;
    const BATCH_CLIENTS: u64 = 2;
    const BATCH: u64 = 20;
    const ACKED_BEFORE_KILL: usize = 1000;
    let mut server = Server::start(&all_bundles());
    let mut all_acked = Vec::new();
    for life in 0..2u64 {
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..SINGLE_CLIENTS + BATCH_CLIENTS)
            .map(|client_index| {
                let (client, acked, stop) = (server.client(), Arc::clone(&acked), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    // Mileages (up to the plugin's 1,000,000) mostly tell the cars apart.
                    let mut mileage = || {
                        sent += 1;
                        (life * 500_000 + client_index * 45_000 + sent) % 1_000_000
                    };
                    while !stop.load(Ordering::SeqCst) {
                        let answered = if client_index < SINGLE_CLIENTS {
                            client.try_post_json("/v1/predict/car-price", &car(mileage())).map(|reply| {
                                assert_eq!(reply.status, 200, "a valid request got {reply:?}");
                                let id = reply.json["prediction_id"].as_str().expect("an id").to_owned();
                                assert_eq!(reply.request_id(), id);
                                vec![id]
                            })
                        } else {
                            let cars: Vec<Value> = (0..BATCH).map(|_| car(mileage())).collect();
                            let batch = json!({"instances": cars});
                            client.try_post_json("/v1/predict/car-price/batch", &batch).map(|reply| {
                                assert_eq!(reply.status, 200, "a valid batch got {reply:?}");
                                assert_eq!(reply.json["succeeded"], BATCH, "{reply:?}");
                                let items = reply.json["predictions"].as_array().expect("predictions");
                                items
                                    .iter()
                                    .map(|item| item["prediction_id"].as_str().expect("an id").to_owned())
                                    .collect()
                            })
                        };
                        match answered {
                            Ok(ids) => acked.lock().unwrap().extend(ids),
                            // The server is gone: nothing more will be acknowledged.
                            Err(_) => break,
                        }
                    }
                    sent
                })
            })
            .collect();

        // Kill once the writer has been committing groups for a while, with every client busy.
        let deadline = Instant::now() + Duration::from_secs(90);
        while acked.lock().unwrap().len() < ACKED_BEFORE_KILL || grouped_flushes(&server) < 50.0 {
            let acked = acked.lock().unwrap().len();
            assert!(
                Instant::now() < deadline,
                "only {acked} acknowledged, {} grouped flushes in 90 s",
                grouped_flushes(&server)
            );
            assert!(!clients.iter().any(|c| c.is_finished()), "a client stopped early");
            std::thread::sleep(Duration::from_millis(20));
        }
        server.sigkill();
        stop.store(true, Ordering::SeqCst);
        let sent: u64 = clients.into_iter().map(|c| c.join().expect("a client thread")).sum();
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= ACKED_BEFORE_KILL && sent > acked.len() as u64, "sent {sent}, acked {}", acked.len());
        all_acked.extend(acked);

        server.restart();
        // Everything acknowledged in every life so far: a recovery must not lose an earlier one.
        let mut missing = Vec::new();
        for id in &all_acked {
            let stored = server.get(&format!("/v1/predictions/{id}"));
            match stored.status {
                200 => assert_eq!(stored.json["bundle"], "car-price", "{stored:?}"),
                _ => missing.push((id.clone(), stored.status)),
            }
        }
        assert!(
            missing.is_empty(),
            "life {life}: {} of {} acknowledged predictions were lost: {missing:?}",
            missing.len(),
            all_acked.len()
        );
        let verify = server.get("/v1/audit/verify");
        assert_eq!(verify.json["ok"], true, "life {life}: {verify:?}");
    }

    let kinds = kinds(&audit(&server));
    let started = positions(&kinds, "started");
    let recovered = positions(&kinds, "crash_recovery");
    assert_eq!(started.len(), 3, "{kinds:?}");
    assert_eq!(recovered.len(), 2, "one crash recovery by each later run: {kinds:?}");
    assert!(started[0] < recovered[0] && recovered[0] < started[1], "{kinds:?}");
    assert!(started[1] < recovered[1] && recovered[1] < started[2], "{kinds:?}");
    assert!(positions(&kinds, "shutdown").is_empty(), "a SIGKILL writes no shutdown event: {kinds:?}");
    let health = server.get("/health/detailed");
    assert!(health.json["store"]["stats"]["predictions"].as_u64().unwrap() >= all_acked.len() as u64, "{health:?}");
}

#[test]
fn sigterm_shuts_down_cleanly_and_the_audit_verifies_offline() {
    let mut server = Server::start(&all_bundles());
    let before = server.post_json("/v1/predict/car-price", &car(30_000));
    assert_eq!(before.status, 200, "{before:?}");
    let id = before.json["prediction_id"].as_str().unwrap().to_owned();

    let asked = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10)).expect("forecourt exits within 10 s of SIGTERM");
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(asked.elapsed() < Duration::from_secs(10));
    let logs = server.logs();
    assert!(logs.contains("shut down cleanly"), "{logs}");

    let verify = Command::new(forecourt_binary())
        .args(["audit", "verify", "--data"])
        .arg(server.data_dir())
        .output()
        .expect("forecourt runs");
    assert!(verify.status.success(), "audit verify: {}", String::from_utf8_lossy(&verify.stderr));
    let report: Value = serde_json::from_slice(&verify.stdout).expect("audit verify prints JSON");
    assert_eq!((&report["ok"], &report["problems"]), (&json!(true), &json!([])), "{report}");

    server.restart();
    let records = audit(&server);
    let kinds = kinds(&records);
    let started = positions(&kinds, "started");
    let shutdown = positions(&kinds, "shutdown");
    assert_eq!(started.len(), 2, "{kinds:?}");
    assert_eq!(shutdown.len(), 1, "{kinds:?}");
    assert!(started[0] < shutdown[0] && shutdown[0] < started[1], "{kinds:?}");
    assert!(positions(&kinds, "crash_recovery").is_empty(), "a clean shutdown is no crash: {kinds:?}");
    // The chain the offline check verified is the one the server continues.
    let report_head = report["head_seq"].as_u64().unwrap();
    assert_eq!(
        records[shutdown[0]]["seq"].as_u64(),
        Some(report_head),
        "the shutdown event is the last before the restart"
    );
    assert_eq!(server.get("/v1/audit/verify").json["ok"], true);
    assert_eq!(server.get(&format!("/v1/predictions/{id}")).status, 200, "the prediction outlives the restart");
}

#[test]
fn audit_verify_refuses_a_folder_without_a_store_and_a_store_in_use() {
    let verify = |data: &std::path::Path| {
        Command::new(forecourt_binary()).args(["audit", "verify", "--data"]).arg(data).output().expect("forecourt runs")
    };
    let empty = forecourt_testkit::temp_dir();
    let missing = verify(empty.path());
    assert!(!missing.status.success(), "a folder without a store is no valid chain");
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(
        said.contains("there is no store in") && !said.contains("still running"),
        "not blamed on an appliance: {said}"
    );

    let server = Server::start(&all_bundles());
    let busy = verify(server.data_dir());
    assert!(!busy.status.success(), "a running server's store cannot be verified offline");
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("still running"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert_eq!(server.get("/v1/audit/verify").json["ok"], true, "the server is unaffected");
}
