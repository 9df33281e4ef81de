//! Route: which kind of message a topic carries, from the `-e`, `-r` and `--policy_topic`
//! flags. Kafka topics match by name; MQTT topics match the subscribed filters, with `+`
//! and `#` wildcards.

use crate::config::Topics;
use crate::mapping::MessageKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicSyntax {
    /// Exact names.
    Kafka,
    /// MQTT topic filters.
    Mqtt,
}

#[derive(Clone, Debug)]
pub struct Routes {
    rules: Vec<(String, MessageKind)>,
    syntax: TopicSyntax,
}

impl Routes {
    pub fn new(topics: &Topics, syntax: TopicSyntax) -> Self {
        let rules = topics
            .events
            .iter()
            .map(|t| (t.clone(), MessageKind::Event))
            .chain(
                topics
                    .heartbeats
                    .iter()
                    .map(|t| (t.clone(), MessageKind::Heartbeat)),
            )
            .chain(
                topics
                    .policies
                    .iter()
                    .map(|t| (t.clone(), MessageKind::Policy)),
            )
            .collect();
        Routes { rules, syntax }
    }

    /// Every configured topic or filter, once.
    pub fn subscriptions(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = Vec::new();
        for (topic, _) in &self.rules {
            if !topics.contains(&topic.as_str()) {
                topics.push(topic);
            }
        }
        topics
    }

    /// The kind of the first rule that matches `topic`.
    pub fn kind_of(&self, topic: &str) -> Option<MessageKind> {
        self.rules
            .iter()
            .find(|(pattern, _)| match self.syntax {
                TopicSyntax::Kafka => pattern == topic,
                TopicSyntax::Mqtt => mqtt_filter_matches(pattern, topic),
            })
            .map(|(_, kind)| *kind)
    }
}

/// MQTT topic filter matching (MQTT 3.1.1 section 4.7), shared-subscription prefix ignored.
pub fn mqtt_filter_matches(filter: &str, topic: &str) -> bool {
    let filter = filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/').map(|(_, f)| f))
        .unwrap_or(filter);
    // Wildcards at the first level do not match topics starting with `$`.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match part {
            "#" => return true,
            "+" => {
                if levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_wildcards_match_like_the_broker() {
        assert!(mqtt_filter_matches("ilert/+", "ilert/events"));
        assert!(!mqtt_filter_matches("ilert/+", "ilert/a/b"));
        assert!(mqtt_filter_matches("ilert/#", "ilert/a/b"));
        assert!(mqtt_filter_matches("ilert/#", "ilert"));
        assert!(mqtt_filter_matches("#", "anything/at/all"));
        assert!(!mqtt_filter_matches("#", "$SYS/broker"));
        assert!(mqtt_filter_matches("$share/g/ilert/+", "ilert/x"));
        assert!(!mqtt_filter_matches("ilert/events", "ilert/events/x"));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let topics = Topics {
            events: vec!["plant/+/alarm".into()],
            heartbeats: vec!["plant/#".into()],
            policies: vec![],
        };
        let routes = Routes::new(&topics, TopicSyntax::Mqtt);
        assert_eq!(routes.kind_of("plant/7/alarm"), Some(MessageKind::Event));
        assert_eq!(
            routes.kind_of("plant/7/alive"),
            Some(MessageKind::Heartbeat)
        );
        assert_eq!(routes.kind_of("other"), None);
        let kafka = Routes::new(
            &Topics {
                events: vec!["e".into()],
                ..Topics::default()
            },
            TopicSyntax::Kafka,
        );
        assert_eq!(kafka.kind_of("e"), Some(MessageKind::Event));
        assert_eq!(kafka.kind_of("e2"), None);
    }
}
