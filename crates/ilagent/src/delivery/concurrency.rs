//! How many requests to ilert a source runs at once: adaptive, below its
//! `--*_max_in_flight` ceiling.
//!
//! Every request in parallel holds an HTTP/1.1 connection, and hyper keeps about 40 KB per
//! connection (buffers, its request channel). A fixed limit of 128 pays for 128 of them
//! whenever 128 keys are ready, even when ilert answers at once and a dozen carry the same
//! rate: more requests than that only queue, in ilert and in the agent. So the limit
//! follows ilert's answer time, as TCP Vegas follows a path's delay:
//!
//! - Time is cut into windows of about one answer time (at least [`MIN_WINDOW`]).
//! - A window whose mean answer time stays within [`TOLERANCE`] times the quickest answer
//!   seen (`Adaptive::baseline`), or within [`SLACK`] of it, and that used its whole limit,
//!   raises the limit: doubling (slow start) up to the last level that went wrong, then
//!   by one.
//! - A window whose answers took longer than that while its requests used at least half
//!   the limit lowers the limit by 10%: the requests were queueing.
//! - A window with a sign of overload (a timeout, a network error, 408 or 5xx) halves it.
//!   `429` does not count: ilert's budgets are per key, and the rate limiter and
//!   `Retry-After` pace that key alone without slowing the others.
//!
//! The limit starts at [`INITIAL`] (or the ceiling, if lower), never falls under 1, never
//! rises over the ceiling. With ilert's latency steady, a backlog reaches the ceiling in
//! a few answer times; with ilert slowing down, the agent sends less at once.
//!
//! The slots are a semaphore's permits. A raise adds permits; a cut takes idle permits out
//! at once and the rest as requests finish (a debt), so no request is ever interrupted. A
//! finished request's permit pays the debt before it is released: a released permit goes
//! straight to a waiting key, so it would never be idle to take.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::ilert::Verdict;
use crate::observe::events;

/// The limit a source starts at, below its ceiling.
pub(crate) const INITIAL: usize = 16;
/// The shortest window: shorter ones hold too few answers to average at local latencies.
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(10);
/// A window's mean answer time over this many times the baseline means queueing.
pub(crate) const TOLERANCE: u32 = 3;
/// Queueing of less than this is not taken for queueing: below a millisecond, answer
/// times measure the agent's own scheduling more than ilert.
pub(crate) const SLACK: Duration = Duration::from_millis(1);
/// The baseline moves 1/`BASELINE_DRIFT` of the way to each window's mean when that is
/// higher, so that a lasting change in ilert's latency becomes the new normal (after
/// about this many windows) instead of holding the limit down forever.
const BASELINE_DRIFT: u32 = 64;

/// A source's delivery slots (requests on the wire at once).
pub struct Slots {
    semaphore: Arc<Semaphore>,
    ceiling: usize,
    state: Mutex<Adaptive>,
}

/// What a finished request tells the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// ilert answered (2xx or a permanent 4xx): its time is a sample.
    Answered,
    /// A timeout, a network error, 408 or 5xx.
    Overloaded,
    /// Neither a sample nor a sign of overload: 429 (a key's budget), or a request that
    /// stopped before its answer.
    Ignored,
}

impl Answer {
    pub(crate) fn of(verdict: &Verdict) -> Self {
        match verdict {
            Verdict::Delivered { .. } | Verdict::Permanent { .. } => Answer::Answered,
            Verdict::Transient {
                status: Some(429), ..
            } => Answer::Ignored,
            Verdict::Transient { .. } => Answer::Overloaded,
        }
    }
}

#[derive(Debug)]
struct Adaptive {
    limit: usize,
    /// Slow start doubles the limit up to here; it is set to the limit a cut leaves.
    threshold: usize,
    /// Permits still to take out of circulation after a cut.
    debt: usize,
    /// The quickest answer seen (drifting up, see [`BASELINE_DRIFT`]).
    baseline: Option<Duration>,
    in_flight: usize,
    window: Window,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    total: Duration,
    samples: u32,
    /// The quickest answer of the window.
    quickest: Option<Duration>,
    overloaded: bool,
    /// The most requests on the wire at once during the window.
    peak: usize,
}

impl Window {
    fn new(started: Instant, in_flight: usize) -> Self {
        Window {
            started,
            total: Duration::ZERO,
            samples: 0,
            quickest: None,
            overloaded: false,
            peak: in_flight,
        }
    }
}

impl Slots {
    /// Adaptive slots under `ceiling` (at least 1).
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.clamp(1, Semaphore::MAX_PERMITS);
        let limit = ceiling.min(INITIAL);
        events::ilert_concurrency_limit(limit as f64);
        Slots {
            semaphore: Arc::new(Semaphore::new(limit)),
            ceiling,
            state: Mutex::new(Adaptive {
                limit,
                threshold: ceiling,
                debt: 0,
                baseline: None,
                in_flight: 0,
                window: Window::new(Instant::now(), 0),
            }),
        }
    }

    /// The permits: a request holds one while it is on the wire.
    pub(crate) fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    /// The current limit.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.lock().limit
    }

    /// A request went on the wire, holding a permit.
    pub(crate) fn started(&self) {
        let mut state = self.lock();
        state.in_flight += 1;
        state.window.peak = state.window.peak.max(state.in_flight);
    }

    /// A request came back. `true`: a cut left a debt, and the caller must forget its
    /// permit instead of releasing it.
    #[must_use]
    pub(crate) fn finished(&self, answer_time: Duration, answer: Answer, now: Instant) -> bool {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        match answer {
            Answer::Answered => {
                state.window.total += answer_time;
                state.window.samples += 1;
                let quickest = state.window.quickest.get_or_insert(answer_time);
                *quickest = (*quickest).min(answer_time);
            }
            Answer::Overloaded => state.window.overloaded = true,
            Answer::Ignored => {}
        }
        let length = state.baseline.unwrap_or(MIN_WINDOW).max(MIN_WINDOW);
        if now.duration_since(state.window.started) >= length {
            self.close_window(&mut state, now);
        }
        let owes = state.debt > 0;
        if owes {
            state.debt -= 1;
        }
        owes
    }

    /// Moves the limit by the window that ends `now`, and its permits with it.
    fn close_window(&self, state: &mut Adaptive, now: Instant) {
        let before = state.limit;
        state.next_limit(self.ceiling, now);
        let after = state.limit;
        if after > before {
            let raise = after - before;
            let repaid = raise.min(state.debt);
            state.debt -= repaid;
            self.semaphore.add_permits(raise - repaid);
        } else {
            state.debt += before - after;
        }
        if after != before {
            events::ilert_concurrency_limit(after as f64 - before as f64);
        }
        // Idle permits (given back by keys that found their budget used up) pay at once.
        state.debt -= self.semaphore.forget_permits(state.debt);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Adaptive> {
        // The state stays consistent between statements; a poisoned lock changes nothing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Adaptive {
    /// The limit after the window that ends `now`; starts the next window.
    fn next_limit(&mut self, ceiling: usize, now: Instant) {
        let window = std::mem::replace(&mut self.window, Window::new(now, self.in_flight));
        let mean = (window.samples > 0).then(|| window.total / window.samples);
        if let (Some(mean), Some(quickest)) = (mean, window.quickest) {
            let drifted = match self.baseline {
                Some(baseline) if mean > baseline => baseline + (mean - baseline) / BASELINE_DRIFT,
                Some(baseline) => baseline,
                None => quickest,
            };
            self.baseline = Some(drifted.min(quickest));
        }
        let busy = window.peak * 2 >= self.limit;
        let queueing = match (mean, self.baseline) {
            (Some(mean), Some(baseline)) => {
                busy && mean > (baseline * TOLERANCE).max(baseline + SLACK)
            }
            _ => false,
        };
        if window.overloaded {
            self.limit = (self.limit / 2).max(1);
            self.threshold = self.limit;
        } else if queueing {
            self.limit = (self.limit - self.limit.div_ceil(10)).max(1);
            self.threshold = self.limit;
        } else if window.peak >= self.limit && mean.is_some() {
            self.limit = if self.limit < self.threshold {
                (self.limit * 2).min(self.threshold)
            } else {
                self.limit + 1
            }
            .min(ceiling);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One window: `requests` requests at once, answered within the window, which closes
    /// with the last answer (the clock is paused and moved here).
    async fn window(slots: &Slots, requests: usize, answer_time: Duration, answer: Answer) {
        for _ in 0..requests {
            slots.started();
        }
        // The requests here hold no permits, so there is none to forget.
        for _ in 1..requests {
            let _ = slots.finished(answer_time, answer, Instant::now());
        }
        tokio::time::advance(answer_time.max(MIN_WINDOW)).await;
        let _ = slots.finished(answer_time, answer, Instant::now());
    }

    async fn full_window(slots: &Slots, answer_time: Duration) {
        window(slots, slots.limit(), answer_time, Answer::Answered).await;
    }

    #[tokio::test(start_paused = true)]
    async fn with_steady_answer_times_a_saturated_limit_doubles_up_to_its_ceiling() {
        let slots = Slots::new(128);
        assert_eq!(slots.limit(), INITIAL);
        let mut limits = Vec::new();
        for _ in 0..5 {
            full_window(&slots, Duration::from_millis(50)).await;
            limits.push(slots.limit());
        }
        assert_eq!(limits, [32, 64, 128, 128, 128]);
        assert_eq!(slots.semaphore().available_permits(), 128);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_that_is_not_used_up_does_not_grow() {
        let slots = Slots::new(128);
        for _ in 0..5 {
            window(&slots, 4, Duration::from_millis(50), Answer::Answered).await;
        }
        assert_eq!(slots.limit(), INITIAL);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_slowing_down_under_load_cut_the_limit_and_growth_then_goes_one_by_one() {
        let slots = Slots::new(128);
        full_window(&slots, Duration::from_millis(1)).await;
        assert_eq!(slots.limit(), 32);
        // Twice the load, four times the answer time: the requests queue.
        full_window(&slots, Duration::from_millis(4)).await;
        assert_eq!(slots.limit(), 28, "a cut of 10%");
        assert_eq!(slots.semaphore().available_permits(), 28);
        full_window(&slots, Duration::from_millis(1)).await;
        assert_eq!(slots.limit(), 29, "after a cut, one at a time");
    }

    #[tokio::test(start_paused = true)]
    async fn less_than_a_millisecond_of_queueing_is_not_queueing() {
        let slots = Slots::new(128);
        full_window(&slots, Duration::from_micros(100)).await;
        full_window(&slots, Duration::from_micros(900)).await;
        assert_eq!(slots.limit(), 64, "nine times slower, but by 0.8 ms only");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_takes_permits_out_as_requests_finish_before_a_waiting_key_gets_them() {
        let slots = Slots::new(128);
        let semaphore = Arc::clone(slots.semaphore());
        let on_the_wire: Vec<_> = (0..16)
            .map(|_| Arc::clone(&semaphore).try_acquire_owned())
            .collect::<Result<_, _>>()
            .unwrap();
        on_the_wire.iter().for_each(|_| slots.started());
        let waiting_key = tokio::spawn(Arc::clone(&semaphore).acquire_owned());
        tokio::task::yield_now().await;
        tokio::time::advance(MIN_WINDOW).await;

        let mut forgotten = 0;
        for permit in on_the_wire {
            if slots.finished(Duration::from_secs(1), Answer::Overloaded, Instant::now()) {
                forgotten += 1;
                permit.forget();
            }
        }

        assert_eq!(slots.limit(), 8, "overload halves the limit");
        assert_eq!(
            forgotten, 8,
            "the first 8 permits back went out of circulation"
        );
        let _permit = waiting_key.await.unwrap().unwrap();
        assert_eq!(
            semaphore.available_permits(),
            7,
            "of the 8 permits left, the waiting key has one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_answers_at_light_load_are_not_taken_for_queueing() {
        let slots = Slots::new(128);
        full_window(&slots, Duration::from_millis(1)).await;
        window(&slots, 3, Duration::from_millis(5), Answer::Answered).await;
        assert_eq!(slots.limit(), 32);
    }

    #[tokio::test(start_paused = true)]
    async fn overload_halves_the_limit_down_to_one_and_429_changes_nothing() {
        let slots = Slots::new(128);
        window(&slots, 16, Duration::from_secs(10), Answer::Ignored).await;
        assert_eq!(
            slots.limit(),
            INITIAL,
            "429 is a key's budget, not overload"
        );
        for expected in [8, 4, 2, 1, 1] {
            window(&slots, 1, Duration::from_secs(10), Answer::Overloaded).await;
            assert_eq!(slots.limit(), expected);
        }
        assert_eq!(slots.semaphore().available_permits(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_change_of_latency_becomes_the_baseline() {
        let slots = Slots::new(128);
        full_window(&slots, Duration::from_millis(20)).await;
        for _ in 0..300 {
            full_window(&slots, Duration::from_millis(100)).await;
        }
        assert!(
            slots.limit() > 64,
            "ilert five times slower for good ends up as the new normal: {}",
            slots.limit()
        );
    }

    #[tokio::test]
    async fn a_ceiling_below_the_initial_limit_is_the_limit() {
        assert_eq!(Slots::new(4).limit(), 4);
        assert_eq!(Slots::new(0).limit(), 1);
    }
}
