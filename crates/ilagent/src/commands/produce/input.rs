//! The messages `ilagent produce` publishes: one from `--key`/`--value`, or many from
//! standard input, read and checked in full before the first one is sent (a typo on line
//! 900 must not leave 899 messages published and the rest not).
//!
//! Standard input holds either the elastic.io Kafka component's document
//! `{"messages": [{"key": "k", "value": "v"}]}` or a stream of such message objects, one
//! per line (JSON lines; an object may also span lines). A `value` that is a string is sent
//! as its text; any other JSON value as its JSON text; `null` as no value at all (a Kafka
//! tombstone, an empty MQTT payload).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::mapping::fields::type_name;

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub key: Option<String>,
    /// `None`: no value (a tombstone).
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    #[serde(default)]
    key: Option<String>,
    value: Option<Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The single message of `--value` (and `--key`).
pub(crate) fn from_flags(
    key: Option<String>,
    value: String,
    headers: &[(String, String)],
) -> Outgoing {
    Outgoing {
        key,
        value: Some(value.into_bytes()),
        headers: headers.to_vec(),
    }
}

/// Every message on standard input; `headers` (from `--header`) go on each, before its own.
pub(crate) fn from_text(text: &str, headers: &[(String, String)]) -> Result<Vec<Outgoing>, String> {
    let mut values = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let start = stream.byte_offset();
        match stream.next() {
            None => break,
            Some(Ok(value)) => values.push((line_of(text, start), value)),
            Some(Err(error)) => {
                return Err(format!(
                    "standard input, line {}: not JSON ({error}); give JSON lines of {{\"key\", \"value\"}} or {{\"messages\": [...]}}",
                    error.line()
                ));
            }
        }
    }
    if values.is_empty() {
        return Err(
            "standard input holds no message: give --value, or JSON lines of {\"key\", \"value\"}, or {\"messages\": [...]}".into(),
        );
    }
    // The elastic.io document: one object with `messages` and nothing else.
    if let [(line, Value::Object(document))] = values.as_slice()
        && document.contains_key("messages")
    {
        let line = *line;
        if document.len() != 1 {
            return Err(format!(
                "standard input, line {line}: a document holds `messages` only, e.g. {{\"messages\": [{{\"key\": \"k\", \"value\": \"v\"}}]}}"
            ));
        }
        let Some(Value::Array(items)) = document.get("messages") else {
            return Err(format!(
                "standard input, line {line}: `messages` must be an array of {{\"key\", \"value\"}}"
            ));
        };
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| outgoing(item.clone(), headers, &format!("messages[{i}]")))
            .collect();
    }
    values
        .into_iter()
        .map(|(line, value)| outgoing(value, headers, &format!("standard input, line {line}")))
        .collect()
}

fn outgoing(value: Value, headers: &[(String, String)], at: &str) -> Result<Outgoing, String> {
    if !value.is_object() {
        return Err(format!(
            "{at}: a message is an object {{\"key\": …, \"value\": …}}, not {}",
            type_name(&value)
        ));
    }
    // serde reads a missing `value` and `"value": null` alike; only the second is meant.
    let has_value = value.get("value").is_some();
    let item: Item = serde_json::from_value(value).map_err(|e| format!("{at}: {e}"))?;
    if !has_value {
        return Err(format!(
            "{at}: `value` is missing (write \"value\": null for a message without one)"
        ));
    }
    let value = match item.value {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.into_bytes()),
        Some(other) => Some(other.to_string().into_bytes()),
    };
    let mut all_headers = headers.to_vec();
    all_headers.extend(item.headers);
    Ok(Outgoing {
        key: item.key,
        value,
        headers: all_headers,
    })
}

/// The 1-based line of a byte offset, skipping the whitespace before the value.
fn line_of(text: &str, offset: usize) -> usize {
    let before = &text[..offset.min(text.len())];
    let skipped = text[before.len()..]
        .chars()
        .take_while(|c| c.is_whitespace())
        .filter(|c| *c == '\n')
        .count();
    before.matches('\n').count() + skipped + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_elastic_io_document_gives_one_message_per_item() {
        let messages = from_text(
            r#"{"messages": [{"key": "Car status", "value": "arrived"}, {"value": {"a": 1}}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].key.as_deref(), Some("Car status"));
        assert_eq!(messages[0].value.as_deref(), Some(&b"arrived"[..]));
        assert_eq!(messages[1].key, None);
        assert_eq!(messages[1].value.as_deref(), Some(&br#"{"a":1}"#[..]));
    }

    #[test]
    fn json_lines_keep_their_order_headers_and_tombstones() {
        let text = "{\"key\":\"a\",\"value\":\"1\",\"headers\":{\"h\":\"x\"}}\n\n{\"key\":\"b\",\"value\":null}\n";
        let messages = from_text(text, &[("env".into(), "test".into())]).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0].headers,
            [
                ("env".to_string(), "test".to_string()),
                ("h".into(), "x".into())
            ]
        );
        assert_eq!(messages[1].value, None);
    }

    #[test]
    fn a_bad_line_is_named_and_nothing_is_taken() {
        let error = from_text("{\"value\":\"1\"}\n{\"vaule\":\"2\"}\n", &[]).unwrap_err();
        assert!(
            error.contains("line 2") && error.contains("vaule"),
            "{error}"
        );
        let error = from_text("{\"value\":\"1\"}\n\n[1]\n", &[]).unwrap_err();
        assert!(
            error.contains("line 3") && error.contains("an array"),
            "{error}"
        );
        let error = from_text("{\"value\":\"1\"}\n{\"key\":\"k\"}", &[]).unwrap_err();
        assert!(error.contains("`value` is missing"), "{error}");
        let error = from_text("{\"value\": ", &[]).unwrap_err();
        assert!(error.contains("not JSON"), "{error}");
        assert!(from_text("  \n", &[]).unwrap_err().contains("no message"));
    }
}
