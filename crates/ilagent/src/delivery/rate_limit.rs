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

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
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

/// Most keys whose windows are remembered. Beyond it, the keys used least recently are
/// forgotten first (a forgotten key may meet a 429 from ilert, which is honoured): a
/// producer inventing a fresh key per message costs bounded memory, not memory per key.
pub const MAX_TRACKED_KEYS: usize = 20_000;

/// How many requests pass between sweeps of idle keys (besides the timer's).
const SWEEP_EVERY: u64 = 4096;

/// Per key, in nanoseconds since the limiter's epoch, oldest first: the slots booked for its
/// most recent requests, and when those really went out or their answers arrived (at most
/// `limit` of each). Eight bytes a time, and only the key's hash: memory per key stays
/// small, and no integration key is kept in full.
#[derive(Debug, Default)]
struct KeyLog {
    booked: VecDeque<u64>,
    sent: VecDeque<u64>,
}

impl KeyLog {
    fn latest(&self) -> u64 {
        let booked = self.booked.back().copied().unwrap_or(0);
        let sent = self.sent.back().copied().unwrap_or(0);
        booked.max(sent)
    }
}

/// Per-key sliding-window rate limiter. Shared by every delivery task.
#[derive(Debug)]
pub struct RateLimiter {
    budgets: Budgets,
    epoch: Instant,
    hasher: RandomState,
    logs: Mutex<HashMap<(KeyClass, u64), KeyLog>>,
    requests: AtomicU64,
}

impl RateLimiter {
    pub fn new(budgets: Budgets) -> Self {
        RateLimiter {
            budgets,
            epoch: Instant::now(),
            hasher: RandomState::new(),
            logs: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
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

    /// Books `key`'s next slot if it is due now, as [`RateLimiter::acquire`] would without
    /// waiting; `false`, booking nothing, if the key would have to wait.
    pub fn try_acquire_now(&self, class: KeyClass, key: &str) -> bool {
        let booked = self.book(class, key, Instant::now(), true).is_some();
        if booked {
            crate::observe::events::rate_limit_waited(class.as_str(), Duration::ZERO);
        }
        booked
    }

    /// Whether `key` could send a request now without waiting: fewer than its limit
    /// really went out in the window (books nothing).
    pub fn has_room(&self, class: KeyClass, key: &str) -> bool {
        let budget = self.budgets.of(class);
        if budget.limit == 0 {
            return true;
        }
        let (window, now) = (nanos(budget.guarded_window()), self.nanos(Instant::now()));
        let logs = self.lock();
        logs.get(&self.id(class, key)).is_none_or(|log| {
            log.sent.len() < budget.limit as usize
                || log.sent.front().is_none_or(|oldest| oldest + window <= now)
        })
    }

    /// Records a request of `key` going out at `now` if the requests really sent in the
    /// window leave room; otherwise the time when they will.
    pub fn try_send(&self, class: KeyClass, key: &str, now: Instant) -> Result<(), Instant> {
        let budget = self.budgets.of(class);
        if budget.limit == 0 {
            return Ok(());
        }
        let (window, limit) = (nanos(budget.guarded_window()), budget.limit as usize);
        let at = self.nanos(now);
        let mut logs = self.lock();
        let log = self.log_of(&mut logs, class, key, at);
        if log.sent.len() >= limit
            && let Some(oldest) = log.sent.front()
            && oldest + window > at
        {
            return Err(self.instant(oldest + window));
        }
        log.sent.push_back(at);
        while log.sent.len() > limit {
            log.sent.pop_front();
        }
        Ok(())
    }

    /// The request of `key` that went out at `started` got its answer at `finished`: it
    /// counts from then on (ilert saw it at the latest then).
    pub fn finished(&self, class: KeyClass, key: &str, started: Instant, finished: Instant) {
        if finished <= started || self.budgets.of(class).limit == 0 {
            return;
        }
        let (started, finished) = (self.nanos(started), self.nanos(finished));
        let mut logs = self.lock();
        let Some(log) = logs.get_mut(&self.id(class, key)) else {
            return;
        };
        if let Some(at) = log.sent.iter().position(|t| *t == started) {
            log.sent.remove(at);
            let place = log
                .sent
                .iter()
                .position(|t| *t > finished)
                .unwrap_or(log.sent.len());
            log.sent.insert(place, finished);
        }
    }

    /// Drops the logs of keys with nothing left in their window at `now`: a key that sent
    /// nothing for a window has the same budget with or without its log. Runs on a timer
    /// ([`crate::delivery::Deliverer`]) and every [`SWEEP_EVERY`] requests, so neither a
    /// quiet agent nor a storm of fresh keys keeps the state of keys gone idle.
    pub fn prune_idle(&self, now: Instant) {
        let now = self.nanos(now);
        let mut logs = self.lock();
        self.drop_idle(&mut logs, now);
        logs.shrink_to_fit();
    }

    /// Keys with state: some request of theirs is still inside its window.
    pub fn tracked_keys(&self) -> usize {
        self.lock().len()
    }

    /// Books the next free slot for `key` at or after `now`.
    fn reserve(&self, class: KeyClass, key: &str, now: Instant) -> Instant {
        self.book(class, key, now, false).unwrap_or(now)
    }

    /// Books the next free slot for `key` at or after `now`; with `only_if_due`, only if
    /// that slot is `now` (`None` otherwise, nothing booked).
    fn book(&self, class: KeyClass, key: &str, now: Instant, only_if_due: bool) -> Option<Instant> {
        let budget = self.budgets.of(class);
        if budget.limit == 0 {
            return Some(now);
        }
        let (window, limit) = (nanos(budget.guarded_window()), budget.limit as usize);
        let at = self.nanos(now);
        let mut logs = self.lock();
        let log = self.log_of(&mut logs, class, key, at);
        let slot = if log.booked.len() < limit {
            at
        } else {
            // The request `limit` places back must have left the window.
            log.booked
                .front()
                .map_or(at, |oldest| (oldest + window).max(at))
        };
        if only_if_due && slot != at {
            return None;
        }
        log.booked.push_back(slot);
        while log.booked.len() > limit {
            log.booked.pop_front();
        }
        Some(if slot == at { now } else { self.instant(slot) })
    }

    /// `key`'s log, made room for: every [`SWEEP_EVERY`] requests, and whenever a new key
    /// would pass [`MAX_TRACKED_KEYS`], idle keys are dropped; if that is not enough, the
    /// tenth of the keys used least recently goes too.
    fn log_of<'m>(
        &self,
        logs: &'m mut HashMap<(KeyClass, u64), KeyLog>,
        class: KeyClass,
        key: &str,
        now: u64,
    ) -> &'m mut KeyLog {
        let id = self.id(class, key);
        let sweep = self.requests.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        if sweep || (logs.len() >= MAX_TRACKED_KEYS && !logs.contains_key(&id)) {
            self.drop_idle(logs, now);
        }
        if logs.len() >= MAX_TRACKED_KEYS && !logs.contains_key(&id) {
            forget_least_recent(logs, MAX_TRACKED_KEYS / 10);
        }
        logs.entry(id).or_default()
    }

    fn drop_idle(&self, logs: &mut HashMap<(KeyClass, u64), KeyLog>, now: u64) {
        logs.retain(|(class, _), log| {
            log.latest() + nanos(self.budgets.of(*class).guarded_window()) > now
        });
    }

    /// The map key: the class and a keyed hash of the key (a collision, about one in 2^64
    /// per pair, would only make two keys share a budget).
    fn id(&self, class: KeyClass, key: &str) -> (KeyClass, u64) {
        (class, self.hasher.hash_one(key))
    }

    fn nanos(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch))
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(KeyClass, u64), KeyLog>> {
        // A poisoned lock only means another task panicked mid-update; the logs are still
        // a valid (if conservative) schedule.
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Drops the `count` keys whose latest request is oldest.
fn forget_least_recent(logs: &mut HashMap<(KeyClass, u64), KeyLog>, count: usize) {
    let mut latest: Vec<u64> = logs.values().map(KeyLog::latest).collect();
    let count = count.clamp(1, latest.len().max(1));
    if latest.is_empty() {
        return;
    }
    let (_, cutoff, _) = latest.select_nth_unstable(count - 1);
    let cutoff = *cutoff;
    logs.retain(|_, log| log.latest() > cutoff);
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
    fn a_slot_is_taken_now_only_if_it_is_due_now_and_a_refusal_books_nothing() {
        let l = limiter(2, 60);
        assert!(l.try_acquire_now(KeyClass::Integration, "k"));
        assert!(l.try_acquire_now(KeyClass::Integration, "k"));
        assert!(
            !l.try_acquire_now(KeyClass::Integration, "k"),
            "the third would have to wait for the window"
        );
        // The refusal booked nothing: the next booking is the third slot, one window on.
        let now = Instant::now();
        let next = l.reserve(KeyClass::Integration, "k", now);
        assert!(next > now + Duration::from_secs(60), "{:?}", next - now);
        assert!(
            next < now + Duration::from_secs(62),
            "one window, not two: {:?}",
            next - now
        );
        assert!(limiter(0, 60).try_acquire_now(KeyClass::Integration, "k"));
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

    #[test]
    fn keys_idle_for_a_window_are_forgotten() {
        let l = limiter(50, 60);
        let now = Instant::now();
        for n in 0..1000 {
            l.reserve(KeyClass::Integration, &format!("k{n}"), now);
            assert_eq!(
                l.try_send(KeyClass::Integration, &format!("k{n}"), now),
                Ok(())
            );
        }
        l.prune_idle(now + Duration::from_secs(30));
        assert_eq!(l.tracked_keys(), 1000, "inside the window they still count");
        l.prune_idle(now + Duration::from_secs(62));
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn fresh_keys_beyond_the_cap_forget_the_least_recently_used() {
        let l = limiter(1, 60);
        let start = Instant::now();
        let at = |n: usize| start + Duration::from_micros(n as u64);
        for n in 0..MAX_TRACKED_KEYS + 5_000 {
            l.reserve(KeyClass::Integration, &format!("k{n}"), at(n));
        }
        assert!(l.tracked_keys() <= MAX_TRACKED_KEYS);
        let last = MAX_TRACKED_KEYS + 4_999;
        assert!(
            l.reserve(KeyClass::Integration, &format!("k{last}"), at(last)) > at(last),
            "the most recent key keeps its budget"
        );
        assert_eq!(
            l.reserve(KeyClass::Integration, "k0", at(last)),
            at(last),
            "the oldest key was forgotten"
        );
    }
}
