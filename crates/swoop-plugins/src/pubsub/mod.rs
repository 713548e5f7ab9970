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

use std::sync::Arc;

use swoop_core::Registry;
use swoop_core::flow::TriggerKind;
use swoop_core::realtime::{RealtimeSettings, RealtimeTrigger};
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

pub use config::{PubSubTriggerConfig, SerdeType};
pub use source::{PubSubConnection, PubSubSource};

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
    TriggerFactory {
        type_names: &[REALTIME_TRIGGER],
        properties: REALTIME_TRIGGER_PROPERTIES,
        realtime: true,
        build: |v| {
            let config = PubSubTriggerConfig::from_json(v)?;
            let settings = RealtimeSettings::from_json(v)?;
            Ok(TriggerKind::Realtime(RealtimeTrigger {
                source: Arc::new(PubSubSource::new(config)),
                settings,
            }))
        },
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
}

#[cfg(all(test, feature = "core"))]
mod tests {
    use swoop_core::Flow;
    use swoop_core::flow::TriggerKind;
    use swoop_core::realtime::Ordering;

    fn flow(trigger: &str) -> String {
        format!(
            "id: pubsub
namespace: company.team

tasks:
  - id: log
    type: io.kestra.plugin.core.log.Log
    message: \"{{{{ trigger.data }}}}\"

triggers:
  - id: trigger
    type: io.kestra.plugin.gcp.pubsub.RealtimeTrigger
{trigger}"
        )
    }

    fn errors(trigger: &str) -> Vec<String> {
        match Flow::parse(&flow(trigger), &crate::registry()) {
            Ok(_) => panic!("expected the flow to be rejected"),
            Err(diagnostics) => diagnostics.into_iter().map(|d| d.message).collect(),
        }
    }

    #[test]
    fn kestras_example_parses() {
        let source = flow(
            "    projectId: test-project-id\n    topic: test-topic\n    subscription: test-subscription\n",
        );
        let parsed = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        assert_eq!(parsed.triggers[0].type_name, super::REALTIME_TRIGGER);
        let source = flow(
            "    projectId: p\n    topic: orders\n    subscription: swoop-orders\n    serdeType: JSON\n    autoCreateSubscription: false\n    serviceAccount: \"{{ secret('GCP_SA') }}\"\n    scopes: https://www.googleapis.com/auth/pubsub\n    ordering: KEY\n    maxInFlight: 16\n",
        );
        let parsed = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        let TriggerKind::Realtime(trigger) = &parsed.triggers[0].kind else {
            panic!("a realtime trigger");
        };
        assert_eq!(trigger.settings.ordering, Ordering::Key);
        assert_eq!(trigger.settings.max_in_flight, 16);
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
