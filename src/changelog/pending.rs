//! How much a brick's journal holds that the slave does not yet: counted
//! for `status detail` and the metrics endpoint.

use std::path::Path;

use serde::Serialize;

use super::Record;
use crate::session::Stime;

/// At most this many journal files are read to count pending work; beyond
/// it the counts are lower bounds (`pending_exact` is false).
const PENDING_FILES_MAX: usize = 10_000;

/// Changes recorded in the brick's journal that are not on the slave yet:
/// the records of closed journal files after stime (the batch in flight
/// included), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Entry operations: create, mkdir, mknod, link, symlink, unlink, rmdir, rename.
    pub entry: u64,
    /// Content changes.
    pub data: u64,
    /// Attribute changes.
    pub meta: u64,
    /// False if there were too many journal files to read them all (the
    /// counts are then lower bounds).
    pub exact: bool,
}

/// Counts the records after `stime` in `dir`; `None` if there is no
/// journal yet (the session never ran).
pub fn pending(dir: &Path, stime: Option<Stime>) -> Option<Pending> {
    let files = super::list_closed(dir, stime.unwrap_or(Stime::from_nanos(i64::MIN))).ok()?;
    let mut p = Pending {
        exact: files.len() <= PENDING_FILES_MAX,
        ..Pending::default()
    };
    for f in files.iter().take(PENDING_FILES_MAX) {
        // A file purged meanwhile is done; a corrupt one is healed by a
        // Hybrid Crawl, whose size is unknown here.
        let Ok(log) = super::read_file(&f.path) else {
            continue;
        };
        for r in &log.records {
            match r {
                Record::Data(_) => p.data += 1,
                Record::Meta(_) => p.meta += 1,
                Record::Gap { .. } => {}
                _ => p.entry += 1,
            }
        }
    }
    Some(p)
}
