//! MySQL/MariaDB change data capture: `io.kestra.plugin.debezium.mysql.RealtimeTrigger`, one
//! execution per row change, read natively from the row-based binlog as a replica would
//! (`mysql_async`'s binlog stream; no JVM, no Debezium). Also
//! `io.kestra.plugin.debezium.sqlserver.RealtimeTrigger`, checked and refused at start.
//!
//! - [`crate::debezium`] (shared with the PostgreSQL trigger): the B.1 properties and the
//!   `trigger.stream` / `trigger.data` shapes (RAW, INLINE, WRAP).
//! - [`config`]: the MySQL (B.3) and SQL Server (B.4) properties.
//! - [`values`]: column values as Debezium shows them.
//! - [`binlog`]: table maps, transaction boundaries and row images.
//! - [`checkpoint`]: where a trigger restarts, saved in the trigger's durable state.
//! - [`snapshot`]: the existing rows, consistent with the binlog position streaming starts at.
//! - [`source`]: the binlog reader and its acknowledgements.
//! - [`sqlserver`]: the refused SQL Server trigger.
//!
//! Delivery: exactly once per row change. A row's dedup key is its transaction's GTID (or
//! binlog file and offset) and its index in the transaction; the saved restart point only
//! moves past transactions whose rows are all recorded, so a crash re-reads at most what was
//! not confirmed, and the store drops what it had recorded already.

pub mod binlog;
pub mod checkpoint;
pub mod config;
mod snapshot;
pub mod source;
pub mod sqlserver;
pub mod values;

use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};

use crate::realtime::FromTriggerProperties;

pub use config::{MysqlCdcConfig, SqlServerCdcConfig};
pub use source::MysqlCdcSource;
pub use sqlserver::SqlServerCdcSource;

/// The MySQL trigger's type name.
pub const REALTIME_TRIGGER: &str = "io.kestra.plugin.debezium.mysql.RealtimeTrigger";
/// The SQL Server trigger's type name.
pub const SQLSERVER_REALTIME_TRIGGER: &str = "io.kestra.plugin.debezium.sqlserver.RealtimeTrigger";

/// The MySQL trigger's own properties (the realtime ones are added by the registry).
pub const REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = crate::debezium::properties!(
    PropSpec::optional("serverId", PropType::String),
    PropSpec::optional("snapshotMode", PropType::Enum(config::SNAPSHOT_MODES)),
);

/// The SQL Server trigger's own properties.
pub const SQLSERVER_REALTIME_TRIGGER_PROPERTIES: &[PropSpec] = crate::debezium::properties!(
    PropSpec::optional("serverId", PropType::String),
    PropSpec::required("database", PropType::String),
    PropSpec::optional(
        "snapshotMode",
        PropType::Enum(config::SQLSERVER_SNAPSHOT_MODES)
    ),
);

impl FromTriggerProperties for MysqlCdcSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        MysqlCdcConfig::from_json(v).map(MysqlCdcSource::new)
    }
}

impl FromTriggerProperties for SqlServerCdcSource {
    fn from_properties(v: &serde_json::Value) -> Result<Self, String> {
        SqlServerCdcConfig::from_json(v).map(|config| SqlServerCdcSource { config })
    }
}

pub fn realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<MysqlCdcSource>(
        &[REALTIME_TRIGGER],
        REALTIME_TRIGGER_PROPERTIES,
    )
}

pub fn sqlserver_realtime_trigger_factory() -> TriggerFactory {
    crate::realtime::realtime_trigger_factory::<SqlServerCdcSource>(
        &[SQLSERVER_REALTIME_TRIGGER],
        SQLSERVER_REALTIME_TRIGGER_PROPERTIES,
    )
}

pub fn register(registry: &mut Registry) {
    registry.register_trigger(realtime_trigger_factory());
    registry.register_trigger(sqlserver_realtime_trigger_factory());
}

#[cfg(all(test, feature = "core"))]
mod tests {
    use crate::realtime::test_flows::{errors, parse};

    #[test]
    fn kestras_examples_parse() {
        let (t, settings) = parse(
            super::REALTIME_TRIGGER,
            "    hostname: 127.0.0.1\n    port: \"3306\"\n    username: mysql_user\n    password: \"{{ secret('MYSQL') }}\"\n    serverId: 123456789\n    maxInFlight: 8\n",
        );
        assert_eq!(
            (t.as_str(), settings.max_in_flight),
            (super::REALTIME_TRIGGER, 8)
        );
        let (t, _) = parse(
            super::SQLSERVER_REALTIME_TRIGGER,
            "    hostname: 127.0.0.1\n    port: 1433\n    username: sa\n    password: pw\n    database: deb\n",
        );
        assert_eq!(t, super::SQLSERVER_REALTIME_TRIGGER);
    }

    #[test]
    fn problems_are_reported_on_the_trigger() {
        let e = errors(super::REALTIME_TRIGGER, "    hostname: h\n    port: 3306\n");
        assert!(
            e.iter().any(|m| m.contains("`serverId` is required")),
            "{e:?}"
        );
        let e = errors(
            super::REALTIME_TRIGGER,
            "    hostname: h\n    port: 3306\n    serverId: 1\n    format: WRAPPED\n",
        );
        assert!(e.iter().any(|m| m.contains("format")), "{e:?}");
        let e = errors(
            super::SQLSERVER_REALTIME_TRIGGER,
            "    hostname: h\n    port: 1433\n",
        );
        assert!(e.iter().any(|m| m.contains("`database`")), "{e:?}");
        let e = errors(
            super::REALTIME_TRIGGER,
            "    hostname: h\n    port: 3306\n    serverId: 1\n    slotName: x\n",
        );
        assert!(
            e.iter().any(|m| m.contains("unknown property `slotName`")),
            "{e:?}"
        );
    }
}
