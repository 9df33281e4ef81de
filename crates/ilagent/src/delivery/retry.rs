//! The retry policy: after a transient failure, how long to wait and when to give up.
//!
//! One rule for every path (live deliveries retrying in memory, queued rows retrying
//! through the SQLite file): `Retry-After` from ilert wins (capped at `max_retry_after`);
//! otherwise a jittered exponential backoff, and after a 429 without `Retry-After` at
//! least the 10 s ilert advises (capped by the backoff cap); `max_attempts` ends it.

use std::time::Duration;

use super::backoff::Backoff;

/// ilert asks clients that got a 429 without `Retry-After` to wait 10 to 30 s.
const RATE_LIMITED_WAIT: Duration = Duration::from_secs(10);

/// How long to keep trying, and how long to wait in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Attempts before a transient failure becomes a rejection; `None` is unlimited.
    pub max_attempts: Option<u32>,
    /// The longest `Retry-After` honoured; longer requests are cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::default(),
            max_attempts: Some(100),
            max_retry_after: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    /// The same policy without an attempt limit.
    pub fn unlimited(self) -> Self {
        RetryPolicy {
            max_attempts: None,
            ..self
        }
    }

    /// After `attempts` attempts, the last of which failed transiently with `status` and
    /// ilert's `retry_after`: the wait before the next one, or `None` to give up.
    pub fn after_failure(
        &self,
        attempts: u32,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| attempts >= max) {
            return None;
        }
        if let Some(after) = retry_after {
            crate::observe::events::retry_after_waiting(after.min(self.max_retry_after));
            return Some(after.min(self.max_retry_after));
        }
        let backoff = self.backoff.delay(attempts, &mut rand::rng());
        Some(if status == Some(429) {
            backoff.max(RATE_LIMITED_WAIT.min(self.backoff.max))
        } else {
            backoff
        })
    }

    /// The reason recorded when the attempts ran out.
    pub fn gave_up(attempts: u32, last_reason: &str) -> String {
        format!("gave up after {attempts} attempts: {last_reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: Option<u32>) -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(60),
            },
            max_attempts,
            max_retry_after: Duration::from_secs(900),
        }
    }

    #[test]
    fn retry_after_is_honoured_in_full_up_to_the_cap() {
        let p = policy(Some(100));
        assert_eq!(
            p.after_failure(1, Some(429), Some(Duration::from_secs(120))),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            p.after_failure(1, Some(503), Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            p.after_failure(1, Some(429), Some(Duration::from_secs(7200))),
            Some(Duration::from_secs(900))
        );
    }

    #[test]
    fn a_429_without_retry_after_waits_at_least_ten_seconds() {
        let p = policy(Some(100));
        assert!(p.after_failure(2, Some(429), None).unwrap() >= Duration::from_secs(10));
        assert!(p.after_failure(2, Some(503), None).unwrap() <= Duration::from_millis(200));
    }

    #[test]
    fn max_attempts_ends_it_and_unlimited_never_does() {
        let p = policy(Some(3));
        assert!(p.after_failure(2, Some(503), None).is_some());
        assert_eq!(p.after_failure(3, Some(503), None), None);
        assert!(p.unlimited().after_failure(1_000_000, None, None).is_some());
    }
}
