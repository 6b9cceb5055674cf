//! The last minutes of traffic, second by second, for the dashboard: requests, errors and a
//! latency histogram per second, kept in a ring of fixed size (no allocation, no lock: a
//! request adds a few relaxed atomic increments). Prometheus's histograms count since the
//! start; a page that shows "now" needs a window, and a scraper is not always there.
//!
//! Latencies fall into buckets ten to a decade (each bound 26% above the one before), from
//! 10 µs to 100 s; a percentile is interpolated inside its bucket, as Prometheus's
//! `histogram_quantile` does, so it is within a bucket's width of the true value.
//!
//! This module knows nothing of bundles, HTTP or the store: it counts what it is handed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Seconds kept: five minutes.
pub const WINDOW_SECONDS: u64 = 300;
/// Buckets per decade of latency.
const PER_DECADE: usize = 10;
/// The lowest bucket bound, in seconds (10 µs); the highest is 10^7 times that (100 s).
const LOWEST: f64 = 1e-5;
const BUCKETS: usize = 7 * PER_DECADE + 1;

/// One second's counts. `second` says which second (since [`RecentTraffic`]'s start) the
/// counts are of: a slot whose `second` is not the one asked for holds nothing of it.
struct Slot {
    second: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    const fn new() -> Self {
        Self {
            second: AtomicU64::new(u64::MAX),
            requests: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            latency: [const { AtomicU32::new(0) }; BUCKETS],
        }
    }

    /// Makes the slot second `second`'s, empty, unless it already is (or is a later one's).
    fn claim(&self, second: u64) {
        let held = self.second.load(Ordering::Acquire);
        if held != u64::MAX && held >= second {
            return;
        }
        if self.second.compare_exchange(held, second, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.requests.store(0, Ordering::Relaxed);
            self.errors.store(0, Ordering::Relaxed);
            for bucket in &self.latency {
                bucket.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// The ring of the last [`WINDOW_SECONDS`] seconds.
pub struct RecentTraffic {
    start: Instant,
    /// The wall clock at `start`, to name the seconds to readers.
    start_unix: Duration,
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for RecentTraffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentTraffic").field("start", &self.start).finish_non_exhaustive()
    }
}

impl Default for RecentTraffic {
    fn default() -> Self {
        Self::new()
    }
}

impl RecentTraffic {
    pub fn new() -> Self {
        // Two slots more than the window: the current second's, and the next one's, which
        // is cleared ahead of it while the window's oldest second is still read.
        let slots = (0..WINDOW_SECONDS + 2).map(|_| Slot::new()).collect();
        Self {
            start: Instant::now(),
            start_unix: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            slots,
        }
    }

    fn slot(&self, second: u64) -> &Slot {
        &self.slots[(second % self.slots.len() as u64) as usize]
    }

    fn second_now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// One request ended: whether it failed, and how long it took.
    pub fn observe(&self, failed: bool, seconds: f64) {
        self.observe_at(self.second_now(), failed, seconds);
    }

    fn observe_at(&self, second: u64, failed: bool, seconds: f64) {
        let slot = self.slot(second);
        slot.claim(second);
        // The next second's slot is cleared now, while nobody counts into it, so that its
        // first requests do not race with the clearing.
        self.slot(second + 1).claim(second + 1);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket_of(seconds)].fetch_add(1, Ordering::Relaxed);
    }

    /// The window in steps of `step_seconds` (at least 1), oldest first, ending with the
    /// last whole second (the current one is still being counted), and the last minute.
    pub fn snapshot(&self, step_seconds: u64) -> TrafficSnapshot {
        self.snapshot_at(self.second_now(), step_seconds)
    }

    fn snapshot_at(&self, now: u64, step_seconds: u64) -> TrafficSnapshot {
        let step = step_seconds.clamp(1, WINDOW_SECONDS);
        let steps = WINDOW_SECONDS / step;
        let last = now.saturating_sub(1);
        let mut points = Vec::with_capacity(steps as usize);
        for index in (0..steps).rev() {
            let Some(end) = last.checked_sub(index * step) else { continue };
            let counts = self.counts((end + 1).saturating_sub(step), end);
            points.push(counts.point(self.unix_of(end), step));
        }
        let minute = self.counts(last.saturating_sub(59), last).point(self.unix_of(last), 60.min(last + 1));
        TrafficSnapshot { step_seconds: step, points, last_minute: minute }
    }

    /// The counts of seconds `first..=last`, skipping slots that hold another second.
    fn counts(&self, first: u64, last: u64) -> Counts {
        let mut counts = Counts::default();
        for second in first..=last {
            let slot = self.slot(second);
            if slot.second.load(Ordering::Acquire) != second {
                continue;
            }
            counts.requests += u64::from(slot.requests.load(Ordering::Relaxed));
            counts.errors += u64::from(slot.errors.load(Ordering::Relaxed));
            for (sum, bucket) in counts.latency.iter_mut().zip(&slot.latency) {
                *sum += u64::from(bucket.load(Ordering::Relaxed));
            }
        }
        counts
    }

    /// The wall-clock time (Unix seconds) at the end of second `second`.
    fn unix_of(&self, second: u64) -> f64 {
        (self.start_unix + Duration::from_secs(second + 1)).as_secs_f64()
    }
}

/// The bucket of a latency: bucket `i` holds latencies up to `upper_bound(i)`.
fn bucket_of(seconds: f64) -> usize {
    if !seconds.is_finite() || seconds <= LOWEST {
        return 0;
    }
    let index = ((seconds / LOWEST).log10() * PER_DECADE as f64).ceil();
    (index as usize).min(BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> f64 {
    LOWEST * 10f64.powf(bucket as f64 / PER_DECADE as f64)
}

struct Counts {
    requests: u64,
    errors: u64,
    latency: [u64; BUCKETS],
}

impl Default for Counts {
    fn default() -> Self {
        Self { requests: 0, errors: 0, latency: [0; BUCKETS] }
    }
}

impl Counts {
    fn point(&self, end_unix: f64, seconds: u64) -> TrafficPoint {
        let seconds = seconds.max(1) as f64;
        TrafficPoint {
            time: end_unix,
            requests: self.requests,
            requests_per_second: self.requests as f64 / seconds,
            errors: self.errors,
            error_rate: if self.requests == 0 { None } else { Some(self.errors as f64 / self.requests as f64) },
            p50_ms: self.quantile(0.50).map(|s| s * 1e3),
            p95_ms: self.quantile(0.95).map(|s| s * 1e3),
            p99_ms: self.quantile(0.99).map(|s| s * 1e3),
        }
    }

    /// The `q` quantile in seconds, linear inside its bucket; None without requests.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (bucket, &count) in self.latency.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let lower = if bucket == 0 { 0.0 } else { upper_bound(bucket - 1) };
                let upper = upper_bound(bucket);
                let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            below += count;
        }
        Some(upper_bound(BUCKETS - 1))
    }
}

/// The window as the dashboard reads it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrafficSnapshot {
    /// The seconds each point covers.
    pub step_seconds: u64,
    /// Oldest first; the last ends with the last whole second.
    pub points: Vec<TrafficPoint>,
    /// The last 60 whole seconds (fewer just after the start).
    pub last_minute: TrafficPoint,
}

/// The requests that reached a bundle (predictions, batches, inference-protocol calls) in
/// one stretch of time. Refusals before a bundle (401, 403, 429 at the door) are not here.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrafficPoint {
    /// Unix seconds at the end of the stretch.
    pub time: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Requests answered with an error (any code).
    pub errors: u64,
    /// `errors / requests`; absent without requests.
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_tenth_of_a_decade_and_hold_their_bound() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(1e-5), 0);
        assert_eq!(bucket_of(1e-4), PER_DECADE);
        assert_eq!(bucket_of(1.01e-4), PER_DECADE + 1);
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
        for seconds in [2e-5, 3.3e-4, 0.0012, 0.07, 4.2] {
            let bucket = bucket_of(seconds);
            assert!(seconds <= upper_bound(bucket) * (1.0 + 1e-12), "{seconds} above bucket {bucket}");
            assert!(seconds > upper_bound(bucket - 1), "{seconds} belongs below bucket {bucket}");
        }
    }

    #[test]
    fn percentiles_fall_within_a_bucket_of_the_truth() {
        let traffic = RecentTraffic::new();
        // 1..=1000 µs, once each: p50 = 500 µs, p99 = 990 µs.
        for micros in 1..=1000 {
            traffic.observe_at(10, micros % 100 == 0, micros as f64 * 1e-6);
        }
        let point = traffic.snapshot_at(11, 1).points.last().cloned().unwrap();
        assert_eq!((point.requests, point.errors), (1000, 10));
        assert_eq!(point.error_rate, Some(0.01));
        let within = |got: Option<f64>, want: f64| {
            let got = got.unwrap();
            assert!((got - want).abs() <= want * 0.26, "{got} ms is not within a bucket of {want} ms");
        };
        within(point.p50_ms, 0.5);
        within(point.p95_ms, 0.95);
        within(point.p99_ms, 0.99);
    }

    #[test]
    fn the_window_forgets_what_is_older_than_it_and_steps_add_up() {
        let traffic = RecentTraffic::new();
        for second in 0..10 {
            for _ in 0..=second {
                traffic.observe_at(second, false, 0.001);
            }
        }
        let snapshot = traffic.snapshot_at(10, 5);
        let last_two: Vec<u64> = snapshot.points.iter().rev().take(2).map(|point| point.requests).collect();
        assert_eq!(last_two, [6 + 7 + 8 + 9 + 10, 1 + 2 + 3 + 4 + 5]);
        assert_eq!(snapshot.last_minute.requests, 55);
        assert_eq!(snapshot.last_minute.requests_per_second, 5.5, "ten seconds since the start, not sixty");

        // The same slots, one window later: the old counts are gone, not added to.
        let later = 10 + WINDOW_SECONDS + 1;
        traffic.observe_at(later, true, 0.002);
        let snapshot = traffic.snapshot_at(later + 1, 1);
        assert_eq!(snapshot.points.iter().map(|point| point.requests).sum::<u64>(), 1);
        assert_eq!(snapshot.last_minute.errors, 1);
        assert_eq!(snapshot.points.len() as u64, WINDOW_SECONDS);
    }

    #[test]
    fn an_empty_window_has_no_percentiles() {
        let snapshot = RecentTraffic::new().snapshot_at(3, 1);
        assert!(snapshot.points.iter().all(|point| point.requests == 0 && point.p99_ms.is_none()));
        assert_eq!(snapshot.last_minute.error_rate, None);
    }
}
