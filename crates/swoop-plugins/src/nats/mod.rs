//! NATS: `io.kestra.plugin.nats.core.RealtimeTrigger` (also answering to its older name
//! `io.kestra.plugin.nats.RealtimeTrigger`), one execution per JetStream message.
//!
//! - [`config`]: the trigger's properties (Kestra's), checked when the flow is built, and the
//!   decoding of a message's data.
//! - [`source`]: the JetStream durable pull consumer, as a
//!   [`swoop_core::realtime::RealtimeSource`].
//!
//! The subject must be covered by a JetStream stream (the trigger does not create one, as
//! Kestra does not). Messages are acknowledged (explicit acks) only once their execution is
//! stored; events carry the stream sequence as their dedup key (`stream/sequence`), so a
//! redelivery after a crash creates no second execution.
//!
//! Differences with Kestra: `durableId` is optional here as there, but without it swoop uses a
//! stable durable consumer derived from the trigger's namespace, flow and id (Kestra then uses
//! an ephemeral consumer that starts over on every start). `serdeType` (STRING, the default
//! and Kestra's behaviour, or JSON) is swoop's: with JSON, `data` is the parsed document and
//! data that is not JSON makes a FAILED execution holding the raw text. Not supported yet, and
//! refused when the flow is built: `creds` (credentials files, NKEYs), TLS (`tls://`),
//! websockets, and `deliverPolicy: ByStartSequence` (Kestra has no property for the
//! sequence). `batchSize` is at most 64.

pub mod config;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::{DeliverPolicy, NatsTriggerConfig, SerdeType};
pub use source::NatsSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.nats.core.RealtimeTrigger";
/// Its older name, still accepted.
pub const REALTIME_TRIGGER_ALIAS: &str = "io.kestra.plugin.nats.RealtimeTrigger";

/// The trigger's own properties (the realtime ones, `maxInFlight` and `ordering`, are added
/// by the registry). `creds` is Kestra's and refused with an explanation.
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("url", PropType::String),
    PropSpec::optional("username", PropType::String),
    PropSpec::optional("password", PropType::String),
    PropSpec::optional("token", PropType::String),
    PropSpec::optional("creds", PropType::String),
    PropSpec::required("subject", PropType::String),
    PropSpec::optional("durableId", PropType::String),
    PropSpec::optional("since", PropType::String),
    PropSpec::optional(
        "deliverPolicy",
        PropType::Enum(config::DELIVER_POLICY_NAMES),
    ),
    PropSpec::optional("batchSize", PropType::Int),
    PropSpec::optional("serdeType", PropType::Enum(config::SERDE_TYPE_NAMES)),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<NatsSource>(
        &[REALTIME_TRIGGER, REALTIME_TRIGGER_ALIAS],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for NatsSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(NatsSource::new(NatsTriggerConfig::from_json(v)?))
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

    fn flow(type_name: &str, trigger: &str) -> String {
        crate::realtime::test_flows::flow(type_name, trigger)
    }

    fn errors(trigger: &str) -> Vec<String> {
        crate::realtime::test_flows::errors(super::REALTIME_TRIGGER, trigger)
    }

    #[test]
    fn kestras_example_parses_under_both_names() {
        for type_name in [super::REALTIME_TRIGGER, super::REALTIME_TRIGGER_ALIAS] {
            let source = flow(
                type_name,
                "    url: nats://localhost:4222
    username: nats_user
    password: secret
    subject: kestra.trigger
    durableId: natsTrigger
    deliverPolicy: All
",
            );
            let parsed = Flow::parse(&source, &crate::registry()).expect("the flow parses");
            let TriggerKind::Realtime(trigger) = &parsed.triggers[0].kind else {
                panic!("a realtime trigger");
            };
            assert_eq!(trigger.settings.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
            assert_eq!(trigger.settings.ordering, Ordering::None);
        }
        let source = flow(
            super::REALTIME_TRIGGER,
            "    url: nats://localhost:4222\n    subject: a.b\n    maxInFlight: 8\n    ordering: PARTITION\n",
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
        let e = errors("    subject: a\n");
        assert!(e[0].contains("`url`"), "{e:?}");
        let e = errors("    url: nats://localhost:4222\n");
        assert!(e[0].contains("`subject`"), "{e:?}");
        let e = errors("    url: nats://localhost:4222\n    subject: a\n    creds: /x.creds\n");
        assert!(e[0].contains("not supported yet"), "{e:?}");
        let e =
            errors("    url: nats://localhost:4222\n    subject: a\n    deliverPolicy: Never\n");
        assert!(e[0].contains("deliverPolicy"), "{e:?}");
        let e = errors("    url: nats://localhost:4222\n    subject: a\n    pollDuration: PT1S\n");
        assert!(e[0].contains("unknown property `pollDuration`"), "{e:?}");
    }
}
