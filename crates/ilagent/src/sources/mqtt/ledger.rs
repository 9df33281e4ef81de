//! Acknowledgements in receive order (direct mode).
//!
//! MQTT requires PUBACKs (and PUBRECs) in the order the PUBLISHes arrived
//! ([MQTT-4.6.0-2]), and Mosquitto lets its in-flight window grow when they are not.
//! Messages settle in any order across keys, so the [`Ledger`] keeps the unacknowledged
//! messages of the current connection in arrival order, marks each one done when it is
//! settled or durably spilled (see [`super::spill`]), and pops the done prefix under its
//! lock into one channel. One task ([`send_acks`]) drains that channel into the client, so
//! two settling tasks can never put acknowledgements on the wire out of order.
//!
//! A message from an older connection epoch is never acknowledged (see
//! [`super::connection`]): the first message of a new epoch drops the old entries.
//!
//! Memory: an entry (with a copy of the message, for a spill) exists only while the
//! message is unacknowledged, so the entries are bounded by the broker's in-flight window;
//! a spill or a settle drops the copy.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::client::AckToken;
use super::settle::Acker;
use crate::action::Outcome;
use crate::queue::NewRow;

/// Where a received message stands between the dispatcher and the SQLite file.
#[derive(Debug)]
pub(crate) enum RowState {
    /// In the dispatcher only; no row.
    Live,
    /// Settled live, its dead letter being written: neither spillable nor done yet.
    Settling,
    /// Its spill row is being written; a live settle meanwhile parks its outcome here for
    /// the spill to apply to the row.
    Writing(Option<Outcome>),
    /// Spilled: the row exists and is held back from the queue worker while the live
    /// delivery runs.
    Held(i64),
    /// Nothing left to do for it (settled, or written straight to the queue).
    Done,
    /// Its live delivery stopped unsettled (shutdown): never acknowledged, the broker
    /// sends it again.
    Abandoned,
}

/// One received message, shared by its dispatcher job and its ledger entry.
#[derive(Debug)]
pub(crate) struct Tracked {
    seq: u64,
    epoch: u64,
    pub topic: String,
    pub order_key: Option<String>,
    pub state: Mutex<RowState>,
}

impl Tracked {
    pub(crate) fn state(&self) -> MutexGuard<'_, RowState> {
        lock(&self.state)
    }
}

struct Entry {
    tracked: Arc<Tracked>,
    ack: AckToken,
    received: Instant,
    done: bool,
    /// What a spill writes; dropped once done.
    row: Option<NewRow>,
}

struct Inner {
    epoch: u64,
    next_seq: u64,
    /// Unacknowledged messages of `epoch`, in arrival order; `seq`s are consecutive.
    entries: VecDeque<Entry>,
    acks: Option<mpsc::UnboundedSender<(AckToken, u64)>>,
}

pub(crate) struct Ledger {
    inner: Mutex<Inner>,
}

impl Ledger {
    /// The ledger and the receiving end of its acknowledgements, for [`send_acks`].
    pub(crate) fn new() -> (Ledger, mpsc::UnboundedReceiver<(AckToken, u64)>) {
        let (acks, receiver) = mpsc::unbounded_channel();
        let ledger = Ledger {
            inner: Mutex::new(Inner {
                epoch: 0,
                next_seq: 0,
                entries: VecDeque::new(),
                acks: Some(acks),
            }),
        };
        (ledger, receiver)
    }

    /// Records a message that needs an acknowledgement, in arrival order.
    pub(crate) fn push(
        &self,
        epoch: u64,
        ack: AckToken,
        row: NewRow,
        state: RowState,
    ) -> Arc<Tracked> {
        let mut inner = lock(&self.inner);
        if epoch != inner.epoch {
            // The old connection's messages are never acknowledged: the broker resends them.
            inner.entries.clear();
            inner.epoch = epoch;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let tracked = Arc::new(Tracked {
            seq,
            epoch,
            topic: row.topic.clone(),
            order_key: row.order_key.clone(),
            state: Mutex::new(state),
        });
        inner.entries.push_back(Entry {
            tracked: Arc::clone(&tracked),
            ack,
            received: Instant::now(),
            done: false,
            row: Some(row),
        });
        tracked
    }

    /// `tracked` is settled or durable: acknowledge it as soon as everything before it is.
    pub(crate) fn done(&self, tracked: &Tracked) {
        let mut inner = lock(&self.inner);
        if tracked.epoch != inner.epoch {
            return;
        }
        let Some(front) = inner.entries.front().map(|e| e.tracked.seq) else {
            return;
        };
        let Some(index) = tracked
            .seq
            .checked_sub(front)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        if let Some(entry) = inner.entries.get_mut(index) {
            entry.done = true;
            entry.row = None;
        }
        while inner.entries.front().is_some_and(|e| e.done) {
            let Some(entry) = inner.entries.pop_front() else {
                break;
            };
            // Sent under the lock, so the channel holds the acknowledgements in order.
            if let Some(acks) = &inner.acks {
                let _ = acks.send((entry.ack, entry.tracked.epoch));
            }
        }
    }

    /// Messages not acknowledged yet.
    pub(crate) fn unacked(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// When the oldest message still only live becomes due for a spill.
    pub(crate) fn next_spill_at(&self, spill_after: Duration) -> Option<Instant> {
        let inner = lock(&self.inner);
        inner
            .entries
            .iter()
            .find(|e| !e.done && matches!(*e.tracked.state(), RowState::Live))
            .map(|e| e.received + spill_after)
    }

    /// Every unacknowledged message that is only live, in arrival order, now marked as
    /// being written, with its row.
    pub(crate) fn take_spillable(&self) -> Vec<(Arc<Tracked>, NewRow)> {
        let mut inner = lock(&self.inner);
        let mut taken = Vec::new();
        for entry in inner.entries.iter_mut().filter(|e| !e.done) {
            let mut state = entry.tracked.state();
            if matches!(*state, RowState::Live)
                && let Some(row) = entry.row.clone()
            {
                *state = RowState::Writing(None);
                drop(state);
                taken.push((Arc::clone(&entry.tracked), row));
            }
        }
        taken
    }

    /// No acknowledgements after this one: [`send_acks`] ends once it has sent the rest.
    pub(crate) fn close(&self) {
        lock(&self.inner).acks = None;
    }
}

/// The one place acknowledgements leave from, in the order the ledger released them.
pub(crate) async fn send_acks(mut acks: mpsc::UnboundedReceiver<(AckToken, u64)>, acker: Acker) {
    while let Some((token, epoch)) = acks.recv().await {
        acker.ack(&token, epoch, None).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a settle panicked; the state itself is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::SourceKind;
    use crate::queue::StoredMeta;

    fn row() -> NewRow {
        NewRow {
            source: SourceKind::Mqtt,
            topic: "t".into(),
            payload: b"{}".to_vec(),
            meta: StoredMeta::default(),
            order_key: None,
            created_at_ms: 0,
        }
    }

    fn token(pkid: u16) -> AckToken {
        AckToken { pkid, qos: 1 }
    }

    fn drain(acks: &mut mpsc::UnboundedReceiver<(AckToken, u64)>) -> Vec<u16> {
        let mut out = Vec::new();
        while let Ok((token, _)) = acks.try_recv() {
            out.push(token.pkid);
        }
        out
    }

    #[tokio::test]
    async fn acknowledgements_leave_in_arrival_order_whatever_order_messages_settle_in() {
        let (ledger, mut acks) = Ledger::new();
        let tracked: Vec<_> = (1..=4)
            .map(|pkid| ledger.push(0, token(pkid), row(), RowState::Live))
            .collect();
        ledger.done(&tracked[2]);
        ledger.done(&tracked[1]);
        assert!(drain(&mut acks).is_empty(), "the first one is not settled");
        ledger.done(&tracked[0]);
        assert_eq!(drain(&mut acks), [1, 2, 3]);
        assert_eq!(ledger.unacked(), 1);
        ledger.done(&tracked[3]);
        assert_eq!(drain(&mut acks), [4]);
    }

    #[tokio::test]
    async fn messages_of_an_old_connection_are_never_acknowledged() {
        let (ledger, mut acks) = Ledger::new();
        let old = ledger.push(0, token(1), row(), RowState::Live);
        let new = ledger.push(1, token(1), row(), RowState::Live);
        ledger.done(&old);
        assert!(drain(&mut acks).is_empty());
        ledger.done(&new);
        assert_eq!(drain(&mut acks), [1]);
    }

    #[tokio::test]
    async fn a_spill_takes_only_live_unacknowledged_messages_in_order() {
        let (ledger, _acks) = Ledger::new();
        let first = ledger.push(0, token(1), row(), RowState::Live);
        let _queued = ledger.push(0, token(2), row(), RowState::Done);
        let third = ledger.push(0, token(3), row(), RowState::Live);
        let taken = ledger.take_spillable();
        assert_eq!(taken.len(), 2);
        assert!(Arc::ptr_eq(&taken[0].0, &first) && Arc::ptr_eq(&taken[1].0, &third));
        assert!(matches!(*first.state(), RowState::Writing(None)));
        assert!(ledger.take_spillable().is_empty());
        assert!(ledger.next_spill_at(Duration::from_secs(1)).is_none());
    }
}
