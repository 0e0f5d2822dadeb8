//! Points in time.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time in nanoseconds since the Unix epoch: the unit of stime,
/// changelog names and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stime(i64);

impl Stime {
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Stime(d.as_nanos() as i64)
    }

    pub const fn from_nanos(nanos: i64) -> Self {
        Stime(nanos)
    }

    pub fn from_secs(secs: i64) -> Self {
        Stime(secs.saturating_mul(1_000_000_000))
    }

    pub fn secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    /// Earlier by `d`, saturating.
    pub fn minus(self, d: std::time::Duration) -> Self {
        Stime(self.0.saturating_sub(d.as_nanos() as i64))
    }

    /// Later by `d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Stime(self.0.saturating_add(d.as_nanos() as i64))
    }
}

impl fmt::Display for Stime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.secs(), self.0.rem_euclid(1_000_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stime_prints_seconds_and_nanoseconds() {
        assert_eq!(Stime::from_nanos(1_500_000_000).to_string(), "1.500000000");
        assert_eq!(Stime::from_secs(2).nanos(), 2_000_000_000);
    }
}
