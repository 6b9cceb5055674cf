//! Pruning: a thread that deletes the oldest predictions beyond the retention limits.
//!
//! Prediction keys are UUIDv7 bytes, so the oldest records are at the front of the tree and carry their
//! millisecond timestamp in their first six bytes: a pass only ever looks at the front. Deletions go to sled
//! directly (it is thread-safe) rather than through the writer's queue, so pruning never delays a request's
//! acknowledgement. The audit tree is never pruned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use sled::Tree;

use super::config::StoreConfig;
use super::db::Trees;
use super::error::StoreError;
use super::time::{now_unix_ms, unix_ms_of_key};
use super::writer::Counters;

/// The first pass comes soon after open, so that limits lowered in the configuration apply promptly.
const FIRST_PASS_DELAY: Duration = Duration::from_secs(5);
/// How many deletions pass between two checks for a stop request.
const STOP_CHECK_EVERY: u64 = 256;
const MS_PER_DAY: u64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retention {
    pub max_predictions: Option<u64>,
    pub max_age_ms: Option<u64>,
}

impl Retention {
    pub fn of(config: &StoreConfig) -> Self {
        Self {
            max_predictions: config.retention_max_predictions,
            max_age_ms: config.retention_max_age_days.map(|days| days.saturating_mul(MS_PER_DAY)),
        }
    }
}

/// Deletes the oldest predictions until at most `max_predictions` remain and none is older than `max_age_ms`
/// at `now_ms`, keeping `count` up to date. Stops early when `stop` says so. Returns the number deleted.
pub(crate) fn prune(
    predictions: &Tree,
    count: &AtomicU64,
    retention: Retention,
    now_ms: u64,
    stop: &dyn Fn() -> bool,
) -> Result<u64, StoreError> {
    let cutoff_ms = retention.max_age_ms.map(|age| now_ms.saturating_sub(age));
    let mut removed: u64 = 0;
    while let Some((key, _)) = predictions.first()? {
        let over_count = retention.max_predictions.is_some_and(|max| count.load(Ordering::Relaxed) > max);
        let too_old = cutoff_ms.is_some_and(|cutoff| unix_ms_of_key(&key) < cutoff);
        if !over_count && !too_old {
            break;
        }
        if predictions.remove(&key)?.is_some() {
            // Saturating: a count that ran low must never wrap around and make everything look excess.
            let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
            removed += 1;
            if removed.is_multiple_of(STOP_CHECK_EVERY) && stop() {
                break;
            }
        }
    }
    Ok(removed)
}

/// The pruning thread's handle: [`stop`](Self::stop) ends it promptly, even in the middle of a pass.
#[derive(Debug)]
pub(crate) struct Pruner {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Pruner {
    pub fn spawn(trees: Trees, counters: Arc<Counters>, config: &StoreConfig) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let retention = Retention::of(config);
        let interval = Duration::from_secs(config.prune_interval_secs);
        let thread = std::thread::Builder::new()
            .name("store-pruner".to_owned())
            .spawn(move || run(&trees, &counters, retention, interval, &stopped))?;
        Ok(Self { stop, thread })
    }

    /// Disconnecting the channel wakes the thread at once.
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(trees: &Trees, counters: &Counters, retention: Retention, interval: Duration, stopped: &Receiver<()>) {
    let mut wait = FIRST_PASS_DELAY.min(interval);
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
        wait = interval;
        let stop = || !matches!(stopped.try_recv(), Err(TryRecvError::Empty));
        match prune(&trees.predictions, &counters.predictions, retention, now_unix_ms(), &stop) {
            Ok(0) => {}
            Ok(removed) => {
                #[cfg(test)]
                counters.pruned.send_modify(|pruned| *pruned += removed);
                tracing::info!(removed, "pruned predictions beyond the retention limits");
                // Reclaims the space now rather than at the writer's next flush, which may be far off when idle.
                if let Err(error) = trees.flush() {
                    tracing::error!(%error, "the store could not flush after pruning");
                }
            }
            Err(error) => tracing::error!(%error, "pruning the store failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::{NoContext, Timestamp, Uuid};

    const DAY_MS: u64 = MS_PER_DAY;
    const NOW_MS: u64 = 1_750_000_000_000;

    fn key_at(unix_ms: u64) -> [u8; 16] {
        *Uuid::new_v7(Timestamp::from_unix(NoContext, unix_ms / 1000, (unix_ms % 1000) as u32 * 1_000_000)).as_bytes()
    }

    /// A tree holding one record per given age in days (ms apart, so the order is known), and its count.
    fn tree_with_ages(ages_days: &[u64]) -> (tempfile::TempDir, Trees, AtomicU64) {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::open(dir.path(), 8).unwrap();
        for (i, age) in ages_days.iter().enumerate() {
            // A millisecond apart, so that equal ages still have distinct keys in the listed order.
            trees.predictions.insert(key_at(NOW_MS - age * DAY_MS - ages_days.len() as u64 + i as u64), b"{}").unwrap();
        }
        let count = AtomicU64::new(ages_days.len() as u64);
        (dir, trees, count)
    }

    fn remaining_ages(trees: &Trees) -> Vec<u64> {
        trees.predictions.iter().keys().map(|key| (NOW_MS - unix_ms_of_key(&key.unwrap())) / DAY_MS).collect()
    }

    #[test]
    fn prunes_the_oldest_beyond_the_count() {
        let (_dir, trees, count) = tree_with_ages(&[5, 4, 3, 2, 1]);
        let retention = Retention { max_predictions: Some(2), max_age_ms: None };
        assert_eq!(prune(&trees.predictions, &count, retention, NOW_MS, &|| false).unwrap(), 3);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        assert_eq!(remaining_ages(&trees), [2, 1]);
        assert_eq!(prune(&trees.predictions, &count, retention, NOW_MS, &|| false).unwrap(), 0);
    }

    #[test]
    fn prunes_what_is_too_old() {
        let (_dir, trees, count) = tree_with_ages(&[400, 91, 89, 10, 0]);
        let retention = Retention { max_predictions: Some(100), max_age_ms: Some(90 * DAY_MS) };
        assert_eq!(prune(&trees.predictions, &count, retention, NOW_MS, &|| false).unwrap(), 2);
        assert_eq!(count.load(Ordering::Relaxed), 3);
        assert_eq!(remaining_ages(&trees), [89, 10, 0]);
    }

    #[test]
    fn without_limits_nothing_is_pruned() {
        let (_dir, trees, count) = tree_with_ages(&[10_000, 1]);
        let retention = Retention { max_predictions: None, max_age_ms: None };
        assert_eq!(prune(&trees.predictions, &count, retention, NOW_MS, &|| false).unwrap(), 0);
        assert_eq!(trees.predictions.len(), 2);
    }

    #[test]
    fn a_pass_stops_when_asked() {
        let ages: Vec<u64> = vec![100; 2 * STOP_CHECK_EVERY as usize];
        let (_dir, trees, count) = tree_with_ages(&ages);
        let retention = Retention { max_predictions: None, max_age_ms: Some(DAY_MS) };
        assert_eq!(prune(&trees.predictions, &count, retention, NOW_MS, &|| true).unwrap(), STOP_CHECK_EVERY);
    }

    #[tokio::test]
    async fn the_thread_prunes_soon_after_start_and_stops_at_once() {
        let (_dir, trees, _) = tree_with_ages(&[5, 4, 3]);
        let counters = Arc::new(Counters::new(3, 0));
        let mut pruned = counters.pruned.subscribe();
        // No age limit: these records are old by the real clock the thread uses.
        let config = StoreConfig {
            retention_max_predictions: Some(1),
            retention_max_age_days: None,
            prune_interval_secs: 1,
            ..StoreConfig::default()
        };
        let pruner = Pruner::spawn(trees.clone(), Arc::clone(&counters), &config).unwrap();
        tokio::time::timeout(Duration::from_secs(10), pruned.wait_for(|&pruned| pruned == 2)).await.unwrap().unwrap();
        assert_eq!(counters.predictions.load(Ordering::Relaxed), 1);
        let stopping = std::time::Instant::now();
        pruner.stop();
        assert!(stopping.elapsed() < Duration::from_millis(500));
        assert_eq!(trees.predictions.len(), 1);
    }
}
