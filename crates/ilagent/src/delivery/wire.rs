//! The way onto the wire: first the key's rate-limit slot, then a delivery slot.
//!
//! The order matters. A key that waits for its budget holds no delivery slot, so a storm
//! on one integration key (hundreds of alert keys queued in its budget) leaves every slot
//! to the other keys; the in-flight limit counts HTTP requests under way and nothing else.
//! A request that then waited long for a delivery slot goes out only if the requests its
//! key really sent leave room ([`RateLimiter::try_send`]; otherwise it gives the slot back
//! and waits), and it counts until its answer arrived, so no window that ilert sees holds
//! more than the budget.
//!
//! A caller may take a delivery slot before the delivery starts ([`Reserved`]: the
//! dispatcher waits for one where waiting costs a few hundred bytes per key instead of a
//! whole delivery's state). The first request uses it only if the key's budget lets it go
//! at once; otherwise the slot is given back before the key waits for its budget.

use std::sync::Mutex;

use tokio::sync::{OwnedSemaphorePermit, SemaphorePermit};
use tokio::time::Instant;

use super::Context;
use super::concurrency::{Answer, Slots};
use super::rate_limit::{KeyClass, RateLimiter};
use crate::ilert::Verdict;

/// A delivery slot taken before the delivery started, for its first request (see the
/// module's doc). Empty by default.
#[derive(Default)]
pub struct Reserved(Mutex<Option<OwnedSemaphorePermit>>);

impl Reserved {
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        Reserved(Mutex::new(Some(permit)))
    }

    /// The slot, once: later calls get `None`.
    pub(crate) fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Gives the slot back (before a wait that is not for the wire).
    pub(crate) fn release(&self) {
        drop(self.take());
    }
}

pub(crate) struct Wire<'a> {
    pub limiter: &'a RateLimiter,
    /// `None`: no limit on requests under way.
    pub slots: Option<&'a Slots>,
}

/// A request on the wire: holds its delivery slot, and tells the limiter and the slots
/// when the answer arrived when dropped ([`OnWire::answered`] says what it was).
pub(crate) struct OnWire<'a> {
    permit: Option<SemaphorePermit<'a>>,
    /// The slot reserved before the delivery, when the request went out on it.
    reserved: Option<OwnedSemaphorePermit>,
    slots: Option<&'a Slots>,
    answer: Answer,
    limiter: &'a RateLimiter,
    class: KeyClass,
    key: String,
    started: Instant,
}

impl OnWire<'_> {
    /// What ilert answered: its time and kind adjust the number of delivery slots.
    pub(crate) fn answered(mut self, verdict: &Verdict) {
        self.answer = Answer::of(verdict);
    }

    /// [`OnWire::answered`] for a lookup: a result is an answer.
    pub(crate) fn looked_up<T>(mut self, result: &Result<T, Verdict>) {
        self.answer = match result {
            Ok(_) => Answer::Answered,
            Err(verdict) => Answer::of(verdict),
        };
    }
}

impl Drop for OnWire<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        self.limiter
            .finished(self.class, &self.key, self.started, now);
        if let Some(slots) = self.slots
            && slots.finished(now.duration_since(self.started), self.answer, now)
        {
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
            if let Some(permit) = self.reserved.take() {
                permit.forget();
            }
        }
    }
}

impl<'a> Wire<'a> {
    /// Waits for `key`'s rate-limit slot, then for a delivery slot, until the request may
    /// really go out; the returned guard is held for the request. A `reserved` delivery
    /// slot is used if the key's budget lets the request go at once, else given back
    /// before the key waits for its budget.
    pub async fn enter(
        &self,
        class: KeyClass,
        key: &str,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> OnWire<'a> {
        let mut reserved = reserved.filter(|_| self.limiter.try_acquire_now(class, key));
        if reserved.is_none() {
            self.limiter.acquire(class, key).await;
        }
        loop {
            // Closed never: the semaphore lives as long as its dispatcher.
            let (permit, reserved) = match (reserved.take(), self.slots) {
                (Some(reserved), _) => (None, Some(reserved)),
                (None, Some(slots)) => (slots.semaphore().acquire().await.ok(), None),
                (None, None) => (None, None),
            };
            let now = Instant::now();
            match self.limiter.try_send(class, key, now) {
                Ok(()) => {
                    if let Some(slots) = self.slots {
                        slots.started();
                    }
                    return OnWire {
                        permit,
                        reserved,
                        slots: self.slots,
                        answer: Answer::Ignored,
                        limiter: self.limiter,
                        class,
                        key: key.to_string(),
                        started: now,
                    };
                }
                Err(room_at) => {
                    drop((permit, reserved));
                    tokio::time::sleep_until(room_at).await;
                }
            }
        }
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
    ) -> Option<OnWire<'a>> {
        let reserved = ctx.reserved.take();
        if ctx.is_revoked() {
            return None;
        }
        if ctx.is_stopping() {
            if !self.limiter.has_room(class, key) {
                return None;
            }
            return Some(self.enter(class, key, reserved).await);
        }
        tokio::select! {
            biased;
            () = ctx.waits_stopped() => None,
            on_wire = self.enter(class, key, reserved) => Some(on_wire),
        }
    }
}
