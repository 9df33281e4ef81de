//! Reads an escalation-policy update: who (email), where (routing key) and which level
//! (shift plus offset).

use serde_json::{Map, Value};

use super::config::PolicyMapping;
use super::fields::{scalar_text, type_name};
use crate::action::PolicyUpdate;

pub(super) fn build(
    object: &Map<String, Value>,
    mapping: &PolicyMapping,
) -> Result<PolicyUpdate, String> {
    let routing_key = routing_key(object, &mapping.routing_key_fields)?;

    let email = match mapping.email.lookup(object) {
        Some(Value::String(email)) if !email.trim().is_empty() => email.trim().to_string(),
        Some(other) if !other.is_string() => {
            return Err(format!(
                "field `{}` (email) must be a string, got {}",
                mapping.email,
                type_name(other)
            ));
        }
        _ => {
            return Err(format!(
                "missing email: the payload has no `{}` field",
                mapping.email
            ));
        }
    };

    // No shift means shift 0, as in ilagent 0.9.
    let zero = Value::from(0);
    let shift_value = mapping.shift.lookup(object).unwrap_or(&zero);
    let shift = match shift_value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "field `{}` (shift) must be a whole number or a string holding one, got {shift_value}",
            mapping.shift
        )
    })?;
    let level = shift
        .saturating_add(mapping.shift_offset)
        .clamp(0, i64::from(u32::MAX));

    Ok(PolicyUpdate {
        email,
        routing_key,
        level: level as u32,
    })
}

/// The values of the routing-key fields, concatenated in order.
fn routing_key(object: &Map<String, Value>, fields: &[String]) -> Result<String, String> {
    if fields.is_empty() {
        return Err("no routing-key fields are configured (--policy_routing_keys)".into());
    }
    let mut key = String::new();
    for field in fields {
        let value = object.get(field).filter(|v| !v.is_null()).ok_or_else(|| {
            format!("missing routing key part: the payload has no `{field}` field")
        })?;
        let text = scalar_text(value).ok_or_else(|| {
            format!(
                "routing key field `{field}` must be a string or number, got {}",
                type_name(value)
            )
        })?;
        key.push_str(&text);
    }
    Ok(key)
}
