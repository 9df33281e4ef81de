//! The durable queue: messages kept in SQLite until ilert has them, and the dead letters.
//!
//! - [`schema`] lays out the file (`-f`) and sets WAL mode and full sync.
//! - [`store`] holds every SQL statement, and with them the per-key order: only the oldest
//!   row of an order key is ever handed out, so no retry or restart lets a later message
//!   of the key overtake.
//! - [`Queue`] (this file) runs the store on a thread of its own, so no SQLite call ever
//!   blocks the async runtime, and commits inserts that arrive together in one transaction.
//! - [`worker`] delivers rows through the shared dispatcher; [`settle`] deletes, reschedules
//!   or dead-letters them according to the outcome, with the attempt count in the row.
//!
//! Sources that acknowledge on the write (MQTT with `--mqtt_buffer`, the HTTP proxy) append
//! rows; every source may record dead letters here ([`dead_letter`] for live messages).
//! [`capacity`] decides whether the file has room for them (`--queue_max_size`, the disk).

pub(crate) mod capacity;
pub(crate) mod dead_letter;
mod order;
pub mod record;
mod schema;
pub mod settle;
pub mod store;
pub mod worker;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use capacity::{Full, Limits};
pub use order::order_key_column;
pub use record::{
    DeadLetterRow, NewDeadLetter, NewRow, QueuedRow, Selection, Stats, StoredMeta, now_ms,
};
pub use store::{AcceptedId, Store};

/// A failure of the SQLite file.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQLite queue: cannot {what}: {error}")]
    Sqlite {
        what: String,
        error: rusqlite::Error,
    },
    #[error("SQLite queue: {0}")]
    Other(String),
    /// No room for new data (see [`capacity`]); nothing was written.
    #[error("SQLite queue full: {0}")]
    Full(Full),
    #[error("SQLite queue: the queue thread has stopped")]
    Closed,
}

impl QueueError {
    /// SQLITE_FULL (the cap or the disk) is [`QueueError::Full`], like a refusal of ours.
    pub(crate) fn sqlite(what: String, error: rusqlite::Error) -> Self {
        if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return QueueError::Full(Full::Sqlite(format!("cannot {what}: {error}")));
        }
        QueueError::Sqlite { what, error }
    }

    /// The file or the disk has no room: wait for deliveries to make some.
    pub fn is_full(&self) -> bool {
        matches!(self, QueueError::Full(_))
    }

    /// A copy to hand to each caller of a failed shared commit.
    fn duplicate(&self) -> QueueError {
        match self {
            QueueError::Full(reason) => QueueError::Full(reason.clone()),
            QueueError::Closed => QueueError::Closed,
            other => QueueError::Other(other.to_string()),
        }
    }

    /// For [`crate::pipeline::persist::until_written`]: a stopped queue thread ends the
    /// retries, every other failure is worth another try.
    pub(crate) fn retryable(self) -> crate::pipeline::persist::WriteFailure<QueueError> {
        use crate::pipeline::persist::WriteFailure;
        match self {
            QueueError::Closed => WriteFailure::Stop,
            error => WriteFailure::Retry(error),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Store) + Send>;
type Reply = oneshot::Sender<Result<Vec<i64>, QueueError>>;

enum Command {
    /// Kept apart from other work so that inserts arriving together share one commit.
    Insert(Arc<Vec<NewRow>>, Reply),
    /// Likewise for accepted idempotency ids.
    Remember(AcceptedId, oneshot::Sender<Result<(), QueueError>>),
    Run(Job),
}

/// Most rows one commit takes; bounds how long other work waits behind a burst.
const MAX_ROWS_PER_COMMIT: usize = 2_000;

/// Commands waiting for the queue thread. A full channel makes the callers wait (every
/// caller awaits its answer anyway), so a burst cannot pile up work, and payloads, in
/// memory faster than the disk takes it.
const COMMAND_CAPACITY: usize = 1_024;

/// A handle to the queue thread. Cheap to clone; the thread ends when the last handle
/// is dropped, after finishing the work already sent.
#[derive(Clone)]
pub struct Queue {
    commands: mpsc::Sender<Command>,
    path: Arc<str>,
}

impl Queue {
    /// Opens the file (creating it) for this daemon alone, within `limits`, and starts the
    /// thread. Blocking: call it from `spawn_blocking`.
    pub fn open(path: &Path, limits: Limits) -> Result<Queue, QueueError> {
        let lock = lock_for_this_daemon(path)?;
        let store = Store::open_with(path, limits)?;
        let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
        std::thread::Builder::new()
            .name("sqlite-queue".into())
            .spawn(move || {
                serve(store, receiver);
                drop(lock);
            })
            .map_err(|e| QueueError::Other(format!("cannot start the queue thread: {e}")))?;
        Ok(Queue {
            commands,
            path: path.display().to_string().into(),
        })
    }

    /// The file, for log lines.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Appends rows; returns once they are committed to disk. (Shared, so that a caller
    /// can retry a failed commit without copying the payloads.)
    pub async fn insert(&self, rows: Arc<Vec<NewRow>>) -> Result<Vec<i64>, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Insert(rows, reply))
            .await
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Records an idempotency id ilert accepted; returns once it is committed (ids recorded
    /// together share one commit).
    pub async fn remember(&self, id: AcceptedId) -> Result<(), QueueError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Remember(id, reply))
            .await
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    /// Runs `work` on the queue thread and returns its result.
    pub async fn run<T, F>(&self, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, QueueError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = reply.send(work(store));
        });
        self.commands
            .send(Command::Run(job))
            .await
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }
}

/// Two daemons on one file would hand out the same rows twice; `ilagent queue` (which
/// does not take this lock) may still work on it. The lock is on a file beside the
/// database, never on the database itself, whose locks belong to SQLite.
fn lock_for_this_daemon(path: &Path) -> Result<std::fs::File, QueueError> {
    let lock_path = format!("{}.lock", path.display());
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| QueueError::Other(format!("cannot create {lock_path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(QueueError::Other(format!(
            "another ilagent daemon is using {}: give each daemon its own file with -f",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(QueueError::Other(format!("cannot lock {lock_path}: {e}")))
        }
    }
}

/// The queue thread: one command at a time, consecutive inserts in one transaction.
fn serve(mut store: Store, mut commands: mpsc::Receiver<Command>) {
    let mut next = commands.blocking_recv();
    while let Some(command) = next.take() {
        match command {
            Command::Run(job) => job(&mut store),
            Command::Insert(rows, reply) => {
                let mut batch = vec![(rows, reply)];
                let mut total: usize = batch[0].0.len();
                while total < MAX_ROWS_PER_COMMIT {
                    match commands.try_recv() {
                        Ok(Command::Insert(rows, reply)) => {
                            total += rows.len();
                            batch.push((rows, reply));
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_batch(&mut store, batch);
            }
            Command::Remember(id, reply) => {
                let mut batch = vec![(id, reply)];
                while batch.len() < MAX_ROWS_PER_COMMIT {
                    match commands.try_recv() {
                        Ok(Command::Remember(id, reply)) => batch.push((id, reply)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let (ids, replies): (Vec<AcceptedId>, Vec<_>) = batch.into_iter().unzip();
                let result = store.remember_all(&ids);
                for reply in replies {
                    let _ = reply.send(match &result {
                        Ok(()) => Ok(()),
                        Err(error) => Err(error.duplicate()),
                    });
                }
            }
        }
        if next.is_none() {
            next = commands.blocking_recv();
        }
    }
}

fn commit_batch(store: &mut Store, batch: Vec<(Arc<Vec<NewRow>>, Reply)>) {
    match store.insert(batch.iter().flat_map(|(rows, _)| rows.iter())) {
        Ok(ids) => {
            let mut ids = ids.into_iter();
            for (rows, reply) in batch {
                let _ = reply.send(Ok(ids.by_ref().take(rows.len()).collect()));
            }
        }
        Err(error) if error.is_full() && batch.len() > 1 => {
            // Together they do not fit; alone some may: a small write is never held back
            // by a large one that arrived with it.
            for (rows, reply) in batch {
                let _ = reply.send(store.insert(rows.iter()));
            }
        }
        Err(error) => {
            // Nothing was committed: every caller learns it, none is acknowledged.
            for (_, reply) in batch {
                let _ = reply.send(Err(error.duplicate()));
            }
        }
    }
}
