//! Medians, percentiles and human-readable numbers.

use std::time::Duration;

/// The median of `v` (the mean of the two middle values for an even count);
/// `None` for an empty slice.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// The `p`-th percentile (0–100) by the nearest-rank method.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

/// The median of a list of `u64`s (bytes, KiB), as `u64`.
pub fn median_u64(v: &[u64]) -> Option<u64> {
    median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>()).map(|m| m.round() as u64)
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `1.23 s`, `45 ms`.
pub fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 100.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.0} s")
    }
}

/// `12.3 MB` (decimal units, like rsync's and the figures).
pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b < 1e3 {
        format!("{b:.0} B")
    } else if b < 1e6 {
        format!("{:.1} kB", b / 1e3)
    } else if b < 1e9 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.2} GB", b / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(100.0));
        assert_eq!(percentile(&v, 99.0), Some(198.0));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_secs(0.0456), "46 ms");
        assert_eq!(fmt_secs(1.234), "1.23 s");
        assert_eq!(fmt_bytes(1_200_000), "1.2 MB");
    }
}
