//! The key-ordered dispatcher: delivers messages in parallel across ordering keys and one
//! after the other within a key, with bounded concurrency and bounded memory.
//!
//! Two limits, because they bound different things ([`Limits`]): `max_in_flight` is how
//! many HTTP requests to ilert are under way at once (a key waiting for its rate budget,
//! its backoff or `Retry-After` holds none, see [`crate::delivery`]); the window (`max_buffered`
//! messages and `max_buffered_bytes`) is how much a source may hand over before it is
//! settled, which includes messages queued behind their key. The window must be much
//! larger than the concurrency, or a run of messages for a few keys would fill it and
//! leave the other keys idle.
//!
//! A source first reserves a [`Slot`] (the window is a pair of semaphores, so a full
//! window is the source's signal to stop reading: backpressure instead of growing queues),
//! then submits the message with its [`OrderKey`]. The first message of an idle key starts
//! a task for that key; later messages of the same key queue behind it. Each task delivers,
//! then hands the outcome to the source's [`Settle`] implementation, then takes the next
//! message of its key, so a message is settled before its key's next one is delivered.
//! A key waiting out a 429 or a failing API holds only its own messages and its window
//! slots; it never holds a delivery slot while it waits.
//!
//! What a key costs while it waits matters as much as what a message costs: a backlog of
//! distinct alert keys has a task per key. So a task keeps the message it works on in its
//! box, waits for a delivery slot before it builds the delivery's state, and boxes that
//! state and the settle step (see `run_key`).
//!
//! A heartbeat ping submitted while a ping of the same heartbeat is still running is
//! settled at once as [`Outcome::Coalesced`]: it would change nothing at ilert.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::order_key::OrderKey;
use crate::action::{Action, Outcome};
use crate::delivery::{Context, Deliverer, Reserved, Slots, cancelled};
use crate::message::{Message, Metadata};
use crate::pipeline::MessageRouter;

/// One unit of work: the message as received, what mapping made of it, and the source's
/// own handle for settling it (an offset, a packet id, a row id).
pub struct Job<T> {
    pub ticket: T,
    pub message: Message,
    pub action: Action,
}

/// What a source does once a message's outcome is known: commit, acknowledge, dead-letter.
/// Runs inside the key's task, so the key's next message waits for it.
pub trait Settle: Send + Sync + 'static {
    type Ticket: Send + 'static;

    fn settle(&self, job: Job<Self::Ticket>, outcome: Outcome) -> impl Future<Output = ()> + Send;

    /// Cancelled when the source no longer wants this message delivered (Kafka: its
    /// partition was revoked); it then stops waiting as at shutdown. `None`: always wanted.
    fn revoked(&self, _ticket: &Self::Ticket) -> Option<CancellationToken> {
        None
    }
}

/// A place in the window, held from reservation until the message is settled. 16 bytes
/// (the window and the KiB it holds) rather than two semaphore permits' 32: every message
/// in the window keeps one.
pub struct Slot {
    window: Arc<Window>,
    kib: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.window.messages.add_permits(1);
        self.window.kib.add_permits(self.kib as usize);
    }
}

/// The window: messages and KiB handed over and not settled. A [`Slot`] takes one message
/// and its KiB and gives them back when dropped.
struct Window {
    messages: Semaphore,
    kib: Semaphore,
}

impl Window {
    /// A slot from permits just acquired: they now belong to the slot.
    fn slot(
        self: &Arc<Self>,
        message: tokio::sync::SemaphorePermit<'_>,
        kib: tokio::sync::SemaphorePermit<'_>,
    ) -> Slot {
        let kib_count = u32::try_from(kib.num_permits()).unwrap_or(u32::MAX);
        message.forget();
        kib.forget();
        Slot {
            window: Arc::clone(self),
            kib: kib_count,
        }
    }
}

/// The dispatcher's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deliveries running at once.
    pub max_in_flight: usize,
    /// Messages handed over and not yet settled.
    pub max_buffered: usize,
    /// Payload bytes handed over and not yet settled (a single larger message still passes
    /// alone).
    pub max_buffered_bytes: usize,
}

impl Limits {
    /// `max_in_flight` concurrent deliveries with a window of 16 times that, 32 MiB at most.
    pub fn for_in_flight(max_in_flight: usize) -> Self {
        Limits {
            max_in_flight,
            max_buffered: max_in_flight.saturating_mul(16),
            max_buffered_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Byte budgets are counted in KiB so that they fit the semaphore's u32 requests.
const BYTE_UNIT: usize = 1024;

/// A message in the window: waiting behind its key's running task, or the one the task
/// works on (its first message keeps its action). With a router to map it again
/// ([`Dispatcher::remapping`]) its action is dropped while it waits, whatever mapped it: a
/// mapped event costs more memory than the payload it comes from, and most of a full window
/// waits. Mapping again costs CPU instead: a share, where memory is a container's hard
/// limit (2026-12-06, three runs each in `scripts/bench`: when routed messages still kept
/// theirs, `kafka-0ms-routes` peaked at 37.5-38.0 MB and `kafka-0ms-dedupe` at 39.7-40.1;
/// mapped again, 32.6-33.1 and 34.3 MB, at 85-87% of `kafka-0ms`'s rate instead of
/// 103-109%, about 5 µs more CPU per message).
struct Parked<T> {
    ticket: T,
    message: Message,
    /// Boxed: only a dispatcher without a router keeps actions (see `remap`), and a parked
    /// message that fits 256 bytes takes that much from the allocator instead of 320.
    action: Option<Box<Action>>,
    slot: Slot,
}

impl<T> Parked<T> {
    /// `job` boxed, without its action unless `keep_action`.
    fn new(job: Job<T>, slot: Slot, keep_action: bool) -> Box<Self> {
        Box::new(Parked {
            ticket: job.ticket,
            message: job.message,
            action: keep_action.then(|| Box::new(job.action)),
            slot,
        })
    }
}

/// The messages waiting behind a key's running task. Boxed, so that a queue's spare
/// capacity costs a pointer per place, not a message.
type KeyQueue<T> = VecDeque<Box<Parked<T>>>;

struct Inner<S: Settle> {
    deliverer: Deliverer,
    settler: S,
    window: Arc<Window>,
    capacity: usize,
    capacity_kib: u32,
    /// HTTP requests under way (taken by the deliverer for the call only), adaptive
    /// below `max_in_flight`.
    on_wire: Slots,
    /// Keys with a running task, and the messages queued behind it. A key is present
    /// exactly while its task runs; the task removes it under the lock when it finds its
    /// queue empty, so a submit either queues behind a running task or starts a new one.
    keys: Mutex<HashMap<OrderKey, KeyQueue<S::Ticket>>>,
    /// Cancelled when in-flight work must stop waiting (the drain deadline has passed).
    abort: CancellationToken,
    /// Cancelled by [`Dispatcher::stop_waiting`] when shutdown begins: deliveries that
    /// wait (rate budget, backoff, `Retry-After`) stop at once, requests on the wire finish.
    stop_waiting: CancellationToken,
    /// Maps parked messages again when their turn comes (`None`: they keep their action).
    remap: Option<MessageRouter>,
    tasks: TaskTracker,
    runtime: Handle,
    sequence: AtomicU64,
}

/// Cheap to clone; clones share the window and the key queues.
pub struct Dispatcher<S: Settle> {
    inner: Arc<Inner<S>>,
}

impl<S: Settle> Clone for Dispatcher<S> {
    fn clone(&self) -> Self {
        Dispatcher {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Settle> Dispatcher<S> {
    /// `max_in_flight` concurrent deliveries and the default window for it. Must be called
    /// inside the tokio runtime; submissions may then come from any thread.
    pub fn new(
        deliverer: Deliverer,
        settler: S,
        max_in_flight: usize,
        abort: CancellationToken,
    ) -> Self {
        Self::with_limits(
            deliverer,
            settler,
            Limits::for_in_flight(max_in_flight),
            abort,
        )
    }

    /// Must be called inside the tokio runtime; submissions may then come from any thread.
    pub fn with_limits(
        deliverer: Deliverer,
        settler: S,
        limits: Limits,
        abort: CancellationToken,
    ) -> Self {
        let capacity = limits.max_buffered.max(limits.max_in_flight).max(1);
        let capacity_kib =
            u32::try_from((limits.max_buffered_bytes / BYTE_UNIT).max(1)).unwrap_or(u32::MAX >> 4);
        Dispatcher {
            inner: Arc::new(Inner {
                deliverer,
                settler,
                window: Arc::new(Window {
                    messages: Semaphore::new(capacity),
                    kib: Semaphore::new(capacity_kib as usize),
                }),
                capacity,
                capacity_kib,
                on_wire: Slots::new(limits.max_in_flight),
                keys: Mutex::new(HashMap::new()),
                abort,
                stop_waiting: CancellationToken::new(),
                remap: None,
                tasks: TaskTracker::new(),
                runtime: Handle::current(),
                sequence: AtomicU64::new(0),
            }),
        }
    }

    /// Messages waiting behind their key drop their action and are mapped again with
    /// `router` when their turn comes: the window then costs about its payloads. For a
    /// source whose actions are exactly `router`'s (Kafka: mapping is a function of the
    /// message; a route that reads the clock with `now` sees the time of delivery, as a
    /// message of the SQLite queue does). Call it before the dispatcher is cloned or used;
    /// later it changes nothing.
    pub fn remapping(mut self, router: MessageRouter) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.remap = Some(router);
        }
        self
    }

    fn kib(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(BYTE_UNIT))
            .unwrap_or(u32::MAX)
            .min(self.inner.capacity_kib)
    }

    /// A slot for a small message if the window has room now.
    pub fn try_reserve(&self) -> Option<Slot> {
        self.try_reserve_for(0)
    }

    /// A slot for a message of `bytes` if the window has room now.
    pub fn try_reserve_for(&self, bytes: usize) -> Option<Slot> {
        let window = &self.inner.window;
        let message = window.messages.try_acquire().ok()?;
        let kib = window.kib.try_acquire_many(self.kib(bytes)).ok()?;
        Some(window.slot(message, kib))
    }

    /// Waits for room for a small message. `None` only if the window was closed, which
    /// nothing does: callers treat it as "stop".
    pub async fn reserve(&self) -> Option<Slot> {
        self.reserve_for(0).await
    }

    /// Waits for room for a message of `bytes` (`None` as for [`Dispatcher::reserve`]).
    /// Cancel-safe: permits taken before a cancellation are given back.
    pub async fn reserve_for(&self, bytes: usize) -> Option<Slot> {
        let window = &self.inner.window;
        let message = window.messages.acquire().await.ok()?;
        let kib = window.kib.acquire_many(self.kib(bytes)).await.ok()?;
        Some(window.slot(message, kib))
    }

    /// Waits up to `timeout` for room, blocking the calling thread. For sources that read
    /// on their own OS thread; never call it from async code.
    pub fn reserve_blocking(&self, bytes: usize, timeout: std::time::Duration) -> Option<Slot> {
        self.inner.runtime.block_on(async {
            tokio::time::timeout(timeout, self.reserve_for(bytes))
                .await
                .ok()
                .flatten()
        })
    }

    /// The window's size in messages.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Messages submitted and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.inner.capacity - self.inner.window.messages.available_permits()
    }

    /// Keys with a running task (messages submitted and not yet settled). A key leaves
    /// the moment its last message is settled: idle keys hold nothing.
    pub fn active_keys(&self) -> usize {
        lock(&self.inner.keys).len()
    }

    /// Queues `job` behind its key, or starts a task for the key.
    pub fn submit(&self, slot: Slot, job: Job<S::Ticket>) {
        let sequence = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        let key = OrderKey::of(&job.action, sequence);
        let mut keys = lock(&self.inner.keys);
        if let Some(queue) = keys.get_mut(&key) {
            if matches!(key, OrderKey::Heartbeat(_)) {
                drop(keys);
                self.coalesce(job, slot);
                return;
            }
            // With a router, a waiting message is mapped again when its turn comes.
            let keep_action = self.inner.remap.is_none();
            queue.push_back(Parked::new(job, slot, keep_action));
            return;
        }
        keys.insert(key.clone(), VecDeque::new());
        drop(keys);
        // The first message keeps its action: it goes out next, so mapping it again would
        // only cost CPU.
        let first = Parked::new(job, slot, true);
        let inner = Arc::clone(&self.inner);
        let task = inner
            .tasks
            .track_future(run_key(Arc::clone(&inner), key, first));
        inner.runtime.spawn(task);
    }

    /// Settles a ping whose heartbeat has a ping running: it would change nothing at ilert.
    fn coalesce(&self, job: Job<S::Ticket>, slot: Slot) {
        crate::observe::events::heartbeat_coalesced();
        let outcome = Outcome::Coalesced {
            reason: "a ping of this heartbeat is in flight".into(),
        };
        let inner = Arc::clone(&self.inner);
        let task = self.inner.tasks.track_future(async move {
            inner.settler.settle(job, outcome).await;
            drop(slot);
        });
        self.inner.runtime.spawn(task);
    }

    /// Shutdown has begun: deliveries that are waiting give up at once and are settled as
    /// interrupted (their source delivers them again after the restart); requests already
    /// on the wire may finish until the abort.
    pub fn stop_waiting(&self) {
        self.inner.stop_waiting.cancel();
    }

    /// Waits until every submitted message is settled (or abandoned after an abort).
    pub async fn drained(&self) {
        let capacity = u32::try_from(self.inner.capacity).unwrap_or(u32::MAX);
        if let Ok(all) = self.inner.window.messages.acquire_many(capacity).await {
            drop(all);
        }
    }
}

/// A key's task: delivers and settles its messages one after the other. Every key with a
/// message in the window has one, waiting or not, so its size is what a key costs: a
/// backlog of distinct alert keys holds one per key. Hence the message it works on stays
/// in its box (one copy, not one per local it passes through), the delivery's state is
/// built only once the key has a delivery slot (`deliver`), and the large futures inside
/// (the delivery, the settle step, the HTTP call, the dead-letter writes) are boxed. In the
/// release build of 2026-12-06 a Kafka key's task is 664 bytes (768 from the allocator with
/// tokio's header), and a key with a slot adds about 1 KB for its delivery; before, every
/// key's task held a whole delivery and three copies of its message, 2,192 bytes (2,560
/// from the allocator).
async fn run_key<S: Settle>(inner: Arc<Inner<S>>, key: OrderKey, first: Box<Parked<S::Ticket>>) {
    let mut next = Some(first);
    // Once shutdown interrupted a message of this key, no later one of the key may go out
    // before it: they are all left for the restart.
    let mut interrupted = false;
    while let Some(parked) = next {
        interrupted = deliver_and_settle(&inner, parked, interrupted).await;
        let mut keys = lock(&inner.keys);
        next = keys.get_mut(&key).and_then(VecDeque::pop_front);
        if next.is_none() {
            keys.remove(&key);
        }
    }
}

/// Delivers one message (unless an earlier one of its key was interrupted by shutdown) and
/// settles it; `true` once shutdown has interrupted it or an earlier one.
async fn deliver_and_settle<S: Settle>(
    inner: &Inner<S>,
    mut parked: Box<Parked<S::Ticket>>,
    interrupted: bool,
) -> bool {
    let action = take_action(inner, &mut parked);
    let revoked = inner.settler.revoked(&parked.ticket);
    let outcome = if interrupted {
        Outcome::Interrupted { attempts: 0 }
    } else {
        deliver(inner, &action, &parked.message.meta, revoked.as_ref()).await
    };
    let stopping = inner.stop_waiting.is_cancelled() || inner.abort.is_cancelled();
    let interrupted = interrupted || (matches!(outcome, Outcome::Interrupted { .. }) && stopping);
    let Parked {
        ticket,
        message,
        slot,
        ..
    } = *parked;
    let job = Job {
        ticket,
        message,
        action,
    };
    // Boxed: a settle future holds the message (twice, for Kafka's) and would otherwise
    // make every waiting key's task that large.
    Box::pin(inner.settler.settle(job, outcome)).await;
    drop(slot);
    interrupted
}

/// Delivers `action`. One that makes a request first waits here for a delivery slot, where
/// waiting costs a few hundred bytes per key, and only then starts the delivery, whose
/// state (retries, rate-limit waits, the request) is most of a key's size and is boxed:
/// with 1,000 keys waiting for 128 slots, only the keys with a slot pay for it. The slot
/// goes to the delivery's first request if the key's budget lets it go at once
/// ([`Reserved`]). Waiting stops as inside a delivery: at the abort, when shutdown begins,
/// or when the message is revoked (interrupted, settled for the restart). Once shutdown
/// has begun the delivery starts at once, so the drain follows the delivery's own rules.
async fn deliver<S: Settle>(
    inner: &Inner<S>,
    action: &Action,
    location: &Metadata,
    revoked: Option<&CancellationToken>,
) -> Outcome {
    let needs_the_wire = matches!(
        action,
        Action::Event(_) | Action::Heartbeat(_) | Action::PolicyUpdate(_)
    );
    let reserved = if needs_the_wire && !inner.stop_waiting.is_cancelled() {
        tokio::select! {
            biased;
            () = inner.abort.cancelled() => return Outcome::Interrupted { attempts: 0 },
            () = inner.stop_waiting.cancelled() => return Outcome::Interrupted { attempts: 0 },
            () = cancelled(revoked) => return Outcome::Interrupted { attempts: 0 },
            permit = Arc::clone(inner.on_wire.semaphore()).acquire_owned() => permit.ok().map(Reserved::new),
        }
    } else {
        None
    };
    let ctx = Context {
        location,
        deadline: None,
        cancel: &inner.abort,
        slots: Some(&inner.on_wire),
        stop_waiting: Some(&inner.stop_waiting),
        revoked,
        reserved: reserved.unwrap_or_default(),
    };
    Box::pin(inner.deliverer.deliver(action, &ctx)).await
}

/// A parked message's action: the one it kept, or its mapping anew.
fn take_action<S: Settle>(inner: &Inner<S>, parked: &mut Parked<S::Ticket>) -> Action {
    match (parked.action.take(), &inner.remap) {
        (Some(action), _) => *action,
        (None, Some(router)) => router.action_for(&parked.message),
        // Not reached: an action is dropped only with a router to map it again.
        (None, None) => Action::Invalid("the message lost its mapping while it waited".into()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a settle panicked; the map itself is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::{Parked, run_key};
    use crate::sources::kafka::KafkaTicket;
    use crate::sources::kafka::settle::KafkaSettler;

    /// The size of the future an async fn with three arguments returns.
    fn future_size<F, A, B, C, R>(_: &F) -> usize
    where
        F: Fn(A, B, C) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every alert key with a message in the window has a task, so a backlog of 10,000
    /// distinct keys holds 10,000 of them. tokio allocates a task as its future plus about
    /// 100 bytes, rounded up to a multiple of 128; jemalloc then rounds that up to its size
    /// class (640, 768, 896, 1,024 bytes...). 664 bytes on 2026-12-06 (2,192 before the
    /// delivery's state was built only once the key has a delivery slot).
    #[test]
    fn a_waiting_kafka_key_task_stays_under_700_bytes() {
        let size = future_size(&run_key::<KafkaSettler>);
        assert!(size <= 700, "{size} bytes");
    }

    /// Where a dispatcher keeps actions (MQTT's, the SQLite queue's), a waiting event keeps
    /// its box: the same size classes apply to it as to the parked message's (below).
    #[test]
    fn an_event_fits_the_allocators_320_byte_class() {
        assert!(
            std::mem::size_of::<crate::ilert::Event>() <= 320,
            "{} bytes",
            std::mem::size_of::<crate::ilert::Event>()
        );
    }

    /// A full window is mostly parked messages: 10,000 by default. jemalloc rounds a box
    /// up to its size class (256, 320, 384 bytes), so a field that pushes a parked Kafka
    /// message past 256 bytes costs 64 bytes per message, 640 KB in a full window.
    #[test]
    fn a_parked_kafka_message_fits_the_allocators_256_byte_class() {
        assert!(
            std::mem::size_of::<Parked<KafkaTicket>>() <= 256,
            "{} bytes",
            std::mem::size_of::<Parked<KafkaTicket>>()
        );
    }
}
