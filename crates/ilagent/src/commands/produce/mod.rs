//! `ilagent produce`: publish messages to a Kafka or an MQTT topic and say, per message,
//! what the broker answered: the elastic.io Kafka component's Produce action
//! (../shared/seeds/003), as a command. Useful to feed the agent in a test, to replay by
//! hand, or to raise an alert from a script through the same broker the agent reads.
//!
//! Every message is checked before the first is sent; then each waits for the broker's
//! acknowledgement (Kafka: all in-sync replicas, idempotent producer; MQTT: PUBACK or
//! PUBCOMP). One JSON line per message goes to standard output, in input order; the exit
//! status is 0 only when every message was acknowledged.

mod input;
mod kafka;
mod mqtt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Exit;
use crate::cli::{Broker, ProduceArgs};
use crate::config::{KafkaConnection, MqttBroker, UsageError};
use crate::printable::printable;

pub(crate) use input::Outgoing;

/// What became of one message: its JSON line, and why it failed if it did.
pub(crate) struct Published {
    pub line: serde_json::Value,
    pub failure: Option<String>,
}

pub async fn run(args: ProduceArgs) -> Exit {
    let kafka = match KafkaConnection::from_args(&args.kafka) {
        Ok(kafka) => kafka,
        Err(error) => return error.into(),
    };
    let mqtt = match MqttBroker::from_args(&args.mqtt) {
        Ok(mqtt) => mqtt,
        Err(error) => return error.into(),
    };
    if args.timeout < std::time::Duration::from_secs(1) {
        return UsageError::new("--timeout must be at least 1s; the default is 30s").into();
    }
    let topic = args.topic.trim().to_string();
    if topic.is_empty() {
        return UsageError::new("--topic is empty: name the topic to publish to").into();
    }
    let messages = match read_messages(&args).await {
        Ok(messages) => messages,
        Err(error) => return error.into(),
    };
    let (kafka, mqtt) = match args.to {
        Some(Broker::Kafka) => (kafka, None),
        Some(Broker::Mqtt) => (None, mqtt),
        None => (kafka, mqtt),
    };
    let published = match (kafka, mqtt) {
        (Some(kafka), None) => kafka::publish(&kafka, &topic, messages, args.timeout).await,
        (None, Some(broker)) => {
            let settings = match mqtt::Settings::from_args(&args, broker) {
                Ok(settings) => settings,
                Err(error) => return error.into(),
            };
            if let Err(error) = mqtt::check(&settings, &topic, &messages) {
                return error.into();
            }
            mqtt::publish(&settings, &topic, messages, args.timeout).await
        }
        (Some(_), Some(_)) => {
            return UsageError::new(
                "produce publishes to one broker: --kafka_brokers and -m/--mqtt_host are both set (flags or ILAGENT_* variables); choose with --to kafka or --to mqtt",
            )
            .into();
        }
        (None, None) => {
            return UsageError::new(
                "produce needs a broker: --kafka_brokers HOST:PORT for Kafka, or -m/--mqtt_host HOST for MQTT",
            )
            .into();
        }
    };
    report(published).await
}

async fn read_messages(args: &ProduceArgs) -> Result<Vec<Outgoing>, UsageError> {
    if let Some(value) = &args.value {
        return Ok(vec![input::from_flags(
            args.key.clone(),
            value.clone(),
            &args.headers,
        )]);
    }
    if args.key.is_some() {
        return Err(UsageError::new(
            "--key goes with --value; for messages on standard input, give each its \"key\"",
        ));
    }
    let mut text = String::new();
    tokio::io::stdin()
        .read_to_string(&mut text)
        .await
        .map_err(|e| UsageError::new(format!("cannot read standard input: {e}")))?;
    input::from_text(&text, &args.headers).map_err(UsageError::new)
}

/// Prints the lines, then one error line naming the messages that failed.
async fn report(published: Vec<Published>) -> Exit {
    let mut out = String::new();
    let mut failed = Vec::new();
    for (index, message) in published.iter().enumerate() {
        out.push_str(&message.line.to_string());
        out.push('\n');
        if let Some(why) = &message.failure {
            failed.push(format!("#{} ({})", index + 1, printable(why, 200)));
        }
    }
    let mut stdout = tokio::io::stdout();
    if let Err(error) = stdout.write_all(out.as_bytes()).await {
        return Exit::Failed(format!("cannot write to standard output: {error}"));
    }
    let _ = stdout.flush().await;
    if failed.is_empty() {
        return Exit::Success;
    }
    let total = published.len();
    let shown = failed.len().min(10);
    let more = if failed.len() > shown {
        format!(" and {} more", failed.len() - shown)
    } else {
        String::new()
    };
    Exit::Failed(format!(
        "{} of {total} messages were not acknowledged: {}{more}",
        failed.len(),
        failed[..shown].join(", ")
    ))
}
