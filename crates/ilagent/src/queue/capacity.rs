//! How full the SQLite file may get (`--queue_max_size`), and the one decision whether it
//! has room for new messages.
//!
//! Size is SQLite's own page accounting: the pages holding data, `(page_count -
//! freelist_count) * page_size`, read from the file's header with no scan and no counter
//! that could drift (`ilagent queue` edits the same file). Delivered rows free their pages
//! and new rows reuse them, so the measure falls as the queue drains even though the file
//! itself never shrinks.
//!
//! Two mechanisms, because draining needs room too (a row moved to the dead letters is
//! written before it is deleted, a failed attempt rewrites its row, and in WAL mode every
//! delete appends to the WAL and a checkpoint may grow the file):
//! - SQLite itself refuses to grow the file past the cap (`PRAGMA max_page_count`): any
//!   write that would fails with SQLITE_FULL, exactly as on a full disk, and the
//!   transaction rolls back. So the file never exceeds `--queue_max_size`.
//! - New data (queue rows from a source, dead letters of live messages) stops earlier, at
//!   the high-water mark `max_bytes - reserve`, and on a disk with less than
//!   [`DISK_RESERVE`] to spare. The reserve is what delivering, retrying and
//!   dead-lettering the queued rows may use, so a full queue always drains by itself.
//!   Once refused, new data is taken again only below a lower mark, so that a queue at its
//!   limit does not flap between full and not full with every delivered row.
//!
//! A refusal is [`QueueError::Full`], and so is SQLite's own SQLITE_FULL (cap or disk):
//! every writer treats them alike. The state change is logged and counted once here, not
//! once per refused message.

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::QueueError;
use crate::observe::events;

/// What a drain may need of the disk besides the file's free pages: the WAL growing to its
/// checkpoint size (1000 pages of 4 KiB, SQLite's default) and the checkpoint growing the
/// file by as much.
pub(crate) const DISK_RESERVE: u64 = 8 << 20;

/// The limits of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `--queue_max_size`: the file never grows past it.
    pub max_bytes: u64,
    /// Kept for draining: new data stops at `max_bytes - reserve_bytes`.
    pub reserve_bytes: u64,
}

impl Limits {
    /// No cap on the file (`ilagent queue`, tests); the disk still needs its reserve.
    pub const UNLIMITED: Limits = Limits {
        max_bytes: u64::MAX,
        reserve_bytes: 0,
    };

    /// The limits for a cap of `max_bytes` where the largest message a source accepts has
    /// `largest_message` bytes: the reserve holds at least two of those (one row being
    /// moved to the dead letters, with room to spare), and at least a sixteenth of the cap.
    pub fn new(max_bytes: u64, largest_message: u64) -> Limits {
        let reserve_bytes = (max_bytes / 16)
            .max(largest_message.saturating_mul(2))
            .min(max_bytes / 2);
        Limits {
            max_bytes,
            reserve_bytes,
        }
    }

    /// Where new data stops.
    fn high_water(&self) -> u64 {
        self.max_bytes.saturating_sub(self.reserve_bytes)
    }

    /// Where new data is taken again after a refusal.
    fn low_water(&self) -> u64 {
        let high = self.high_water();
        high.saturating_sub(high / 8)
    }
}

/// The file and its disk as measured now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes of the pages holding data.
    pub used_bytes: u64,
    /// Bytes of free pages inside the file, which new rows reuse.
    pub free_in_file: u64,
    /// What the file system has left for this process; `None` if it cannot say.
    pub disk_free: Option<u64>,
}

/// Why new data is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Full {
    /// The file reached its high-water mark.
    Size { used_bytes: u64, limit_bytes: u64 },
    /// The disk has less to spare than draining may need.
    Disk { available_bytes: u64 },
    /// SQLite reported SQLITE_FULL: the cap or the disk.
    Sqlite(String),
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Full::Size {
                used_bytes,
                limit_bytes,
            } => write!(
                f,
                "the queue holds {used_bytes} bytes, its limit for new messages is {limit_bytes} (--queue_max_size less the reserve for draining)"
            ),
            Full::Disk { available_bytes } => write!(
                f,
                "the disk has {available_bytes} bytes left for the queue, draining it needs {DISK_RESERVE}"
            ),
            Full::Sqlite(error) => write!(f, "{error} (--queue_max_size or the disk)"),
        }
    }
}

/// Whether new data of `incoming` bytes fits. `was_full`: the last write of new data was
/// refused, so the lower mark applies.
pub(crate) fn decide(
    limits: &Limits,
    usage: &Usage,
    incoming: u64,
    was_full: bool,
) -> Result<(), Full> {
    let limit_bytes = if was_full {
        limits.low_water()
    } else {
        limits.high_water()
    };
    let used_bytes = usage.used_bytes.saturating_add(incoming);
    if used_bytes > limit_bytes {
        return Err(Full::Size {
            used_bytes: usage.used_bytes,
            limit_bytes,
        });
    }
    if let Some(disk_free) = usage.disk_free {
        let available_bytes = disk_free.saturating_add(usage.free_in_file);
        let needed = if was_full {
            DISK_RESERVE + DISK_RESERVE / 4
        } else {
            DISK_RESERVE
        };
        if available_bytes < needed.saturating_add(incoming) {
            return Err(Full::Disk { available_bytes });
        }
    }
    Ok(())
}

/// The limits of the daemon's connection and whether new data is being refused.
pub(crate) struct Capacity {
    limits: Limits,
    path: PathBuf,
    full: bool,
}

impl Capacity {
    /// Sets SQLite's own ceiling on `connection` (it cannot go below the file's current
    /// size, so a file from a run with a larger cap keeps its pages).
    pub(crate) fn new(
        connection: &Connection,
        path: &Path,
        limits: Limits,
    ) -> Result<Capacity, QueueError> {
        if limits.max_bytes != u64::MAX {
            let page_size = pragma(connection, "page_size")?.max(512);
            let pages = (limits.max_bytes / page_size).max(1);
            connection
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(|e| QueueError::sqlite("set the page limit of the file".into(), e))?;
            events::queue_max_bytes(limits.max_bytes);
        }
        Ok(Capacity {
            limits,
            path: path.to_path_buf(),
            full: false,
        })
    }

    /// Runs `write` (new data of about `incoming` bytes) in one transaction if the file
    /// and the disk have room for it, before and after: the check after the write sees
    /// what the rows really took, so the reserve is never eaten into.
    pub(crate) fn write_new<T>(
        &mut self,
        connection: &mut Connection,
        incoming: u64,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let result = self.check(connection, incoming).and_then(|()| {
            let tx = connection
                .transaction()
                .map_err(|e| QueueError::sqlite("begin a write".into(), e))?;
            let value = write(&tx)?;
            let after = measure(&tx, &self.path)?;
            decide(&self.limits, &after, 0, false).map_err(QueueError::Full)?;
            tx.commit()
                .map_err(|e| QueueError::sqlite("commit a write".into(), e))?;
            events::queue_bytes(after.used_bytes);
            Ok(value)
        });
        match &result {
            Ok(_) => self.has_room(),
            Err(QueueError::Full(reason)) => self.is_full(reason),
            Err(_) => {}
        }
        result
    }

    /// Takes note of a write that settles queued rows: a lack of space it met means the
    /// queue is full (a full disk may be noticed here first), and one that succeeded while
    /// full may have made room.
    pub(crate) fn note<T>(&mut self, connection: &Connection, result: &Result<T, QueueError>) {
        match result {
            Err(QueueError::Full(reason)) => self.is_full(reason),
            Ok(_) if self.full => self.refresh(connection),
            _ => {}
        }
    }

    /// Measures again (the readiness probe, `/metrics`): refreshes the size gauge and
    /// notices room made by deliveries even while no new message is waiting.
    pub(crate) fn refresh(&mut self, connection: &Connection) {
        if let Ok(usage) = measure(connection, &self.path) {
            events::queue_bytes(usage.used_bytes);
            if self.full && decide(&self.limits, &usage, 0, true).is_ok() {
                self.has_room();
            }
        }
    }

    fn check(&self, connection: &Connection, incoming: u64) -> Result<(), QueueError> {
        let usage = measure(connection, &self.path)?;
        events::queue_bytes(usage.used_bytes);
        decide(&self.limits, &usage, incoming, self.full).map_err(QueueError::Full)
    }

    fn is_full(&mut self, reason: &Full) {
        if !self.full {
            self.full = true;
            events::queue_full(reason);
        }
    }

    fn has_room(&mut self) {
        if self.full {
            self.full = false;
            events::queue_has_room();
        }
    }
}

/// The file's pages and its disk's free space, as `connection` sees them (inside a
/// transaction: with its uncommitted changes).
pub(crate) fn measure(connection: &Connection, path: &Path) -> Result<Usage, QueueError> {
    let page_size = pragma(connection, "page_size")?;
    let pages = pragma(connection, "page_count")?;
    let free = pragma(connection, "freelist_count")?;
    Ok(Usage {
        used_bytes: pages.saturating_sub(free).saturating_mul(page_size),
        free_in_file: free.saturating_mul(page_size),
        disk_free: disk_free(path),
    })
}

fn pragma(connection: &Connection, name: &str) -> Result<u64, QueueError> {
    let read = |e| QueueError::sqlite(format!("read the {name} of the file"), e);
    connection
        .prepare_cached(&format!("PRAGMA {name}"))
        .map_err(read)?
        .query_row([], |row| row.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(read)
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
fn disk_free(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::SourceKind;
    use crate::queue::{NewRow, Store, StoredMeta, now_ms};

    const MIB: u64 = 1 << 20;

    fn row(seq: usize) -> NewRow {
        NewRow {
            source: SourceKind::Http,
            topic: "/api/events".into(),
            payload: vec![b'x'; 32 << 10],
            meta: StoredMeta::default(),
            order_key: Some(format!("key-{seq}")),
            created_at_ms: now_ms(),
        }
    }

    #[test]
    fn a_full_file_refuses_new_rows_whole_and_takes_them_again_once_rows_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db3");
        let limits = Limits::new(4 * MIB, 256 << 10); // new rows stop at 3.75 MiB
        let mut store = Store::open_with(&path, limits).unwrap();
        let mut ids = Vec::new();
        let refused = loop {
            match store.insert(&[row(ids.len()), row(ids.len() + 1)]) {
                Ok(new) => ids.extend(new),
                Err(error) => break error,
            }
            assert!(ids.len() < 1000, "never full");
        };
        assert!(refused.is_full(), "{refused}");
        assert_eq!(
            store.stats().unwrap().queued,
            ids.len() as u64,
            "no half batch"
        );
        let usage = measure(store.connection(), &path).unwrap();
        assert!(usage.used_bytes <= limits.high_water(), "{usage:?}");

        // The reserve lets queued rows move to the dead letters while new rows wait.
        store
            .dead_letter_queued(ids[0], "permanent", "400 Bad Request", 1)
            .unwrap();
        assert!(store.insert(&[row(0)]).unwrap_err().is_full());

        // Deliveries make room below the low-water mark: new rows are taken again.
        for id in &ids[1..ids.len() / 2] {
            store.delete(*id).unwrap();
        }
        store.insert(&[row(0)]).unwrap();
        assert_eq!(
            store
                .connection()
                .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
                .unwrap(),
            "ok"
        );
    }

    #[test]
    fn sqlite_refuses_to_grow_the_file_past_the_cap_for_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db3");
        let store = Store::open_with(&path, Limits::new(4 * MIB, 256 << 10)).unwrap();
        let error = store
            .connection()
            .execute_batch(
                "CREATE TABLE filler (b BLOB);
                 INSERT INTO filler VALUES (zeroblob(8 * 1024 * 1024));",
            )
            .unwrap_err();
        let error = QueueError::sqlite("fill".into(), error);
        assert!(
            matches!(error, QueueError::Full(Full::Sqlite(_))),
            "{error}"
        );
        assert!(std::fs::metadata(&path).unwrap().len() <= 4 * MIB);
    }

    fn usage(used: u64, disk_free: Option<u64>) -> Usage {
        Usage {
            used_bytes: used,
            free_in_file: 0,
            disk_free,
        }
    }

    #[test]
    fn the_reserve_holds_two_of_the_largest_messages_and_a_sixteenth_of_the_cap() {
        assert_eq!(Limits::new(4 * MIB, MIB).reserve_bytes, 2 * MIB);
        assert_eq!(Limits::new(1024 * MIB, MIB).reserve_bytes, 64 * MIB);
    }

    #[test]
    fn new_data_stops_at_the_high_water_mark_and_resumes_below_the_low_one() {
        let limits = Limits::new(64 * MIB, MIB); // high water 60 MiB, low 52.5 MiB
        assert!(decide(&limits, &usage(59 * MIB, None), MIB, false).is_ok());
        assert!(matches!(
            decide(&limits, &usage(60 * MIB, None), 1, false),
            Err(Full::Size { .. })
        ));
        assert!(decide(&limits, &usage(55 * MIB, None), 0, true).is_err());
        assert!(decide(&limits, &usage(52 * MIB, None), 0, true).is_ok());
    }

    #[test]
    fn a_disk_without_room_for_draining_refuses_new_data_and_free_pages_count_as_room() {
        let limits = Limits::UNLIMITED;
        assert!(matches!(
            decide(&limits, &usage(MIB, Some(DISK_RESERVE)), 1, false),
            Err(Full::Disk { .. })
        ));
        let reusable = Usage {
            free_in_file: 4 * MIB,
            ..usage(MIB, Some(DISK_RESERVE))
        };
        assert!(decide(&limits, &reusable, MIB, false).is_ok());
        assert!(decide(&limits, &usage(MIB, None), MIB, false).is_ok());
    }
}
