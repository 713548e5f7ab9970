//! Serializes a UTC timestamp exactly as chrono's serde impl does (RFC 3339, `Z`, the fraction
//! in 0, 3, 6 or 9 digits as needed: `SecondsFormat::AutoSi`), without `core::fmt`.
//!
//! Every saved execution holds one timestamp per state it went through, and every log line
//! one; through chrono's `Display` they were a third of serializing an execution. For
//! `#[serde(serialize_with = "crate::rfc3339::serialize")]`; reading back is chrono's.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` at most.
const MAX_LEN: usize = 30;

/// Writes `date` as chrono would; years outside 0..=9999 and leap seconds go through chrono.
pub fn serialize<S: Serializer>(date: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match format(date) {
        Some((buf, len)) => {
            // Only ASCII digits and separators were written.
            let text = std::str::from_utf8(&buf[..len]).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(text)
        }
        None => serde::Serialize::serialize(date, serializer),
    }
}

fn format(date: &DateTime<Utc>) -> Option<([u8; MAX_LEN], usize)> {
    let year = date.year();
    let nanos = date.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut buf = [0u8; MAX_LEN];
    let mut len = 0;
    digits(year as u32, 4, &mut buf, &mut len);
    let parts = [
        (b'-', date.month()),
        (b'-', date.day()),
        (b'T', date.hour()),
        (b':', date.minute()),
        (b':', date.second()),
    ];
    for (separator, value) in parts {
        buf[len] = separator;
        len += 1;
        digits(value, 2, &mut buf, &mut len);
    }
    let fraction = if nanos == 0 {
        None
    } else if nanos.is_multiple_of(1_000_000) {
        Some((nanos / 1_000_000, 3))
    } else if nanos.is_multiple_of(1_000) {
        Some((nanos / 1_000, 6))
    } else {
        Some((nanos, 9))
    };
    if let Some((value, width)) = fraction {
        buf[len] = b'.';
        len += 1;
        digits(value, width, &mut buf, &mut len);
    }
    buf[len] = b'Z';
    len += 1;
    Some((buf, len))
}

/// Writes `value` in `width` digits, zero-padded, at `*len`.
fn digits(value: u32, width: usize, buf: &mut [u8; MAX_LEN], len: &mut usize) {
    let mut v = value;
    for i in (0..width).rev() {
        buf[*len + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    *len += width;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Ours(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    fn same_as_chrono(date: DateTime<Utc>) {
        let ours = serde_json::to_string(&Ours(date)).unwrap();
        let chrono = serde_json::to_string(&date).unwrap();
        assert_eq!(ours, chrono, "{date:?}");
        let back: DateTime<Utc> = serde_json::from_str(&ours).unwrap();
        assert_eq!(back, date);
    }

    #[test]
    fn writes_what_chrono_writes() {
        // Whole seconds, milliseconds, microseconds, nanoseconds, and the edges of each.
        for nanos in [
            0,
            1,
            999,
            1_000,
            123_000,
            999_000,
            1_000_000,
            5_000_000,
            123_000_000,
            123_456_000,
            123_456_789,
            999_999_999,
        ] {
            for secs in [0, 1, 59, 1_700_000_000, 253_402_300_799, -62_167_219_200] {
                same_as_chrono(DateTime::from_timestamp(secs, nanos).unwrap());
            }
        }
        same_as_chrono(Utc::now());
    }

    #[test]
    fn dates_outside_four_digit_years_go_through_chrono() {
        for secs in [253_402_300_800, -62_167_219_201, -100_000_000_000] {
            same_as_chrono(DateTime::from_timestamp(secs, 5_000_000).unwrap());
        }
    }
}
