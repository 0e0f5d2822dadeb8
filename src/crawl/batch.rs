//! A batch: what one round trip of replication must make true on the slave.

use std::collections::HashSet;

use crate::brick::Inode;
use crate::relpath::RelPath;

/// An entry change, as the master saw it happen. The shipper turns it into a
/// wire `EntryOp`, reading the current type, mode or link target from the
/// brick.
///
/// Apart from the journal's `changelog::Record` because a batch's entries
/// are only what is replayed in order: the journal reader splits each
/// record into its entry, content and attribute parts (the latter two
/// are sets of the batch) and stops at a gap, and a Hybrid Crawl adds
/// prunes, which no journal holds. So the shipper handles every variant,
/// with no content or gap case that cannot happen. Apart from `EntryOp`
/// because it carries no mode, target or device number yet: those are read
/// from the brick when it is sent, not when it was journalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Mkdir(RelPath),
    Create(RelPath),
    Mknod(RelPath),
    Symlink(RelPath),
    /// A new name for a file that has other names.
    Link(RelPath),
    Unlink(RelPath),
    Rmdir(RelPath),
    Rename {
        from: RelPath,
        to: RelPath,
    },
    /// The directory holds exactly these names on the master now; the slave
    /// removes the others (Hybrid Crawl after a gap).
    Prune {
        dir: RelPath,
        keep: Vec<std::ffi::OsString>,
    },
}

impl Entry {
    /// The paths the entry names: a rename's source and destination, a
    /// prune's directory, the path of the others.
    pub fn paths(&self) -> impl Iterator<Item = &RelPath> {
        let (first, second) = match self {
            Entry::Rename { from, to } => (from, Some(to)),
            Entry::Prune { dir, .. } => (dir, None),
            Entry::Mkdir(p)
            | Entry::Create(p)
            | Entry::Mknod(p)
            | Entry::Symlink(p)
            | Entry::Link(p)
            | Entry::Unlink(p)
            | Entry::Rmdir(p) => (p, None),
        };
        std::iter::once(first).chain(second)
    }
}

/// Entries in journal order, then the files whose content must be sent, then
/// the paths whose attributes must be set. Data and meta are sets (a path
/// written 10,000 times is sent once) kept in first-seen order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    entries: Vec<Entry>,
    data: Vec<RelPath>,
    meta: Vec<RelPath>,
    data_seen: HashSet<RelPath>,
    meta_seen: HashSet<RelPath>,
    links: Vec<(Inode, RelPath)>,
    journal: bool,
    quick_check: bool,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push_entry(&mut self, e: Entry) {
        self.entries.push(e);
    }

    pub fn push_data(&mut self, p: RelPath) {
        if self.data_seen.insert(p.clone()) {
            self.data.push(p);
        }
    }

    pub fn push_meta(&mut self, p: RelPath) {
        if self.meta_seen.insert(p.clone()) {
            self.meta.push(p);
        }
    }

    /// A rename happened: pending data and attribute work for `from` (and
    /// anything below it) now concerns the new name.
    pub fn rename_pending(&mut self, from: &RelPath, to: &RelPath) {
        for (list, seen) in [
            (&mut self.data, &mut self.data_seen),
            (&mut self.meta, &mut self.meta_seen),
        ] {
            if !seen.iter().any(|p| p.starts_with(from)) {
                continue;
            }
            for p in list.iter_mut() {
                if let Some(moved) = p.rebase(from, to) {
                    seen.remove(p);
                    seen.insert(moved.clone());
                    *p = moved;
                }
            }
            // Keep first-seen order and drop the duplicates the move made.
            let mut kept = HashSet::new();
            list.retain(|p| kept.insert(p.clone()));
        }
    }

    /// Notes that `path` is a name of the multiply-linked file `inode`
    /// (`(dev, ino)`), even if nothing is sent for it: the shipper then
    /// knows which names to link again when the file's content is replaced.
    pub fn push_link_name(&mut self, inode: Inode, path: RelPath) {
        self.links.push((inode, path));
    }

    /// Marks a batch made from journal files: after its files, the shipper
    /// compares the slave's listing of each directory its entries touched
    /// with the brick's, so the slave drops names the brick does not have
    /// (see `Shipper::check_listings`).
    pub fn mark_journal(&mut self) {
        self.journal = true;
    }

    /// See [`Batch::mark_journal`].
    pub fn is_journal(&self) -> bool {
        self.journal
    }

    /// Marks a batch of a Hybrid Crawl: the slave probably holds most of
    /// its files already, so the shipper asks for their size and mtime and
    /// sends only those that differ (rsync's quick check).
    pub fn mark_quick_check(&mut self) {
        self.quick_check = true;
    }

    /// See [`Batch::mark_quick_check`].
    pub fn quick_check(&self) -> bool {
        self.quick_check
    }

    /// An empty batch of the same kind, with the same link names: what a
    /// filter builds its result from.
    pub fn empty_like(&self) -> Batch {
        Batch {
            journal: self.journal,
            quick_check: self.quick_check,
            links: self.links.clone(),
            ..Batch::default()
        }
    }

    /// The names noted with [`Batch::push_link_name`].
    pub fn link_names(&self) -> &[(Inode, RelPath)] {
        &self.links
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn data(&self) -> &[RelPath] {
        &self.data
    }

    /// Every path whose attributes must be set, including those also in
    /// [`Batch::data`] (the shipper skips those whose content it sent: a
    /// data path may no longer be a regular file when it is shipped).
    pub fn meta(&self) -> &[RelPath] {
        &self.meta
    }

    /// Paths whose attributes must be set and that are not sent as data
    /// (a data transfer carries the attributes already).
    pub fn meta_only(&self) -> impl Iterator<Item = &RelPath> {
        self.meta.iter().filter(|p| !self.data_seen.contains(*p))
    }

    /// Number of operations, for batch sizing.
    pub fn len(&self) -> usize {
        self.entries.len() + self.data.len() + self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn data_and_meta_are_deduplicated_in_order() {
        let mut b = Batch::new();
        for _ in 0..10_000 {
            b.push_data(p("hot"));
        }
        b.push_data(p("cold"));
        b.push_meta(p("hot"));
        b.push_meta(p("dir"));
        b.push_meta(p("dir"));
        assert_eq!(b.data(), &[p("hot"), p("cold")]);
        assert_eq!(b.meta_only().collect::<Vec<_>>(), vec![&p("dir")]);
        assert_eq!(b.len(), 4);
    }
}
