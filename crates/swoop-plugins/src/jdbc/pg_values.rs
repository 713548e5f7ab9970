//! PostgreSQL values: cells decoded from the binary format into Kestra's JSON shapes (as its
//! `PostgresCellConverter` gives them: numbers, exact decimals, ISO-8601 dates and times,
//! parsed JSON, nested lists for arrays, base64 for `bytea`), and parameters encoded in the
//! text format, which the server parses as the placeholder's type.

use std::error::Error as StdError;

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, TimeDelta};
use postgres_protocol::types as pt;
use serde_json::Value;
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

use super::values::{self, Zone};

/// A cell's bytes, undecoded.
pub(super) struct Raw<'a>(pub(super) Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

type DecodeResult = Result<Value, Box<dyn StdError + Sync + Send>>;

/// Microseconds between 1970-01-01 and 2000-01-01, Postgres' epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One cell, as Kestra's PostgreSQL cell converter shapes it.
pub(super) fn decode(ty: &Type, raw: &[u8], zone: Zone) -> DecodeResult {
    Ok(match *ty {
        Type::BOOL => Value::Bool(pt::bool_from_sql(raw)?),
        Type::INT2 => pt::int2_from_sql(raw)?.into(),
        Type::INT4 => pt::int4_from_sql(raw)?.into(),
        Type::INT8 => pt::int8_from_sql(raw)?.into(),
        Type::OID => pt::oid_from_sql(raw)?.into(),
        // Through its shortest text, so that 0.1::real reads 0.1, not 0.10000000149.
        Type::FLOAT4 => {
            let f = pt::float4_from_sql(raw)?;
            values::float(f.to_string().parse().unwrap_or(f64::from(f)))
        }
        Type::FLOAT8 => values::float(pt::float8_from_sql(raw)?),
        Type::NUMERIC => values::decimal(&numeric_text(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
            Value::String(pt::text_from_sql(raw)?.to_string())
        }
        Type::CHAR => Value::String(char::from(pt::char_from_sql(raw)? as u8).to_string()),
        Type::JSON => serde_json::from_slice(raw)?,
        Type::JSONB => match raw.split_first() {
            Some((1, json)) => serde_json::from_slice(json)?,
            _ => return Err("unknown jsonb version".into()),
        },
        Type::UUID => Value::String(uuid_text(pt::uuid_from_sql(raw)?)),
        Type::BYTEA => values::bytes(pt::bytea_from_sql(raw)),
        Type::DATE => match pt::date_from_sql(raw)? {
            i32::MAX => "infinity".into(),
            i32::MIN => "-infinity".into(),
            days => NaiveDate::from_ymd_opt(2000, 1, 1)
                .and_then(|d| d.checked_add_signed(TimeDelta::days(days.into())))
                .ok_or("date out of range")?
                .format("%Y-%m-%d")
                .to_string()
                .into(),
        },
        Type::TIME => Value::String(values::time_of_day(
            false,
            pt::time_from_sql(raw)?.try_into()?,
        )),
        Type::TIMETZ => timetz(raw, zone)?,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => match pt::timestamp_from_sql(raw)? {
            i64::MAX => "infinity".into(),
            i64::MIN => "-infinity".into(),
            micros => {
                let utc = DateTime::from_timestamp_micros(micros.saturating_add(PG_EPOCH_MICROS))
                    .ok_or("timestamp out of range")?;
                if *ty == Type::TIMESTAMP {
                    values::local_datetime(&utc.naive_utc()).into()
                } else {
                    zone.iso(utc).into()
                }
            }
        },
        Type::INTERVAL => interval(raw)?,
        Type::VOID => Value::Null,
        _ => match ty.kind() {
            Kind::Array(member) => array(member, raw, zone)?,
            Kind::Enum(_) => Value::String(pt::text_from_sql(raw)?.to_string()),
            Kind::Domain(base) => decode(base, raw, zone)?,
            _ if ty.name() == "citext" => Value::String(pt::text_from_sql(raw)?.to_string()),
            _ => return Err("this type is not supported".into()),
        },
    })
}

/// A `numeric` in its binary form (base-10000 digits) as decimal text.
fn numeric_text(raw: &[u8]) -> Result<String, Box<dyn StdError + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn StdError + Sync + Send>> {
        Ok(u16::from_be_bytes([
            *raw.get(i).ok_or("truncated numeric")?,
            *raw.get(i + 1).ok_or("truncated numeric")?,
        ]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Result<Vec<u16>, _>>()?;
    let digit = |k: i64| -> u16 {
        usize::try_from(k)
            .ok()
            .and_then(|k| digits.get(k).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for k in 0..=weight {
            if k == 0 {
                out.push_str(&digit(k).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(k)));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut k = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(k)));
            k += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

fn uuid_text(b: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

fn be_i64(raw: &[u8], at: usize) -> Result<i64, Box<dyn StdError + Sync + Send>> {
    Ok(i64::from_be_bytes(
        raw.get(at..at + 8).ok_or("truncated value")?.try_into()?,
    ))
}

fn be_i32(raw: &[u8], at: usize) -> Result<i32, Box<dyn StdError + Sync + Send>> {
    Ok(i32::from_be_bytes(
        raw.get(at..at + 4).ok_or("truncated value")?.try_into()?,
    ))
}

/// `timetz` as the local time of day in `timeZoneId` (Kestra's converter, on 1970-01-01).
fn timetz(raw: &[u8], zone: Zone) -> DecodeResult {
    const DAY: i64 = 86_400_000_000;
    // The offset is in seconds west of UTC.
    let utc = be_i64(raw, 0)? + i64::from(be_i32(raw, 8)?) * 1_000_000;
    let epoch = DateTime::from_timestamp_micros(utc.rem_euclid(DAY))
        .ok_or("time out of range")?
        .naive_utc();
    let offset = i64::from(zone.offset_at(&epoch).local_minus_utc()) * 1_000_000;
    let local = (utc + offset).rem_euclid(DAY);
    Ok(Value::String(values::time_of_day(false, local.try_into()?)))
}

/// `interval` as Kestra prints it: `P<y>Y<m>M<d>DT<h>H<m>M<s>S` (seconds keep their fraction).
fn interval(raw: &[u8]) -> DecodeResult {
    let micros = be_i64(raw, 0)?;
    let days = be_i32(raw, 8)?;
    let months = be_i32(raw, 12)?;
    let seconds = (micros % 60_000_000) as f64 / 1e6;
    Ok(Value::String(format!(
        "P{}Y{}M{}DT{}H{}M{}S",
        months / 12,
        months % 12,
        days,
        micros / 3_600_000_000,
        micros / 60_000_000 % 60,
        seconds
    )))
}

/// An array as (nested, for several dimensions) lists.
fn array(member: &Type, raw: &[u8], zone: Zone) -> DecodeResult {
    use tokio_postgres::fallible_iterator::FallibleIterator;
    let array = pt::array_from_sql(raw)?;
    let dims: Vec<usize> = array
        .dimensions()
        .map(|d| Ok(usize::try_from(d.len).unwrap_or(0)))
        .collect()?;
    let items: Vec<Value> = array
        .values()
        .map(|v| match v {
            None => Ok(Value::Null),
            Some(bytes) => decode(member, bytes, zone),
        })
        .collect()?;
    Ok(nest(items, &dims))
}

fn nest(items: Vec<Value>, dims: &[usize]) -> Value {
    match dims {
        [] | [_] => Value::Array(items),
        [_, inner @ ..] => {
            let chunk: usize = inner.iter().product::<usize>().max(1);
            let mut rest = items.into_iter();
            let mut out = Vec::new();
            loop {
                let part: Vec<Value> = rest.by_ref().take(chunk).collect();
                if part.is_empty() {
                    break;
                }
                out.push(nest(part, inner));
            }
            Value::Array(out)
        }
    }
}

/// A parameter, sent in the text format: the server parses it as the placeholder's type.
#[derive(Debug)]
pub(super) struct PgParam<'a>(pub(super) &'a Value);

impl ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Array(_) if !matches!(*ty, Type::JSON | Type::JSONB) => {
                let mut text = String::new();
                array_literal(self.0, &mut text);
                out.extend_from_slice(text.as_bytes());
            }
            Value::String(s) => out.extend_from_slice(s.as_bytes()),
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// A JSON list as a Postgres array literal: `{1,"a b",NULL,{2,3}}`.
fn array_literal(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                array_literal(item, out);
            }
            out.push('}');
        }
        Value::Null => out.push_str("NULL"),
        Value::Bool(_) | Value::Number(_) => out.push_str(&v.to_string()),
        Value::String(s) => quote_element(s, out),
        Value::Object(_) => quote_element(&v.to_string(), out),
    }
}

fn quote_element(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_decode_from_base_10000() {
        // 12345.678: weight 1, digits [1, 2345, 6780], dscale 3.
        let mut raw = Vec::new();
        for w in [3u16, 1, 0, 3, 1, 2345, 6780] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric_text(&raw).unwrap(), "12345.678");
        // -0.000012: weight -2 (the second group after the point), digits [1200], dscale 8.
        let mut raw = Vec::new();
        for w in [1u16, (-2i16) as u16, 0x4000, 8, 1200] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric_text(&raw).unwrap(), "-0.00001200");
    }

    #[test]
    fn list_parameters_become_array_literals() {
        let mut out = String::new();
        array_literal(&serde_json::json!([1, "a \"b\"", null, [2, 3]]), &mut out);
        assert_eq!(out, r#"{1,"a \"b\"",NULL,{2,3}}"#);
    }
}
