//! Points in time, in nanoseconds since the Unix epoch, of two kinds:
//!
//! * [`Stime`]: a sync time. How far a brick is synced, and the times of
//!   the journal that stime is compared with (its files' start and end,
//!   the hook's start, the ctimes a Hybrid Crawl since stime looks at).
//!   It only moves forward in the state database.
//! * [`Timestamp`]: any other moment: when a checkpoint was set or
//!   completed, when a crawl began or ended, "now" for lags and rates.
//!
//! The two meet in a few named places only: a checkpoint is completed once
//! every brick's stime is at or past [`Timestamp::as_stime`] of it, and a
//! stime is shown (last synced, lag) as [`Stime::as_timestamp`]. Both keep
//! the same nanoseconds, so the state database stores either as they are.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A sync time (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stime(i64);

impl Stime {
    /// The sync time of a change made now: journals stamp their records
    /// and files with it.
    pub fn now() -> Self {
        Timestamp::now().as_stime()
    }

    pub const fn from_nanos(nanos: i64) -> Self {
        Stime(nanos)
    }

    pub fn from_secs(secs: i64) -> Self {
        Stime(secs.saturating_mul(NANOS_PER_SEC))
    }

    pub fn secs(self) -> i64 {
        self.0.div_euclid(NANOS_PER_SEC)
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    /// Earlier by `d`, saturating.
    pub fn minus(self, d: Duration) -> Self {
        Stime(self.0.saturating_sub(d.as_nanos() as i64))
    }

    /// Later by `d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Stime(self.0.saturating_add(d.as_nanos() as i64))
    }

    /// The moment up to which the changes this stime covers were made: how
    /// it is shown (last synced) and how far behind now it is (lag).
    pub fn as_timestamp(self) -> Timestamp {
        Timestamp(self.0)
    }
}

impl fmt::Display for Stime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.secs(), self.0.rem_euclid(NANOS_PER_SEC))
    }
}

/// A moment that is no sync time (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_nanos() as i64)
    }

    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    pub fn from_secs(secs: i64) -> Self {
        Stime::from_secs(secs).as_timestamp()
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    pub fn secs(self) -> i64 {
        self.as_stime().secs()
    }

    /// Seconds from `earlier` to this moment (negative if it is later).
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1e9
    }

    /// The sync time that covers every change made up to this moment: a
    /// brick whose stime is at or past it has shipped all of them (so a
    /// checkpoint set at this moment is completed).
    pub fn as_stime(self) -> Stime {
        Stime(self.0)
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

    #[test]
    fn the_two_kinds_of_time_convert_without_loss() {
        let t = Timestamp::from_nanos(-1_500_000_000);
        assert_eq!(t.as_stime(), Stime::from_nanos(-1_500_000_000));
        assert_eq!(t.as_stime().as_timestamp(), t);
        assert_eq!(t.secs(), -2, "whole seconds round down");
        assert_eq!(Timestamp::from_secs(3).nanos(), 3_000_000_000);
        let later = Timestamp::from_nanos(t.nanos() + 2_500_000_000);
        assert_eq!(later.seconds_since(t), 2.5);
        assert_eq!(t.seconds_since(later), -2.5);
    }
}
