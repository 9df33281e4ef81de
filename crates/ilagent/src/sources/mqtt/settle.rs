//! Settling an MQTT message in non-buffered mode: record a rejected message in the
//! dead-letter table, then count it done for the acknowledgement order; count delivered and
//! skipped ones done at once; leave interrupted ones unacknowledged so that the broker
//! redelivers them. A message that was spilled ([`super::spill`]) settles its row instead.
//! The acknowledgements themselves leave from one place, in arrival order
//! ([`super::ledger`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::client::{AckToken, Client};
use super::connection::Shared;
use super::ledger::{Ledger, RowState, Tracked};
use super::spill::Spill;
use crate::action::Outcome;
use crate::message::Metadata;
use crate::observe::events::{self, Disposition};
use crate::pipeline::{Job, Settle};
use crate::queue::Queue;

/// How a message is acknowledged: its place in the ledger (QoS 0: none, nothing to
/// acknowledge).
pub struct MqttTicket {
    pub tracked: Option<Arc<Tracked>>,
}

/// Sends acknowledgements through a clone of the client, never from the connection task.
#[derive(Clone)]
pub struct Acker {
    pub client: Client,
    pub shared: Arc<Shared>,
}

impl Acker {
    /// Acknowledges `token` if the connection it arrived on is still the current one.
    pub async fn ack(&self, token: &AckToken, epoch: u64, meta: Option<&Metadata>) {
        if epoch != self.shared.epoch.load(Ordering::Acquire) {
            if let Some(meta) = meta {
                events::mqtt_ack_skipped(meta);
            }
            return;
        }
        if let Err(error) = self.client.ack(token).await {
            // Only when the event loop is gone, i.e. the source has stopped.
            tracing::debug!(%error, "acknowledgement not sent");
        }
    }
}

pub struct MqttSettler {
    pub ledger: Arc<Ledger>,
    pub spill: Spill,
    pub dead_letters: Queue,
    /// Stops dead-letter retries at the end of the shutdown drain.
    pub abort: CancellationToken,
}

/// What the settle step does, decided under the message's state lock.
enum Next {
    /// Not spilled: settle it live.
    Live,
    /// Spilled: settle its row.
    Held(i64),
    /// Its row is being written: the spill settles the row with the parked outcome.
    Parked,
}

impl Settle for MqttSettler {
    type Ticket = MqttTicket;

    async fn settle(&self, job: Job<MqttTicket>, outcome: Outcome) {
        let next = match &job.ticket.tracked {
            None => Next::Live,
            Some(tracked) => {
                let mut state = tracked.state();
                match &*state {
                    RowState::Live => {
                        *state = match &outcome {
                            Outcome::Interrupted { .. } | Outcome::Failed { .. } => {
                                RowState::Abandoned
                            }
                            Outcome::Rejected { .. } => RowState::Settling,
                            _ => RowState::Done,
                        };
                        Next::Live
                    }
                    RowState::Writing(_) => {
                        *state = RowState::Writing(Some(outcome.clone()));
                        Next::Parked
                    }
                    RowState::Held(id) => {
                        let id = *id;
                        *state = RowState::Done;
                        Next::Held(id)
                    }
                    RowState::Settling | RowState::Done | RowState::Abandoned => Next::Parked,
                }
            }
        };
        let meta = &job.message.meta;
        match next {
            Next::Live => {}
            Next::Held(id) => {
                events::settled(meta, &outcome, disposition(&outcome));
                if let Some(tracked) = &job.ticket.tracked {
                    // Boxed, as the dead-letter write below: rare, and large futures.
                    Box::pin(self.spill.settle_held(id, tracked, &outcome)).await;
                }
                return;
            }
            Next::Parked => {
                events::settled(meta, &outcome, disposition(&outcome));
                return;
            }
        }
        match &outcome {
            Outcome::Interrupted { .. } | Outcome::Failed { .. } => {
                events::settled(meta, &outcome, Disposition::Normal);
                return;
            }
            Outcome::Rejected { .. } => {
                if !Box::pin(self.dead_letter(&job, &outcome)).await {
                    if let Some(tracked) = &job.ticket.tracked {
                        *tracked.state() = RowState::Abandoned;
                    }
                    return;
                }
                if let Some(tracked) = &job.ticket.tracked {
                    *tracked.state() = RowState::Done;
                }
            }
            _ => {}
        }
        events::settled(meta, &outcome, disposition(&outcome));
        if let Some(tracked) = &job.ticket.tracked {
            self.ledger.done(tracked);
        }
    }
}

fn disposition(outcome: &Outcome) -> Disposition {
    match outcome {
        Outcome::Rejected { .. } => Disposition::DeadLettered,
        _ => Disposition::Normal,
    }
}

impl MqttSettler {
    /// Writes the dead-letter row; `false` only if shutdown gave up on a failing write
    /// (the message then stays unacknowledged and comes back).
    async fn dead_letter(&self, job: &Job<MqttTicket>, outcome: &Outcome) -> bool {
        crate::queue::dead_letter::record(
            &self.dead_letters,
            &job.message,
            &job.action,
            outcome,
            &self.abort,
        )
        .await
    }
}
