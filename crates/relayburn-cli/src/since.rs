//! `--since`/`--until` values: ISO timestamps or relative `7d`, `24h`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relayburn_ledger::time::{days_from_civil, iso_from_millis};

/// Resolve a `--since` value against `now` into an ISO-8601 UTC timestamp
/// with milliseconds (what the ledger's `ts` fields hold), so the string
/// comparison the filters make is meaningful.
pub fn resolve(input: &str, now: SystemTime) -> Result<String, String> {
    let s = input.trim();
    if let Some(ms) = relative_ms(s) {
        let t = now
            .checked_sub(Duration::from_millis(ms))
            .ok_or_else(|| format!("invalid time: {input}"))?;
        return Ok(iso_from_system_time(t));
    }
    parse_iso(s).ok_or_else(|| {
        format!("invalid time: {input:?} (expected an ISO timestamp or a relative form like 7d, 24h, 2w)")
    })
}

/// `<n>h|d|w|m` (m = 30 days), as the reference's `parseSinceArg`.
fn relative_ms(s: &str) -> Option<u64> {
    if !s.is_ascii() || s.len() < 2 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit {
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "m" => 30 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Accepts `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` with an optional `Z`
/// or `±HH:MM` offset (no offset = UTC), and normalises to
/// `YYYY-MM-DDTHH:MM:SS.fffZ`.
pub fn parse_iso(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let year = num(0..4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(5..7)?;
    let day = num(8..10)?;
    let (mut h, mut mi, mut sec, mut ms) = (0, 0, 0, 0);
    let mut rest = &s[10.min(s.len())..];
    if let Some(t) = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' ')) {
        let tb = t.as_bytes();
        h = t.get(0..2)?.parse().ok()?;
        if tb.get(2) != Some(&b':') {
            return None;
        }
        mi = t.get(3..5)?.parse().ok()?;
        rest = &t[5..];
        if let Some(r) = rest.strip_prefix(':') {
            sec = r.get(0..2)?.parse().ok()?;
            rest = &r[2..];
            if let Some(r) = rest.strip_prefix('.') {
                let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
                if digits.is_empty() {
                    return None;
                }
                let mut frac = digits.clone();
                frac.truncate(3);
                while frac.len() < 3 {
                    frac.push('0');
                }
                ms = frac.parse().ok()?;
                rest = &r[digits.len()..];
            }
        }
    }
    let offset_min: i64 = match rest {
        "" | "Z" | "z" => 0,
        o if o.is_ascii()
            && (o.starts_with('+') || o.starts_with('-'))
            && o.len() == 6
            && &o[3..4] == ":" =>
        {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let oh: i64 = o[1..3].parse().ok()?;
            let om: i64 = o[4..6].parse().ok()?;
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let total_ms = ((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + ms;
    Some(iso_from_millis(total_ms))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

pub fn iso_from_system_time(t: SystemTime) -> String {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    iso_from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_forms() {
        // 2026-01-08T00:00:00.000Z
        let now = UNIX_EPOCH + Duration::from_millis(1_767_830_400_000);
        assert_eq!(resolve("7d", now).unwrap(), "2026-01-01T00:00:00.000Z");
        assert_eq!(resolve("24h", now).unwrap(), "2026-01-07T00:00:00.000Z");
        assert_eq!(resolve("1w", now).unwrap(), "2026-01-01T00:00:00.000Z");
        assert!(resolve("7x", now).is_err());
        assert!(resolve("d", now).is_err());
    }

    #[test]
    fn iso_forms() {
        assert_eq!(parse_iso("2025-10-09").unwrap(), "2025-10-09T00:00:00.000Z");
        assert_eq!(
            parse_iso("2025-10-09T11:36:17.656Z").unwrap(),
            "2025-10-09T11:36:17.656Z"
        );
        assert_eq!(
            parse_iso("2025-10-09T11:36:17+02:00").unwrap(),
            "2025-10-09T09:36:17.000Z"
        );
        assert_eq!(
            parse_iso("2024-02-29T00:00").unwrap(),
            "2024-02-29T00:00:00.000Z"
        );
        assert!(parse_iso("2025-02-29").is_none());
        assert!(parse_iso("2025-13-01").is_none());
        assert!(parse_iso("yesterday").is_none());
    }
}
