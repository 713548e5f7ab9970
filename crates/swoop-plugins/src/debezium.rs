//! What every Debezium-style trigger shares, whatever the database (PostgreSQL in
//! `postgres_cdc`; MySQL/MariaDB and SQL Server in `mysql_cdc`): the properties of section B.1
//! (`format`, `deleted`, `key`, `metadata`, `splitTable`, the include/exclude lists,
//! `ignoreDdl`, `offsetsCommitMode`, `stateName` …) and their registry entries, checked without
//! I/O with every problem collected; the shape of one row change as Kestra's trigger shows it
//! (`trigger.stream`, `trigger.data` in RAW, INLINE or WRAP, B.6); and the connector name
//! Kestra derives from the trigger's identity. The caller gives the database-specific `source`
//! block and its own properties. No I/O.
//!
//! Where Kestra's code and its documentation disagree (B.6 caveats), the documented meaning is
//! kept: `deleted: DROP` drops deletes, `deleted: NULL` nulls the columns of a delete,
//! `key: ADD_FIELD` adds the primary-key columns (RAW: `key`).

use chrono::{DateTime, SecondsFormat};
use regex::Regex;
use serde_json::{Map, Value, json};

use crate::props::{DynamicText, no_template, optional_dynamic, present, scalar};

/// A plain (non-template) text property. `source` names the trigger in the message.
pub use crate::props::optional_text as text;

/// The registry entries of a Debezium trigger: the B.1 properties, then the database's own
/// (`$extra`). A property the trigger refuses is listed too, so that the refusal says why.
macro_rules! properties {
    ($($extra:expr),* $(,)?) => {{
        use swoop_core::registry::{PropSpec as Spec, PropType as Ty};
        use $crate::debezium::{ADD_OR_DROP, COMMIT_MODES, DELETED_MODES, FORMATS, SPLIT_TABLES};
        &[
            Spec::required("hostname", Ty::String),
            Spec::required("port", Ty::String),
            Spec::optional("username", Ty::String),
            Spec::optional("password", Ty::String),
            Spec::optional("format", Ty::Enum(FORMATS)),
            Spec::optional("deleted", Ty::Enum(DELETED_MODES)),
            Spec::optional("deletedFieldName", Ty::String),
            Spec::optional("key", Ty::Enum(ADD_OR_DROP)),
            Spec::optional("metadata", Ty::Enum(ADD_OR_DROP)),
            Spec::optional("metadataFieldName", Ty::String),
            Spec::optional("splitTable", Ty::Enum(SPLIT_TABLES)),
            Spec::optional("ignoreDdl", Ty::Bool),
            Spec::optional("includedDatabases", Ty::StringOrList),
            Spec::optional("excludedDatabases", Ty::StringOrList),
            Spec::optional("includedTables", Ty::StringOrList),
            Spec::optional("excludedTables", Ty::StringOrList),
            Spec::optional("includedColumns", Ty::StringOrList),
            Spec::optional("excludedColumns", Ty::StringOrList),
            Spec::optional("properties", Ty::Map),
            Spec::optional("stateName", Ty::String),
            Spec::optional("offsetsCommitMode", Ty::Enum(COMMIT_MODES)),
            $($extra,)*
        ]
    }};
}
pub(crate) use properties;

/// `format`: how a row change becomes `trigger.data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{key, value: <Debezium envelope>, deleted?}`.
    Raw,
    /// The columns, flat, with the `deleted`, key and metadata fields beside them (default).
    Inline,
    /// The columns under `record`, the other fields beside it.
    Wrap,
}

/// `deleted`: what a delete becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The row (its before-image) and a boolean `<deletedFieldName>` (the default).
    AddField,
    /// The row with every column null.
    Null,
    /// No execution for deletes.
    Drop,
}

/// `key` and `metadata`: add the field(s) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOrDrop {
    AddField,
    Drop,
}

/// `splitTable`: what `trigger.stream` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitTable {
    /// `data`.
    Off,
    /// The database name.
    Database,
    /// `<database>.<table>` (the default).
    Table,
}

pub const FORMATS: &[&str] = &["RAW", "INLINE", "WRAP"];
pub const DELETED_MODES: &[&str] = &["ADD_FIELD", "NULL", "DROP"];
pub const ADD_OR_DROP: &[&str] = &["ADD_FIELD", "DROP"];
pub const SPLIT_TABLES: &[&str] = &["OFF", "DATABASE", "TABLE"];
pub const COMMIT_MODES: &[&str] = &["ON_EACH_BATCH", "ON_STOP"];

/// Collects the problems of one trigger.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn take<T>(&mut self, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// `Ok(value)` when no problem was found, else every problem, one per line.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, String> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.0.join("\n"))
        }
    }
}

/// An enum property: its value, upper-cased, among `allowed` (or the default).
pub fn word(
    source: &str,
    v: &Value,
    name: &str,
    allowed: &[&str],
    default: &str,
) -> Result<String, String> {
    let Some(w) = text(source, v, name)? else {
        return Ok(default.to_string());
    };
    let upper = w.trim().to_ascii_uppercase();
    if allowed.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "`{name}` must be one of {}, got `{w}`",
            allowed.join(", ")
        ))
    }
}

/// Regexes matched against the whole of a name (Debezium anchors its include/exclude lists).
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    /// The include list as written.
    written: Vec<String>,
}

impl NameFilter {
    /// Reads `included<What>` / `excluded<What>` (a string of comma-separated regexes, or a
    /// list of them); both at once is refused, as Debezium does.
    pub fn from_json(
        source: &str,
        v: &Value,
        what: &str,
        example: &str,
    ) -> Result<NameFilter, String> {
        let included = format!("included{what}");
        let excluded = format!("excluded{what}");
        let (include, written) = regexes(source, v, &included, example)?;
        let (exclude, _) = regexes(source, v, &excluded, example)?;
        if !include.is_empty() && !exclude.is_empty() {
            return Err(format!(
                "`{included}` and `{excluded}` cannot both be set (Debezium refuses it); keep one"
            ));
        }
        Ok(NameFilter {
            include,
            exclude,
            written,
        })
    }

    /// Whether `name` passes: matched by an include (when there are any) and by no exclude.
    pub fn accepts(&self, name: &str) -> bool {
        let full = |r: &Regex| r.find(name).is_some_and(|m| m.len() == name.len());
        (self.include.is_empty() || self.include.iter().any(full)) && !self.exclude.iter().any(full)
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// The include list as written (empty when there is none).
    pub fn includes(&self) -> &[String] {
        &self.written
    }
}

/// The regexes of `name` and the list as written.
fn regexes(
    source: &str,
    v: &Value,
    name: &str,
    example: &str,
) -> Result<(Vec<Regex>, Vec<String>), String> {
    let items: Vec<String> = match present(v, name) {
        None => return Ok((Vec::new(), Vec::new())),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| scalar(x, name))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "`{name}` must be a regex or a list of regexes (such as `{example}`), got {other}"
            ));
        }
    };
    let items: Vec<String> = items.into_iter().filter(|i| !i.is_empty()).collect();
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        no_template(source, name, item)?;
        out.push(
            Regex::new(item)
                .map_err(|e| format!("`{name}`: `{item}` is not a valid regex: {e}"))?,
        );
    }
    Ok((out, items))
}

/// The properties of section B.1, checked.
#[derive(Debug, Clone)]
pub struct CommonOptions {
    pub hostname: String,
    pub port: u16,
    pub username: Option<DynamicText>,
    pub password: Option<DynamicText>,
    pub format: Format,
    pub deleted: Deleted,
    pub deleted_field_name: String,
    pub key: AddOrDrop,
    pub metadata: AddOrDrop,
    pub metadata_field_name: String,
    pub split_table: SplitTable,
    /// The names of the level above the table: MySQL databases (PostgreSQL schemas, which
    /// are not filtered at this level: its trigger refuses `includedDatabases`).
    pub databases: NameFilter,
    /// `db.table` (PostgreSQL: `schema.table`).
    pub tables: NameFilter,
    /// `db.table.column` (PostgreSQL: `schema.table.column`).
    pub columns: NameFilter,
    /// `stateName`: names the trigger's saved position.
    pub state_name: String,
}

impl CommonOptions {
    /// Reads the B.1 properties of `v`, pushing each problem on `p`; the options mean
    /// something only when no problem was pushed (read them through [`Problems::finish`]).
    /// `default_port` shows in the message when `port` is missing. `refused` lists the
    /// properties this trigger cannot honour, with the reason: each one present is refused,
    /// and not read.
    pub fn from_json(
        source: &str,
        v: &Value,
        default_port: u16,
        refused: &[(&str, &str)],
        p: &mut Problems,
    ) -> CommonOptions {
        for (name, why) in refused {
            if present(v, name).is_some() {
                p.push(format!("`{name}` is not supported: {why}"));
            }
        }
        let kept;
        let v = if refused.is_empty() {
            v
        } else {
            let mut rest = v.clone();
            if let Some(m) = rest.as_object_mut() {
                m.retain(|k, _| !refused.iter().any(|(name, _)| name == k));
            }
            kept = rest;
            &kept
        };
        let hostname = match p.take(text(source, v, "hostname")) {
            Some(Some(h)) if !h.trim().is_empty() => h.trim().to_string(),
            Some(_) => {
                p.push("`hostname` is required (such as `localhost`)");
                String::new()
            }
            None => String::new(),
        };
        let port = match p.take(text(source, v, "port")) {
            Some(Some(t)) => match t.trim().parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    p.push(format!("`port` must be a TCP port (1-65535), got `{t}`"));
                    0
                }
            },
            Some(None) => {
                p.push(format!("`port` is required (such as `{default_port}`)"));
                0
            }
            None => 0,
        };
        let username = p.take(optional_dynamic(v, "username")).flatten();
        let password = p.take(optional_dynamic(v, "password")).flatten();
        let format = match p
            .take(word(source, v, "format", FORMATS, "INLINE"))
            .as_deref()
        {
            Some("RAW") => Format::Raw,
            Some("WRAP") => Format::Wrap,
            _ => Format::Inline,
        };
        let deleted = match p
            .take(word(source, v, "deleted", DELETED_MODES, "ADD_FIELD"))
            .as_deref()
        {
            Some("NULL") => Deleted::Null,
            Some("DROP") => Deleted::Drop,
            _ => Deleted::AddField,
        };
        let add_or_drop = |p: &mut Problems, name: &str| match p
            .take(word(source, v, name, ADD_OR_DROP, "ADD_FIELD"))
            .as_deref()
        {
            Some("DROP") => AddOrDrop::Drop,
            _ => AddOrDrop::AddField,
        };
        let key = add_or_drop(p, "key");
        let metadata = add_or_drop(p, "metadata");
        let split_table = match p
            .take(word(source, v, "splitTable", SPLIT_TABLES, "TABLE"))
            .as_deref()
        {
            Some("OFF") => SplitTable::Off,
            Some("DATABASE") => SplitTable::Database,
            _ => SplitTable::Table,
        };
        let mut field_name = |name: &str, default: &str| match p.take(text(source, v, name)) {
            Some(Some(f)) if f.is_empty() => {
                p.push(format!("`{name}` is empty"));
                default.to_string()
            }
            Some(Some(f)) => f,
            _ => default.to_string(),
        };
        let deleted_field_name = field_name("deletedFieldName", "deleted");
        let metadata_field_name = field_name("metadataFieldName", "metadata");
        let state_name = field_name("stateName", "debezium-state");
        // `ignoreDdl`: neither source emits schema-change (DDL) events (pgoutput carries none;
        // the binlog reader turns row events only into executions), so `true`, Kestra's
        // default, is what swoop does, and `false`, which asks for them, cannot be honoured.
        if let Some(x) = present(v, "ignoreDdl") {
            let flag = x.as_bool().or(match x.as_str() {
                Some("true") => Some(true),
                Some("false") => Some(false),
                _ => None,
            });
            match flag {
                Some(true) => {}
                Some(false) => p.push(
                    "`ignoreDdl: false` cannot be honoured: swoop emits row changes only, DDL (schema-change) events are not emitted; remove it or set it to true",
                ),
                None => p.push(format!("`ignoreDdl` must be true or false, got {x}")),
            }
        }
        // `offsetsCommitMode`: swoop confirms the position continuously, as soon as the
        // executions of what it covers are durable (recorded), which is at least as safe as
        // both modes: nothing unrecorded is ever confirmed (ON_EACH_BATCH may confirm a batch
        // before its executions exist), and a crash replays nothing recorded (ON_STOP
        // replays everything since the start); a replayed row is not a second execution.
        p.take(word(
            source,
            v,
            "offsetsCommitMode",
            COMMIT_MODES,
            "ON_STOP",
        ));
        if let Some(props) = present(v, "properties")
            && props.as_object().is_none_or(|m| !m.is_empty())
        {
            p.push("`properties` is not supported: raw Debezium settings do not apply, as swoop reads the change stream natively, without Debezium; use the trigger's own properties instead");
        }
        let mut filter = |what: &str, example: &str| {
            p.take(NameFilter::from_json(source, v, what, example))
                .unwrap_or_default()
        };
        let databases = filter("Databases", "inventory");
        let tables = filter("Tables", "inventory.orders");
        let columns = filter("Columns", "inventory.orders.note");
        CommonOptions {
            hostname,
            port,
            username,
            password,
            format,
            deleted,
            deleted_field_name,
            key,
            metadata,
            metadata_field_name,
            split_table,
            databases,
            tables,
            columns,
            state_name,
        }
    }

    /// Whether the rows of `db.table` are captured.
    pub fn captures(&self, db: &str, table: &str) -> bool {
        self.databases.accepts(db) && self.tables.accepts(&format!("{db}.{table}"))
    }

    /// Whether `column` of `db.table` is kept in the rows.
    pub fn keeps_column(&self, db: &str, table: &str, column: &str) -> bool {
        self.columns.is_empty() || self.columns.accepts(&format!("{db}.{table}.{column}"))
    }

    /// `trigger.stream` for a change of `db.table`.
    pub fn stream(&self, db: &str, table: &str) -> String {
        match self.split_table {
            SplitTable::Off => "data".to_string(),
            SplitTable::Database => db.to_string(),
            SplitTable::Table => format!("{db}.{table}"),
        }
    }
}

/// Debezium's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A snapshot row.
    Read,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "CREATE",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            Op::Read => "READ",
        }
    }
}

/// A row change: the before and after images (each a map of the kept columns), the key
/// (primary-key columns, empty when the table has none) and Debezium's `source` block.
#[derive(Debug, Clone)]
pub struct Change {
    pub op: Op,
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
    pub key: Map<String, Value>,
    pub source: Map<String, Value>,
    /// When the change was read, µs since the Unix epoch (the envelope's `ts_*`).
    pub read_us: i64,
    /// The RAW envelope's `transaction` block, last in it, when the database's shows one
    /// (PostgreSQL: `Some(null)`); `None` leaves the field out.
    pub transaction: Option<Value>,
}

/// An instant (µs since the Unix epoch) as Kestra writes one (`2026-01-01T10:00:00.123Z`).
pub fn iso(us: i64) -> Value {
    match DateTime::from_timestamp_micros(us) {
        Some(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => Value::Null,
    }
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `trigger.data` for `change`; `None` when the options drop it (`deleted: DROP`).
pub fn data(o: &CommonOptions, change: Change) -> Option<Map<String, Value>> {
    let deleted = change.op == Op::Delete;
    if deleted && o.deleted == Deleted::Drop {
        return None;
    }
    let nulls = |m: Map<String, Value>| -> Map<String, Value> {
        m.into_iter().map(|(k, _)| (k, Value::Null)).collect()
    };
    let now = change.read_us;
    let source = Value::Object(change.source);
    let mut out = match o.format {
        Format::Raw => {
            let before = match change.before {
                Some(b) if deleted && o.deleted == Deleted::Null => Value::Object(nulls(b)),
                Some(b) => Value::Object(b),
                None => Value::Null,
            };
            let mut out = Map::new();
            if o.key == AddOrDrop::AddField {
                let key = (!change.key.is_empty()).then(|| Value::Object(change.key));
                out.insert("key".into(), key.unwrap_or(Value::Null));
            }
            let mut value = json!({
                "before": before,
                "after": change.after.map(Value::Object).unwrap_or(Value::Null),
                "source": source,
                "op": change.op.code(),
                "ts_ms": now / 1000,
                "ts_us": now,
                "ts_ns": now.saturating_mul(1000),
            });
            if let (Some(t), Some(m)) = (change.transaction, value.as_object_mut()) {
                m.insert("transaction".into(), t);
            }
            out.insert("value".into(), value);
            if o.deleted == Deleted::AddField {
                out.insert(o.deleted_field_name.clone(), Value::Bool(deleted));
            }
            return Some(out);
        }
        Format::Inline | Format::Wrap => {
            let mut columns = if deleted {
                change.before.unwrap_or_default()
            } else {
                change.after.unwrap_or_default()
            };
            if deleted && o.deleted == Deleted::Null {
                columns = nulls(columns);
            }
            if o.format == Format::Inline {
                columns
            } else {
                let mut m = Map::new();
                m.insert("record".into(), Value::Object(columns));
                m
            }
        }
    };
    if o.deleted == Deleted::AddField {
        out.insert(o.deleted_field_name.clone(), Value::Bool(deleted));
    }
    if o.key == AddOrDrop::AddField {
        for (k, v) in change.key {
            out.entry(k).or_insert(v);
        }
    }
    if o.metadata == AddOrDrop::AddField {
        out.insert(
            o.metadata_field_name.clone(),
            json!({
                "source": source,
                "operation": change.op.name(),
                "timestamp": iso(now),
                "ts_us": now,
                "ts_ns": now.saturating_mul(1000),
            }),
        );
    }
    Some(out)
}

/// The trigger variables of `change`, a change of `db.table`: `stream` and `data`; `None`
/// when the options drop it (`deleted: DROP`).
pub fn variables(
    o: &CommonOptions,
    db: &str,
    table: &str,
    change: Change,
) -> Option<Map<String, Value>> {
    let data = data(o, change)?;
    let mut vars = Map::new();
    vars.insert("stream".into(), Value::String(o.stream(db, table)));
    vars.insert("data".into(), Value::Object(data));
    Some(vars)
}

/// Kestra's connector name: `kestra_` and the first 8 hex digits of the murmur3 (32-bit) hash
/// of `namespace|flowId|triggerId|iterationValue` (here `namespace/flowId/triggerId` as the
/// runtime names the trigger, iteration empty).
pub fn connector_name(consumer_name: &str) -> String {
    let mut parts = consumer_name.splitn(3, '/');
    let ns = parts.next().unwrap_or_default();
    let flow = parts.next().unwrap_or_default();
    let trigger = parts.next().unwrap_or_default();
    let h = murmur3_32(format!("{ns}|{flow}|{trigger}|").as_bytes(), 0);
    format!("kestra_{h:08x}")
}

fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut k = 0u32;
        for (i, b) in rest.iter().enumerate() {
            k |= (*b as u32) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(patch: Value) -> Result<CommonOptions, String> {
        let v = crate::props::patched(json!({"hostname": "db", "port": 3306}), patch);
        let mut p = Problems::default();
        let o = CommonOptions::from_json("MySQL CDC", &v, 3306, &[], &mut p);
        p.finish(|| o)
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn change(op: Op) -> Change {
        let row = |n: i64| object(json!({"id": 7, "n": n}));
        Change {
            op,
            before: (op != Op::Create && op != Op::Read).then(|| row(1)),
            after: (op != Op::Delete).then(|| row(2)),
            key: object(json!({"id": 7})),
            source: object(json!({"db": "shop", "table": "orders"})),
            read_us: 1_767_261_600_123_000,
            transaction: None,
        }
    }

    #[test]
    fn inline_wrap_and_raw_shapes() {
        let o = options(json!({})).unwrap();
        let d = data(&o, change(Op::Update)).unwrap();
        assert_eq!(d["n"], 2);
        assert_eq!(d["deleted"], false);
        assert_eq!(d["metadata"]["operation"], "UPDATE");
        assert_eq!(d["metadata"]["timestamp"], "2026-01-01T10:00:00.123Z");
        assert_eq!(d["metadata"]["source"]["table"], "orders");
        let d = data(&o, change(Op::Delete)).unwrap();
        assert_eq!(
            (d["n"].clone(), d["deleted"].clone()),
            (json!(1), json!(true))
        );

        let o = options(json!({"format": "WRAP", "metadata": "DROP"})).unwrap();
        let d = data(&o, change(Op::Create)).unwrap();
        assert_eq!(d["record"]["n"], 2);
        assert_eq!(d["id"], 7, "the key beside the record");
        assert!(d.get("metadata").is_none());

        let o = options(json!({"format": "raw", "deleted": "NULL"})).unwrap();
        let d = data(&o, change(Op::Delete)).unwrap();
        assert_eq!(d["key"], json!({"id": 7}));
        assert_eq!(d["value"]["op"], "d");
        assert_eq!(d["value"]["before"], json!({"id": null, "n": null}));
        assert_eq!(d["value"]["after"], Value::Null);
        assert!(d.get("deleted").is_none());
        assert!(d["value"].get("transaction").is_none());
        let c = Change {
            transaction: Some(Value::Null),
            ..change(Op::Create)
        };
        let d = data(&o, c).unwrap();
        assert_eq!(d["value"]["transaction"], Value::Null, "shown when given");

        let o = options(json!({"deleted": "DROP", "key": "DROP"})).unwrap();
        assert!(variables(&o, "shop", "orders", change(Op::Delete)).is_none());
        let v = variables(&o, "shop", "orders", change(Op::Read)).unwrap();
        assert_eq!(
            (&v["stream"], &v["data"]["n"]),
            (&json!("shop.orders"), &json!(2))
        );
    }

    #[test]
    fn filters_and_streams() {
        let o = options(
            json!({"includedTables": ["shop\\.ord.*"], "excludedColumns": "shop.orders.secret"}),
        )
        .unwrap();
        assert!(o.captures("shop", "orders"));
        assert!(!o.captures("shop", "customers"));
        assert!(!o.captures("shop2", "orders"), "anchored");
        assert!(o.keeps_column("shop", "orders", "n"));
        assert!(!o.keeps_column("shop", "orders", "secret"));
        assert_eq!(o.stream("shop", "orders"), "shop.orders");
        let o = options(json!({"splitTable": "DATABASE", "includedDatabases": "a,b"})).unwrap();
        assert_eq!(o.stream("shop", "orders"), "shop");
        assert!(o.captures("a", "t") && !o.captures("c", "t"));
        assert_eq!(
            options(json!({"splitTable": "OFF"}))
                .unwrap()
                .stream("a", "b"),
            "data"
        );
    }

    #[test]
    fn problems_are_all_collected() {
        let e = options(json!({
            "hostname": null, "port": "x", "format": "WRAPPED", "includedTables": "(",
            "includedDatabases": "a", "excludedDatabases": "b", "properties": {"a": "b"},
            "deletedFieldName": "", "ignoreDdl": "maybe", "offsetsCommitMode": "NEVER"
        }))
        .unwrap_err();
        for needle in [
            "`hostname` is required",
            "`port` must be a TCP port",
            "`format` must be one of RAW, INLINE, WRAP, got `WRAPPED`",
            "not a valid regex",
            "cannot both be set",
            "`properties` is not supported: raw Debezium settings",
            "`deletedFieldName` is empty",
            "`ignoreDdl` must be true or false",
            "`offsetsCommitMode` must be one of ON_EACH_BATCH, ON_STOP",
        ] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
        assert!(
            options(json!({"port": null}))
                .unwrap_err()
                .contains("`port` is required")
        );
        assert!(options(json!({"properties": {}})).is_ok());
        let e = options(json!({"includedTables": ["shop.{{ t }}"]})).unwrap_err();
        assert!(e.contains("`includedTables` is a template"), "{e}");
    }

    #[test]
    fn ddl_is_never_emitted_and_offsets_are_confirmed_continuously() {
        for yes in [json!(true), json!("true")] {
            assert!(options(json!({ "ignoreDdl": yes })).is_ok());
        }
        for no in [json!(false), json!("false")] {
            let e = options(json!({ "ignoreDdl": no })).unwrap_err();
            assert!(
                e.contains("DDL (schema-change) events are not emitted"),
                "{e}"
            );
        }
        for mode in ["ON_EACH_BATCH", "on_stop"] {
            assert!(options(json!({ "offsetsCommitMode": mode })).is_ok());
        }
    }

    #[test]
    fn refused_properties_are_reported_and_not_read() {
        let v = json!({"hostname": "h", "port": 1, "includedDatabases": "(", "stateName": ""});
        let mut p = Problems::default();
        let refused = [("includedDatabases", "one db"), ("stateName", "a slot")];
        let o = CommonOptions::from_json("PostgreSQL CDC", &v, 5432, &refused, &mut p);
        assert!(o.databases.is_empty());
        let e = p.0.join("\n");
        assert_eq!(
            e,
            "`includedDatabases` is not supported: one db\n`stateName` is not supported: a slot"
        );
        let o = options(json!({"includedTables": "shop.a, shop.b.*"})).unwrap();
        assert_eq!(o.tables.includes(), ["shop.a", "shop.b.*"]);
    }

    #[test]
    fn connector_names_are_stable() {
        assert_eq!(connector_name("dev/flow/t"), connector_name("dev/flow/t"));
        assert_ne!(connector_name("dev/flow/t"), connector_name("dev/flow/u"));
        assert_eq!(connector_name("dev/flow/t").len(), "kestra_".len() + 8);
        // murmur3_32 reference values (seed 0).
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"hello, world", 0), 0x149b_bb7f);
    }
}
