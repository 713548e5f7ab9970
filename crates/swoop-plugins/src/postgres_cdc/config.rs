//! The trigger's properties (Kestra's `io.kestra.plugin.debezium.postgres.RealtimeTrigger`,
//! sections B.1 and B.2 of the reference), checked when the flow is built, without I/O. The
//! B.1 properties, shared with the other Debezium triggers, are read by [`crate::debezium`];
//! this file holds PostgreSQL's own (B.2). Every problem is collected; a property Kestra has
//! and this source cannot honour is refused with the reason, never accepted and ignored.

use serde_json::Value;

use crate::debezium::{CommonOptions, Problems, text, word};

/// How errors name this source.
const SOURCE: &str = "PostgreSQL CDC";

/// `snapshotMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// The tables' rows once, when the slot is created, then the changes (the default).
    Initial,
    /// Only the changes from the slot's creation.
    Never,
}

/// A checked trigger.
#[derive(Debug, Clone)]
pub struct PostgresCdcConfig {
    /// The B.1 properties. Their `db` level is the table's schema (`tables` and `columns`
    /// match `schema.table` and `schema.table.column`); `databases` is empty, as
    /// `includedDatabases` is refused. `username` is `postgres` when not set.
    pub common: CommonOptions,
    pub database: String,
    pub slot_name: String,
    pub publication_name: String,
    pub snapshot_mode: SnapshotMode,
}

/// Kestra's `pluginName` values (only PGOUTPUT is implemented).
pub const PLUGIN_NAMES: &[&str] = &[
    "DECODERBUFS",
    "WAL2JSON",
    "WAL2JSON_RDS",
    "WAL2JSON_STREAMING",
    "WAL2JSON_RDS_STREAMING",
    "PGOUTPUT",
];
pub const SNAPSHOT_MODES: &[&str] = &["INITIAL", "ALWAYS", "NEVER", "INITIAL_ONLY"];
pub const SSL_MODES: &[&str] = &["DISABLE", "REQUIRE", "VERIFY_CA", "VERIFY_FULL"];

const ONE_DATABASE: &str =
    "a PostgreSQL trigger reads the one `database` it connects to; remove it";
const NO_TLS: &str =
    "TLS is not supported yet by this trigger; connect over a trusted network (sslMode DISABLE)";

/// Kestra properties this source refuses, with the reason.
const REFUSED: &[(&str, &str)] = &[
    ("includedDatabases", ONE_DATABASE),
    ("excludedDatabases", ONE_DATABASE),
    (
        "stateName",
        "the replication slot (`slotName`) holds the position, there is no KV state to name; remove it",
    ),
    ("sslRootCert", NO_TLS),
    ("sslCert", NO_TLS),
    ("sslKey", NO_TLS),
    ("sslKeyPassword", NO_TLS),
];

/// A PostgreSQL identifier we create or name in replication commands: letters, digits and `_`.
fn identifier(name: &str, value: &str, rule: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !value.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` `{value}` must be {rule}: lower-case letters, digits and `_`, at most 63, not starting with a digit"
        ))
    }
}

/// `schema.table` as `(schema, table)` when both are plain lower-case names (not regexes).
fn plain_table(written: &str) -> Option<(String, String)> {
    let (schema, table) = written.split_once('.')?;
    let simple = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    (simple(schema) && simple(table)).then(|| (schema.to_string(), table.to_string()))
}

impl PostgresCdcConfig {
    /// Checks the trigger's properties (the whole trigger map).
    pub fn from_json(v: &Value) -> Result<PostgresCdcConfig, String> {
        let mut p = Problems::default();
        let common = CommonOptions::from_json(SOURCE, v, 5432, REFUSED, &mut p);
        let database = match p.take(text(SOURCE, v, "database")) {
            Some(Some(d)) if !d.is_empty() => d,
            Some(_) => {
                p.push("`database` is required (the database whose changes to read)");
                String::new()
            }
            None => String::new(),
        };
        let mut name = |property: &str, default: &str, rule: &str| {
            let name = p
                .take(text(SOURCE, v, property))
                .flatten()
                .unwrap_or_else(|| default.into());
            p.take(identifier(property, &name, rule));
            name
        };
        let slot_name = name("slotName", "kestra", "a replication slot name");
        let publication_name = name(
            "publicationName",
            "kestra_publication",
            "a publication name",
        );
        if let Some(plugin) = p.take(word(SOURCE, v, "pluginName", PLUGIN_NAMES, "PGOUTPUT"))
            && plugin != "PGOUTPUT"
        {
            p.push(format!(
                "`pluginName` {plugin} is not supported: swoop decodes the built-in pgoutput plugin natively; use PGOUTPUT (the default)"
            ));
        }
        let snapshot_mode = match p.take(word(SOURCE, v, "snapshotMode", SNAPSHOT_MODES, "INITIAL"))
        {
            Some(m) if m == "NEVER" => SnapshotMode::Never,
            Some(m) if m == "INITIAL" => SnapshotMode::Initial,
            Some(m) => {
                p.push(format!(
                    "`snapshotMode` {m} is not supported yet: use INITIAL (the rows once, then the changes) or NEVER (the changes only)"
                ));
                SnapshotMode::Initial
            }
            None => SnapshotMode::Initial,
        };
        if let Some(ssl) = p.take(word(SOURCE, v, "sslMode", SSL_MODES, "DISABLE"))
            && ssl != "DISABLE"
        {
            p.push(format!(
                "`sslMode` {ssl} is not supported yet: this trigger connects without TLS (DISABLE)"
            ));
        }
        p.finish(|| PostgresCdcConfig {
            common,
            database,
            slot_name,
            publication_name,
            snapshot_mode,
        })
    }

    /// The included tables as `(schema, table)` when every include is a plain name: then the
    /// publication is created for these tables alone (else for all tables).
    pub fn publication_tables(&self) -> Option<Vec<(String, String)>> {
        let written = self.common.tables.includes();
        if written.is_empty() {
            return None;
        }
        written.iter().map(|t| plain_table(t)).collect()
    }

    /// The user name and password, rendered (`postgres` and none when not set).
    pub fn credentials(&self) -> Result<(String, String), String> {
        let user = match &self.common.username {
            Some(u) => u.resolve("username")?,
            None => "postgres".to_string(),
        };
        let password = match &self.common.password {
            Some(p) => p.resolve("password")?,
            None => String::new(),
        };
        Ok((user, password))
    }

    /// `host:port/database`, for messages.
    pub fn display(&self) -> String {
        format!(
            "{}:{}/{}",
            self.common.hostname, self.common.port, self.database
        )
    }

    /// `trigger.stream` for a row of `table`.
    pub fn stream_name(&self, table: &str) -> String {
        self.common.stream(&self.database, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debezium::{AddOrDrop, Deleted, Format, SplitTable};
    use serde_json::json;

    fn with(patch: Value) -> Value {
        let v = json!({
            "id": "t",
            "type": super::super::REALTIME_TRIGGER,
            "hostname": "localhost",
            "port": 5432,
            "database": "shop",
        });
        crate::props::patched(v, patch)
    }

    fn err(patch: Value) -> String {
        PostgresCdcConfig::from_json(&with(patch)).unwrap_err()
    }

    fn ok(patch: Value) -> PostgresCdcConfig {
        PostgresCdcConfig::from_json(&with(patch)).unwrap()
    }

    #[test]
    fn defaults_are_kestras() {
        let c = ok(json!({}));
        let o = &c.common;
        assert_eq!(o.port, 5432);
        assert_eq!(c.slot_name, "kestra");
        assert_eq!(c.publication_name, "kestra_publication");
        assert_eq!(c.snapshot_mode, SnapshotMode::Initial);
        assert_eq!(o.format, Format::Inline);
        assert_eq!(o.deleted, Deleted::AddField);
        assert_eq!(o.deleted_field_name, "deleted");
        assert_eq!(o.key, AddOrDrop::AddField);
        assert_eq!(o.metadata, AddOrDrop::AddField);
        assert_eq!(o.metadata_field_name, "metadata");
        assert_eq!(o.split_table, SplitTable::Table);
        assert_eq!(c.stream_name("orders"), "shop.orders");
        assert_eq!(c.credentials().unwrap(), ("postgres".into(), String::new()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = err(json!({"hostname": null, "port": "x", "database": null, "format": "WRAPPED"}));
        assert!(e.contains("`hostname` is required"), "{e}");
        assert!(e.contains("`port` must be a TCP port"), "{e}");
        assert!(e.contains("`database` is required"), "{e}");
        assert!(
            e.contains("`format` must be one of RAW, INLINE, WRAP"),
            "{e}"
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        let e = err(json!({"pluginName": "WAL2JSON"}));
        assert!(e.contains("`pluginName` WAL2JSON is not supported"), "{e}");
        for mode in ["ALWAYS", "INITIAL_ONLY"] {
            let e = err(json!({"snapshotMode": mode}));
            assert!(
                e.contains(&format!("`snapshotMode` {mode} is not supported")),
                "{e}"
            );
        }
        assert!(err(json!({"sslMode": "REQUIRE"})).contains("`sslMode` REQUIRE"));
        for name in [
            "includedDatabases",
            "properties",
            "stateName",
            "sslRootCert",
        ] {
            let e = err(json!({ name: "x" }));
            assert!(e.contains(&format!("`{name}` is not supported")), "{e}");
        }
        assert!(err(json!({"slotName": "My-Slot"})).contains("`slotName` `My-Slot`"));
        assert!(err(json!({"includedTables": ["public.(orders"]})).contains("not a valid regex"));
        assert!(err(json!({"hostname": "{{ x }}"})).contains("is a template"));
        let e = err(json!({"ignoreDdl": false}));
        assert!(
            e.contains("DDL (schema-change) events are not emitted"),
            "{e}"
        );
    }

    #[test]
    fn filters_match_whole_names() {
        let c = ok(json!({"includedTables": "public.orders,public.item.*"}));
        assert!(c.common.captures("public", "orders"));
        assert!(c.common.captures("public", "items"));
        assert!(!c.common.captures("public", "orders_archive"));
        assert!(c.publication_tables().is_none(), "a regex: FOR ALL TABLES");
        assert!(ok(json!({})).publication_tables().is_none());
        let c = ok(json!({"excludedTables": ["public.items_old"]}));
        assert!(!c.common.captures("public", "items_old"));
        assert!(c.common.captures("public", "items"));
        assert!(
            err(json!({"includedTables": "public.orders", "excludedTables": "public.x"}))
                .contains("cannot both be set"),
            "Debezium refuses both lists"
        );
        let c = ok(json!({"includedTables": ["public.orders", "sales.lines"]}));
        assert_eq!(
            c.publication_tables(),
            Some(vec![
                ("public".into(), "orders".into()),
                ("sales".into(), "lines".into())
            ])
        );
        let c = ok(json!({"excludedColumns": "public.orders.secret"}));
        assert!(!c.common.keeps_column("public", "orders", "secret"));
        assert!(c.common.keeps_column("public", "orders", "id"));
    }

    #[test]
    fn modes() {
        let c = ok(
            json!({"format": "raw", "deleted": "DROP", "key": "DROP", "metadata": "DROP", "splitTable": "OFF", "snapshotMode": "NEVER", "offsetsCommitMode": "ON_EACH_BATCH", "ignoreDdl": true}),
        );
        assert_eq!(c.common.format, Format::Raw);
        assert_eq!(c.common.deleted, Deleted::Drop);
        assert_eq!(c.common.key, AddOrDrop::Drop);
        assert_eq!(c.common.metadata, AddOrDrop::Drop);
        assert_eq!(c.snapshot_mode, SnapshotMode::Never);
        assert_eq!(c.stream_name("orders"), "data");
        assert_eq!(
            ok(json!({"splitTable": "DATABASE"})).stream_name("orders"),
            "shop"
        );
        assert_eq!(ok(json!({"deleted": "NULL"})).common.deleted, Deleted::Null);
    }
}
