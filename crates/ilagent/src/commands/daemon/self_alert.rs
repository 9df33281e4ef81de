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
use crate::ilert::{Event, EventType};
use crate::observe::figures::{self, Snapshot};

/// A breached condition clears only below this share of its threshold.
const CLEAR_MARGIN: f64 = 0.9;

/// The names in alert keys, `/status` and the metric.
const CONSUMER_LAG: &str = "consumer_lag";
const P99_DELIVERY: &str = "p99_delivery";
const ERROR_RATE: &str = "error_rate";
const REBALANCES: &str = "rebalances";

/// One condition's verdict and its history.
#[derive(Debug)]
struct Condition {
    name: &'static str,
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
    let (wanted_tx, wanted_rx) = watch::channel(BTreeMap::<&'static str, Wanted>::new());
    let sender = config.alert_key.clone().map(|key| {
        tokio::spawn(send_wanted(
            key,
            config.agent_name.clone(),
            config.interval,
            wanted_rx,
            deliverer,
            shutdown.clone(),
        ))
    });
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let now = Instant::now();
        let snapshot = figures::snapshot();
        for condition in &mut conditions {
            let (figure, subject) = figure_of(condition.name, &snapshot);
            condition.update(figure, subject, now, config.clear_after);
            metrics::gauge!("ilagent_self_condition_breached", "condition" => condition.name)
                .set(if condition.breached { 1.0 } else { 0.0 });
        }
        figures::publish_status(status(&config, &conditions, &snapshot, now));
        let wanted: BTreeMap<&'static str, Wanted> = conditions
            .iter()
            .filter(|c| c.decided)
            .map(|c| (c.name, wanted(&config, c, &conditions, &snapshot)))
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
    if let Some(sender) = sender {
        sender.abort();
    }
    Ok(())
}

fn conditions(thresholds: &Thresholds, now: Instant) -> Vec<Condition> {
    let condition = |name, threshold: f64| Condition {
        name,
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
        all.push(condition(CONSUMER_LAG, lag as f64));
    }
    if let Some(p99) = thresholds.p99_delivery {
        all.push(condition(P99_DELIVERY, p99.as_secs_f64()));
    }
    if let Some(rate) = thresholds.error_rate {
        all.push(condition(ERROR_RATE, rate));
    }
    if let Some(rebalances) = thresholds.rebalances_per_hour {
        all.push(condition(REBALANCES, f64::from(rebalances)));
    }
    all
}

fn figure_of(name: &str, snapshot: &Snapshot) -> (Option<f64>, Option<String>) {
    match name {
        CONSUMER_LAG => match &snapshot.consumer_lag {
            Some((topic, lag)) => (Some(*lag as f64), Some(topic.clone())),
            None => (None, None),
        },
        P99_DELIVERY => (snapshot.p99_delivery, None),
        ERROR_RATE => (snapshot.error_rate.map(|(rate, _)| rate), None),
        _ => (Some(f64::from(snapshot.rebalances_last_hour)), None),
    }
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
        // No figure (no Kafka, no traffic) is no breach.
        let value = figure.unwrap_or(0.0);
        if value > self.threshold {
            self.clear_since = None;
            if !self.breached {
                self.breached = true;
                self.since = now;
            }
            self.decided = true;
            return;
        }
        if value > self.threshold * CLEAR_MARGIN {
            // Between the clear line and the threshold: no change either way.
            self.clear_since = None;
            return;
        }
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

fn describe(name: &str, value: f64) -> String {
    match name {
        CONSUMER_LAG => format!("consumer lag {value:.0} messages"),
        P99_DELIVERY => format!("p99 delivery time {value:.2} s"),
        ERROR_RATE => format!("rejected share {:.2}%", value * 100.0),
        _ => format!("{value:.0} rebalances in the last hour"),
    }
}

fn threshold_text(name: &str, threshold: f64) -> String {
    match name {
        CONSUMER_LAG => format!("{threshold:.0} messages"),
        P99_DELIVERY => format!("{threshold} s"),
        ERROR_RATE => format!("{}%", threshold * 100.0),
        _ => format!("{threshold:.0} per hour"),
    }
}

fn wanted(
    config: &SelfWatchConfig,
    condition: &Condition,
    all: &[Condition],
    snapshot: &Snapshot,
) -> Wanted {
    let figure = describe(condition.name, condition.figure.unwrap_or(0.0));
    let about = condition
        .subject
        .as_deref()
        .map(|topic| format!(" (topic {topic})"))
        .unwrap_or_default();
    let threshold = threshold_text(condition.name, condition.threshold);
    let summary = if condition.breached {
        format!(
            "ilagent {}: {figure}{about}, above {threshold}",
            config.agent_name
        )
    } else {
        format!(
            "ilagent {}: {figure}{about}, back below {threshold}",
            config.agent_name
        )
    };
    let mut details = String::from("Current figures of the agent:\n");
    for other in all {
        details.push_str(&format!(
            "- {} (threshold {}){}\n",
            other.figure.map_or_else(
                || format!("{}: no data", other.name),
                |v| describe(other.name, v)
            ),
            threshold_text(other.name, other.threshold),
            if other.breached { ": BREACHED" } else { "" }
        ));
    }
    Wanted {
        open: condition.breached,
        summary,
        details,
        custom: json!({
            "agent": config.agent_name,
            "condition": condition.name,
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
        "settled_5m": snapshot.error_rate.map_or(0, |(_, n)| n),
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
            "name": c.name,
            "state": if c.breached { "breached" } else { "clear" },
            "for_seconds": now.duration_since(c.since).as_secs(),
            "value": c.figure,
            "threshold": c.threshold,
            "topic": c.subject,
            "alert_key": format!("ilagent/{}/{}", config.agent_name, c.name),
        })).collect::<Vec<_>>(),
        "figures": figures_json(snapshot),
    })
}

/// Brings ilert to the wanted state, one event at a time; looks again every `interval`
/// for what failed.
async fn send_wanted(
    key: crate::secret::Secret,
    agent_name: String,
    interval: Duration,
    mut wanted: watch::Receiver<BTreeMap<&'static str, Wanted>>,
    deliverer: Deliverer,
    shutdown: CancellationToken,
) {
    // What ilert was last told per condition: `None` until something was sent.
    let mut told: BTreeMap<&'static str, bool> = BTreeMap::new();
    loop {
        let current = wanted.borrow_and_update().clone();
        for (name, want) in &current {
            if told.get(name) == Some(&want.open) {
                continue;
            }
            let mut event = Event::new(
                key.clone(),
                if want.open {
                    EventType::Alert
                } else {
                    EventType::Resolve
                },
            );
            event.alert_key = Some(format!("ilagent/{agent_name}/{name}"));
            event.summary = Some(want.summary.clone());
            event.details = Some(want.details.clone());
            event.custom_details = want.custom.as_object().cloned();
            let location = format!("self-monitoring {name}");
            let ctx = Context {
                location: &location,
                deadline: None,
                cancel: &shutdown,
                slots: None,
                stop_waiting: None,
                revoked: None,
            };
            match deliverer
                .deliver(&Action::Event(Box::new(event)), &ctx)
                .await
            {
                Outcome::Delivered { .. } => {
                    tracing::info!(
                        condition = name,
                        open = want.open,
                        "self-monitoring alert sent"
                    );
                    told.insert(name, want.open);
                }
                Outcome::Interrupted { .. } => return,
                other => {
                    tracing::error!(condition = name, outcome = ?other, "self-monitoring alert not delivered; tried again later");
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
    fn at_start_a_condition_is_decided_clear_only_after_a_quiet_period() {
        let start = Instant::now();
        let mut lag = lag_condition(start);
        lag.update(None, None, start + Duration::from_secs(10), CLEAR_AFTER);
        assert!(!lag.decided, "a leftover alert is not resolved at once");
        lag.update(None, None, start + Duration::from_secs(61), CLEAR_AFTER);
        assert!(lag.decided && !lag.breached);
    }
}
