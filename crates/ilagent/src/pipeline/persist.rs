//! Writing what settles a message (a dead letter, a queued row's new state, a batch of
//! buffered messages): retried with backoff until it succeeds or we stop.
//!
//! A message is acknowledged, committed or deleted only after its write succeeded, so a
//! failing disk or dead-letter topic is waited out, never a reason to lose the message.
//! Stopping (shutdown gave up, or the queue thread is gone) leaves the message unsettled:
//! its source delivers it again after the restart.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::delivery::Backoff;

/// Waits between failed writes: from 200 ms, doubling, up to 10 s, with jitter.
const WRITE_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(10),
};

/// Why one write failed.
pub enum WriteFailure<E> {
    /// Worth trying again (disk full, broker down, file locked).
    Retry(E),
    /// Trying again cannot help (the queue thread has stopped).
    Stop,
}

/// Runs `write` until it succeeds (`Some`), `stop` is cancelled or a failure says stop
/// (`None`). `failed` is told of every failure that is retried, for logs and metrics.
pub async fn until_written<T, E, F, Fut>(
    stop: &CancellationToken,
    mut write: F,
    mut failed: impl FnMut(&E),
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WriteFailure<E>>>,
{
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            result = write() => result,
            () = stop.cancelled() => return None,
        };
        match result {
            Ok(value) => return Some(value),
            Err(WriteFailure::Stop) => return None,
            Err(WriteFailure::Retry(error)) => {
                failures = failures.saturating_add(1);
                failed(&error);
                let wait = WRITE_BACKOFF.delay(failures, &mut rand::rng());
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_write_is_retried_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let mut reported = 0;
        let written = until_written(
            &CancellationToken::new(),
            || async {
                if calls.fetch_add(1, Ordering::Relaxed) < 3 {
                    Err(WriteFailure::Retry("disk full"))
                } else {
                    Ok(7)
                }
            },
            |_| reported += 1,
        )
        .await;
        assert_eq!(written, Some(7));
        assert_eq!(reported, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_retries_without_a_result() {
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            cancel.cancel();
        });
        let written: Option<()> = until_written(
            &stop,
            || async { Err(WriteFailure::Retry("broker down")) },
            |_| {},
        )
        .await;
        assert_eq!(written, None);
        let stopped: Option<()> = until_written(
            &CancellationToken::new(),
            || async { Err(WriteFailure::<&str>::Stop) },
            |_| {},
        )
        .await;
        assert_eq!(stopped, None);
    }
}
