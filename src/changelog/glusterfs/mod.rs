//! GlusterFS's own brick changelogs as a change source, so georep replaces
//! GlusterFS geo-replication on a real volume without a hook of its own.
//!
//! # Place in the flow
//!
//! With the volume option `changelog.changelog on`, every brick process
//! journals the operations it performs under `<brick>/.glusterfs/changelogs`.
//! [`GlusterBrick::read_after`] reads the files closed after stime (History
//! and Changelog Crawl alike), resolves their gfids to paths inside the
//! brick and hands georep's own [`Record`]s to the crawler, which batches
//! and ships them exactly as it does for the notify journal. Nothing is
//! written to the brick and no file is deleted: the changelogs are
//! GlusterFS's.
//!
//! # Files (as GlusterFS 10.3 writes them)
//!
//! ```text
//! <brick>/.glusterfs/changelogs/
//!     CHANGELOG                       the file being written (never read)
//!     YYYY/MM/DD/CHANGELOG.<ts>       closed at rollover time <ts> (seconds)
//!     htime/HTIME.<ts0>               the index, begun when the changelog
//!                                     was enabled at <ts0>
//!     csnap/                          snapshot barrier files (ignored)
//! ```
//!
//! Every `changelog.rollover-time` seconds the brick renames `CHANGELOG`
//! to `YYYY/MM/DD/CHANGELOG.<ts>` and appends its absolute path and a NUL
//! to the HTIME file (whose xattr `trusted.glusterfs.htime` holds
//! `<last ts>:<count>`). An interval without changes is listed as
//! `changelog.<ts>` in lower case and has no file. Several rollovers can
//! fall in one second and then share a name (the first entry is always
//! listed twice): an interval is read only once its second is over, and a
//! name listed both empty and not is read as the file. A name listed twice
//! as non-empty means GlusterFS renamed a second file over the first and
//! its records are lost: a gap. Everything that happened before second `<ts>` is in files
//! named `<= ts`, so `ts` seconds is the stime a file lets the brick reach.
//! When the changelog is turned off and on again a new HTIME file starts;
//! stime before its `<ts0>` means changes may be missing (a gap, healed by
//! a Hybrid Crawl, as is the first sync).
//!
//! # Records (`version: v1.2`, `encoding : 2` = ASCII)
//!
//! After the header line `GlusterFS Changelog | version: v1.2 | encoding : 2\n`
//! come records whose fields each end in a NUL byte. A record begins with
//! a type letter glued to the gfid (36-character UUID) of the inode:
//!
//! ```text
//! D<gfid>                       data written (once per gfid and file)
//! M<gfid> fop                   metadata: 38 SETATTR, 39 FSETATTR,
//!                               17 SETXATTR, 19 REMOVEXATTR, ...
//! E<gfid> fop ...               an entry operation, by fop number:
//!     23 CREATE, 4 MKDIR, 3 MKNOD   mode uid gid <pargfid>/<name>
//!     7 SYMLINK, 9 LINK             <pargfid>/<name>
//!     5 UNLINK, 6 RMDIR             <pargfid>/<name> then empty fields
//!                                   (a deleted path with capture-del-path)
//!     8 RENAME                      <pargfid>/<old name> <pargfid>/<new name>
//! ```
//!
//! Names are raw bytes (non-UTF-8 kept). Anything else (another header,
//! an unknown fop, a field that is not what its position requires, a
//! record cut short) is refused with [`ChangelogError::Corrupt`] naming
//! the file and byte offset, and healed as a gap; the reader never guesses.
//!
//! # From gfids to paths
//!
//! A directory's handle `.glusterfs/xx/yy/<gfid>` is a symlink to
//! `../../xx/yy/<parent gfid>/<name>`; a file's handle is a hard link whose
//! `trusted.gfid2path.<hash>` xattrs hold `<parent gfid>/<name>` for each
//! of its names; the root is `00000000-0000-0000-0000-000000000001`. These
//! say where an inode is *now*; `resolve.rs` turns them into the path each
//! record had at its own time by undoing the later records, so a gfid
//! whose handle is gone (deleted since) still resolves through the records
//! that deleted it. Paths are [`RelPath`](crate::relpath::RelPath)s inside
//! the brick; records under `.glusterfs` and `.trashcan` are dropped, and
//! a record whose parent cannot be found at all is dropped too (it was
//! removed later, by a record still in the file being written, which
//! removes it on the slave in a later batch; the shipper's re-listing of
//! touched directories covers the rest).

mod format;
mod gfid;
mod htime;
mod mdata;
mod resolve;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use format::{parse, GEntryOp, GRecord, HEADER};
pub use gfid::file_names;
pub use mdata::client_mtime;
pub use resolve::{internal_names, is_internal, INTERNAL};

use super::{Changelog, ChangelogError, Record};
use crate::session::Stime;

/// How the gap before the changelog index begins is worded (routine: the
/// first sync).
pub const INDEX_GAP: &str = "changes before the brick's changelog began";

/// How long after a second ends its last rollover is surely in the index.
const SECOND_SETTLED: std::time::Duration = std::time::Duration::from_millis(200);

/// Most closed files read (and resolved together) per call.
pub const MAX_FILES: usize = 2048;

/// A brick whose changes come from GlusterFS's changelogs. Clones share
/// one index reader.
#[derive(Debug, Clone)]
pub struct GlusterBrick {
    brick: PathBuf,
    index: Arc<Mutex<htime::IndexReader>>,
}

impl GlusterBrick {
    pub fn new(brick: impl Into<PathBuf>) -> Self {
        let brick = brick.into();
        GlusterBrick {
            index: Arc::new(Mutex::new(htime::IndexReader::new(changelogs_dir(&brick)))),
            brick,
        }
    }

    /// Whether `brick` looks like a GlusterFS brick with changelogs.
    pub fn detect(brick: &Path) -> bool {
        changelogs_dir(brick).is_dir()
    }

    /// The closed changelog intervals ending after `after`, oldest first,
    /// at most [`MAX_FILES`], as georep records (`end` = rollover time).
    /// The first carries a [`Record::Gap`] when `after` lies before the
    /// index began (first sync, or the changelog was off for a while); an
    /// unreadable file becomes a Gap in its place.
    pub fn read_after(&self, after: Stime) -> Result<Vec<Changelog>, ChangelogError> {
        let mut reader = self.index.lock().unwrap_or_else(|p| p.into_inner());
        reader.forget_through(after.secs());
        let Some((started, all)) = reader.refresh()? else {
            return Err(ChangelogError::Gluster {
                brick: self.brick.clone(),
                reason: format!(
                    "no changelog index in {} (is `changelog.changelog` on for the volume?)",
                    changelogs_dir(&self.brick).join("htime").display()
                ),
            });
        };
        // Rollovers within one second share its name: a second is read
        // only once it is over, so no later file of it can be missed.
        let over = Stime::now().minus(SECOND_SETTLED);
        // Before the index began nothing can be replayed: one interval
        // carries the gap, and the Hybrid Crawl that heals it decides where
        // replaying starts.
        let before_index = after < Stime::from_secs(started);
        let entries: Vec<&htime::IndexEntry> = all
            .iter()
            .filter(|e| Stime::from_secs(e.ts) > after && Stime::from_secs(e.ts + 1) <= over)
            .take(if before_index { 1 } else { MAX_FILES })
            .collect();
        let mut parsed = Vec::with_capacity(entries.len());
        let mut failed = Vec::with_capacity(entries.len());
        for e in &entries {
            let read = match &e.file {
                None => Ok(Vec::new()),
                Some(f) => std::fs::read(f)
                    .map_err(|err| ChangelogError::io("read", f, err))
                    .and_then(|bytes| parse(f, &bytes)),
            };
            match read {
                Ok(recs) => {
                    parsed.push(recs);
                    failed.push(None);
                }
                Err(err) => {
                    parsed.push(Vec::new());
                    failed.push(Some(err.to_string()));
                }
            }
        }
        let resolved = resolve::resolve(&self.brick, &parsed);
        let mut start = after;
        let mut out = Vec::with_capacity(entries.len());
        for ((e, mut records), failure) in entries.iter().zip(resolved).zip(failed) {
            if let Some(reason) = failure {
                records.insert(0, Record::gap(reason));
            }
            if e.clobbered {
                records.insert(
                    0,
                    Record::gap(format!(
                        "GlusterFS closed two changelogs in second {} and the second replaced the first",
                        e.ts
                    )),
                );
            }
            if out.is_empty() && before_index {
                records.insert(
                    0,
                    Record::gap(format!("{INDEX_GAP} (at {started}) are in no changelog")),
                );
            }
            let end = Stime::from_secs(e.ts);
            out.push(Changelog {
                start,
                end,
                records,
            });
            start = end;
        }
        Ok(out)
    }
}

fn changelogs_dir(brick: &Path) -> PathBuf {
    brick.join(".glusterfs").join("changelogs")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts_now() -> i64 {
        Stime::now().secs()
    }

    /// A brick with an index begun at 100: an empty interval (101), one
    /// that made `d1` (102), a name closed twice (103), and the second
    /// now running (not over yet).
    fn brick() -> (tempfile::TempDir, GlusterBrick) {
        let tmp = tempfile::tempdir().unwrap();
        let cl = changelogs_dir(tmp.path());
        let day = cl.join("1970/01/01");
        std::fs::create_dir_all(cl.join("htime")).unwrap();
        std::fs::create_dir_all(&day).unwrap();
        let mut rec = HEADER.to_vec();
        rec.extend_from_slice(
            b"E37cb0cef-ea72-410e-a4e0-b075f8a6c824\x004\x0016877\x000\x000\x0000000000-0000-0000-0000-000000000001/d1\x00",
        );
        std::fs::write(day.join("CHANGELOG.102"), &rec).unwrap();
        std::fs::write(day.join("CHANGELOG.103"), HEADER).unwrap();
        let now = ts_now();
        let mut index = String::new();
        for name in [
            "changelog.101".to_owned(),
            "CHANGELOG.102".into(),
            "CHANGELOG.103".into(),
            "CHANGELOG.103".into(),
            format!("changelog.{now}"),
        ] {
            index.push_str(&format!(
                "/old/place/.glusterfs/changelogs/1970/01/01/{name}\0"
            ));
        }
        std::fs::write(cl.join("htime/HTIME.100"), index).unwrap();
        let b = GlusterBrick::new(tmp.path());
        (tmp, b)
    }

    #[test]
    fn the_first_read_is_a_gap_then_intervals_replay_in_order() {
        let (_tmp, b) = brick();
        let first = b.read_after(Stime::from_nanos(0)).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].end, Stime::from_secs(101));
        assert!(
            matches!(&first[0].records[..], [Record::Gap { reason, .. }] if reason.starts_with(INDEX_GAP)),
            "{first:?}"
        );
        let next = b.read_after(first[0].end).unwrap();
        let ends: Vec<i64> = next.iter().map(|c| c.end.secs()).collect();
        // The second still running is not read.
        assert_eq!(ends, [102, 103]);
        assert_eq!(
            next[0].records,
            [Record::Mkdir(crate::relpath::RelPath::new("d1").unwrap())]
        );
        assert!(
            matches!(&next[1].records[..], [Record::Gap { reason, .. }] if reason.contains("replaced the first")),
            "{next:?}"
        );
        assert!(b.read_after(Stime::from_secs(103)).unwrap().is_empty());
    }

    #[test]
    fn a_brick_without_changelogs_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let err = GlusterBrick::new(tmp.path())
            .read_after(Stime::from_nanos(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("changelog.changelog"), "{err}");
        assert!(!GlusterBrick::detect(tmp.path()));
    }
}
