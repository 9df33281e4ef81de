//! Which heartbeat keys have a ping in flight, across every source and dispatcher.
//!
//! A ping says "alive now"; while one is on its way (or retrying through an outage), a
//! second ping of the same heartbeat adds nothing, so it is coalesced instead of queued
//! behind the first and the 5/min budget.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub(crate) struct PingsInFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Held while a ping is in flight; dropping it ends the ping.
pub(crate) struct PingGuard {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl PingsInFlight {
    /// Starts a ping of `key`, or `None` if one is already in flight.
    pub fn start(&self, key: &str) -> Option<PingGuard> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.insert(key.to_string()).then(|| PingGuard {
            keys: Arc::clone(&self.keys),
            key: key.to_string(),
        })
    }
}

impl Drop for PingGuard {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_ping_of_a_key_in_flight_is_refused_until_the_first_ends() {
        let pings = PingsInFlight::default();
        let first = pings.start("k");
        assert!(first.is_some());
        assert!(pings.start("k").is_none());
        assert!(pings.start("other").is_some());
        drop(first);
        assert!(pings.start("k").is_some());
    }
}
