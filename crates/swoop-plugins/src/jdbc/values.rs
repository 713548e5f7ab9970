//! Cell values both drivers produce the same way: exact decimals, ISO-8601 dates and times in
//! the task's `timeZoneId`, bytes as base64, floats that JSON cannot hold.

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use serde_json::{Number, Value};

/// `timeZoneId`: the zone `timestamptz` (Postgres) values are shown in. Kestra's default is the
/// worker's zone, so is ours (`Local`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Local,
    Named(chrono_tz::Tz),
    Fixed(FixedOffset),
}

impl Zone {
    /// A zone id (`Europe/Paris`, `UTC`) or a fixed offset (`+02:00`, `Z`), as Java's
    /// `ZoneId.of` takes them.
    pub fn parse(id: &str) -> Result<Zone, String> {
        let id = id.trim();
        if id == "Z" {
            return Ok(Zone::Fixed(Utc.fix()));
        }
        if let Ok(tz) = id.parse::<chrono_tz::Tz>() {
            return Ok(Zone::Named(tz));
        }
        if let Some(offset) = parse_offset(id) {
            return Ok(Zone::Fixed(offset));
        }
        Err(format!(
            "`timeZoneId`: `{id}` is not a time zone; use an IANA id such as `Europe/Paris` or `UTC`, or an offset such as `+02:00`"
        ))
    }

    /// The offset of this zone at `utc`.
    pub fn offset_at(&self, utc: &NaiveDateTime) -> FixedOffset {
        match self {
            Zone::Local => chrono::Local.offset_from_utc_datetime(utc).fix(),
            Zone::Named(tz) => tz.offset_from_utc_datetime(utc).fix(),
            Zone::Fixed(offset) => *offset,
        }
    }

    /// `utc` in this zone, ISO-8601 with its offset (`Z` for UTC), as Kestra prints a
    /// `ZonedDateTime`.
    pub fn iso(&self, utc: DateTime<Utc>) -> String {
        let offset = self.offset_at(&utc.naive_utc());
        let local = utc.with_timezone(&offset).naive_local();
        let seconds = offset.local_minus_utc();
        if seconds == 0 {
            return format!("{}Z", local_datetime(&local));
        }
        let (sign, seconds) = if seconds < 0 {
            ('-', -seconds)
        } else {
            ('+', seconds)
        };
        format!(
            "{}{sign}{:02}:{:02}",
            local_datetime(&local),
            seconds / 3600,
            seconds / 60 % 60
        )
    }
}

fn parse_offset(id: &str) -> Option<FixedOffset> {
    let rest = id
        .strip_prefix("UTC")
        .or_else(|| id.strip_prefix("GMT"))
        .unwrap_or(id);
    let (sign, rest) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let seconds = h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60;
    FixedOffset::east_opt(sign * seconds)
}

/// A local date and time, ISO-8601 without an offset, the fraction as short as it can be
/// (as Java prints a `LocalDateTime`).
pub fn local_datetime(dt: &NaiveDateTime) -> String {
    let micros =
        u64::from(dt.num_seconds_from_midnight()) * 1_000_000 + u64::from(dt.nanosecond() / 1000);
    format!("{}T{}", dt.format("%Y-%m-%d"), time_of_day(false, micros))
}

/// A time of day from its microseconds, `HH:MM:SS[.ffffff]`; hours may pass 24 and be
/// negative (MySQL's `TIME` is a duration).
pub fn time_of_day(negative: bool, micros: u64) -> String {
    let seconds = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    let mut out = format!(
        "{}{:02}:{:02}:{:02}",
        if negative { "-" } else { "" },
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out
}

/// An exact decimal (`numeric`, `DECIMAL`) as JSON: an integer when it is one and fits 64
/// bits, a float when the float prints back as the same decimal; otherwise, rather than lose
/// digits, the decimal's text.
pub fn decimal(text: &str) -> Value {
    let trimmed = match text.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => text.to_string(),
    };
    if !trimmed.contains('.') {
        if let Ok(i) = trimmed.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = trimmed.parse::<u64>() {
            return Value::from(u);
        }
    }
    match trimmed.parse::<f64>() {
        Ok(f) if f.is_finite() && (f.to_string() == trimmed || f == 0.0 && trimmed == "-0") => {
            float(f)
        }
        _ => Value::String(text.to_string()),
    }
}

/// A float as JSON; NaN and the infinities (which JSON has no number for) as Java prints them.
pub fn float(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// Bytes (`bytea`, `BLOB`) as base64, as Kestra's JSON shows a `byte[]`.
pub fn bytes(data: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_stay_exact() {
        assert_eq!(decimal("12.50"), json!(12.5));
        assert_eq!(decimal("42"), json!(42));
        assert_eq!(decimal("-7.000"), json!(-7));
        assert_eq!(decimal("0.1"), json!(0.1));
        assert_eq!(
            decimal("18446744073709551615"),
            json!(18446744073709551615u64)
        );
        assert_eq!(
            decimal("123456789012345678901234.5"),
            json!("123456789012345678901234.5")
        );
        assert_eq!(decimal("NaN"), json!("NaN"));
    }

    #[test]
    fn zones_and_times() {
        let utc = DateTime::parse_from_rfc3339("2024-07-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Zone::parse("Europe/Paris").unwrap().iso(utc),
            "2024-07-01T12:00:00+02:00"
        );
        assert_eq!(Zone::parse("UTC").unwrap().iso(utc), "2024-07-01T10:00:00Z");
        assert_eq!(
            Zone::parse("-05:30").unwrap().iso(utc),
            "2024-07-01T04:30:00-05:30"
        );
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert_eq!(time_of_day(false, 3_723_500_000), "01:02:03.5");
        assert_eq!(time_of_day(true, 3_000_000_000_000), "-833:20:00");
    }
}
