//! What survives the end of a process: every acknowledged prediction through a SIGKILL
//! under load, and a clean, audited shutdown on SIGTERM.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forecourt_testkit::{Server, all_bundles, forecourt_binary, with};
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

#[test]
fn every_acknowledged_prediction_survives_a_sigkill_under_load() {
    const CLIENTS: u64 = 8;
    const ACKED_BEFORE_KILL: usize = 300;
    let mut server = Server::start(&all_bundles());
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client_index| {
            let (client, acked, stop) = (server.client(), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    sent += 1;
                    match client.try_post_json("/v1/predict/car-price", &car(client_index * 1_000_000 / CLIENTS + sent))
                    {
                        Ok(reply) if reply.status == 200 => {
                            let id = reply.json["prediction_id"].as_str().expect("an id").to_owned();
                            assert_eq!(reply.request_id(), id);
                            acked.lock().unwrap().push(id);
                        }
                        Ok(reply) => panic!("a valid request got {reply:?}"),
                        // The server is gone: nothing more will be acknowledged.
                        Err(_) => break,
                    }
                }
                sent
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
        assert!(Instant::now() < deadline, "only {} predictions acknowledged in 60 s", acked.lock().unwrap().len());
        assert!(!clients.iter().any(|c| c.is_finished()), "a client stopped early");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The clients are still sending when the server dies.
    server.sigkill();
    stop.store(true, Ordering::SeqCst);
    let sent: u64 = clients.into_iter().map(|c| c.join().expect("a client thread")).sum();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL && sent > acked.len() as u64, "sent {sent}, acked {}", acked.len());

    server.restart();
    let mut missing = Vec::new();
    for id in &acked {
        let stored = server.get(&format!("/v1/predictions/{id}"));
        match stored.status {
            200 => assert_eq!(stored.json["bundle"], "car-price", "{stored:?}"),
            _ => missing.push((id.clone(), stored.status)),
        }
    }
    assert!(missing.is_empty(), "{} of {} acknowledged predictions were lost: {missing:?}", missing.len(), acked.len());

    let verify = server.get("/v1/audit/verify");
    assert_eq!(verify.json["ok"], true, "{verify:?}");
    let kinds = kinds(&audit(&server));
    let started = positions(&kinds, "started");
    let recovered = positions(&kinds, "crash_recovery");
    assert_eq!(started.len(), 2, "{kinds:?}");
    assert_eq!(recovered.len(), 1, "one crash recovery, by the second run: {kinds:?}");
    assert!(started[0] < recovered[0] && recovered[0] < started[1], "{kinds:?}");
    assert!(positions(&kinds, "shutdown").is_empty(), "a SIGKILL writes no shutdown event: {kinds:?}");
    let health = server.get("/health/detailed");
    assert!(health.json["store"]["stats"]["predictions"].as_u64().unwrap() >= acked.len() as u64, "{health:?}");
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
