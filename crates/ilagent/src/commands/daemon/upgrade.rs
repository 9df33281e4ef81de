//! Switching from ilagent 0.9 in place: at start, the rows that 0.9 left pending in its own
//! tables of the `-f` file move into the queue (see [`crate::queue::store::Imported`] for
//! the tables), so that nothing queued during an ilert outage is lost by the switch.

use std::sync::Arc;

use crate::config::{DaemonConfig, Topics};
use crate::mapping::{MappingConfig, MessageKind};
use crate::message::{Message, Metadata, SourceKind};
use crate::pipeline::MessageRouter;
use crate::queue::{NewRow, Queue, QueueError, order_key_column};
use crate::sources::route::{Routes, TopicSyntax};

/// Moves 0.9's pending rows into the queue and logs how many; returns whether the file
/// now holds rows of the HTTP proxy's kind (imported or left by an earlier run), which
/// need the proxy's worker even when this run has no `-p`.
pub(super) async fn import_and_check(
    queue: &Queue,
    config: &DaemonConfig,
) -> Result<bool, QueueError> {
    let proxy = MessageRouter::fixed(MessageKind::Event, Arc::new(MappingConfig::default()));
    let mqtt = mqtt_router(&config.topics, &config.mapping);
    let imported = queue
        .run(move |store| {
            store.import_ilagent_09(&|row: &NewRow| {
                let message = Message {
                    payload: row.payload.clone(),
                    meta: Metadata::new(row.source, row.topic.clone()),
                };
                let router = if row.source == SourceKind::Mqtt {
                    &mqtt
                } else {
                    &proxy
                };
                order_key_column(&router.action_for(&message))
            })
        })
        .await?;
    if imported.total() > 0 {
        tracing::info!(
            file = queue.path(),
            events = imported.events,
            mqtt_messages = imported.mqtt_messages,
            "moved the rows ilagent 0.9 left pending into the queue: they are delivered in their order"
        );
    }
    queue.run(|store| store.has_rows_of(SourceKind::Http)).await
}

fn mqtt_router(topics: &Topics, mapping: &MappingConfig) -> MessageRouter {
    MessageRouter::by_topic(
        Routes::new(topics, TopicSyntax::Mqtt),
        Arc::new(mapping.clone()),
    )
}
