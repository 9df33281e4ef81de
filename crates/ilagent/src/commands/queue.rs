//! `ilagent queue`: the operator's view of the SQLite file (`-f`), usable while the daemon
//! runs on it (WAL mode; writes wait for the daemon's lock for up to 10 s).
//!
//! Output is for scripts as much as for people: `status` prints `name value` lines, the
//! listings print one tab-separated line per row (or JSON lines), the actions print what
//! they changed. Nothing else goes to stdout; a listing cut at `--limit` says so on stderr.

use std::path::Path;

use super::Exit;
use crate::cli::{GlobalArgs, QueueArgs, QueueCommand};
use crate::queue::record::from_unix_ms;
use crate::queue::{DeadLetterRow, QueuedRow, Selection, Store};

pub async fn run(global: &GlobalArgs, args: QueueArgs) -> Exit {
    let path = global.file.clone();
    // SQLite blocks; keep it off the async runtime.
    match tokio::task::spawn_blocking(move || execute(&path, args.command)).await {
        Ok(Ok(output)) => {
            print!("{output}");
            Exit::Success
        }
        Ok(Err(error)) => Exit::Failed(error),
        Err(error) => Exit::Failed(format!("the queue command failed: {error}")),
    }
}

/// Tells (on stderr, so that scripts reading stdout see rows only) that a listing stopped
/// at `--limit`.
fn say_if_cut(what: &str, shown: usize, total: u64) {
    if (shown as u64) < total {
        eprintln!("ilagent queue: {shown} of {total} {what} shown; --limit N shows more");
    }
}

/// Runs the command and returns what to print.
fn execute(path: &Path, command: QueueCommand) -> Result<String, String> {
    if !path.exists() {
        return Err(format!(
            "{} does not exist: give the daemon's SQLite file with -f",
            path.display()
        ));
    }
    let mut store = Store::open(path).map_err(|e| e.to_string())?;
    let mut out = String::new();
    match command {
        QueueCommand::Status => {
            let stats = store.stats().map_err(|e| e.to_string())?;
            out.push_str(&format!("queued {}\n", stats.queued));
            out.push_str(&format!("retrying {}\n", stats.retrying));
            out.push_str(&format!("dead_letters {}\n", stats.dead_letters));
            if let Some(oldest) = stats.oldest_queued_at_ms {
                out.push_str(&format!("oldest_queued_at {}\n", time(oldest)));
            }
            let ids = store.accepted_count().map_err(|e| e.to_string())?;
            out.push_str(&format!("accepted_ids {ids}\n"));
        }
        QueueCommand::List { limit } => {
            let rows = store.list_queued(limit).map_err(|e| e.to_string())?;
            let total = store.stats().map_err(|e| e.to_string())?.queued;
            say_if_cut("queued messages", rows.len(), total);
            for row in rows {
                out.push_str(&queued_line(&row));
            }
        }
        QueueCommand::DeadLetters { limit, json } => {
            let letters = store.list_dead_letters(limit).map_err(|e| e.to_string())?;
            let total = store.stats().map_err(|e| e.to_string())?.dead_letters;
            say_if_cut("dead letters", letters.len(), total);
            for letter in letters {
                if json {
                    out.push_str(&dead_letter_json(&letter));
                    out.push('\n');
                } else {
                    out.push_str(&dead_letter_line(&letter));
                }
            }
        }
        QueueCommand::Requeue { ids, all } => {
            let count = store
                .requeue(&selection(ids, all))
                .map_err(|e| e.to_string())?;
            out.push_str(&format!("requeued {count}\n"));
        }
        QueueCommand::Purge { ids, all } => {
            let count = store
                .purge(&selection(ids, all))
                .map_err(|e| e.to_string())?;
            out.push_str(&format!("purged {count}\n"));
        }
    }
    Ok(out)
}

fn selection(ids: Vec<i64>, all: bool) -> Selection {
    if all {
        Selection::All
    } else {
        Selection::Ids(ids)
    }
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string()
}

/// Tabs and line breaks inside a field would break the one-line-per-row format.
fn field(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

fn queued_line(row: &QueuedRow) -> String {
    let next = if row.next_attempt_at_ms > 0 {
        time(row.next_attempt_at_ms)
    } else {
        "-".to_string()
    };
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        row.id,
        time(row.created_at_ms),
        row.source,
        field(&row.topic),
        row.attempts,
        next,
        field(row.last_error.as_deref().unwrap_or("-"))
    )
}

fn dead_letter_line(letter: &DeadLetterRow) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        letter.id,
        time(letter.failed_at_ms),
        letter.source,
        field(&letter.topic),
        letter.kind,
        letter.attempts,
        field(&letter.reason)
    )
}

fn dead_letter_json(letter: &DeadLetterRow) -> String {
    serde_json::json!({
        "id": letter.id,
        "queue_id": letter.queue_id,
        "source": letter.source.as_str(),
        "topic": letter.topic,
        "kind": letter.kind,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "created_at": time(letter.created_at_ms),
        "failed_at": time(letter.failed_at_ms),
        // Payloads are JSON text in practice; anything else is shown lossily.
        "payload": String::from_utf8_lossy(&letter.payload),
    })
    .to_string()
}
