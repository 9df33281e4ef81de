//! Mapping: one message's bytes to one [`Action`], as a pure function.
//!
//! The route step decides what a topic carries ([`MessageKind`]); mapping reads the
//! payload accordingly. It never panics and never does I/O: every way a payload can be
//! wrong becomes [`Action::Invalid`] with a reason a person can act on, and a message a
//! filter excludes becomes [`Action::Skip`]. Reasons quote payload values, escaped by
//! [`crate::printable`].

pub mod config;
mod event;
pub mod fields;
mod policy;

use serde_json::{Map, Value};

pub use config::{Filter, MappingConfig, PolicyMapping};
pub use fields::FieldPath;

use crate::action::Action;
use crate::message::Metadata;
use crate::printable;
use crate::secret::Secret;
use fields::{scalar_text, type_name};

/// What the topic a message arrived on carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Event,
    Heartbeat,
    Policy,
}

/// Maps one payload to an action.
pub fn map(payload: &[u8], meta: &Metadata, kind: MessageKind, config: &MappingConfig) -> Action {
    match parse_object(payload) {
        Ok(object) => map_object(object, meta, kind, config),
        Err(reason) => Action::Invalid(printable::reason(reason)),
    }
}

/// Maps a JSON object (a payload, or what a route's field expressions computed).
pub(crate) fn map_object(
    object: Map<String, Value>,
    meta: &Metadata,
    kind: MessageKind,
    config: &MappingConfig,
) -> Action {
    if kind != MessageKind::Heartbeat
        && let Some(filter) = &config.filter
        && let Some(reason) = excluded_by(filter, &object)
    {
        return Action::Skip(printable::reason(reason));
    }
    let action = match kind {
        MessageKind::Event => {
            event::build(object, meta, config).map(|e| Action::Event(Box::new(e)))
        }
        MessageKind::Heartbeat => heartbeat_key(&object).map(Action::Heartbeat),
        MessageKind::Policy => policy::build(&object, &config.policy).map(Action::PolicyUpdate),
    };
    // Reasons quote the payload's values: escaped, so that none can forge a log line.
    action.unwrap_or_else(|reason| Action::Invalid(printable::reason(reason)))
}

/// The payload as a JSON object, or why it is not one.
fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err("payload is empty: expected a JSON object".into());
    }
    if std::str::from_utf8(payload).is_err() {
        return Err(format!(
            "{}: expected a JSON object",
            not_utf8_reason(payload)
        ));
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!(
            "payload is {}, expected a JSON object",
            type_name(&other)
        )),
        Err(e) => Err(format!("payload is not valid JSON: {e}")),
    }
}

/// Why a payload that is not UTF-8 cannot be read (where its first invalid byte is).
pub(crate) fn not_utf8_reason(payload: &[u8]) -> String {
    let position = std::str::from_utf8(payload)
        .err()
        .map_or(payload.len(), |e| e.valid_up_to());
    format!("payload is not UTF-8 text (invalid byte at position {position})")
}

/// `Some(reason)` when the filter excludes the message.
fn excluded_by(filter: &Filter, object: &Map<String, Value>) -> Option<String> {
    let Some(value) = filter.key.lookup(object) else {
        return Some(format!("filter: field `{}` is missing", filter.key));
    };
    let expected = filter.value.as_ref()?;
    let actual = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (actual != *expected).then(|| {
        format!(
            "filter: field `{}` is `{actual}`, not `{expected}`",
            filter.key
        )
    })
}

/// `{"integrationKey": "..."}` (alias `apiKey`).
fn heartbeat_key(object: &Map<String, Value>) -> Result<Secret, String> {
    let value = ["integrationKey", "apiKey"]
        .iter()
        .find_map(|name| object.get(*name).filter(|v| !v.is_null()));
    match value {
        Some(value) => match scalar_text(value) {
            Some(key) if !key.trim().is_empty() && value.is_string() => Ok(Secret::new(key.trim())),
            _ => Err(format!(
                "heartbeat field `integrationKey` must be a non-empty string, got {}",
                type_name(value)
            )),
        },
        None => {
            Err("missing heartbeat key: the payload has no `integrationKey` (or `apiKey`)".into())
        }
    }
}

#[cfg(test)]
mod tests;
