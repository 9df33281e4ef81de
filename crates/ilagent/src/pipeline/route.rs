//! Route and map, the one step every source runs between receiving a message and handing
//! it to the dispatcher: which kind of message its topic carries (the `-e`, `-r` and
//! `--policy_topic` rules, [`Routes`]), then what mapping makes of its payload.
//!
//! Configured routes (`[[route]]` in the configuration file, [`crate::routes`]) come
//! first: the first route whose topic and condition match takes the message. The flag
//! topics are the built-in default route behind them; a message of a routes-only topic that
//! no route takes is skipped, and counted as such.
//!
//! The SQLite queue stores raw messages and runs the same step again at delivery, so a
//! message maps to the same action whichever way it travels.
//!
//! An event's idempotency id comes from here too: a route's `dedupe` expression, or, for
//! the HTTP proxy, the request's `Idempotency-Key` header ([`IDEMPOTENCY_KEY`]).

use std::sync::Arc;
use std::time::Duration;

use crate::action::{Action, DedupeId};
use crate::mapping::{self, MappingConfig, MessageKind};
use crate::message::Message;
use crate::routes::{RouteTable, Routed};
use crate::sources::route::Routes;

/// The metrics label of a message whose topic no rule routes.
const UNROUTED: &str = "(no route)";

/// The header (lower case, as stored) whose value is a proxied event's idempotency id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Where the kind of a message comes from.
#[derive(Clone, Debug)]
enum Kinds {
    /// From its topic.
    ByTopic(Routes),
    /// Always the same (the HTTP proxy takes events only).
    Fixed(MessageKind),
}

/// Route and map. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MessageRouter {
    kinds: Kinds,
    mapping: Arc<MappingConfig>,
    /// The configured routes, ahead of the flag topics.
    table: Arc<RouteTable>,
    /// How long an `Idempotency-Key` suppresses its duplicates; `None`: the header is
    /// ignored.
    idempotency_window: Option<Duration>,
}

impl MessageRouter {
    /// Messages whose topic decides their kind.
    pub fn by_topic(routes: Routes, mapping: Arc<MappingConfig>) -> Self {
        MessageRouter {
            kinds: Kinds::ByTopic(routes),
            mapping,
            table: Arc::default(),
            idempotency_window: None,
        }
    }

    /// The configured routes go first (see the module docs).
    pub fn with_routes(mut self, table: Arc<RouteTable>) -> Self {
        self.table = table;
        self
    }

    /// Events get the idempotency id of their `Idempotency-Key` header, for `window`
    /// (`Duration::ZERO`: the header is ignored).
    pub fn with_idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = (!window.is_zero()).then_some(window);
        self
    }

    /// Messages that are all of one kind.
    pub fn fixed(kind: MessageKind, mapping: Arc<MappingConfig>) -> Self {
        MessageRouter {
            kinds: Kinds::Fixed(kind),
            mapping,
            table: Arc::default(),
            idempotency_window: None,
        }
    }

    /// The `topic` label of the message's metrics: the configured topic or filter that
    /// routes it (never the concrete topic a wildcard matched, so the label set stays as
    /// small as the configuration); for a fixed kind, the topic itself (the proxy's path).
    pub fn topic_label(&self, message: &Message) -> String {
        match &self.kinds {
            Kinds::Fixed(_) => message.meta.topic.to_string(),
            Kinds::ByTopic(routes) => routes
                .filter_of(&message.meta.topic)
                .unwrap_or(UNROUTED)
                .to_string(),
        }
    }

    /// What `message` asks for.
    pub fn action_for(&self, message: &Message) -> Action {
        self.route_and_map(message).1
    }

    /// What `message` asks for, and the configured route that decided it (`None`: the
    /// flag mapping did).
    pub fn route_and_map(&self, message: &Message) -> (Option<String>, Action) {
        let tried = match self.table.route(message) {
            Routed::Taken { route, action } => {
                return (Some(route), self.with_header_id(message, action));
            }
            Routed::NoneMatched { tried } => Some(tried),
            Routed::NoRouteHasTopic => None,
        };
        let kind = match (&self.kinds, &tried) {
            // A route's path on the proxy is the route's alone.
            (Kinds::Fixed(_), Some(_)) => None,
            (Kinds::Fixed(kind), None) => Some(*kind),
            (Kinds::ByTopic(routes), _) => routes.kind_of(&message.meta.topic),
        };
        let action = match (kind, tried) {
            (Some(kind), _) => mapping::map(&message.payload, &message.meta, kind, &self.mapping),
            (None, Some(tried)) => Action::Skip(crate::printable::reason(format!(
                "no route took it: the conditions of {} do not hold",
                tried
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            (None, None) => Action::Invalid(crate::printable::reason(format!(
                "no route for topic `{}`: it matches none of -e, -r and --policy_topic",
                message.meta.topic
            ))),
        };
        (None, self.with_header_id(message, action))
    }

    /// The event with the id of the message's `Idempotency-Key` header, where the router
    /// honours it and the event has no id from its route.
    fn with_header_id(&self, message: &Message, action: Action) -> Action {
        let Some(window) = self.idempotency_window else {
            return action;
        };
        let mut event = match action {
            Action::Event(event) if event.dedupe.is_none() => event,
            other => return other,
        };
        let header = message
            .meta
            .headers
            .iter()
            .find(|(name, _)| name == IDEMPOTENCY_KEY);
        if let Some((_, value)) = header {
            event.dedupe = Some(Box::new(DedupeId::of_request(
                event.integration_key.expose(),
                String::from_utf8_lossy(value).into_owned(),
                window,
            )));
        }
        Action::Event(event)
    }
}
