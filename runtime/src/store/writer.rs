//! The group-commit writer: one OS thread that owns every write to the predictions and audit trees.
//!
//! It blocks for the first queued write, drains whatever else is queued (up to `max_group` records), inserts
//! it all, flushes once (sled's fsync) and only then completes the acknowledgements of the whole group. No
//! batching timer: while one flush runs the next group queues up, so batching grows with the load by itself. Owning
//! the audit head here keeps the chain strictly ordered without a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use super::audit::{self, Head};
use super::config::{Durability, StoreConfig};
use super::db::Trees;
use super::error::StoreError;
use super::record::{AuditKind, AuditRecord};
use super::time::{now_unix_ms, rfc3339_millis};
use crate::idle;
use crate::telemetry::names::{
    STORE_FLUSH_DURATION, STORE_GROUP_SIZE, STORE_PREDICTION_BYTES, STORE_QUEUE_DEPTH, STORE_WRITES,
};

/// Completes a caller's write.
pub(crate) type Ack<T> = oneshot::Sender<Result<T, StoreError>>;

/// A prediction ready to insert; the caller serializes it so that the one writer thread does not have to.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub key: [u8; 16],
    pub value: Vec<u8>,
}

/// One entry of the writer's queue.
#[derive(Debug)]
pub(crate) enum Write {
    Predictions(Vec<Encoded>, Ack<()>),
    Audit(AuditKind, serde_json::Value, Ack<AuditRecord>),
    /// A table's batch (applied atomically) and its number of operations.
    Table(sled::Tree, sled::Batch, usize, Ack<()>),
    /// Writes everything queued before it, records the clean shutdown, flushes and stops the writer.
    Close(Ack<()>),
    /// Tests: the writer reports on `held` and blocks until `release` yields or is dropped.
    #[cfg(test)]
    Hold {
        held: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

/// Figures the writer, the pruner and [`Store::stats`](super::Store::stats) share.
#[derive(Debug)]
pub(crate) struct Counters {
    pub predictions: AtomicU64,
    pub audit_records: AtomicU64,
    /// Predictions inserted since the store opened, and their encoded bytes (before sled's own overhead).
    pub inserted: AtomicU64,
    pub inserted_bytes: AtomicU64,
    /// The seq of the last audit record known durable, for those who follow the trail.
    pub audit_durable: tokio::sync::watch::Sender<u64>,
    /// Tests: the number of flushes, to await and count them.
    #[cfg(test)]
    pub flushes: tokio::sync::watch::Sender<u64>,
    /// Tests: predictions deleted by the pruning thread, to await its passes.
    #[cfg(test)]
    pub pruned: tokio::sync::watch::Sender<u64>,
}

impl Counters {
    pub fn new(predictions: u64, audit_records: u64) -> Self {
        Self {
            predictions: AtomicU64::new(predictions),
            audit_records: AtomicU64::new(audit_records),
            inserted: AtomicU64::new(0),
            inserted_bytes: AtomicU64::new(0),
            audit_durable: tokio::sync::watch::Sender::new(audit_records),
            #[cfg(test)]
            flushes: tokio::sync::watch::Sender::new(0),
            #[cfg(test)]
            pruned: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Acknowledgements that wait for the group's flush.
#[derive(Debug, Default)]
struct Group {
    waiting: Vec<Waiting>,
    records: usize,
    close: Option<Ack<()>>,
}

#[derive(Debug)]
enum Waiting {
    Predictions(Ack<()>),
    Table(Ack<()>),
    Audit(AuditRecord, Ack<AuditRecord>),
}

enum Next {
    Write(Write),
    /// Relaxed mode: an acknowledged write has waited `flush_interval` for its flush.
    FlushDue,
    /// Nothing arrived for [`idle::AFTER`] since the last write (relaxed mode: since its flush).
    Idle,
    /// Every [`Store`](super::Store) handle is gone without a close.
    Disconnected,
}

#[derive(Debug)]
pub(crate) struct Writer {
    trees: Trees,
    receiver: Receiver<Write>,
    counters: Arc<Counters>,
    head: Head,
    /// The head moved since the last flush, so `meta` must be updated in the next one.
    head_moved: bool,
    durability: Durability,
    flush_interval: Duration,
    max_group: usize,
    /// Records inserted since the last flush.
    unflushed: usize,
    /// Relaxed mode: when the oldest acknowledged but unflushed write was inserted.
    dirty_since: Option<Instant>,
    /// Whether a write came since the writer last gave its free memory back.
    worked_since_idle: bool,
    metrics: WriterMetrics,
}

/// The writer's metrics, registered once: each group records five figures, and a handle
/// skips the registry's lookup of the name. A handle belongs to the recorder installed when
/// the store opens, so the app installs its recorder first (`app::serve`).
#[derive(Debug)]
struct WriterMetrics {
    queue_depth: metrics::Gauge,
    writes: metrics::Counter,
    prediction_bytes: metrics::Counter,
    flush_duration: metrics::Histogram,
    group_size: metrics::Histogram,
}

impl WriterMetrics {
    fn register() -> Self {
        Self {
            queue_depth: metrics::gauge!(STORE_QUEUE_DEPTH),
            writes: metrics::counter!(STORE_WRITES),
            prediction_bytes: metrics::counter!(STORE_PREDICTION_BYTES),
            flush_duration: metrics::histogram!(STORE_FLUSH_DURATION),
            group_size: metrics::histogram!(STORE_GROUP_SIZE),
        }
    }
}

impl Writer {
    pub fn new(
        trees: Trees,
        receiver: Receiver<Write>,
        counters: Arc<Counters>,
        head: Head,
        config: &StoreConfig,
    ) -> Self {
        Self {
            trees,
            receiver,
            counters,
            head,
            head_moved: false,
            durability: config.durability,
            flush_interval: Duration::from_millis(config.relaxed_flush_interval_ms),
            max_group: config.max_group,
            unflushed: 0,
            dirty_since: None,
            worked_since_idle: false,
            metrics: WriterMetrics::register(),
        }
    }

    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("store-writer".to_owned()).spawn(move || self.run())
    }

    fn run(mut self) {
        loop {
            let first = match self.next() {
                Next::Write(write) => write,
                Next::FlushDue => {
                    let _ = self.flush(false);
                    continue;
                }
                Next::Idle => {
                    idle::thread_idle();
                    self.worked_since_idle = false;
                    continue;
                }
                Next::Disconnected => {
                    // Dropped without close: write what is pending, but leave `running` set.
                    if self.unflushed > 0 || self.head_moved {
                        let _ = self.flush(false);
                    }
                    return;
                }
            };
            let group = self.collect(first);
            if self.finish(group) {
                return;
            }
        }
    }

    /// Blocks for the next write; in relaxed mode, no longer than the pending flush's deadline,
    /// and after work, no longer than [`idle::AFTER`].
    fn next(&mut self) -> Next {
        let received = match self.dirty_since {
            Some(since) => self.receiver.recv_deadline(since + self.flush_interval),
            None if self.worked_since_idle => self.receiver.recv_timeout(idle::AFTER),
            None => self.receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(write) => {
                self.worked_since_idle = true;
                Next::Write(write)
            }
            Err(RecvTimeoutError::Timeout) if self.dirty_since.is_some() => Next::FlushDue,
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Disconnected,
        }
    }

    /// Applies `first` and whatever else is queued, up to `max_group` records or a close.
    fn collect(&mut self, first: Write) -> Group {
        let mut group = Group::default();
        self.apply(first, &mut group);
        while group.close.is_none() && group.records < self.max_group {
            let Ok(write) = self.receiver.try_recv() else { break };
            self.apply(write, &mut group);
        }
        self.metrics.queue_depth.set(self.receiver.len() as f64);
        group
    }

    fn apply(&mut self, write: Write, group: &mut Group) {
        match write {
            Write::Predictions(records, ack) => {
                let count = records.len();
                match self.insert(records) {
                    Err(error) => drop(ack.send(Err(error))),
                    Ok(()) if self.durability == Durability::Durable => group.waiting.push(Waiting::Predictions(ack)),
                    Ok(()) => {
                        self.dirty_since.get_or_insert_with(Instant::now);
                        let _ = ack.send(Ok(()));
                    }
                }
                group.records += count;
            }
            Write::Audit(kind, details, ack) => {
                match self.append(kind, &details) {
                    Ok(record) => group.waiting.push(Waiting::Audit(record, ack)),
                    Err(error) => drop(ack.send(Err(error))),
                }
                group.records += 1;
            }
            Write::Table(tree, batch, count, ack) => {
                match tree.apply_batch(batch) {
                    Ok(()) => group.waiting.push(Waiting::Table(ack)),
                    Err(error) => drop(ack.send(Err(error.into()))),
                }
                self.unflushed += count;
                group.records += count;
                self.metrics.writes.increment(count as u64);
            }
            Write::Close(ack) => group.close = Some(ack),
            #[cfg(test)]
            Write::Hold { held, release } => {
                let _ = held.send(());
                let _ = release.recv();
            }
        }
    }

    /// Flushes when the group holds something durable, a close, or (relaxed mode) an overdue write, then
    /// completes the group's acknowledgements. Returns whether the writer is done.
    fn finish(&mut self, group: Group) -> bool {
        let overdue = self.dirty_since.is_some_and(|since| since.elapsed() >= self.flush_interval);
        if group.waiting.is_empty() && group.close.is_none() && !overdue {
            return false;
        }
        let result = self.flush(group.close.is_some());
        if result.is_ok() && group.waiting.iter().any(|waiting| matches!(waiting, Waiting::Audit(..))) {
            self.counters.audit_durable.send_replace(self.head.seq);
        }
        for waiting in group.waiting {
            // A send fails only when the caller stopped waiting; the write stands regardless.
            match waiting {
                Waiting::Predictions(ack) | Waiting::Table(ack) => drop(ack.send(result.clone())),
                Waiting::Audit(record, ack) => drop(ack.send(result.clone().map(|()| record))),
            }
        }
        match group.close {
            Some(ack) => {
                let _ = ack.send(result);
                true
            }
            None => false,
        }
    }

    /// Inserts a batch; on an error the records before it stay inserted (they are complete records).
    fn insert(&mut self, records: Vec<Encoded>) -> Result<(), StoreError> {
        let (mut written, mut added, mut bytes) = (0, 0, 0);
        let mut result = Ok(());
        for Encoded { key, value } in records {
            let length = value.len() as u64;
            match self.trees.predictions.insert(key, value) {
                Ok(previous) => {
                    written += 1;
                    bytes += length;
                    added += u64::from(previous.is_none());
                }
                Err(error) => {
                    result = Err(error.into());
                    break;
                }
            }
        }
        self.counters.predictions.fetch_add(added, Ordering::Relaxed);
        self.counters.inserted.fetch_add(written as u64, Ordering::Relaxed);
        self.counters.inserted_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.unflushed += written;
        self.metrics.writes.increment(written as u64);
        self.metrics.prediction_bytes.increment(bytes);
        result
    }

    fn append(&mut self, kind: AuditKind, details: &serde_json::Value) -> Result<AuditRecord, StoreError> {
        let (record, bytes) = self.head.next(rfc3339_millis(now_unix_ms()), kind, details);
        self.trees.audit.insert(audit::key(record.seq), bytes)?;
        self.head = Head { seq: record.seq, hash: record.hash.clone() };
        self.head_moved = true;
        self.unflushed += 1;
        self.counters.audit_records.fetch_add(1, Ordering::Relaxed);
        self.metrics.writes.increment(1);
        Ok(record)
    }

    fn flush(&mut self, closing: bool) -> Result<(), StoreError> {
        let result = self.write_meta(closing).and_then(|()| self.sync());
        if let Err(error) = &result {
            tracing::error!(%error, "the store could not flush");
            // Relaxed mode retries one interval later rather than at once, in a loop.
            if self.dirty_since.is_some() {
                self.dirty_since = Some(Instant::now());
            }
        }
        result
    }

    /// The audit head and, on close, the clean-shutdown marker: part of the same flush as the records.
    fn write_meta(&mut self, closing: bool) -> Result<(), StoreError> {
        if self.head_moved {
            audit::write_head(&self.trees.meta, &self.head)?;
            self.head_moved = false;
        }
        if closing {
            self.trees.mark_closed(self.counters.predictions.load(Ordering::Relaxed))?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        self.trees.flush()?;
        self.metrics.flush_duration.record(started.elapsed().as_secs_f64());
        self.metrics.group_size.record(self.unflushed as f64);
        self.unflushed = 0;
        self.dirty_since = None;
        #[cfg(test)]
        self.counters.flushes.send_modify(|flushes| *flushes += 1);
        Ok(())
    }
}
