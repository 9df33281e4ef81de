//! Route and map, the one step every source runs between receiving a message and handing
//! it to the dispatcher: which kind of message its topic carries (the `-e`, `-r` and
//! `--policy_topic` rules, [`Routes`]), then what mapping makes of its payload.
//!
//! The SQLite queue stores raw messages and runs the same step again at delivery, so a
//! message maps to the same action whichever way it travels.

use std::sync::Arc;

use crate::action::Action;
use crate::mapping::{self, MappingConfig, MessageKind};
use crate::message::Message;
use crate::sources::route::Routes;

/// The metrics label of a message whose topic no rule routes.
const UNROUTED: &str = "(no route)";

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
}

impl MessageRouter {
    /// Messages whose topic decides their kind.
    pub fn by_topic(routes: Routes, mapping: Arc<MappingConfig>) -> Self {
        MessageRouter {
            kinds: Kinds::ByTopic(routes),
            mapping,
        }
    }

    /// Messages that are all of one kind.
    pub fn fixed(kind: MessageKind, mapping: Arc<MappingConfig>) -> Self {
        MessageRouter {
            kinds: Kinds::Fixed(kind),
            mapping,
        }
    }

    /// The `topic` label of the message's metrics: the configured topic or filter that
    /// routes it (never the concrete topic a wildcard matched, so the label set stays as
    /// small as the configuration); for a fixed kind, the topic itself (the proxy's path).
    pub fn topic_label(&self, message: &Message) -> String {
        match &self.kinds {
            Kinds::Fixed(_) => message.meta.topic.clone(),
            Kinds::ByTopic(routes) => routes
                .filter_of(&message.meta.topic)
                .unwrap_or(UNROUTED)
                .to_string(),
        }
    }

    /// What `message` asks for.
    pub fn action_for(&self, message: &Message) -> Action {
        let kind = match &self.kinds {
            Kinds::Fixed(kind) => *kind,
            Kinds::ByTopic(routes) => match routes.kind_of(&message.meta.topic) {
                Some(kind) => kind,
                None => {
                    return Action::Invalid(crate::printable::reason(format!(
                        "no route for topic `{}`: it matches none of -e, -r and --policy_topic",
                        message.meta.topic
                    )));
                }
            },
        };
        mapping::map(&message.payload, &message.meta, kind, &self.mapping)
    }
}
