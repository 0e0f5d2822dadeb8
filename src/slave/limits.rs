//! How many file descriptors the slave lets its caches hold, from the
//! process's limit (raised to the hard limit at start, see
//! [`crate::fsutil::raise_nofile_limit`]).
//!
//! Two things hold fds between requests: the cache of parent directories
//! (`root`), and the files waiting to be renamed into place (`receive`),
//! each holding its directory and, for a large file, itself. Each gets a
//! quarter of the limit, so both full still leave a quarter for the
//! directory being walked, a file being received, the stream and the
//! libraries, and a low limit makes them flush sooner instead of failing
//! with "Too many open files".

use super::receive::MAX_PENDING_FILES;
use super::root::DIR_CACHE_MAX;

/// What the caches may hold under a soft limit of `nofile` open files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdBudget {
    /// Parent directories kept open.
    pub dir_cache: usize,
    /// Received files waiting for their rename (two fds each at most).
    pub pending_files: usize,
}

impl FdBudget {
    pub fn of(nofile: u64) -> FdBudget {
        let quarter = usize::try_from(nofile / 4).unwrap_or(usize::MAX).max(1);
        FdBudget {
            dir_cache: quarter.min(DIR_CACHE_MAX),
            pending_files: (quarter / 2).clamp(1, MAX_PENDING_FILES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_limits_shrink_the_caches_high_ones_keep_the_maxima() {
        let low = FdBudget::of(256);
        assert_eq!(
            low,
            FdBudget {
                dir_cache: 64,
                pending_files: 32
            }
        );
        let high = FdBudget::of(1 << 20);
        assert_eq!(high.dir_cache, DIR_CACHE_MAX);
        assert_eq!(high.pending_files, MAX_PENDING_FILES);
        assert!(FdBudget::of(0).pending_files >= 1);
        assert!(FdBudget::of(u64::MAX).dir_cache == DIR_CACHE_MAX);
    }
}
