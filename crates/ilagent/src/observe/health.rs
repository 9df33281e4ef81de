//! Readiness of the agent's parts, in one registry that every source reports to.
//!
//! `/ready` and the agent's own heartbeat (`-b`) read the same answer, so a probe and the
//! alarm in ilert never disagree. The daemon registers each component it runs (a source,
//! the HTTP proxy, the SQLite queue); a component is not ready until it says so, and a
//! report for a component that was never registered is ignored, so only what is
//! configured counts. A component that must report regularly (the Kafka consumer, whose
//! statistics arrive through its poll loop) is "stuck" once its reports stop: that is how
//! a consumer that hangs, rather than fails, is noticed.
//!
//! The registry is process-wide, like the metrics recorder: sources report from wherever
//! they notice a change (a librdkafka callback, an event function) without a handle being
//! threaded through code that has nothing else to do with it.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::events;
use crate::queue::{Queue, Stats};

pub const KAFKA: &str = "kafka";
pub const MQTT: &str = "mqtt";
pub const HTTP: &str = "http";
pub const QUEUE: &str = "queue";

/// The longest error text kept per component.
const MAX_ERROR_LEN: usize = 300;
/// How long the queue probe may take before the queue counts as not writable.
const QUEUE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

struct Component {
    ready: bool,
    /// Whether it was ready at some point: before that, not being ready is the expected
    /// state of a component that is still connecting.
    was_ready: bool,
    state: String,
    last_error: Option<String>,
    /// When `ready` last changed.
    changed: Instant,
    /// When the component last reported anything.
    reported: Instant,
    /// Not ready once no report came for this long.
    stale_after: Option<Duration>,
}

/// One component's readiness, as `/ready` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentReport {
    pub name: &'static str,
    pub ready: bool,
    pub state: String,
    pub last_error: Option<String>,
    /// Seconds since `ready` last changed.
    pub for_seconds: u64,
}

/// Every registered component, and whether all of them are ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ready: bool,
    pub components: Vec<ComponentReport>,
}

impl Report {
    /// `kafka: joining (Local: All brokers are down)`, for log lines.
    pub fn describe_unready(&self) -> String {
        let parts: Vec<String> = self
            .components
            .iter()
            .filter(|c| !c.ready)
            .map(|c| match &c.last_error {
                Some(error) => format!("{}: {} ({error})", c.name, c.state),
                None => format!("{}: {}", c.name, c.state),
            })
            .collect();
        parts.join("; ")
    }
}

#[derive(Default)]
pub struct Registry {
    components: Mutex<BTreeMap<&'static str, Component>>,
}

/// The process's registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    /// Starts counting `name`: not ready ("starting") until it reports.
    pub fn register(&self, name: &'static str, stale_after: Option<Duration>) {
        let now = Instant::now();
        let mut components = self.lock();
        components.insert(
            name,
            Component {
                ready: false,
                was_ready: false,
                state: "starting".into(),
                last_error: None,
                changed: now,
                reported: now,
                stale_after,
            },
        );
        events::component_readiness(name, false, false, "starting", None);
    }

    /// Sets the state; becoming ready clears nothing but the "not ready" verdict (the last
    /// error stays visible until another replaces it).
    pub fn set(&self, name: &'static str, ready: bool, state: impl Into<String>) {
        let state = state.into();
        let mut components = self.lock();
        let Some(component) = components.get_mut(name) else {
            return;
        };
        let now = Instant::now();
        component.reported = now;
        let changed = component.ready != ready || component.state != state;
        if component.ready != ready {
            component.changed = now;
        }
        component.ready = ready;
        component.state = state;
        if changed {
            events::component_readiness(
                name,
                ready,
                component.was_ready,
                &component.state,
                component.last_error.as_deref(),
            );
        }
        component.was_ready |= ready;
    }

    /// Records the last error of `name` without changing its readiness.
    pub fn error(&self, name: &'static str, error: &dyn std::fmt::Display) {
        let mut text = error.to_string();
        if text.len() > MAX_ERROR_LEN {
            let mut end = MAX_ERROR_LEN;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        if let Some(component) = self.lock().get_mut(name) {
            component.last_error = Some(text);
        }
    }

    /// A component that stopped for good.
    pub fn fail(&self, name: &'static str, error: &dyn std::fmt::Display) {
        self.error(name, error);
        self.set(name, false, "failed");
    }

    /// Every registered component, with stale ones counted as stuck.
    pub fn report(&self) -> Report {
        let now = Instant::now();
        let components = self.lock();
        let components: Vec<ComponentReport> = components
            .iter()
            .map(|(name, c)| {
                let silent = now.saturating_duration_since(c.reported);
                let stale = c.stale_after.is_some_and(|limit| silent > limit);
                ComponentReport {
                    name,
                    ready: c.ready && !stale,
                    state: if stale {
                        format!("stuck: no report for {}s", silent.as_secs())
                    } else {
                        c.state.clone()
                    },
                    last_error: c.last_error.clone(),
                    for_seconds: now.saturating_duration_since(c.changed).as_secs(),
                }
            })
            .collect();
        Report {
            ready: components.iter().all(|c| c.ready),
            components,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Component>> {
        // A poisoned lock only means a reporter panicked; the states are still valid.
        self.components.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Probes the queue (when the daemon has one: it must be writable), refreshes the queue
/// gauges, and returns the registry's report. What `/ready` and the heartbeat ask.
pub async fn check(queue: Option<&Queue>) -> Report {
    if let Some(queue) = queue {
        probe_queue(queue).await;
    }
    registry().report()
}

/// Takes the queue's write lock once and counts its rows (also for `/metrics`).
pub async fn probe_queue(queue: &Queue) -> Option<Stats> {
    let probe = queue.run(|store| store.probe());
    match tokio::time::timeout(QUEUE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(stats)) => {
            registry().set(QUEUE, true, "writable");
            events::queue_depth(&stats);
            Some(stats)
        }
        Ok(Err(error)) => {
            registry().error(QUEUE, &error);
            registry().set(QUEUE, false, "not writable");
            None
        }
        Err(_) => {
            registry().error(
                QUEUE,
                &format!(
                    "the SQLite queue did not answer within {}s",
                    QUEUE_PROBE_TIMEOUT.as_secs()
                ),
            );
            registry().set(QUEUE, false, "not answering");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registered_components_count_and_all_must_be_ready() {
        let registry = Registry::default();
        registry.set("unknown", true, "ignored");
        assert_eq!(
            registry.report(),
            Report {
                ready: true,
                components: vec![]
            }
        );
        registry.register(MQTT, None);
        registry.register(QUEUE, None);
        let report = registry.report();
        assert!(!report.ready);
        assert_eq!(report.components[0].state, "starting");
        registry.set(MQTT, true, "subscribed");
        registry.set(QUEUE, true, "writable");
        assert!(registry.report().ready);
        registry.error(MQTT, &"connection refused");
        registry.set(MQTT, false, "disconnected");
        let report = registry.report();
        assert!(!report.ready);
        assert_eq!(
            report.describe_unready(),
            "mqtt: disconnected (connection refused)"
        );
    }

    #[test]
    fn a_component_that_stops_reporting_is_stuck() {
        let registry = Registry::default();
        registry.register(KAFKA, Some(Duration::ZERO));
        registry.set(KAFKA, true, "consuming");
        std::thread::sleep(Duration::from_millis(5));
        let report = registry.report();
        assert!(!report.ready);
        assert!(report.components[0].state.starts_with("stuck"));
    }
}
