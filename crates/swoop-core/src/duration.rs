//! ISO-8601 durations as Kestra (Java's `Duration`) writes them: `PT5S`, `PT1M30S`, `P1DT2H`,
//! `PT0.5S`, `P2W`. Years and months are refused: they have no fixed length.

use std::time::Duration;

/// Parses an ISO-8601 duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("`{text}` is not an ISO-8601 duration (examples: PT5S, PT1M30S, P1DT2H)");
    let upper = text.trim().to_ascii_uppercase();
    let rest = upper.strip_prefix('P').ok_or_else(err)?;
    if rest.is_empty() {
        return Err(err());
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(err()),
        None => (rest, None),
    };
    let mut secs = 0f64;
    let mut parse_part = |part: &str, units: &[(char, f64)]| -> Result<(), String> {
        let mut number = String::new();
        let mut unit_index = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let pos = units[unit_index..]
                .iter()
                .position(|(u, _)| *u == c)
                .ok_or_else(err)?;
            let n: f64 = number.parse().map_err(|_| err())?;
            secs += n * units[unit_index + pos].1;
            unit_index += pos + 1;
            number.clear();
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(err())
        }
    };
    parse_part(date, &[('W', 604_800.0), ('D', 86_400.0)])?;
    if let Some(time) = time {
        parse_part(time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way Kestra prints them (`PT1.5S`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("PT{}S", d.as_secs())
    } else {
        format!("PT{secs}S")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kestra_durations() {
        assert_eq!(parse_duration("PT5S").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("PT1M30S").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("P1DT2H").unwrap(),
            Duration::from_secs(93_600)
        );
        assert_eq!(
            parse_duration("PT0.5S").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("P2W").unwrap(),
            Duration::from_secs(1_209_600)
        );
        assert_eq!(parse_duration("pt10m").unwrap(), Duration::from_secs(600));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "P", "PT", "5S", "PT5", "P1Y", "PTS", "PT5S5M"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }
}
