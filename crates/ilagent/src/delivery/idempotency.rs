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
//! deleted, and beyond `--dedupe_max_ids` the oldest go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::action::{DedupeId, Outcome};
use crate::observe::events;
use crate::queue::{AcceptedId, Queue, now_ms};

/// How often expired ids are deleted and the cap enforced.
pub const PRUNE_ACCEPTED_EVERY: Duration = Duration::from_secs(60);

/// The ids ilert accepted, and the ids being delivered right now. Cheap to clone.
#[derive(Clone)]
pub struct AcceptedIds {
    queue: Queue,
    in_delivery: Arc<Mutex<HashMap<IdKey, Arc<tokio::sync::Mutex<()>>>>>,
}

type IdKey = (Arc<str>, Box<str>);

/// Held while an event with this id is delivered; the next one with the id waits for it.
pub(crate) struct Held {
    map: Arc<Mutex<HashMap<IdKey, Arc<tokio::sync::Mutex<()>>>>>,
    key: IdKey,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are made under this lock only: the map's and ours mean nobody waits.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

impl AcceptedIds {
    pub fn new(queue: Queue) -> Self {
        AcceptedIds {
            queue,
            in_delivery: Arc::default(),
        }
    }

    /// Waits until no other event with `id` is being delivered, and holds it.
    pub(crate) async fn hold(&self, id: &DedupeId) -> Held {
        let key: IdKey = (Arc::clone(&id.scope), id.id.clone());
        let lock = {
            let mut map = self.in_delivery.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        Held {
            map: Arc::clone(&self.in_delivery),
            key,
            lock,
            guard: Some(guard),
        }
    }

    /// The outcome for an event whose id ilert accepted inside its window, `None` if it
    /// must be delivered (not accepted, or the file could not say).
    pub(crate) async fn duplicate(&self, id: &DedupeId) -> Option<Outcome> {
        let (scope, text) = (Arc::clone(&id.scope), id.id.to_string());
        let now = now_ms();
        let answer = self
            .queue
            .run(move |store| store.accepted_at(&scope, &text, now))
            .await;
        match answer {
            Ok(Some(accepted_at)) => {
                events::duplicate_suppressed(&id.scope);
                Some(Outcome::Duplicate {
                    reason: crate::printable::reason(format!(
                        "duplicate: ilert accepted id `{}` of `{}` {} ago (window {})",
                        id.id,
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
                scope: Arc::clone(&id.scope),
                id: id.id.clone(),
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
pub async fn prune_accepted_ids(queue: Queue, max_ids: u64, shutdown: CancellationToken) {
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
