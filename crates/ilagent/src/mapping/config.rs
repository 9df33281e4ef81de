//! The settings mapping works from: field names, value maps, the filter, and the
//! escalation-policy fields. Built once from the validated configuration.

use super::fields::FieldPath;
use crate::secret::Secret;

/// Only messages whose `key` exists (and, if `value` is set, equals it) are delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub key: FieldPath,
    /// Compared with a string field as it is, with any other field as its JSON text
    /// (`true`, `42`).
    pub value: Option<String>,
}

/// How escalation-policy update messages are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyMapping {
    /// Top-level fields whose values, concatenated in order, form the routing key.
    pub routing_key_fields: Vec<String>,
    pub email: FieldPath,
    pub shift: FieldPath,
    /// Added to the shift to get the zero-based level; the level never goes below 0.
    pub shift_offset: i64,
}

impl Default for PolicyMapping {
    fn default() -> Self {
        PolicyMapping {
            routing_key_fields: Vec::new(),
            email: FieldPath::new("data.email"),
            shift: FieldPath::new("data.shift"),
            shift_offset: 0,
        }
    }
}

/// Everything mapping needs besides the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingConfig {
    /// `--event_key`: overrides any integration key in the payload.
    pub event_key: Option<Secret>,
    pub event_type_field: FieldPath,
    pub summary_field: FieldPath,
    pub alert_key_field: FieldPath,
    /// Payload values that mean ALERT, ACCEPT and RESOLVE (`--map_val_etype_*`).
    pub alert_value: Option<String>,
    pub accept_value: Option<String>,
    pub resolve_value: Option<String>,
    pub filter: Option<Filter>,
    /// `--forward_message_payload`: the whole payload becomes `customDetails`.
    pub forward_payload: bool,
    pub policy: PolicyMapping,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            event_key: None,
            event_type_field: FieldPath::new("eventType"),
            summary_field: FieldPath::new("summary"),
            alert_key_field: FieldPath::new("alertKey"),
            alert_value: None,
            accept_value: None,
            resolve_value: None,
            filter: None,
            forward_payload: false,
            policy: PolicyMapping::default(),
        }
    }
}
