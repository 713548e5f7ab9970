//! Apache Pulsar: `io.kestra.plugin.pulsar.RealtimeTrigger`, one execution per message.
//!
//! - [`config`]: the trigger's properties, checked when the flow is built.
//! - [`source`]: the consumer, as a [`swoop_core::realtime::RealtimeSource`]: acks a message
//!   once its execution is recorded, gives a released one back at once (redelivery).
//! - [`message`]: an entry (a message or a batch) as events and trigger variables.
//! - [`connection`] and [`proto`]: a small client of Pulsar's binary protocol of our own
//!   (CONNECT, LOOKUP, PARTITIONED_METADATA, GET_TOPICS_OF_NAMESPACE, SUBSCRIBE, FLOW,
//!   MESSAGE, ACK, REDELIVER_UNACKNOWLEDGED_MESSAGES, PING/PONG, CLOSE_CONSUMER; PRODUCER and
//!   SEND for tests), with hand-written prost messages. The `pulsar` crate needs protoc to
//!   build and refuses MESSAGE frames without the (optional) checksum, as pulsar-lite sends
//!   them; this client takes frames with or without it.
//!
//! Delivery is at least once, without duplicate executions: the dedup key is the message id.

pub mod config;
pub mod connection;
pub mod message;
pub mod producer;
pub mod proto;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::PulsarTriggerConfig;
pub use source::PulsarSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.pulsar.RealtimeTrigger";

/// The trigger's own properties (the realtime ones are added by the registry). Kestra's
/// `encryptionKey`, `schemaString` and `tlsOptions` are listed so that the refusal says why.
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("uri", PropType::String),
    PropSpec::optional("topic", PropType::StringOrList),
    PropSpec::optional("topicPattern", PropType::String),
    PropSpec::required("subscriptionName", PropType::String),
    PropSpec::optional(
        "subscriptionType",
        PropType::Enum(config::SUBSCRIPTION_TYPE_NAMES),
    ),
    PropSpec::optional(
        "initialPosition",
        PropType::Enum(config::INITIAL_POSITION_NAMES),
    ),
    PropSpec::optional("consumerName", PropType::String),
    PropSpec::optional("consumerProperties", PropType::Map),
    PropSpec::optional("deserializer", PropType::Enum(config::DESERIALIZER_NAMES)),
    PropSpec::optional("schemaType", PropType::Enum(config::SCHEMA_TYPE_NAMES)),
    PropSpec::optional("schemaString", PropType::String),
    PropSpec::optional("authenticationToken", PropType::String),
    PropSpec::optional("encryptionKey", PropType::String),
    PropSpec::optional("tlsOptions", PropType::Map),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<PulsarSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for PulsarSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(PulsarSource::new(PulsarTriggerConfig::from_json(v)?))
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
}

#[cfg(all(test, feature = "core"))]
mod tests;
