//! MQTT: `io.kestra.plugin.mqtt.RealtimeTrigger`, one execution per message.
//!
//! - [`config`]: the trigger's properties (Kestra's), checked when the flow is built, and the
//!   payload decoding (`serdeType`).
//! - [`source`]: the subscriber (MQTT 3.1.1 or 5, persistent session, manual acks), as a
//!   [`swoop_core::realtime::RealtimeSource`].
//!
//! Delivery is at-least-once: a message is acknowledged to the broker only once its execution
//! is stored. Events carry no dedup key — MQTT packet ids are reused, so they cannot tell a
//! redelivery from a new message; a crash between storing an execution and acknowledging its
//! message makes a duplicate execution, never a lost one.
//!
//! `clientId` is optional here (Kestra requires it): without it, a stable id is derived from
//! the trigger's namespace, flow and id, so the broker session survives restarts. Not
//! supported yet, and refused when the flow is built: MQTT 5 enhanced authentication
//! (`authMethod`), TLS (`ssl://`, `crt`, `httpsHostnameVerificationEnabled`) and websockets.

pub mod config;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::{MqttTriggerConfig, MqttVersion, Qos, SerdeType};
pub use source::MqttSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.mqtt.RealtimeTrigger";

/// The trigger's own properties (the realtime ones, `maxInFlight` and `ordering`, are added
/// by the registry). `crt`, `httpsHostnameVerificationEnabled` and `authMethod` are Kestra's
/// and refused with an explanation when the flow is built.
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("server", PropType::String),
    PropSpec::optional("clientId", PropType::String),
    PropSpec::required("topic", PropType::StringOrList),
    PropSpec::optional("qos", PropType::Int),
    PropSpec::optional("username", PropType::String),
    PropSpec::optional("password", PropType::String),
    PropSpec::optional("serdeType", PropType::Enum(config::SERDE_TYPE_NAMES)),
    PropSpec::optional("mqttVersion", PropType::Enum(&["V3", "V5"])),
    PropSpec::optional("connectionTimeout", PropType::Duration),
    PropSpec::optional("crt", PropType::String),
    PropSpec::optional("httpsHostnameVerificationEnabled", PropType::Bool),
    PropSpec::optional("authMethod", PropType::String),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<MqttSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for MqttSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(MqttSource::new(MqttTriggerConfig::from_json(v)?))
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
    fn kestras_example_trigger_parses() {
        let source = flow(
            "    server: tcp://localhost:1883
    clientId: kestraProducer
    topic:
      - kestra/sensors/cpu
      - kestra/sensors/mem
    serdeType: JSON
",
        );
        let flow = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        assert_eq!(flow.triggers[0].type_name, super::REALTIME_TRIGGER);
        let TriggerKind::Realtime(trigger) = &flow.triggers[0].kind else {
            panic!("a realtime trigger");
        };
        assert_eq!(trigger.settings.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(trigger.settings.ordering, Ordering::None);
    }

    #[test]
    fn realtime_settings_parse() {
        let source = flow(
            "    server: tcp://localhost:1883
    topic: a/b
    qos: 2
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
        let e = errors("    topic: a\n");
        assert!(e[0].contains("`server`"), "{e:?}");
        let e = errors("    server: tcp://localhost:1883\n");
        assert!(e[0].contains("`topic`"), "{e:?}");
        let e = errors("    server: tcp://localhost:1883\n    topic: a\n    qos: 5\n");
        assert!(e[0].contains("qos"), "{e:?}");
        let e = errors("    server: tcp://localhost:1883\n    topic: a\n    serdeType: AVRO\n");
        assert!(e[0].contains("serdeType"), "{e:?}");
        let e = errors("    server: tcp://localhost:1883\n    topic: a\n    mqttVersion: V4\n");
        assert!(e[0].contains("mqttVersion"), "{e:?}");
        let e = errors("    server: ssl://localhost:8883\n    topic: a\n");
        assert!(e[0].contains("not supported yet"), "{e:?}");
        let e = errors("    server: tcp://localhost:1883\n    topic: a\n    keepAlive: PT5S\n");
        assert!(e[0].contains("unknown property `keepAlive`"), "{e:?}");
    }
}
