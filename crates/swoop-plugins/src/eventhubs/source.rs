//! The Event Hubs source: the Kafka source, run against the namespace's Kafka endpoint, with
//! its events reshaped into Kestra's Event Hubs trigger variables on their way out. This
//! module owns that reshaping ([`event_hubs_variables`]) and the context wrapper that applies
//! it ([`EventHubsSink`]); consuming, backpressure, offsets (the checkpoints) and
//! reconnection are the Kafka source's.
//!
//! Variables (Kestra's `EventDataOutput`, null ones absent as in Kestra): `body` (the Kafka
//! value, decoded by `bodyDeserializer`), `partitionKey` (the Kafka key: Event Hubs' Kafka
//! endpoint maps the partition key to it), `enqueuedTimestamp` (epoch ms, the record's
//! timestamp), `offset` and `sequenceNumber` (both the Kafka offset: through the Kafka endpoint
//! Event Hubs numbers a partition's events with their sequence numbers, and AMQP's byte offset
//! is not visible), `properties` (the Kafka headers as a map; values AMQP producers set arrive
//! AMQP-encoded, shown as text) and `partitionId` (swoop extension). `contentType`,
//! `correlationId` and `messageId` are AMQP message properties the Kafka endpoint does not
//! pass on: they are absent. An undecodable body comes with `rawBodyBase64`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use swoop_core::realtime::{
    Backlog, Event, EventSink, RealtimeSource, SourceContext, SourceError, Stopped,
};

use super::config::EventHubsTriggerConfig;
use crate::kafka::KafkaSource;

/// A configured Event Hubs realtime trigger; each `run` makes a Kafka consumer (with the
/// credentials rendered anew).
#[derive(Debug, Clone)]
pub struct EventHubsSource {
    config: Arc<EventHubsTriggerConfig>,
}

impl EventHubsSource {
    pub fn new(config: EventHubsTriggerConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    pub fn config(&self) -> &EventHubsTriggerConfig {
        &self.config
    }
}

#[async_trait]
impl RealtimeSource for EventHubsSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let hub = &self.config.event_hub;
        let kafka = self
            .config
            .kafka_config()
            .map_err(|e| SourceError::Fatal(format!("event hub `{hub}`: {e}")))?;
        tracing::info!(
            consumer = ctx.consumer_name(),
            event_hub = %hub,
            consumer_group = %self.config.consumer_group,
            bootstrap_servers = kafka.bootstrap_servers(),
            "event hubs trigger connecting through the Kafka endpoint"
        );
        let inner = SourceContext::new(
            ctx.consumer_name(),
            Arc::new(EventHubsSink { outer: ctx.clone() }),
            ctx.stop_token(),
        )
        .with_state(ctx.state().clone());
        KafkaSource::new(kafka)
            .run(inner)
            .await
            .map_err(|e| match e {
                SourceError::Transient(m) => {
                    SourceError::Transient(format!("event hub `{hub}` (Kafka endpoint): {m}"))
                }
                SourceError::Fatal(m) => {
                    SourceError::Fatal(format!("event hub `{hub}` (Kafka endpoint): {m}"))
                }
            })
    }
}

/// The Kafka source's context: reshapes each event's variables, then hands it to the
/// runtime's context; the rest goes through as it is.
pub struct EventHubsSink {
    pub outer: SourceContext,
}

#[async_trait]
impl EventSink for EventHubsSink {
    async fn emit(&self, mut event: Event) -> Result<(), Stopped> {
        event.variables = event_hubs_variables(std::mem::take(&mut event.variables));
        self.outer.emit(event).await
    }

    fn connected(&self) {
        self.outer.connected();
    }

    fn watch_backlog(&self, backlog: Arc<dyn Backlog>) {
        self.outer.watch_backlog(backlog);
    }
}

/// Kafka's trigger variables (`key`, `value`, `topic`, `partition`, `offset`, `timestamp`,
/// `headers`, and `rawKeyBase64`/`rawValueBase64` for an undecodable record) as Kestra's
/// Event Hubs trigger names them (see the module comment). Anything else passes unchanged.
pub fn event_hubs_variables(mut kafka: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            out.insert(name.to_string(), value);
        }
    };
    put("body", kafka.remove("value"));
    put("partitionKey", kafka.remove("key"));
    let timestamp = kafka.remove("timestamp");
    put(
        "enqueuedTimestamp",
        timestamp
            .as_ref()
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| Value::from(t.timestamp_millis())),
    );
    let offset = kafka.remove("offset");
    put("offset", offset.clone());
    put("sequenceNumber", offset);
    put(
        "partitionId",
        kafka.remove("partition").map(|p| match p {
            Value::Number(n) => Value::String(n.to_string()),
            other => other,
        }),
    );
    put(
        "properties",
        Some(Value::Object(headers_map(kafka.remove("headers")))),
    );
    put("rawBodyBase64", kafka.remove("rawValueBase64"));
    put("rawPartitionKeyBase64", kafka.remove("rawKeyBase64"));
    // The topic is the event hub, which the flow names already.
    kafka.remove("topic");
    for (name, value) in kafka {
        out.entry(name).or_insert(value);
    }
    out
}

/// Kafka's headers (a list of single-entry maps) as one map; a repeated name keeps its last
/// value.
fn headers_map(headers: Option<Value>) -> Map<String, Value> {
    let mut map = Map::new();
    if let Some(Value::Array(entries)) = headers {
        for entry in entries {
            if let Value::Object(entry) = entry {
                map.extend(entry);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use swoop_core::realtime::{Ack, Outcome};

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn kafka_variables_become_event_hubs_ones() {
        let reshaped = event_hubs_variables(object(json!({
            "key": "customer-1",
            "value": {"order_id": 1},
            "topic": "orders",
            "partition": 2,
            "offset": 42,
            "timestamp": "2023-11-14T22:13:20.123Z",
            "headers": [{"source": "web"}, {"kind": "a"}, {"kind": "b"}],
        })));
        assert_eq!(
            Value::Object(reshaped),
            json!({
                "body": {"order_id": 1},
                "partitionKey": "customer-1",
                "enqueuedTimestamp": 1_700_000_000_123_i64,
                "offset": 42,
                "sequenceNumber": 42,
                "partitionId": "2",
                "properties": {"source": "web", "kind": "b"},
            })
        );
    }

    #[test]
    fn null_values_are_absent_and_raw_payloads_renamed() {
        let reshaped = event_hubs_variables(object(json!({
            "key": null,
            "value": "{broken",
            "rawValueBase64": "e2Jyb2tlbg==",
            "topic": "orders",
            "partition": 0,
            "offset": 7,
            "timestamp": null,
            "headers": [],
        })));
        assert_eq!(
            Value::Object(reshaped),
            json!({
                "body": "{broken",
                "rawBodyBase64": "e2Jyb2tlbg==",
                "offset": 7,
                "sequenceNumber": 7,
                "partitionId": "0",
                "properties": {},
            })
        );
    }

    #[tokio::test]
    async fn the_sink_reshapes_and_forwards_to_the_outer_context() {
        let (outer, mut rx, stop) = SourceContext::channel("dev/flow/t", 1);
        let sink = EventHubsSink { outer };
        let (tx, settled) = tokio::sync::oneshot::channel();
        let mut event = Event::new(object(
            json!({"value": "hi", "offset": 3, "partition": 1, "topic": "t"}),
        ));
        event.dedup_key = Some("t/1/3".into());
        event.ack = Ack::new(move |o| {
            let _ = tx.send(o);
        });
        sink.emit(event).await.expect("room");
        let got = rx.recv().await.expect("forwarded");
        assert_eq!(got.variables["body"], json!("hi"));
        assert_eq!(got.variables["sequenceNumber"], json!(3));
        assert!(!got.variables.contains_key("topic"));
        assert_eq!(got.dedup_key.as_deref(), Some("t/1/3"));
        got.ack.settle(Outcome::Created);
        assert_eq!(settled.await.expect("the ack goes back"), Outcome::Created);
        stop.cancel();
        assert_eq!(sink.emit(Event::new(Map::new())).await, Err(Stopped));
    }
}
