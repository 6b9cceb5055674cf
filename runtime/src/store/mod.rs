//! The durable store (sled): every answered prediction, and a tamper-evident chain of audit events.
//!
//! - Nothing acknowledged is lost on a crash: in [`Durability::Durable`] mode [`Store::record`] resolves only
//!   after the fsync that covers the record returned. One writer thread owns every write and commits in
//!   groups (one flush for everything queued meanwhile), so durability costs one fsync per group, not per
//!   request.
//! - A full write queue is refused at once ([`StoreError::Overloaded`]), never waited on.
//! - Audit events form a hash chain: record `seq` carries the hash of record `seq - 1`, and `hash` is the
//!   lowercase hex SHA-256 of the UTF-8 text
//!   `forecourt-audit-v1\n{seq}\n{time}\n{kind}\n{prev_hash}\n{details}`, with `seq` in decimal, `kind` in
//!   snake_case and `details` as compact JSON with every object's keys sorted. The head (seq, hash) is also
//!   kept apart, so that removing records from the end shows. [`Store::verify_audit`] checks it all.
//! - Predictions beyond the retention limits are pruned in the background, oldest first; audit records never.
//! - A run that ends without [`Store::close`] is reported by the next [`Store::open`] ([`Recovery`]).
//!
//! This module knows nothing of HTTP, plugins or models: it stores what it is given. Its reads are
//! synchronous and quick (a sled lookup); its writes are async and resolve when the writer has done them.
//!
//! Other modules keep their durable state in [`Table`]s (trees `table/<name>`), written through the same
//! writer.
//!
//! Layout: trees `predictions` (key: the UUIDv7's 16 bytes, value: [`PredictionRecord`] in the format of
//! [`encoding`]), `audit`
//! (key: seq as u64 big-endian) and `meta` (the audit head, the clean-shutdown marker, the count of
//! predictions at the last close).

mod audit;
mod config;
mod db;
mod encoding;
mod error;
mod record;
mod retention;
mod table;
mod time;
mod writer;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;
use uuid::Uuid;

pub use audit::VerifyRange;
pub use config::{Durability, StoreConfig};
pub use error::StoreError;
pub use record::{
    AuditKind, AuditProblem, AuditRecord, AuditReport, JsonText, PredictionRecord, StoreStats, Verification,
};
pub use table::{Table, TableOp};
pub use time::{now_unix_ms, rfc3339_millis, time_of_id};

use audit::Head;
use db::Trees;
use retention::Pruner;
use writer::{Counters, Encoded, Write, Writer};

/// A handle on the open store; clones share it (an `Arc` inside), so hand one to every part that needs it.
///
/// Close it with [`close`](Self::close) once nothing writes any more. Dropping the last handle without
/// closing writes what is queued and stops the threads, but the next open reports an unclean shutdown.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What [`Store::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// The previous run did not call [`Store::close`] (a crash, SIGKILL, power loss). The caller records the
    /// [`AuditKind::CrashRecovery`] event.
    pub unclean_shutdown: bool,
}

struct Inner {
    trees: Trees,
    /// `None` only while dropping, to disconnect the writer.
    sender: Option<Sender<Write>>,
    capacity: usize,
    counters: Arc<Counters>,
    threads: Mutex<Threads>,
    /// The outcome of the last audit verification since the store opened.
    last_verification: Mutex<Option<Verification>>,
}

/// Taken (left `None`) by whoever stops the threads first: `close` or the drop of the last handle.
#[derive(Default)]
struct Threads {
    writer: Option<JoinHandle<()>>,
    pruner: Option<Pruner>,
}

impl Store {
    /// Opens (creating) the sled database in `dir`, starts the writer thread and the pruning thread.
    /// `Recovery::unclean_shutdown` is true when the previous run did not call `close` (crash, SIGKILL).
    ///
    /// Blocking (it reads and fsyncs; after an unclean shutdown it counts the predictions, a full scan): call
    /// it before serving, or through `spawn_blocking`. Fails if another store has `dir` open.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<(Store, Recovery), StoreError> {
        config.validate().map_err(|error| StoreError::Open { dir: dir.to_owned(), reason: error.to_string() })?;
        let trees = Trees::open(dir, config.cache_capacity_mib)?;
        let unclean_shutdown = trees.was_running()?;
        if unclean_shutdown {
            tracing::warn!(dir = %dir.display(), "the store was not closed cleanly; counting its predictions");
        }
        let counters = Counters::new(trees.prediction_count(unclean_shutdown)?, trees.audit.len() as u64);
        let head = audit::recover_head(&trees.audit, &trees.meta)?;
        // Flushed before anything else is written, so that a crash from here on is noticed.
        trees.mark_running()?;
        trees.flush()?;
        let inner = Inner::start(dir, trees, Arc::new(counters), head, config)?;
        Ok((Store { inner: Arc::new(inner) }, Recovery { unclean_shutdown }))
    }

    /// Resolves once the record is durable (Durability::Durable: after the group's flush/fsync returned)
    /// or inserted (Durability::Relaxed). Err(StoreError::Overloaded) at once when the bounded queue is full.
    ///
    /// A record with the id of a stored one replaces it. Dropping the future does not withdraw the record.
    pub async fn record(&self, record: PredictionRecord) -> Result<(), StoreError> {
        self.record_many(vec![record]).await
    }

    /// Same for several records at once (a batch request): one queue entry, all acknowledged together.
    pub async fn record_many(&self, records: Vec<PredictionRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let encoded = records.iter().map(encode).collect::<Result<_, _>>()?;
        let (ack, done) = oneshot::channel();
        self.inner.enqueue(Write::Predictions(encoded, ack))?;
        done.await.unwrap_or(Err(StoreError::Closed))
    }

    pub fn prediction(&self, id: Uuid) -> Result<Option<PredictionRecord>, StoreError> {
        let Some(bytes) = self.inner.trees.predictions.get(id.as_bytes())? else { return Ok(None) };
        encoding::decode(id.as_bytes(), &bytes).map(Some)
    }

    /// The `limit` newest predictions, newest first (keys are UUIDv7s: key order is time order).
    pub fn latest_predictions(&self, limit: usize) -> Result<Vec<PredictionRecord>, StoreError> {
        self.inner
            .trees
            .predictions
            .iter()
            .rev()
            .take(limit)
            .map(|entry| {
                let (key, bytes) = entry?;
                encoding::decode(&key, &bytes)
            })
            .collect()
    }

    /// Appends an audit event through the same writer (so the chain is strictly ordered without locks) and
    /// resolves when it is durable (always flushed, whatever the durability setting).
    ///
    /// Unlike predictions, an audit event is never refused for a full queue: it waits for room.
    ///
    /// The event is queued when this is called, not when the future is first polled: events a task
    /// hands off to spawned waiters (denials, answered before they are audited) keep the order in which
    /// they happened, as long as the queue has room.
    pub fn audit(
        &self,
        kind: AuditKind,
        details: serde_json::Value,
    ) -> impl Future<Output = Result<AuditRecord, StoreError>> + Send + 'static {
        let (ack, done) = oneshot::channel();
        let queued = self.inner.enqueue_waiting(Write::Audit(kind, details, ack));
        async move {
            queued.await?;
            done.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    /// Audit records with seq > after (None: from the first), at most `limit`, in order.
    pub fn audit_records(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        audit::records(&self.inner.trees.audit, after, limit)
    }

    /// Follows the audit trail: the seq of the last durable audit record, updated after each flush that
    /// made new ones durable.
    pub fn audit_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.counters.audit_durable.subscribe()
    }

    /// The last `limit` audit records, in order.
    pub fn latest_audit_records(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        audit::latest(&self.inner.trees.audit, limit)
    }

    /// Checks the whole chain: a full read of the audit tree.
    pub fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        self.verify_audit_range(VerifyRange::default())
    }

    /// Checks a stretch of the chain, linked to the record before it; blocks for as long as
    /// the read takes (call it off the async threads).
    pub fn verify_audit_range(&self, range: VerifyRange) -> Result<AuditReport, StoreError> {
        let report = audit::verify(&self.inner.trees.audit, &self.inner.trees.meta, range)?;
        let verification = Verification {
            time: rfc3339_millis(now_unix_ms()),
            ok: report.ok,
            after: range.after,
            records: report.records,
            head_seq: report.head_seq,
            complete: report.next_after.is_none(),
        };
        *self.inner.last_verification.lock().unwrap_or_else(PoisonError::into_inner) = Some(verification);
        Ok(report)
    }

    pub fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        StoreStats {
            predictions: inner.counters.predictions.load(Ordering::Relaxed),
            audit_records: inner.counters.audit_records.load(Ordering::Relaxed),
            queue_depth: inner.sender.as_ref().map_or(0, Sender::len),
            // Only file sizes; a failure to read them is not worth failing the statistics for.
            disk_bytes: inner.trees.db.size_on_disk().unwrap_or(0),
            mean_record_bytes: {
                let inserted = inner.counters.inserted.load(Ordering::Relaxed);
                (inserted > 0).then(|| inner.counters.inserted_bytes.load(Ordering::Relaxed) / inserted)
            },
            last_verification: inner.last_verification.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    /// Drains the queue, flushes, records the clean shutdown, stops the threads.
    ///
    /// Call it on the last handle, once nothing else writes: writes through other handles afterwards fail
    /// with [`StoreError::Closed`], and the database stays open until the last handle is dropped.
    pub async fn close(self) -> Result<(), StoreError> {
        let inner = self.inner;
        // Waiting for room in the queue and joining threads block: off the runtime's threads.
        tokio::task::spawn_blocking(move || inner.close()).await.map_err(|_| StoreError::Closed)?
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("trees", &self.inner.trees).finish_non_exhaustive()
    }
}

/// For `forecourt audit verify --data DIR` while the server is stopped: opens the db read-only-ish, verifies, closes.
///
/// Writes nothing of its own (sled may write its bookkeeping files), leaves the clean-shutdown marker alone,
/// and fails with [`StoreError::Open`] while a server holds the database.
pub fn verify_audit_at(dir: &Path) -> Result<AuditReport, StoreError> {
    // Opening a directory without a store would create an empty one.
    if !Trees::exist_in(dir) {
        return Err(StoreError::Open { dir: dir.to_owned(), reason: "no store in this directory".to_owned() });
    }
    let trees = Trees::open(dir, 16)?;
    audit::verify(&trees.audit, &trees.meta, VerifyRange::default())
}

/// Serializes a prediction on the caller's thread, so the writer only inserts.
fn encode(record: &PredictionRecord) -> Result<Encoded, StoreError> {
    let invalid = |reason: String| StoreError::InvalidRecord { reason };
    // Retention relies on the time at the front of the key.
    if record.id.get_version_num() != 7 {
        return Err(invalid(format!("prediction id {} is not a UUIDv7", record.id)));
    }
    // NaN would read back, but no later mean or percentile over it would mean anything.
    if !record.latency_ms.is_finite() {
        return Err(invalid(format!("latency_ms of prediction {} is not a finite number", record.id)));
    }
    Ok(Encoded { key: *record.id.as_bytes(), value: encoding::encode(record)? })
}

impl Inner {
    /// Starts the writer and pruning threads.
    fn start(
        dir: &Path,
        trees: Trees,
        counters: Arc<Counters>,
        head: Head,
        config: &StoreConfig,
    ) -> Result<Self, StoreError> {
        let failed = |what: &str, error: std::io::Error| StoreError::Open {
            dir: dir.to_owned(),
            reason: format!("cannot start the {what} thread: {error}"),
        };
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_capacity);
        let writer = Writer::new(trees.clone(), receiver, Arc::clone(&counters), head, config)
            .spawn()
            .map_err(|error| failed("writer", error))?;
        let inner = Self {
            trees: trees.clone(),
            sender: Some(sender),
            capacity: config.queue_capacity,
            counters: Arc::clone(&counters),
            threads: Mutex::new(Threads { writer: Some(writer), pruner: None }),
            last_verification: Mutex::new(None),
        };
        // On failure `inner` drops here, which stops the writer.
        let pruner = Pruner::spawn(trees, counters, config).map_err(|error| failed("pruning", error))?;
        inner.threads.lock().unwrap_or_else(PoisonError::into_inner).pruner = Some(pruner);
        Ok(inner)
    }

    fn enqueue(&self, write: Write) -> Result<(), StoreError> {
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        sender.try_send(write).map_err(|error| match error {
            TrySendError::Full(_) => StoreError::Overloaded { capacity: self.capacity },
            TrySendError::Disconnected(_) => StoreError::Closed,
        })
    }

    /// Queues a write that must not be refused: at once if the queue has room, otherwise the returned
    /// future waits for room off the runtime's threads.
    fn enqueue_waiting(&self, write: Write) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let offered = match &self.sender {
            None => Offered::Closed,
            Some(sender) => match sender.try_send(write) {
                Ok(()) => Offered::Queued,
                Err(TrySendError::Disconnected(_)) => Offered::Closed,
                Err(TrySendError::Full(write)) => Offered::Full(sender.clone(), write),
            },
        };
        async move {
            match offered {
                Offered::Queued => Ok(()),
                Offered::Closed => Err(StoreError::Closed),
                Offered::Full(sender, write) => tokio::task::spawn_blocking(move || sender.send(write))
                    .await
                    .map_err(|_| StoreError::Closed)?
                    .map_err(|_| StoreError::Closed),
            }
        }
    }

    fn take_threads(&self) -> Threads {
        std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Blocking. The pruner stops first, so that the final flush covers its deletions too.
    fn close(&self) -> Result<(), StoreError> {
        let Threads { writer, pruner } = self.take_threads();
        if let Some(pruner) = pruner {
            pruner.stop();
        }
        let writer = writer.ok_or(StoreError::Closed)?;
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        let (ack, done) = oneshot::channel();
        sender.send(Write::Close(ack)).map_err(|_| StoreError::Closed)?;
        let result = done.blocking_recv().unwrap_or(Err(StoreError::Closed));
        let _ = writer.join();
        result
    }
}

/// Where a write that must not be refused stands once offered to the writer's queue.
enum Offered {
    Queued,
    Closed,
    /// The queue is full: the write waits for room, off the runtime's threads.
    Full(Sender<Write>, Write),
}

impl Drop for Inner {
    /// The last handle is gone without `close`: the writer writes what is queued and stops, leaving the
    /// database marked as running. Blocks for at most the queued writes.
    fn drop(&mut self) {
        let Threads { writer, pruner } = self.take_threads();
        if let Some(pruner) = pruner {
            pruner.stop();
        }
        self.sender.take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests;
