//! Which offsets of each assigned partition are taken but not yet settled, and so how far
//! the consumer may commit.
//!
//! The commit point of a partition is its first unsettled offset, or one past the highest
//! offset taken when nothing is pending: the watermark below which everything is settled.
//! It never moves past a message that is still being delivered or dead-lettered, whatever
//! order messages of different keys finish in (offsets may have gaps, so the watermark is
//! derived from what was really taken, never from offset + 1 arithmetic alone).
//!
//! Assignment generations: every assignment of a partition gets a new generation, and a
//! message carries the generation it was read in. A message read before a revoke (still
//! waiting for a window slot, or still being delivered) belongs to an older generation:
//! `take` refuses it and `settle` ignores it, so it can never be settled into a later
//! assignment of the same partition and store that assignment an older commit point (its
//! owner in between may have committed far beyond it). On top of that the highest commit
//! point stored for a partition is kept across generations, and a lower one is never
//! stored: a commit never moves backwards.
//!
//! Abandoned messages (interrupted by an aborted shutdown) keep the watermark from passing
//! them but no longer count as in flight, so the final revoke does not wait for them again.
//!
//! Shared by the poll thread (take, assign, revoke, wait for a drain) and the delivery
//! tasks (settle, abandon); a condition variable lets a revocation wait for its partitions
//! to drain.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A topic and partition.
pub type TopicPartition = (std::sync::Arc<str>, i32);

/// Which assignment of a partition a message was read in. Generations start at 1, so 0
/// means "read while not assigned" and is never current. 32 bits: a message's ticket then
/// packs it with its other small fields (a waiting message's size decides its allocator
/// class); four billion partition assignments in one process's life are not reached.
pub type Generation = u32;

#[derive(Debug, Default)]
struct PartitionLedger {
    generation: Generation,
    /// Cancelled when this assignment ends: deliveries of its messages stop waiting (the
    /// new owner delivers them; one that went on delivering could overtake its messages).
    revoked: CancellationToken,
    /// Taken and still being delivered or dead-lettered.
    pending: BTreeSet<i64>,
    /// Taken, given up on (shutdown aborted them): never settled, not waited for.
    abandoned: BTreeSet<i64>,
    highest_taken: Option<i64>,
    /// The first offset taken since assignment: where the first commit point moves from.
    first_taken: Option<i64>,
    /// The last commit point handed out in this generation, so each is handed out once.
    stored: Option<i64>,
}

impl PartitionLedger {
    fn watermark(&self) -> Option<i64> {
        let first_pending = self.pending.first().copied();
        let first_abandoned = self.abandoned.first().copied();
        match (first_pending, first_abandoned) {
            (Some(p), Some(a)) => Some(p.min(a)),
            (Some(p), None) => Some(p),
            (None, Some(a)) => Some(a),
            (None, None) => self.highest_taken.map(|h| h + 1),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    assigned: HashMap<TopicPartition, PartitionLedger>,
    /// The highest commit point ever stored per partition, across generations.
    highest_stored: HashMap<TopicPartition, i64>,
    last_generation: Generation,
}

#[derive(Debug, Default)]
pub struct Ledgers {
    state: Mutex<State>,
    settled: Condvar,
    /// Offsets the stored commit points moved over since the poll thread last committed.
    stored_since_commit: AtomicUsize,
}

impl Ledgers {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts fresh ledgers, each with a new generation, for newly assigned partitions.
    pub fn assign(&self, partitions: &[TopicPartition]) {
        let mut state = self.lock();
        for tp in partitions {
            // Past u32::MAX (never in practice) it starts again at 1, never at 0.
            state.last_generation = state.last_generation.checked_add(1).unwrap_or(1);
            let generation = state.last_generation;
            state.assigned.insert(
                tp.clone(),
                PartitionLedger {
                    generation,
                    ..PartitionLedger::default()
                },
            );
        }
    }

    /// Forgets revoked partitions: late settlements of their messages are ignored.
    pub fn revoke(&self, partitions: &[TopicPartition]) {
        let mut state = self.lock();
        for tp in partitions {
            if let Some(ledger) = state.assigned.remove(tp) {
                ledger.revoked.cancel();
            }
        }
        self.settled.notify_all();
    }

    /// The current generation of `tp`, for a message just read from it (0 if `tp` is not
    /// assigned: such a message is never taken).
    pub fn generation(&self, tp: &TopicPartition) -> Generation {
        self.lock().assigned.get(tp).map_or(0, |l| l.generation)
    }

    /// Records that `offset`, read in `generation`, was taken for delivery, and returns
    /// the token that the revocation of this assignment cancels. `None` if the partition
    /// is not assigned any more or was assigned again since: the message must then be
    /// dropped, its owner reads it again from the last commit.
    pub fn take(
        &self,
        tp: &TopicPartition,
        generation: Generation,
        offset: i64,
    ) -> Option<CancellationToken> {
        let mut state = self.lock();
        let ledger = state.assigned.get_mut(tp)?;
        if ledger.generation != generation {
            return None;
        }
        ledger.pending.insert(offset);
        ledger.first_taken.get_or_insert(offset);
        ledger.highest_taken = Some(ledger.highest_taken.map_or(offset, |h| h.max(offset)));
        Some(ledger.revoked.clone())
    }

    /// Marks `offset` settled; returns the partition's new commit point if it advanced.
    /// Ignored for a message of an older generation.
    #[cfg(test)]
    pub fn settle(&self, tp: &TopicPartition, generation: Generation, offset: i64) -> Option<i64> {
        self.settle_and_store(tp, generation, offset, |_| {})
    }

    /// [`Ledgers::settle`], and `store` the new commit point while the ledger is locked:
    /// a rebalance (which takes the lock to revoke) cannot come between the generation
    /// check and the store, so a commit point is only ever stored into its own assignment.
    pub fn settle_and_store(
        &self,
        tp: &TopicPartition,
        generation: Generation,
        offset: i64,
        store: impl FnOnce(i64),
    ) -> Option<i64> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let ledger = state
            .assigned
            .get_mut(tp)
            .filter(|l| l.generation == generation)?;
        ledger.pending.remove(&offset);
        if ledger.pending.is_empty() {
            self.settled.notify_all();
        }
        let watermark = ledger.watermark()?;
        let advanced = ledger.stored.is_none_or(|stored| watermark > stored);
        if !advanced {
            return None;
        }
        // Count the messages the commit point moved over, not the moves: one move may
        // cover many messages settled out of order, and what a crash repeats is messages.
        let from = ledger.stored.or(ledger.first_taken).unwrap_or(watermark);
        let moved = usize::try_from(watermark - from).unwrap_or(0);
        ledger.stored = Some(watermark);
        // Never store below what was stored before, in this generation or an earlier one
        // (the partition may have been read again from an older commit). The same point
        // again is stored: a point stored in an earlier assignment may never have been
        // committed (the assignment was lost), and without it the commit would stay behind.
        let highest = state.highest_stored.entry(tp.clone()).or_insert(i64::MIN);
        if watermark < *highest {
            return None;
        }
        *highest = watermark;
        self.stored_since_commit.fetch_add(moved, Ordering::Relaxed);
        store(watermark);
        Some(watermark)
    }

    /// Gives up on `offset` (shutdown interrupted it): the commit point never passes it in
    /// this generation, but it no longer counts as in flight for [`Ledgers::wait_drained`].
    pub fn abandon(&self, tp: &TopicPartition, generation: Generation, offset: i64) {
        let mut state = self.lock();
        let Some(ledger) = state
            .assigned
            .get_mut(tp)
            .filter(|l| l.generation == generation)
        else {
            return;
        };
        if ledger.pending.remove(&offset) {
            ledger.abandoned.insert(offset);
        }
        if ledger.pending.is_empty() {
            self.settled.notify_all();
        }
    }

    /// How many offsets the stored commit points moved over since the last call (about
    /// the messages that a crash now would deliver again); resets the count.
    pub fn take_stored_count(&self) -> usize {
        self.stored_since_commit.swap(0, Ordering::Relaxed)
    }

    /// Blocks until none of `partitions` has pending messages, or `timeout` passes.
    /// Returns whether they drained. Only for the poll thread, never for async code.
    pub fn wait_drained(&self, partitions: &[TopicPartition], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let busy = partitions.iter().any(|tp| {
                state
                    .assigned
                    .get(tp)
                    .is_some_and(|l| !l.pending.is_empty())
            });
            if !busy {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = match self.settled.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TopicPartition {
        ("events".into(), 0)
    }

    /// Assigns `tp()` and returns the new generation.
    fn assign(l: &Ledgers) -> Generation {
        l.assign(&[tp()]);
        l.generation(&tp())
    }

    #[test]
    fn the_commit_point_waits_for_the_first_unsettled_offset() {
        let l = Ledgers::default();
        let g = assign(&l);
        for offset in 10..15 {
            assert!(l.take(&tp(), g, offset).is_some());
        }
        assert_eq!(
            l.settle(&tp(), g, 12),
            Some(10),
            "12 settled, 10 still pending"
        );
        assert_eq!(l.settle(&tp(), g, 13), None, "nothing new to commit");
        assert_eq!(l.settle(&tp(), g, 10), Some(11));
        assert_eq!(l.settle(&tp(), g, 11), Some(14));
        assert_eq!(l.settle(&tp(), g, 14), Some(15));
    }

    #[test]
    fn the_stored_count_counts_the_messages_the_commit_point_moved_over() {
        let l = Ledgers::default();
        let g = assign(&l);
        for offset in 100..110 {
            let _ = l.take(&tp(), g, offset);
        }
        for offset in 101..110 {
            l.settle(&tp(), g, offset);
        }
        assert_eq!(l.take_stored_count(), 0, "the commit point has not moved");
        assert_eq!(l.settle(&tp(), g, 100), Some(110));
        assert_eq!(l.take_stored_count(), 10, "one move over ten messages");
        assert_eq!(l.take_stored_count(), 0);
    }

    #[test]
    fn gaps_in_offsets_do_not_hold_the_commit_point() {
        let l = Ledgers::default();
        let g = assign(&l);
        let _ = l.take(&tp(), g, 3);
        let _ = l.take(&tp(), g, 7); // 4..6 were transaction markers or compacted away
        assert_eq!(l.settle(&tp(), g, 3), Some(7));
        assert_eq!(l.settle(&tp(), g, 7), Some(8));
    }

    #[test]
    fn messages_of_unassigned_partitions_are_refused_and_late_settles_ignored() {
        let l = Ledgers::default();
        assert_eq!(l.generation(&tp()), 0, "not assigned");
        assert!(l.take(&tp(), 0, 1).is_none());
        let g = assign(&l);
        assert!(l.take(&tp(), g, 1).is_some());
        l.revoke(&[tp()]);
        assert_eq!(l.settle(&tp(), g, 1), None);
        assert!(l.wait_drained(&[tp()], Duration::ZERO));
    }

    #[test]
    fn each_assignment_of_a_partition_gets_a_new_generation() {
        let l = Ledgers::default();
        let first = assign(&l);
        l.revoke(&[tp()]);
        let second = assign(&l);
        assert!(first > 0 && second > first, "{first} then {second}");
        l.assign(&[tp()]);
        assert!(
            l.generation(&tp()) > second,
            "even without a revoke in between"
        );
    }

    #[test]
    fn a_message_read_before_a_revoke_is_refused_by_the_next_assignment() {
        let l = Ledgers::default();
        let before = assign(&l);
        // Read, still waiting for a window slot when the partition is revoked ...
        l.revoke(&[tp()]);
        let after = assign(&l);
        // ... and handed over once the partition is back: refused, it is read again.
        assert!(l.take(&tp(), before, 50).is_none());
        assert!(l.take(&tp(), after, 200).is_some());
        assert_eq!(l.settle(&tp(), after, 200), Some(201));
    }

    #[test]
    fn a_settle_of_an_older_generation_is_ignored() {
        let l = Ledgers::default();
        let before = assign(&l);
        assert!(l.take(&tp(), before, 5).is_some());
        l.revoke(&[tp()]);
        let after = assign(&l);
        assert!(l.take(&tp(), after, 5).is_some());
        assert!(l.take(&tp(), after, 6).is_some());
        // The old delivery of 5 finishes late: it must not settle the new generation's 5.
        assert_eq!(l.settle(&tp(), before, 5), None);
        assert!(
            !l.wait_drained(&[tp()], Duration::ZERO),
            "5 and 6 still pending"
        );
        assert_eq!(
            l.settle(&tp(), after, 6),
            Some(5),
            "5 still holds the commit point"
        );
        assert_eq!(l.settle(&tp(), after, 5), Some(7));
    }

    #[test]
    fn the_stored_commit_point_never_moves_backwards_across_generations() {
        let l = Ledgers::default();
        let first = assign(&l);
        for offset in 0..100 {
            let _ = l.take(&tp(), first, offset);
            l.settle(&tp(), first, offset);
        }
        l.revoke(&[tp()]);
        // Assigned again, and read from an older commit (the last commit failed): the
        // commit points below 100 are not stored again ...
        let second = assign(&l);
        l.take_stored_count();
        for offset in 40..99 {
            assert!(l.take(&tp(), second, offset).is_some());
            assert_eq!(l.settle(&tp(), second, offset), None, "offset {offset}");
        }
        assert_eq!(l.take_stored_count(), 0);
        // ... 100 is, since it may never have been committed, and so is what follows.
        assert!(l.take(&tp(), second, 99).is_some());
        assert_eq!(l.settle(&tp(), second, 99), Some(100));
        assert!(l.take(&tp(), second, 100).is_some());
        assert_eq!(l.settle(&tp(), second, 100), Some(101));
    }

    #[test]
    fn an_abandoned_message_holds_the_commit_point_but_is_not_waited_for() {
        let l = Ledgers::default();
        let g = assign(&l);
        let _ = l.take(&tp(), g, 1);
        let _ = l.take(&tp(), g, 2);
        let _ = l.take(&tp(), g, 3);
        assert_eq!(l.settle(&tp(), g, 1), Some(2));
        l.abandon(&tp(), g, 2);
        assert!(
            !l.wait_drained(&[tp()], Duration::ZERO),
            "3 is still in flight"
        );
        assert_eq!(l.settle(&tp(), g, 3), None, "2 was never delivered");
        assert!(l.wait_drained(&[tp()], Duration::ZERO), "nothing in flight");
        // An abandon of an older generation changes nothing.
        l.revoke(&[tp()]);
        let next = assign(&l);
        let _ = l.take(&tp(), next, 2);
        l.abandon(&tp(), g, 2);
        assert!(!l.wait_drained(&[tp()], Duration::ZERO));
    }

    #[test]
    fn waiting_for_a_drain_returns_when_the_last_message_settles() {
        let l = std::sync::Arc::new(Ledgers::default());
        let g = assign(&l);
        let _ = l.take(&tp(), g, 1);
        assert!(!l.wait_drained(&[tp()], Duration::from_millis(20)));
        let settler = std::sync::Arc::clone(&l);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            settler.settle(&tp(), g, 1);
        });
        assert!(l.wait_drained(&[tp()], Duration::from_secs(10)));
        thread.join().unwrap();
    }
}
