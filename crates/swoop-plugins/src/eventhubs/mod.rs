//! Azure Event Hubs: `io.kestra.plugin.azure.eventhubs.RealtimeTrigger`, one execution per
//! event, through the Kafka endpoint every Event Hubs namespace (Standard tier and up) serves
//! on port 9093: the event hub is the topic, the consumer group the Kafka group, the
//! connection string the SASL PLAIN password. The Kafka source does the consuming; this
//! family maps Kestra's properties onto it and its variables back to Kestra's.
//!
//! - [`connection`]: connection strings and the SASL login made from the credentials.
//! - [`config`]: the trigger's properties, checked when the flow is built, and the Kafka
//!   trigger configuration they become.
//! - [`source`]: the source, the Kafka source with its events reshaped.
//!
//! Checkpoints are the consumer group's committed offsets, kept by Event Hubs itself (each
//! committed once the event's execution is stored); `checkpointStoreProperties`, required by
//! Kestra for its blob checkpoint store, is accepted and not used (the trigger says so in its
//! log). swoop extension: `kafkaProperties`, librdkafka properties merged over the derived
//! client configuration.

pub mod config;
pub mod connection;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::EventHubsTriggerConfig;
pub use source::EventHubsSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.azure.eventhubs.RealtimeTrigger";

/// The trigger's properties (Kestra's, and swoop's `kafkaProperties`); those the Kafka
/// endpoint cannot honour are refused with an explanation when the flow is built.
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("eventHubName", PropType::String),
    PropSpec::optional("namespace", PropType::String),
    PropSpec::optional("connectionString", PropType::String),
    PropSpec::optional("sharedKeyAccountName", PropType::String),
    PropSpec::optional("sharedKeyAccountAccessKey", PropType::String),
    PropSpec::optional("sasToken", PropType::String),
    PropSpec::optional("customEndpointAddress", PropType::String),
    PropSpec::optional("clientMaxRetries", PropType::Int),
    PropSpec::optional("clientRetryDelay", PropType::Int),
    PropSpec::optional("consumerGroup", PropType::String),
    PropSpec::optional(
        "partitionStartingPosition",
        PropType::Enum(&["EARLIEST", "LATEST", "INSTANT"]),
    ),
    PropSpec::optional("enqueueTime", PropType::String),
    PropSpec::optional(
        "bodyDeserializer",
        PropType::Enum(&["STRING", "BINARY", "ION", "JSON"]),
    ),
    PropSpec::optional("bodyDeserializerProperties", PropType::Map),
    PropSpec::optional("checkpointStoreProperties", PropType::Map),
    PropSpec::optional("kafkaProperties", PropType::Map),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<EventHubsSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for EventHubsSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(EventHubsSource::new(EventHubsTriggerConfig::from_json(v)?))
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
}

#[cfg(all(test, feature = "core"))]
mod tests {
    use swoop_core::realtime::Ordering;

    fn errors(trigger: &str) -> Vec<String> {
        crate::realtime::test_flows::errors(super::REALTIME_TRIGGER, trigger)
    }

    #[test]
    fn kestras_documented_example_parses() {
        let (type_name, settings) = crate::realtime::test_flows::parse(
            super::REALTIME_TRIGGER,
            "    eventHubName: my_eventhub
    namespace: my-eventhub-namespace
    connectionString: \"{{ secret('EVENTHUBS_CONNECTION') }}\"
    bodyDeserializer: JSON
    consumerGroup: \"$Default\"
    checkpointStoreProperties:
      containerName: kestra
      connectionString: \"{{ secret('BLOB_CONNECTION') }}\"
    maxInFlight: 20
    ordering: PARTITION
",
        );
        assert_eq!(type_name, super::REALTIME_TRIGGER);
        assert_eq!(settings.max_in_flight, 20);
        assert_eq!(settings.ordering, Ordering::Partition);
    }

    #[test]
    fn problems_are_reported_on_the_trigger() {
        let e = errors("    namespace: ns\n    connectionString: x\n");
        assert!(
            e.iter()
                .any(|m| m.contains("missing the required property `eventHubName`")),
            "{e:?}"
        );
        let e = errors(
            "    eventHubName: h\n    namespace: ns\n    sasToken: t\n    maxDuration: PT1S\n",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("unknown property `maxDuration`")),
            "{e:?}"
        );
        let e = errors("    eventHubName: h\n    namespace: ns\n");
        assert!(
            e[0].starts_with("trigger `realtime_trigger`: give `connectionString`"),
            "{e:?}"
        );
    }
}

#[cfg(test)]
mod mock_tests;
