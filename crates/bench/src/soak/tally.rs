//! What arrived at the stand-in, counted as it arrives, so that the stand-in's own request
//! log can be cleared every few seconds: an hour at 200 events/s would otherwise keep
//! 720,000 recorded requests in this process.
//!
//! The tally reads the stand-in's live feed (every request, before it enters the log) and
//! keeps, per source, how often each message number was accepted (2xx). A feed that fell
//! behind (`lagged`) makes the loss check meaningless, so it is counted and reported.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ilert_standin::{RecordedRequest, RequestKind, StandIn};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::traffic::Source;

/// How often the stand-in's request log is cleared.
const CLEAR_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counts {
    /// Per source: acceptances of message n at index n.
    accepted: [Vec<u8>; 4],
    lagged: u64,
    status_429: u64,
    status_400: u64,
    heartbeats: u64,
}

/// Totals at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Distinct valid messages accepted, per source (in [`Source::ALL`] order).
    pub delivered: [u64; 4],
    /// Acceptances beyond the first, all sources.
    pub duplicates: u64,
    pub lagged: u64,
    pub status_429: u64,
    pub status_400: u64,
    pub heartbeats: u64,
}

impl Totals {
    pub fn delivered_total(&self) -> u64 {
        self.delivered.iter().sum()
    }
}

#[derive(Clone, Default)]
pub struct Tally {
    counts: Arc<Mutex<Counts>>,
}

impl Tally {
    /// Subscribes to `stand_in`'s feed and clears its log every [`CLEAR_EVERY`].
    pub fn start(stand_in: Arc<StandIn>) -> (Tally, JoinHandle<()>) {
        let tally = Tally::default();
        let mut feed = stand_in.subscribe();
        let counts = Arc::clone(&tally.counts);
        let task = tokio::spawn(async move {
            let mut clear = tokio::time::interval(CLEAR_EVERY);
            loop {
                tokio::select! {
                    received = feed.recv() => match received {
                        Ok(request) => record(&counts, &request),
                        Err(RecvError::Lagged(n)) => lock(&counts).lagged += n,
                        Err(RecvError::Closed) => break,
                    },
                    _ = clear.tick() => stand_in.clear(),
                }
            }
        });
        (tally, task)
    }

    pub fn totals(&self) -> Totals {
        let counts = lock(&self.counts);
        let mut totals = Totals {
            lagged: counts.lagged,
            status_429: counts.status_429,
            status_400: counts.status_400,
            heartbeats: counts.heartbeats,
            ..Totals::default()
        };
        for (i, accepted) in counts.accepted.iter().enumerate() {
            totals.delivered[i] = accepted.iter().filter(|c| **c > 0).count() as u64;
            totals.duplicates += accepted
                .iter()
                .map(|c| u64::from(c.saturating_sub(1)))
                .sum::<u64>();
        }
        totals
    }

    /// The valid messages of `source` among `expected` that never arrived.
    pub fn missing(&self, source: Source, expected: impl Iterator<Item = u64>) -> Vec<u64> {
        let counts = lock(&self.counts);
        let accepted = &counts.accepted[source.index()];
        expected
            .filter(|n| accepted.get(*n as usize).copied().unwrap_or(0) == 0)
            .collect()
    }
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record(counts: &Mutex<Counts>, request: &RecordedRequest) {
    let mut counts = lock(counts);
    match request.status {
        429 => counts.status_429 += 1,
        400 => counts.status_400 += 1,
        _ => {}
    }
    if !(200..300).contains(&request.status) {
        return;
    }
    if matches!(
        request.kind,
        RequestKind::HeartbeatPing | RequestKind::HeartbeatLegacy
    ) {
        counts.heartbeats += 1;
        return;
    }
    let details = request.json.as_ref().and_then(|j| j.get("customDetails"));
    let source = details
        .and_then(|d| d.get("soak"))
        .and_then(|s| s.as_str())
        .and_then(Source::from_name);
    let id = details.and_then(|d| d.get("id")).and_then(|i| i.as_u64());
    if let (Some(source), Some(id)) = (source, id) {
        let accepted = &mut counts.accepted[source.index()];
        let id = id as usize;
        if accepted.len() <= id {
            accepted.resize(id + 1, 0);
        }
        accepted[id] = accepted[id].saturating_add(1);
    }
}
