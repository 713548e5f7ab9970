//! CQL cell values → JSON, as Kestra's Cassandra Query outputs them: integers (int, bigint,
//! counter, smallint, tinyint, varint) and decimals/floats as numbers, text as strings, uuid,
//! timeuuid and inet as strings, timestamp as ISO-8601 UTC (`2024-01-31T10:00:00.123Z`), date
//! as `YYYY-MM-DD`, time as `HH:MM:SS[.fraction]`, duration as ISO-8601 (`P1M2DT3.5S`), blob as
//! base64, list/set/vector/tuple as lists, map as an object (keys as text). User-defined and
//! custom types are refused (Kestra fails on them too).

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveTime};
use scylla::cluster::metadata::{CollectionType, ColumnType};
use scylla::value::{CqlDecimal, CqlDuration, CqlValue, CqlVarint};
use serde_json::{Map, Number, Value};

/// Whether values of `typ` cannot be output (a UDT, anywhere inside).
pub fn has_udt(typ: &ColumnType<'_>) -> bool {
    match typ {
        ColumnType::UserDefinedType { .. } => true,
        ColumnType::Collection { typ, .. } => match typ {
            CollectionType::List(t) | CollectionType::Set(t) => has_udt(t),
            CollectionType::Map(k, v) => has_udt(k) || has_udt(v),
            _ => true,
        },
        ColumnType::Vector { typ, .. } => has_udt(typ),
        ColumnType::Tuple(items) => items.iter().any(has_udt),
        _ => false,
    }
}

/// The JSON of one cell (`None` is CQL null).
pub fn to_json(value: Option<&CqlValue>) -> Result<Value, String> {
    let Some(value) = value else {
        return Ok(Value::Null);
    };
    Ok(match value {
        CqlValue::Ascii(s) | CqlValue::Text(s) => Value::String(s.clone()),
        CqlValue::Boolean(b) => Value::Bool(*b),
        CqlValue::Blob(bytes) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        CqlValue::Counter(c) => Value::from(c.0),
        CqlValue::BigInt(i) => Value::from(*i),
        CqlValue::Int(i) => Value::from(*i),
        CqlValue::SmallInt(i) => Value::from(*i),
        CqlValue::TinyInt(i) => Value::from(*i),
        CqlValue::Varint(v) => varint(v),
        CqlValue::Decimal(d) => decimal(d),
        CqlValue::Double(f) => float(*f),
        // Through its shortest text, so that 1.1f stays 1.1 and not 1.100000023841858.
        CqlValue::Float(f) => float(f.to_string().parse().unwrap_or(f64::from(*f))),
        CqlValue::Timestamp(ts) => match DateTime::from_timestamp_millis(ts.0) {
            Some(t) => Value::String(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
            None => Value::from(ts.0),
        },
        CqlValue::Date(d) => {
            let days = i64::from(d.0) - (1 << 31);
            let date = NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(days)));
            match date {
                Some(date) => Value::String(date.format("%Y-%m-%d").to_string()),
                None => Value::from(days),
            }
        }
        CqlValue::Time(t) => {
            let secs = t.0.div_euclid(1_000_000_000);
            let nanos = t.0.rem_euclid(1_000_000_000);
            match NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, nanos as u32) {
                Some(time) => Value::String(time.format("%H:%M:%S%.f").to_string()),
                None => Value::from(t.0),
            }
        }
        CqlValue::Duration(d) => Value::String(duration(d)),
        CqlValue::Uuid(u) => Value::String(u.to_string()),
        CqlValue::Timeuuid(u) => Value::String(u.to_string()),
        CqlValue::Inet(ip) => Value::String(ip.to_string()),
        CqlValue::List(items) | CqlValue::Set(items) | CqlValue::Vector(items) => Value::Array(
            items
                .iter()
                .map(|v| to_json(Some(v)))
                .collect::<Result<_, _>>()?,
        ),
        CqlValue::Tuple(items) => Value::Array(
            items
                .iter()
                .map(|v| to_json(v.as_ref()))
                .collect::<Result<_, _>>()?,
        ),
        CqlValue::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let key = match to_json(Some(k))? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, to_json(Some(v))?);
            }
            Value::Object(map)
        }
        CqlValue::Empty => Value::Null,
        CqlValue::UserDefinedType { name, .. } => {
            return Err(format!(
                "a value of the user-defined type `{name}`, which the Query task cannot output"
            ));
        }
        other => return Err(format!("a value of an unsupported CQL type ({other:?})")),
    })
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

/// The decimal text of a big-endian two's-complement integer.
fn big_int_text(bytes: &[u8]) -> String {
    if bytes.len() <= 16 {
        let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
        let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
        buf[16 - bytes.len()..].copy_from_slice(bytes);
        return i128::from_be_bytes(buf).to_string();
    }
    // Longer: repeated division of the magnitude by 10.
    let negative = bytes[0] & 0x80 != 0;
    let mut magnitude: Vec<u8> = if negative {
        // Two's complement: invert and add one.
        let mut m: Vec<u8> = bytes.iter().map(|b| !b).collect();
        for byte in m.iter_mut().rev() {
            let (v, carry) = byte.overflowing_add(1);
            *byte = v;
            if !carry {
                break;
            }
        }
        m
    } else {
        bytes.to_vec()
    };
    let mut digits = Vec::new();
    while magnitude.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for byte in magnitude.iter_mut() {
            let cur = (rem << 8) | u32::from(*byte);
            *byte = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn varint(v: &CqlVarint) -> Value {
    let text = big_int_text(v.as_signed_bytes_be_slice());
    number_from_text(&text)
}

fn decimal(d: &CqlDecimal) -> Value {
    let (bytes, scale) = d.as_signed_be_bytes_slice_and_exponent();
    let digits = big_int_text(bytes);
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest.to_owned()),
        None => ("", digits),
    };
    let text = if scale <= 0 {
        format!(
            "{sign}{digits}{}",
            "0".repeat(scale.unsigned_abs() as usize)
        )
    } else {
        let scale = scale as usize;
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{sign}{int}.{frac}")
    };
    number_from_text(&text)
}

/// An integer that fits i64/u64 exactly, else the nearest float, else the text.
fn number_from_text(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = text.parse::<u64>() {
        return Value::from(u);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => float(f),
        _ => Value::String(text.to_owned()),
    }
}

/// ISO-8601: `P1Y2M3DT4H5M6.5S`, `PT0S` for zero; a negative duration is `-P…`.
fn duration(d: &CqlDuration) -> String {
    let negative = d.months < 0 || d.days < 0 || d.nanoseconds < 0;
    let (months, days, nanos) = (
        i64::from(d.months).unsigned_abs(),
        i64::from(d.days).unsigned_abs(),
        d.nanoseconds.unsigned_abs(),
    );
    let mut out = String::from(if negative { "-P" } else { "P" });
    let (years, months) = (months / 12, months % 12);
    for (n, unit) in [(years, 'Y'), (months, 'M'), (days, 'D')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    let secs_total = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let (hours, minutes, secs) = (secs_total / 3600, secs_total / 60 % 60, secs_total % 60);
    if nanos > 0 {
        out.push('T');
        if hours > 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes > 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if secs > 0 || frac > 0 {
            if frac > 0 {
                let frac = format!("{frac:09}");
                out.push_str(&format!("{secs}.{}S", frac.trim_end_matches('0')));
            } else {
                out.push_str(&format!("{secs}S"));
            }
        }
    }
    if out.ends_with('P') {
        out.push_str("T0S");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use scylla::value::{CqlDate, CqlTime, CqlTimestamp};
    use serde_json::json;

    fn j(v: CqlValue) -> Value {
        to_json(Some(&v)).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(j(CqlValue::Int(-5)), json!(-5));
        assert_eq!(j(CqlValue::Float(1.1)), json!(1.1));
        assert_eq!(j(CqlValue::Blob(b"hi".to_vec())), json!("aGk="));
        assert_eq!(
            j(CqlValue::Timestamp(CqlTimestamp(0))),
            json!("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            j(CqlValue::Date(CqlDate((1 << 31) + 1))),
            json!("1970-01-02")
        );
        assert_eq!(
            j(CqlValue::Time(CqlTime(3_600_000_000_000 + 500_000_000))),
            json!("01:00:00.500")
        );
        assert_eq!(to_json(None).unwrap(), Value::Null);
    }

    #[test]
    fn big_numbers() {
        let v = CqlVarint::from_signed_bytes_be(vec![0xff, 0x38]); // -200
        assert_eq!(j(CqlValue::Varint(v)), json!(-200));
        // 2^128 (17 bytes) as text digits.
        let mut big = vec![0x01];
        big.extend([0u8; 16]);
        assert_eq!(
            big_int_text(&big),
            "340282366920938463463374607431768211456"
        );
        let mut neg = vec![0xff];
        neg.extend([0u8; 16]);
        assert_eq!(
            big_int_text(&neg),
            "-340282366920938463463374607431768211456"
        );
        let d = CqlDecimal::from_signed_be_bytes_and_exponent(vec![0x30, 0x39], 2); // 123.45
        assert_eq!(j(CqlValue::Decimal(d)), json!(123.45));
        let d = CqlDecimal::from_signed_be_bytes_and_exponent(vec![0xfb], 3); // -0.005
        assert_eq!(j(CqlValue::Decimal(d)), json!(-0.005));
    }

    #[test]
    fn durations() {
        let d = |months, days, nanoseconds| {
            duration(&CqlDuration {
                months,
                days,
                nanoseconds,
            })
        };
        assert_eq!(
            d(14, 2, 3_600_000_000_000 + 1_500_000_000),
            "P1Y2M2DT1H1.5S"
        );
        assert_eq!(d(0, 0, 0), "PT0S");
        assert_eq!(d(0, -1, 0), "-P1D");
    }

    #[test]
    fn collections() {
        let map = CqlValue::Map(vec![(CqlValue::Int(1), CqlValue::Text("a".into()))]);
        assert_eq!(j(map), json!({"1": "a"}));
        let tuple = CqlValue::Tuple(vec![Some(CqlValue::Boolean(true)), None]);
        assert_eq!(j(tuple), json!([true, null]));
        let udt = CqlValue::UserDefinedType {
            keyspace: "k".into(),
            name: "address".into(),
            fields: vec![],
        };
        assert!(to_json(Some(&udt)).unwrap_err().contains("address"));
    }
}
