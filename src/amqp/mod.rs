//! The only module that talks to the broker (RabbitMQ, AMQP 0.9.1, via lapin).
//!
//! [`Publisher`] publishes a slice of messages with publisher confirms, `mandatory`, and a
//! bounded window of unconfirmed messages, and says for each message what became of it. It keeps
//! no state of its own beyond the connection: the store's outbox is the source of truth, and the
//! caller marks a message sent only on [`Outcome::Confirmed`]. Every await on the network is
//! wrapped in a timeout (lapin can hang on a dead connection), and any connection-level failure
//! makes the publisher unusable, so the caller reconnects and resends what is still pending.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde_json::Value;

use crate::canonical::envelope::{self, OutboundMessage};

mod dead_letters;
pub use dead_letters::{DeadLetterConsumer, Delivered};

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `amqp://user:pass@host:port/vhost`, or several such node addresses of one cluster
    /// separated by commas (a comma in a password is written `%2C`). Connections try the nodes
    /// in turn, each time starting from the next one.
    pub url: String,
    /// Topic exchange for events.
    pub exchange: String,
    /// Dead-letter exchange.
    pub dead_letter_exchange: String,
    /// Durable quorum queue bound to the dead-letter exchange.
    pub dead_letter_queue: String,
    /// Name shown in the broker's connection list.
    pub connection_name: String,
    /// Longest wait for a connection, a publish or a confirm.
    pub timeout: Duration,
    /// Most messages published but not yet confirmed.
    pub window: usize,
    /// Replicas of each quorum queue this bridge declares (`x-quorum-initial-group-size`);
    /// `None` leaves it to the broker (a member on every cluster node). [`BrokerConfig::new`]
    /// sets the number of node addresses when there are several.
    pub quorum_group_size: Option<u32>,
    /// Consumer queues `broker setup` declares (quorum, dead-lettering to the dead-letter
    /// exchange), each with the routing-key patterns it is bound to on the events exchange.
    pub queues: Vec<(String, Vec<String>)>,
}

impl BrokerConfig {
    /// A configuration with the brief's names and sensible limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            exchange: "council-bridge.events".into(),
            dead_letter_exchange: "council-bridge.dlx".into(),
            dead_letter_queue: "council-bridge.dead-letters".into(),
            connection_name: "council-bridge".into(),
            timeout: Duration::from_secs(30),
            window: 512,
            quorum_group_size: None,
            queues: Vec::new(),
        }
        .with_default_group_size()
    }

    fn with_default_group_size(mut self) -> Self {
        let nodes = self.nodes().len();
        self.quorum_group_size = (nodes > 1).then_some(nodes as u32);
        self
    }

    /// The node addresses: the URL, or each of its comma-separated parts.
    pub fn nodes(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The URL (each node's) with any password hidden, for logs and messages.
    pub fn redacted_url(&self) -> String {
        self.nodes()
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Checks every node address of a broker setting (one URL, or several separated by commas).
pub fn validate_urls(urls: &str) -> Result<(), AmqpError> {
    let mut any = false;
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        validate_url(url)?;
        any = true;
    }
    if any { Ok(()) } else { validate_url(urls) }
}

/// Hides the password of an AMQP URL, also of a malformed one (`amqp:/user:pw@host`,
/// `user:pw@host` without a scheme): everything between the user name and the last `@`.
pub fn redact_url(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    let before = &url[..at];
    let lower = before.to_ascii_lowercase();
    let scheme_end = ["amqps:", "amqp:"]
        .iter()
        .find(|s| lower.starts_with(*s))
        .map_or(0, |s| s.len());
    let start = scheme_end + before[scheme_end..].len()
        - before[scheme_end..].trim_start_matches('/').len();
    let userinfo = &before[start..];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..start], &userinfo[..colon], &url[at..]),
        None => url.to_string(),
    }
}

/// Checks that `url` is a usable AMQP URL (`amqp://` or `amqps://`, a host) before it is used
/// or sent anywhere; the error quotes the URL only with its password hidden.
pub fn validate_url(url: &str) -> Result<(), AmqpError> {
    let invalid = |why: &str| AmqpError::Connect {
        url: redact_url(url),
        message: format!(
            "the broker URL is not valid ({why}); write it as amqp://user:password@host:5672/vhost \
             (vhost `/` is %2f), in AMQP_URL or --amqp-url; a cluster's nodes are separated by \
             commas, and a comma in a password is written %2C"
        ),
    };
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("amqp://") || lower.starts_with("amqps://")) {
        return Err(invalid("it must start with amqp:// or amqps://"));
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if url.chars().any(char::is_control) || url.contains(' ') {
        return Err(invalid("it contains spaces or control characters"));
    }
    Ok(())
}

/// The broker cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// Connecting failed or timed out.
    #[error("cannot connect to the broker at {url}: {message}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// The broker refused a declaration or a channel operation.
    #[error("broker refused {what}: {message}")]
    Protocol {
        /// What was being done.
        what: String,
        /// Cause.
        message: String,
    },
}

/// What became of one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The broker confirmed it (routed and stored).
    Confirmed,
    /// The broker returned it: no queue is bound for its routing key.
    Returned {
        /// AMQP reply code (312 = NO_ROUTE).
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The broker refused it (nack).
    Nacked,
    /// Unknown: the connection failed or timed out before a confirm. Resend.
    Failed(String),
}

/// A confirm-mode publisher on one connection and one channel.
pub struct Publisher {
    config: BrokerConfig,
    connection: Connection,
    channel: Channel,
}

fn protocol(what: &str) -> impl FnOnce(lapin::Error) -> AmqpError + '_ {
    move |e| AmqpError::Protocol {
        what: what.to_string(),
        message: e.to_string(),
    }
}

async fn timed<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, AmqpError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(protocol(what)),
        Err(_) => Err(AmqpError::Protocol {
            what: what.to_string(),
            message: format!("no answer within {}s", limit.as_secs()),
        }),
    }
}

/// The node the next connection tries first (offset by the process id, so that processes
/// spread over the nodes): each connection starts one node further on, so that after a node
/// fails the next attempt begins with another node.
static NEXT_NODE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Opens a connection named `name` (as the broker's connection list shows it) to the first node
/// that accepts it, trying each configured node in turn (starting from a rotating one) within
/// the configured timeout each; the URLs are validated first and only ever shown redacted.
pub(crate) async fn open_connection(
    config: &BrokerConfig,
    name: &str,
) -> Result<Connection, AmqpError> {
    validate_urls(&config.url)?;
    let nodes = config.nodes();
    let start = NEXT_NODE
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .wrapping_add(std::process::id() as usize);
    let mut causes = Vec::new();
    for k in 0..nodes.len() {
        let url = nodes[(start + k) % nodes.len()];
        let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
        let cause = match tokio::time::timeout(config.timeout, Connection::connect(url, props))
            .await
        {
            Ok(Ok(c)) => {
                if nodes.len() > 1 {
                    tracing::info!(node = %redact_url(url), connection = name, "connected to broker node");
                }
                return Ok(c);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", config.timeout.as_secs()),
        };
        if nodes.len() > 1 {
            tracing::warn!(node = %redact_url(url), error = %cause, "broker node unavailable; trying the next one");
            causes.push(format!("{}: {cause}", redact_url(url)));
        } else {
            causes.push(cause);
        }
    }
    Err(AmqpError::Connect {
        url: config.redacted_url(),
        message: causes.join("; "),
    })
}

impl Publisher {
    /// Connects, declares the topology and enables publisher confirms.
    pub async fn connect(config: &BrokerConfig) -> Result<Self, AmqpError> {
        let connection = open_connection(config, &config.connection_name).await?;
        let channel = timed(config.timeout, "channel.open", connection.create_channel()).await?;
        declare_on_connect(&connection, &channel, config).await?;
        timed(
            config.timeout,
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(Self {
            config: config.clone(),
            connection,
            channel,
        })
    }

    /// Whether the connection and channel are still usable.
    pub fn is_healthy(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publishes `messages` in order, keeping at most `window` unconfirmed, and returns one
    /// outcome per message, in the same order. After a connection failure, every message not
    /// yet confirmed is [`Outcome::Failed`] and the publisher should be dropped.
    pub async fn publish(&self, messages: &[&OutboundMessage]) -> Vec<Outcome> {
        self.publish_all(
            messages.len(),
            messages
                .iter()
                .map(|m| (m.routing_key.as_str(), m.body.as_slice(), properties(m))),
        )
        .await
    }

    /// [`Publisher::publish`] for messages prepared beforehand (their properties built off the
    /// publishing task, as the flush does while the previous page is being confirmed). The
    /// properties are handed to the broker connection (left empty in `messages`).
    pub async fn publish_prepared(&self, messages: &mut [Prepared]) -> Vec<Outcome> {
        let count = messages.len();
        self.publish_all(
            count,
            messages.iter_mut().map(|m| {
                (
                    m.routing_key.as_str(),
                    m.body.as_slice(),
                    std::mem::take(&mut m.properties),
                )
            }),
        )
        .await
    }

    async fn publish_all<'m>(
        &self,
        count: usize,
        messages: impl Iterator<Item = (&'m str, &'m [u8], BasicProperties)>,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
        let mut in_flight = FuturesOrdered::new();
        let limit = self.config.timeout;
        let mut broken: Option<String> = None;
        for (i, (routing_key, body, props)) in messages.enumerate().take(count) {
            if in_flight.len() >= self.config.window.max(1)
                && let Some((j, outcome)) = in_flight.next().await
            {
                outcomes[j] = Some(outcome);
            }
            let publish = self.channel.basic_publish(
                ShortString::from(self.config.exchange.as_str()),
                ShortString::from(routing_key),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            );
            match tokio::time::timeout(limit, publish).await {
                Ok(Ok(confirm)) => in_flight.push_back(async move {
                    let outcome = match tokio::time::timeout(limit, confirm).await {
                        Ok(Ok(Confirmation::Ack(None))) => Outcome::Confirmed,
                        Ok(Ok(Confirmation::Ack(Some(returned)))) => Outcome::Returned {
                            code: returned.reply_code,
                            text: returned.reply_text.to_string(),
                        },
                        Ok(Ok(Confirmation::Nack(_))) => Outcome::Nacked,
                        Ok(Ok(Confirmation::NotRequested)) => {
                            Outcome::Failed("confirms not enabled".into())
                        }
                        Ok(Err(e)) => Outcome::Failed(e.to_string()),
                        Err(_) => {
                            Outcome::Failed(format!("no confirm within {}s", limit.as_secs()))
                        }
                    };
                    (i, outcome)
                }),
                Ok(Err(e)) => {
                    broken = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    broken = Some(format!("publish blocked for {}s", limit.as_secs()));
                    break;
                }
            }
        }
        while let Some((j, outcome)) = in_flight.next().await {
            outcomes[j] = Some(outcome);
        }
        let reason = broken.unwrap_or_else(|| "not published".into());
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed(reason.clone())))
            .collect()
    }

    /// Closes the connection politely (best effort).
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.connection.close(200, ShortString::from("bye")),
        )
        .await;
    }
}

/// Declares the exchanges and the dead-letter queue. Idempotent: declaring what exists with
/// the same settings is a no-op for the broker. A dead-letter queue that exists with other
/// arguments (another type or replica count) is refused by the broker, which closes `channel`.
pub async fn declare_topology(channel: &Channel, config: &BrokerConfig) -> Result<(), AmqpError> {
    declare_exchanges(channel, config).await?;
    timed(
        config.timeout,
        "queue.declare (dead letters)",
        channel.queue_declare(
            ShortString::from(config.dead_letter_queue.as_str()),
            durable_queue(),
            quorum_args(config, false),
        ),
    )
    .await?;
    bind_dead_letters(channel, config).await
}

/// What every connection declares before use: as [`declare_topology`], but a dead-letter queue
/// that already exists with other arguments (declared before the cluster, say) is used as it is.
async fn declare_on_connect(
    connection: &Connection,
    channel: &Channel,
    config: &BrokerConfig,
) -> Result<(), AmqpError> {
    declare_exchanges(channel, config).await?;
    if let QueueState::Differs(why) = declare_queue(
        connection,
        config,
        &config.dead_letter_queue,
        quorum_args(config, false),
    )
    .await?
    {
        tracing::warn!(queue = %config.dead_letter_queue, reason = %why, "the dead-letter queue exists with other arguments; using it as it is");
    }
    bind_dead_letters(channel, config).await
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// A quorum queue's arguments: its type, the replica count when configured, and for a consumer
/// queue the dead-letter exchange its rejected messages go to.
fn quorum_args(config: &BrokerConfig, consumer: bool) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    if let Some(n) = config.quorum_group_size {
        args.insert(
            ShortString::from("x-quorum-initial-group-size"),
            AMQPValue::LongLongInt(i64::from(n)),
        );
    }
    if consumer {
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from(config.dead_letter_exchange.as_str())),
        );
    }
    args
}

async fn declare_exchanges(channel: &Channel, config: &BrokerConfig) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let t = config.timeout;
    timed(
        t,
        "exchange.declare (events)",
        channel.exchange_declare(
            ShortString::from(config.exchange.as_str()),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        ),
    )
    .await?;
    timed(
        t,
        "exchange.declare (dead letters)",
        channel.exchange_declare(
            ShortString::from(config.dead_letter_exchange.as_str()),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(())
}

async fn bind_dead_letters(channel: &Channel, config: &BrokerConfig) -> Result<(), AmqpError> {
    timed(
        config.timeout,
        "queue.bind (dead letters)",
        channel.queue_bind(
            ShortString::from(config.dead_letter_queue.as_str()),
            ShortString::from(config.dead_letter_exchange.as_str()),
            ShortString::from("#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(())
}

/// What became of a queue declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueState {
    /// Created, or it existed with the same arguments.
    Declared,
    /// It exists with other arguments (a classic queue, another replica count): left as it is.
    Differs(String),
}

/// Declares a durable queue on a channel of its own, so that the broker's refusal of a queue
/// that exists with other arguments (PRECONDITION_FAILED, which closes the channel) is reported
/// as [`QueueState::Differs`] and costs nothing else.
async fn declare_queue(
    connection: &Connection,
    config: &BrokerConfig,
    name: &str,
    args: FieldTable,
) -> Result<QueueState, AmqpError> {
    let channel = timed(config.timeout, "channel.open", connection.create_channel()).await?;
    let declared = tokio::time::timeout(
        config.timeout,
        channel.queue_declare(ShortString::from(name), durable_queue(), args),
    )
    .await;
    match declared {
        Ok(Ok(_)) => {
            let _ = tokio::time::timeout(
                config.timeout,
                channel.close(200, ShortString::from("declared")),
            )
            .await;
            Ok(QueueState::Declared)
        }
        Ok(Err(e)) if e.to_string().contains("PRECONDITION") => {
            Ok(QueueState::Differs(e.to_string()))
        }
        Ok(Err(e)) => Err(protocol(&format!("queue.declare ({name})"))(e)),
        Err(_) => Err(AmqpError::Protocol {
            what: format!("queue.declare ({name})"),
            message: format!("no answer within {}s", config.timeout.as_secs()),
        }),
    }
}

/// What `broker setup` declared.
#[derive(Debug, Clone)]
pub struct SetupReport {
    /// The dead-letter queue and each consumer queue, in that order, with what became of it.
    pub queues: Vec<(String, QueueState)>,
}

/// `council-bridge broker setup`: declares the exchanges, the dead-letter queue and the
/// configured consumer queues, all quorum queues (with `quorum_group_size` replicas when set),
/// and binds each consumer queue to its routing-key patterns. A queue that already exists with
/// other arguments is left as it is and reported; nothing is ever deleted or converted.
pub async fn setup(config: &BrokerConfig) -> Result<SetupReport, AmqpError> {
    let connection = open_connection(config, &config.connection_name).await?;
    let channel = timed(config.timeout, "channel.open", connection.create_channel()).await?;
    declare_exchanges(&channel, config).await?;
    let mut queues = Vec::new();
    let state = declare_queue(
        &connection,
        config,
        &config.dead_letter_queue,
        quorum_args(config, false),
    )
    .await?;
    queues.push((config.dead_letter_queue.clone(), state));
    bind_dead_letters(&channel, config).await?;
    for (name, patterns) in &config.queues {
        let state = declare_queue(&connection, config, name, quorum_args(config, true)).await?;
        for pattern in patterns {
            timed(
                config.timeout,
                &format!("queue.bind ({name} to {pattern})"),
                channel.queue_bind(
                    ShortString::from(name.as_str()),
                    ShortString::from(config.exchange.as_str()),
                    ShortString::from(pattern.as_str()),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        queues.push((name.clone(), state));
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        connection.close(200, ShortString::from("bye")),
    )
    .await;
    Ok(SetupReport { queues })
}

/// A message ready to publish: routing key, body and AMQP properties.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// AMQP message id.
    pub message_id: String,
    /// Routing key.
    pub routing_key: String,
    /// Body.
    pub body: Vec<u8>,
    /// AMQP properties and headers.
    pub properties: BasicProperties,
}

impl Prepared {
    /// One record (or manifest, or alert) per message: the message as it is, its body moved.
    pub fn single(m: &mut OutboundMessage) -> Self {
        Self {
            properties: properties(m),
            message_id: m.message_id.clone(),
            routing_key: m.routing_key.clone(),
            body: std::mem::take(&mut m.body),
        }
    }

    /// Records of one routing key and correlation id as one CloudEvents batch message
    /// (`application/cloudevents-batch+json`): its id fixed by its records' ids, its headers
    /// the count of records and the provenance they all share.
    pub fn batch(records: &[&OutboundMessage]) -> Self {
        let first = records.first().copied();
        let id = envelope::batch_message_id(records.iter().map(|m| m.message_id.as_str()));
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("x-batch-records"),
            AMQPValue::LongLongInt(records.len() as i64),
        );
        if let Some(first) = first {
            for name in BATCH_SHARED_HEADERS {
                if let Some(v) = first.headers.get(name)
                    && records.iter().all(|m| m.headers.get(name) == Some(v))
                {
                    headers.insert(ShortString::from(name), amqp_value(v));
                }
            }
        }
        let props = BasicProperties::default()
            .with_message_id(ShortString::from(id.as_str()))
            .with_correlation_id(ShortString::from(
                first.map_or("", |m| m.correlation_id.as_str()),
            ))
            .with_content_type(ShortString::from(envelope::BATCH_CONTENT_TYPE))
            .with_delivery_mode(2)
            .with_timestamp(first.map_or(0, |m| m.timestamp.max(0) as u64))
            .with_app_id(ShortString::from("council-bridge"))
            .with_headers(headers);
        Self {
            message_id: id,
            routing_key: first.map(|m| m.routing_key.clone()).unwrap_or_default(),
            body: envelope::batch_body(records),
            properties: props,
        }
    }
}

/// Provenance headers a batch message carries when all its records share them.
const BATCH_SHARED_HEADERS: [&str; 5] = [
    "cloudEvents:source",
    "x-source-file",
    "x-source-sha256",
    "x-mapping-id",
    "x-mapping-version",
];

fn amqp_value(v: &Value) -> AMQPValue {
    match v {
        Value::Number(n) if n.is_i64() => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
        Value::Number(n) if n.is_u64() => {
            AMQPValue::LongLongInt(n.as_u64().unwrap_or_default() as i64)
        }
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        other => AMQPValue::LongString(LongString::from(other.to_string().as_str())),
    }
}

/// The AMQP properties and headers of a message, as the publisher sends it.
pub fn properties(m: &OutboundMessage) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in &m.headers {
        headers.insert(ShortString::from(k.as_str()), amqp_value(v));
    }
    BasicProperties::default()
        .with_message_id(ShortString::from(m.message_id.as_str()))
        .with_correlation_id(ShortString::from(m.correlation_id.as_str()))
        .with_content_type(ShortString::from(
            // A dead-lettered batch message, re-queued as it was, stays a batch.
            if m.headers.contains_key("x-batch-records") {
                envelope::BATCH_CONTENT_TYPE
            } else {
                "application/json"
            },
        ))
        .with_delivery_mode(2)
        .with_timestamp(m.timestamp.max(0) as u64)
        .with_app_id(ShortString::from("council-bridge"))
        .with_headers(headers)
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn malformed_urls_are_refused_and_never_show_the_password() {
        for url in [
            "amqp:/guest:S3cret@127.0.0.1:5672/%2f",
            "guest:S3cret@host:5672",
            "amqp://guest:S3cret@/%2f",
            "AMQP:guest:S3cret@host",
            "guest:p/w@S3cret@host",
        ] {
            let e = validate_url(url).unwrap_err().to_string();
            assert!(!e.contains("S3cret"), "{e}");
            assert!(!redact_url(url).contains("S3cret"), "{}", redact_url(url));
        }
        assert!(validate_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert_eq!(
            redact_url("amqp://guest:pw@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    #[test]
    fn several_node_addresses_are_validated_redacted_and_size_the_quorum_queues() {
        let b = BrokerConfig::new(
            "amqp://guest:S3cret@127.0.0.1:5681/%2f, amqp://guest:S3cret@127.0.0.1:5682/%2f,amqp://guest:S3cret@127.0.0.1:5683/%2f",
        );
        assert_eq!(b.nodes().len(), 3);
        assert_eq!(b.quorum_group_size, Some(3));
        assert!(!b.redacted_url().contains("S3cret"), "{}", b.redacted_url());
        assert_eq!(b.redacted_url().matches("guest:***@").count(), 3);
        assert!(validate_urls(&b.url).is_ok());
        assert_eq!(
            BrokerConfig::new("amqp://127.0.0.1:5672/%2f").quorum_group_size,
            None
        );
        let bad = validate_urls("amqp://guest:S3cret@h1/%2f,guest:S3cret@h2")
            .unwrap_err()
            .to_string();
        assert!(!bad.contains("S3cret"), "{bad}");
        assert!(validate_urls("").is_err());
    }

    #[test]
    fn consumer_queues_dead_letter_to_the_dead_letter_exchange() {
        let b = BrokerConfig::new("amqp://a/%2f,amqp://b/%2f,amqp://c/%2f");
        let args = quorum_args(&b, true);
        let inner = args.inner();
        assert_eq!(
            inner.get(&ShortString::from("x-quorum-initial-group-size")),
            Some(&AMQPValue::LongLongInt(3))
        );
        assert_eq!(
            inner.get(&ShortString::from("x-dead-letter-exchange")),
            Some(&AMQPValue::LongString(LongString::from(
                "council-bridge.dlx"
            )))
        );
        assert!(
            quorum_args(&b, false)
                .inner()
                .get(&ShortString::from("x-dead-letter-exchange"))
                .is_none()
        );
    }
}
