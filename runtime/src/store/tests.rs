//! The store as a whole, on real sled databases in temporary directories.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use uuid::{NoContext, Timestamp};

use super::*;

fn prediction_at(id: Uuid, n: u64) -> PredictionRecord {
    PredictionRecord {
        id,
        time: time_of_id(id).unwrap(),
        bundle: "iris".to_owned(),
        version: "1.2.0".to_owned(),
        plugin_sha256: "ab".repeat(32),
        model_sha256: "cd".repeat(32),
        input_sha256: "ef".repeat(32),
        input: Some(JsonText::or_string(&json!({"n": n, "petal": [1.5, 0.25]}).to_string())),
        outputs: json!({"class": "setosa", "p": 0.875}),
        latency_ms: 0.5,
        token_id: n.is_multiple_of(2).then(|| "0123456789abcdef".to_owned()),
        client_request_id: n.is_multiple_of(3).then(|| format!("kiosk-7:{n}")),
        explanation: n.is_multiple_of(5).then(|| json!({"baseline": 1.25, "contributions": [{"field": "petal"}]})),
    }
}

fn prediction(n: u64) -> PredictionRecord {
    prediction_at(Uuid::now_v7(), n)
}

fn open(dir: &Path, config: &StoreConfig) -> (Store, Recovery) {
    Store::open(dir, config).unwrap()
}

fn flushes(store: &Store) -> u64 {
    *store.inner.counters.flushes.borrow()
}

/// Blocks the writer thread until the returned sender is dropped; returns once the writer holds.
fn hold_writer(store: &Store) -> std::sync::mpsc::Sender<()> {
    let (held, is_held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel();
    store.inner.enqueue(Write::Hold { held, release: released }).unwrap();
    is_held.recv().unwrap();
    release
}

/// Lets spawned tasks run until `depth` writes wait in the queue (no timer: each yield runs them).
async fn until_queued(store: &Store, depth: usize) {
    while store.stats().queue_depth < depth {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_prediction_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovery) = open(dir.path(), &StoreConfig::default());
    assert!(!recovery.unclean_shutdown);
    let record = prediction(1);
    store.record(record.clone()).await.unwrap();
    assert_eq!(store.prediction(record.id).unwrap().as_ref(), Some(&record));
    assert_eq!(store.prediction(Uuid::now_v7()).unwrap(), None);
    store.close().await.unwrap();

    let (store, recovery) = open(dir.path(), &StoreConfig::default());
    assert!(!recovery.unclean_shutdown);
    assert_eq!(store.prediction(record.id).unwrap(), Some(record));
    assert_eq!(store.stats().predictions, 1);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_are_committed_in_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let record = prediction(n);
                store.record(record.clone()).await.map(|()| record)
            })
        })
        .collect();
    let mut records = Vec::new();
    for task in tasks {
        records.push(task.await.unwrap().unwrap());
    }
    for record in &records {
        assert_eq!(store.prediction(record.id).unwrap().as_ref(), Some(record));
    }
    let flushes = flushes(&store);
    println!("200 concurrent records took {flushes} flushes");
    assert!(flushes <= 50, "{flushes} flushes for 200 records: no group commit");
    assert_eq!(store.stats().predictions, 200);
    store.close().await.unwrap();
}

#[tokio::test]
async fn everything_queued_during_a_flush_shares_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { max_group: 64, ..StoreConfig::default() };
    let (store, _) = open(dir.path(), &config);
    let release = hold_writer(&store);
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.record(prediction(n)).await })
        })
        .collect();
    until_queued(&store, 200).await;
    drop(release);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // 64 + 64 + 64 + 8: groups stop at max_group records.
    assert_eq!(flushes(&store), 4);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_batch_is_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    let records: Vec<_> = (0..5).map(prediction).collect();
    store.record_many(records.clone()).await.unwrap();
    assert_eq!(flushes(&store), 1);
    for record in &records {
        assert_eq!(store.prediction(record.id).unwrap().as_ref(), Some(record));
    }
    store.record_many(Vec::new()).await.unwrap();
    assert_eq!(flushes(&store), 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_is_refused_at_once_but_audit_events_wait() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { queue_capacity: 1, ..StoreConfig::default() };
    let (store, _) = open(dir.path(), &config);
    let release = hold_writer(&store);
    let queued = tokio::spawn({
        let store = store.clone();
        async move { store.record(prediction(1)).await }
    });
    until_queued(&store, 1).await;
    assert_eq!(store.record(prediction(2)).await, Err(StoreError::Overloaded { capacity: 1 }));
    let audit = tokio::spawn({
        let store = store.clone();
        async move { store.audit(AuditKind::ConfigLoaded, json!({})).await }
    });
    drop(release);
    queued.await.unwrap().unwrap();
    assert_eq!(audit.await.unwrap().unwrap().seq, 1);
    store.record(prediction(3)).await.unwrap();
    assert_eq!(store.stats().predictions, 2);
    store.close().await.unwrap();
}

#[tokio::test]
async fn records_the_store_cannot_keep_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    let not_v7 = PredictionRecord { id: Uuid::nil(), ..prediction(1) };
    assert!(matches!(store.record(not_v7).await, Err(StoreError::InvalidRecord { .. })));
    let nan = PredictionRecord { latency_ms: f64::NAN, ..prediction(2) };
    assert!(matches!(store.record_many(vec![prediction(3), nan]).await, Err(StoreError::InvalidRecord { .. })));
    assert_eq!(store.stats().predictions, 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_store_dropped_without_close_keeps_its_records_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    let records: Vec<_> = (0..10).map(prediction).collect();
    assert_eq!(store.stats().mean_record_bytes, None);
    for record in &records {
        store.record(record.clone()).await.unwrap();
    }
    let encoded: usize = records.iter().map(|record| encoding::encode(record).unwrap().len()).sum();
    assert_eq!(store.stats().mean_record_bytes, Some(encoded as u64 / 10));
    store.audit(AuditKind::Started, json!({})).await.unwrap();
    drop(store);

    let (store, recovery) = open(dir.path(), &StoreConfig::default());
    assert!(recovery.unclean_shutdown);
    for record in &records {
        assert_eq!(store.prediction(record.id).unwrap().as_ref(), Some(record));
    }
    // The count is rebuilt by scanning, since the one recorded at close is missing.
    assert_eq!(store.stats(), StoreStats { predictions: 10, audit_records: 1, ..store.stats() });
    assert!(store.verify_audit().unwrap().ok);
    store.close().await.unwrap();

    let (store, recovery) = open(dir.path(), &StoreConfig::default());
    assert!(!recovery.unclean_shutdown);
    assert_eq!(store.stats().predictions, 10);
    store.close().await.unwrap();
}

const CRASH_CHILD_DIR: &str = "FORECOURT_STORE_CRASH_CHILD_DIR";

/// Not a test of its own: the child process of `acknowledged_records_survive_sigkill` (it does nothing
/// unless that test starts it). Writes from 16 tasks and prints each acknowledged id until it is killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_CHILD_DIR) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (store, _) = open(Path::new(&dir), &StoreConfig::default());
        let (acked, mut acks) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..16 {
            let (store, acked) = (store.clone(), acked.clone());
            tokio::spawn(async move {
                loop {
                    let record = prediction(0);
                    let id = record.id;
                    store.record(record).await.unwrap();
                    let _ = acked.send(id);
                }
            });
        }
        // Bounded, in case the parent died without killing this process.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Ok(Some(id)) = tokio::time::timeout_at(deadline, acks.recv()).await {
            println!("acked {id}");
        }
        std::process::exit(0);
    });
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["store::tests::crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let acked_id = |line: String| line.strip_prefix("acked ").map(|id| id.parse::<Uuid>().unwrap());
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < 500 {
        let line = lines.next().expect("the child stopped early").unwrap();
        acked.extend(acked_id(line));
    }
    // SIGKILL while the writers are in full flight: no destructor, no final flush.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Acknowledgements already in the pipe came before the kill too.
    acked.extend(lines.map_while(Result::ok).filter_map(acked_id));

    let (store, recovery) = open(dir.path(), &StoreConfig::default());
    assert!(recovery.unclean_shutdown);
    let lost: Vec<_> = acked.iter().filter(|id| store.prediction(**id).unwrap().is_none()).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged records lost: {lost:?}", lost.len(), acked.len());
    assert!(store.stats().predictions >= acked.len() as u64);
}

#[tokio::test]
async fn relaxed_mode_acknowledges_before_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        StoreConfig { durability: Durability::Relaxed, relaxed_flush_interval_ms: 60_000, ..StoreConfig::default() };
    let (store, _) = open(dir.path(), &config);
    let first = prediction(1);
    store.record(first.clone()).await.unwrap();
    assert_eq!(flushes(&store), 0);
    assert_eq!(store.prediction(first.id).unwrap().as_ref(), Some(&first));
    // Audit events are flushed before they are acknowledged, and take the predictions with them.
    store.audit(AuditKind::BundleLoaded, json!({"bundle": "iris"})).await.unwrap();
    assert_eq!(flushes(&store), 1);
    let second = prediction(2);
    store.record(second.clone()).await.unwrap();
    store.close().await.unwrap();

    let (store, _) = open(dir.path(), &config);
    assert_eq!(store.prediction(second.id).unwrap(), Some(second));
    store.close().await.unwrap();
}

#[tokio::test]
async fn relaxed_mode_flushes_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        StoreConfig { durability: Durability::Relaxed, relaxed_flush_interval_ms: 20, ..StoreConfig::default() };
    let (store, _) = open(dir.path(), &config);
    let mut flushed = store.inner.counters.flushes.subscribe();
    store.record(prediction(1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), flushed.wait_for(|&flushes| flushes == 1)).await.unwrap().unwrap();
    store.close().await.unwrap();
}

#[tokio::test]
async fn audit_events_take_the_order_of_the_calls_not_of_their_awaits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    let pending: Vec<_> = (1..=5).map(|n| store.audit(AuditKind::AccessDenied, json!({"n": n}))).collect();
    let mut seqs = Vec::new();
    for (n, audited) in pending.into_iter().enumerate().rev() {
        let record = audited.await.unwrap();
        assert_eq!(record.details["n"], n + 1);
        seqs.push(record.seq);
    }
    seqs.reverse();
    assert!(seqs.windows(2).all(|pair| pair[0] + 1 == pair[1]), "{seqs:?}");
    store.close().await.unwrap();
}

/// Opens a store in `dir`, appends five audit events and closes it.
async fn five_audit_events(dir: &Path) -> Vec<AuditRecord> {
    let (store, _) = open(dir, &StoreConfig::default());
    let mut records = Vec::new();
    for n in 1..=5 {
        records.push(store.audit(AuditKind::BundleActivated, json!({"bundle": "iris", "n": n})).await.unwrap());
    }
    store.close().await.unwrap();
    records
}

/// Edits the closed database in `dir` directly, as someone with access to the disk could.
fn tamper(dir: &Path, edit: impl FnOnce(&Trees)) {
    let trees = Trees::open(dir, 8).unwrap();
    edit(&trees);
    trees.flush().unwrap();
}

fn stored(trees: &Trees, seq: u64) -> serde_json::Value {
    serde_json::from_slice(&trees.audit.get(audit::key(seq)).unwrap().unwrap()).unwrap()
}

fn problems(report: &AuditReport) -> Vec<(u64, &str)> {
    report.problems.iter().map(|problem| (problem.seq, problem.problem.as_str())).collect()
}

#[tokio::test]
async fn the_audit_chain_links_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let appended = five_audit_events(dir.path()).await;
    assert_eq!(appended.iter().map(|record| record.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(appended[0].prev_hash, "0".repeat(64));
    assert!(appended.windows(2).all(|pair| pair[1].prev_hash == pair[0].hash));

    let (store, _) = open(dir.path(), &StoreConfig::default());
    assert_eq!(store.audit_records(None, 100).unwrap(), appended);
    assert_eq!(store.audit_records(Some(2), 2).unwrap(), appended[2..4]);
    assert_eq!(store.audit_records(Some(5), 100).unwrap(), []);
    assert_eq!(store.audit_records(Some(u64::MAX), 100).unwrap(), []);
    let report = store.verify_audit().unwrap();
    assert_eq!(
        report,
        AuditReport {
            ok: true,
            records: 5,
            head_seq: Some(5),
            head_hash: Some(appended[4].hash.clone()),
            problems: Vec::new(),
            problems_omitted: 0,
            next_after: None,
        }
    );
    // The chain continues across restarts.
    let sixth = store.audit(AuditKind::Shutdown, json!(null)).await.unwrap();
    assert_eq!((sixth.seq, &sixth.prev_hash), (6, &appended[4].hash));
    assert_eq!(store.stats().audit_records, 6);
    store.close().await.unwrap();
    assert!(verify_audit_at(dir.path()).unwrap().ok);
}

#[tokio::test]
async fn an_altered_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    five_audit_events(dir.path()).await;
    tamper(dir.path(), |trees| {
        let mut record = stored(trees, 3);
        record["details"] = json!(r#"{"bundle":"evil","n":3}"#);
        trees.audit.insert(audit::key(3), serde_json::to_vec(&record).unwrap()).unwrap();
    });
    let report = verify_audit_at(dir.path()).unwrap();
    assert!(!report.ok);
    assert_eq!(problems(&report), [(3, "record altered: hash does not match its contents")]);
}

#[tokio::test]
async fn a_rehashed_forgery_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    five_audit_events(dir.path()).await;
    tamper(dir.path(), |trees| {
        let mut record = stored(trees, 3);
        let details = r#"{"bundle":"evil","n":3}"#;
        let time = record["time"].as_str().unwrap();
        let prev_hash = record["prev_hash"].as_str().unwrap();
        record["hash"] = json!(audit::chain_hash(3, time, AuditKind::BundleActivated, prev_hash, details));
        record["details"] = json!(details);
        trees.audit.insert(audit::key(3), serde_json::to_vec(&record).unwrap()).unwrap();
    });
    let report = verify_audit_at(dir.path()).unwrap();
    assert_eq!(problems(&report), [(4, "chain broken: prev_hash does not match record 3")]);
}

#[tokio::test]
async fn a_removed_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    five_audit_events(dir.path()).await;
    tamper(dir.path(), |trees| {
        trees.audit.remove(audit::key(3)).unwrap();
    });
    let report = verify_audit_at(dir.path()).unwrap();
    assert_eq!(problems(&report), [(3, "record missing: expected seq 3 after 2")]);
    assert_eq!(report.records, 4);
}

#[tokio::test]
async fn a_removed_tail_is_reported_and_stays_visible() {
    let dir = tempfile::tempdir().unwrap();
    five_audit_events(dir.path()).await;
    tamper(dir.path(), |trees| {
        trees.audit.remove(audit::key(5)).unwrap();
        trees.audit.remove(audit::key(4)).unwrap();
    });
    let report = verify_audit_at(dir.path()).unwrap();
    assert_eq!(problems(&report), [(4, "tail removed: meta head is seq 5 but last record is 3")]);
    assert_eq!(report.head_seq, Some(3));

    // A restarted store continues after the recorded head, so the gap is not papered over.
    let (store, _) = open(dir.path(), &StoreConfig::default());
    assert_eq!(store.audit(AuditKind::Started, json!({})).await.unwrap().seq, 6);
    let report = store.verify_audit().unwrap();
    assert_eq!(problems(&report), [(4, "records missing: expected seq 4 after 3, next is 6")]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn verifying_needs_a_stopped_store() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(verify_audit_at(&dir.path().join("absent")), Err(StoreError::Open { .. })));
    assert!(matches!(verify_audit_at(dir.path()), Err(StoreError::Open { .. })));
    let (store, _) = open(dir.path(), &StoreConfig::default());
    assert!(matches!(verify_audit_at(dir.path()), Err(StoreError::Open { .. })));
    store.close().await.unwrap();
    assert_eq!(verify_audit_at(dir.path()).unwrap(), AuditReport { ok: true, ..AuditReport::default() });
}

#[tokio::test]
async fn the_running_store_prunes_old_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { retention_max_age_days: Some(30), prune_interval_secs: 1, ..StoreConfig::default() };
    let (store, _) = open(dir.path(), &config);
    let mut pruned = store.inner.counters.pruned.subscribe();
    let long_ago = time::now_unix_ms() / 1000 - 31 * 86_400;
    let old: Vec<_> =
        (0..3).map(|n| prediction_at(Uuid::new_v7(Timestamp::from_unix(NoContext, long_ago + n, 0)), n)).collect();
    let recent = prediction(9);
    store.record_many([old.clone(), vec![recent.clone()]].concat()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pruned.wait_for(|&pruned| pruned == 3)).await.unwrap().unwrap();
    assert!(old.iter().all(|record| store.prediction(record.id).unwrap().is_none()));
    assert_eq!(store.prediction(recent.id).unwrap(), Some(recent));
    assert_eq!(store.stats().predictions, 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn after_close_other_handles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    let other = store.clone();
    store.close().await.unwrap();
    assert_eq!(other.record(prediction(1)).await, Err(StoreError::Closed));
    assert!(matches!(other.audit(AuditKind::Shutdown, json!({})).await, Err(StoreError::Closed)));
    assert_eq!(other.clone().close().await, Err(StoreError::Closed));
    drop(other);
    let (_store, recovery) = open(dir.path(), &StoreConfig::default());
    assert!(!recovery.unclean_shutdown);
}

#[tokio::test]
async fn stats_count_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    let record = prediction(1);
    store.record(record.clone()).await.unwrap();
    store.record(record).await.unwrap(); // the same id replaces, it does not add
    store.audit(AuditKind::Started, json!({})).await.unwrap();
    let stats = store.stats();
    assert_eq!((stats.predictions, stats.audit_records, stats.queue_depth), (1, 1, 0));
    assert!(stats.disk_bytes > 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn table_writes_are_durable_atomic_and_ordered_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let relaxed = StoreConfig { durability: Durability::Relaxed, ..StoreConfig::default() };
    let (store, _) = open(dir.path(), &relaxed);
    let table = store.table("outbox").unwrap();
    let before = flushes(&store);
    table.put(2u64.to_be_bytes(), b"second".to_vec()).await.unwrap();
    // Durable even in relaxed mode: the write waited for its own flush.
    assert!(flushes(&store) > before);
    table
        .apply(vec![
            TableOp::Put(1u64.to_be_bytes().to_vec(), b"first".to_vec()),
            TableOp::Put(3u64.to_be_bytes().to_vec(), b"third".to_vec()),
            TableOp::Remove(2u64.to_be_bytes().to_vec()),
        ])
        .await
        .unwrap();
    let values: Vec<Vec<u8>> = table.entries().unwrap().into_iter().map(|(_, value)| value).collect();
    assert_eq!(values, [b"first".to_vec(), b"third".to_vec()]);
    assert_eq!(table.last_key().unwrap(), Some(3u64.to_be_bytes().to_vec()));
    // A table is a store handle too: the database stays open until it is gone.
    drop(table);
    store.close().await.unwrap();

    let (store, _) = open(dir.path(), &relaxed);
    let table = store.table("outbox").unwrap();
    assert_eq!(table.len(), 2);
    assert_eq!(table.get(&1u64.to_be_bytes()).unwrap().as_deref(), Some(&b"first"[..]));
    assert_eq!(table.first(1).unwrap().len(), 1);
    drop(table);
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_store_s_own_trees_are_not_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    for name in ["predictions", "audit", "meta", ""] {
        assert!(matches!(store.table(name), Err(StoreError::InvalidRecord { .. })), "{name:?}");
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_audit_watch_follows_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), &StoreConfig::default());
    let mut watch = store.audit_watch();
    assert_eq!(*watch.borrow_and_update(), 0);
    store.audit(AuditKind::Started, json!({})).await.unwrap();
    store.audit(AuditKind::Shutdown, json!({})).await.unwrap();
    watch.wait_for(|seq| *seq == 2).await.unwrap();
    store.close().await.unwrap();
}
