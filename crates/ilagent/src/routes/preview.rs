//! What the agent would do with a message, as data: the route that took it and the
//! request it would send ilert (method, path, JSON body), or why it would skip or set it
//! aside. `ilagent map` prints it and `ilagent check` compares it; no network.
//!
//! Integration keys are shown masked (a short prefix) in what is printed; comparisons use
//! the real values.

use serde_json::{Value, json};

use crate::action::Action;
use crate::ilert::EventPath;
use crate::ilert::client::LEGACY_HEARTBEAT_PREFIX;
use crate::message::{Message, SourceKind};
use crate::pipeline::MessageRouter;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    Request {
        method: &'static str,
        path: String,
        body: Option<Value>,
        /// What to mask when shown.
        secret: String,
    },
    PolicyUpdate {
        routing_key: String,
        email: String,
        level: u32,
    },
    Skip(String),
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Preview {
    /// The configured route that took the message (`None`: the flag mapping did).
    pub route: Option<String>,
    pub decision: Decision,
    /// The event's idempotency id and its window, where it has one.
    pub dedupe: Option<(String, std::time::Duration)>,
}

/// Routes and maps `message` exactly as the agent would.
pub(crate) fn preview(
    router: &MessageRouter,
    message: &Message,
    event_path: Option<&EventPath>,
) -> Preview {
    let (route, action) = router.route_and_map(message);
    let mut dedupe = None;
    let decision = match action {
        Action::Event(event) => {
            dedupe = event.dedupe.as_ref().map(|d| (d.id.to_string(), d.window));
            let template = match event.path.as_ref().or(event_path) {
                Some(EventPath::Generic) => "/api/events".to_string(),
                Some(EventPath::PerKey(template)) => template.clone(),
                None => match message.meta.source {
                    SourceKind::Mqtt => EventPath::MQTT.to_string(),
                    SourceKind::Kafka => EventPath::KAFKA.to_string(),
                    _ => "/api/events".to_string(),
                },
            };
            let key = event.integration_key.expose().to_string();
            Decision::Request {
                method: "POST",
                path: template.replace("{key}", &key),
                body: serde_json::to_value(&*event).ok(),
                secret: key,
            }
        }
        Action::Heartbeat(key) => {
            let key = key.expose().to_string();
            let path = if key.starts_with(LEGACY_HEARTBEAT_PREFIX) {
                format!("/api/heartbeats/{key}")
            } else {
                format!("/api/pings/{key}")
            };
            Decision::Request {
                method: "GET",
                path,
                body: None,
                secret: key,
            }
        }
        Action::PolicyUpdate(update) => Decision::PolicyUpdate {
            routing_key: update.routing_key,
            email: update.email,
            level: update.level,
        },
        Action::Skip(reason) => Decision::Skip(reason),
        Action::Invalid(reason) => Decision::Invalid(reason),
    };
    Preview {
        route,
        decision,
        dedupe,
    }
}

impl Preview {
    /// As printed: one JSON object, integration keys masked.
    pub(crate) fn to_json(&self) -> Value {
        let mut out = json!({ "route": self.route });
        let fields = match &self.decision {
            Decision::Request {
                method,
                path,
                body,
                secret,
            } => {
                let shown = crate::secret::Secret::new(secret.clone()).prefix();
                let mut request = json!({
                    "method": method,
                    "path": mask(path, secret, &shown),
                });
                if let Some(body) = body {
                    request["body"] = mask_value(body.clone(), secret, &shown);
                }
                json!({ "request": request })
            }
            Decision::PolicyUpdate {
                routing_key,
                email,
                level,
            } => json!({ "policy_update": {
                "routingKey": routing_key, "email": email, "level": level
            }}),
            Decision::Skip(reason) => json!({ "skip": reason }),
            Decision::Invalid(reason) => json!({ "invalid": reason }),
        };
        if let (Value::Object(out), Value::Object(fields)) = (&mut out, fields) {
            out.extend(fields);
        }
        if let Some((id, window)) = &self.dedupe {
            out["dedupe"] = json!({
                "id": id,
                "window": humantime::format_duration(*window).to_string(),
            });
        }
        out
    }
}

fn mask(text: &str, secret: &str, shown: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, shown)
    }
}

fn mask_value(value: Value, secret: &str, shown: &str) -> Value {
    match value {
        Value::String(s) => Value::String(mask(&s, secret, shown)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| mask_value(v, secret, shown))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, mask_value(v, secret, shown)))
                .collect(),
        ),
        other => other,
    }
}
