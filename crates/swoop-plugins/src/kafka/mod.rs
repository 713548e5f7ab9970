//! Kafka: `io.kestra.plugin.kafka.RealtimeTrigger` (one execution per record), `Trigger` (one
//! execution per batch, on an interval), and the `Consume` and `Produce` tasks.
//!
//! - [`config`]: the realtime trigger's properties (Kestra's), checked when the flow is built,
//!   the librdkafka client configurations made from them, and the property checks every Kafka
//!   type shares.
//! - [`serde`]: key/value deserializers (Kestra's `SerdeType`s) and header filters.
//! - [`offsets`]: which offsets may be committed — never one whose record's execution is not
//!   durable yet.
//! - [`record`]: a record copied out of librdkafka and decoded into Kestra's variables.
//! - [`clients`]: log lines, the plain client context, closing clients, dead letters.
//! - [`source`]: the consumer, as a [`swoop_core::realtime::RealtimeSource`].
//! - [`batch`]: a bounded batch of records read into an ION file (`Consume`, `Trigger`);
//!   [`consume`] and [`trigger`] use it.
//! - [`produce`]: the `Produce` task, transactional by default.

pub mod batch;
pub mod clients;
pub mod config;
pub mod consume;
pub mod offsets;
pub mod produce;
pub mod record;
pub mod serde;
pub mod source;
pub mod trigger;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::{KafkaTriggerConfig, OnSerdeError, Subscription};
pub use offsets::OffsetTracker;
pub use serde::Deserializer;
pub use source::KafkaSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.kafka.RealtimeTrigger";

/// The trigger's own properties (the realtime ones, `maxInFlight` and `ordering`, are added
/// by the registry). `partitions`, `since` and `groupType: SHARE` are Kestra's and refused
/// with an explanation when the flow is built.
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::optional("topic", PropType::StringOrList),
    PropSpec::optional("topicPattern", PropType::String),
    PropSpec::required("groupId", PropType::String),
    PropSpec::required("properties", PropType::Map),
    PropSpec::optional("serdeProperties", PropType::Map),
    PropSpec::optional("keyDeserializer", PropType::Enum(serde::DESERIALIZER_NAMES)),
    PropSpec::optional(
        "valueDeserializer",
        PropType::Enum(serde::DESERIALIZER_NAMES),
    ),
    PropSpec::optional("headerFilters", PropType::Map),
    PropSpec::optional("onSerdeError", PropType::Any),
    PropSpec::optional("partitions", PropType::List),
    PropSpec::optional("since", PropType::String),
    PropSpec::optional("groupType", PropType::Enum(&["CONSUMER", "SHARE"])),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<KafkaSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for KafkaSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(KafkaSource::new(KafkaTriggerConfig::from_json(v)?))
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
    registry.register_trigger(trigger::factory());
    registry.register_task(consume::factory());
    registry.register_task(produce::factory());
}

#[cfg(test)]
pub(crate) mod mock_tests;

#[cfg(test)]
mod batch_mock_tests;

#[cfg(all(test, feature = "core"))]
mod tests {
    use swoop_core::Flow;
    use swoop_core::flow::TriggerKind;
    use swoop_core::realtime::{DEFAULT_MAX_IN_FLIGHT, Ordering};

    fn flow(trigger: &str) -> String {
        crate::realtime::test_flows::flow(super::REALTIME_TRIGGER, trigger)
    }

    fn errors(trigger: &str) -> Vec<String> {
        crate::realtime::test_flows::errors(super::REALTIME_TRIGGER, trigger)
    }

    #[test]
    fn kestras_tutorial_trigger_parses() {
        let source = flow(
            "    topic: orders
    properties:
      bootstrap.servers: localhost:9092
    serdeProperties:
      valueDeserializer: JSON
    groupId: kestraConsumer
",
        );
        let flow = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        assert_eq!(flow.triggers.len(), 1);
        assert_eq!(flow.triggers[0].type_name, super::REALTIME_TRIGGER);
        let TriggerKind::Realtime(trigger) = &flow.triggers[0].kind else {
            panic!("a realtime trigger");
        };
        assert_eq!(trigger.settings.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(trigger.settings.ordering, Ordering::None);
    }

    #[test]
    fn realtime_settings_and_kestra_options_parse() {
        let source = flow(
            "    topic: [orders, refunds]
    groupId: g
    properties:
      bootstrap.servers: localhost:9092
      session.timeout.ms: 10000
      enable.auto.commit: false
    keyDeserializer: STRING
    valueDeserializer: JSON
    headerFilters:
      type: order
    onSerdeError:
      type: DLQ
      topic: orders-dlq
    maxInFlight: 10
    ordering: KEY
",
        );
        let flow = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        let TriggerKind::Realtime(trigger) = &flow.triggers[0].kind else {
            panic!("a realtime trigger");
        };
        assert_eq!(trigger.settings.max_in_flight, 10);
        assert_eq!(trigger.settings.ordering, Ordering::Key);
    }

    #[test]
    fn problems_are_reported_on_the_trigger() {
        let e = errors("    groupId: g\n    properties:\n      bootstrap.servers: x:1\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("trigger `realtime_trigger`: set one of `topic`"),
            "{e:?}"
        );

        let e = errors("    topic: orders\n    properties:\n      bootstrap.servers: x:1\n");
        assert!(
            e[0].contains("missing the required property `groupId`"),
            "{e:?}"
        );

        let e = errors("    topic: orders\n    groupId: g\n    properties:\n      acks: all\n");
        assert!(e[0].contains("needs `bootstrap.servers`"), "{e:?}");

        let e = errors(
            "    topic: orders\n    groupId: g\n    properties:\n      bootstrap.servers: x:1\n    valueDeserializer: AVRO\n",
        );
        assert!(
            e[0].contains("AVRO is not supported yet (use BYTES or STRING and decode in a task)"),
            "{e:?}"
        );

        let e = errors(
            "    topic: orders\n    groupId: g\n    properties:\n      bootstrap.servers: x:1\n    onSerdeError: RETRY\n",
        );
        assert!(e[0].contains("`onSerdeError` must be SKIPPED"), "{e:?}");

        let e = errors(
            "    topic: orders\n    groupId: g\n    properties:\n      bootstrap.servers: x:1\n    pollDuration: PT1S\n",
        );
        assert!(e[0].contains("unknown property `pollDuration`"), "{e:?}");

        let e = errors(
            "    topic: orders\n    groupId: g\n    properties:\n      bootstrap.servers: x:1\n    maxInFlight: 0\n",
        );
        assert!(e[0].contains("maxInFlight"), "{e:?}");
    }
}
