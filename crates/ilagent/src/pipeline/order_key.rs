//! Which messages must reach ilert in the order they arrived.
//!
//! ilert correlates events by alert key within an alert source, so two events with the
//! same (integration key, alert key) must not overtake each other: a RESOLVE delivered
//! before its ALERT would be lost. Everything else is independent and may go in parallel.

use crate::action::Action;

/// The ordering class of one action. Actions with equal keys are delivered one after the
/// other, in submission order; different keys run in parallel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OrderKey {
    /// ilert compares alert keys case-insensitively and trims them; so does this key.
    Alert {
        integration_key: String,
        alert_key: String,
    },
    /// Pings of one heartbeat: sequential, so one key never has two pings in flight.
    Heartbeat(String),
    /// Updates of one level of one escalation policy apply in message order.
    PolicyLevel { routing_key: String, level: u32 },
    /// No ordering constraint (events without an alert key, invalid or skipped messages);
    /// the number only keeps such keys distinct.
    Unordered(u64),
}

impl OrderKey {
    /// The key of `action`; `sequence` must be unique per message (e.g. a counter).
    pub fn of(action: &Action, sequence: u64) -> OrderKey {
        match action {
            Action::Event(event) => match event.alert_key.as_deref().map(str::trim) {
                Some(alert_key) if !alert_key.is_empty() => OrderKey::Alert {
                    integration_key: event.integration_key.expose().to_string(),
                    alert_key: alert_key.to_lowercase(),
                },
                _ => OrderKey::Unordered(sequence),
            },
            Action::Heartbeat(key) => OrderKey::Heartbeat(key.expose().to_string()),
            Action::PolicyUpdate(update) => OrderKey::PolicyLevel {
                routing_key: update.routing_key.clone(),
                level: update.level,
            },
            Action::Skip(_) | Action::Invalid(_) => OrderKey::Unordered(sequence),
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
    fn alert_keys_compare_case_insensitively_and_trimmed_within_one_integration_key() {
        assert_eq!(
            OrderKey::of(&event("k", Some("Disk ")), 1),
            OrderKey::of(&event("k", Some("disk")), 2)
        );
        assert_ne!(
            OrderKey::of(&event("k", Some("disk")), 1),
            OrderKey::of(&event("other", Some("disk")), 2)
        );
    }

    #[test]
    fn events_without_alert_key_are_unordered() {
        assert_ne!(
            OrderKey::of(&event("k", None), 1),
            OrderKey::of(&event("k", None), 2)
        );
        assert_ne!(
            OrderKey::of(&event("k", Some(" ")), 1),
            OrderKey::of(&event("k", Some("")), 2)
        );
    }
}
