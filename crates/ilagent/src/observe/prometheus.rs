//! The Prometheus exporter behind the `metrics` facade the rest of the code records to.
//!
//! `metrics-exporter-prometheus` keeps the values; `/metrics` renders them in Prometheus's
//! text format. No listener of its own: the agent's HTTP server serves the page, so probes,
//! metrics and the proxy share one port. Without a recorder (the one-shot commands) every
//! `metrics::` call is a no-op.

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use super::events;

/// Seconds: from a few milliseconds (a fast ilert answer) to an hour (an outage drained).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Installs the process-wide recorder; its handle renders the page.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for name in [
        events::DELIVERY_LATENCY,
        events::END_TO_END_AGE,
        events::RATE_LIMIT_WAIT,
        events::RETRY_AFTER_WAIT,
    ] {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.to_string()), LATENCY_BUCKETS)?;
    }
    builder.install_recorder()
}

/// How often the exporter's upkeep runs without a scrape. Histogram samples are kept raw
/// until an upkeep folds them into the buckets, so an agent nobody scrapes would otherwise
/// grow with every message.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs the upkeep on a timer for the life of the runtime, whether or not anyone scrapes.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

/// The page: upkeep first (it trims histogram storage), then the text.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}
