//! What one chaos run found, and its figure line:
//!
//! ```text
//! chaos kafka kill-loop: sent 1500, delivered 1500, missing 0, duplicates 12, order violations 0, kills 3, crashes 0 (9.8 s) ok
//! ```
//!
//! Definitions are the benchmark's ([`bench::report`]): `delivered` counts distinct events
//! ilert accepted, `duplicates` further accepted copies, `order violations` first arrivals
//! of a key whose sequence number is below an earlier first arrival of the same key. A run
//! fails on any missing event, order violation, crash, or dead letter count that is not
//! the corpus's.

use std::fmt;
use std::time::Duration;

use ilert_standin::RecordedRequest;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub source: String,
    pub fault: String,
    pub sent: usize,
    pub delivered: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub order_violations: usize,
    pub status_429: usize,
    pub kills: usize,
    pub crashes: usize,
    /// Malformed messages sent, and those set aside with a reason (dead letters, or a 4xx
    /// answer from the proxy).
    pub malformed: Option<usize>,
    pub set_aside: Option<usize>,
    pub seconds: f64,
    /// Why the run could not run to the end (it then fails).
    pub error: Option<String>,
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn new(source: &str, fault: &str) -> Outcome {
        Outcome {
            source: source.to_string(),
            fault: fault.to_string(),
            ..Outcome::default()
        }
    }

    /// Fills the delivery figures from what ilert received.
    pub fn count(&mut self, sent: usize, requests: &[RecordedRequest]) {
        let row = bench::report::analyse(&self.fault, sent, requests, 0);
        self.sent = sent;
        self.delivered = row.messages;
        self.missing = row.missing;
        self.duplicates = row.duplicates;
        self.order_violations = row.order_violations;
        self.status_429 = row.status_429;
    }

    pub fn took(&mut self, elapsed: Duration) {
        self.seconds = elapsed.as_secs_f64();
    }

    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.missing == 0
            && self.order_violations == 0
            && self.crashes == 0
            && self.malformed == self.set_aside
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos {} {}: sent {}, delivered {}, missing {}, duplicates {}, order violations {}, \
             429s {}, kills {}, crashes {}",
            self.source,
            self.fault,
            self.sent,
            self.delivered,
            self.missing,
            self.duplicates,
            self.order_violations,
            self.status_429,
            self.kills,
            self.crashes
        )?;
        if let (Some(malformed), Some(set_aside)) = (self.malformed, self.set_aside) {
            write!(f, ", malformed {malformed}, set aside {set_aside}")?;
        }
        write!(f, " ({:.1} s) ", self.seconds)?;
        match &self.error {
            Some(error) => write!(f, "FAILED: {error}"),
            None if self.passed() => f.write_str("ok"),
            None => f.write_str("FAILED"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_fails_on_any_loss_order_violation_crash_or_malformed_message_kept() {
        let clean = || Outcome::new("kafka", "kill-loop");
        assert!(clean().passed());
        let mut lost = clean();
        lost.missing = 1;
        let mut reordered = clean();
        reordered.order_violations = 1;
        let mut crashed = clean();
        crashed.crashes = 1;
        let mut kept = clean();
        (kept.malformed, kept.set_aside) = (Some(10), Some(9));
        let mut broken = clean();
        broken.error = Some("the broker did not start".into());
        for outcome in [lost, reordered, crashed, kept, broken] {
            assert!(!outcome.passed(), "{outcome}");
            assert!(outcome.to_string().contains("FAILED"), "{outcome}");
        }
        let mut duplicated = clean();
        duplicated.duplicates = 300;
        assert!(duplicated.passed(), "duplicates are allowed: at least once");
    }
}
