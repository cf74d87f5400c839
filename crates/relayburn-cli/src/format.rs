//! Human-readable numbers, as the reference CLI prints them.

/// `n.toLocaleString('en-US')` for integers: thousands separated by commas.
pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in KB/MB/GB with two, one or no decimals (the reference's rule);
/// `small_unit` is what bytes below 1 KiB are called ("B" or "bytes").
pub fn bytes(n: u64, small_unit: &str) -> String {
    if n < 1024 {
        return format!("{n} {small_unit}");
    }
    let units = ["KB", "MB", "GB", "TB"];
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let fixed = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    format!("{fixed} {}", units[i])
}

/// "s" unless exactly one.
pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_get_commas() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1,000");
        assert_eq!(int(1234567), "1,234,567");
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(1023, "B"), "1023 B");
        assert_eq!(bytes(1024, "B"), "1.00 KB");
        assert_eq!(bytes(10 * 1024, "B"), "10.0 KB");
        assert_eq!(bytes(150 * 1024 * 1024, "bytes"), "150 MB");
    }
}
