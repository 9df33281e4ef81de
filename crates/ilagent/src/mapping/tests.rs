//! Mapping specification: one test per flag and per way a payload can be wrong, and
//! property tests showing that no input makes mapping panic.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::action::{Action, PolicyUpdate};
use crate::ilert::{CustomDetails, Event, EventType, Priority};
use crate::message::{Metadata, SourceKind};

fn kafka_meta() -> Metadata {
    let mut meta = Metadata::new(SourceKind::Kafka, "alarms");
    meta.partition = Some(1);
    meta.offset = Some(42);
    meta.key = Some("machine-7".into());
    meta
}

fn map_event(payload: Value, config: &MappingConfig) -> Action {
    map(
        payload.to_string().as_bytes(),
        &kafka_meta(),
        MessageKind::Event,
        config,
    )
}

fn event(payload: Value, config: &MappingConfig) -> Event {
    match map_event(payload, config) {
        Action::Event(event) => *event,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn invalid_reason(action: Action) -> String {
    match action {
        Action::Invalid(reason) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn defaults() -> MappingConfig {
    MappingConfig::default()
}

// ---- default field names -------------------------------------------------------------

#[test]
fn default_fields_map_to_the_ilert_event() {
    let e = event(
        json!({
            "integrationKey": "il1api123", "eventType": "ALERT", "summary": "disk full",
            "details": "sda1 at 99%", "alertKey": "disk-sda1", "priority": "HIGH", "severity": 2,
            "images": [{"src": "https://i/x.png", "alt": "graph"}],
            "links": [{"href": "https://grafana", "text": "dashboard"}],
            "comments": [{"creator": "ops", "content": "looking"}],
            "labels": {"env": "prod"}, "services": [{"alias": "db", "id": 7}],
            "customDetails": {"host": "db-1"}, "routingKey": "team-db"
        }),
        &defaults(),
    );
    assert_eq!(e.integration_key.expose(), "il1api123");
    assert_eq!(e.event_type, EventType::Alert);
    assert_eq!(e.summary.as_deref(), Some("disk full"));
    assert_eq!(e.details.as_deref(), Some("sda1 at 99%"));
    assert_eq!(e.alert_key.as_deref(), Some("disk-sda1"));
    assert_eq!(e.priority, Some(Priority::High));
    assert_eq!(e.severity, Some(2));
    assert_eq!(e.images[0].alt.as_deref(), Some("graph"));
    assert_eq!(e.links[0].href, "https://grafana");
    assert_eq!(e.comments[0].creator, "ops");
    assert_eq!(e.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(e.services[0].id, Some(7));
    assert_eq!(
        e.custom_details.as_ref().map(CustomDetails::to_map),
        json!({"host": "db-1"}).as_object().cloned()
    );
    assert_eq!(e.routing_key.as_deref(), Some("team-db"));
}

#[test]
fn api_key_is_accepted_as_an_alias_of_integration_key() {
    let e = event(
        json!({"apiKey": "il1api9", "eventType": "RESOLVE"}),
        &defaults(),
    );
    assert_eq!(e.integration_key.expose(), "il1api9");
}

#[test]
fn event_type_and_priority_are_accepted_in_any_case() {
    let e = event(
        json!({"integrationKey": "k", "eventType": "accept", "priority": "low"}),
        &defaults(),
    );
    assert_eq!(e.event_type, EventType::Accept);
    assert_eq!(e.priority, Some(Priority::Low));
}

#[test]
fn a_numeric_alert_key_becomes_text() {
    let e = event(
        json!({"integrationKey": "k", "eventType": "ALERT", "summary": "s", "alertKey": 123}),
        &defaults(),
    );
    assert_eq!(e.alert_key.as_deref(), Some("123"));
}

#[test]
fn missing_alert_summary_becomes_new_alert_from_topic() {
    let e = event(
        json!({"integrationKey": "k", "eventType": "ALERT"}),
        &defaults(),
    );
    assert_eq!(e.summary.as_deref(), Some("New alert from alarms"));
    let resolve = event(
        json!({"integrationKey": "k", "eventType": "RESOLVE"}),
        &defaults(),
    );
    assert_eq!(resolve.summary, None);
}

// ---- one test per mapping flag ---------------------------------------------------------

#[test]
fn map_key_etype_reads_the_event_type_from_a_dot_path() {
    let config = MappingConfig {
        event_type_field: FieldPath::new("state.kind"),
        ..defaults()
    };
    let e = event(
        json!({"integrationKey": "k", "state": {"kind": "RESOLVE"}}),
        &config,
    );
    assert_eq!(e.event_type, EventType::Resolve);
}

#[test]
fn map_key_summary_reads_the_summary_from_a_dot_path() {
    let config = MappingConfig {
        summary_field: FieldPath::new("alarm.text"),
        ..defaults()
    };
    let e = event(
        json!({"integrationKey": "k", "eventType": "ALERT", "alarm": {"text": "pump stopped"}}),
        &config,
    );
    assert_eq!(e.summary.as_deref(), Some("pump stopped"));
}

#[test]
fn map_key_alert_key_reads_the_alert_key_from_a_dot_path() {
    let config = MappingConfig {
        alert_key_field: FieldPath::new("m.code"),
        ..defaults()
    };
    let e = event(
        json!({"integrationKey": "k", "eventType": "RESOLVE", "m": {"code": "P-7"}}),
        &config,
    );
    assert_eq!(e.alert_key.as_deref(), Some("P-7"));
}

#[test]
fn map_val_etype_alert_accept_resolve_translate_custom_values() {
    let config = MappingConfig {
        event_type_field: FieldPath::new("state"),
        alert_value: Some("SET".into()),
        accept_value: Some("ACK".into()),
        resolve_value: Some("CLR".into()),
        ..defaults()
    };
    for (value, expected) in [
        ("SET", EventType::Alert),
        ("ACK", EventType::Accept),
        ("CLR", EventType::Resolve),
    ] {
        let e = event(
            json!({"integrationKey": "k", "state": value, "summary": "s"}),
            &config,
        );
        assert_eq!(e.event_type, expected, "{value}");
    }
    // The standard names still work next to the custom ones.
    assert_eq!(
        event(json!({"integrationKey": "k", "state": "COMMENT"}), &config).event_type,
        EventType::Comment
    );
}

#[test]
fn map_val_etype_matches_numeric_values_by_their_text() {
    let config = MappingConfig {
        event_type_field: FieldPath::new("state"),
        alert_value: Some("1".into()),
        resolve_value: Some("0".into()),
        ..defaults()
    };
    assert_eq!(
        event(json!({"integrationKey": "k", "state": 0}), &config).event_type,
        EventType::Resolve
    );
}

#[test]
fn event_key_overrides_the_payload_integration_key() {
    let config = MappingConfig {
        event_key: Some("il1api-fixed".into()),
        ..defaults()
    };
    let e = event(
        json!({"integrationKey": "other", "eventType": "RESOLVE"}),
        &config,
    );
    assert_eq!(e.integration_key.expose(), "il1api-fixed");
    let e = event(json!({"eventType": "RESOLVE"}), &config);
    assert_eq!(e.integration_key.expose(), "il1api-fixed");
}

#[test]
fn filter_key_skips_messages_without_the_field() {
    let config = MappingConfig {
        filter: Some(Filter {
            key: FieldPath::new("meta.type"),
            value: None,
        }),
        ..defaults()
    };
    let payload = json!({"integrationKey": "k", "eventType": "ALERT"});
    assert!(
        matches!(map_event(payload, &config), Action::Skip(reason) if reason.contains("meta.type"))
    );
    let payload = json!({"integrationKey": "k", "eventType": "ALERT", "meta": {"type": "x"}});
    assert!(matches!(map_event(payload, &config), Action::Event(_)));
}

#[test]
fn filter_val_skips_messages_with_another_value() {
    let config = MappingConfig {
        filter: Some(Filter {
            key: FieldPath::new("type"),
            value: Some("ALARM".into()),
        }),
        ..defaults()
    };
    let other = json!({"integrationKey": "k", "eventType": "ALERT", "type": "INFO"});
    assert!(matches!(map_event(other, &config), Action::Skip(reason) if reason.contains("INFO")));
    let matching = json!({"integrationKey": "k", "eventType": "ALERT", "type": "ALARM"});
    assert!(matches!(map_event(matching, &config), Action::Event(_)));
}

#[test]
fn filter_val_matches_non_string_values_by_their_json_text() {
    let config = MappingConfig {
        filter: Some(Filter {
            key: FieldPath::new("active"),
            value: Some("true".into()),
        }),
        ..defaults()
    };
    let yes = json!({"integrationKey": "k", "eventType": "ALERT", "active": true});
    assert!(matches!(map_event(yes, &config), Action::Event(_)));
    let no = json!({"integrationKey": "k", "eventType": "ALERT", "active": false});
    assert!(matches!(map_event(no, &config), Action::Skip(_)));
    let number = MappingConfig {
        filter: Some(Filter {
            key: FieldPath::new("level"),
            value: Some("3".into()),
        }),
        ..defaults()
    };
    let three = json!({"integrationKey": "k", "eventType": "ALERT", "level": 3});
    assert!(matches!(map_event(three, &number), Action::Event(_)));
}

#[test]
fn forward_message_payload_puts_the_whole_payload_in_custom_details() {
    let config = MappingConfig {
        forward_payload: true,
        ..defaults()
    };
    let payload =
        json!({"integrationKey": "k", "eventType": "ALERT", "summary": "s", "temp": 81.5});
    let e = event(payload.clone(), &config);
    assert_eq!(
        e.custom_details.as_ref().map(CustomDetails::to_map),
        payload.as_object().cloned()
    );
}

#[test]
fn without_forwarding_custom_details_carry_the_message_metadata() {
    let e = event(
        json!({"integrationKey": "k", "eventType": "ALERT", "summary": "s"}),
        &defaults(),
    );
    // `messageKey` as in ilagent 0.9; partition and offset are additions.
    assert_eq!(
        e.custom_details.as_ref().map(CustomDetails::to_map),
        json!({"topic": "alarms", "partition": 1, "offset": 42, "messageKey": "machine-7"})
            .as_object()
            .cloned()
    );
}

#[test]
fn with_forwarding_a_payloads_own_custom_details_win_as_in_ilagent_0_9() {
    let config = MappingConfig {
        forward_payload: true,
        ..defaults()
    };
    let e = event(
        json!({"integrationKey": "k", "eventType": "ALERT", "summary": "s",
               "customDetails": {"line": 4}, "temp": 81.5}),
        &config,
    );
    assert_eq!(
        e.custom_details.as_ref().map(CustomDetails::to_map),
        json!({"line": 4}).as_object().cloned()
    );
}

#[test]
fn events_from_the_http_proxy_get_no_metadata_details() {
    let meta = Metadata::new(SourceKind::Http, "/api/events");
    let payload = json!({"integrationKey": "k", "eventType": "ALERT", "summary": "s"});
    let Action::Event(e) = map(
        payload.to_string().as_bytes(),
        &meta,
        MessageKind::Event,
        &defaults(),
    ) else {
        panic!("expected an event")
    };
    assert_eq!(e.custom_details, None);
}

// ---- heartbeats and policy updates ---------------------------------------------------

#[test]
fn heartbeat_messages_carry_the_key_in_integration_key_or_api_key() {
    for payload in [
        json!({"integrationKey": "il1hbt1"}),
        json!({"apiKey": "il1hbt1"}),
    ] {
        let action = map(
            payload.to_string().as_bytes(),
            &kafka_meta(),
            MessageKind::Heartbeat,
            &defaults(),
        );
        assert_eq!(action, Action::Heartbeat("il1hbt1".into()));
    }
    let action = map(b"{}", &kafka_meta(), MessageKind::Heartbeat, &defaults());
    assert!(invalid_reason(action).contains("missing heartbeat key"));
    let action = map(
        br#"{"integrationKey": 5}"#,
        &kafka_meta(),
        MessageKind::Heartbeat,
        &defaults(),
    );
    assert!(invalid_reason(action).contains("must be a non-empty string"));
}

fn policy_config(offset: i64) -> MappingConfig {
    MappingConfig {
        policy: PolicyMapping {
            routing_key_fields: vec!["team".into(), "site".into()],
            shift_offset: offset,
            ..PolicyMapping::default()
        },
        ..defaults()
    }
}

fn map_policy(payload: Value, config: &MappingConfig) -> Action {
    map(
        payload.to_string().as_bytes(),
        &kafka_meta(),
        MessageKind::Policy,
        config,
    )
}

#[test]
fn policy_updates_concatenate_routing_fields_and_add_the_shift_offset() {
    let payload = json!({"team": "ops", "site": 7, "data": {"email": "a@b.c", "shift": "2"}});
    assert_eq!(
        map_policy(payload.clone(), &policy_config(0)),
        Action::PolicyUpdate(PolicyUpdate {
            email: "a@b.c".into(),
            routing_key: "ops7".into(),
            level: 2
        })
    );
    let Action::PolicyUpdate(update) = map_policy(payload, &policy_config(-1)) else {
        panic!()
    };
    assert_eq!(update.level, 1);
    let numeric = json!({"team": "ops", "site": "x", "data": {"email": "a@b.c", "shift": 0}});
    let Action::PolicyUpdate(update) = map_policy(numeric, &policy_config(-1)) else {
        panic!()
    };
    assert_eq!(update.level, 0, "the level never goes below 0");
}

#[test]
fn policy_updates_with_missing_or_wrong_fields_are_invalid() {
    let config = policy_config(0);
    let missing_team = json!({"site": "x", "data": {"email": "a@b.c", "shift": 1}});
    assert!(invalid_reason(map_policy(missing_team, &config)).contains("`team`"));
    let missing_email = json!({"team": "t", "site": "x", "data": {"shift": 1}});
    assert!(invalid_reason(map_policy(missing_email, &config)).contains("missing email"));
    let no_shift = json!({"team": "t", "site": "x", "data": {"email": "a@b.c"}});
    match map_policy(no_shift, &config) {
        Action::PolicyUpdate(update) => assert_eq!(update.level, 0, "no shift means shift 0"),
        other => panic!("expected a policy update, got {other:?}"),
    }
    let bad_shift = json!({"team": "t", "site": "x", "data": {"email": "a@b.c", "shift": "late"}});
    assert!(invalid_reason(map_policy(bad_shift, &config)).contains("shift"));
}

// ---- every way a payload can be wrong --------------------------------------------------

#[test]
fn payload_that_is_not_utf8_is_invalid() {
    let reason = invalid_reason(map(
        &[0x7b, 0xff, 0xfe],
        &kafka_meta(),
        MessageKind::Event,
        &defaults(),
    ));
    assert!(reason.contains("not UTF-8"), "{reason}");
}

#[test]
fn payload_that_is_not_json_is_invalid() {
    let reason = invalid_reason(map(
        b"{\"eventType\": ",
        &kafka_meta(),
        MessageKind::Event,
        &defaults(),
    ));
    assert!(reason.contains("not valid JSON"), "{reason}");
}

#[test]
fn empty_payload_is_invalid() {
    let reason = invalid_reason(map(b"  ", &kafka_meta(), MessageKind::Event, &defaults()));
    assert!(reason.contains("empty"), "{reason}");
}

#[test]
fn payload_that_is_not_an_object_is_invalid() {
    for (payload, kind) in [
        ("[1,2]", "an array"),
        ("\"text\"", "a string"),
        ("42", "a number"),
        ("null", "null"),
    ] {
        let reason = invalid_reason(map(
            payload.as_bytes(),
            &kafka_meta(),
            MessageKind::Event,
            &defaults(),
        ));
        assert!(reason.contains(kind), "{payload}: {reason}");
    }
}

#[test]
fn missing_integration_key_is_invalid_and_names_the_fix() {
    let reason = invalid_reason(map_event(json!({"eventType": "ALERT"}), &defaults()));
    assert!(
        reason.contains("integrationKey") && reason.contains("--event_key"),
        "{reason}"
    );
}

#[test]
fn a_broker_message_without_an_event_type_is_an_alert_as_in_ilagent_0_9() {
    let e = event(
        json!({"integrationKey": "k", "summary": "pump 3 stopped"}),
        &defaults(),
    );
    assert_eq!(e.event_type, EventType::Alert);
    assert_eq!(e.summary.as_deref(), Some("pump 3 stopped"));
}

#[test]
fn an_http_proxy_event_without_an_event_type_is_invalid_as_ilerts_api_says() {
    let action = map(
        json!({"integrationKey": "k", "summary": "s"})
            .to_string()
            .as_bytes(),
        &Metadata::new(SourceKind::Http, "/api/events"),
        MessageKind::Event,
        &defaults(),
    );
    let reason = invalid_reason(action);
    assert!(reason.starts_with("field `eventType`"), "{reason}");
}

#[test]
fn a_mapped_field_the_payload_lacks_falls_back_to_the_default_field() {
    let config = MappingConfig {
        event_type_field: FieldPath::new("state"),
        summary_field: FieldPath::new("text"),
        alert_key_field: FieldPath::new("machine"),
        ..defaults()
    };
    // None of the mapped fields is there: the ilert schema's own names are used.
    let e = event(
        json!({"integrationKey": "k", "eventType": "RESOLVE", "summary": "ok again", "alertKey": "m7"}),
        &config,
    );
    assert_eq!(e.event_type, EventType::Resolve);
    assert_eq!(e.summary.as_deref(), Some("ok again"));
    assert_eq!(e.alert_key.as_deref(), Some("m7"));
    // The mapped fields win where they are there.
    let e = event(
        json!({"integrationKey": "k", "state": "ACCEPT", "eventType": "RESOLVE",
               "text": "mapped", "summary": "default", "machine": "m8", "alertKey": "m7"}),
        &config,
    );
    assert_eq!(e.event_type, EventType::Accept);
    assert_eq!(e.summary.as_deref(), Some("mapped"));
    assert_eq!(e.alert_key.as_deref(), Some("m8"));
}

#[test]
fn an_unknown_event_type_names_the_field_first() {
    let reason = invalid_reason(map_event(
        json!({"integrationKey": "k", "eventType": "CLOSE"}),
        &defaults(),
    ));
    assert!(
        reason.starts_with("field `eventType`: unknown event type `CLOSE`"),
        "{reason}"
    );
}

#[test]
fn unknown_event_type_is_invalid_and_names_the_mapping_flags() {
    let reason = invalid_reason(map_event(
        json!({"integrationKey": "k", "eventType": "CLOSE"}),
        &defaults(),
    ));
    assert!(
        reason.contains("CLOSE") && reason.contains("--map_val_etype_alert"),
        "{reason}"
    );
}

#[test]
fn unknown_priority_is_invalid() {
    let reason = invalid_reason(map_event(
        json!({"integrationKey": "k", "eventType": "ALERT", "priority": "URGENT"}),
        &defaults(),
    ));
    assert!(
        reason.contains("priority") && reason.contains("URGENT"),
        "{reason}"
    );
}

#[test]
fn wrong_types_are_invalid_and_name_the_field() {
    let cases = [
        (
            json!({"integrationKey": 7, "eventType": "ALERT"}),
            "integrationKey",
        ),
        (
            json!({"integrationKey": "k", "eventType": ["ALERT"]}),
            "eventType",
        ),
        (
            json!({"integrationKey": "k", "eventType": "ALERT", "summary": {"a": 1}}),
            "summary",
        ),
        (
            json!({"integrationKey": "k", "eventType": "ALERT", "severity": 9}),
            "severity",
        ),
        (
            json!({"integrationKey": "k", "eventType": "ALERT", "images": "x.png"}),
            "images",
        ),
        (
            json!({"integrationKey": "k", "eventType": "ALERT", "links": [{"text": "no href"}]}),
            "links",
        ),
        (
            json!({"integrationKey": "k", "eventType": "ALERT", "labels": {"a": [1]}}),
            "label `a`",
        ),
        (
            json!({"integrationKey": "k", "eventType": "ALERT", "customDetails": "x"}),
            "customDetails",
        ),
        (json!({"integrationKey": "", "eventType": "ALERT"}), "empty"),
    ];
    for (payload, field) in cases {
        let reason = invalid_reason(map_event(payload.clone(), &defaults()));
        assert!(reason.contains(field), "{payload}: {reason}");
    }
}

// ---- mapping never panics --------------------------------------------------------------

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("ALERT".to_string()),
            Just("RESOLVE".to_string()),
            Just("HIGH".to_string()),
            ".*"
        ]
        .prop_map(Value::from),
    ];
    let names = prop_oneof![
        Just("integrationKey".to_string()),
        Just("apiKey".to_string()),
        Just("eventType".to_string()),
        Just("summary".to_string()),
        Just("priority".to_string()),
        Just("severity".to_string()),
        Just("images".to_string()),
        Just("links".to_string()),
        Just("labels".to_string()),
        Just("customDetails".to_string()),
        Just("data".to_string()),
        Just("email".to_string()),
        Just("shift".to_string()),
        "[a-z.]{0,6}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(names.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn all_configs() -> Vec<MappingConfig> {
    vec![
        defaults(),
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
            ..policy_config(-3)
        },
    ]
}

proptest! {
    #[test]
    fn mapping_never_panics_on_arbitrary_bytes(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        for config in all_configs() {
            for kind in [MessageKind::Event, MessageKind::Heartbeat, MessageKind::Policy] {
                let _ = map(&payload, &kafka_meta(), kind, &config);
            }
        }
    }

    #[test]
    fn mapping_never_panics_on_arbitrary_json(value in arbitrary_json()) {
        let payload = value.to_string();
        for config in all_configs() {
            for kind in [MessageKind::Event, MessageKind::Heartbeat, MessageKind::Policy] {
                let _ = map(payload.as_bytes(), &kafka_meta(), kind, &config);
            }
        }
    }
}
