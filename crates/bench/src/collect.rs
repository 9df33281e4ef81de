//! Waiting at the stand-in until every benchmark event has arrived, without polling the
//! whole request log in a tight loop (the bench shares two cores with the agent).

use std::collections::HashSet;
use std::time::Duration;

use ilert_standin::{RecordedRequest, StandIn};
use tokio::time::Instant;

use crate::event::bench_details;

/// How often the wait looks at whether the agent is still alive while nothing arrives.
const LIVENESS_SLICE: Duration = Duration::from_secs(5);
/// After the last event arrived: time for stragglers (duplicates) to land before counting.
const SETTLE: Duration = Duration::from_millis(500);

/// Distinct benchmark ids (below `expected`) the stand-in accepted.
pub fn unique_accepted(requests: &[RecordedRequest], expected: usize) -> usize {
    requests
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .filter_map(|r| bench_details(r.json.as_ref()))
        .filter_map(|d| d["id"].as_u64())
        .filter(|id| *id < expected as u64)
        .collect::<HashSet<u64>>()
        .len()
}

/// The ids of `0..expected` that no accepted request carried, in order.
pub fn missing_ids(requests: &[RecordedRequest], expected: usize) -> Vec<u64> {
    let accepted: HashSet<u64> = requests
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .filter_map(|r| bench_details(r.json.as_ref()))
        .filter_map(|d| d["id"].as_u64())
        .collect();
    (0..expected as u64)
        .filter(|id| !accepted.contains(id))
        .collect()
}

/// Waits until the stand-in accepted all `expected` distinct events, `deadline` passes, or
/// `alive()` says the sender is gone; then returns the request log (after a short settle
/// when everything arrived).
pub async fn wait_for_all(
    stand_in: &StandIn,
    expected: usize,
    deadline: Instant,
    mut alive: impl FnMut() -> bool,
) -> Vec<RecordedRequest> {
    // Every request is at least one more event, so waiting for `len + missing` requests
    // never returns before the last event could have arrived.
    let mut target = expected;
    loop {
        let slice_end = deadline.min(Instant::now() + LIVENESS_SLICE);
        let timeout = slice_end.saturating_duration_since(Instant::now());
        let requests = stand_in.wait_for_requests(target, timeout).await;
        let unique = unique_accepted(&requests, expected);
        if unique >= expected {
            tokio::time::sleep(SETTLE).await;
            return stand_in.requests();
        }
        if Instant::now() >= deadline || !alive() {
            return requests;
        }
        target = requests.len() + (expected - unique);
    }
}

/// Waits until the stand-in has accepted at least one warm-up event, calling `send(n)` every
/// `every` to send warm-up event `n`; fails when `alive()` says the agent is gone or after
/// `timeout`.
pub async fn warm_up<F, Fut>(
    stand_in: &StandIn,
    every: Duration,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
    mut send: F,
) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + timeout;
    for n in 0.. {
        if let Err(error) = send(n).await {
            eprintln!("warm-up event {n} not sent yet: {error:#}");
        }
        let until = Instant::now() + every;
        while Instant::now() < until {
            let arrived = stand_in.requests().iter().any(|r| {
                (200..300).contains(&r.status) && crate::event::is_warmup(r.json.as_ref())
            });
            if arrived {
                return Ok(());
            }
            if !alive() {
                anyhow::bail!("the agent exited during the warm-up");
            }
            if Instant::now() >= deadline {
                anyhow::bail!("no warm-up event reached the stand-in within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
