//! The way onto the wire: first the key's rate-limit slot, then a delivery slot.
//!
//! The order matters. A key that waits for its budget holds no delivery slot, so a storm
//! on one integration key (hundreds of alert keys queued in its budget) leaves every slot
//! to the other keys; the in-flight limit counts HTTP requests under way and nothing else.
//! A request that then waited for a delivery slot is counted by the limiter from when it
//! really went out, so no window that ilert sees holds more than the budget.

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::Context;
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

    /// [`Wire::enter`], unless waiting stops first: `None` then, and nothing went out.
    /// A revoked message never goes out. Once shutdown began, a request that its key's
    /// budget lets go at once still goes (so the drain delivers what it can), while one
    /// that would wait for the budget stops.
    pub async fn enter_unless_stopped(
        &self,
        class: KeyClass,
        key: &str,
        ctx: &Context<'_>,
    ) -> Option<Option<SemaphorePermit<'_>>> {
        if ctx.is_revoked() {
            return None;
        }
        if ctx.is_stopping() {
            if !self.limiter.has_room(class, key) {
                return None;
            }
            return Some(self.enter(class, key).await);
        }
        tokio::select! {
            biased;
            () = ctx.waits_stopped() => None,
            on_wire = self.enter(class, key) => Some(on_wire),
        }
    }
}
