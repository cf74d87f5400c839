//! Timestamps as JavaScript's `Date#toISOString` prints them: the form of
//! every `ts` in the ledger and of the archive's build times.

/// The current time as JavaScript's `Date#toISOString` prints it.
pub fn now_iso() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    iso_from_millis(now)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch (UTC).
pub fn iso_from_millis(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// days-to-civil algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// the civil-date conversion above), for parsing timestamps.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Is `s` a timestamp in exactly the form [`iso_from_millis`] prints (a
/// real date and time)? Stamps compare ranges with turns' `ts` as strings,
/// so any other form would match the wrong turns.
pub fn is_canonical_iso(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 24 {
        return false;
    }
    let shape = b"dddd-dd-ddTdd:dd:dd.dddZ";
    if !b.iter().zip(shape).all(|(c, p)| {
        if *p == b'd' {
            c.is_ascii_digit()
        } else {
            c == p
        }
    }) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap_or(-1);
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    if !(1..=12).contains(&m) || d < 1 || n(11..13) > 23 || n(14..16) > 59 || n(17..19) > 59 {
        return false;
    }
    // The day exists in that month.
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    d <= next - days_from_civil(y, m, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_forms_by_hand() {
        assert_eq!(iso_from_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_from_millis(86_399_999), "1970-01-01T23:59:59.999Z");
        // 2000-02-29 is day 11,016 (30 years of 365 days + 7 leap days + 59).
        assert_eq!(
            iso_from_millis(11_016 * 86_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(iso_from_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            iso_from_millis(1_776_643_200_123),
            "2026-04-20T00:00:00.123Z"
        );
        assert_eq!(iso_from_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        for d in [-800_000, -1, 0, 59, 11_016, 20_000, 2_932_896] {
            let iso = iso_from_millis(d * 86_400_000);
            let (y, m, day) = (
                &iso[..iso.len() - 20],
                &iso[iso.len() - 19..iso.len() - 17],
                &iso[iso.len() - 16..iso.len() - 14],
            );
            assert_eq!(
                days_from_civil(y.parse().unwrap(), m.parse().unwrap(), day.parse().unwrap()),
                d,
                "{iso}"
            );
        }
    }
}
