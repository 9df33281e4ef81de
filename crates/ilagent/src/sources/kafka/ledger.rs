//! Which offsets of each assigned partition are taken but not yet settled, and so how far
//! the consumer may commit.
//!
//! The commit point of a partition is its first unsettled offset, or one past the highest
//! offset taken when nothing is pending: the watermark below which everything is settled.
//! It never moves past a message that is still being delivered or dead-lettered, whatever
//! order messages of different keys finish in (offsets may have gaps, so the watermark is
//! derived from what was really taken, never from offset + 1 arithmetic alone).
//!
//! Shared by the poll thread (take, assign, revoke, wait for a drain) and the delivery
//! tasks (settle); a condition variable lets a revocation wait for its partitions to drain.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A topic and partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct PartitionLedger {
    pending: BTreeSet<i64>,
    highest_taken: Option<i64>,
    /// The first offset taken since assignment: where the first commit point moves from.
    first_taken: Option<i64>,
    /// The last commit point handed out, so each is handed out once.
    stored: Option<i64>,
}

impl PartitionLedger {
    fn watermark(&self) -> Option<i64> {
        self.pending
            .first()
            .copied()
            .or_else(|| self.highest_taken.map(|h| h + 1))
    }
}

#[derive(Debug, Default)]
pub struct Ledgers {
    partitions: Mutex<HashMap<TopicPartition, PartitionLedger>>,
    settled: Condvar,
    /// Offsets the stored commit points moved over since the poll thread last committed.
    stored_since_commit: AtomicUsize,
}

impl Ledgers {
    fn lock(&self) -> MutexGuard<'_, HashMap<TopicPartition, PartitionLedger>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts fresh ledgers for newly assigned partitions.
    pub fn assign(&self, partitions: &[TopicPartition]) {
        let mut ledgers = self.lock();
        for tp in partitions {
            ledgers.insert(tp.clone(), PartitionLedger::default());
        }
    }

    /// Forgets revoked partitions: late settlements of their messages are ignored.
    pub fn revoke(&self, partitions: &[TopicPartition]) {
        let mut ledgers = self.lock();
        for tp in partitions {
            ledgers.remove(tp);
        }
        self.settled.notify_all();
    }

    /// Records that `offset` was taken for delivery. `false` if the partition is not
    /// assigned (any more): the message must then be dropped, its new owner reads it.
    pub fn take(&self, tp: &TopicPartition, offset: i64) -> bool {
        let mut ledgers = self.lock();
        let Some(ledger) = ledgers.get_mut(tp) else {
            return false;
        };
        ledger.pending.insert(offset);
        ledger.first_taken.get_or_insert(offset);
        ledger.highest_taken = Some(ledger.highest_taken.map_or(offset, |h| h.max(offset)));
        true
    }

    /// Marks `offset` settled; returns the partition's new commit point if it advanced.
    pub fn settle(&self, tp: &TopicPartition, offset: i64) -> Option<i64> {
        let mut ledgers = self.lock();
        let ledger = ledgers.get_mut(tp)?;
        ledger.pending.remove(&offset);
        let watermark = ledger.watermark()?;
        let advanced = ledger.stored.is_none_or(|stored| watermark > stored);
        if advanced {
            // Count the messages the commit point moved over, not the moves: one move may
            // cover many messages settled out of order, and what a crash repeats is
            // messages.
            let from = ledger.stored.or(ledger.first_taken).unwrap_or(watermark);
            let moved = usize::try_from(watermark - from).unwrap_or(0);
            ledger.stored = Some(watermark);
            self.stored_since_commit.fetch_add(moved, Ordering::Relaxed);
        }
        if ledger.pending.is_empty() {
            self.settled.notify_all();
        }
        advanced.then_some(watermark)
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
        let mut ledgers = self.lock();
        loop {
            let busy = partitions
                .iter()
                .any(|tp| ledgers.get(tp).is_some_and(|l| !l.pending.is_empty()));
            if !busy {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            ledgers = match self.settled.wait_timeout(ledgers, deadline - now) {
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
        ("events".to_string(), 0)
    }

    #[test]
    fn the_commit_point_waits_for_the_first_unsettled_offset() {
        let l = Ledgers::default();
        l.assign(&[tp()]);
        for offset in 10..15 {
            assert!(l.take(&tp(), offset));
        }
        assert_eq!(
            l.settle(&tp(), 12),
            Some(10),
            "12 settled, 10 still pending"
        );
        assert_eq!(l.settle(&tp(), 13), None, "nothing new to commit");
        assert_eq!(l.settle(&tp(), 10), Some(11));
        assert_eq!(l.settle(&tp(), 11), Some(14));
        assert_eq!(l.settle(&tp(), 14), Some(15));
    }

    #[test]
    fn the_stored_count_counts_the_messages_the_commit_point_moved_over() {
        let l = Ledgers::default();
        l.assign(&[tp()]);
        for offset in 100..110 {
            l.take(&tp(), offset);
        }
        for offset in 101..110 {
            l.settle(&tp(), offset);
        }
        assert_eq!(l.take_stored_count(), 0, "the commit point has not moved");
        assert_eq!(l.settle(&tp(), 100), Some(110));
        assert_eq!(l.take_stored_count(), 10, "one move over ten messages");
        assert_eq!(l.take_stored_count(), 0);
    }

    #[test]
    fn gaps_in_offsets_do_not_hold_the_commit_point() {
        let l = Ledgers::default();
        l.assign(&[tp()]);
        l.take(&tp(), 3);
        l.take(&tp(), 7); // 4..6 were transaction markers or compacted away
        assert_eq!(l.settle(&tp(), 3), Some(7));
        assert_eq!(l.settle(&tp(), 7), Some(8));
    }

    #[test]
    fn messages_of_unassigned_partitions_are_refused_and_late_settles_ignored() {
        let l = Ledgers::default();
        assert!(!l.take(&tp(), 1));
        l.assign(&[tp()]);
        assert!(l.take(&tp(), 1));
        l.revoke(&[tp()]);
        assert_eq!(l.settle(&tp(), 1), None);
        assert!(l.wait_drained(&[tp()], Duration::ZERO));
    }

    #[test]
    fn waiting_for_a_drain_returns_when_the_last_message_settles() {
        let l = std::sync::Arc::new(Ledgers::default());
        l.assign(&[tp()]);
        l.take(&tp(), 1);
        assert!(!l.wait_drained(&[tp()], Duration::from_millis(20)));
        let settler = std::sync::Arc::clone(&l);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            settler.settle(&tp(), 1);
        });
        assert!(l.wait_drained(&[tp()], Duration::from_secs(10)));
        thread.join().unwrap();
    }
}
