//! Builds an ilert [`Event`] from a JSON object, checking every field as ilert would so
//! that a bad payload is rejected here, with a reason, instead of by ilert.
//!
//! Broker messages get ilagent 0.9's defaults, which existing producers rely on: no event
//! type means ALERT, and a field named by `--map_key_etype`, `--map_key_summary` or
//! `--map_key_alert_key` that a payload lacks falls back to the default field
//! (`eventType`, `summary`, `alertKey`). The HTTP proxy takes ilert's own schema, so a
//! body posted there needs its `eventType`, as ilert's API does.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::config::MappingConfig;
use super::fields::{FieldPath, scalar_text, type_name};
use crate::ilert::{CustomDetails, Event, EventType, Priority};
use crate::message::{Metadata, SourceKind};
use crate::secret::Secret;

/// Field names of the ilert event schema that are not remappable by flags.
const INTEGRATION_KEY: &str = "integrationKey";
const INTEGRATION_KEY_ALIAS: &str = "apiKey";
/// The default fields a mapped field falls back to.
const EVENT_TYPE: &str = "eventType";
const SUMMARY: &str = "summary";
const ALERT_KEY: &str = "alertKey";

/// Takes the object, so that the custom details it carries move into the event instead of
/// being copied: a buffered event costs its payload once, not twice.
pub(super) fn build(
    object: Map<String, Value>,
    meta: &Metadata,
    config: &MappingConfig,
) -> Result<Event, String> {
    let event = build_fields(&object, meta, config)?;
    Ok(Event {
        custom_details: custom_details(object, meta, config)?.map(CustomDetails::from),
        ..event
    })
}

/// Every field but the custom details.
fn build_fields(
    object: &Map<String, Value>,
    meta: &Metadata,
    config: &MappingConfig,
) -> Result<Event, String> {
    let integration_key = integration_key(object, config.event_key.as_ref())?;
    let event_type = event_type(object, meta, config)?;
    let mut event = Event::new(integration_key, event_type);

    event.summary = text_field(
        object,
        mapped_or_default(object, &config.summary_field, SUMMARY),
    )?;
    if event_type == EventType::Alert && event.summary.as_deref().is_none_or(str::is_empty) {
        // ilert requires a summary for ALERT; the HTTP proxy takes ilert's schema as it is
        // and says so, while broker messages get one naming their topic.
        if meta.source == SourceKind::Http {
            return Err("field `summary` is required for ALERT events".into());
        }
        event.summary = Some(format!("New alert from {}", meta.topic));
    }
    event.details = text_field(object, &FieldPath::new("details"))?;
    event.alert_key = text_field(
        object,
        mapped_or_default(object, &config.alert_key_field, ALERT_KEY),
    )?;
    event.routing_key = text_field(object, &FieldPath::new("routingKey"))?;
    event.priority = text_field(object, &FieldPath::new("priority"))?
        .map(|p| {
            p.parse::<Priority>()
                .map_err(|e| format!("field `priority`: {e}"))
        })
        .transpose()?;
    event.severity = severity(object)?;
    event.images = list_field(object, "images")?;
    event.links = list_field(object, "links")?;
    event.comments = list_field(object, "comments")?;
    event.services = list_field(object, "services")?;
    event.labels = labels(object)?;
    Ok(event)
}

/// `--event_key`, else `integrationKey`, else `apiKey`.
fn integration_key(object: &Map<String, Value>, fixed: Option<&Secret>) -> Result<Secret, String> {
    if let Some(key) = fixed {
        return Ok(key.clone());
    }
    let value = object
        .get(INTEGRATION_KEY)
        .filter(|v| !v.is_null())
        .or_else(|| object.get(INTEGRATION_KEY_ALIAS).filter(|v| !v.is_null()));
    match value {
        Some(Value::String(key)) if !key.trim().is_empty() => Ok(Secret::new(key.trim())),
        Some(Value::String(_)) => Err("field `integrationKey` is empty".into()),
        Some(other) => Err(format!(
            "field `integrationKey` must be a string, got {}",
            type_name(other)
        )),
        None => Err(
            "missing integration key: the payload has no `integrationKey` (or `apiKey`) and no --event_key is set"
                .into(),
        ),
    }
}

/// `field` if the payload has it, else the default field of that name (0.9's fallback).
fn mapped_or_default<'a>(
    object: &Map<String, Value>,
    field: &'a FieldPath,
    default: &'static str,
) -> &'a FieldPath {
    static DEFAULTS: std::sync::OnceLock<[FieldPath; 3]> = std::sync::OnceLock::new();
    let defaults = DEFAULTS.get_or_init(|| {
        [
            FieldPath::new(EVENT_TYPE),
            FieldPath::new(SUMMARY),
            FieldPath::new(ALERT_KEY),
        ]
    });
    if field.lookup(object).is_some() {
        return field;
    }
    defaults
        .iter()
        .find(|d| d.as_str() == default)
        .filter(|d| d.lookup(object).is_some())
        .unwrap_or(field)
}

fn event_type(
    object: &Map<String, Value>,
    meta: &Metadata,
    config: &MappingConfig,
) -> Result<EventType, String> {
    let field = mapped_or_default(object, &config.event_type_field, EVENT_TYPE);
    let Some(value) = field.lookup(object) else {
        if meta.source == SourceKind::Http {
            return Err(format!(
                "field `{field}` is required: ALERT, ACCEPT, RESOLVE or COMMENT"
            ));
        }
        return Ok(EventType::Alert);
    };
    let text = scalar_text(value)
        .ok_or_else(|| format!("field `{field}` must be a string, got {}", type_name(value)))?;
    let mapped = [
        (&config.alert_value, EventType::Alert),
        (&config.accept_value, EventType::Accept),
        (&config.resolve_value, EventType::Resolve),
    ]
    .into_iter()
    .find_map(|(custom, event_type)| {
        (custom.as_deref() == Some(text.as_str())).then_some(event_type)
    });
    if let Some(event_type) = mapped {
        return Ok(event_type);
    }
    text.parse::<EventType>().map_err(|_| {
        format!(
            "field `{field}`: unknown event type `{text}`: expected ALERT, ACCEPT, RESOLVE or COMMENT \
             (map your own values with --map_val_etype_alert, --map_val_etype_accept, --map_val_etype_resolve)"
        )
    })
}

/// A string-ish field: strings, numbers and booleans are taken as text.
fn text_field(object: &Map<String, Value>, field: &FieldPath) -> Result<Option<String>, String> {
    match field.lookup(object) {
        None => Ok(None),
        Some(value) => scalar_text(value)
            .map(Some)
            .ok_or_else(|| format!("field `{field}` must be a string, got {}", type_name(value))),
    }
}

fn severity(object: &Map<String, Value>) -> Result<Option<u8>, String> {
    let Some(value) = FieldPath::new("severity").lookup(object) else {
        return Ok(None);
    };
    let number = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match number {
        Some(n @ 1..=5) => Ok(Some(n as u8)),
        _ => Err(format!(
            "field `severity` must be an integer from 1 to 5, got {value}"
        )),
    }
}

/// `images`, `links`, `comments`, `services`: arrays of objects of ilert's shape.
fn list_field<T: DeserializeOwned>(
    object: &Map<String, Value>,
    name: &str,
) -> Result<Vec<T>, String> {
    match FieldPath::new(name).lookup(object) {
        None => Ok(Vec::new()),
        Some(value @ Value::Array(_)) => {
            serde_json::from_value(value.clone()).map_err(|e| format!("field `{name}`: {e}"))
        }
        Some(other) => Err(format!(
            "field `{name}` must be an array, got {}",
            type_name(other)
        )),
    }
}

fn labels(
    object: &Map<String, Value>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    match FieldPath::new("labels").lookup(object) {
        None => Ok(Default::default()),
        Some(Value::Object(labels)) => labels
            .iter()
            .map(|(name, value)| {
                scalar_text(value)
                    .map(|text| (name.clone(), text))
                    .ok_or_else(|| {
                        format!("label `{name}` must be a string, got {}", type_name(value))
                    })
            })
            .collect(),
        Some(other) => Err(format!(
            "field `labels` must be an object, got {}",
            type_name(other)
        )),
    }
}

/// The payload's own `customDetails` first (as 0.9, also with `--forward_message_payload`);
/// otherwise the whole payload with `--forward_message_payload`; otherwise, for broker
/// messages, where the message came from.
fn custom_details(
    mut object: Map<String, Value>,
    meta: &Metadata,
    config: &MappingConfig,
) -> Result<Option<Map<String, Value>>, String> {
    match FieldPath::new("customDetails").lookup(&object) {
        Some(Value::Object(_)) => match object.remove("customDetails") {
            Some(Value::Object(details)) => Ok(Some(details)),
            _ => Ok(None),
        },
        Some(other) => Err(format!(
            "field `customDetails` must be an object, got {}",
            type_name(other)
        )),
        None if config.forward_payload => Ok(Some(object)),
        None if matches!(meta.source, SourceKind::Kafka | SourceKind::Mqtt) => {
            Ok(Some(metadata_details(meta)))
        }
        None => Ok(None),
    }
}

fn metadata_details(meta: &Metadata) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("topic".into(), Value::from(&*meta.topic));
    if let Some(partition) = meta.partition {
        details.insert("partition".into(), Value::from(partition));
    }
    if let Some(offset) = meta.offset {
        details.insert("offset".into(), Value::from(offset));
    }
    // 0.9's name, which ilert templates and routing rules are written against.
    if let Some(key) = &meta.key {
        details.insert("messageKey".into(), Value::from(key.clone()));
    }
    details
}
