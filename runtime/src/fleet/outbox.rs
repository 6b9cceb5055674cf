//! The outbox: every message for the fleet (metrics snapshots, events, deployment
//! progress) is written here durably first and removed only once the broker acknowledged
//! it, so nothing is lost while the broker is unreachable or the appliance restarts, and
//! everything leaves in the order it was queued.
//!
//! Bounded: at `capacity` messages the oldest metrics snapshot makes room (a newer one
//! says more); events and deployment outcomes are never dropped, so with no snapshot left
//! to drop the outbox grows past its bound rather than lose one. Every drop is counted.
//!
//! Layout of its table: `m` + seq (u64 big-endian) -> [`Queued`] as JSON; `c/<name>` ->
//! a cursor (u64 big-endian) its producers keep in step with their messages (see
//! [`Outbox::push_with_cursor`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};

use crate::store::{StoreError, Table, TableOp};
use crate::telemetry::names;

const MESSAGE: u8 = b'm';

/// What a queued message is, for the bound and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Metrics,
    Event,
    Deployment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Event => "event",
            Self::Deployment => "deployment",
        }
    }
}

/// One message waiting for the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub kind: Kind,
    pub topic: String,
    pub payload: String,
}

#[derive(Debug)]
pub struct Outbox {
    table: Table,
    capacity: usize,
    state: Mutex<State>,
    queued: Notify,
    /// `state.len`, readable without the lock (health reports).
    depth: AtomicUsize,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    len: usize,
    /// Seqs of the metrics snapshots waiting, oldest first: the ones to drop.
    metrics: VecDeque<u64>,
}

impl Outbox {
    /// Opens the outbox kept in `table`, with what an earlier run left in it.
    pub fn open(table: Table, capacity: usize) -> Result<Self, StoreError> {
        let mut state = State { next_seq: 1, len: 0, metrics: VecDeque::new() };
        for (key, value) in table.scan_prefix(&[MESSAGE], usize::MAX)? {
            let seq = seq_of(&key)?;
            state.next_seq = seq + 1;
            state.len += 1;
            if decode(&key, &value)?.kind == Kind::Metrics {
                state.metrics.push_back(seq);
            }
        }
        metrics::gauge!(names::FLEET_OUTBOX_DEPTH).set(state.len as f64);
        let depth = AtomicUsize::new(state.len);
        Ok(Self { table, capacity, state: Mutex::new(state), queued: Notify::new(), depth })
    }

    /// Queues a message durably.
    pub async fn push(&self, message: Queued) -> Result<(), StoreError> {
        self.push_with_cursor(message, None).await
    }

    /// Queues a message and, in the same atomic write, sets the cursor `name` to `value`:
    /// a producer that follows a log (the audit trail) resumes after a crash exactly where
    /// its last queued message left it.
    pub async fn push_with_cursor(&self, message: Queued, cursor: Option<(&str, u64)>) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let mut ops = Vec::new();
        let mut dropped = 0;
        if state.len >= self.capacity {
            match state.metrics.pop_front() {
                Some(oldest) => {
                    ops.push(TableOp::Remove(key(oldest)));
                    dropped = 1;
                }
                // Nothing droppable but the newcomer itself, if it is a snapshot.
                None if message.kind == Kind::Metrics => {
                    metrics::counter!(names::FLEET_OUTBOX_DROPPED).increment(1);
                    return Ok(());
                }
                None => {}
            }
        }
        let seq = state.next_seq;
        let value =
            serde_json::to_vec(&message).map_err(|error| StoreError::InvalidRecord { reason: error.to_string() })?;
        ops.push(TableOp::Put(key(seq), value));
        if let Some((name, value)) = cursor {
            ops.push(TableOp::Put(cursor_key(name), value.to_be_bytes().to_vec()));
        }
        self.table.apply(ops).await?;
        state.next_seq += 1;
        state.len = state.len + 1 - dropped;
        if message.kind == Kind::Metrics {
            state.metrics.push_back(seq);
        }
        if dropped > 0 {
            metrics::counter!(names::FLEET_OUTBOX_DROPPED).increment(1);
            tracing::debug!("outbox full: dropped the oldest metrics snapshot");
        }
        self.set_depth(state.len);
        drop(state);
        self.queued.notify_one();
        Ok(())
    }

    /// The oldest message, waiting for one if the outbox is empty.
    pub async fn next(&self) -> Result<(u64, Queued), StoreError> {
        loop {
            // Registered before looking, so a push between the look and the wait is not missed.
            let queued = self.queued.notified();
            if let Some((key, value)) = self.table.scan_prefix(&[MESSAGE], 1)?.into_iter().next() {
                return Ok((seq_of(&key)?, decode(&key, &value)?));
            }
            queued.await;
        }
    }

    /// Removes a message the broker acknowledged.
    pub async fn delivered(&self, seq: u64) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if self.table.get(&key(seq))?.is_none() {
            // Dropped meanwhile to make room: nothing left to remove.
            return Ok(());
        }
        self.table.remove(key(seq)).await?;
        state.len = state.len.saturating_sub(1);
        state.metrics.retain(|&queued| queued != seq);
        self.set_depth(state.len);
        Ok(())
    }

    /// The cursor `name`, if it was ever set.
    pub fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let Some(bytes) = self.table.get(&cursor_key(name))? else { return Ok(None) };
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt { what: format!("outbox cursor {name} is not 8 bytes") })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Messages waiting, without waiting for a push or delivery in progress.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn set_depth(&self, depth: usize) {
        self.depth.store(depth, Ordering::Relaxed);
        metrics::gauge!(names::FLEET_OUTBOX_DEPTH).set(depth as f64);
    }
}

fn key(seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(MESSAGE);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn cursor_key(name: &str) -> Vec<u8> {
    format!("c/{name}").into_bytes()
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    key.get(1..)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt { what: format!("outbox key {key:?}") })
}

fn decode(key: &[u8], value: &[u8]) -> Result<Queued, StoreError> {
    serde_json::from_slice(value)
        .map_err(|error| StoreError::Corrupt { what: format!("outbox entry {key:?}: {error}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreConfig};

    fn message(kind: Kind, n: u32) -> Queued {
        Queued { kind, topic: format!("t/{}", kind.as_str()), payload: n.to_string() }
    }

    async fn drain(outbox: &Outbox) -> Vec<String> {
        let mut payloads = Vec::new();
        while outbox.depth() > 0 {
            let (seq, queued) = outbox.next().await.unwrap();
            payloads.push(format!("{}:{}", queued.kind.as_str(), queued.payload));
            outbox.delivered(seq).await.unwrap();
        }
        payloads
    }

    #[tokio::test]
    async fn messages_leave_in_order_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let outbox = Outbox::open(store.table("outbox").unwrap(), 100).unwrap();
        outbox.push(message(Kind::Event, 1)).await.unwrap();
        outbox.push(message(Kind::Metrics, 2)).await.unwrap();
        outbox.push_with_cursor(message(Kind::Deployment, 3), Some(("audit", 7))).await.unwrap();
        let (seq, first) = outbox.next().await.unwrap();
        assert_eq!(first.payload, "1");
        outbox.delivered(seq).await.unwrap();
        drop(outbox);
        store.close().await.unwrap();

        let (store, _) = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let outbox = Outbox::open(store.table("outbox").unwrap(), 100).unwrap();
        assert_eq!(outbox.cursor("audit").unwrap(), Some(7));
        assert_eq!(outbox.cursor("other").unwrap(), None);
        assert_eq!(drain(&outbox).await, ["metrics:2", "deployment:3"]);
        outbox.push(message(Kind::Event, 4)).await.unwrap();
        assert_eq!(drain(&outbox).await, ["event:4"], "seqs go on after the restart");
    }

    #[tokio::test]
    async fn a_full_outbox_drops_the_oldest_snapshots_never_events_or_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let outbox = Outbox::open(store.table("outbox").unwrap(), 4).unwrap();
        outbox.push(message(Kind::Metrics, 1)).await.unwrap();
        outbox.push(message(Kind::Event, 2)).await.unwrap();
        outbox.push(message(Kind::Metrics, 3)).await.unwrap();
        outbox.push(message(Kind::Deployment, 4)).await.unwrap();
        // Full: each newcomer pushes out the oldest snapshot (m1, then m3, then m6).
        outbox.push(message(Kind::Event, 5)).await.unwrap();
        outbox.push(message(Kind::Metrics, 6)).await.unwrap();
        outbox.push(message(Kind::Event, 7)).await.unwrap();
        assert_eq!(outbox.depth(), 4);
        // A snapshot with none older to drop is itself the one dropped...
        outbox.push(message(Kind::Metrics, 8)).await.unwrap();
        assert_eq!(outbox.depth(), 4);
        // ...while an event stays, and the outbox goes past its bound.
        outbox.push(message(Kind::Event, 9)).await.unwrap();
        assert_eq!(outbox.depth(), 5);
        assert_eq!(drain(&outbox).await, ["event:2", "deployment:4", "event:5", "event:7", "event:9"]);
    }

    #[tokio::test]
    async fn next_waits_for_a_push() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let outbox = std::sync::Arc::new(Outbox::open(store.table("outbox").unwrap(), 10).unwrap());
        let waiting = tokio::spawn({
            let outbox = std::sync::Arc::clone(&outbox);
            async move { outbox.next().await.unwrap().1.payload }
        });
        tokio::task::yield_now().await;
        outbox.push(message(Kind::Event, 9)).await.unwrap();
        assert_eq!(waiting.await.unwrap(), "9");
    }
}
