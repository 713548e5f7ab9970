//! A MySQL/MariaDB column value as Debezium's MySQL connector and Kestra's converter show it
//! (B.6): integers and floats stay numbers, DECIMAL a number, DATE `2026-01-01`, DATETIME and
//! TIMESTAMP ISO instants in UTC (`2026-01-01T10:00:00Z`), TIME `10:00:00`, YEAR Jan 1 of the
//! year, ENUM and SET their labels, BIT(1) a boolean, text a string, binary data base64, JSON
//! its text. The same rules serve binlog rows and snapshot rows (binary protocol). No I/O.

use base64::Engine;
use mysql_async::Value as MyValue;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::{ColumnFlags, ColumnType};
use serde_json::{Number, Value};

use crate::debezium::iso;

/// The binary character set (BINARY, VARBINARY, BLOB): values are bytes, shown base64.
const BINARY_CHARSET: u16 = 63;

/// How a column's values are shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Integer,
    Float,
    Decimal,
    Date,
    /// DATETIME: a wall-clock time, shown as an instant in UTC (Debezium's `Timestamp`).
    DateTime,
    /// TIMESTAMP: an instant (the snapshot reads it with the session in UTC).
    Timestamp,
    Time,
    Year,
    /// BIT(n): BIT(1) is a boolean, wider ones bytes.
    Bit {
        bits: usize,
    },
    Enum(Vec<String>),
    Set(Vec<String>),
    Json,
    Text,
    Binary,
}

impl Kind {
    /// The kind of a column of type `t` (its real type: ENUM and SET, not STRING).
    pub fn of(t: ColumnType, charset: u16, flags: ColumnFlags) -> Kind {
        use ColumnType::*;
        match t {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG => Kind::Integer,
            MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => Kind::Float,
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Kind::DateTime,
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Kind::Time,
            MYSQL_TYPE_YEAR => Kind::Year,
            MYSQL_TYPE_BIT => Kind::Bit { bits: 1 },
            MYSQL_TYPE_JSON => Kind::Json,
            MYSQL_TYPE_ENUM => Kind::Enum(Vec::new()),
            MYSQL_TYPE_SET => Kind::Set(Vec::new()),
            MYSQL_TYPE_GEOMETRY => Kind::Binary,
            _ if flags.contains(ColumnFlags::ENUM_FLAG) => Kind::Enum(Vec::new()),
            _ if flags.contains(ColumnFlags::SET_FLAG) => Kind::Set(Vec::new()),
            _ if charset == BINARY_CHARSET => Kind::Binary,
            _ => Kind::Text,
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn base64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A decimal's text as a JSON number (an integer when it has no fraction).
fn decimal(t: &str) -> Value {
    let t = t.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = t.parse::<u64>() {
        return Value::from(u);
    }
    t.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(t.to_string()))
}

fn fraction(us: u32) -> String {
    if us == 0 {
        String::new()
    } else {
        let s = format!(".{us:06}");
        s.trim_end_matches('0').to_string()
    }
}

/// A wall-clock date-time as an instant in UTC.
fn date_time(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Value {
    chrono::NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
        .and_then(|date| date.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
        .map(|t| iso(t.and_utc().timestamp_micros()))
        // A zero date (`0000-00-00 …`) has no instant: Debezium gives null.
        .unwrap_or(Value::Null)
}

/// One value of a column of kind `kind`.
pub fn json(v: MyValue, kind: &Kind) -> Value {
    match (v, kind) {
        (MyValue::NULL, _) => Value::Null,
        (MyValue::Int(i), Kind::Year) => Value::String(format!("{i:04}-01-01")),
        (MyValue::Int(i), Kind::Enum(labels)) => usize::try_from(i - 1)
            .ok()
            .and_then(|n| labels.get(n))
            .map(|l| Value::String(l.clone()))
            .unwrap_or(Value::String(String::new())),
        (MyValue::Int(i), Kind::Bit { bits: 1 }) => Value::Bool(i != 0),
        (MyValue::Int(i), _) => Value::from(i),
        (MyValue::UInt(u), Kind::Bit { bits: 1 }) => Value::Bool(u != 0),
        (MyValue::UInt(u), _) => Value::from(u),
        (MyValue::Float(f), _) => Number::from_f64(f64::from(f))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (MyValue::Double(f), _) => Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (MyValue::Date(y, mo, d, ..), Kind::Date) => {
            Value::String(format!("{y:04}-{mo:02}-{d:02}"))
        }
        (MyValue::Date(y, mo, d, h, mi, s, us), _) => date_time(y, mo, d, h, mi, s, us),
        (MyValue::Time(neg, days, h, m, s, us), _) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let sign = if neg { "-" } else { "" };
            Value::String(format!("{sign}{hours:02}:{m:02}:{s:02}{}", fraction(us)))
        }
        (MyValue::Bytes(b), kind) => bytes(&b, kind),
    }
}

fn bytes(b: &[u8], kind: &Kind) -> Value {
    match kind {
        Kind::Decimal => decimal(&text(b)),
        Kind::Integer => decimal(&text(b)),
        Kind::Float => decimal(&text(b)),
        Kind::Year => Value::String(format!("{}-01-01", text(b))),
        // The binlog gives TIMESTAMP2 as `seconds[.micros]` since the epoch.
        Kind::Timestamp => {
            let t = text(b);
            let (secs, micros) = t.split_once('.').unwrap_or((&t, "0"));
            match (secs.parse::<i64>(), format!("{micros:0<6}").parse::<i64>()) {
                (Ok(s), Ok(us)) => iso(s * 1_000_000 + us),
                _ => Value::String(t),
            }
        }
        Kind::Bit { bits: 1 } => Value::Bool(b.iter().any(|x| *x != 0)),
        Kind::Bit { .. } | Kind::Binary => base64(b),
        Kind::Set(labels) if !labels.is_empty() => {
            // The binlog gives a SET as a little-endian bitmask.
            let mut chosen = Vec::new();
            for (i, label) in labels.iter().enumerate() {
                if b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                    chosen.push(label.as_str());
                }
            }
            Value::String(chosen.join(","))
        }
        _ => Value::String(text(b)),
    }
}

/// A binlog value (MySQL's binary JSON becomes its text, as Debezium's `Json` type).
pub fn binlog_json(v: BinlogValue<'_>, kind: &Kind) -> Result<Value, String> {
    match v {
        BinlogValue::Value(v) => Ok(json(v, kind)),
        BinlogValue::Jsonb(j) => serde_json::Value::try_from(j)
            .map(|j| Value::String(j.to_string()))
            .map_err(|e| format!("a JSON column does not decode: {e}")),
        BinlogValue::JsonDiff(_) => Err(
            "a partial JSON update (binlog_row_value_options=PARTIAL_JSON) cannot be shown as a row; set binlog_row_value_options to ''"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json as j;

    #[test]
    fn values_as_debezium_shows_them() {
        assert_eq!(json(MyValue::Int(-3), &Kind::Integer), j!(-3));
        assert_eq!(json(MyValue::UInt(u64::MAX), &Kind::Integer), j!(u64::MAX));
        assert_eq!(json(MyValue::Double(1.5), &Kind::Float), j!(1.5));
        assert_eq!(
            json(MyValue::Bytes(b"12.50".to_vec()), &Kind::Decimal),
            j!(12.5)
        );
        assert_eq!(json(MyValue::Bytes(b"42".to_vec()), &Kind::Decimal), j!(42));
        assert_eq!(
            json(MyValue::Date(2026, 1, 2, 0, 0, 0, 0), &Kind::Date),
            j!("2026-01-02")
        );
        assert_eq!(
            json(MyValue::Date(2026, 1, 2, 3, 4, 5, 120_000), &Kind::DateTime),
            j!("2026-01-02T03:04:05.120Z")
        );
        assert_eq!(
            json(MyValue::Date(0, 0, 0, 0, 0, 0, 0), &Kind::DateTime),
            Value::Null
        );
        assert_eq!(
            json(MyValue::Bytes(b"1767261600.5".to_vec()), &Kind::Timestamp),
            j!("2026-01-01T10:00:00.500Z")
        );
        assert_eq!(
            json(MyValue::Time(false, 0, 10, 0, 0, 0), &Kind::Time),
            j!("10:00:00")
        );
        assert_eq!(
            json(MyValue::Time(true, 1, 2, 3, 4, 5), &Kind::Time),
            j!("-26:03:04.000005")
        );
        assert_eq!(
            json(MyValue::Bytes(b"2024".to_vec()), &Kind::Year),
            j!("2024-01-01")
        );
        assert_eq!(json(MyValue::Int(2024), &Kind::Year), j!("2024-01-01"));
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(json(MyValue::Int(2), &Kind::Enum(labels.clone())), j!("b"));
        assert_eq!(
            json(MyValue::Bytes(vec![0b101]), &Kind::Set(labels)),
            j!("a,c")
        );
        assert_eq!(
            json(MyValue::Bytes(b"x,y".to_vec()), &Kind::Set(vec![])),
            j!("x,y")
        );
        assert_eq!(
            json(MyValue::Bytes(vec![1]), &Kind::Bit { bits: 1 }),
            j!(true)
        );
        assert_eq!(
            json(MyValue::Bytes(vec![0, 1]), &Kind::Bit { bits: 9 }),
            j!("AAE=")
        );
        assert_eq!(json(MyValue::Bytes(vec![0xff]), &Kind::Binary), j!("/w=="));
        assert_eq!(json(MyValue::Bytes("é".into()), &Kind::Text), j!("é"));
        assert_eq!(json(MyValue::NULL, &Kind::Text), Value::Null);
    }

    #[test]
    fn kinds_from_column_types() {
        let none = ColumnFlags::empty();
        assert_eq!(
            Kind::of(ColumnType::MYSQL_TYPE_VAR_STRING, 45, none),
            Kind::Text
        );
        assert_eq!(
            Kind::of(ColumnType::MYSQL_TYPE_BLOB, 63, none),
            Kind::Binary
        );
        assert_eq!(
            Kind::of(ColumnType::MYSQL_TYPE_STRING, 45, ColumnFlags::ENUM_FLAG),
            Kind::Enum(vec![])
        );
        assert_eq!(
            Kind::of(ColumnType::MYSQL_TYPE_DATETIME2, 63, none),
            Kind::DateTime
        );
    }
}
