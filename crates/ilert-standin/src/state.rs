//! Everything the stand-in remembers between requests: the request log, the standing
//! behaviour, the script FIFO, rate-limit windows, users and policies. One std mutex guards it
//! (never held across an await); a `Notify` lets waiters react to new records without polling.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast};

use crate::model::{
    Behaviour, Level, Policy, RateLimit, RecordedRequest, RequestKind, Scripted, User,
};

/// How many records a slow `subscribe` receiver may fall behind before it loses some.
const FEED_CAPACITY: usize = 4096;

pub(crate) struct Shared {
    state: Mutex<State>,
    notify: Notify,
    next_seq: AtomicU64,
    feed: broadcast::Sender<RecordedRequest>,
}

#[derive(Default)]
struct State {
    requests: Vec<RecordedRequest>,
    behaviour: Behaviour,
    script: VecDeque<Scripted>,
    windows: HashMap<String, Window>,
    users: Vec<User>,
    policies: BTreeMap<i64, Policy>,
}

struct Window {
    started: Instant,
    count: u32,
}

/// Outcome of charging one request against its key's rate-limit window.
pub(crate) enum RateDecision {
    Allowed,
    Limited { retry_after_secs: u64 },
}

/// Why a policy level could not be replaced.
pub(crate) enum LevelUpdateError {
    UnknownPolicy,
    LevelOutOfRange { levels: usize },
}

impl Shared {
    pub(crate) fn new(behaviour: Behaviour) -> Arc<Self> {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Arc::new(Shared {
            state: Mutex::new(State {
                behaviour,
                ..State::default()
            }),
            notify: Notify::new(),
            next_seq: AtomicU64::new(1),
            feed,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a finished request to the log, keeping arrival (seq) order even when a later
    /// request finishes first, and wakes waiters.
    pub(crate) fn record(&self, request: RecordedRequest) {
        if self.feed.receiver_count() > 0 {
            // No receiver left between the check and the send is harmless.
            let _ = self.feed.send(request.clone());
        }
        {
            let mut state = self.lock();
            let at = state.requests.partition_point(|r| r.seq < request.seq);
            state.requests.insert(at, request);
        }
        self.notify.notify_waiters();
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.kind == RequestKind::Event && (200..300).contains(&r.status))
            .filter_map(|r| r.json.clone())
            .collect()
    }

    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.requests.clear();
        state.windows.clear();
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<RecordedRequest> {
        self.feed.subscribe()
    }

    /// Waits until at least `n` requests are recorded or `timeout` passes; returns the log.
    pub(crate) async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so that a record made in between is not missed.
            notified.as_mut().enable();
            {
                let state = self.lock();
                if state.requests.len() >= n {
                    return state.requests.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests();
            }
        }
    }

    pub(crate) fn behaviour(&self) -> Behaviour {
        self.lock().behaviour.clone()
    }

    pub(crate) fn set_behaviour(&self, behaviour: Behaviour) {
        self.lock().behaviour = behaviour;
    }

    pub(crate) fn push_script(&self, entries: impl IntoIterator<Item = Scripted>) {
        self.lock().script.extend(entries);
    }

    pub(crate) fn pop_script(&self) -> Option<Scripted> {
        self.lock().script.pop_front()
    }

    /// Charges one request to `key`'s fixed window (the window starts with its first request).
    pub(crate) fn check_rate(&self, key: &str, limit: &RateLimit) -> RateDecision {
        let now = Instant::now();
        let window = Duration::from_millis(limit.window_ms);
        let mut state = self.lock();
        let entry = state.windows.entry(key.to_owned()).or_insert(Window {
            started: now,
            count: 0,
        });
        let mut elapsed = now.saturating_duration_since(entry.started);
        if elapsed >= window {
            entry.started = now;
            entry.count = 0;
            elapsed = Duration::ZERO;
        }
        if entry.count < limit.per_key {
            entry.count += 1;
            return RateDecision::Allowed;
        }
        let remaining_ms = window.saturating_sub(elapsed).as_millis();
        let secs = u64::try_from(remaining_ms.div_ceil(1000)).unwrap_or(u64::MAX);
        RateDecision::Limited {
            retry_after_secs: secs.max(1),
        }
    }

    pub(crate) fn add_user(&self, user: User) {
        let mut state = self.lock();
        state.users.retain(|u| u.id != user.id);
        state.users.push(user);
    }

    pub(crate) fn find_user_by_email(&self, email: &str) -> Option<User> {
        let email = email.trim();
        self.lock()
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned()
    }

    pub(crate) fn user_email(&self, id: i64) -> Option<String> {
        self.lock()
            .users
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.email.clone())
    }

    pub(crate) fn add_policy(&self, policy: Policy) {
        self.lock().policies.insert(policy.id, policy);
    }

    pub(crate) fn policy(&self, id: i64) -> Option<Policy> {
        self.lock().policies.get(&id).cloned()
    }

    pub(crate) fn policy_by_routing_key(&self, routing_key: &str) -> Option<Policy> {
        self.lock()
            .policies
            .values()
            .find(|p| p.routing_key == routing_key)
            .cloned()
    }

    /// Replaces level `index` (zero-based) of policy `id`; the level must already exist.
    pub(crate) fn update_level(
        &self,
        id: i64,
        index: usize,
        level: Level,
    ) -> Result<Level, LevelUpdateError> {
        let mut state = self.lock();
        let policy = state
            .policies
            .get_mut(&id)
            .ok_or(LevelUpdateError::UnknownPolicy)?;
        let levels = policy.levels.len();
        let slot = policy
            .levels
            .get_mut(index)
            .ok_or(LevelUpdateError::LevelOutOfRange { levels })?;
        *slot = level.clone();
        Ok(level)
    }
}

/// A request on its way through the pipeline. It lands in the log when `finish` is called,
/// or with status 0 when it is dropped first (connection dropped, client gone, shutdown).
pub(crate) struct Recording {
    shared: Arc<Shared>,
    entry: Option<RecordedRequest>,
}

impl Recording {
    pub(crate) fn new(shared: Arc<Shared>, entry: RecordedRequest) -> Self {
        Recording {
            shared,
            entry: Some(entry),
        }
    }

    pub(crate) fn finish(mut self, status: u16) {
        if let Some(mut entry) = self.entry.take() {
            entry.status = status;
            self.shared.record(entry);
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.status = 0;
            self.shared.record(entry);
        }
    }
}
