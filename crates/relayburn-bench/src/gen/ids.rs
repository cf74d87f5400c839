//! Random identifiers in the styles each source writes, timestamps, and the
//! small sampling helpers the generator needs.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// The generator's random source: explicitly seeded, so a seed always
/// yields the same ledger.
pub type Rng = Pcg64Mcg;

/// Derive an independent stream from the run seed and a label, so that
/// side decisions (stamps, content sidecars) never shift the main stream.
pub fn derived_rng(seed: u64, label: u64, serial: u64) -> Rng {
    let mut x = seed ^ label.rotate_left(17) ^ serial.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser: nearby inputs give unrelated seeds.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    Rng::seed_from_u64(x)
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Append `n` random lowercase hex digits.
pub fn push_hex(out: &mut String, rng: &mut Rng, n: usize) {
    let mut bits = 0u64;
    for i in 0..n {
        if i % 16 == 0 {
            bits = rng.random::<u64>();
        }
        out.push(HEX[(bits & 0xF) as usize] as char);
        bits >>= 4;
    }
}

/// Append `n` random base-62 characters.
pub fn push_base62(out: &mut String, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        out.push(BASE62[rng.random_range(0..62usize)] as char);
    }
}

/// A 16-hex hash as the readers store for args and content hashes.
pub fn hex16(rng: &mut Rng) -> String {
    let mut s = String::with_capacity(16);
    push_hex(&mut s, rng, 16);
    s
}

fn uuid_from(mut hi: u64, mut lo: u64, version: u64) -> String {
    hi = (hi & !0xF000) | (version << 12);
    lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// A random (version 4) UUID, as Claude Code uses for sessions and lines.
pub fn uuid_v4(rng: &mut Rng) -> String {
    uuid_from(rng.random(), rng.random(), 4)
}

/// A time-ordered (version 7) UUID, as Codex uses for sessions.
pub fn uuid_v7(ms: i64, rng: &mut Rng) -> String {
    let hi = ((ms as u64) << 16) | (rng.random::<u64>() & 0xFFFF);
    uuid_from(hi, rng.random(), 7)
}

/// An OpenCode-style id: prefix, 12 hex digits of time, 14 base-62 chars.
pub fn opencode_id(prefix: &str, ms: i64, rng: &mut Rng) -> String {
    let mut s = String::with_capacity(prefix.len() + 27);
    s.push_str(prefix);
    s.push('_');
    s.push_str(&format!(
        "{:012x}",
        (ms as u64).wrapping_mul(4096) & 0xFFFF_FFFF_FFFF
    ));
    push_base62(&mut s, rng, 14);
    s
}

/// An Anthropic-style id such as `msg_01…` or `toolu_01…`.
pub fn anthropic_id(prefix: &str, rng: &mut Rng) -> String {
    let mut s = String::with_capacity(prefix.len() + 25);
    s.push_str(prefix);
    s.push_str("_01");
    push_base62(&mut s, rng, 22);
    s
}

/// An OpenAI-style call id, `call_…`.
pub fn call_id(rng: &mut Rng) -> String {
    let mut s = String::with_capacity(29);
    s.push_str("call_");
    push_base62(&mut s, rng, 24);
    s
}

/// Milliseconds since the Unix epoch as `Date#toISOString` prints them
/// (years 0 to 9999).
pub fn iso(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, i64::from(m));
    put(8, 2, i64::from(d));
    put(11, 2, rem / 3_600_000);
    put(14, 2, rem / 60_000 % 60);
    put(17, 2, rem / 1000 % 60);
    put(20, 3, rem % 1000);
    b.iter().map(|&c| c as char).collect()
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Pick an item by integer weights.
pub fn weighted<'a, T>(rng: &mut Rng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    let mut x = rng.random_range(0..total.max(1));
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= *w;
    }
    &items[items.len() - 1].0
}

/// Pick one element uniformly.
pub fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Pick one string uniformly.
pub fn pick_str(rng: &mut Rng, items: &[&'static str]) -> &'static str {
    items[rng.random_range(0..items.len())]
}

/// A log-uniform integer in `[lo, hi]`: many small values, a long tail.
pub fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    let u: f64 = rng.random();
    (lo.ln() + u * (hi.ln() - lo.ln())).exp().floor()
}

/// Pick an item by integer weights, at quantile `u` in (0, 1).
pub fn weighted_at<T>(u: f64, items: &[(T, u32)]) -> &T {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    let mut x = (u * f64::from(total)) as u32;
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= *w;
    }
    &items[items.len() - 1].0
}

/// Irrational steps for independent low-discrepancy sequences: sequences
/// sharing a step would be shifted copies of each other.
pub const STEPS: [f64; 4] = [
    0.618_033_988_749_894_8, // golden ratio - 1
    0.414_213_562_373_095_1, // sqrt 2 - 1
    0.732_050_807_568_877_3, // sqrt 3 - 1
    0.236_067_977_499_789_7, // sqrt 5 - 2
];

/// A low-discrepancy (Weyl) sequence in (0, 1): successive values spread
/// evenly, so a few dozen sessions already show the intended proportions
/// and means, while the order still looks random.
#[derive(Debug, Clone)]
pub struct Golden {
    x: f64,
    step: f64,
}

impl Golden {
    pub fn new(start: f64, step: f64) -> Golden {
        Golden {
            x: start.fract(),
            step,
        }
    }

    pub fn next_unit(&mut self) -> f64 {
        self.x = (self.x + self.step).fract();
        self.x.clamp(1e-6, 1.0 - 1e-6)
    }
}

/// Quantile of a log-logistic distribution with shape 2.5 scaled to `mean`:
/// a heavy but finite-variance tail, like real session lengths.
pub fn log_logistic(u: f64, mean: f64) -> f64 {
    const BETA: f64 = 2.5;
    // mean = alpha * (pi/beta) / sin(pi/beta)
    let b = std::f64::consts::PI / BETA;
    let alpha = mean * b.sin() / b;
    alpha * (u / (1.0 - u)).powf(1.0 / BETA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_matches_known_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        // 1_700_000_000 s is 2023-11-14 22:13:20 UTC.
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        // 2024-02-29 (leap day) 00:00:00.000 = 19782 days.
        assert_eq!(iso(19_782 * 86_400_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn uuid_shapes() {
        let mut rng = Rng::seed_from_u64(7);
        let u = uuid_v4(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        // 2025-06-01T00:00:00Z = 1748736000000 ms = 0x19728c9c000.
        let v = uuid_v7(1_748_736_000_000, &mut rng);
        assert!(v.starts_with("019728c9-c000-7"), "{v}");
    }

    #[test]
    fn log_logistic_mean_is_close() {
        let mut g = Golden::new(0.3, STEPS[0]);
        let n = 20_000;
        let sum: f64 = (0..n).map(|_| log_logistic(g.next_unit(), 100.0)).sum();
        let mean = sum / n as f64;
        assert!((mean - 100.0).abs() < 5.0, "{mean}");
    }
}
