//! Signatures of large files this slave process put in place or signed,
//! kept so that the next `Signature` request for an unchanged copy is
//! answered without reading the whole file again (a 256 MiB file costs a
//! full read and MD4 pass otherwise, on the critical path of every delta).
//!
//! An entry is valid only for the exact inode state it was computed for:
//! device, inode, size, mtime and ctime. Anything that writes to the file,
//! renames it or changes its attributes moves its ctime, which the caller
//! cannot set. A stale entry can still slip through (a write within the
//! same clock tick as the `fstat` that recorded it); the master then builds
//! its pieces against a wrong signature and the whole-file BLAKE3 check
//! refuses the result, which the master heals by a literal resend. So the
//! cache can only cost a retry, never let wrong content into place.
//!
//! Memory is bounded by [`MAX_BYTES`]; the least recently used entries go
//! first.

use std::collections::HashMap;
use std::rc::Rc;

use rustix::fs::Stat;

use crate::relpath::RelPath;

/// Bound of the cached signatures' bytes (about 10 GiB of files at the
/// protocol's 4 KiB signature blocks).
const MAX_BYTES: usize = 32 * 1024 * 1024;

/// Per-piece serialized signatures of one file.
pub(super) type Sigs = Rc<Vec<Vec<u8>>>;

/// The inode state a signature was computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

impl Stamp {
    pub(super) fn of(st: &Stat) -> Self {
        Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

struct Entry {
    stamp: Stamp,
    sigs: Sigs,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
pub(super) struct SigCache {
    entries: HashMap<RelPath, Entry>,
    bytes: usize,
    clock: u64,
}

impl SigCache {
    /// The signatures of `path` if they were computed for exactly `stamp`.
    pub(super) fn get(&mut self, path: &RelPath, stamp: &Stamp) -> Option<Sigs> {
        self.clock += 1;
        let e = self.entries.get_mut(path)?;
        if e.stamp != *stamp {
            return None;
        }
        e.used = self.clock;
        Some(e.sigs.clone())
    }

    /// The signatures last recorded for `path`, whatever its state now: the
    /// ones its last `Signature` answer carried, which a `Same` piece of the
    /// file then sent refers to.
    pub(super) fn last(&self, path: &RelPath) -> Option<Sigs> {
        self.entries.get(path).map(|e| e.sigs.clone())
    }

    pub(super) fn insert(&mut self, path: &RelPath, stamp: Stamp, sigs: Sigs) {
        self.forget(path);
        let bytes: usize = sigs.iter().map(Vec::len).sum();
        if bytes > MAX_BYTES {
            return;
        }
        while self.bytes + bytes > MAX_BYTES {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            self.forget(&oldest);
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.insert(
            path.clone(),
            Entry {
                stamp,
                sigs,
                bytes,
                used: self.clock,
            },
        );
    }

    pub(super) fn forget(&mut self, path: &RelPath) {
        if let Some(e) = self.entries.remove(path) {
            self.bytes -= e.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ino: u64, ctime: i64) -> Stamp {
        Stamp {
            dev: 1,
            ino,
            size: 10,
            mtime: (5, 0),
            ctime: (ctime, 0),
        }
    }

    fn sigs(len: usize) -> Sigs {
        Rc::new(vec![vec![7u8; len]])
    }

    #[test]
    fn an_entry_answers_only_for_its_exact_stamp() {
        let mut c = SigCache::default();
        let p = RelPath::new("a").unwrap();
        c.insert(&p, stamp(1, 100), sigs(3));
        assert!(c.get(&p, &stamp(1, 100)).is_some());
        assert!(c.get(&p, &stamp(1, 101)).is_none(), "ctime moved");
        assert!(c.get(&p, &stamp(2, 100)).is_none(), "another inode");
        assert!(c.last(&p).is_some());
        c.forget(&p);
        assert!(c.last(&p).is_none());
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn the_least_recently_used_entries_make_room() {
        let mut c = SigCache::default();
        let (a, b, d) = (
            RelPath::new("a").unwrap(),
            RelPath::new("b").unwrap(),
            RelPath::new("d").unwrap(),
        );
        c.insert(&a, stamp(1, 1), sigs(MAX_BYTES / 2));
        c.insert(&b, stamp(2, 1), sigs(MAX_BYTES / 2));
        assert!(c.get(&a, &stamp(1, 1)).is_some());
        c.insert(&d, stamp(3, 1), sigs(MAX_BYTES / 2));
        assert!(c.last(&a).is_some(), "recently used");
        assert!(c.last(&b).is_none(), "evicted");
        assert!(c.bytes <= MAX_BYTES);
        c.insert(&b, stamp(2, 1), sigs(MAX_BYTES + 1));
        assert!(c.last(&b).is_none(), "too large to keep");
    }
}
