//! Delivers a single action for the `event` and `heartbeat` commands: the daemon's
//! retry policy, bounded by `--timeout`, and an exit status that tells the truth.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Exit;
use crate::action::{Action, Outcome, RejectKind};
use crate::cli::{DeliveryArgs, GlobalArgs};
use crate::config::{UsageError, client_settings, delivery_settings};
use crate::delivery::{Context, Deliverer};
use crate::ilert::IlertClient;

/// Sends `action` and describes the result as `what` ("event", "heartbeat ping").
pub async fn deliver(
    global: &GlobalArgs,
    delivery: &DeliveryArgs,
    timeout: Duration,
    action: Action,
    what: &str,
) -> Exit {
    if timeout.is_zero() {
        return UsageError("--timeout must be longer than 0, e.g. --timeout 30s".into()).into();
    }
    let settings = match client_settings(global) {
        Ok(settings) => settings,
        Err(error) => return error.into(),
    };
    let (retry, budgets) = match delivery_settings(delivery) {
        Ok(pair) => pair,
        Err(error) => return error.into(),
    };
    let client = match IlertClient::new(&settings) {
        Ok(client) => client,
        Err(error) => return Exit::Failed(error.to_string()),
    };
    let deliverer = Deliverer::new(client, budgets, retry, None);

    let cancel = CancellationToken::new();
    crate::shutdown::cancel_on_signal(cancel.clone());
    let ctx = Context {
        location: &"command line",
        deadline: Some(Instant::now() + timeout),
        cancel: &cancel,
        slots: None,
        stop_waiting: None,
        revoked: None,
        reserved: Default::default(),
    };
    match deliverer.deliver(&action, &ctx).await {
        Outcome::Delivered {
            status,
            correlation_id,
            ..
        } => {
            match correlation_id {
                Some(id) => println!("ilert accepted the {what} ({status}, correlation-id {id})"),
                None => println!("ilert accepted the {what} ({status})"),
            }
            Exit::Success
        }
        Outcome::Rejected {
            kind: RejectKind::Exhausted,
            reason,
            ..
        } => Exit::GaveUp(format!("the {what} was not delivered: {reason}")),
        Outcome::Rejected { reason, .. } => {
            Exit::Rejected(format!("ilert rejected the {what}: {reason}"))
        }
        Outcome::Skipped { reason } | Outcome::Duplicate { reason } => {
            Exit::Failed(format!("the {what} was skipped: {reason}"))
        }
        Outcome::Coalesced { reason } => {
            println!("the {what} was not sent: {reason}");
            Exit::Success
        }
        Outcome::Failed { reason, .. } => {
            Exit::GaveUp(format!("the {what} was not delivered: {reason}"))
        }
        Outcome::Interrupted { .. } => Exit::Interrupted,
    }
}
