//! The way onto the wire: first the key's rate-limit slot, then a delivery slot.
//!
//! The order matters. A key that waits for its budget holds no delivery slot, so a storm
//! on one integration key (hundreds of alert keys queued in its budget) leaves every slot
//! to the other keys; the in-flight limit counts HTTP requests under way and nothing else.
//! A request that then waited for a delivery slot is counted by the limiter from when it
//! really went out, so no window that ilert sees holds more than the budget.

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::rate_limit::{KeyClass, RateLimiter};

pub(crate) struct Wire<'a> {
    pub limiter: &'a RateLimiter,
    /// `None`: no limit on requests under way.
    pub slots: Option<&'a Semaphore>,
}

impl Wire<'_> {
    /// Waits for `key`'s rate-limit slot, then for a delivery slot; the permit is held
    /// for the request and returned when it is dropped.
    pub async fn enter(&self, class: KeyClass, key: &str) -> Option<SemaphorePermit<'_>> {
        let slot = self.limiter.acquire(class, key).await;
        // Closed never: the semaphore lives as long as its dispatcher.
        let permit = match self.slots {
            Some(slots) => slots.acquire().await.ok(),
            None => None,
        };
        self.limiter.sent_at(class, key, slot, Instant::now());
        permit
    }
}
