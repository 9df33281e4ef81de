//! Route: which kind of message a topic carries, from the `-e`, `-r` and `--policy_topic`
//! flags. Kafka topics match by name; MQTT topics match the subscribed filters, with `+`
//! and `#` wildcards.
//!
//! When a topic matches several filters (`-e '#' -r 'ilert/heartbeats'`, the sample
//! command of ilagent's documentation), the kind decides as in ilagent 0.9: heartbeat
//! filters win, then policy filters, then event filters; among filters of one kind the
//! most specific wins (more exact levels, then fewer wildcards), then the first given.

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
    /// `None`: a topic only configured routes consume ([`crate::routes`] decides).
    rules: Vec<(String, Option<MessageKind>)>,
    syntax: TopicSyntax,
}

impl Routes {
    pub fn new(topics: &Topics, syntax: TopicSyntax) -> Self {
        let rules = topics
            .events
            .iter()
            .map(|t| (t.clone(), Some(MessageKind::Event)))
            .chain(
                topics
                    .heartbeats
                    .iter()
                    .map(|t| (t.clone(), Some(MessageKind::Heartbeat))),
            )
            .chain(
                topics
                    .policies
                    .iter()
                    .map(|t| (t.clone(), Some(MessageKind::Policy))),
            )
            .chain(topics.routed.iter().map(|t| (t.clone(), None)))
            .collect();
        Routes { rules, syntax }
    }

    /// Every configured topic or filter, once. An MQTT filter that another configured
    /// filter covers (`ilert/heartbeats` under `#`) is left out: a broker delivers a message
    /// once per matching subscription, so overlapping filters would deliver it twice. The
    /// routing still knows every filter, so the covered one still decides the kind.
    pub fn subscriptions(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = Vec::new();
        for (topic, _) in &self.rules {
            if !topics.contains(&topic.as_str()) {
                topics.push(topic);
            }
        }
        if self.syntax == TopicSyntax::Mqtt {
            let all = topics.clone();
            topics.retain(|filter| {
                !all.iter().any(|other| {
                    other != filter
                        && mqtt_filter_covers(other, filter)
                        // Of two filters that cover each other, the first given stays.
                        && !(mqtt_filter_covers(filter, other)
                            && all.iter().position(|t| t == filter) < all.iter().position(|t| t == other))
                })
            });
        }
        topics
    }

    /// The kind of the rule that wins for `topic` (see the module docs).
    pub fn kind_of(&self, topic: &str) -> Option<MessageKind> {
        self.rule_for(topic).and_then(|(_, kind)| kind)
    }

    /// The topic or filter of the rule that wins for `topic`, as configured: a label of
    /// bounded cardinality for metrics, whatever concrete topics a wildcard brings.
    pub fn filter_of(&self, topic: &str) -> Option<&str> {
        self.rule_for(topic).map(|(pattern, _)| pattern)
    }

    fn rule_for(&self, topic: &str) -> Option<(&str, Option<MessageKind>)> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, (pattern, _))| match self.syntax {
                TopicSyntax::Kafka => pattern == topic,
                TopicSyntax::Mqtt => mqtt_filter_matches(pattern, topic),
            })
            // Highest precedence first; among equals, the earliest rule.
            .min_by_key(|(index, (pattern, kind))| {
                let (exact, wildcards) = specificity(pattern);
                (
                    kind_rank(*kind),
                    std::cmp::Reverse(exact),
                    wildcards,
                    *index,
                )
            })
            .map(|(_, (pattern, kind))| (pattern.as_str(), *kind))
    }
}

/// Heartbeats first, then policy updates, then events (ilagent 0.9's order), then the
/// topics of configured routes alone.
fn kind_rank(kind: Option<MessageKind>) -> u8 {
    match kind {
        Some(MessageKind::Heartbeat) => 0,
        Some(MessageKind::Policy) => 1,
        Some(MessageKind::Event) => 2,
        None => 3,
    }
}

/// (exact levels, wildcard levels) of a filter, shared-subscription prefix ignored.
fn specificity(filter: &str) -> (usize, usize) {
    let filter = filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/').map(|(_, f)| f))
        .unwrap_or(filter);
    filter
        .split('/')
        .fold((0, 0), |(exact, wild), level| match level {
            "+" | "#" => (exact, wild + 1),
            _ => (exact + 1, wild),
        })
}

/// Whether every topic that `inner` matches is matched by `outer` too (both MQTT filters,
/// shared-subscription prefixes ignored, and only when both share one: a shared and a
/// plain subscription are different subscriptions at the broker).
pub fn mqtt_filter_covers(outer: &str, inner: &str) -> bool {
    let group = |f: &str| {
        f.strip_prefix("$share/")
            .and_then(|r| r.split_once('/').map(|(g, _)| g.to_string()))
    };
    if group(outer) != group(inner) {
        return false;
    }
    let strip = |f: &str| -> String {
        f.strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/').map(|(_, f)| f.to_string()))
            .unwrap_or_else(|| f.to_string())
    };
    let (outer, inner) = (strip(outer), strip(inner));
    // Wildcards at the first level do not reach topics starting with `$`.
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut inner_levels = inner.split('/');
    for part in outer.split('/') {
        let Some(level) = inner_levels.next() else {
            // `a/#` also matches `a` itself.
            return part == "#";
        };
        match (part, level) {
            ("#", _) => return true,
            (_, "#") => return false,
            ("+", _) => {}
            (exact, level) if exact == level => {}
            _ => return false,
        }
    }
    inner_levels.next().is_none()
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
    fn heartbeat_topics_win_over_policy_topics_over_event_topics_as_in_ilagent_0_9() {
        // The sample command of the MQTT documentation: `-e '#' -r 'ilert/heartbeats'`.
        let topics = Topics {
            events: vec!["#".into()],
            heartbeats: vec!["ilert/heartbeats".into()],
            policies: vec!["ilert/+/policies".into()],
            routed: vec![],
        };
        let routes = Routes::new(&topics, TopicSyntax::Mqtt);
        assert_eq!(
            routes.kind_of("ilert/heartbeats"),
            Some(MessageKind::Heartbeat)
        );
        assert_eq!(
            routes.kind_of("ilert/ops/policies"),
            Some(MessageKind::Policy)
        );
        assert_eq!(routes.kind_of("ilert/events"), Some(MessageKind::Event));
        // Even a wildcard heartbeat filter wins over an exact event filter.
        let topics = Topics {
            events: vec!["plant/7/alarm".into()],
            heartbeats: vec!["plant/#".into()],
            policies: vec![],
            routed: vec![],
        };
        let routes = Routes::new(&topics, TopicSyntax::Mqtt);
        assert_eq!(
            routes.kind_of("plant/7/alarm"),
            Some(MessageKind::Heartbeat)
        );
        assert_eq!(routes.kind_of("other"), None);
    }

    #[test]
    fn filters_that_another_filter_covers_are_not_subscribed_twice() {
        assert!(mqtt_filter_covers("#", "ilert/heartbeats"));
        assert!(mqtt_filter_covers("ilert/+", "ilert/events"));
        assert!(mqtt_filter_covers("ilert/#", "ilert/+/x"));
        assert!(mqtt_filter_covers("ilert/#", "ilert"));
        assert!(!mqtt_filter_covers("ilert/+", "ilert/#"));
        assert!(!mqtt_filter_covers("ilert/+", "ilert/a/b"));
        assert!(!mqtt_filter_covers("#", "$SYS/broker"));
        assert!(!mqtt_filter_covers("$share/g/#", "ilert/x"));
        assert!(mqtt_filter_covers("$share/g/#", "$share/g/ilert/x"));
        // The documentation's commands: `-e '#' -r 'ilert/heartbeats'`, `-e 'ilert/+' -e '#'`.
        let sample = Routes::new(
            &Topics {
                events: vec!["#".into()],
                heartbeats: vec!["ilert/heartbeats".into()],
                policies: vec![],
                routed: vec![],
            },
            TopicSyntax::Mqtt,
        );
        assert_eq!(sample.subscriptions(), vec!["#"]);
        assert_eq!(
            sample.kind_of("ilert/heartbeats"),
            Some(MessageKind::Heartbeat)
        );
        let wildcards = Routes::new(
            &Topics {
                events: vec!["ilert/+".into(), "#".into(), "#".into()],
                ..Topics::default()
            },
            TopicSyntax::Mqtt,
        );
        assert_eq!(wildcards.subscriptions(), vec!["#"]);
        let kafka = Routes::new(
            &Topics {
                events: vec!["a".into(), "b".into()],
                ..Topics::default()
            },
            TopicSyntax::Kafka,
        );
        assert_eq!(kafka.subscriptions(), vec!["a", "b"]);
    }

    #[test]
    fn among_filters_of_one_kind_the_most_specific_is_preferred() {
        assert!(specificity("plant/+/alarm") > specificity("plant/#"));
        assert!(specificity("$share/g/a/b") == specificity("a/b"));
        assert_eq!(specificity("#"), (0, 1));
    }

    #[test]
    fn kafka_topics_match_by_name() {
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
