//! Validation of the self-monitoring flags: thresholds (0 switches one off), the agent's
//! name in its alert keys, and the evaluation timing.

use std::time::Duration;

use super::{UsageError, secret};
use crate::cli::SelfWatchArgs;
use crate::secret::Secret;

/// Seed 004's four conditions, each `None` when switched off.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub consumer_lag: Option<u64>,
    pub p99_delivery: Option<Duration>,
    /// A share, 0 to 1.
    pub error_rate: Option<f64>,
    pub rebalances_per_hour: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SelfWatchConfig {
    /// `None`: evaluate and show at /status, raise nothing.
    pub alert_key: Option<Secret>,
    pub agent_name: String,
    pub thresholds: Thresholds,
    /// What the rejected share and the p99 are measured over.
    pub window: Duration,
    /// What the rebalances are counted over.
    pub rebalance_window: Duration,
    pub interval: Duration,
    pub clear_after: Duration,
}

impl SelfWatchConfig {
    pub fn from_args(args: &SelfWatchArgs) -> Result<Self, UsageError> {
        let agent_name = match args.agent_name.as_deref().map(str::trim) {
            Some("") => {
                return Err(UsageError::new(
                    "--agent_name is empty: give the name the agent's alert keys carry, e.g. --agent_name plant-7 (or leave it out for $HOSTNAME)",
                ));
            }
            Some(name) => name.to_string(),
            None => std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "ilagent".to_string()),
        };
        if args.self_clear_after > Duration::from_secs(86_400) {
            return Err(UsageError::new(
                "--self_clear_after must be at most 24h; the default is 5m",
            ));
        }
        if args.self_check_interval < Duration::from_millis(100)
            || args.self_check_interval > Duration::from_secs(3600)
        {
            return Err(UsageError::new(
                "--self_check_interval must be between 100ms and 1h; the default is 10s",
            ));
        }
        if args.self_window < Duration::from_secs(1)
            || args.self_window > Duration::from_secs(86_400)
        {
            return Err(UsageError::new(
                "--self_window must be between 1s and 24h; the default is 5m",
            ));
        }
        if args.self_rebalance_window < Duration::from_secs(1)
            || args.self_rebalance_window > Duration::from_secs(86_400)
        {
            return Err(UsageError::new(
                "--self_rebalance_window must be between 1s and 24h; the default is 1h",
            ));
        }
        Ok(SelfWatchConfig {
            alert_key: secret(args.self_alert_key.as_deref()),
            agent_name,
            thresholds: Thresholds {
                consumer_lag: (args.self_max_consumer_lag > 0)
                    .then_some(args.self_max_consumer_lag),
                p99_delivery: (!args.self_max_p99_delivery.is_zero())
                    .then_some(args.self_max_p99_delivery),
                error_rate: (args.self_max_error_rate > 0.0)
                    .then_some(args.self_max_error_rate / 100.0),
                rebalances_per_hour: (args.self_max_rebalances_per_hour > 0)
                    .then_some(args.self_max_rebalances_per_hour),
            },
            window: args.self_window,
            rebalance_window: args.self_rebalance_window,
            interval: args.self_check_interval,
            clear_after: args.self_clear_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn config(extra: &[&str]) -> Result<SelfWatchConfig, UsageError> {
        let mut argv = vec!["ilagent", "daemon", "-p", "8977"];
        argv.extend(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Daemon(daemon) => SelfWatchConfig::from_args(&daemon.self_watch),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_defaults_are_the_thresholds_of_the_consumer_patterns_note() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.thresholds,
            Thresholds {
                consumer_lag: Some(10_000),
                p99_delivery: Some(Duration::from_secs(5)),
                error_rate: Some(0.01),
                rebalances_per_hour: Some(3),
            }
        );
        assert_eq!(config.alert_key, None);
        assert_eq!(
            (config.interval, config.clear_after),
            (Duration::from_secs(10), Duration::from_secs(300))
        );
    }

    #[test]
    fn zero_switches_a_condition_off() {
        let config = config(&[
            "--self_max_consumer_lag",
            "0",
            "--self_max_p99_delivery",
            "0",
            "--self_max_error_rate",
            "0%",
            "--self_max_rebalances_per_hour",
            "0",
        ])
        .unwrap();
        assert_eq!(
            config.thresholds,
            Thresholds {
                consumer_lag: None,
                p99_delivery: None,
                error_rate: None,
                rebalances_per_hour: None,
            }
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        assert!(
            config(&["--agent_name", " "])
                .unwrap_err()
                .0
                .contains("--agent_name")
        );
        assert!(
            config(&["--self_check_interval", "1ms"])
                .unwrap_err()
                .0
                .contains("--self_check_interval")
        );
        let refused = Cli::try_parse_from(["ilagent", "daemon", "--self_max_error_rate", "150"]);
        assert!(refused.unwrap_err().to_string().contains("per cent"));
    }
}
