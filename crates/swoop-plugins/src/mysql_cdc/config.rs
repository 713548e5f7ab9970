//! The properties of `io.kestra.plugin.debezium.mysql.RealtimeTrigger` (sections B.1 and B.3)
//! and of `io.kestra.plugin.debezium.sqlserver.RealtimeTrigger` (B.1 and B.4), checked when
//! the flow is built, without I/O. Every problem is collected; what cannot be honoured is
//! refused with the reason.

use serde_json::Value;

use crate::debezium::{CommonOptions, Problems, text, word};

/// How errors name the MySQL source.
pub const SOURCE: &str = "MySQL CDC";
/// How errors name the SQL Server source.
pub const SQLSERVER_SOURCE: &str = "SQL Server CDC";

/// `snapshotMode` (MySQL): when the tables' existing rows are read first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// When the trigger has no saved position yet, then the changes (the default).
    Initial,
    /// As `Initial`, then no changes at all.
    InitialOnly,
    /// When there is no saved position, or the binlog it points to was purged.
    WhenNeeded,
    /// Every time the trigger starts, then the changes from there.
    Always,
    /// Never: the changes from the binlog's current end when there is no saved position
    /// (`NEVER`, `NO_DATA`, and `SCHEMA_ONLY`, which Kestra maps to `no_data`).
    NoData,
}

pub const SNAPSHOT_MODES: &[&str] = &[
    "INITIAL",
    "INITIAL_ONLY",
    "WHEN_NEEDED",
    "NEVER",
    "SCHEMA_ONLY",
    "SCHEMA_ONLY_RECOVERY",
    "NO_DATA",
    "ALWAYS",
    "RECOVERY",
];

pub const SQLSERVER_SNAPSHOT_MODES: &[&str] = &["INITIAL", "INITIAL_ONLY", "SCHEMA_ONLY"];

/// A checked MySQL/MariaDB CDC trigger.
#[derive(Debug, Clone)]
pub struct MysqlCdcConfig {
    pub common: CommonOptions,
    /// The replica id this trigger registers with (unique among the server's replicas).
    pub server_id: u32,
    pub snapshot_mode: SnapshotMode,
}

impl MysqlCdcConfig {
    pub fn from_json(v: &Value) -> Result<MysqlCdcConfig, String> {
        let mut p = Problems::default();
        let common = CommonOptions::from_json(SOURCE, v, 3306, &[], &mut p);
        let server_id = match p.take(text(SOURCE, v, "serverId")) {
            Some(Some(t)) => match t.trim().parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    p.push(format!(
                        "`serverId` must be a whole number from 1 to 4294967295, unique among the server's replicas, got `{t}`"
                    ));
                    0
                }
            },
            Some(None) => {
                p.push("`serverId` is required: a number from 1 to 4294967295 that no other replica of the server uses (such as `5400`)");
                0
            }
            None => 0,
        };
        let snapshot_mode = match p
            .take(word(SOURCE, v, "snapshotMode", SNAPSHOT_MODES, "INITIAL"))
            .as_deref()
        {
            Some("INITIAL_ONLY") => SnapshotMode::InitialOnly,
            Some("WHEN_NEEDED") => SnapshotMode::WhenNeeded,
            Some("ALWAYS") => SnapshotMode::Always,
            Some("NEVER" | "NO_DATA" | "SCHEMA_ONLY") => SnapshotMode::NoData,
            Some(m @ ("RECOVERY" | "SCHEMA_ONLY_RECOVERY")) => {
                p.push(format!(
                    "`snapshotMode: {m}` rebuilds Debezium's schema history, which swoop does not keep (column names come with each binlog row); use INITIAL, WHEN_NEEDED or NEVER"
                ));
                SnapshotMode::Initial
            }
            _ => SnapshotMode::Initial,
        };
        p.finish(|| MysqlCdcConfig {
            common,
            server_id,
            snapshot_mode,
        })
    }
}

/// A checked SQL Server CDC trigger (refused when it starts: see `sqlserver`).
#[derive(Debug, Clone)]
pub struct SqlServerCdcConfig {
    pub common: CommonOptions,
    pub database: String,
    /// `INITIAL`, `INITIAL_ONLY` or `SCHEMA_ONLY`.
    pub snapshot_mode: String,
}

impl SqlServerCdcConfig {
    pub fn from_json(v: &Value) -> Result<SqlServerCdcConfig, String> {
        let mut p = Problems::default();
        let common = CommonOptions::from_json(SQLSERVER_SOURCE, v, 1433, &[], &mut p);
        let database = match p.take(text(SQLSERVER_SOURCE, v, "database")) {
            Some(Some(d)) if !d.trim().is_empty() => d.trim().to_string(),
            Some(_) => {
                p.push("`database` is required (the database whose changes are captured)");
                String::new()
            }
            None => String::new(),
        };
        // Kestra accepts `serverId` here and never uses it (B.4): only its form is checked.
        p.take(text(SQLSERVER_SOURCE, v, "serverId"));
        let snapshot_mode = p
            .take(word(
                SQLSERVER_SOURCE,
                v,
                "snapshotMode",
                SQLSERVER_SNAPSHOT_MODES,
                "INITIAL",
            ))
            .unwrap_or_default();
        p.finish(|| SqlServerCdcConfig {
            common,
            database,
            snapshot_mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debezium::Format;
    use serde_json::json;

    fn mysql(patch: Value) -> Result<MysqlCdcConfig, String> {
        let base = json!({"hostname": "127.0.0.1", "port": "3306", "serverId": "5400",
            "username": "root", "password": "{{ secret('MYSQL') }}"});
        MysqlCdcConfig::from_json(&crate::props::patched(base, patch))
    }

    fn sqlserver(patch: Value) -> Result<SqlServerCdcConfig, String> {
        let base = json!({"hostname": "sql", "port": 1433, "database": "shop"});
        SqlServerCdcConfig::from_json(&crate::props::patched(base, patch))
    }

    #[test]
    fn mysql_defaults_and_modes() {
        let c = mysql(json!({})).unwrap();
        assert_eq!((c.server_id, c.common.port), (5400, 3306));
        assert_eq!(c.snapshot_mode, SnapshotMode::Initial);
        assert_eq!(c.common.format, Format::Inline);
        for (mode, want) in [
            ("INITIAL_ONLY", SnapshotMode::InitialOnly),
            ("when_needed", SnapshotMode::WhenNeeded),
            ("ALWAYS", SnapshotMode::Always),
            ("NEVER", SnapshotMode::NoData),
            ("SCHEMA_ONLY", SnapshotMode::NoData),
            ("NO_DATA", SnapshotMode::NoData),
        ] {
            assert_eq!(
                mysql(json!({"snapshotMode": mode})).unwrap().snapshot_mode,
                want
            );
        }
    }

    #[test]
    fn mysql_problems() {
        let e = mysql(json!({"serverId": null})).unwrap_err();
        assert!(e.contains("`serverId` is required"), "{e}");
        let e = mysql(json!({"serverId": "0", "snapshotMode": "RECOVERY", "port": 0})).unwrap_err();
        assert!(e.contains("`serverId` must be a whole number"), "{e}");
        assert!(e.contains("schema history"), "{e}");
        assert!(e.contains("`port` must be a TCP port"), "{e}");
        let e = mysql(json!({"hostname": "{{ vars.host }}"})).unwrap_err();
        assert!(e.contains("`hostname` is a template"), "{e}");
        let e = mysql(json!({"snapshotMode": "LATER"})).unwrap_err();
        assert!(e.contains("`snapshotMode` must be one of INITIAL"), "{e}");
    }

    #[test]
    fn sqlserver_properties() {
        let c = sqlserver(json!({"serverId": "1", "snapshotMode": "schema_only"})).unwrap();
        assert_eq!(
            (c.database.as_str(), c.snapshot_mode.as_str()),
            ("shop", "SCHEMA_ONLY")
        );
        let e = sqlserver(json!({"database": null, "snapshotMode": "ALWAYS", "deleted": "X"}))
            .unwrap_err();
        assert!(e.contains("`database` is required"), "{e}");
        assert!(
            e.contains("`snapshotMode` must be one of INITIAL, INITIAL_ONLY, SCHEMA_ONLY"),
            "{e}"
        );
        assert!(e.contains("`deleted` must be one of"), "{e}");
    }
}
