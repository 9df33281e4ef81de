//! The `order_key` column: which queued rows must be delivered one after the other.
//!
//! It is the pipeline's [`OrderKey`] of the row's action, written as a stable hash so the
//! column holds no integration key in clear and keeps its meaning across upgrades (std's
//! hasher may change between Rust releases; FNV-1a does not). Two keys that collide only
//! share a queue, which costs parallelism, never order.

use crate::action::Action;
use crate::pipeline::OrderKey;

/// The column value for `action`; `None` for actions with no ordering constraint.
pub fn order_key_column(action: &Action) -> Option<String> {
    let mut hash = Fnv1a::new();
    match OrderKey::of(action, 0) {
        OrderKey::Alert {
            integration_key,
            alert_key,
        } => {
            hash.write(b"alert\0");
            hash.write(integration_key.as_bytes());
            hash.write(b"\0");
            hash.write(alert_key.as_bytes());
        }
        OrderKey::Heartbeat(key) => {
            hash.write(b"heartbeat\0");
            hash.write(key.as_bytes());
        }
        OrderKey::PolicyLevel { routing_key, level } => {
            hash.write(b"policy\0");
            hash.write(routing_key.as_bytes());
            hash.write(b"\0");
            hash.write(&level.to_le_bytes());
        }
        OrderKey::Unordered(_) => return None,
    }
    Some(format!("{:016x}", hash.0))
}

struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ilert::{Event, EventType};
    use crate::secret::Secret;

    fn event(key: &str, alert_key: Option<&str>) -> Action {
        let mut event = Event::new(Secret::new(key), EventType::Alert);
        event.alert_key = alert_key.map(str::to_string);
        Action::Event(Box::new(event))
    }

    #[test]
    fn the_column_follows_the_pipelines_order_key_and_is_stable() {
        let a = order_key_column(&event("k", Some("Disk"))).unwrap();
        assert_eq!(
            Some(a.clone()),
            order_key_column(&event("k", Some(" disk")))
        );
        assert_ne!(
            Some(a.clone()),
            order_key_column(&event("k2", Some("disk")))
        );
        assert_eq!(order_key_column(&event("k", None)), None);
        assert_eq!(order_key_column(&Action::Invalid("x".into())), None);
        assert_eq!(a.len(), 16);
        // FNV-1a of the empty input is its offset basis: the hash does not drift.
        assert_eq!(Fnv1a::new().0, 0xcbf2_9ce4_8422_2325);
    }
}
