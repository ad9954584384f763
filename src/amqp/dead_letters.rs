//! Reading the dead-letter queue: messages the platform rejected (or that expired or
//! overflowed a queue) come back here with the broker's `x-death` record, and become failures an
//! operator can see and replay. A delivery is acknowledged only after the store kept it.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};
use serde_json::{Map, Value, json};

use super::{AmqpError, BrokerConfig, declare_on_connect, open_connection, timed};
use crate::canonical::envelope;
use crate::store::DeadLetter;

/// A consumer of the dead-letter queue, on its own connection.
pub struct DeadLetterConsumer {
    connection: Connection,
    _channel: Channel,
    consumer: lapin::Consumer,
    timeout: Duration,
}

/// One dead-lettered message, not yet acknowledged.
pub struct Delivered {
    /// What to keep: the message, or each record of a batch message (batched mode), as its own
    /// dead letter under its own message id, so that each becomes a failure of its own and is
    /// replayed alone, as a dead-lettered single message is.
    pub letters: Vec<DeadLetter>,
    acker: lapin::Acker,
}

impl Delivered {
    /// Tells the broker the message is kept (call after the store committed it).
    pub async fn ack(self, limit: Duration) -> Result<(), AmqpError> {
        timed(
            limit,
            "basic.ack (dead letter)",
            self.acker.ack(BasicAckOptions::default()),
        )
        .await
        .map(|_| ())
    }
}

impl DeadLetterConsumer {
    /// Connects, declares the topology and starts consuming the dead-letter queue.
    pub async fn connect(config: &BrokerConfig) -> Result<Self, AmqpError> {
        let connection = open_connection(
            config,
            &format!("{} (dead letters)", config.connection_name),
        )
        .await?;
        let channel = timed(config.timeout, "channel.open", connection.create_channel()).await?;
        declare_on_connect(&connection, &channel, config).await?;
        timed(
            config.timeout,
            "basic.qos",
            channel.basic_qos(100, BasicQosOptions::default()),
        )
        .await?;
        let consumer = timed(
            config.timeout,
            "basic.consume (dead letters)",
            channel.basic_consume(
                ShortString::from(config.dead_letter_queue.as_str()),
                ShortString::from("council-bridge-dead-letters"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(Self {
            connection,
            _channel: channel,
            consumer,
            timeout: config.timeout,
        })
    }

    /// The next dead letter, or `None` when nothing came within `wait`. An error means the
    /// connection is gone: reconnect.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Delivered>, AmqpError> {
        match tokio::time::timeout(wait, self.consumer.next()).await {
            Err(_) => Ok(None),
            Ok(None) => Err(AmqpError::Protocol {
                what: "basic.consume (dead letters)".into(),
                message: "the broker ended the consumer".into(),
            }),
            Ok(Some(Err(e))) => Err(AmqpError::Protocol {
                what: "basic.consume (dead letters)".into(),
                message: e.to_string(),
            }),
            Ok(Some(Ok(d))) => {
                let headers = d
                    .properties
                    .headers()
                    .as_ref()
                    .map(table_to_json)
                    .unwrap_or_default();
                let reason = death_reason(headers.get("x-death"));
                let mut kept = headers.clone();
                kept.remove("x-death");
                let letter = DeadLetter {
                    message_id: d
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| format!("unidentified-{}", uuid::Uuid::new_v4())),
                    routing_key: d.routing_key.to_string(),
                    headers: kept,
                    body: d.data.clone(),
                    correlation_id: d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    reason,
                };
                let batch = d
                    .properties
                    .content_type()
                    .as_ref()
                    .is_some_and(|t| t.as_str() == envelope::BATCH_CONTENT_TYPE)
                    || letter.headers.contains_key("x-batch-records");
                Ok(Some(Delivered {
                    letters: if batch {
                        records_of(letter)
                    } else {
                        vec![letter]
                    },
                    acker: d.acker,
                }))
            }
        }
    }

    /// Closes the connection (best effort).
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            self.timeout.min(Duration::from_secs(5)),
            self.connection.close(200, ShortString::from("bye")),
        )
        .await;
    }
}

/// The records of a dead-lettered batch message, each as a dead letter of its own (its id,
/// headers and body, the batch's routing key, correlation id and reason, naming the batch
/// message); the message whole when its body is not a batch of identified records.
fn records_of(batch: DeadLetter) -> Vec<DeadLetter> {
    let Some(records) = envelope::unbatch(&batch.body) else {
        return vec![batch];
    };
    let reason = format!(
        "{}, in batch message {} of {} records",
        batch.reason,
        batch.message_id,
        records.len()
    );
    records
        .into_iter()
        .map(|r| DeadLetter {
            message_id: r.message_id,
            routing_key: batch.routing_key.clone(),
            headers: r.headers,
            body: r.body,
            correlation_id: batch.correlation_id.clone(),
            reason: reason.clone(),
        })
        .collect()
}

fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        other => json!(format!("{other:?}")),
    }
}

fn table_to_json(t: &FieldTable) -> Map<String, Value> {
    t.inner()
        .iter()
        .map(|(k, v)| (k.to_string(), value_to_json(v)))
        .collect()
}

/// "rejected from queue platform.payroll (1 time)" from the newest `x-death` entry.
fn death_reason(x_death: Option<&Value>) -> String {
    let Some(first) = x_death.and_then(Value::as_array).and_then(|a| a.first()) else {
        return "dead-lettered (no x-death header)".into();
    };
    let reason = first
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let queue = first.get("queue").and_then(Value::as_str).unwrap_or("?");
    let count = first.get("count").and_then(Value::as_i64).unwrap_or(1);
    format!(
        "{reason} by queue {queue} ({count} time{})",
        if count == 1 { "" } else { "s" }
    )
}
