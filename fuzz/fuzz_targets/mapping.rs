//! Mapping: a payload and a topic against a set of mapping configurations, routed by topic
//! (Kafka names and MQTT filters) and mapped as each kind of message. Mapping must never
//! panic, and every reason it gives must be printable (no control or bidi characters).
//!
//! Input: byte 0 picks the configuration (128 and above: one built from the topic line,
//! see [`from_topic_line`]), byte 1 the kind (bits 0-1) and the source (bits 2-3); then the
//! topic up to the first `\n`; the rest is the payload.

#![no_main]

use std::sync::{Arc, LazyLock};

use ilagent::action::Action;
use ilagent::config::Topics;
use ilagent::mapping::{self, FieldPath, Filter, MappingConfig, MessageKind, PolicyMapping};
use ilagent::message::{Message, Metadata, SourceKind};
use ilagent::pipeline::{MessageRouter, OrderKey};
use ilagent::queue::order_key_column;
use ilagent::sources::route::{Routes, TopicSyntax, mqtt_filter_matches};
use libfuzzer_sys::fuzz_target;

const KINDS: [MessageKind; 3] = [
    MessageKind::Event,
    MessageKind::Heartbeat,
    MessageKind::Policy,
];
const SOURCES: [SourceKind; 4] = [
    SourceKind::Kafka,
    SourceKind::Mqtt,
    SourceKind::Http,
    SourceKind::Cli,
];

/// Built once, not for every input.
static CONFIGS: LazyLock<Vec<MappingConfig>> = LazyLock::new(configs);

fn configs() -> Vec<MappingConfig> {
    let policy = |fields: &[&str], email: &str, shift: &str, offset: i64| PolicyMapping {
        routing_key_fields: fields.iter().map(|f| f.to_string()).collect(),
        email: FieldPath::new(email),
        shift: FieldPath::new(shift),
        shift_offset: offset,
    };
    vec![
        MappingConfig::default(),
        // --map_key_etype / --map_key_summary / --map_key_alert_key and the value maps.
        MappingConfig {
            event_type_field: FieldPath::new("state"),
            summary_field: FieldPath::new("alarm.text"),
            alert_key_field: FieldPath::new("id"),
            alert_value: Some("firing".into()),
            accept_value: Some("ack".into()),
            resolve_value: Some("ok".into()),
            ..MappingConfig::default()
        },
        // --event_key, --forward_message_payload and a filter on a value.
        MappingConfig {
            event_key: Some("il1api-fixed".into()),
            forward_payload: true,
            filter: Some(Filter {
                key: FieldPath::new("type"),
                value: Some("ALARM".into()),
            }),
            ..MappingConfig::default()
        },
        // A filter on presence only, and one on a number's JSON text.
        MappingConfig {
            filter: Some(Filter {
                key: FieldPath::new("data.enabled"),
                value: None,
            }),
            ..MappingConfig::default()
        },
        MappingConfig {
            filter: Some(Filter {
                key: FieldPath::new("severity"),
                value: Some("2".into()),
            }),
            alert_value: Some("1".into()),
            ..MappingConfig::default()
        },
        // Escalation-policy updates, with offsets at both ends of the range.
        MappingConfig {
            policy: policy(&["team", "site"], "data.email", "data.shift", 0),
            ..MappingConfig::default()
        },
        MappingConfig {
            policy: policy(&["team"], "user.mail", "level", -3),
            ..MappingConfig::default()
        },
        MappingConfig {
            policy: policy(&["a", "b", "c"], "email", "shift", i64::MAX),
            ..MappingConfig::default()
        },
        MappingConfig {
            policy: policy(&[], "e", "s", i64::MIN),
            ..MappingConfig::default()
        },
        // Everything at once, and field names that are odd paths.
        MappingConfig {
            event_key: Some("fixed".into()),
            event_type_field: FieldPath::new("data.shift"),
            summary_field: FieldPath::new("data"),
            alert_key_field: FieldPath::new("a.b.c"),
            alert_value: Some("1".into()),
            filter: Some(Filter {
                key: FieldPath::new("data.email"),
                value: Some("x".into()),
            }),
            forward_payload: true,
            policy: policy(&["team", "site"], "data.email", "data.shift", -3),
            ..MappingConfig::default()
        },
        MappingConfig {
            event_type_field: FieldPath::new(""),
            summary_field: FieldPath::new("."),
            alert_key_field: FieldPath::new("a..b"),
            accept_value: Some(String::new()),
            filter: Some(Filter {
                key: FieldPath::new(".x."),
                value: Some(String::new()),
            }),
            policy: policy(&["", "."], "", ".", 1),
            ..MappingConfig::default()
        },
    ]
}

/// A configuration from the topic line `topic|etype|summary|alert_key|filter_key|filter_value|shift_offset|routing keys,...`
/// (missing parts keep their defaults), so that field names come from the fuzzer too.
fn from_topic_line(line: &str) -> (String, MappingConfig) {
    let mut parts = line.split('|');
    let topic = parts.next().unwrap_or_default().to_string();
    let mut config = MappingConfig::default();
    let text = |p: Option<&str>| p.map(str::to_string);
    if let Some(f) = parts.next() {
        config.event_type_field = FieldPath::new(f);
    }
    if let Some(f) = parts.next() {
        config.summary_field = FieldPath::new(f);
    }
    if let Some(f) = parts.next() {
        config.alert_key_field = FieldPath::new(f);
    }
    if let Some(key) = parts.next() {
        config.filter = Some(Filter {
            key: FieldPath::new(key),
            value: text(parts.next()),
        });
    }
    if let Some(offset) = parts.next() {
        config.policy.shift_offset = offset.parse().unwrap_or_default();
    }
    if let Some(keys) = parts.next() {
        config.policy.routing_key_fields = keys.split(',').map(str::to_string).collect();
    }
    config.alert_value = text(parts.next());
    config.accept_value = text(parts.next());
    config.resolve_value = text(parts.next());
    config.forward_payload = line.len() % 2 == 1;
    (topic, config)
}

fn topics() -> Topics {
    let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    Topics {
        events: list(&["events", "ilert/+/events", "$share/agents/alarms/#"]),
        heartbeats: list(&["heartbeats", "hb/#"]),
        policies: list(&["policies", "shifts/+"]),
        routed: Vec::new(),
    }
}

/// What may reach a log line or a dead letter: nothing that forges or hides text.
fn assert_printable(reason: &str) {
    let bad = reason.chars().find(|&c| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    });
    assert!(bad.is_none(), "unprintable {bad:?} in reason {reason:?}");
}

fn check(action: &Action) {
    match action {
        Action::Invalid(reason) | Action::Skip(reason) => assert_printable(reason),
        Action::Event(event) => {
            let _ = serde_json::to_vec(event);
        }
        Action::Heartbeat(key) => {
            let _ = key.to_string();
        }
        Action::PolicyUpdate(_) => {}
    }
    let _ = order_key_column(action);
    let _ = OrderKey::of(action, 7);
}

fuzz_target!(|data: &[u8]| {
    let [config_byte, kind_byte, rest @ ..] = data else {
        return;
    };
    let (line, payload) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let line = String::from_utf8_lossy(line);
    let (topic, config) = if *config_byte >= 128 {
        from_topic_line(&line)
    } else {
        let config = CONFIGS[usize::from(*config_byte) % CONFIGS.len()].clone();
        (line.into_owned(), config)
    };
    let kind = KINDS[usize::from(kind_byte & 3) % KINDS.len()];
    let source = SOURCES[usize::from((kind_byte >> 2) & 3)];
    let mut meta = Metadata::new(source, topic.clone());
    if source == SourceKind::Kafka {
        meta.partition = Some(i32::from(*kind_byte));
        meta.offset = Some(i64::from(*config_byte) - 1);
        meta.key = Some(topic.clone());
    }
    let _ = meta.to_string();

    // Mapped as the kind the input names.
    let action = mapping::map(payload, &meta, kind, &config);
    check(&action);

    // Routed by the topic, as the brokers' sources do.
    let syntax = if source == SourceKind::Mqtt {
        TopicSyntax::Mqtt
    } else {
        TopicSyntax::Kafka
    };
    let topics = topics();
    for filter in topics
        .events
        .iter()
        .chain(&topics.heartbeats)
        .chain(&topics.policies)
    {
        let _ = mqtt_filter_matches(filter, &topic);
    }
    let router = MessageRouter::by_topic(Routes::new(&topics, syntax), Arc::new(config));
    let message = Message {
        payload: payload.to_vec(),
        meta,
    };
    check(&router.action_for(&message));
});
