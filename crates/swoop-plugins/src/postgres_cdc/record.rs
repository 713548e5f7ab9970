//! One row change as Kestra's PostgreSQL Debezium trigger shows it: its `source` block (`lsn`,
//! `txId`, `schema` …), given to the shared shaping of `trigger.stream` / `trigger.data`
//! ([`crate::debezium`]). No I/O.

use serde_json::{Map, Value, json};

use super::config::PostgresCdcConfig;
use crate::debezium::{self, Op, iso, now_us};

/// Where a change comes from (Debezium's `source` block).
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    /// The transaction's id (`None` for snapshot rows).
    pub tx_id: Option<u32>,
    /// The change's LSN (the snapshot's consistent point for snapshot rows).
    pub lsn: u64,
    /// The commit time (the snapshot's start for snapshot rows), µs since the Unix epoch.
    pub ts_us: i64,
    /// `"false"` when streaming; `"true"`, `"last"` during a snapshot.
    pub snapshot: &'static str,
}

/// A row change: the before and after images (each a map of the kept columns) and the key.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub op: Op,
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
    pub key: Map<String, Value>,
    pub origin: Origin<'a>,
}

/// `0/16B3748`: an LSN as PostgreSQL writes it.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Builds `trigger.*` for each change of one trigger.
pub struct Shaper<'a> {
    pub config: &'a PostgresCdcConfig,
    /// [`debezium::connector_name`].
    pub name: &'a str,
}

impl Shaper<'_> {
    fn source(&self, o: &Origin) -> Map<String, Value> {
        let source = json!({
            "version": concat!("swoop-", env!("CARGO_PKG_VERSION")),
            "connector": "postgresql",
            "name": self.name,
            "ts_ms": o.ts_us / 1000,
            "timestamp": iso(o.ts_us),
            "snapshot": o.snapshot,
            "db": self.config.database,
            "sequence": format!("[null,\"{}\"]", o.lsn),
            "ts_us": o.ts_us,
            "ts_ns": o.ts_us.saturating_mul(1000),
            "schema": o.schema,
            "table": o.table,
            "txId": o.tx_id,
            "lsn": o.lsn,
            "xmin": Value::Null,
        });
        match source {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The trigger variables (`stream`, `data`) of `change`; `None` when the configuration
    /// drops it (`deleted: DROP`).
    pub fn variables(&self, change: Change) -> Option<Map<String, Value>> {
        let c = self.config;
        let shared = debezium::Change {
            op: change.op,
            before: change.before,
            after: change.after,
            key: change.key,
            source: self.source(&change.origin),
            read_us: now_us(),
            // Debezium's PostgreSQL envelope shows its (empty) transaction block.
            transaction: Some(Value::Null),
        };
        debezium::variables(&c.common, &c.database, change.origin.table, shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(patch: Value) -> PostgresCdcConfig {
        let v = crate::props::patched(
            json!({"hostname": "h", "port": 5432, "database": "shop"}),
            patch,
        );
        PostgresCdcConfig::from_json(&v).unwrap()
    }

    fn change(op: Op) -> Change<'static> {
        let row = |s: &str| {
            let mut m = Map::new();
            m.insert("id".into(), json!(7));
            m.insert("status".into(), json!(s));
            m
        };
        let mut key = Map::new();
        key.insert("id".into(), json!(7));
        Change {
            op,
            before: (op == Op::Delete).then(|| row("paid")),
            after: (op != Op::Delete).then(|| row("paid")),
            key,
            origin: Origin {
                schema: "public",
                table: "orders",
                tx_id: Some(42),
                lsn: 0x16B_3748,
                ts_us: 1_767_261_600_000_000,
                snapshot: "false",
            },
        }
    }

    #[test]
    fn inline_is_kestras_example() {
        let c = config(json!({}));
        let s = Shaper {
            config: &c,
            name: "kestra_1a2b3c4d",
        };
        let v = s.variables(change(Op::Update)).unwrap();
        assert_eq!(v["stream"], "shop.orders");
        let d = &v["data"];
        assert_eq!(d["id"], 7);
        assert_eq!(d["status"], "paid");
        assert_eq!(d["deleted"], false);
        let m = &d["metadata"];
        assert_eq!(m["operation"], "UPDATE");
        assert_eq!(m["source"]["connector"], "postgresql");
        assert_eq!(m["source"]["name"], "kestra_1a2b3c4d");
        assert_eq!(m["source"]["timestamp"], "2026-01-01T10:00:00Z");
        assert_eq!(m["source"]["snapshot"], "false");
        assert_eq!(m["source"]["db"], "shop");
        assert_eq!(m["source"]["table"], "orders");
        assert_eq!(m["source"]["schema"], "public");
        assert_eq!(m["source"]["txId"], 42);
        assert!(m["timestamp"].is_string());
    }

    #[test]
    fn wrap_raw_and_deletes() {
        let c = config(json!({"format": "WRAP", "deletedFieldName": "gone", "metadata": "DROP"}));
        let s = Shaper {
            config: &c,
            name: "n",
        };
        let d = s.variables(change(Op::Delete)).unwrap()["data"].clone();
        assert_eq!(
            d,
            json!({"record": {"id": 7, "status": "paid"}, "gone": true, "id": 7})
        );

        let c = config(json!({"format": "RAW"}));
        let s = Shaper {
            config: &c,
            name: "n",
        };
        let d = s.variables(change(Op::Create)).unwrap()["data"].clone();
        assert_eq!(d["key"], json!({"id": 7}));
        assert_eq!(d["value"]["op"], "c");
        assert_eq!(d["value"]["before"], Value::Null);
        assert_eq!(d["value"]["after"]["status"], "paid");
        assert_eq!(d["value"]["source"]["table"], "orders");
        assert_eq!(d["value"]["transaction"], Value::Null);
        assert!(d["value"].as_object().unwrap().contains_key("transaction"));
        assert_eq!(d["deleted"], false);

        let c = config(json!({"deleted": "NULL", "metadata": "DROP", "key": "DROP"}));
        let s = Shaper {
            config: &c,
            name: "n",
        };
        let d = s.variables(change(Op::Delete)).unwrap()["data"].clone();
        assert_eq!(d, json!({"id": null, "status": null}));

        let c = config(json!({"deleted": "DROP"}));
        let s = Shaper {
            config: &c,
            name: "n",
        };
        assert!(s.variables(change(Op::Delete)).is_none());
        assert!(s.variables(change(Op::Create)).is_some());
    }

    #[test]
    fn names() {
        assert_eq!(lsn_text(0x1_0000_00FF), "1/FF");
        let name = debezium::connector_name("ns/flow/trig");
        assert!(name.starts_with("kestra_"));
        assert_eq!(name.len(), 15);
    }
}
