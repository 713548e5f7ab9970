//! The queue consumer behind the realtime trigger, as a [`RealtimeSource`].
//!
//! Each connection is a fresh lapin connection (tokio) with one channel that consumes the
//! queue with manual acknowledgements and a small prefetch ([`PREFETCH`], `basic.qos`): the
//! broker sends at most that many unacknowledged messages, so memory stays flat whatever the
//! queue holds.
//!
//! - a spawned task (the pump) reads the consumer stream and forwards every delivery into a
//!   small bounded channel that [`AmqpConnection::next`] reads, so `next()` is cancel-safe;
//! - an event's ack sends its delivery tag through an unbounded channel to another task, which
//!   owns the lapin channel (and connection) and sends `basic.ack` — only once the runtime has
//!   stored the execution. When every ack of a connection is done or dropped, that task closes
//!   the connection, and RabbitMQ requeues whatever was never acknowledged;
//! - any connection or channel error ends the connection with [`SourceError::Transient`]; the
//!   runtime reconnects with backoff, and RabbitMQ redelivers the unacknowledged messages.
//!
//! Events carry the AMQP `messageId` property as dedup key when the publisher sets it: a
//! message redelivered after a crash (its execution stored, its ack lost) then creates nothing
//! new. Without a message id, such a message makes a second execution — at least once, never
//! lost.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{Map, Number, Value};
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};

use crate::realtime::PullConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{AmqpTriggerConfig, SerdeType};

/// Unacknowledged messages the broker may send to the trigger (`basic.qos` prefetch count).
pub const PREFETCH: u16 = 64;
/// Deliveries waiting for the runtime.
pub const CHANNEL_CAPACITY: usize = 64;
/// How long connecting, opening the channel and starting the consumer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Acknowledgements sent per wake-up of the ack task at most.
const ACK_BATCH: usize = 256;

/// A configured AMQP realtime trigger.
pub struct AmqpSource {
    config: AmqpTriggerConfig,
}

impl AmqpSource {
    pub fn new(config: AmqpTriggerConfig) -> Self {
        AmqpSource { config }
    }

    pub fn config(&self) -> &AmqpTriggerConfig {
        &self.config
    }
}

fn transient(address: &str, what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Transient(format!("AMQP at {address}: {what}: {e}"))
}

#[async_trait]
impl RealtimeSource for AmqpSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        crate::realtime::run_pull(self.connect(ctx.consumer_name()).await, ctx).await
    }
}

impl AmqpSource {
    async fn connect(&self, consumer_name: &str) -> Result<Box<dyn PullConnection>, SourceError> {
        let address = self.config.display_address();
        let queue = self.config.queue.clone();
        let tag = self.config.consumer_tag_for(consumer_name);
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let properties =
                ConnectionProperties::default().with_connection_name(consumer_name.into());
            let uri = self.config.connect_uri().map_err(SourceError::Fatal)?;
            let connection = Connection::connect_uri(uri, properties)
                .await
                .map_err(|e| transient(&address, "cannot connect", e))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| transient(&address, "cannot open a channel", e))?;
            channel
                .basic_qos(PREFETCH, BasicQosOptions::default())
                .await
                .map_err(|e| transient(&address, "basic.qos failed", e))?;
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    transient(
                        &address,
                        &format!("cannot consume the queue `{queue}` (does it exist?)"),
                        e,
                    )
                })?;
            // A channel of its own for the backlog: a failed passive declare closes its channel.
            let backlog_channel = connection.create_channel().await.ok();
            Ok::<_, SourceError>((connection, channel, consumer, backlog_channel))
        })
        .await
        .map_err(|_| {
            SourceError::Transient(format!(
                "AMQP at {address}: connecting took longer than {CONNECT_TIMEOUT:?}"
            ))
        })??;
        let (connection, channel, consumer, backlog_channel) = opened;

        let (events_tx, events_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let pump = tokio::spawn(pump(consumer, address.clone(), queue.clone(), events_tx));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        tokio::spawn(ack_loop(connection, channel, address, ack_rx));
        Ok(Box::new(AmqpConnection {
            events: events_rx,
            pump,
            ack_tx,
            serde_type: self.config.serde_type,
            queue,
            backlog_channel,
        }))
    }
}

/// Forwards the consumer's deliveries to the connection, then its end as an error.
async fn pump(
    mut consumer: Consumer,
    address: String,
    queue: String,
    tx: mpsc::Sender<Result<Delivery, SourceError>>,
) {
    let end = loop {
        match consumer.next().await {
            Some(Ok(delivery)) => {
                if tx.send(Ok(delivery)).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => break transient(&address, "the consumer stopped", e),
            None => {
                break SourceError::Transient(format!(
                    "AMQP at {address}: the consumer of `{queue}` was cancelled"
                ));
            }
        }
    };
    let _ = tx.send(Err(end)).await;
}

/// Acknowledges delivered messages on their channel until every ack of the connection is done
/// or dropped, then closes the connection (RabbitMQ requeues what was not acknowledged).
async fn ack_loop(
    connection: Connection,
    channel: Channel,
    address: String,
    mut rx: mpsc::UnboundedReceiver<u64>,
) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    let mut failed = false;
    while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
        for tag in batch.drain(..) {
            if failed {
                continue;
            }
            if let Err(e) = channel.basic_ack(tag, BasicAckOptions::default()).await {
                // The channel is gone: its unacknowledged messages are redelivered.
                failed = true;
                tracing::warn!(address = %address, error = %e, "amqp trigger: cannot acknowledge; the broker will deliver the unacknowledged messages again");
            }
        }
    }
    let _ = connection.close(200, "swoop: trigger stopped".into()).await;
}

/// A live AMQP trigger.
pub struct AmqpConnection {
    events: mpsc::Receiver<Result<Delivery, SourceError>>,
    pump: JoinHandle<()>,
    ack_tx: mpsc::UnboundedSender<u64>,
    serde_type: SerdeType,
    queue: String,
    backlog_channel: Option<Channel>,
}

impl AmqpConnection {
    fn event(&self, delivery: Delivery) -> Event {
        event(
            self.serde_type,
            &self.queue,
            delivery.delivery_tag,
            delivery.routing_key.as_str(),
            &delivery.properties,
            &delivery.data,
            self.ack_tx.clone(),
        )
    }
}

/// The event of one delivery (its variables are Kestra's outputs).
fn event(
    serde_type: SerdeType,
    queue: &str,
    delivery_tag: u64,
    routing_key: &str,
    properties: &BasicProperties,
    body: &[u8],
    ack_tx: mpsc::UnboundedSender<u64>,
) -> Event {
    let (data, decode_error) = serde_type.decode(body, "the message");
    let text = |s: &Option<lapin::types::ShortString>| {
        s.as_ref()
            .map_or(Value::Null, |s| Value::String(s.as_str().to_string()))
    };
    let mut variables = Map::new();
    variables.insert("data".into(), data);
    variables.insert("contentType".into(), text(properties.content_type()));
    variables.insert(
        "contentEncoding".into(),
        text(properties.content_encoding()),
    );
    variables.insert(
        "headers".into(),
        properties
            .headers()
            .as_ref()
            .map_or(Value::Null, field_table),
    );
    variables.insert(
        "deliveryMode".into(),
        properties.delivery_mode().map_or(Value::Null, Value::from),
    );
    variables.insert(
        "priority".into(),
        properties.priority().map_or(Value::Null, Value::from),
    );
    variables.insert("messageId".into(), text(properties.message_id()));
    variables.insert("correlationId".into(), text(properties.correlation_id()));
    variables.insert("replyTo".into(), text(properties.reply_to()));
    variables.insert("expiration".into(), text(properties.expiration()));
    variables.insert(
        "timestamp".into(),
        properties.timestamp().map_or(Value::Null, timestamp),
    );
    variables.insert("type".into(), text(properties.kind()));
    variables.insert("userId".into(), text(properties.user_id()));
    variables.insert("appId".into(), text(properties.app_id()));
    let dedup_key = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_string())
        .filter(|id| !id.is_empty());
    Event {
        variables,
        dedup_key,
        key: (!routing_key.is_empty()).then(|| routing_key.to_string()),
        partition: Some(queue.to_string()),
        decode_error,
        ack: Ack::on_recorded(move || {
            // If the ack task is gone, the connection is closed: the broker redelivers.
            let _ = ack_tx.send(delivery_tag);
        }),
    }
}

/// An AMQP timestamp (seconds since the epoch) as RFC 3339 (Kestra's `Instant`).
fn timestamp(seconds: u64) -> Value {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or(Value::from(seconds), |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
}

fn field_table(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), amqp_value(v)))
            .collect(),
    )
}

/// An AMQP field value as JSON.
fn amqp_value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            let value = f64::from(d.value) / 10f64.powi(i32::from(d.scale));
            Number::from_f64(value).map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_value).collect()),
        AMQPValue::Timestamp(t) => timestamp(*t),
        AMQPValue::FieldTable(t) => field_table(t),
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::Void => Value::Null,
    }
}

#[async_trait]
impl PullConnection for AmqpConnection {
    async fn next(&mut self) -> Result<Event, SourceError> {
        match self.events.recv().await {
            Some(Ok(delivery)) => Ok(self.event(delivery)),
            Some(Err(e)) => Err(e),
            None => Err(SourceError::Transient(
                "the AMQP consumer stopped; reconnecting".into(),
            )),
        }
    }

    async fn backlog(&mut self) -> Option<u64> {
        let channel = self.backlog_channel.as_ref()?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = tokio::time::timeout(
            Duration::from_secs(5),
            channel.queue_declare(self.queue.as_str().into(), options, FieldTable::default()),
        )
        .await;
        match declared {
            Ok(Ok(queue)) => Some(u64::from(queue.message_count()) + self.events.len() as u64),
            _ => {
                // A failed passive declare closes the channel: no backlog from now on.
                self.backlog_channel = None;
                None
            }
        }
    }
}

impl Drop for AmqpConnection {
    fn drop(&mut self) {
        // Deliveries the pump received but did not hand out stay unacknowledged, and are
        // delivered again once the connection closes.
        self.pump.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};
    use serde_json::json;

    #[test]
    fn events_carry_kestras_outputs() {
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from("n"), AMQPValue::LongInt(7));
        headers.insert(
            ShortString::from("who"),
            AMQPValue::LongString(LongString::from("me")),
        );
        headers.insert(
            ShortString::from("list"),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])),
        );
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id("m-1".into())
            .with_delivery_mode(2)
            .with_priority(3)
            .with_timestamp(1_700_000_000)
            .with_type("order".into())
            .with_app_id("shop".into())
            .with_headers(headers);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let e = event(
            SerdeType::Json,
            "orders",
            42,
            "orders",
            &properties,
            br#"{"id": 1}"#,
            tx,
        );
        assert_eq!(e.variables["data"], json!({"id": 1}));
        assert_eq!(e.variables["contentType"], "application/json");
        assert_eq!(e.variables["messageId"], "m-1");
        assert_eq!(e.variables["deliveryMode"], 2);
        assert_eq!(e.variables["priority"], 3);
        assert_eq!(e.variables["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(e.variables["type"], "order");
        assert_eq!(e.variables["appId"], "shop");
        assert_eq!(e.variables["correlationId"], Value::Null);
        assert_eq!(
            e.variables["headers"],
            json!({"list": [true], "n": 7, "who": "me"})
        );
        assert_eq!(e.dedup_key.as_deref(), Some("m-1"));
        assert_eq!(e.partition.as_deref(), Some("orders"));
        assert!(e.decode_error.is_none());
        e.ack.settle(swoop_core::realtime::Outcome::Created);
        assert_eq!(rx.try_recv().unwrap(), 42);
    }

    #[test]
    fn undecodable_bodies_and_missing_ids() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let e = event(
            SerdeType::Json,
            "q",
            1,
            "",
            &BasicProperties::default(),
            b"this is { not json",
            tx,
        );
        assert_eq!(e.variables["data"], "this is { not json");
        assert!(e.decode_error.unwrap().contains("not valid JSON"));
        assert!(e.dedup_key.is_none());
        assert!(e.key.is_none());
    }
}
