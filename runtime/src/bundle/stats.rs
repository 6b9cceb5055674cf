//! What one bundle version's requests came to: counts and a latency histogram, cheap
//! enough to keep for every request (relaxed atomics, no lock), read as snapshots whose
//! differences describe a window (a canary's).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in milliseconds; the last bucket is unbounded.
const BOUNDS_MS: [f64; 16] =
    [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];
const BUCKETS: usize = BOUNDS_MS.len() + 1;

#[derive(Debug, Default)]
pub struct VersionStats {
    requests: AtomicU64,
    failures: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl VersionStats {
    /// One request served by this version. `failed` is the version's fault (plugin, model or
    /// internal failure), not a client's bad input.
    pub fn observe(&self, failed: bool, seconds: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let ms = seconds * 1e3;
        let bucket = BOUNDS_MS.iter().position(|&bound| ms <= bound).unwrap_or(BOUNDS_MS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|index| self.buckets[index].load(Ordering::Relaxed)),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub failures: u64,
    buckets: [u64; BUCKETS],
}

impl StatsSnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            failures: self.failures.saturating_sub(earlier.failures),
            buckets: std::array::from_fn(|index| self.buckets[index].saturating_sub(earlier.buckets[index])),
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.failures as f64 / self.requests as f64 }
    }

    /// The 99th percentile latency, as the upper bound of its bucket (so a threshold is
    /// judged conservatively); infinite when it falls in the last, unbounded bucket, and
    /// zero without requests.
    pub fn p99_ms(&self) -> f64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return BOUNDS_MS.get(index).copied().unwrap_or(f64::INFINITY);
            }
        }
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_only_its_own_requests() {
        let stats = VersionStats::default();
        stats.observe(true, 0.001);
        let start = stats.snapshot();
        for _ in 0..99 {
            stats.observe(false, 0.0008);
        }
        stats.observe(true, 0.2);
        let window = stats.snapshot().since(&start);
        assert_eq!((window.requests, window.failures), (100, 1));
        assert_eq!(window.error_rate(), 0.01);
        assert_eq!(window.p99_ms(), 1.0);
    }

    #[test]
    fn the_p99_is_the_upper_bound_of_its_bucket() {
        let stats = VersionStats::default();
        for _ in 0..97 {
            stats.observe(false, 0.0001);
        }
        for _ in 0..3 {
            stats.observe(false, 0.040);
        }
        assert_eq!(stats.snapshot().p99_ms(), 50.0);
        stats.observe(false, 60.0);
        assert_eq!(StatsSnapshot::default().p99_ms(), 0.0);
        let slow = VersionStats::default();
        slow.observe(false, 60.0);
        assert_eq!(slow.snapshot().p99_ms(), f64::INFINITY);
    }
}
