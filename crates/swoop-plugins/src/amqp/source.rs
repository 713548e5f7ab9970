//! The queue consumer behind the realtime trigger, as a [`RealtimeSource`].
//!
//! Each connection is a fresh lapin connection (tokio) with one channel that consumes the
//! queue with manual acknowledgements and a small prefetch ([`PREFETCH`], `basic.qos`): the
//! broker sends at most that many unacknowledged messages, so memory stays flat whatever the
//! queue holds.
//!
//! - `run` reads the consumer stream and emits every delivery (waiting for an in-flight slot;
//!   meanwhile the prefetch window fills and the broker stops sending);
//! - an event's ack sends its delivery tag to another task ([`Settler`]), which owns the lapin
//!   channel (and connection) and sends `basic.ack` once the runtime has stored the execution,
//!   or `basic.nack` with requeue when the event is released (the trigger stopped first): the
//!   broker delivers it again at once, flagged redelivered. When every event is settled, that
//!   task closes the connection, and RabbitMQ requeues whatever was never acknowledged;
//! - on stop, `run` cancels the consumer, waits for those last acknowledgements, and returns;
//! - any connection or channel error ends the run with [`SourceError::Transient`]; the
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
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{Map, Number, Value};
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};
use tokio::sync::mpsc;

use crate::realtime::{Settled, unless_stopped};

use super::config::{AmqpTriggerConfig, SerdeType};

/// Unacknowledged messages the broker may send to the trigger (`basic.qos` prefetch count).
pub const PREFETCH: u16 = 64;
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
        let address = self.config.display_address();
        let queue = self.config.queue.clone();
        let tag = self.config.consumer_tag_for(ctx.consumer_name());
        let (connection, channel, mut consumer, backlog_channel) =
            self.open(ctx.consumer_name(), &address, &tag).await?;
        ctx.connected();
        if let Some(backlog_channel) = backlog_channel {
            let queue = queue.clone();
            ctx.watch_backlog(crate::realtime::backlog_probe(move || {
                message_count(backlog_channel.clone(), queue.clone())
            }));
        }
        let (settler, settlements) = crate::realtime::settlements();
        let acks = tokio::spawn(ack_loop(
            connection,
            channel.clone(),
            address.clone(),
            settlements,
        ));
        let serde_type = self.config.serde_type;
        let result = loop {
            let delivery = match unless_stopped(&ctx, consumer.next()).await {
                None => break Ok(()),
                Some(Some(Ok(delivery))) => delivery,
                Some(Some(Err(e))) => break Err(transient(&address, "the consumer stopped", e)),
                Some(None) => {
                    break Err(SourceError::Transient(format!(
                        "AMQP at {address}: the consumer of `{queue}` was cancelled"
                    )));
                }
            };
            let event = event(
                serde_type,
                &queue,
                &delivery,
                settler.ack(delivery.delivery_tag),
            );
            if ctx.emit(event).await.is_err() {
                break Ok(());
            }
        };
        if result.is_ok() {
            // No more deliveries; those prefetched and not emitted are requeued when the
            // connection closes, after the last acknowledgements.
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            drop((settler, consumer));
            if !crate::realtime::settle_until_done(acks).await {
                tracing::warn!(address = %address, queue = %queue, "amqp trigger: events not settled in time; the broker will deliver them again");
            }
        }
        result
    }
}

impl AmqpSource {
    /// Connects, opens the channel and starts the consumer.
    async fn open(
        &self,
        consumer_name: &str,
        address: &str,
        tag: &str,
    ) -> Result<(Connection, Channel, Consumer, Option<Channel>), SourceError> {
        let queue = &self.config.queue;
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            let properties =
                ConnectionProperties::default().with_connection_name(consumer_name.into());
            let uri = self.config.connect_uri().map_err(SourceError::Fatal)?;
            let connection = Connection::connect_uri(uri, properties)
                .await
                .map_err(|e| transient(address, "cannot connect", e))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| transient(address, "cannot open a channel", e))?;
            channel
                .basic_qos(PREFETCH, BasicQosOptions::default())
                .await
                .map_err(|e| transient(address, "basic.qos failed", e))?;
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    transient(
                        address,
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
        })?
    }
}

/// The messages waiting in the queue (a passive declare; once one fails, its channel is closed
/// and the backlog unknown).
async fn message_count(channel: Channel, queue: String) -> Option<u64> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await
        .ok()?;
    Some(u64::from(declared.message_count()))
}

/// Acknowledges (or gives back) delivered messages on their channel until every event of the
/// run is settled, then closes the connection (RabbitMQ requeues what was not acknowledged).
async fn ack_loop(
    connection: Connection,
    channel: Channel,
    address: String,
    mut rx: mpsc::UnboundedReceiver<Settled<u64>>,
) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    let mut failed = false;
    while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
        for settled in batch.drain(..) {
            if failed {
                continue;
            }
            let sent = match settled {
                Settled::Ack(tag) => channel.basic_ack(tag, BasicAckOptions::default()).await,
                Settled::Nack(tag) => {
                    let requeue = BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    };
                    channel.basic_nack(tag, requeue).await
                }
            };
            if let Err(e) = sent {
                // The channel is gone: its unacknowledged messages are redelivered.
                failed = true;
                tracing::warn!(address = %address, error = %e, "amqp trigger: cannot acknowledge; the broker will deliver the unacknowledged messages again");
            }
        }
    }
    let _ = connection.close(200, "swoop: trigger stopped".into()).await;
}

/// The event of one delivery (its variables are Kestra's outputs).
fn event(serde_type: SerdeType, queue: &str, delivery: &Delivery, ack: Ack) -> Event {
    let properties = &delivery.properties;
    let routing_key = delivery.routing_key.as_str();
    let (data, decode_error) = serde_type.decode(&delivery.data, "the message");
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
    // Not in Kestra's outputs: whether the broker delivered this message before.
    variables.insert("redelivered".into(), Value::Bool(delivery.redelivered));
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
        execution_id: None,
        ack,
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

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;
    use lapin::types::{FieldArray, LongString, ShortString};
    use serde_json::json;
    use swoop_core::realtime::Outcome;

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
        let mut delivery = Delivery::mock(
            42,
            "".into(),
            "orders".into(),
            true,
            br#"{"id": 1}"#.to_vec(),
        );
        delivery.properties = properties;
        let (settler, mut rx) = crate::realtime::settlements();
        let e = event(SerdeType::Json, "orders", &delivery, settler.ack(42));
        assert_eq!(e.variables["data"], json!({"id": 1}));
        assert_eq!(e.variables["contentType"], "application/json");
        assert_eq!(e.variables["messageId"], "m-1");
        assert_eq!(e.variables["deliveryMode"], 2);
        assert_eq!(e.variables["priority"], 3);
        assert_eq!(e.variables["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(e.variables["type"], "order");
        assert_eq!(e.variables["appId"], "shop");
        assert_eq!(e.variables["correlationId"], Value::Null);
        assert_eq!(e.variables["redelivered"], true);
        assert_eq!(
            e.variables["headers"],
            json!({"list": [true], "n": 7, "who": "me"})
        );
        assert_eq!(e.dedup_key.as_deref(), Some("m-1"));
        assert_eq!(e.partition.as_deref(), Some("orders"));
        assert!(e.decode_error.is_none());
        e.ack.settle(Outcome::Duplicate);
        assert_eq!(rx.try_recv().unwrap(), Settled::Ack(42));
        // Released (the trigger stopped first): given back.
        drop(settler.ack(43));
        assert_eq!(rx.try_recv().unwrap(), Settled::Nack(43));
    }

    #[test]
    fn undecodable_bodies_and_missing_ids() {
        let delivery = Delivery::mock(
            1,
            "".into(),
            "".into(),
            false,
            b"this is { not json".to_vec(),
        );
        let e = event(SerdeType::Json, "q", &delivery, Ack::none());
        assert_eq!(e.variables["data"], "this is { not json");
        assert!(e.decode_error.unwrap().contains("not valid JSON"));
        assert!(e.dedup_key.is_none());
        assert!(e.key.is_none());
        assert_eq!(e.variables["redelivered"], false);
    }
}
