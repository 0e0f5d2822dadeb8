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
//! An empty file that a create entry made is a file of its own on the
//! slave, even where the brick's file has other names (a hard link made
//! soon after): its note says so. Once a rename moves such a copy to a
//! name whose brick file is multiply linked, it stands for a file it is no
//! link of, so it is sent again (and its other names linked to it).
//!
//! Memory is bounded: notes live in two generations of at most
//! [`ORIGIN_GENERATION`] entries; when the newer one is full, the older one
//! is dropped. Only notes made while the journal was behind the brick
//! matter, so losing the oldest ones first is safe unless more than that
//! many entries were sent while one rename waited in the journal.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Inode;
use crate::relpath::RelPath;

/// Most notes in one generation (two are kept).
pub const ORIGIN_GENERATION: usize = 200_000;

/// What the slave's entry at a path was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The brick entry's content (or attributes) as sent, or a link to a
    /// name made so.
    Sent(Inode),
    /// An empty file made by a create entry: on the slave, a file of its
    /// own, whatever other names the brick's file has.
    Alone(Inode),
}

impl Origin {
    fn inode(self) -> Inode {
        match self {
            Origin::Sent(i) | Origin::Alone(i) => i,
        }
    }
}

type Notes = BTreeMap<Vec<u8>, Origin>;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct OriginIndex {
    newer: Notes,
    older: Notes,
}

/// The keys at or below `path`: itself, then `path/`..`path0` (`0` follows
/// `/`), which sorts every descendant together. The root covers all.
fn subtree(map: &Notes, path: &RelPath) -> Vec<Vec<u8>> {
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
    fn note(&mut self, path: &RelPath, origin: Origin) {
        if self.newer.len() >= ORIGIN_GENERATION {
            self.older = std::mem::take(&mut self.newer);
        }
        self.older.remove(path.as_bytes());
        self.newer.insert(path.as_bytes().to_vec(), origin);
    }

    fn origin(&self, path: &RelPath) -> Option<Origin> {
        self.newer
            .get(path.as_bytes())
            .or_else(|| self.older.get(path.as_bytes()))
            .copied()
    }

    /// The slave's `path` was just made from the brick entry `inode`.
    pub fn made(&mut self, path: &RelPath, inode: Inode) {
        self.note(path, Origin::Sent(inode));
    }

    /// The slave's `path` was found to hold the content of the brick entry
    /// `inode`, or just got its attributes: a copy made alone stays one.
    pub fn confirmed(&mut self, path: &RelPath, inode: Inode) {
        if self.origin(path) != Some(Origin::Alone(inode)) {
            self.made(path, inode);
        }
    }

    /// The slave's `path` is the brick entry of `path` as it is now.
    pub fn made_from_brick(&mut self, brick: &Path, path: &RelPath) {
        match fs::symlink_metadata(path.under(brick)) {
            Ok(m) => self.made(path, Inode::of(&m)),
            Err(_) => self.forget(path),
        }
    }

    /// The slave's `path` is a new empty file of its own, for the brick's
    /// file at `path` as it is now.
    pub fn created_from_brick(&mut self, brick: &Path, path: &RelPath) {
        match fs::symlink_metadata(path.under(brick)) {
            Ok(m) => self.note(path, Origin::Alone(Inode::of(&m))),
            Err(_) => self.forget(path),
        }
    }

    /// The brick entry the slave's `path` was last made from, if noted.
    pub fn inode_of(&self, path: &RelPath) -> Option<Inode> {
        self.origin(path).map(Origin::inode)
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
                self.note(&new, v);
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
                if inodes.contains(&v.inode()) && !(older && self.newer.contains_key(k)) {
                    if let Ok(p) = RelPath::new(k.clone()) {
                        out.push((v.inode(), p));
                    }
                }
            }
        }
        out
    }

    /// The noted paths at or below `path` whose brick entry is another one
    /// now, or a file of more than `own_links` names where the slave has a
    /// copy made alone; and `path` itself, unnoted, if it is such a file
    /// (paths the brick no longer has are left to later records).
    /// `own_links` counts the names every file has: 1, or 2 on a GlusterFS
    /// brick (its handle).
    pub fn stale_under(
        &self,
        brick: &Path,
        path: &RelPath,
        own_links: u64,
    ) -> Vec<(RelPath, fs::Metadata)> {
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
                let stale = match map.get(&k) {
                    Some(Origin::Sent(i)) => *i != Inode::of(&md),
                    Some(Origin::Alone(i)) => {
                        *i != Inode::of(&md) || (md.is_file() && md.nlink() > own_links)
                    }
                    None => false,
                };
                if stale {
                    out.push((rel, md));
                }
            }
        }
        // A renamed file of several names, unnoted (its note given up, or
        // dropped by an earlier rename over a directory above it): which
        // copy the rename moved there cannot be told. Only the destination
        // itself: a renamed directory's unnoted files were sent long ago.
        if self.origin(path).is_none() {
            if let Ok(md) = fs::symlink_metadata(path.under(brick)) {
                if md.is_file() && md.nlink() > own_links {
                    out.push((path.clone(), md));
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
        assert!(ix.stale_under(b, &RelPath::root(), 1).is_empty());
        // The swap is replayed on the slave: its copies are now swapped.
        ix.rename(&p("f"), &p("tmp"));
        ix.rename(&p("a/c"), &p("f"));
        ix.rename(&p("tmp"), &p("a/c"));
        let stale: Vec<RelPath> = ix
            .stale_under(b, &RelPath::root(), 1)
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
        assert!(ix.stale_under(b, &RelPath::root(), 1).is_empty());
        assert_eq!(
            ix.newer.get(&b"e/sub/x"[..]),
            Some(&Origin::Sent(ino(&b.join("e/sub/x"))))
        );
        assert_eq!(
            ix.newer.get(&b"d-y"[..]),
            Some(&Origin::Sent(ino(&b.join("d-y"))))
        );
        // A new `d/sub/x` on the brick does not concern the slave's `e`.
        fs::create_dir_all(b.join("d/sub")).unwrap();
        fs::write(b.join("d/sub/x"), b"new").unwrap();
        assert!(ix.stale_under(b, &p("e"), 1).is_empty());
        ix.forget(&p("e"));
        assert_eq!(ix.newer.len(), 1);
    }

    #[test]
    fn a_copy_made_alone_is_stale_where_a_rename_makes_it_a_hard_link() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        fs::write(b.join("f"), b"").unwrap();
        fs::write(b.join("g"), b"").unwrap();
        let mut ix = OriginIndex::default();
        ix.created_from_brick(b, &p("f"));
        ix.created_from_brick(b, &p("g"));
        ix.confirmed(&p("f"), ino(&b.join("f")));
        // One name each: the copies made alone are what the brick has.
        assert!(ix.stale_under(b, &RelPath::root(), 1).is_empty());
        // `f` gets a second name on the brick, then is renamed; the rename
        // is replayed on the slave, where `f` is a file of its own.
        fs::hard_link(b.join("f"), b.join("d")).unwrap();
        fs::rename(b.join("f"), b.join("x")).unwrap();
        ix.rename(&p("f"), &p("x"));
        let stale: Vec<RelPath> = ix
            .stale_under(b, &RelPath::root(), 1)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(stale, vec![p("x")]);
        // On a GlusterFS brick the handle is one of every file's names.
        assert!(ix.stale_under(b, &RelPath::root(), 2).is_empty());
        // Sent (or linked to what was sent), it is a link on the slave too.
        ix.made(&p("x"), ino(&b.join("x")));
        assert!(ix.stale_under(b, &RelPath::root(), 1).is_empty());
        // Unnoted, a renamed file of several names is sent again; a file
        // of one name, or one below a renamed directory, is not.
        ix.forget(&p("x"));
        assert_eq!(ix.stale_under(b, &p("x"), 1).len(), 1);
        assert!(ix.stale_under(b, &p("g"), 1).is_empty());
        assert!(ix.stale_under(b, &RelPath::root(), 1).is_empty());
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
            Some(&Origin::Sent(Inode {
                dev: 1,
                ino: (2 * ORIGIN_GENERATION + 9) as u64
            }))
        );
    }
}
