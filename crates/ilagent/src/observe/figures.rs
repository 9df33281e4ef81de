//! The figures the agent watches itself by (seed 004's thresholds): rejected share and p99
//! delivery time over the last 5 minutes, Kafka rebalances in the last hour, consumer lag
//! per topic now.
//!
//! Fed from [`super::events`] and [`super::kafka_stats`] as things happen, read by the
//! daemon's self-monitoring ([`crate::commands`]) each time it evaluates. Memory is fixed:
//! 30 slots (10 seconds each in a 5-minute window) with a latency histogram each, at most [`MAX_REBALANCES`]
//! rebalance times, one lag per configured topic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The rates are over this many slots, which split the window (5 minutes: 10 s each).
const SLOTS: usize = 30;
/// Fewer settled messages in the window give no rejected share: one rejection among a
/// handful is no trend.
const MIN_SETTLED: u64 = 20;
/// Rebalances remembered (far above any threshold that makes sense per hour).
const MAX_REBALANCES: usize = 1_000;
/// Delivery-time bucket bounds in seconds; the p99 threshold is added to them, so that the
/// estimate is exact at the line.
const BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The figures at one moment; `None` where there is nothing to measure (no Kafka, no
/// traffic in the window).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The topic with the largest lag, and that lag (summed over its partitions).
    pub consumer_lag: Option<(String, i64)>,
    /// Seconds.
    pub p99_delivery: Option<f64>,
    /// Rejected among settled, 0 to 1, and how many were settled.
    pub error_rate: Option<(f64, u64)>,
    pub rebalances_last_hour: u32,
}

#[derive(Clone, Default)]
struct Slot {
    /// Which 10-second slot since start this one holds.
    number: u64,
    settled: u64,
    rejected: u64,
    /// Counts per bucket of `bounds`, and one more for above the last.
    latency: Vec<u64>,
}

struct Figures {
    started: Instant,
    slot: Duration,
    rebalance_window: Duration,
    bounds: Vec<f64>,
    slots: Vec<Slot>,
    rebalances: VecDeque<Instant>,
    lag: BTreeMap<String, i64>,
}

fn figures() -> MutexGuard<'static, Figures> {
    static FIGURES: OnceLock<Mutex<Figures>> = OnceLock::new();
    FIGURES
        .get_or_init(|| Mutex::new(Figures::new(None, DEFAULT_WINDOW, HOUR)))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// Sets the windows of the rates and of the rebalances, and adds the p99 threshold to the
/// bucket bounds; called once at start, before traffic.
pub fn configure(p99_threshold: Option<Duration>, window: Duration, rebalance_window: Duration) {
    *figures() = Figures::new(
        p99_threshold.map(|t| t.as_secs_f64()),
        window,
        rebalance_window,
    );
}

/// A message was settled: delivered, skipped, rejected, … (not a retry, not a shutdown).
pub fn settled(rejected: bool, delivery_seconds: Option<f64>) {
    let mut figures = figures();
    let bucket = delivery_seconds.map(|seconds| figures_bucket(&figures.bounds, seconds));
    let slot = figures.current_slot();
    slot.settled += 1;
    if rejected {
        slot.rejected += 1;
    }
    if let Some(bucket) = bucket {
        slot.latency[bucket] += 1;
    }
}

fn figures_bucket(bounds: &[f64], seconds: f64) -> usize {
    bounds.partition_point(|bound| *bound < seconds)
}

/// The consumer group assigned partitions to this agent.
pub fn rebalanced() {
    let mut figures = figures();
    let now = Instant::now();
    figures.prune_rebalances(now);
    if figures.rebalances.len() >= MAX_REBALANCES {
        figures.rebalances.pop_front();
    }
    figures.rebalances.push_back(now);
}

/// Each topic's lag summed over the partitions with a known lag, from one statistics
/// report; replaces the last report's.
pub fn kafka_lag(by_topic: BTreeMap<String, i64>) {
    figures().lag = by_topic;
}

/// The self-monitoring's verdicts, as `/status` shows them; set at each evaluation.
pub fn publish_status(status: serde_json::Value) {
    *published().lock().unwrap_or_else(|e| e.into_inner()) = status;
}

pub fn status() -> serde_json::Value {
    published()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn published() -> &'static Mutex<serde_json::Value> {
    static STATUS: OnceLock<Mutex<serde_json::Value>> = OnceLock::new();
    STATUS.get_or_init(|| Mutex::new(serde_json::Value::Null))
}

pub fn snapshot() -> Snapshot {
    let mut figures = figures();
    let now = Instant::now();
    figures.prune_rebalances(now);
    let live = figures.live_slots(now);
    let settled: u64 = live.iter().map(|s| s.settled).sum();
    let rejected: u64 = live.iter().map(|s| s.rejected).sum();
    let mut latency = vec![0u64; figures.bounds.len() + 1];
    for slot in &live {
        for (total, count) in latency.iter_mut().zip(&slot.latency) {
            *total += count;
        }
    }
    Snapshot {
        consumer_lag: figures
            .lag
            .iter()
            .max_by_key(|(_, lag)| **lag)
            .map(|(topic, lag)| (topic.clone(), *lag)),
        p99_delivery: quantile(&figures.bounds, &latency, 0.99),
        error_rate: (settled >= MIN_SETTLED).then(|| (rejected as f64 / settled as f64, settled)),
        rebalances_last_hour: u32::try_from(figures.rebalances.len()).unwrap_or(u32::MAX),
    }
}

/// The `q` quantile, interpolated inside its bucket as Prometheus's `histogram_quantile`
/// does; above the last bound it is the last bound.
fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in counts.iter().enumerate() {
        if (below + count) as f64 >= rank && *count > 0 {
            let Some(upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let into = (rank - below as f64) / *count as f64;
            return Some(lower + (upper - lower) * into.clamp(0.0, 1.0));
        }
        below += count;
    }
    bounds.last().copied()
}

impl Figures {
    fn new(p99_threshold: Option<f64>, window: Duration, rebalance_window: Duration) -> Self {
        let mut bounds = BOUNDS.to_vec();
        if let Some(threshold) = p99_threshold.filter(|t| t.is_finite() && *t > 0.0) {
            // And one above it, so that a threshold past the last bound can be exceeded.
            bounds.push(threshold);
            bounds.push(threshold * 2.0);
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
        }
        Figures {
            started: Instant::now(),
            slot: (window / SLOTS as u32).max(Duration::from_millis(10)),
            rebalance_window,
            bounds,
            slots: vec![Slot::default(); SLOTS],
            rebalances: VecDeque::new(),
            lag: BTreeMap::new(),
        }
    }

    fn slot_number(&self, now: Instant) -> u64 {
        (now.duration_since(self.started).as_millis() / self.slot.as_millis()) as u64
    }

    fn current_slot(&mut self) -> &mut Slot {
        let number = self.slot_number(Instant::now());
        let buckets = self.bounds.len() + 1;
        let slot = &mut self.slots[(number % SLOTS as u64) as usize];
        if slot.number != number || slot.latency.len() != buckets {
            *slot = Slot {
                number,
                settled: 0,
                rejected: 0,
                latency: vec![0; buckets],
            };
        }
        slot
    }

    /// The slots inside the window at `now` (a slot never written has no histogram).
    fn live_slots(&self, now: Instant) -> Vec<&Slot> {
        let current = self.slot_number(now);
        self.slots
            .iter()
            .filter(|s| s.number + (SLOTS as u64) > current && s.number <= current)
            .filter(|s| !s.latency.is_empty())
            .collect()
    }

    fn prune_rebalances(&mut self, now: Instant) {
        while self
            .rebalances
            .front()
            .is_some_and(|at| now.duration_since(*at) >= self.rebalance_window)
        {
            self.rebalances.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_is_exact_at_a_threshold_that_is_a_bound() {
        let bounds = Figures::new(Some(5.0), DEFAULT_WINDOW, HOUR).bounds;
        let mut counts = vec![0u64; bounds.len() + 1];
        // 99 fast, 1 slow: the p99 is at most 5 s.
        counts[figures_bucket(&bounds, 0.2)] = 99;
        counts[figures_bucket(&bounds, 8.0)] = 1;
        assert!(quantile(&bounds, &counts, 0.99).unwrap() <= 5.0);
        // 2 in 100 slow: above.
        counts[figures_bucket(&bounds, 0.2)] = 98;
        counts[figures_bucket(&bounds, 8.0)] = 2;
        assert!(quantile(&bounds, &counts, 0.99).unwrap() > 5.0);
        assert_eq!(quantile(&bounds, &vec![0; bounds.len() + 1], 0.99), None);
    }

    #[test]
    fn an_odd_threshold_becomes_a_bound() {
        let bounds = Figures::new(Some(2.2), DEFAULT_WINDOW, HOUR).bounds;
        assert!(bounds.contains(&2.2));
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_threshold_past_the_last_bound_can_be_exceeded() {
        let bounds = Figures::new(Some(7200.0), DEFAULT_WINDOW, HOUR).bounds;
        let mut counts = vec![0u64; bounds.len() + 1];
        counts[figures_bucket(&bounds, 9000.0)] = 10;
        assert!(quantile(&bounds, &counts, 0.99).unwrap() > 7200.0);
    }

    #[test]
    fn slots_older_than_the_window_no_longer_count() {
        let mut figures = Figures::new(None, Duration::from_secs(3), HOUR);
        figures.started -= Duration::from_secs(10);
        let old = figures.slot_number(Instant::now()) - 40;
        figures.slots[(old % SLOTS as u64) as usize] = Slot {
            number: old,
            settled: 100,
            rejected: 100,
            latency: vec![0; figures.bounds.len() + 1],
        };
        let live = figures.live_slots(Instant::now());
        assert!(live.is_empty(), "{} slots", live.len());
    }

    #[test]
    fn samples_above_the_last_bound_count_as_the_last_bound() {
        let bounds = BOUNDS.to_vec();
        let mut counts = vec![0u64; bounds.len() + 1];
        counts[bounds.len()] = 10;
        assert_eq!(quantile(&bounds, &counts, 0.99), Some(3600.0));
    }
}
