//! Reading the row-based binlog: the tables as their table-map events describe them (column
//! names need `binlog_row_metadata=FULL`), transaction boundaries (GTID, BEGIN, XID, COMMIT,
//! standalone statements) and the row images turned into [`Change`]s. No I/O: the source feeds
//! it the events of its binlog stream.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::binlog::EventType;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetadataField, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::consts::ColumnFlags;
use serde_json::{Map, Value};

use super::values::{Kind, binlog_json};
use crate::debezium::{CommonOptions, Op};

/// MariaDB's GTID event (not known to `mysql_common`).
const MARIADB_GTID_EVENT: u8 = 162;
/// A MariaDB GTID event's flag: the group has no BEGIN/COMMIT (a DDL statement).
const FL_STANDALONE: u8 = 1;

/// One column of a captured table.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub kind: Kind,
    pub key: bool,
    /// Kept by `includedColumns` / `excludedColumns`.
    pub kept: bool,
}

/// A table as its latest table-map event describes it.
#[derive(Debug)]
pub struct TableInfo {
    pub db: String,
    pub table: String,
    /// Whether its rows are captured (`includedDatabases`, `includedTables` …).
    pub captured: bool,
    pub columns: Vec<ColumnInfo>,
}

impl TableInfo {
    /// From a table-map event; `Err` when the event has no column names (the server does not
    /// log them: `binlog_row_metadata` is not FULL).
    pub fn from_tme(tme: &TableMapEvent<'_>, o: &CommonOptions) -> Result<TableInfo, String> {
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let captured = o.captures(&db, &table);
        let n = tme.columns_count() as usize;
        let mut names: Vec<String> = Vec::new();
        let mut keys: Vec<usize> = Vec::new();
        let mut enums: Vec<Vec<String>> = Vec::new();
        let mut sets: Vec<Vec<String>> = Vec::new();
        let labels = |values: &[mysql_async::binlog::events::EnumStrValue<'_>]| {
            values.iter().map(|v| v.value().into_owned()).collect()
        };
        for field in tme.iter_optional_meta() {
            match field.map_err(|e| format!("table map of {db}.{table}: {e}"))? {
                OptionalMetadataField::ColumnName(c) => {
                    for name in c.iter_names() {
                        let name =
                            name.map_err(|e| format!("column names of {db}.{table}: {e}"))?;
                        names.push(name.name().into_owned());
                    }
                }
                OptionalMetadataField::SimplePrimaryKey(k) => {
                    for i in k.iter_indexes() {
                        keys.push(i.map_err(|e| format!("key of {db}.{table}: {e}"))? as usize);
                    }
                }
                OptionalMetadataField::PrimaryKeyWithPrefix(k) => {
                    for i in k.iter_keys() {
                        let i = i.map_err(|e| format!("key of {db}.{table}: {e}"))?;
                        keys.push(i.column_index() as usize);
                    }
                }
                OptionalMetadataField::EnumStrValue(e) => {
                    for v in e.iter_values() {
                        let v = v.map_err(|e| format!("ENUM labels of {db}.{table}: {e}"))?;
                        enums.push(labels(v.values()));
                    }
                }
                OptionalMetadataField::SetStrValue(s) => {
                    for v in s.iter_values() {
                        let v = v.map_err(|e| format!("SET labels of {db}.{table}: {e}"))?;
                        sets.push(v.values().iter().map(|x| x.value().into_owned()).collect());
                    }
                }
                _ => {}
            }
        }
        if names.len() != n {
            return Err(format!(
                "the binlog does not name the columns of {db}.{table}: set binlog_row_metadata=FULL on the server (MariaDB 10.5+, MySQL 8.0.1+), then restart the trigger"
            ));
        }
        let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
        let mut columns = Vec::with_capacity(n);
        for (i, name) in names.into_iter().enumerate() {
            let t = tme
                .get_column_type(i)
                .map_err(|e| format!("column `{name}` of {db}.{table}: {e}"))?
                .ok_or_else(|| format!("column `{name}` of {db}.{table} has no type"))?;
            let mut kind = Kind::of(t, 0, ColumnFlags::empty());
            // The binlog's character set metadata is not needed: binary columns are BLOB or
            // BINARY types whose charset the table map gives; the row parser resolves it.
            match &mut kind {
                Kind::Enum(l) => *l = enums.next().unwrap_or_default(),
                Kind::Set(l) => *l = sets.next().unwrap_or_default(),
                Kind::Bit { bits } => {
                    let meta = tme.get_column_metadata(i).unwrap_or(&[]);
                    if let [low, high, ..] = meta {
                        *bits = usize::from(*high) * 8 + usize::from(*low);
                    }
                }
                _ => {}
            }
            let kept = o.keeps_column(&db, &table, &name);
            columns.push(ColumnInfo {
                key: keys.contains(&i),
                name,
                kind,
                kept,
            });
        }
        Ok(TableInfo {
            db,
            table,
            captured,
            columns,
        })
    }

    /// The kept columns of a row image, and its key columns.
    fn image(&self, row: BinlogRow) -> Result<Image, String> {
        let mut values = Map::new();
        let mut key = Map::new();
        let columns = row.columns();
        let mut row = row;
        for (i, c) in columns.iter().enumerate() {
            let info = self.columns.get(i).ok_or_else(|| {
                format!(
                    "{}.{}: a row has more columns than its table map",
                    self.db, self.table
                )
            })?;
            let mut kind = info.kind.clone();
            // Text or bytes: the row's column knows its character set.
            if kind == Kind::Text && c.character_set() == 63 {
                kind = Kind::Binary;
            }
            let Some(v) = row.take(i) else { continue };
            let v = binlog_json(v, &kind)
                .map_err(|e| format!("{}.{}.{}: {e}", self.db, self.table, info.name))?;
            if info.key {
                key.insert(info.name.clone(), v.clone());
            }
            if info.kept {
                values.insert(info.name.clone(), v);
            }
        }
        Ok((values, key))
    }
}

/// A row image: its kept columns, and its key columns.
type Image = (Map<String, Value>, Map<String, Value>);

/// One row change read from the binlog.
pub struct RowChange {
    pub table: Arc<TableInfo>,
    pub op: Op,
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
    pub key: Map<String, Value>,
    /// The row's index in its rows event (Debezium's `row`).
    pub row_in_event: u64,
}

/// The rows of a rows event, as changes (the tables that are not captured give none).
pub fn rows(
    rows: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
    table: &Arc<TableInfo>,
) -> Result<Vec<RowChange>, String> {
    let op = match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Create,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
        _ => Op::Update,
    };
    let mut out = Vec::new();
    for (n, r) in rows.rows(tme).enumerate() {
        let (before, after) =
            r.map_err(|e| format!("a row of {}.{} does not decode: {e}", table.db, table.table))?;
        let before = before.map(|b| table.image(b)).transpose()?;
        let after = after.map(|a| table.image(a)).transpose()?;
        let key = match (&after, &before) {
            (Some((_, k)), _) | (None, Some((_, k))) => k.clone(),
            _ => Map::new(),
        };
        out.push(RowChange {
            table: table.clone(),
            op,
            before: before.map(|b| b.0),
            after: after.map(|a| a.0),
            key,
            row_in_event: n as u64,
        });
    }
    Ok(out)
}

/// The transaction being read.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    /// Where its first event (GTID or BEGIN) starts: where re-reading it begins.
    pub start: u64,
    /// `domain-server-seq` (MariaDB) or `uuid:n` (MySQL), when GTIDs are on.
    pub gtid: Option<String>,
    /// A BEGIN was read (else the group is one statement).
    pub begun: bool,
    /// Rows read so far in the transaction (captured or not): the next row's index.
    pub rows: u64,
}

/// What an event means for the transaction structure.
pub enum Boundary {
    /// A transaction starts here.
    Start(Txn),
    /// The transaction ends with this event.
    End,
    /// Nothing changes.
    None,
}

/// The start offset of an event in its file.
pub fn event_start(e: &Event) -> u64 {
    let h = e.header();
    u64::from(h.log_pos()).saturating_sub(u64::from(h.event_size()))
}

/// How `e` opens or closes a transaction, given the one being read.
pub fn boundary(e: &Event, current: Option<&Txn>) -> Boundary {
    let h = e.header();
    if h.event_type_raw() == MARIADB_GTID_EVENT {
        let d = e.data();
        // seq_no (8), domain_id (4), flags2 (1).
        if d.len() >= 13 {
            let seq = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
            let domain = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
            let standalone = d[12] & FL_STANDALONE != 0;
            return Boundary::Start(Txn {
                start: event_start(e),
                gtid: Some(format!("{domain}-{}-{seq}", h.server_id())),
                begun: !standalone,
                rows: 0,
            });
        }
    }
    match e.read_data() {
        Ok(Some(EventData::GtidEvent(g))) => Boundary::Start(Txn {
            start: event_start(e),
            gtid: Some(format!("{}:{}", uuid_text(&g.sid()), g.gno())),
            begun: false,
            rows: 0,
        }),
        Ok(Some(EventData::XidEvent(_))) => Boundary::End,
        Ok(Some(EventData::QueryEvent(q))) => {
            let query = q.query();
            let query = query.trim();
            if query.eq_ignore_ascii_case("BEGIN") {
                match current {
                    // After a GTID event: the same transaction.
                    Some(t) => Boundary::Start(Txn {
                        begun: true,
                        ..t.clone()
                    }),
                    None => Boundary::Start(Txn {
                        start: event_start(e),
                        begun: true,
                        ..Txn::default()
                    }),
                }
            } else if query.eq_ignore_ascii_case("COMMIT") || current.is_none_or(|t| !t.begun) {
                Boundary::End
            } else {
                Boundary::None
            }
        }
        _ => Boundary::None,
    }
}

fn uuid_text(sid: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*sid).hyphenated().to_string()
}

/// Whether this event type carries rows in a form this reader cannot decode (MariaDB's
/// compressed row events, `log_bin_compress=ON`).
pub fn compressed_rows(e: &Event) -> bool {
    (166..=171).contains(&e.header().event_type_raw())
}

/// Table maps by table id.
#[derive(Default)]
pub struct Tables(HashMap<u64, Arc<TableInfo>>);

impl Tables {
    pub fn update(&mut self, tme: &TableMapEvent<'_>, o: &CommonOptions) -> Result<(), String> {
        let info = TableInfo::from_tme(tme, o)?;
        self.0.insert(tme.table_id(), Arc::new(info));
        Ok(())
    }

    pub fn get(&self, id: u64) -> Option<&Arc<TableInfo>> {
        self.0.get(&id)
    }
}

/// `true` for the rotate event (whatever its data).
pub fn is_rotate(e: &Event) -> bool {
    e.header().event_type_raw() == EventType::ROTATE_EVENT as u8
}

/// Whether the event stands in the binlog file (not a heartbeat, nor an artificial event the
/// server makes for this stream).
pub fn is_real(e: &Event) -> bool {
    const LOG_EVENT_ARTIFICIAL_F: u16 = 0x20;
    e.header().event_type_raw() != EventType::HEARTBEAT_EVENT as u8
        && e.header().flags_raw() & LOG_EVENT_ARTIFICIAL_F == 0
}

/// A rotate event's file name. The first (artificial) rotate event of a stream comes before
/// the format description, so its checksum is not known to be one and trails the name: the
/// name ends at the digits of its extension.
pub fn file_name(raw: &str) -> String {
    match raw.rfind('.') {
        Some(dot) => {
            let digits = raw[dot + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            raw[..dot + 1 + digits].to_string()
        }
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gtid_source_ids_are_hyphenated_lowercase() {
        let sid = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        assert_eq!(
            super::uuid_text(&sid),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
    }

    #[test]
    fn rotate_names_lose_a_trailing_checksum() {
        assert_eq!(
            super::file_name("binlog.000001\u{7f}O\u{1}x"),
            "binlog.000001"
        );
        assert_eq!(super::file_name("mysql-bin.000042"), "mysql-bin.000042");
    }
}
