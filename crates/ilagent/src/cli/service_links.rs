//! Environment that the platform injects never stops the agent.
//!
//! Kubernetes gives every pod of a namespace "service link" variables for each Service:
//! one named `ilagent` (the one `deploy/kubernetes.yaml` creates) yields
//! `ILAGENT_PORT=tcp://10.96.0.12:8977`, and a Service `ilagent-mqtt` or `ilagent-metrics`
//! yields `ILAGENT_MQTT_PORT` and `ILAGENT_METRICS_PORT` the same way. Those are our flags'
//! variables, so the agent would read an address as a port and refuse to start. A value of
//! the form `tcp://HOST:PORT` (or `udp://`, `sctp://`) is no port anyone meant to give: it
//! is ignored, with a debug line, as if the variable were not set.

use clap::Command;

/// The flags whose variables collide with service links: (variable, argument id).
const LINKED: [(&str, &str); 3] = [
    ("ILAGENT_PORT", "port"),
    ("ILAGENT_MQTT_PORT", "mqtt_port"),
    ("ILAGENT_METRICS_PORT", "metrics_port"),
];

/// Whether `value` is a Kubernetes service link (`tcp://10.96.0.12:8977`).
pub(crate) fn is_service_link(value: &str) -> bool {
    ["tcp://", "udp://", "sctp://"]
        .iter()
        .find_map(|scheme| value.strip_prefix(scheme))
        .and_then(|address| address.rsplit_once(':'))
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// `command` with the environment fallback removed from each flag whose variable holds a
/// service link (as `env` reads it); returns the variables ignored.
pub(crate) fn ignore_service_links(
    command: Command,
    env: impl Fn(&str) -> Option<String>,
) -> (Command, Vec<&'static str>) {
    let linked: Vec<(&'static str, &'static str)> = LINKED
        .into_iter()
        .filter(|(variable, _)| env(variable).is_some_and(|v| is_service_link(&v)))
        .collect();
    if linked.is_empty() {
        return (command, Vec::new());
    }
    let command = command.mut_subcommand("daemon", |daemon| {
        linked.iter().fold(daemon, |daemon, (_, id)| {
            daemon.mut_arg(*id, |arg| arg.env(None::<&str>))
        })
    });
    (
        command,
        linked.into_iter().map(|(variable, _)| variable).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    #[test]
    fn service_links_are_recognised_and_ports_are_not() {
        assert!(is_service_link("tcp://10.96.0.12:8977"));
        assert!(is_service_link("udp://[fd00::1]:53"));
        assert!(!is_service_link("8977"));
        assert!(!is_service_link("tcp://"));
        assert!(!is_service_link("tcp://host:port"));
    }

    #[test]
    fn only_the_flags_whose_variable_holds_a_service_link_lose_their_environment() {
        let env = |name: &str| match name {
            "ILAGENT_PORT" => Some("tcp://10.96.0.12:8977".to_string()),
            "ILAGENT_METRICS_PORT" => Some("9977".to_string()),
            _ => None,
        };
        let (command, ignored) = ignore_service_links(Cli::command(), env);
        assert_eq!(ignored, vec!["ILAGENT_PORT"]);
        let mut command = command;
        command.build();
        let daemon = command.find_subcommand("daemon").unwrap();
        let env_of = |id: &str| {
            daemon
                .get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        };
        assert_eq!(env_of("port"), None);
        assert_eq!(
            env_of("metrics_port").as_deref(),
            Some("ILAGENT_METRICS_PORT")
        );
        assert_eq!(env_of("mqtt_port").as_deref(), Some("ILAGENT_MQTT_PORT"));
    }
}
