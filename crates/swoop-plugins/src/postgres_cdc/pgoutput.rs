//! Decoding of the pgoutput logical replication messages (protocol version 1, text values)
//! that carry rows — Relation, Insert, Update, Delete, Truncate — and of PostgreSQL's text
//! form of a value into the JSON Debezium's converters give it (B.6: numbers stay numbers,
//! timestamps become ISO strings, `bytea` base64, `json` text). Begin and Commit are decoded by
//! `pgwire-replication` itself. No I/O.

use base64::Engine;
use serde_json::{Map, Number, Value};

/// What Debezium puts in a column whose unchanged TOASTed value the server did not send.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// Part of the replica identity (the primary key, by default).
    pub key: bool,
}

/// A table as the stream describes it (sent before its first row in each session).
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

impl Relation {
    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// One column of a row: null, not sent (an unchanged TOASTed value), or its text.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    Unchanged,
    Text(String),
}

pub type Tuple = Vec<Datum>;

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        /// The old key (`K`) or the whole old row (`O`, with `REPLICA IDENTITY FULL`), when sent.
        old: Option<Tuple>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Anything else (Type, Origin, logical messages …): nothing to emit.
    Other(u8),
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| {
            format!(
                "pgoutput message truncated at byte {} (wanted {n} more of {})",
                self.at,
                self.buf.len()
            )
        })?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn cstr(&mut self) -> Result<String, String> {
        let rest = &self.buf[self.at..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or("pgoutput string without its terminating zero")?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Tuple, String> {
        let n = self.u16()?;
        (0..n)
            .map(|_| match self.u8()? {
                b'n' => Ok(Datum::Null),
                b'u' => Ok(Datum::Unchanged),
                b't' => {
                    let len = self.u32()? as usize;
                    Ok(Datum::Text(
                        String::from_utf8_lossy(self.bytes(len)?).into_owned(),
                    ))
                }
                other => Err(format!(
                    "pgoutput column kind `{}` is not text (the stream must be started without `binary`)",
                    other as char
                )),
            })
            .collect()
    }
}

/// Decodes one pgoutput message (the payload of an XLogData).
pub fn decode(buf: &[u8]) -> Result<Message, String> {
    let mut r = Reader { buf, at: 0 };
    let tag = r.u8()?;
    Ok(match tag {
        b'R' => {
            let oid = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            let _replica_identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let _typmod = r.u32()?;
                columns.push(Column {
                    name,
                    type_oid,
                    key: flags & 1 == 1,
                });
            }
            Message::Relation(Relation {
                oid,
                schema,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            expect(r.u8()?, b'N', "Insert")?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            expect(kind, b'N', "Update")?;
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(format!("pgoutput Delete: unexpected `{}`", kind as char));
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let relations = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    })
}

fn expect(got: u8, want: u8, what: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "pgoutput {what}: expected `{}`, got `{}`",
            want as char, got as char
        ))
    }
}

/// The JSON value of a column of type `type_oid` from its text form, as Debezium's JSON
/// converter (with Kestra's mapper) shows it.
pub fn text_value(type_oid: u32, text: &str) -> Value {
    match type_oid {
        // bool
        16 => Value::Bool(text == "t" || text == "true"),
        // int2, int4, int8, oid
        21 | 23 | 20 | 26 => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.into())),
        // float4, float8, numeric: a number when it is a finite one
        700 | 701 | 1700 => number(text).unwrap_or_else(|| Value::String(text.into())),
        // bytea, `\x…` hex
        17 => match text.strip_prefix("\\x").and_then(hex) {
            Some(bytes) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            None => Value::String(text.into()),
        },
        // timestamp: an Instant
        1114 => Value::String(format!("{}Z", text.replacen(' ', "T", 1))),
        // timestamptz: ISO with its offset (the session runs in UTC: `+00`)
        1184 => Value::String(iso_offset(&text.replacen(' ', "T", 1))),
        _ => Value::String(text.into()),
    }
}

fn number(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    Number::from_f64(f).map(Value::Number)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `2026-01-01T10:00:00+00` → `2026-01-01T10:00:00Z`; other offsets get their minutes.
fn iso_offset(s: &str) -> String {
    if let Some(base) = s.strip_suffix("+00") {
        return format!("{base}Z");
    }
    let tail = s.len().saturating_sub(3);
    match s.get(tail..) {
        Some(off) if (off.starts_with('+') || off.starts_with('-')) && !off[1..].contains(':') => {
            format!("{s}:00")
        }
        _ => s.to_string(),
    }
}

/// The row's columns as a JSON map (columns that `keep` refuses are left out). `None` values
/// (every column null, for `deleted: NULL`) when `nulls` is set.
pub fn row_map(
    relation: &Relation,
    tuple: &Tuple,
    keep: &dyn Fn(&str) -> bool,
    nulls: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (column, datum) in relation.columns.iter().zip(tuple) {
        if !keep(&column.name) {
            continue;
        }
        let value = match datum {
            _ if nulls => Value::Null,
            Datum::Null => Value::Null,
            Datum::Unchanged => Value::String(UNAVAILABLE.into()),
            Datum::Text(t) => text_value(column.type_oid, t),
        };
        out.insert(column.name.clone(), value);
    }
    out
}

/// The key columns of the row (the replica identity) as a JSON map; empty when the table has
/// no key.
pub fn key_map(relation: &Relation, tuple: &Tuple) -> Map<String, Value> {
    let mut out = Map::new();
    for (column, datum) in relation.columns.iter().zip(tuple) {
        if column.key {
            let value = match datum {
                Datum::Text(t) => text_value(column.type_oid, t),
                _ => Value::Null,
            };
            out.insert(column.name.clone(), value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn relation_bytes() -> Vec<u8> {
        let mut b = vec![b'R'];
        b.extend(16384u32.to_be_bytes());
        b.extend(b"public\0orders\0");
        b.push(b'd');
        b.extend(2u16.to_be_bytes());
        b.push(1);
        b.extend(b"id\0");
        b.extend(23u32.to_be_bytes());
        b.extend((-1i32).to_be_bytes());
        b.push(0);
        b.extend(b"note\0");
        b.extend(25u32.to_be_bytes());
        b.extend((-1i32).to_be_bytes());
        b
    }

    fn tuple_bytes(id: &str, note: Option<&str>) -> Vec<u8> {
        let mut b = 2u16.to_be_bytes().to_vec();
        b.push(b't');
        b.extend((id.len() as u32).to_be_bytes());
        b.extend(id.as_bytes());
        match note {
            Some(n) => {
                b.push(b't');
                b.extend((n.len() as u32).to_be_bytes());
                b.extend(n.as_bytes());
            }
            None => b.push(b'n'),
        }
        b
    }

    #[test]
    fn decodes_relations_and_row_changes() {
        let Message::Relation(rel) = decode(&relation_bytes()).unwrap() else {
            panic!("a relation");
        };
        assert_eq!(rel.qualified(), "public.orders");
        assert!(rel.columns[0].key && !rel.columns[1].key);

        let mut insert = vec![b'I'];
        insert.extend(16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple_bytes("7", Some("hi")));
        let Message::Insert { new, .. } = decode(&insert).unwrap() else {
            panic!("an insert");
        };
        assert_eq!(
            Value::Object(row_map(&rel, &new, &|_| true, false)),
            json!({"id": 7, "note": "hi"})
        );
        assert_eq!(Value::Object(key_map(&rel, &new)), json!({"id": 7}));
        assert_eq!(
            Value::Object(row_map(&rel, &new, &|c| c != "note", false)),
            json!({"id": 7})
        );

        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'K');
        update.extend(tuple_bytes("7", None));
        update.push(b'N');
        update.extend(tuple_bytes("8", None));
        assert!(matches!(
            decode(&update).unwrap(),
            Message::Update { old: Some(_), .. }
        ));

        let mut delete = vec![b'D'];
        delete.extend(16384u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple_bytes("8", None));
        let Message::Delete { old, .. } = decode(&delete).unwrap() else {
            panic!("a delete");
        };
        assert_eq!(
            Value::Object(row_map(&rel, &old, &|_| true, true)),
            json!({"id": null, "note": null})
        );
        assert!(decode(&delete[..8]).unwrap_err().contains("truncated"));
        assert_eq!(decode(b"Yxx").unwrap(), Message::Other(b'Y'));
    }

    #[test]
    fn values_look_like_debeziums() {
        assert_eq!(text_value(16, "t"), json!(true));
        assert_eq!(
            text_value(20, "9007199254740993"),
            json!(9007199254740993i64)
        );
        assert_eq!(text_value(1700, "12.50"), json!(12.5));
        assert_eq!(text_value(701, "NaN"), json!("NaN"));
        assert_eq!(text_value(17, "\\x6869"), json!("aGk="));
        assert_eq!(
            text_value(1114, "2026-01-01 10:00:00"),
            json!("2026-01-01T10:00:00Z")
        );
        assert_eq!(
            text_value(1184, "2026-01-01 10:00:00.5+00"),
            json!("2026-01-01T10:00:00.5Z")
        );
        assert_eq!(
            text_value(1184, "2026-01-01 10:00:00+02"),
            json!("2026-01-01T10:00:00+02:00")
        );
        assert_eq!(text_value(3802, r#"{"n": 1}"#), json!(r#"{"n": 1}"#));
        assert_eq!(text_value(1082, "2026-01-01"), json!("2026-01-01"));
    }
}
