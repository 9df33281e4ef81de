//! Keeps each ilert key inside its request budget, so the agent does not provoke 429s.
//!
//! ilert counts requests per key in one-minute windows (50 per integration key, 5 per
//! heartbeat key, 120 per user API key). The limiter keeps, per key, the send times of
//! its last `limit` requests and gives the next request the earliest slot at which no
//! window of that length would hold more than `limit`: a burst of up to `limit` goes out
//! at once, and a key over budget waits alone while other keys go on. (A token bucket
//! with a burst of `limit` would allow nearly twice the budget inside one fixed window.)
//!
//! Slots are reserved under the lock and waited for outside it, so concurrent callers
//! on one key queue up in order without holding anything across an await.
//!
//! Two logs per key. The booked slots pace the callers (first come, first served). The
//! requests really sent are the guarantee: a request that reached its slot late (it waited
//! for a delivery slot behind other keys) is sent only if the requests really sent in the
//! window allow it ([`RateLimiter::try_send`]), and it counts until its answer arrived
//! ([`RateLimiter::finished`]), since ilert counts it when it arrives, which is at the
//! latest then.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Which budget a key is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyClass {
    /// Alert-source integration keys (events).
    Integration,
    /// Heartbeat keys.
    Heartbeat,
    /// User API keys (escalation-policy calls).
    Api,
}

impl KeyClass {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyClass::Integration => "integration",
            KeyClass::Heartbeat => "heartbeat",
            KeyClass::Api => "api",
        }
    }
}

/// At most `limit` requests in any `window`; a limit of 0 turns the budget off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: u32,
    pub window: Duration,
}

impl Budget {
    pub fn per_minute(limit: u32) -> Self {
        Budget {
            limit,
            window: Duration::from_secs(60),
        }
    }

    /// The window the limiter really uses: 2% longer than ilert's, so that clock skew and
    /// network jitter do not push a request into a window that is already full.
    fn guarded_window(&self) -> Duration {
        self.window + self.window / 50
    }
}

/// The budgets of the three key classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    pub integration: Budget,
    pub heartbeat: Budget,
    pub api: Budget,
}

impl Default for Budgets {
    /// ilert's published limits.
    fn default() -> Self {
        Budgets {
            integration: Budget::per_minute(50),
            heartbeat: Budget::per_minute(5),
            api: Budget::per_minute(120),
        }
    }
}

impl Budgets {
    fn of(&self, class: KeyClass) -> Budget {
        match class {
            KeyClass::Integration => self.integration,
            KeyClass::Heartbeat => self.heartbeat,
            KeyClass::Api => self.api,
        }
    }
}

/// How many reservations pass between sweeps of idle keys.
const SWEEP_EVERY: u64 = 4096;

/// Per-key sliding-window rate limiter. Shared by every delivery task.
#[derive(Debug)]
pub struct RateLimiter {
    budgets: Budgets,
    /// Per key: the slots of its most recent requests (at most `limit`), oldest first.
    slots: Mutex<HashMap<(KeyClass, String), VecDeque<Instant>>>,
    /// Per key: when its most recent requests really went out, or their answers arrived
    /// (at most `limit`), oldest first.
    sent: Mutex<HashMap<(KeyClass, String), VecDeque<Instant>>>,
    reservations: AtomicU64,
    sends: AtomicU64,
}

impl RateLimiter {
    pub fn new(budgets: Budgets) -> Self {
        RateLimiter {
            budgets,
            slots: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
            reservations: AtomicU64::new(0),
            sends: AtomicU64::new(0),
        }
    }

    /// Waits for `key`'s next booked slot and returns it. The request then still has to
    /// pass [`RateLimiter::try_send`] when it really goes out.
    pub async fn acquire(&self, class: KeyClass, key: &str) -> Instant {
        let now = Instant::now();
        let slot = self.reserve(class, key, now);
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
        crate::observe::events::rate_limit_waited(
            class.as_str(),
            slot.saturating_duration_since(now),
        );
        slot
    }

    /// Whether `key` could send a request now without waiting: fewer than its limit
    /// really went out in the window (books nothing).
    pub fn has_room(&self, class: KeyClass, key: &str) -> bool {
        let budget = self.budgets.of(class);
        if budget.limit == 0 {
            return true;
        }
        let window = budget.guarded_window();
        let now = Instant::now();
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.get(&(class, key.to_string())).is_none_or(|log| {
            log.len() < budget.limit as usize
                || log.front().is_none_or(|oldest| *oldest + window <= now)
        })
    }

    /// Records a request of `key` going out at `now` if the requests really sent in the
    /// window leave room; otherwise the time when they will.
    pub fn try_send(&self, class: KeyClass, key: &str, now: Instant) -> Result<(), Instant> {
        let budget = self.budgets.of(class);
        if budget.limit == 0 {
            return Ok(());
        }
        let (window, limit) = (budget.guarded_window(), budget.limit as usize);
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if self.sends.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            sent.retain(|_, log| log.back().is_some_and(|last| *last + window > now));
        }
        let log = sent.entry((class, key.to_string())).or_default();
        if log.len() >= limit
            && let Some(oldest) = log.front()
            && *oldest + window > now
        {
            return Err(*oldest + window);
        }
        log.push_back(now);
        while log.len() > limit {
            log.pop_front();
        }
        Ok(())
    }

    /// The request of `key` that went out at `started` got its answer at `finished`: it
    /// counts from then on (ilert saw it at the latest then).
    pub fn finished(&self, class: KeyClass, key: &str, started: Instant, finished: Instant) {
        if finished <= started || self.budgets.of(class).limit == 0 {
            return;
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(log) = sent.get_mut(&(class, key.to_string())) else {
            return;
        };
        if let Some(at) = log.iter().position(|t| *t == started) {
            log.remove(at);
            let place = log.iter().position(|t| *t > finished).unwrap_or(log.len());
            log.insert(place, finished);
        }
    }

    /// Books the next free slot for `key` at or after `now`.
    fn reserve(&self, class: KeyClass, key: &str, now: Instant) -> Instant {
        let budget = self.budgets.of(class);
        if budget.limit == 0 {
            return now;
        }
        let window = budget.guarded_window();
        let limit = budget.limit as usize;
        // A poisoned lock only means another task panicked mid-update; the slots are
        // still a valid (if conservative) schedule.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if self.reservations.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            slots.retain(|_, log| log.back().is_some_and(|last| *last + window > now));
        }
        let log = slots.entry((class, key.to_string())).or_default();
        let slot = if log.len() < limit {
            now
        } else {
            // The request `limit` places back must have left the window.
            log.front()
                .map_or(now, |oldest| (*oldest + window).max(now))
        };
        log.push_back(slot);
        while log.len() > limit {
            log.pop_front();
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u32, window_secs: u64) -> RateLimiter {
        let budget = Budget {
            limit,
            window: Duration::from_secs(window_secs),
        };
        RateLimiter::new(Budgets {
            integration: budget,
            heartbeat: budget,
            api: budget,
        })
    }

    #[test]
    fn a_burst_up_to_the_limit_goes_out_at_once() {
        let l = limiter(3, 60);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.reserve(KeyClass::Integration, "k", now), now);
        }
    }

    #[test]
    fn the_request_over_budget_waits_until_the_oldest_leaves_the_window() {
        let l = limiter(2, 50);
        let now = Instant::now();
        l.reserve(KeyClass::Integration, "k", now);
        l.reserve(KeyClass::Integration, "k", now + Duration::from_secs(10));
        let third = l.reserve(KeyClass::Integration, "k", now + Duration::from_secs(20));
        assert_eq!(third, now + Duration::from_secs(51)); // 50 s window + 2% guard
        let fourth = l.reserve(KeyClass::Integration, "k", now + Duration::from_secs(20));
        assert_eq!(fourth, now + Duration::from_secs(61));
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limit() {
        let l = limiter(5, 10);
        let start = Instant::now();
        let slots: Vec<Instant> = (0..40)
            .map(|i| {
                l.reserve(
                    KeyClass::Integration,
                    "k",
                    start + Duration::from_millis(i * 100),
                )
            })
            .collect();
        for (i, first) in slots.iter().enumerate() {
            let in_window = slots[i..]
                .iter()
                .filter(|s| **s < *first + Duration::from_secs(10))
                .count();
            assert!(in_window <= 5, "{in_window} requests within one window");
        }
    }

    #[test]
    fn keys_and_classes_do_not_share_a_budget() {
        let l = limiter(1, 60);
        let now = Instant::now();
        assert_eq!(l.reserve(KeyClass::Integration, "a", now), now);
        assert_eq!(l.reserve(KeyClass::Integration, "b", now), now);
        assert_eq!(l.reserve(KeyClass::Heartbeat, "a", now), now);
        assert!(l.reserve(KeyClass::Integration, "a", now) > now);
    }

    #[test]
    fn a_zero_limit_turns_the_budget_off() {
        let l = limiter(0, 60);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.reserve(KeyClass::Integration, "k", now), now);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_the_slot_it_returns() {
        let l = limiter(1, 10);
        let start = Instant::now();
        assert_eq!(l.acquire(KeyClass::Api, "k").await, start);
        let second = l.acquire(KeyClass::Api, "k").await;
        assert_eq!(second, start + Duration::from_millis(10_200));
        assert_eq!(Instant::now(), second);
    }

    #[test]
    fn room_is_reported_from_what_was_really_sent() {
        let l = limiter(2, 60);
        let now = Instant::now();
        assert!(l.has_room(KeyClass::Heartbeat, "k"));
        assert_eq!(l.try_send(KeyClass::Heartbeat, "k", now), Ok(()));
        assert!(l.has_room(KeyClass::Heartbeat, "k"), "one of two used");
        assert_eq!(l.try_send(KeyClass::Heartbeat, "k", now), Ok(()));
        assert!(
            !l.has_room(KeyClass::Heartbeat, "k"),
            "the budget is used up"
        );
        assert!(l.has_room(KeyClass::Heartbeat, "other"));
    }

    #[test]
    fn requests_that_reach_their_slot_late_are_held_to_what_was_really_sent() {
        // Bookings pace at 2 a window, but the first two went out 100 s late (they waited
        // for delivery slots): the next two, booked for 61 s, must wait for those.
        let l = limiter(2, 60);
        let start = Instant::now();
        for _ in 0..4 {
            l.reserve(KeyClass::Integration, "k", start);
        }
        let late = start + Duration::from_secs(100);
        assert_eq!(l.try_send(KeyClass::Integration, "k", late), Ok(()));
        assert_eq!(l.try_send(KeyClass::Integration, "k", late), Ok(()));
        let booked_second = start + Duration::from_millis(61_200);
        let third = l.try_send(KeyClass::Integration, "k", late + Duration::from_secs(1));
        assert_eq!(third, Err(late + Duration::from_millis(61_200)));
        assert!(
            booked_second < late,
            "the booking alone would have let it go"
        );
    }

    #[test]
    fn a_request_counts_until_its_answer_arrived() {
        let l = limiter(1, 50);
        let now = Instant::now();
        assert_eq!(l.try_send(KeyClass::Integration, "k", now), Ok(()));
        l.finished(
            KeyClass::Integration,
            "k",
            now,
            now + Duration::from_secs(5),
        );
        assert_eq!(
            l.try_send(KeyClass::Integration, "k", now + Duration::from_secs(52)),
            Err(now + Duration::from_secs(56)),
            "51 s window counted from the answer at 5 s"
        );
    }
}
