//! Hostile payloads through the routes of every example file: whatever the bytes, routing
//! and mapping return an action (never a panic).

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;

use super::RouteTable;
use crate::config::file::ConfigFile;
use crate::mapping::MappingConfig;
use crate::message::{Message, Metadata};

/// Every example's routes, with its `env:` references replaced by a literal (the
/// examples read their keys from the environment).
fn example_tables() -> Vec<RouteTable> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let scratch = tempfile::tempdir().unwrap();
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let text = regex_free_env_replace(&text);
        let copy = scratch.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        let file = ConfigFile::read(&copy).unwrap();
        tables.push(RouteTable::of_file(&file, &MappingConfig::default()).unwrap());
    }
    assert!(tables.len() >= 3, "examples not found");
    tables
}

/// `"env:NAME"` becomes `'"il1api-property-test"'`.
fn regex_free_env_replace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\"env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('"').map_or(after.len(), |e| e + 1);
        // A TOML literal string holding a jq string: a constant expression in a route.
        out.push_str("'\"il1api-property-test\"'");
        rest = after.get(end..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

static EXAMPLES: std::sync::LazyLock<Vec<RouteTable>> = std::sync::LazyLock::new(example_tables);

pub(super) fn json() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "state",
        "machine",
        "code",
        "text",
        "severity",
        "status",
        "labels",
        "alertname",
        "annotations",
        "summary",
        "fingerprint",
        "onCall",
        "email",
        "shift",
        "team",
        "site",
        "generatorURL",
        "x",
        "eventType",
        "alertKey",
        "customDetails",
        "key",
        "seq",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "ACK", "CLEARED", "RAISED", "firing", "resolved", "Watchdog"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn hostile_payloads_through_every_example_route_never_panic(
        value in json(),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        raw in any::<bool>(),
    ) {
        let payload = if raw { bytes } else { value.to_string().into_bytes() };
        for table in EXAMPLES.iter() {
            for route in table.routes() {
                for topic in route.topics() {
                    let topic = topic.replace(['+', '#'], "x");
                    let message = Message {
                        payload: payload.clone(),
                        meta: Metadata::new(route.source(), topic),
                    };
                    let _ = table.route(&message);
                }
            }
        }
    }
}

/// The routes of `text`, a configuration file.
fn table_of(text: &str) -> RouteTable {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ilagent.toml");
    std::fs::write(&path, text).unwrap();
    let file = ConfigFile::read(&path).unwrap();
    RouteTable::of_file(&file, &MappingConfig::default()).unwrap()
}

fn dedupe_of(table: &RouteTable, payload: &str) -> Result<Option<String>, String> {
    match action_of(table, payload.as_bytes().to_vec()) {
        crate::action::Action::Event(event) => Ok(event.dedupe.map(|d| {
            assert_eq!(&*d.scope, "orders");
            d.id.to_string()
        })),
        crate::action::Action::Invalid(reason) => Err(reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dedupe_expression_gives_each_event_its_id_and_without_a_usable_one_it_is_delivered_unchecked()
{
    let table = table_of(
        r#"
[[route]]
name = "orders"
source = "kafka"
topics = ["orders"]
dedupe = ".id"
dedupe_window = "10m"
[route.fields]
integration_key = '"il1api-orders"'
summary = '"order"'
"#,
    );
    assert_eq!(
        dedupe_of(&table, r#"{"id": "o-1"}"#),
        Ok(Some("o-1".into()))
    );
    assert_eq!(dedupe_of(&table, r#"{"id": 42}"#), Ok(Some("42".into())));
    assert_eq!(
        dedupe_of(&table, r#"{"other": 1}"#),
        Ok(None),
        "no id: delivered without the check"
    );
    // A possible duplicate is better than an alert set aside.
    assert_eq!(dedupe_of(&table, r#"{"id": {"nested": 1}}"#), Ok(None));
    assert_eq!(dedupe_of(&table, r#"{"id": ""}"#), Ok(None));
    // Any length: the file keeps a digest of it.
    let long = "x".repeat(600);
    assert_eq!(
        dedupe_of(&table, &format!(r#"{{"id": "{long}"}}"#)),
        Ok(Some(long))
    );
}

/// The action `table` takes for `payload` on the Kafka topic "orders".
fn action_of(table: &RouteTable, payload: Vec<u8>) -> crate::action::Action {
    let message = Message {
        payload,
        meta: Metadata::new(crate::message::SourceKind::Kafka, "orders"),
    };
    match table.route(&message) {
        super::Routed::Taken { action, .. } => action,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_payload_nested_too_deeply_for_the_expressions_is_set_aside_with_the_reason_not_a_crash() {
    // A field that needs jaq (not the fast path) and one the fast path has: neither may
    // see a payload whose reading would recurse without bound.
    let table = table_of(
        r#"
[[route]]
name = "orders"
source = "kafka"
topics = ["orders"]
[route.fields]
integration_key = '"il1api-orders"'
summary = '$topic | ascii_upcase'
alert_key = '.id'
"#,
    );
    for payload in [
        // 900 KiB of `[`: jaq's reader alone would overflow the thread's stack.
        vec![b'['; 900 * 1024],
        // Valid JSON, 200 levels deep.
        format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        format!("{}{}", r#"{"a":"#.repeat(200), "}".repeat(200)).into_bytes(),
    ] {
        match action_of(&table, payload) {
            crate::action::Action::Invalid(reason) => assert_eq!(
                reason,
                "route `orders`: payload nests deeper than 128 levels of arrays and objects"
            ),
            other => panic!("{other:?}"),
        }
    }
    // Brackets inside strings do not count, and 128 levels are fine.
    let in_string = format!(
        r#"{{"id": "{}", "x": {}1{}}}"#,
        "[".repeat(500),
        "[".repeat(100),
        "]".repeat(100)
    );
    match action_of(&table, in_string.into_bytes()) {
        crate::action::Action::Event(event) => {
            assert_eq!(event.summary.as_deref(), Some("ORDERS"));
            assert_eq!(event.alert_key.as_deref(), Some("[".repeat(500).as_str()));
        }
        other => panic!("{other:?}"),
    }
}
