//! Routes: which configured route takes a message, and what its field expressions make
//! of it.
//!
//! A route names its source, its topics (Kafka names, MQTT filters or paths of the HTTP
//! proxy), its kind (event,
//! heartbeat, escalation-policy update), an optional activation condition and optional
//! field expressions ([`expr`]). A message goes to the first route whose source, topic and
//! condition match. Routes without field expressions map with the flags (`--map_key_*`);
//! the flag-only topics (`-e`, `-r`, `--policy_topic`) stay the built-in default route
//! behind the configured ones (see [`crate::pipeline::MessageRouter`]).
//!
//! The expressions' results go through the same checks as a payload does
//! ([`crate::mapping`]): a route computes the fields, mapping decides whether ilert
//! would take them. Nothing here does I/O or panics: a condition or field that fails at
//! run time makes the message invalid, with the route's name and the reason.

pub(crate) mod check;
pub(crate) mod expr;
mod native;
pub(crate) mod preview;
pub(crate) mod spec;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use self::expr::{Expr, Inputs};
use self::spec::{KindName, RouteSpec, SourceName};
use crate::action::{Action, DedupeId};
use crate::config::file::{ConfigFile, FileError, Located};
use crate::delivery::idempotency;
use crate::mapping::{self, FieldPath, MappingConfig, MessageKind, PolicyMapping};
use crate::message::{Message, SourceKind};
use crate::printable;
use crate::sources::route::mqtt_filter_matches;

/// One compiled route.
#[derive(Debug)]
pub(crate) struct Route {
    pub name: String,
    source: SourceKind,
    topics: Vec<String>,
    kind: MessageKind,
    when: Option<Expr>,
    fields: Option<Vec<(&'static str, Expr)>>,
    /// The mapping the fields' results go through (or the flags', without fields).
    mapping: Arc<MappingConfig>,
    dedupe: Option<RouteDedupe>,
}

/// A route's `dedupe` expression and window.
#[derive(Debug)]
struct RouteDedupe {
    expr: Expr,
    /// The route's name: ids are unique within their route.
    scope: Arc<str>,
    window: Duration,
}

/// Every configured route, in the order of the file. Cheap to share.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// What the routes decided for a message.
#[derive(Debug)]
pub(crate) enum Routed {
    /// A route took it.
    Taken { route: String, action: Action },
    /// Its topic belongs to routes, but none took it.
    NoneMatched { tried: Vec<String> },
    /// No route has its topic.
    NoRouteHasTopic,
}

impl RouteTable {
    /// The routes of a configuration file, compiled with the flag mapping `flags` (which
    /// routes without field expressions use).
    pub fn of_file(file: &ConfigFile, flags: &MappingConfig) -> Result<RouteTable, FileError> {
        RouteTable::compile(file.routes(), flags, &file.located)
    }

    /// Compiles every route of the file; `flags` is the flag mapping, which routes without
    /// field expressions use. Fails on the first route that cannot work, naming it.
    pub(crate) fn compile(
        specs: &[RouteSpec],
        flags: &MappingConfig,
        file: &Located,
    ) -> Result<RouteTable, FileError> {
        let mut routes: Vec<Route> = Vec::with_capacity(specs.len());
        for spec in specs {
            let route = compile_route(spec, flags, file)?;
            if routes.iter().any(|r| r.name == route.name) {
                return Err(file.error(
                    spec.name.span(),
                    format!(
                        "route `{}`: another route has this name: give each route its own",
                        route.name
                    ),
                ));
            }
            routes.push(route);
        }
        Ok(RouteTable { routes })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether some route deduplicates: the accepted ids then need the SQLite file.
    pub(crate) fn dedupes(&self) -> bool {
        self.routes.iter().any(|r| r.dedupe.is_some())
    }

    /// The topics (or MQTT filters) the routes of `source` consume, each once.
    pub fn topics_for(&self, source: SourceKind) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for route in self.routes.iter().filter(|r| r.source == source) {
            for topic in &route.topics {
                if !topics.contains(topic) {
                    topics.push(topic.clone());
                }
            }
        }
        topics
    }

    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route whose source, topic and condition match `message`.
    pub(crate) fn route(&self, message: &Message) -> Routed {
        let meta = &message.meta;
        let candidates: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| r.source == meta.source && r.takes_topic(&meta.topic))
            .collect();
        if candidates.is_empty() {
            return Routed::NoRouteHasTopic;
        }
        let inputs = match Inputs::new(&message.payload, meta) {
            Ok(inputs) => inputs,
            Err(reason) => {
                let route = candidates[0].name.clone();
                return Routed::Taken {
                    action: Action::Invalid(format!("route `{route}`: {reason}")),
                    route,
                };
            }
        };
        for route in &candidates {
            match route.condition_holds(&inputs) {
                Ok(false) => continue,
                Ok(true) => {
                    return Routed::Taken {
                        route: route.name.clone(),
                        action: route.map(message, &inputs),
                    };
                }
                Err(reason) => {
                    return Routed::Taken {
                        route: route.name.clone(),
                        action: Action::Invalid(printable::reason(format!(
                            "route `{}`: condition `when` failed: {reason}",
                            route.name
                        ))),
                    };
                }
            }
        }
        Routed::NoneMatched {
            tried: candidates.iter().map(|r| r.name.clone()).collect(),
        }
    }
}

impl Route {
    fn takes_topic(&self, topic: &str) -> bool {
        self.topics.iter().any(|pattern| match self.source {
            SourceKind::Mqtt => mqtt_filter_matches(pattern, topic),
            _ => pattern == topic,
        })
    }

    pub(crate) fn topics(&self) -> &[String] {
        &self.topics
    }

    pub(crate) fn source(&self) -> SourceKind {
        self.source
    }

    pub(crate) fn kind(&self) -> MessageKind {
        self.kind
    }

    /// jq's truth: everything but `false` and `null` (and no output) is true.
    fn condition_holds(&self, inputs: &Inputs) -> Result<bool, String> {
        match &self.when {
            None => Ok(true),
            Some(when) => Ok(!matches!(
                when.eval(inputs)?,
                Value::Null | Value::Bool(false)
            )),
        }
    }

    /// The action of the route's fields, with the event's idempotency id where the route
    /// has a `dedupe` expression.
    fn map(&self, message: &Message, inputs: &Inputs) -> Action {
        let action = self.map_fields(message, inputs);
        let Some(dedupe) = &self.dedupe else {
            return action;
        };
        match action {
            Action::Event(mut event) => {
                // A message whose id cannot be computed is delivered without the check:
                // a possible duplicate is better than an alert set aside.
                event.dedupe = dedupe
                    .id_of(inputs)
                    .unwrap_or_else(|reason| {
                        crate::observe::events::dedupe_id_failed(&dedupe.scope, &reason);
                        None
                    })
                    .map(Box::new);
                Action::Event(event)
            }
            other => other,
        }
    }

    fn map_fields(&self, message: &Message, inputs: &Inputs) -> Action {
        let Some(fields) = &self.fields else {
            return mapping::map(&message.payload, &message.meta, self.kind, &self.mapping);
        };
        let mut object = Map::new();
        for (name, expr) in fields {
            match expr.eval(inputs) {
                Ok(Value::Null) => {}
                Ok(value) => {
                    object.insert((*name).to_string(), value);
                }
                Err(reason) => {
                    return Action::Invalid(printable::reason(format!(
                        "route `{}`: field `{}` failed: {reason}",
                        self.name,
                        file_name(name)
                    )));
                }
            }
        }
        match mapping::map_object(object, &message.meta, self.kind, &self.mapping) {
            Action::Invalid(reason) => Action::Invalid(format!("route `{}`: {reason}", self.name)),
            Action::Skip(reason) => Action::Skip(format!("route `{}`: {reason}", self.name)),
            action => action,
        }
    }
}

impl RouteDedupe {
    /// The id the expression yields: a string, or a number as its text; `null`, no
    /// output or an empty string mean the message has none. Anything else is an error,
    /// which the caller reports before delivering without the check.
    fn id_of(&self, inputs: &Inputs) -> Result<Option<DedupeId>, String> {
        let id = match self.expr.eval(inputs)? {
            Value::Null => return Ok(None),
            Value::String(text) if text.is_empty() => return Ok(None),
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            other => {
                return Err(format!(
                    "it yields {}, not a string or a number",
                    mapping::fields::type_name(&other)
                ));
            }
        };
        Ok(Some(DedupeId::of_route(&self.scope, id, self.window)))
    }
}

/// Paths the proxy serves itself, which no route may take.
const PROXY_PATHS: [&str; 7] = [
    "/",
    "/api/events",
    "/api/v1/events",
    "/health",
    "/ready",
    "/status",
    "/metrics",
];

/// Why `path` cannot be an http route's (a path the proxy serves, or one its router would
/// read as a pattern).
fn http_route_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "`{path}` is not a path: an http route's topics are request paths, like \"/hooks/alertmanager\""
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~".contains(c);
    if !path.chars().all(allowed) || path.contains("//") || path.ends_with('/') {
        return Err(format!(
            "`{path}` is not a plain path: use letters, digits, `-`, `.`, `_`, `~` between single `/`, no trailing `/`"
        ));
    }
    if PROXY_PATHS.contains(&path)
        || path.starts_with("/api/heartbeats")
        || path.starts_with("/api/v1/heartbeats")
    {
        return Err(format!(
            "`{path}` is served by the proxy itself: give the route a path of its own, like \"/hooks/...\""
        ));
    }
    Ok(())
}

/// The file's (snake_case) name of an ilert field, for messages.
fn file_name(ilert: &str) -> String {
    let mut name = String::with_capacity(ilert.len() + 4);
    for c in ilert.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

fn compile_route(
    spec: &RouteSpec,
    flags: &MappingConfig,
    file: &Located,
) -> Result<Route, FileError> {
    let name = spec.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(file.error(
            spec.name.span(),
            "a route needs a name: name = \"plc-alarms\"",
        ));
    }
    let at = |span: std::ops::Range<usize>, message: String| {
        file.error(span, format!("route `{name}`: {message}"))
    };
    let source = match spec.source.get_ref() {
        SourceName::Kafka => SourceKind::Kafka,
        SourceName::Mqtt => SourceKind::Mqtt,
        SourceName::Http => SourceKind::Http,
    };
    if spec.topics.get_ref().is_empty() {
        return Err(at(
            spec.topics.span(),
            "`topics` is empty: name at least one topic".into(),
        ));
    }
    let mut topics = Vec::new();
    for topic in spec.topics.get_ref() {
        let text = topic.get_ref().trim();
        if text.is_empty() {
            return Err(at(topic.span(), "a topic is empty".into()));
        }
        if source == SourceKind::Kafka && !crate::config::is_kafka_topic_name(text) {
            return Err(at(
                topic.span(),
                format!("`{text}` is not a Kafka topic name (letters, digits, `.`, `_`, `-`)"),
            ));
        }
        if source == SourceKind::Http
            && let Err(why) = http_route_path(text)
        {
            return Err(at(topic.span(), why));
        }
        topics.push(text.to_string());
    }
    let kind = match spec.kind {
        KindName::Event => MessageKind::Event,
        KindName::Heartbeat => MessageKind::Heartbeat,
        KindName::PolicyUpdate => MessageKind::Policy,
    };
    if source == SourceKind::Http && kind == MessageKind::Heartbeat {
        return Err(at(
            spec.source.span(),
            "an http route cannot be a heartbeat: the proxy forwards pings at /api/heartbeats/{key} as they come (a queued ping would say \"alive\" too late)".into(),
        ));
    }
    let compile = |what: &str, source: &toml::Spanned<String>| {
        // `env:NAME` and `file:/path`: a constant read at start (a secret need not be
        // inline), compiled as a jq string literal.
        let text = source.get_ref();
        if text.starts_with("env:") || text.starts_with("file:") {
            let value = crate::config::file::resolve(text)
                .map_err(|m| at(source.span(), format!("{what}: {m}")))?;
            let literal = serde_json::to_string(&value).unwrap_or_default();
            return Expr::compile(&literal)
                .map_err(|e| at(source.span(), format!("{what}: {}", e.message)));
        }
        Expr::compile(text).map_err(|e| {
            // The span covers the quoted string; its text starts one byte in for the
            // usual quotes (and three for triple quotes).
            let quote = file.quote_len(source.span());
            let start = source.span().start + quote + e.offset;
            at(start..start + 1, format!("{what}: {}", e.message))
        })
    };
    let when = spec
        .when
        .as_ref()
        .map(|w| compile("condition `when`", w))
        .transpose()?;
    let fields = match &spec.fields {
        None => None,
        Some(fields) => {
            let set = fields.get_ref().set();
            let allowed: &[&str] = match kind {
                MessageKind::Event => &[
                    "integration_key",
                    "event_type",
                    "summary",
                    "details",
                    "alert_key",
                    "priority",
                    "severity",
                    "links",
                    "images",
                    "comments",
                    "labels",
                    "custom_details",
                    "routing_key",
                ],
                MessageKind::Heartbeat => &["integration_key"],
                MessageKind::Policy => &["email", "shift", "routing_key"],
            };
            let mut compiled = Vec::with_capacity(set.len());
            for (file_name, ilert_name, source) in set {
                if !allowed.contains(&file_name) {
                    return Err(at(
                        source.span(),
                        format!(
                            "field `{file_name}` does not belong to a {} route: it takes {}",
                            kind_text(kind),
                            allowed.join(", ")
                        ),
                    ));
                }
                compiled.push((
                    ilert_name,
                    compile(&format!("field `{file_name}`"), source)?,
                ));
            }
            if kind == MessageKind::Policy {
                for needed in ["email", "routing_key"] {
                    if !compiled.iter().any(|(n, _)| file_name(n) == needed) {
                        return Err(at(
                            fields.span(),
                            format!("a policy_update route needs the field `{needed}`"),
                        ));
                    }
                }
            }
            Some(compiled)
        }
    };
    let mapping = match &fields {
        None => Arc::new(flags.clone()),
        Some(fields) => Arc::new(expression_mapping(flags, fields)),
    };
    let window = match &spec.dedupe_window {
        None => idempotency::DEFAULT_WINDOW,
        Some(text) => {
            if spec.dedupe.is_none() {
                return Err(at(
                    text.span(),
                    "`dedupe_window` without `dedupe`: add the id's expression, dedupe = \".id\""
                        .into(),
                ));
            }
            match crate::cli::parse_duration(text.get_ref()) {
                Ok(window) if window.is_zero() => {
                    return Err(at(
                        text.span(),
                        "`dedupe_window` is 0: remove `dedupe` to deliver every message".into(),
                    ));
                }
                Ok(window) => match idempotency::check_window(window) {
                    Ok(()) => window,
                    Err(why) => return Err(at(text.span(), format!("`dedupe_window` {why}"))),
                },
                Err(message) => return Err(at(text.span(), format!("`dedupe_window`: {message}"))),
            }
        }
    };
    let dedupe = match &spec.dedupe {
        None => None,
        Some(_) if kind != MessageKind::Event => {
            return Err(at(
                spec.dedupe.as_ref().map_or(0..0, |d| d.span()),
                format!(
                    "`dedupe` belongs to event routes: a {} is idempotent at ilert already",
                    match kind {
                        MessageKind::Heartbeat => "heartbeat ping",
                        _ => "policy update",
                    }
                ),
            ));
        }
        Some(text) => Some(RouteDedupe {
            expr: compile("`dedupe`", text)?,
            scope: Arc::from(name.as_str()),
            window,
        }),
    };
    Ok(Route {
        name,
        source,
        topics,
        kind,
        when,
        fields,
        mapping,
        dedupe,
    })
}

/// The mapping that reads what field expressions computed: ilert's field names, no
/// filter, no value maps; `--event_key` only where the route computes no integration key.
fn expression_mapping(flags: &MappingConfig, fields: &[(&'static str, Expr)]) -> MappingConfig {
    let computes_key = fields.iter().any(|(name, _)| *name == "integrationKey");
    MappingConfig {
        event_key: if computes_key {
            None
        } else {
            flags.event_key.clone()
        },
        forward_payload: false,
        policy: PolicyMapping {
            routing_key_fields: vec!["routingKey".into()],
            email: FieldPath::new("email"),
            shift: FieldPath::new("shift"),
            shift_offset: 0,
        },
        ..MappingConfig::default()
    }
}

fn kind_text(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Event => "event",
        MessageKind::Heartbeat => "heartbeat",
        MessageKind::Policy => "policy_update",
    }
}
