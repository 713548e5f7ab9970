//! What every realtime trigger plugin shares: its registry entry, built from its source type
//! (the source's checked properties, then the runtime settings every realtime trigger has),
//! and, for the plugins' tests, a flow around one trigger block.

use std::sync::Arc;

use serde_json::Value;
use swoop_core::flow::TriggerKind;
use swoop_core::realtime::{RealtimeSettings, RealtimeSource, RealtimeTrigger};
use swoop_core::registry::{PropSpec, TriggerFactory};

/// A realtime source made from its trigger's properties.
pub trait FromTriggerProperties: RealtimeSource + Sized + 'static {
    /// Checks the trigger's properties (the whole trigger map, already checked against the
    /// schema) and makes the source; no I/O.
    fn from_properties(v: &Value) -> Result<Self, String>;
}

/// The registry entry of a realtime trigger whose source is `S`.
pub fn realtime_trigger_factory<S: FromTriggerProperties>(
    type_names: &'static [&'static str],
    properties: &'static [PropSpec],
) -> TriggerFactory {
    TriggerFactory {
        type_names,
        properties,
        realtime: true,
        build: build::<S>,
    }
}

fn build<S: FromTriggerProperties>(v: &Value) -> Result<TriggerKind, String> {
    let source = S::from_properties(v)?;
    let settings = RealtimeSettings::from_json(v)?;
    Ok(TriggerKind::Realtime(RealtimeTrigger {
        source: Arc::new(source),
        settings,
    }))
}

/// For the plugins' tests: flows around one trigger block.
#[cfg(all(test, feature = "core"))]
#[allow(dead_code)] // used by the realtime source families' tests, absent in some feature sets
pub(crate) mod test_flows {
    use swoop_core::Flow;
    use swoop_core::flow::TriggerKind;
    use swoop_core::realtime::RealtimeSettings;

    /// A flow with one Log task and one trigger (id `realtime_trigger`) of `type_name`, with
    /// `properties` as its lines (indented by 4 spaces).
    pub fn flow(type_name: &str, properties: &str) -> String {
        format!(
            "id: realtime
namespace: dev

tasks:
  - id: log
    type: io.kestra.plugin.core.log.Log
    message: \"{{{{ trigger }}}}\"

triggers:
  - id: realtime_trigger
    type: {type_name}
{properties}"
        )
    }

    /// The trigger's type name and runtime settings; panics if the flow is rejected.
    pub fn parse(type_name: &str, properties: &str) -> (String, RealtimeSettings) {
        let flow = Flow::parse(&flow(type_name, properties), &crate::registry())
            .unwrap_or_else(|d| panic!("the flow parses: {d:?}"));
        let trigger = &flow.triggers[0];
        let TriggerKind::Realtime(realtime) = &trigger.kind else {
            panic!("a realtime trigger");
        };
        (trigger.type_name.clone(), realtime.settings.clone())
    }

    /// The problems of a flow that must be rejected.
    pub fn errors(type_name: &str, properties: &str) -> Vec<String> {
        match Flow::parse(&flow(type_name, properties), &crate::registry()) {
            Ok(_) => panic!("expected the flow to be rejected"),
            Err(diagnostics) => diagnostics.into_iter().map(|d| d.message).collect(),
        }
    }
}
