//! The session-wide bandwidth limit (`bandwidth-limit`): one token bucket
//! shared by every stream of every brick of a session, which all live in the
//! session's monitor process.
//!
//! Bytes may be sent on credit: a write of `n` bytes always goes, and the
//! writer then waits until the bucket has paid the debt back. So a frame
//! larger than the burst is never stuck, and the average rate is exact.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket of `rate` bytes per second holding at most a quarter
/// second of them.
#[derive(Debug)]
pub struct Throttle {
    rate: u64,
    burst: f64,
    /// Tokens (bytes) available, negative while in debt, as of `.1`.
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A bucket for `rate` bytes per second; `None` for no limit (0).
    pub fn new(rate: u64) -> Option<Throttle> {
        (rate > 0).then(|| {
            let burst = (rate as f64 / 4.0).max(64.0 * 1024.0);
            Throttle {
                rate,
                burst,
                state: Mutex::new((burst, Instant::now())),
            }
        })
    }

    /// The configured rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes `bytes` at `now`; returns how long to wait before sending more.
    pub fn take_at(&self, bytes: usize, now: Instant) -> Duration {
        let mut state = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (tokens, last) = *state;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let tokens = (tokens + elapsed * self.rate as f64).min(self.burst) - bytes as f64;
        *state = (tokens, now.max(last));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate as f64)
        }
    }

    /// Takes `bytes` and waits until the bucket is out of debt.
    pub async fn take(&self, bytes: usize) {
        let wait = self.take_at(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_limit() {
        assert!(Throttle::new(0).is_none());
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let t = Throttle::new(1_000_000).unwrap();
        let t0 = Instant::now();
        // A quarter second's worth is the burst.
        assert_eq!(t.take_at(250_000, t0), Duration::ZERO);
        // Half a second's worth more: half a second of debt.
        let wait = t.take_at(500_000, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // After paying it back, a long pause refills the burst only.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(t.take_at(250_000, later), Duration::ZERO);
        let wait = t.take_at(100_000, later);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn many_writers_share_one_rate() {
        let t = Throttle::new(100_000).unwrap();
        let t0 = Instant::now();
        let burst = t.take_at(65_536, t0);
        assert_eq!(burst, Duration::ZERO);
        // Two writers of 50 kB each at the same moment: the second waits for both.
        t.take_at(50_000, t0);
        let wait = t.take_at(50_000, t0);
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
    }
}
