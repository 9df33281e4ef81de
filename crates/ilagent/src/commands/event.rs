//! `ilagent event`: one event from flags to ilert.

use super::{Exit, oneshot};
use crate::action::Action;
use crate::cli::{EventArgs, GlobalArgs};
use crate::config::{UsageError, secret};
use crate::ilert::event::{Image, Link};
use crate::ilert::{Event, EventType};

pub async fn run(global: &GlobalArgs, args: EventArgs) -> Exit {
    match build(&args) {
        Ok(event) => {
            oneshot::deliver(
                global,
                &args.delivery,
                args.timeout,
                Action::Event(Box::new(event)),
                "event",
            )
            .await
        }
        Err(error) => error.into(),
    }
}

fn build(args: &EventArgs) -> Result<Event, UsageError> {
    let key = secret(args.integration_key.as_deref()).ok_or_else(|| {
        UsageError(
            "no integration key: pass -k/--integration_key KEY or set ILERT_INTEGRATION_KEY".into(),
        )
    })?;
    let summary = args
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if args.event_type == EventType::Alert && summary.is_none() {
        return Err(UsageError(
            "-s/--summary is required for ALERT events: say what happened, e.g. -s 'disk full on db-1'".into(),
        ));
    }
    let mut event = Event::new(key, args.event_type);
    event.summary = summary.map(str::to_string);
    event.alert_key = args.alert_key.clone();
    event.priority = args.priority;
    event.details = args.details.clone();
    event.images = args
        .images
        .iter()
        .map(|src| Image {
            src: src.clone(),
            href: None,
            alt: None,
        })
        .collect();
    event.links = args
        .links
        .iter()
        .map(|href| Link {
            href: href.clone(),
            text: None,
        })
        .collect();
    Ok(event)
}
