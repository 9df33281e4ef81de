//! The agent watches itself by seed 004's thresholds (consumer lag, p99 delivery time,
//! rejected share, rebalances per hour) and, with `--self_alert_key`, raises one ilert
//! alert per breached condition and resolves it once the condition has been clear for a
//! while.
//!
//! Two tasks: the evaluator reads [`figures::snapshot`] every `--self_check_interval`,
//! moves each condition between clear and breached (breached above the threshold; clear
//! again only after `--self_clear_after` below 90% of it, so a figure that hovers at the
//! line does not flap), publishes the verdicts for `/status` and the wanted state for the
//! sender. The sender brings ilert to the wanted state through the agent's own delivery
//! path (rate limited, retried with backoff), one event at a time, so an ALERT and its
//! RESOLVE are never reordered and an outage delays them without piling them up: only
//! the latest wanted state is sent.
//!
//! ilert's state is unknown at start: an alert an earlier run left open is resolved once
//! the condition has been clear for `--self_clear_after` (a RESOLVE of an alert that is
//! not open does nothing in ilert).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::action::{Action, Outcome};
use crate::config::{SelfWatchConfig, Thresholds};
use crate::delivery::{Context, Deliverer};
use crate::ilert::{CustomDetails, Event, EventType};
use crate::observe::figures::{self, Snapshot};
use crate::secret::Secret;

/// A breached condition clears only below this share of its threshold.
const CLEAR_MARGIN: f64 = 0.9;

/// Seed 004's four conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ConsumerLag,
    P99Delivery,
    ErrorRate,
    Rebalances,
}

impl Kind {
    /// The name in alert keys, `/status` and the metric's label.
    fn name(self) -> &'static str {
        match self {
            Kind::ConsumerLag => "consumer_lag",
            Kind::P99Delivery => "p99_delivery",
            Kind::ErrorRate => "error_rate",
            Kind::Rebalances => "rebalances",
        }
    }

    /// The figure now, and what it is about (the topic of the lag); `None` without data.
    fn figure(self, snapshot: &Snapshot) -> (Option<f64>, Option<String>) {
        match self {
            Kind::ConsumerLag => match &snapshot.consumer_lag {
                Some((topic, lag)) => (Some(*lag as f64), Some(topic.clone())),
                None => (None, None),
            },
            Kind::P99Delivery => (snapshot.p99_delivery, None),
            Kind::ErrorRate => (snapshot.error_rate.map(|(rate, _)| rate), None),
            Kind::Rebalances => (Some(f64::from(snapshot.rebalances_last_hour)), None),
        }
    }

    fn describe(self, value: f64) -> String {
        match self {
            Kind::ConsumerLag => format!("consumer lag {value:.0} messages"),
            Kind::P99Delivery => format!("p99 delivery time {value:.2} s"),
            Kind::ErrorRate => format!("rejected share {:.2}%", value * 100.0),
            Kind::Rebalances => format!("{value:.0} rebalances in the last hour"),
        }
    }

    fn threshold_text(self, threshold: f64) -> String {
        match self {
            Kind::ConsumerLag => format!("{threshold:.0} messages"),
            Kind::P99Delivery => format!("{threshold} s"),
            Kind::ErrorRate => format!("{}%", threshold * 100.0),
            Kind::Rebalances => format!("{threshold:.0} per hour"),
        }
    }
}

/// One condition's verdict and its history.
#[derive(Debug)]
struct Condition {
    kind: Kind,
    threshold: f64,
    breached: bool,
    /// Since when the figure has been below the clear line (for clearing, and at start).
    clear_since: Option<Instant>,
    since: Instant,
    /// Set once the condition's state is known to need telling ilert: at start only after
    /// a full `clear_after`, so that one breach-free period resolves a leftover alert.
    decided: bool,
    figure: Option<f64>,
    /// What the figure is about (the topic of the lag).
    subject: Option<String>,
}

/// What the sender should make ilert show for one condition.
#[derive(Clone, Debug, PartialEq)]
struct Wanted {
    open: bool,
    summary: String,
    details: String,
    custom: Value,
}

pub async fn watch_self(
    config: SelfWatchConfig,
    deliverer: Deliverer,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let started = Instant::now();
    let mut conditions = conditions(&config.thresholds, started);
    let (wanted_tx, wanted_rx) = watch::channel(BTreeMap::<Kind, Wanted>::new());
    let mut sender = match config.alert_key.clone() {
        Some(key) => tokio::spawn(send_wanted(
            key,
            config.agent_name.clone(),
            config.interval,
            wanted_rx,
            deliverer,
            shutdown.clone(),
        )),
        None => tokio::spawn(std::future::pending::<()>()),
    };
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => break,
            // The sender ends only at shutdown; anything else (a panic) is the
            // supervisor's to report, not a silent end of the alerts.
            ended = &mut sender => {
                if shutdown.is_cancelled() {
                    break;
                }
                return Err(format!("the self-monitoring alert sender stopped: {ended:?}"));
            }
        }
        let now = Instant::now();
        let snapshot = figures::snapshot();
        for condition in &mut conditions {
            let (figure, subject) = condition.kind.figure(&snapshot);
            condition.update(figure, subject, now, config.clear_after);
            metrics::gauge!("ilagent_self_condition_breached", "condition" => condition.kind.name())
                .set(if condition.breached { 1.0 } else { 0.0 });
        }
        figures::publish_status(status(&config, &conditions, &snapshot, now));
        let wanted: BTreeMap<Kind, Wanted> = conditions
            .iter()
            .filter(|c| c.decided)
            .map(|c| (c.kind, wanted(&config, c, &conditions, &snapshot)))
            .collect();
        wanted_tx.send_if_modified(|current| {
            // Only a change of state is news; new figures alone are not sent again.
            let changed = current.len() != wanted.len()
                || current
                    .iter()
                    .zip(&wanted)
                    .any(|((a, x), (b, y))| a != b || x.open != y.open);
            if changed {
                *current = wanted;
            }
            changed
        });
    }
    sender.abort();
    Ok(())
}

fn conditions(thresholds: &Thresholds, now: Instant) -> Vec<Condition> {
    let condition = |kind, threshold: f64| Condition {
        kind,
        threshold,
        breached: false,
        clear_since: Some(now),
        since: now,
        decided: false,
        figure: None,
        subject: None,
    };
    let mut all = Vec::new();
    if let Some(lag) = thresholds.consumer_lag {
        all.push(condition(Kind::ConsumerLag, lag as f64));
    }
    if let Some(p99) = thresholds.p99_delivery {
        all.push(condition(Kind::P99Delivery, p99.as_secs_f64()));
    }
    if let Some(rate) = thresholds.error_rate {
        all.push(condition(Kind::ErrorRate, rate));
    }
    if let Some(rebalances) = thresholds.rebalances_per_hour {
        all.push(condition(Kind::Rebalances, f64::from(rebalances)));
    }
    all
}

impl Condition {
    fn update(
        &mut self,
        figure: Option<f64>,
        subject: Option<String>,
        now: Instant,
        clear_after: Duration,
    ) {
        self.figure = figure;
        if subject.is_some() || figure.is_none() {
            self.subject = subject;
        }
        let Some(value) = figure else {
            // No data (no Kafka, no traffic in the window): no breach, but no sign of
            // recovery either; a p99 without deliveries may mean none get through.
            if self.breached {
                self.clear_since = None;
            } else {
                self.clear_to(now, clear_after);
            }
            return;
        };
        if value > self.threshold {
            self.clear_since = None;
            if !self.breached {
                self.breached = true;
                self.since = now;
            }
            self.decided = true;
        } else if value > self.threshold * CLEAR_MARGIN {
            // Between the clear line and the threshold: no change either way.
            self.clear_since = None;
        } else {
            self.clear_to(now, clear_after);
        }
    }

    /// Below the clear line at `now`: clear once it has been so for `clear_after`.
    fn clear_to(&mut self, now: Instant, clear_after: Duration) {
        let clear_since = *self.clear_since.get_or_insert(now);
        if now.duration_since(clear_since) >= clear_after {
            if self.breached {
                self.breached = false;
                self.since = now;
            }
            self.decided = true;
        }
    }
}

fn alert_key(agent_name: &str, kind: Kind) -> String {
    format!("ilagent/{agent_name}/{}", kind.name())
}

fn wanted(
    config: &SelfWatchConfig,
    condition: &Condition,
    all: &[Condition],
    snapshot: &Snapshot,
) -> Wanted {
    let kind = condition.kind;
    let figure = condition
        .figure
        .map_or_else(|| format!("{}: no data", kind.name()), |v| kind.describe(v));
    let about = condition
        .subject
        .as_deref()
        .map(|topic| format!(" (topic {topic})"))
        .unwrap_or_default();
    let threshold = kind.threshold_text(condition.threshold);
    let verdict = if condition.breached {
        "above"
    } else {
        "back below"
    };
    let summary = format!(
        "ilagent {}: {figure}{about}, {verdict} {threshold}",
        config.agent_name
    );
    let mut details = String::from("Current figures of the agent:\n");
    for other in all {
        details.push_str(&format!(
            "- {} (threshold {}){}\n",
            other.figure.map_or_else(
                || format!("{}: no data", other.kind.name()),
                |v| other.kind.describe(v)
            ),
            other.kind.threshold_text(other.threshold),
            if other.breached { ": BREACHED" } else { "" }
        ));
    }
    Wanted {
        open: condition.breached,
        summary,
        details,
        custom: json!({
            "agent": config.agent_name,
            "condition": kind.name(),
            "value": condition.figure,
            "threshold": condition.threshold,
            "topic": condition.subject,
            "figures": figures_json(snapshot),
        }),
    }
}

fn figures_json(snapshot: &Snapshot) -> Value {
    json!({
        "consumer_lag": snapshot.consumer_lag.as_ref().map(|(topic, lag)| json!({"topic": topic, "lag": lag})),
        "p99_delivery_seconds": snapshot.p99_delivery,
        "error_rate": snapshot.error_rate.map(|(rate, _)| rate),
        "settled_in_window": snapshot.error_rate.map_or(0, |(_, n)| n),
        "rebalances_last_hour": snapshot.rebalances_last_hour,
    })
}

fn status(
    config: &SelfWatchConfig,
    conditions: &[Condition],
    snapshot: &Snapshot,
    now: Instant,
) -> Value {
    json!({
        "agent": config.agent_name,
        "alerting": config.alert_key.is_some(),
        "conditions": conditions.iter().map(|c| json!({
            "name": c.kind.name(),
            "state": if c.breached { "breached" } else { "clear" },
            "for_seconds": now.duration_since(c.since).as_secs(),
            "value": c.figure,
            "threshold": c.threshold,
            "topic": c.subject,
            "alert_key": alert_key(&config.agent_name, c.kind),
        })).collect::<Vec<_>>(),
        "figures": figures_json(snapshot),
    })
}

/// Brings ilert to the wanted state, one event at a time; looks again every `interval`
/// for what failed.
async fn send_wanted(
    key: Secret,
    agent_name: String,
    interval: Duration,
    mut wanted: watch::Receiver<BTreeMap<Kind, Wanted>>,
    deliverer: Deliverer,
    shutdown: CancellationToken,
) {
    // What ilert was last told per condition; absent until something was sent.
    let mut told: BTreeMap<Kind, bool> = BTreeMap::new();
    loop {
        let current = wanted.borrow_and_update().clone();
        for (kind, want) in &current {
            if told.get(kind) == Some(&want.open) {
                continue;
            }
            let event_type = if want.open {
                EventType::Alert
            } else {
                EventType::Resolve
            };
            let mut event = Event::new(key.clone(), event_type);
            event.alert_key = Some(alert_key(&agent_name, *kind));
            event.summary = Some(want.summary.clone());
            event.details = Some(want.details.clone());
            event.custom_details = want.custom.as_object().cloned().map(CustomDetails::from);
            let location = format!("self-monitoring {}", kind.name());
            let ctx = Context {
                location: &location,
                deadline: None,
                cancel: &shutdown,
                slots: None,
                stop_waiting: None,
                revoked: None,
                reserved: Default::default(),
            };
            match deliverer
                .deliver(&Action::Event(Box::new(event)), &ctx)
                .await
            {
                Outcome::Delivered { .. } => {
                    tracing::info!(
                        condition = kind.name(),
                        open = want.open,
                        "self-monitoring alert sent"
                    );
                    told.insert(*kind, want.open);
                }
                Outcome::Interrupted { .. } => return,
                other => {
                    tracing::error!(condition = kind.name(), outcome = ?other, "self-monitoring alert not delivered; tried again later");
                }
            }
        }
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag_condition(now: Instant) -> Condition {
        let thresholds = Thresholds {
            consumer_lag: Some(10_000),
            p99_delivery: None,
            error_rate: None,
            rebalances_per_hour: None,
        };
        conditions(&thresholds, now).remove(0)
    }

    const CLEAR_AFTER: Duration = Duration::from_secs(60);

    #[test]
    fn a_figure_above_the_line_breaches_at_once_and_clears_only_after_a_quiet_period() {
        let start = Instant::now();
        let mut lag = lag_condition(start);
        lag.update(Some(10_001.0), None, start, CLEAR_AFTER);
        assert!(lag.breached && lag.decided);
        lag.update(
            Some(100.0),
            None,
            start + Duration::from_secs(10),
            CLEAR_AFTER,
        );
        assert!(lag.breached, "not yet clear for long enough");
        lag.update(
            Some(100.0),
            None,
            start + Duration::from_secs(70),
            CLEAR_AFTER,
        );
        assert!(!lag.breached);
    }

    #[test]
    fn a_figure_hovering_at_the_line_does_not_flap() {
        let start = Instant::now();
        let mut lag = lag_condition(start);
        lag.update(Some(10_001.0), None, start, CLEAR_AFTER);
        for i in 1..100u64 {
            let figure = if i % 2 == 0 { 9_999.0 } else { 10_001.0 };
            lag.update(
                Some(figure),
                None,
                start + Duration::from_secs(i * 30),
                CLEAR_AFTER,
            );
            assert!(lag.breached, "cleared at step {i}");
        }
        // Exactly at the line is not above it.
        let mut fresh = lag_condition(start);
        fresh.update(Some(10_000.0), None, start, CLEAR_AFTER);
        assert!(!fresh.breached);
    }

    #[test]
    fn a_dip_below_the_clear_line_that_does_not_last_restarts_the_quiet_period() {
        let start = Instant::now();
        let mut lag = lag_condition(start);
        lag.update(Some(20_000.0), None, start, CLEAR_AFTER);
        let at = |s: u64| start + Duration::from_secs(s);
        lag.update(Some(8_000.0), None, at(10), CLEAR_AFTER);
        lag.update(Some(9_500.0), None, at(50), CLEAR_AFTER);
        lag.update(Some(8_000.0), None, at(80), CLEAR_AFTER);
        assert!(lag.breached, "the quiet period restarted at 80 s");
        lag.update(Some(8_000.0), None, at(141), CLEAR_AFTER);
        assert!(!lag.breached);
    }

    #[test]
    fn no_data_keeps_a_breached_condition_breached() {
        let start = Instant::now();
        let mut lag = lag_condition(start);
        lag.update(Some(20_000.0), None, start, CLEAR_AFTER);
        lag.update(None, None, start + Duration::from_secs(600), CLEAR_AFTER);
        assert!(lag.breached, "no deliveries is no recovery");
    }

    #[test]
    fn at_start_a_condition_is_decided_clear_only_after_a_quiet_period() {
        let start = Instant::now();
        let mut lag = lag_condition(start);
        lag.update(None, None, start + Duration::from_secs(10), CLEAR_AFTER);
        assert!(!lag.decided, "a leftover alert is not resolved at once");
        lag.update(None, None, start + Duration::from_secs(61), CLEAR_AFTER);
        assert!(lag.decided && !lag.breached);
    }
}
