//! PostgreSQL change data capture: `io.kestra.plugin.debezium.postgres.RealtimeTrigger`, one
//! execution per row change, read natively from a logical replication slot with the built-in
//! `pgoutput` plugin (no JVM, no Debezium).
//!
//! - [`config`]: the trigger's properties (Kestra's, sections B.1/B.2), checked when the flow
//!   is built; those this source cannot honour are refused with the reason. The B.1 ones are
//!   read by [`crate::debezium`], shared with the MySQL trigger.
//! - [`pgoutput`]: decoding of the replication messages and of PostgreSQL's text values.
//! - [`record`]: the `source` block of a change, shaped into `trigger.stream` /
//!   `trigger.data` (Kestra's RAW, INLINE and WRAP) by [`crate::debezium`].
//! - [`snapshot`]: the initial snapshot, consistent with the slot's start.
//! - [`source`]: the replication consumer: publication and slot setup, streaming, and the
//!   confirmation of the slot's position once executions are recorded.
//!
//! Delivery: exactly once per row change. Each row's dedup key is its transaction's commit LSN
//! and its index in the transaction; the slot is confirmed only through transactions whose
//! executions are all recorded, so a crash re-reads at most what was not confirmed, and the
//! store drops what it had recorded already.

pub mod config;
pub mod pgoutput;
pub mod record;
mod snapshot;
pub mod source;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::PostgresCdcConfig;
pub use source::PostgresCdcSource;

/// The trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.debezium.postgres.RealtimeTrigger";

/// The trigger's own properties (the realtime ones are added by the registry): the B.1 ones
/// shared with the other Debezium triggers, then PostgreSQL's. Kestra's properties this
/// source refuses are listed too, so the refusal says why.
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = crate::debezium::properties!(
    PropSpec::required("database", PropType::String),
    PropSpec::optional("slotName", PropType::String),
    PropSpec::optional("publicationName", PropType::String),
    PropSpec::optional("pluginName", PropType::Enum(config::PLUGIN_NAMES)),
    PropSpec::optional("snapshotMode", PropType::Enum(config::SNAPSHOT_MODES)),
    PropSpec::optional("sslMode", PropType::Enum(config::SSL_MODES)),
    PropSpec::optional("sslRootCert", PropType::String),
    PropSpec::optional("sslCert", PropType::String),
    PropSpec::optional("sslKey", PropType::String),
    PropSpec::optional("sslKeyPassword", PropType::String),
);

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<PostgresCdcSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

impl FromTriggerProperties for PostgresCdcSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        Ok(PostgresCdcSource::new(PostgresCdcConfig::from_json(v)?))
    }
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
}

#[cfg(all(test, feature = "core"))]
mod tests {
    use swoop_core::realtime::Ordering;

    const BASE: &str = "    hostname: localhost\n    port: 5432\n    username: postgres\n    password: \"{{ secret('PG_PASSWORD') }}\"\n    database: shop\n";

    #[test]
    fn kestras_example_parses() {
        let (type_name, settings) = crate::realtime::test_flows::parse(
            super::REALTIME_TRIGGER,
            &format!(
                "{BASE}    includedTables: public.orders\n    format: INLINE\n    ordering: PARTITION\n"
            ),
        );
        assert_eq!(type_name, super::REALTIME_TRIGGER);
        assert_eq!(settings.ordering, Ordering::Partition);
    }

    #[test]
    fn problems_are_reported_on_the_trigger() {
        let e = crate::realtime::test_flows::errors(
            super::REALTIME_TRIGGER,
            &format!("{BASE}    pluginName: WAL2JSON\n    snapshotMode: ALWAYS\n"),
        );
        let all = e.join("\n");
        assert!(
            all.contains("`pluginName` WAL2JSON is not supported"),
            "{all}"
        );
        assert!(
            all.contains("`snapshotMode` ALWAYS is not supported"),
            "{all}"
        );
        let e = crate::realtime::test_flows::errors(
            super::REALTIME_TRIGGER,
            &format!("{BASE}    serverId: \"1\"\n"),
        );
        assert!(e.join("\n").contains("serverId"), "{e:?}");
    }
}
