//! Finding a field in a JSON payload by name or dot path, and reading it as text.
//!
//! Mapping flags such as `--map_key_summary alarm.text` name fields by dot path; a name
//! that exists as a top-level key (dots included) wins, so payloads with dotted keys
//! still work.

use serde_json::{Map, Value};

/// A field name or dot path into nested objects, e.g. `data.email`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(path: impl Into<String>) -> Self {
        FieldPath(path.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value at this path; `null` counts as absent.
    pub fn lookup<'a>(&self, object: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(value) = object.get(&self.0) {
            return non_null(value);
        }
        let mut parts = self.0.split('.');
        let mut current = object.get(parts.next()?)?;
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        non_null(current)
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn non_null(value: &Value) -> Option<&Value> {
    (!value.is_null()).then_some(value)
}

/// A scalar as text: strings as they are, numbers and booleans as their JSON text.
/// Objects and arrays are not text.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The JSON type of a value, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn dot_paths_reach_into_nested_objects() {
        let o = object(json!({"data": {"email": "a@b.c", "n": {"deep": 1}}}));
        assert_eq!(
            FieldPath::new("data.email").lookup(&o),
            Some(&json!("a@b.c"))
        );
        assert_eq!(FieldPath::new("data.n.deep").lookup(&o), Some(&json!(1)));
        assert_eq!(FieldPath::new("data.missing").lookup(&o), None);
        assert_eq!(FieldPath::new("data.email.x").lookup(&o), None);
    }

    #[test]
    fn a_top_level_key_with_dots_wins_over_the_path() {
        let o = object(json!({"a.b": "flat", "a": {"b": "nested"}}));
        assert_eq!(FieldPath::new("a.b").lookup(&o), Some(&json!("flat")));
    }

    #[test]
    fn null_counts_as_absent() {
        let o = object(json!({"summary": null}));
        assert_eq!(FieldPath::new("summary").lookup(&o), None);
    }

    #[test]
    fn scalars_read_as_text_and_containers_do_not() {
        assert_eq!(scalar_text(&json!("x")), Some("x".into()));
        assert_eq!(scalar_text(&json!(42)), Some("42".into()));
        assert_eq!(scalar_text(&json!(true)), Some("true".into()));
        assert_eq!(scalar_text(&json!([1])), None);
        assert_eq!(scalar_text(&json!({})), None);
    }
}
