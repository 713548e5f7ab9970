//! Redis: `io.kestra.plugin.redis.list.RealtimeTrigger`, one execution per list element.
//!
//! - [`config`]: the trigger's properties (Kestra's `url`, `key`, `serdeType`), checked when
//!   the flow is built, and the decoding of an element.
//! - [`source`]: the consumer, as a [`swoop_core::realtime::RealtimeSource`]. Each element is
//!   moved atomically into a processing list (`BLMOVE`) and removed from it once its execution
//!   is durable; the processing list is handed out again on every connect.
//!
//! Delivery is at least once (Kestra's `LPOP` is at most once): Redis list elements have no
//! ids, so events carry no dedup key, and a crash between storing an execution and
//! acknowledging its element makes a duplicate execution — never a lost one.

pub mod config;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::{RedisTriggerConfig, SerdeType};
pub use source::RedisSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.redis.list.RealtimeTrigger";

/// The trigger's own properties (the realtime ones, `maxInFlight` and `ordering`, are added by
/// the registry).
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("url", PropType::String),
    PropSpec::required("key", PropType::String),
    PropSpec::optional("serdeType", PropType::Enum(config::SERDE_TYPE_NAMES)),
];

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<RedisSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for RedisSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        RedisSource::new(RedisTriggerConfig::from_json(v)?)
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
        let source =
            flow("    url: redis://localhost:6379/0\n    key: mycache\n    serdeType: JSON\n");
        let parsed = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        assert_eq!(parsed.triggers[0].type_name, super::REALTIME_TRIGGER);
        let TriggerKind::Realtime(trigger) = &parsed.triggers[0].kind else {
            panic!("a realtime trigger");
        };
        assert_eq!(trigger.settings.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(trigger.settings.ordering, Ordering::None);

        let source = flow("    url: redis://localhost:6379/0\n    key: q\n    maxInFlight: 8\n");
        let parsed = Flow::parse(&source, &crate::registry()).expect("the flow parses");
        let TriggerKind::Realtime(trigger) = &parsed.triggers[0].kind else {
            panic!("a realtime trigger");
        };
        assert_eq!(trigger.settings.max_in_flight, 8);
    }

    #[test]
    fn problems_are_reported_on_the_trigger() {
        let e = errors("    key: q\n");
        assert!(e[0].contains("`url`"), "{e:?}");
        let e = errors("    url: redis://localhost:6379/0\n");
        assert!(e[0].contains("`key`"), "{e:?}");
        let e = errors("    url: redis://localhost:6379/0\n    key: q\n    serdeType: AVRO\n");
        assert!(e[0].contains("serdeType"), "{e:?}");
        let e = errors("    url: http://localhost\n    key: q\n");
        assert!(e[0].contains("not a valid Redis URL"), "{e:?}");
        let e = errors("    url: redis://localhost:6379/0\n    key: q\n    count: 3\n");
        assert!(e[0].contains("unknown property `count`"), "{e:?}");
    }
}
