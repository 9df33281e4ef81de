//! The malformed corpus: messages that can never become an ilert request, one of each kind
//! the issue names (random bytes, invalid UTF-8, non-objects, a wrong type for every field,
//! deep nesting, 900 KiB payloads, NUL bytes, empty messages and, for Kafka, tombstones and
//! binary keys). Every one must be set aside with a reason while the valid events around it
//! flow; none may stop the agent.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

/// One malformed message. `payload: None` is a Kafka tombstone (an empty message on MQTT
/// and HTTP).
#[derive(Clone, Debug)]
pub struct Malformed {
    pub what: &'static str,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// A valid event's fields, which the wrong-type cases spoil one at a time.
fn valid_fields() -> serde_json::Map<String, Value> {
    match json!({
        "integrationKey": "il1api-chaos-malformed",
        "eventType": "ALERT",
        "summary": "a malformed-corpus event",
        "alertKey": "malformed",
    }) {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// A value of the wrong type for `field`.
fn wrong_types() -> Vec<(&'static str, Value)> {
    vec![
        ("integrationKey", json!(42)),
        ("integrationKey", json!(null)),
        ("integrationKey", json!("")),
        ("eventType", json!("EXPLODE")),
        ("eventType", json!(["ALERT"])),
        (
            "eventType",
            json!("X\nINJECTED-LINE ERROR forged\u{1b}[31m\u{0}"),
        ),
        ("summary", json!({"nested": true})),
        // Numbers and booleans are taken as text (documented), so not here.
        ("summary", json!(["a", "list"])),
        ("priority", json!("URGENT")),
        ("priority", json!(1)),
        ("alertKey", json!({"k": 1})),
        ("details", json!([1, 2])),
        ("images", json!("not-a-list")),
        ("links", json!(17)),
        ("customDetails", json!("text")),
    ]
}

/// The first `count` messages of the corpus, cycling through its kinds; `seed` fixes the
/// random bytes so that a failing run can be repeated.
pub fn corpus(count: usize, seed: u64) -> Vec<Malformed> {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = kinds(&mut rng);
    (0..count).map(|i| kinds[i % kinds.len()].clone()).collect()
}

fn kinds(rng: &mut StdRng) -> Vec<Malformed> {
    let bad = |what: &'static str, payload: Vec<u8>| Malformed {
        what,
        key: None,
        payload: Some(payload),
    };
    let mut random = vec![0u8; 512];
    rng.fill(&mut random[..]);
    let mut out = vec![
        bad("random bytes", random),
        bad(
            "invalid UTF-8",
            b"{\"summary\": \"\xff\xfe\xc3\x28\"}".to_vec(),
        ),
        bad("a JSON array", b"[1, 2, 3]".to_vec()),
        bad("a JSON string", b"\"ALERT\"".to_vec()),
        bad("a JSON number", b"42".to_vec()),
        bad("JSON null", b"null".to_vec()),
        bad(
            "truncated JSON",
            b"{\"eventType\": \"ALERT\", \"summ".to_vec(),
        ),
        bad("empty", Vec::new()),
        bad("whitespace", b"  \n\t ".to_vec()),
        bad("NUL bytes", b"\0\0{\"eventType\":\0\"ALERT\"}\0".to_vec()),
        bad(
            "deep nesting",
            format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes(),
        ),
        // A reader that recurses without a limit overflows its stack on this.
        bad("900 KiB of [", vec![b'['; 900 * 1024]),
        bad("900 KiB non-object", {
            let mut text = b"\"".to_vec();
            text.extend(std::iter::repeat_n(b'x', 900 * 1024));
            text.push(b'"');
            text
        }),
        bad("900 KiB event with a bad type", {
            let mut fields = valid_fields();
            fields.insert("eventType".into(), json!("NOPE"));
            fields.insert(
                "customDetails".into(),
                json!({"blob": "y".repeat(900 * 1024)}),
            );
            Value::Object(fields).to_string().into_bytes()
        }),
        bad("an event without fields", b"{}".to_vec()),
        Malformed {
            what: "a tombstone with a binary key",
            key: Some(vec![0xff, 0x00, 0xfe, 0x7f]),
            payload: None,
        },
        Malformed {
            what: "an invalid event with a binary key",
            key: Some(vec![0x00, 0x9f, 0x92, 0x96]),
            payload: Some(b"{\"eventType\": 1}".to_vec()),
        },
    ];
    for (field, value) in wrong_types() {
        let mut fields = valid_fields();
        fields.insert(field.to_string(), value);
        out.push(bad(
            "a wrong type for a field",
            Value::Object(fields).to_string().into_bytes(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_cycles_through_every_kind_and_is_repeatable() {
        let a = corpus(100, 7);
        let b = corpus(100, 7);
        assert_eq!(a.len(), 100);
        assert_eq!(
            a.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(),
            b.iter().map(|m| m.payload.clone()).collect::<Vec<_>>()
        );
        assert!(a.iter().any(|m| m.payload.is_none()));
        assert!(a.iter().any(|m| m.what == "deep nesting"));
    }
}
