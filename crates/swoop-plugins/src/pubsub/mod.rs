//! Google Cloud Pub/Sub: `io.kestra.plugin.gcp.pubsub.RealtimeTrigger`, one execution per
//! message of a subscription.
//!
//! - [`config`]: the trigger's properties (Kestra's `projectId`, `topic`, `subscription`,
//!   `autoCreateSubscription`, `serdeType`, `serviceAccount`, `impersonatedServiceAccount`,
//!   `scopes`, and swoop's `emulatorHost`), checked when the flow is built.
//! - [`source`]: the consumer (google-cloud-pubsub streaming pull, acks after durable), as a
//!   [`swoop_core::realtime::RealtimeSource`].
//!
//! Delivery is at least once and creates no duplicate: a message is acknowledged only once its
//! execution is stored; a message never acknowledged (crash, lost connection) is delivered
//! again once its lease runs out, and its `messageId` and `publishTime` (the dedup key) make
//! that delivery create nothing new.
//!
//! Outputs: `data` (the payload, as text or parsed JSON), `attributes`, `messageId`,
//! `orderingKey` and `publishTime`. With message ordering, `ordering: KEY` runs one ordering
//! key's executions one after another. The emulator is used when `emulatorHost` or
//! `PUBSUB_EMULATOR_HOST` is set (no credentials are sent then).

pub mod config;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::{PubSubTriggerConfig, SerdeType};
pub use source::PubSubSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.gcp.pubsub.RealtimeTrigger";

/// The trigger's own properties (the realtime ones, `maxInFlight` and `ordering`, are added by
/// the registry).
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::optional("projectId", PropType::String),
    PropSpec::required("topic", PropType::String),
    PropSpec::required("subscription", PropType::String),
    PropSpec::optional("autoCreateSubscription", PropType::Bool),
    PropSpec::optional("serdeType", PropType::Enum(config::SERDE_TYPE_NAMES)),
    PropSpec::optional("serviceAccount", PropType::String),
    PropSpec::optional("impersonatedServiceAccount", PropType::String),
    PropSpec::optional("scopes", PropType::StringOrList),
    PropSpec::optional("emulatorHost", PropType::String),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<PubSubSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for PubSubSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(PubSubSource::new(PubSubTriggerConfig::from_json(v)?))
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
}

#[cfg(all(test, feature = "core"))]
mod tests {
    use swoop_core::realtime::{DEFAULT_MAX_IN_FLIGHT, Ordering, RealtimeSettings};

    fn parse(trigger: &str) -> RealtimeSettings {
        let (type_name, settings) =
            crate::realtime::test_flows::parse(super::REALTIME_TRIGGER, trigger);
        assert_eq!(type_name, super::REALTIME_TRIGGER);
        settings
    }

    fn errors(trigger: &str) -> Vec<String> {
        crate::realtime::test_flows::errors(super::REALTIME_TRIGGER, trigger)
    }

    #[test]
    fn kestras_example_parses() {
        let settings = parse(
            "    projectId: test-project-id\n    topic: test-topic\n    subscription: test-subscription\n",
        );
        assert_eq!(settings.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        let settings = parse(
            "    projectId: p\n    topic: orders\n    subscription: swoop-orders\n    serdeType: JSON\n    autoCreateSubscription: false\n    serviceAccount: \"{{ secret('GCP_SA') }}\"\n    scopes: https://www.googleapis.com/auth/pubsub\n    ordering: KEY\n    maxInFlight: 16\n",
        );
        assert_eq!(settings.ordering, Ordering::Key);
        assert_eq!(settings.max_in_flight, 16);
    }

    #[test]
    fn problems_are_reported_on_the_trigger() {
        let e = errors("    projectId: p\n    subscription: sub\n");
        assert!(e[0].contains("`topic`"), "{e:?}");
        let e = errors("    topic: orders\n    subscription: sub\n    serdeType: AVRO\n");
        assert!(e[0].contains("serdeType"), "{e:?}");
        let e = errors("    topic: orders\n    subscription: sub\n    ackDeadline: PT10S\n");
        assert!(e[0].contains("unknown property `ackDeadline`"), "{e:?}");
    }
}
