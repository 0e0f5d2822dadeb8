//! How far a Hybrid Crawl has got, and how long it may take yet.
//!
//! The crawl itself ships batch by batch without knowing the size of the
//! tree (its memory is bounded by depth, not by size). To estimate the time
//! left, [`count_in_background`] walks the brick once more beside it,
//! counting the files the crawl will ship (same `since` and exclusions),
//! and records the total; [`estimate`] turns that and the files shipped so
//! far into a rate and a time left.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::crawl::filter::SyncFilter;
use crate::relpath::RelPath;
use crate::session::{BrickId, Stime, Timestamp};
use crate::state::{CrawlProgress, State};

/// A look at a crawl: its rates, and once the total is known, its share
/// done and the seconds left at the rate so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub elapsed_seconds: f64,
    pub files_per_second: f64,
    pub bytes_per_second: f64,
    /// 0..=100, once the total is counted.
    pub percent: Option<f64>,
    /// Seconds left at the rate so far: once the total is counted and at
    /// least one file was shipped; 0 when finished.
    pub eta_seconds: Option<f64>,
}

/// The rates and estimate of `p` as of `now`; `None` if no crawl ran.
pub fn estimate(p: &CrawlProgress, now: Timestamp) -> Option<Estimate> {
    let started = p.started?;
    let end = p.finished.unwrap_or(now);
    let elapsed = end.seconds_since(started).max(1e-3);
    let files_per_second = p.files as f64 / elapsed;
    let percent = if p.finished.is_some() {
        Some(100.0)
    } else {
        p.total_files.map(|t| {
            if t == 0 {
                100.0
            } else {
                (p.files as f64 * 100.0 / t as f64).min(100.0)
            }
        })
    };
    let eta_seconds = if p.finished.is_some() {
        Some(0.0)
    } else {
        match p.total_files {
            Some(t) if p.files >= t => Some(0.0),
            Some(t) if p.files > 0 => Some((t - p.files) as f64 / files_per_second),
            _ => None,
        }
    };
    Some(Estimate {
        elapsed_seconds: elapsed,
        files_per_second,
        bytes_per_second: p.bytes as f64 / elapsed,
        percent,
        eta_seconds,
    })
}

/// One line about a crawl, e.g. `120 of 5000 files (2%), 1.20 MiB sent,
/// 40.0 files/s, 1.00 MiB/s, about 2 minutes left`.
pub fn describe(p: &CrawlProgress, now: Timestamp) -> Option<String> {
    use indicatif::{HumanBytes, HumanDuration};
    let e = estimate(p, now)?;
    let mut s = match (p.total_files, e.percent) {
        (Some(t), Some(pct)) => format!("{} of {t} files ({pct:.0}%)", p.files),
        _ => format!("{} files (counting the tree)", p.files),
    };
    s += &format!(
        ", {} sent, {:.1} files/s, {}/s",
        HumanBytes(p.bytes),
        e.files_per_second,
        HumanBytes(e.bytes_per_second as u64)
    );
    if p.finished.is_some() {
        s += &format!(
            ", finished in {}",
            HumanDuration(std::time::Duration::from_secs_f64(e.elapsed_seconds))
        );
    } else if let Some(eta) = e.eta_seconds {
        s += &format!(
            ", about {} left",
            HumanDuration(std::time::Duration::from_secs_f64(eta))
        );
    }
    Some(s)
}

/// What a Hybrid Crawl walks: the files it will ship.
#[derive(Debug, Clone)]
pub struct CrawlScope {
    pub brick: PathBuf,
    /// Where in the brick the walk starts.
    pub start: RelPath,
    /// Absolute directories not descended into.
    pub exclude: Vec<PathBuf>,
    /// `exclude` patterns of the session.
    pub filter: SyncFilter,
    /// Only files whose ctime is at or after this.
    pub since: Option<Stime>,
}

/// How often (in entries) the count asks whether it is still wanted.
const CHECK_EVERY: u64 = 4096;

impl CrawlScope {
    /// Regular files in scope (not following symlinks) and their bytes;
    /// `None` if `wanted` turned false on the way.
    pub fn count(&self, wanted: impl Fn() -> bool) -> Option<(u64, u64)> {
        let (mut files, mut bytes, mut seen) = (0u64, 0u64, 0u64);
        let mut stack = vec![self.start.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(dir.under(&self.brick)) else {
                continue;
            };
            for e in rd.flatten() {
                seen += 1;
                if seen.is_multiple_of(CHECK_EVERY) && !wanted() {
                    return None;
                }
                let Ok(rel) = dir.join(&e.file_name()) else {
                    continue;
                };
                let full = rel.under(&self.brick);
                if self.exclude.iter().any(|x| full.starts_with(x)) || self.filter.excluded(&rel) {
                    continue;
                }
                // A DirEntry's metadata does not follow a symlink.
                let Ok(md) = e.metadata() else { continue };
                let ctime = Stime::from_nanos(md.ctime() * 1_000_000_000 + md.ctime_nsec());
                if md.is_dir() {
                    stack.push(rel);
                } else if md.is_file() && self.since.is_none_or(|s| ctime >= s) {
                    files += 1;
                    bytes += md.len();
                }
            }
        }
        Some((files, bytes))
    }

    /// Counts on a blocking thread and records the total for the Hybrid
    /// Crawl of `brick_id` that began at `started`. Gives up when that
    /// crawl is over or another began.
    pub fn count_in_background(self, state_home: PathBuf, brick_id: BrickId, started: Timestamp) {
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let Ok(state) = State::open(&state_home) else {
                return;
            };
            let current = || {
                state
                    .bricks_by_id(brick_id)
                    .ok()
                    .flatten()
                    .is_some_and(|b| {
                        b.progress.started == Some(started) && b.progress.finished.is_none()
                    })
            };
            let Some((files, bytes)) = self.count(current) else {
                return;
            };
            match state.crawl_total(brick_id, started, files, bytes) {
                Ok(()) => tracing::info!(
                    files,
                    bytes,
                    "Hybrid Crawl: {files} files ({bytes} bytes) to ship"
                ),
                Err(e) => tracing::debug!("recording the Hybrid Crawl total: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_needs_a_total_and_a_rate() {
        let now = Timestamp::from_nanos(100_000_000_000);
        let mut p = CrawlProgress {
            started: Some(Timestamp::from_nanos(now.nanos() - 10_000_000_000)),
            files: 20,
            bytes: 2000,
            ..CrawlProgress::default()
        };
        let e = estimate(&p, now).unwrap();
        assert_eq!((e.files_per_second, e.bytes_per_second), (2.0, 200.0));
        assert_eq!((e.percent, e.eta_seconds), (None, None));
        p.total_files = Some(100);
        let e = estimate(&p, now).unwrap();
        assert_eq!((e.percent, e.eta_seconds), (Some(20.0), Some(40.0)));
        p.files = 0;
        assert_eq!(estimate(&p, now).unwrap().eta_seconds, None, "no rate yet");
        p.finished = Some(now);
        let e = estimate(&p, now).unwrap();
        assert_eq!((e.percent, e.eta_seconds), (Some(100.0), Some(0.0)));
        assert_eq!(estimate(&CrawlProgress::default(), now), None);
    }

    #[test]
    fn count_sees_what_the_crawl_ships() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        std::fs::create_dir_all(b.join("d/e")).unwrap();
        std::fs::write(b.join("a"), b"12345").unwrap();
        std::fs::write(b.join("d/e/f"), b"123").unwrap();
        std::fs::write(b.join("d/x.tmp"), b"1").unwrap();
        std::fs::create_dir_all(b.join("home")).unwrap();
        std::fs::write(b.join("home/state"), b"1").unwrap();
        std::os::unix::fs::symlink("a", b.join("l")).unwrap();
        let filter = SyncFilter {
            exclude: vec![crate::crawl::filter::Pattern::parse("*.tmp").unwrap()],
            ignore_deletes: false,
        };
        let mut scope = CrawlScope {
            brick: b.to_owned(),
            start: RelPath::root(),
            exclude: vec![b.join("home")],
            filter,
            since: None,
        };
        assert_eq!(scope.count(|| true), Some((2, 8)));
        assert_eq!(
            scope.count(|| false),
            Some((2, 8)),
            "asked only every few thousand entries"
        );
        scope.start = RelPath::new("d").unwrap();
        assert_eq!(scope.count(|| true), Some((1, 3)));
        scope.since = Some(Stime::from_nanos(Stime::now().nanos() + 60_000_000_000));
        assert_eq!(scope.count(|| true), Some((0, 0)));
    }
}
