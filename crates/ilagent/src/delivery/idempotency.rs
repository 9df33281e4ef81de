//! Idempotency: an event with an idempotency id (a route's `dedupe`, the proxy's
//! `Idempotency-Key`) reaches ilert at most once per window, across restarts.
//!
//! The ids ilert accepted live in the SQLite file (`accepted_ids`), written on the queue
//! thread like every other statement. Delivering an event with an id:
//! 1. waits while another event with the same id is being delivered (in this process), so
//!    two copies that arrive together cannot both go out;
//! 2. skips it as [`Outcome::Duplicate`] if ilert accepted the id inside its window;
//! 3. otherwise delivers it, and records the id once ilert accepted it, before the source
//!    settles (commits the offset, acknowledges the packet, deletes the row).
//!
//! A message redelivered after a crash or a rebalance therefore finds its id, except when
//! the process died between ilert's answer and the record: then ilert gets it twice, as
//! without idempotency. The check fails open: if the file cannot be read, the event is
//! delivered (a duplicate is better than a lost alert) and the failure is logged.
//!
//! The table is kept small on a timer ([`prune_accepted_ids`]): ids whose window passed are
//! deleted, and beyond `--dedupe_max_ids` those nearest the end of their window go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::action::{DedupeId, Outcome};
use crate::observe::events;
use crate::queue::{AcceptedId, Queue, now_ms};

/// How often expired ids are deleted and the cap enforced.
pub(crate) const PRUNE_ACCEPTED_EVERY: Duration = Duration::from_secs(60);

/// How long an accepted id suppresses its duplicates unless configured otherwise (a
/// route's `dedupe_window`, `--http_idempotency_window`).
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest window: ids kept longer would only fill the file.
const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Whether `window` may be a window (`Err`: what to say after the setting's name).
pub(crate) fn check_window(window: Duration) -> Result<(), String> {
    if window > MAX_WINDOW {
        return Err(
            "is longer than 30 days: ids kept that long would only fill the file".to_string(),
        );
    }
    Ok(())
}

/// The ids ilert accepted, and the ids being delivered right now. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AcceptedIds {
    queue: Queue,
    in_delivery: Arc<Mutex<HashMap<[u8; 16], InDelivery>>>,
}

/// An id being delivered: its lock, and how many deliveries hold or wait for it (the entry
/// goes when the last one is done).
struct InDelivery {
    lock: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

/// A delivery's claim on an id, from before it waits for the id's lock: dropping it (done,
/// or cancelled while waiting) counts it out under the map's lock.
struct Claim {
    map: Arc<Mutex<HashMap<[u8; 16], InDelivery>>>,
    key: [u8; 16],
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&self.key) {
            entry.users -= 1;
            if entry.users == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Held while an event with this id is delivered; the next one with the id waits for it.
pub(crate) struct Held {
    // Field order: the lock is let go before the claim is counted out.
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _claim: Claim,
}

impl AcceptedIds {
    pub(crate) fn new(queue: Queue) -> Self {
        AcceptedIds {
            queue,
            in_delivery: Arc::default(),
        }
    }

    /// Waits until no other event with `id` is being delivered, and holds it.
    pub(crate) async fn hold(&self, id: &DedupeId) -> Held {
        let (lock, claim) = self.claim(id);
        let guard = lock.lock_owned().await;
        Held {
            _guard: guard,
            _claim: claim,
        }
    }

    /// Holds `id` if no other event with it is being delivered; `None` (holding nothing)
    /// if one is.
    pub(crate) fn try_hold(&self, id: &DedupeId) -> Option<Held> {
        let (lock, claim) = self.claim(id);
        let guard = lock.try_lock_owned().ok()?;
        Some(Held {
            _guard: guard,
            _claim: claim,
        })
    }

    /// Counts a delivery in for `id` (out again when the claim is dropped); the id's lock.
    fn claim(&self, id: &DedupeId) -> (Arc<tokio::sync::Mutex<()>>, Claim) {
        let lock = {
            let mut map = self.in_delivery.lock().unwrap_or_else(|e| e.into_inner());
            let entry = map.entry(id.key).or_insert_with(|| InDelivery {
                lock: Arc::default(),
                users: 0,
            });
            entry.users += 1;
            Arc::clone(&entry.lock)
        };
        let claim = Claim {
            map: Arc::clone(&self.in_delivery),
            key: id.key,
        };
        (lock, claim)
    }

    /// Ids being delivered or waited for right now (for tests: none once all are done).
    #[cfg(test)]
    fn in_delivery(&self) -> usize {
        self.in_delivery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The outcome for an event whose id ilert accepted inside its window, `None` if it
    /// must be delivered (not accepted, or the file could not say).
    pub(crate) async fn duplicate(&self, id: &DedupeId) -> Option<Outcome> {
        let (key, now) = (id.key, now_ms());
        let answer = self
            .queue
            .run(move |store| store.accepted_at(&key, now))
            .await;
        match answer {
            Ok(Some(accepted_at)) => {
                events::duplicate_suppressed(&id.scope);
                let shown: String = id.id.chars().take(128).collect();
                Some(Outcome::Duplicate {
                    reason: crate::printable::reason(format!(
                        "duplicate: ilert accepted id `{shown}` of `{}` {} ago (window {})",
                        id.scope,
                        humantime::format_duration(Duration::from_secs(
                            u64::try_from((now - accepted_at) / 1000).unwrap_or(0)
                        )),
                        humantime::format_duration(id.window),
                    )),
                })
            }
            Ok(None) => None,
            Err(error) => {
                events::accepted_ids_failed("read", &error);
                None
            }
        }
    }

    /// Records that ilert accepted `id` now. A failure is logged: the event is delivered
    /// either way, and at worst a later copy is delivered too.
    pub(crate) async fn remember(&self, id: &DedupeId) {
        let now = now_ms();
        let window_ms = i64::try_from(id.window.as_millis()).unwrap_or(i64::MAX);
        let written = self
            .queue
            .remember(AcceptedId {
                key: id.key,
                accepted_at_ms: now,
                expires_at_ms: now.saturating_add(window_ms),
            })
            .await;
        if let Err(error) = written {
            events::accepted_ids_failed("record", &error);
        }
    }
}

/// Deletes expired ids and keeps at most `max_ids`, every [`PRUNE_ACCEPTED_EVERY`] (and
/// once at start), until `shutdown`.
pub(crate) async fn prune_accepted_ids(queue: Queue, max_ids: u64, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(PRUNE_ACCEPTED_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let pruned = queue
            .run(move |store| store.prune_accepted(now_ms(), max_ids))
            .await;
        match pruned {
            Ok(pruned) => events::accepted_ids_pruned(&pruned, max_ids),
            Err(error) => events::accepted_ids_failed("prune", &error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Limits;

    fn id(text: &str) -> DedupeId {
        DedupeId::of_route(&Arc::from("orders"), text.into(), DEFAULT_WINDOW)
    }

    #[tokio::test]
    async fn a_second_delivery_of_an_id_waits_for_the_first_and_nothing_stays_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db3");
        let queue = tokio::task::spawn_blocking(move || Queue::open(&path, Limits::UNLIMITED))
            .await
            .unwrap()
            .unwrap();
        let ids = AcceptedIds::new(queue);
        let first = ids.hold(&id("o-1")).await;
        let other = ids.hold(&id("o-2")).await;
        let waiting = tokio::spawn({
            let ids = ids.clone();
            async move {
                let _held = ids.hold(&id("o-1")).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "o-1 is held");
        // A waiter given up (shutdown, a revoked partition) counts itself out.
        let given_up = tokio::spawn({
            let ids = ids.clone();
            async move {
                let _held = ids.hold(&id("o-1")).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        given_up.abort();
        let _ = given_up.await;
        drop(first);
        waiting.await.unwrap();
        drop(other);
        assert_eq!(ids.in_delivery(), 0);
    }

    #[test]
    fn the_proxy_s_keys_are_unique_per_integration_key_and_apart_from_routes() {
        let window = DEFAULT_WINDOW;
        let a = DedupeId::of_request("il1api-a", "k1".into(), window);
        let b = DedupeId::of_request("il1api-b", "k1".into(), window);
        let route = DedupeId::of_route(&Arc::from("http"), "k1".into(), window);
        assert_ne!(a.key, b.key);
        assert_ne!(a.key, route.key, "a route named http is not the proxy");
        assert_eq!(
            a.key,
            DedupeId::of_request("il1api-a", "k1".into(), window).key
        );
    }

    #[test]
    fn windows_longer_than_30_days_are_refused() {
        assert!(check_window(Duration::from_secs(30 * 86_400)).is_ok());
        assert!(check_window(Duration::from_secs(31 * 86_400)).is_err());
    }
}
