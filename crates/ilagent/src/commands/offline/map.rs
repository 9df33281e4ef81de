//! `ilagent map --config FILE --topic T [--key K] < payload`: prints what the agent would
//! do with the message (one JSON object), exit 0, or 1 for a message that is invalid.

use std::io::Read;

use super::Offline;
use crate::cli::{GlobalArgs, MapArgs, MapSource};
use crate::commands::Exit;
use crate::config::UsageError;
use crate::message::{Message, Metadata, SourceKind};
use crate::routes::preview::{Decision, preview};
use crate::sources::route::mqtt_filter_matches;

pub(crate) fn run(global: &GlobalArgs, args: MapArgs) -> Exit {
    let offline = match Offline::load(global, "map") {
        Ok(offline) => offline,
        Err(error) => return error.into(),
    };
    let mut payload = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut payload) {
        return Exit::Failed(format!(
            "cannot read the message from standard input: {error}"
        ));
    }
    let source = match args.source {
        Some(MapSource::Kafka) => SourceKind::Kafka,
        Some(MapSource::Mqtt) => SourceKind::Mqtt,
        Some(MapSource::Http) => SourceKind::Http,
        None => source_of(&offline, &args.topic),
    };
    if args.topic.trim().is_empty() {
        return UsageError::new("--topic is empty: give the topic the message arrives on").into();
    }
    let mut meta = Metadata::new(source, args.topic.clone());
    meta.key = args.key;
    meta.headers = args
        .headers
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    let message = Message { payload, meta };
    let shown = preview(
        &offline.router(source),
        &message,
        offline.event_path.as_ref(),
    );
    println!("{}", shown.to_json());
    match shown.decision {
        Decision::Invalid(_) => Exit::Rejected("the message is invalid".into()),
        _ => Exit::Success,
    }
}

/// The source whose routes have the topic: HTTP for a path, MQTT when only MQTT filters
/// match it.
fn source_of(offline: &Offline, topic: &str) -> SourceKind {
    if topic.starts_with('/') {
        return SourceKind::Http;
    }
    let routes = offline.routes().routes();
    let kafka = routes
        .iter()
        .any(|r| r.source() == SourceKind::Kafka && r.topics().iter().any(|t| t == topic));
    let mqtt = routes.iter().any(|r| {
        r.source() == SourceKind::Mqtt && r.topics().iter().any(|f| mqtt_filter_matches(f, topic))
    });
    if mqtt && !kafka {
        SourceKind::Mqtt
    } else {
        SourceKind::Kafka
    }
}
