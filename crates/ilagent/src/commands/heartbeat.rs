//! `ilagent heartbeat`: one heartbeat ping.

use super::{Exit, oneshot};
use crate::action::Action;
use crate::cli::{GlobalArgs, HeartbeatArgs};
use crate::config::{UsageError, secret};

pub async fn run(global: &GlobalArgs, args: HeartbeatArgs) -> Exit {
    let Some(key) = secret(args.integration_key.as_deref()) else {
        return UsageError(
            "no heartbeat key: pass -k/--integration_key KEY or set ILERT_INTEGRATION_KEY".into(),
        )
        .into();
    };
    oneshot::deliver(
        global,
        &args.delivery,
        args.timeout,
        Action::Heartbeat(key),
        "heartbeat ping",
    )
    .await
}
