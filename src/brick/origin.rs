//! Which brick inode each entry on the slave was last made from.
//!
//! The shipper reads content and attributes from the brick as it is when a
//! batch ships, which can be later than the journal position of the batch.
//! When a later batch then replays a rename, the slave moves that newer
//! content to the rename's destination, where the brick has another file:
//! two files swapped on the brick after their data was journalled (the data
//! batch already sent them swapped, the replayed swap swaps them back), or
//! a directory renamed and a new one made under the old name. Nothing in the
//! journal would send those destinations again.
//!
//! So the shipper notes, per slave path, the `(dev, ino)` of the brick entry
//! it sent, moves the notes with every replayed rename and drops them with
//! every removal. After the entries of a batch, every path at or below a
//! rename destination whose note names another inode than the one the brick
//! has there now is sent again. A path without a note was sent long enough
//! ago to be in its place already.
//!
//! Memory is bounded: notes live in two generations of at most
//! [`ORIGIN_GENERATION`] entries; when the newer one is full, the older one
//! is dropped. Only notes made while the journal was behind the brick
//! matter, so losing the oldest ones first is safe unless more than that
//! many entries were sent while one rename waited in the journal.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::Inode;
use crate::relpath::RelPath;

/// Most notes in one generation (two are kept).
pub const ORIGIN_GENERATION: usize = 200_000;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct OriginIndex {
    newer: BTreeMap<Vec<u8>, Inode>,
    older: BTreeMap<Vec<u8>, Inode>,
}

/// The keys at or below `path`: itself, then `path/`..`path0` (`0` follows
/// `/`), which sorts every descendant together. The root covers all.
fn subtree(map: &BTreeMap<Vec<u8>, Inode>, path: &RelPath) -> Vec<Vec<u8>> {
    let p = path.as_bytes();
    if p.is_empty() {
        return map.keys().cloned().collect();
    }
    let mut lo = p.to_vec();
    lo.push(b'/');
    let mut hi = p.to_vec();
    hi.push(b'0');
    let mut out: Vec<Vec<u8>> = map.get(p).map(|_| p.to_vec()).into_iter().collect();
    out.extend(map.range(lo..hi).map(|(k, _)| k.clone()));
    out
}

impl OriginIndex {
    /// The slave's `path` was just made from the brick entry `inode`.
    pub fn made(&mut self, path: &RelPath, inode: Inode) {
        if self.newer.len() >= ORIGIN_GENERATION {
            self.older = std::mem::take(&mut self.newer);
        }
        self.older.remove(path.as_bytes());
        self.newer.insert(path.as_bytes().to_vec(), inode);
    }

    /// The slave's `path` is the brick entry of `path` as it is now.
    pub fn made_from_brick(&mut self, brick: &Path, path: &RelPath) {
        match fs::symlink_metadata(path.under(brick)) {
            Ok(m) => self.made(path, Inode::of(&m)),
            Err(_) => self.forget(path),
        }
    }

    /// The brick entry the slave's `path` was last made from, if noted.
    pub fn inode_of(&self, path: &RelPath) -> Option<Inode> {
        self.newer
            .get(path.as_bytes())
            .or_else(|| self.older.get(path.as_bytes()))
            .copied()
    }

    /// The slave's `path` and everything below it are gone or unknown.
    pub fn forget(&mut self, path: &RelPath) {
        for map in [&mut self.newer, &mut self.older] {
            for k in subtree(map, path) {
                map.remove(&k);
            }
        }
    }

    /// The slave's `path` is now another name of what `target` was made from.
    pub fn link(&mut self, path: &RelPath, target: &RelPath) {
        match self.inode_of(target) {
            Some(inode) => self.made(path, inode),
            None => self.forget(path),
        }
    }

    /// A rename replayed on the slave: what was at or below `from` is now
    /// at or below `to`, and what was at `to` is gone.
    pub fn rename(&mut self, from: &RelPath, to: &RelPath) {
        if from == to || to.starts_with(from) {
            return;
        }
        let mut moved = Vec::new();
        for map in [&mut self.older, &mut self.newer] {
            for k in subtree(map, from) {
                if let Some(v) = map.remove(&k) {
                    moved.push((k, v));
                }
            }
        }
        self.forget(to);
        for (k, v) in moved {
            let Ok(old) = RelPath::new(k) else { continue };
            if let Some(new) = old.rebase(from, to) {
                self.made(&new, v);
            }
        }
    }

    /// The noted paths made from any of `inodes` (one pass over all notes:
    /// callers gather the inodes of a whole batch first).
    pub fn names_of(&self, inodes: &std::collections::HashSet<Inode>) -> Vec<(Inode, RelPath)> {
        if inodes.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (older, map) in [(false, &self.newer), (true, &self.older)] {
            for (k, v) in map {
                if inodes.contains(v) && !(older && self.newer.contains_key(k)) {
                    if let Ok(p) = RelPath::new(k.clone()) {
                        out.push((*v, p));
                    }
                }
            }
        }
        out
    }

    /// The noted paths at or below `path` whose brick entry is another one
    /// now (paths the brick no longer has are left to later records).
    pub fn stale_under(&self, brick: &Path, path: &RelPath) -> Vec<(RelPath, fs::Metadata)> {
        let mut out = Vec::new();
        for (older, map) in [(false, &self.newer), (true, &self.older)] {
            for k in subtree(map, path) {
                // `made` keeps one note per path, but stay on the safe side.
                if older && self.newer.contains_key(&k) {
                    continue;
                }
                let Ok(rel) = RelPath::new(k.clone()) else {
                    continue;
                };
                let Ok(md) = fs::symlink_metadata(rel.under(brick)) else {
                    continue;
                };
                if map.get(&k) != Some(&Inode::of(&md)) {
                    out.push((rel, md));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn ino(path: &Path) -> Inode {
        let m = fs::symlink_metadata(path).unwrap();
        Inode::of(&m)
    }

    #[test]
    fn a_swap_replayed_after_its_data_is_found_stale() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        fs::write(b.join("f"), b"f").unwrap();
        fs::create_dir(b.join("a")).unwrap();
        fs::write(b.join("a/c"), b"c").unwrap();
        // The brick swaps them, then the shipper sends both as they are now.
        fs::rename(b.join("f"), b.join("tmp")).unwrap();
        fs::rename(b.join("a/c"), b.join("f")).unwrap();
        fs::rename(b.join("tmp"), b.join("a/c")).unwrap();
        let mut ix = OriginIndex::default();
        ix.made_from_brick(b, &p("f"));
        ix.made_from_brick(b, &p("a/c"));
        assert!(ix.stale_under(b, &RelPath::root()).is_empty());
        // The swap is replayed on the slave: its copies are now swapped.
        ix.rename(&p("f"), &p("tmp"));
        ix.rename(&p("a/c"), &p("f"));
        ix.rename(&p("tmp"), &p("a/c"));
        let stale: Vec<RelPath> = ix
            .stale_under(b, &RelPath::root())
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(stale, vec![p("a/c"), p("f")]);
        let wanted = [ino(&b.join("f"))].into_iter().collect();
        assert_eq!(ix.names_of(&wanted), vec![(ino(&b.join("f")), p("a/c"))]);
    }

    #[test]
    fn directory_renames_move_the_notes_below_and_removals_drop_them() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        fs::create_dir_all(b.join("d/sub")).unwrap();
        fs::write(b.join("d/sub/x"), b"x").unwrap();
        fs::write(b.join("d-y"), b"y").unwrap();
        let mut ix = OriginIndex::default();
        for n in ["d", "d/sub", "d/sub/x", "d-y"] {
            ix.made_from_brick(b, &p(n));
        }
        fs::rename(b.join("d"), b.join("e")).unwrap();
        ix.rename(&p("d"), &p("e"));
        assert!(ix.stale_under(b, &RelPath::root()).is_empty());
        assert_eq!(
            ix.newer.get(&b"e/sub/x"[..]),
            Some(&ino(&b.join("e/sub/x")))
        );
        assert_eq!(ix.newer.get(&b"d-y"[..]), Some(&ino(&b.join("d-y"))));
        // A new `d/sub/x` on the brick does not concern the slave's `e`.
        fs::create_dir_all(b.join("d/sub")).unwrap();
        fs::write(b.join("d/sub/x"), b"new").unwrap();
        assert!(ix.stale_under(b, &p("e")).is_empty());
        ix.forget(&p("e"));
        assert_eq!(ix.newer.len(), 1);
    }

    #[test]
    fn generations_bound_the_notes() {
        let mut ix = OriginIndex::default();
        for i in 0..(2 * ORIGIN_GENERATION + 10) {
            ix.made(
                &p(&format!("f{i}")),
                Inode {
                    dev: 1,
                    ino: i as u64,
                },
            );
        }
        assert!(ix.newer.len() + ix.older.len() <= 2 * ORIGIN_GENERATION);
        // The newest notes are kept, and a link copies a note.
        let last = format!("f{}", 2 * ORIGIN_GENERATION + 9);
        ix.link(&p("copy"), &p(&last));
        assert_eq!(
            ix.newer.get(&b"copy"[..]),
            Some(&Inode {
                dev: 1,
                ino: (2 * ORIGIN_GENERATION + 9) as u64
            })
        );
    }
}
