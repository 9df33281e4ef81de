//! Flags of the agent's self-monitoring: the four thresholds of the consumer-patterns note
//! (seed 004), and where the agent raises its own alerts.

use std::time::Duration;

use clap::Args;

use super::parse_duration;

#[derive(Debug, Args)]
#[command(rename_all = "snake_case")]
pub struct SelfWatchArgs {
    /// Integration key the agent raises its own alerts with: one ALERT per breached
    /// condition, RESOLVE once it has been clear for --self_clear_after. Without it the
    /// conditions are only shown at /status.
    #[arg(long, env = "ILAGENT_SELF_ALERT_KEY", hide_env_values = true)]
    pub self_alert_key: Option<String>,

    /// The agent's name in its alert keys (`ilagent/<name>/<condition>`); keep it stable
    /// across restarts and unique per agent [default: $HOSTNAME, else the host's name].
    #[arg(long, env = "ILAGENT_AGENT_NAME")]
    pub agent_name: Option<String>,

    /// Consumer lag of a Kafka topic (messages behind, summed over its partitions) above
    /// which the agent alerts (0 = off).
    #[arg(long, env = "ILAGENT_SELF_MAX_CONSUMER_LAG", default_value_t = 10_000)]
    pub self_max_consumer_lag: u64,

    /// 99th percentile of the delivery time (receipt to ilert's answer, over
    /// --self_window) above which the agent alerts (0 = off).
    #[arg(long, env = "ILAGENT_SELF_MAX_P99_DELIVERY", value_parser = parse_duration, default_value = "5s")]
    pub self_max_p99_delivery: Duration,

    /// Share of messages rejected (dead-lettered) among all settled over --self_window, in
    /// per cent, above which the agent alerts (0 = off).
    #[arg(long, env = "ILAGENT_SELF_MAX_ERROR_RATE", value_parser = parse_percent, default_value = "1")]
    pub self_max_error_rate: f64,

    /// Kafka rebalances (assignments) in the last hour (--self_rebalance_window) above
    /// which the agent alerts (0 = off).
    #[arg(
        long,
        env = "ILAGENT_SELF_MAX_REBALANCES_PER_HOUR",
        default_value_t = 3
    )]
    pub self_max_rebalances_per_hour: u32,

    /// The window the rejected share and the p99 delivery time are measured over.
    #[arg(long, env = "ILAGENT_SELF_WINDOW", value_parser = parse_duration, default_value = "5m")]
    pub self_window: Duration,

    /// The window the rebalances are counted over (the threshold's "per hour").
    #[arg(long, env = "ILAGENT_SELF_REBALANCE_WINDOW", value_parser = parse_duration, default_value = "1h")]
    pub self_rebalance_window: Duration,

    /// How often the conditions are evaluated.
    #[arg(long, env = "ILAGENT_SELF_CHECK_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub self_check_interval: Duration,

    /// How long a breached condition must stay below 90% of its threshold before the agent
    /// resolves its alert (so a figure hovering at the line does not flap).
    #[arg(long, env = "ILAGENT_SELF_CLEAR_AFTER", value_parser = parse_duration, default_value = "5m")]
    pub self_clear_after: Duration,
}

/// `1`, `0.5`, `2%`: a share in per cent, 0 to 100.
fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%').trim();
    number
        .parse::<f64>()
        .ok()
        .filter(|p| p.is_finite() && (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("`{text}` is not a share in per cent: write it like 1, 0.5 or 2%"))
}
