//! AMQP (RabbitMQ): `io.kestra.plugin.amqp.RealtimeTrigger`, one execution per message of a
//! queue.
//!
//! - [`config`]: the trigger's properties (Kestra's `url`, `host`, `port`, `username`,
//!   `password`, `virtualHost`, `queue`, `consumerTag`, `serdeType`), checked when the flow is
//!   built, and the decoding of a message body.
//! - [`source`]: the consumer (lapin, manual acks, a small prefetch), as a
//!   [`swoop_core::realtime::RealtimeSource`].
//!
//! Delivery is at least once: a message is acknowledged (`basic.ack`) only once its execution
//! is stored; an unacknowledged message (crash, lost connection) is delivered again by
//! RabbitMQ. When the publisher sets the `messageId` property it is the event's dedup key, and
//! such a redelivery creates no second execution; without it, a crash between storing an
//! execution and acknowledging its message makes a duplicate — never a lost message.
//!
//! `autoAck: true` is refused when the flow is built (it would acknowledge messages on
//! delivery: at most once). The queue must exist; the trigger does not declare it. Not
//! supported yet: TLS (`amqps://`).

pub mod config;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::{AmqpTriggerConfig, SerdeType};
pub use source::AmqpSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.amqp.RealtimeTrigger";

/// The trigger's own properties (the realtime ones, `maxInFlight` and `ordering`, are added by
/// the registry).
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::optional("url", PropType::String),
    PropSpec::optional("host", PropType::String),
    PropSpec::optional("port", PropType::String),
    PropSpec::optional("username", PropType::String),
    PropSpec::optional("password", PropType::String),
    PropSpec::optional("virtualHost", PropType::String),
    PropSpec::required("queue", PropType::String),
    PropSpec::optional("consumerTag", PropType::String),
    PropSpec::optional("autoAck", PropType::Bool),
    PropSpec::optional("serdeType", PropType::Enum(config::SERDE_TYPE_NAMES)),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<AmqpSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for AmqpSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(AmqpSource::new(AmqpTriggerConfig::from_json(v)?))
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
}

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
    fn kestras_example_parses() {
        let source = flow(
            "    url: amqp://guest:guest@localhost:5672/my_vhost\n    queue: amqpTrigger.queue\n",
        );
        let parsed = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        assert_eq!(parsed.triggers[0].type_name, super::REALTIME_TRIGGER);
        let TriggerKind::Realtime(trigger) = &parsed.triggers[0].kind else {
            panic!("a realtime trigger");
        };
        assert_eq!(trigger.settings.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(trigger.settings.ordering, Ordering::None);

        let source = flow(
            "    host: localhost\n    port: 5672\n    username: guest\n    password: guest\n    virtualHost: /\n    queue: q\n    serdeType: JSON\n    maxInFlight: 8\n    ordering: PARTITION\n",
        );
        let parsed = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        let TriggerKind::Realtime(trigger) = &parsed.triggers[0].kind else {
            panic!("a realtime trigger");
        };
        assert_eq!(trigger.settings.max_in_flight, 8);
        assert_eq!(trigger.settings.ordering, Ordering::Partition);
    }

    #[test]
    fn problems_are_reported_on_the_trigger() {
        let e = errors("    url: amqp://localhost\n");
        assert!(e[0].contains("`queue`"), "{e:?}");
        let e = errors("    queue: q\n");
        assert!(e[0].contains("`host`"), "{e:?}");
        let e = errors("    url: amqp://localhost\n    queue: q\n    serdeType: AVRO\n");
        assert!(e[0].contains("serdeType"), "{e:?}");
        let e = errors("    url: amqp://localhost\n    queue: q\n    autoAck: true\n");
        assert!(e[0].contains("autoAck"), "{e:?}");
        let e = errors("    url: amqp://localhost\n    queue: q\n    exchange: x\n");
        assert!(e[0].contains("unknown property `exchange`"), "{e:?}");
    }
}
