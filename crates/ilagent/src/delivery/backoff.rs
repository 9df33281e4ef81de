//! How long to wait before the next attempt: capped exponential backoff with full jitter.
//!
//! Full jitter (a uniform pick between zero and the exponential ceiling) spreads the
//! retries of many keys that failed together, so a recovering ilert is not hit by a
//! synchronized wave. A `Retry-After` from ilert overrides the pick.

use std::time::Duration;

use rand::Rng;

/// The backoff settings: the first ceiling and the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The ceiling after `failures` failed attempts: `initial * 2^(failures-1)`, capped.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// A uniformly random wait in `[0, ceiling(failures)]`.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(failures);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_initial_up_to_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(1), Duration::from_millis(500));
        assert_eq!(b.ceiling(2), Duration::from_secs(1));
        assert_eq!(b.ceiling(4), Duration::from_secs(4));
        assert_eq!(b.ceiling(8), Duration::from_secs(60));
        assert_eq!(b.ceiling(1000), Duration::from_secs(60));
    }

    #[test]
    fn delay_stays_between_zero_and_the_ceiling() {
        let b = Backoff::default();
        let mut rng = rand::rng();
        for failures in 1..40 {
            assert!(b.delay(failures, &mut rng) <= b.ceiling(failures));
        }
    }

    #[test]
    fn delays_are_jittered_not_identical() {
        let b = Backoff::default();
        let mut rng = rand::rng();
        let picks: std::collections::HashSet<_> = (0..20).map(|_| b.delay(6, &mut rng)).collect();
        assert!(picks.len() > 1);
    }
}
