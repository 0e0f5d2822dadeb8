//! What a brick's worker keeps between batches: the names of multiply
//! linked files, the origin of each slave entry, the files owed.

use super::*;

/// The names of multiply-linked files of one brick, by `(dev, ino)`, as far
/// as the master has seen them (journal entries, data sent, Hybrid Crawl
/// walks). Every name is checked against the brick before it is used, so a
/// stale one costs nothing; one never seen is not relinked. Bounded by
/// [`LINK_INDEX_MAX`] names.
#[derive(Debug, Default)]
pub struct LinkIndex {
    by_inode: HashMap<Inode, BTreeSet<RelPath>>,
    names: usize,
    full_warned: bool,
}

/// Most names a [`LinkIndex`] holds (memory stays bounded; beyond it, new
/// hard links may arrive as copies, and a warning says so).
pub const LINK_INDEX_MAX: usize = 1_000_000;

impl LinkIndex {
    /// Remembers that `path` is a name of `inode`.
    pub fn note(&mut self, inode: Inode, path: &RelPath) {
        if self.names >= LINK_INDEX_MAX {
            if !self.full_warned {
                self.full_warned = true;
                tracing::warn!(
                    "more than {LINK_INDEX_MAX} hard-linked names: further hard links may be replicated as copies"
                );
            }
            return;
        }
        if self.by_inode.entry(inode).or_default().insert(path.clone()) {
            self.names += 1;
        }
    }

    /// Whether any name of `inode` is known.
    pub fn knows(&self, inode: Inode) -> bool {
        self.by_inode.contains_key(&inode)
    }

    /// A rename: names at or below `from` are now below `to`.
    pub fn rename(&mut self, from: &RelPath, to: &RelPath) {
        for names in self.by_inode.values_mut() {
            if !names.iter().any(|n| n.starts_with(from)) {
                continue;
            }
            let moved: BTreeSet<RelPath> = names
                .iter()
                .map(|n| n.rebase(from, to).unwrap_or_else(|| n.clone()))
                .collect();
            self.names -= names.len() - moved.len();
            *names = moved;
        }
    }

    /// The known names of `inode` that are still names of it on `brick`
    /// (forgetting the others).
    pub fn verified(&mut self, brick: &Path, inode: Inode) -> Vec<RelPath> {
        let Some(names) = self.by_inode.get_mut(&inode) else {
            return Vec::new();
        };
        let before = names.len();
        names.retain(|n| {
            fs::symlink_metadata(n.under(brick))
                .is_ok_and(|m| m.is_file() && Inode::of(&m) == inode)
        });
        self.names -= before - names.len();
        let out: Vec<RelPath> = names.iter().cloned().collect();
        if names.is_empty() {
            self.by_inode.remove(&inode);
        }
        out
    }
}

/// What the shipper remembers about one brick between batches; owned by
/// the brick's worker, so it outlives reconnections.
#[derive(Debug, Default)]
pub struct ShipMemory {
    /// Names of multiply-linked files.
    pub links: LinkIndex,
    /// Which brick entry each slave path was made from.
    pub origins: OriginIndex,
    /// Files (`(dev, ino)`) whose send was abandoned because they changed
    /// while read. A write journals the file again, but a rename only
    /// journals the rename: the slave would move stale content into place.
    /// So every later batch sends such a file under whatever name it has.
    pub(super) owed: HashSet<Inode>,
}

/// Most abandoned files remembered (abandons are rare; past this, the
/// oldest knowledge is dropped rather than memory grown).
pub(super) const OWED_MAX: usize = 100_000;

impl ShipMemory {
    pub(super) fn owe(&mut self, md: &fs::Metadata) {
        if self.owed.len() >= OWED_MAX {
            self.owed.clear();
        }
        self.owed.insert(Inode::of(md));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn link_index_follows_renames_and_forgets_stale_names() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        fs::create_dir(b.join("d")).unwrap();
        fs::write(b.join("d/a"), b"x").unwrap();
        fs::hard_link(b.join("d/a"), b.join("c")).unwrap();
        let m = fs::metadata(b.join("c")).unwrap();
        let inode = Inode::of(&m);
        let mut ix = LinkIndex::default();
        ix.note(inode, &p("d/a"));
        ix.note(inode, &p("c"));
        ix.note(inode, &p("c"));
        assert_eq!(ix.names, 2);
        fs::rename(b.join("d"), b.join("e")).unwrap();
        ix.rename(&p("d"), &p("e"));
        assert_eq!(ix.verified(b, inode), vec![p("c"), p("e/a")]);
        fs::remove_file(b.join("c")).unwrap();
        assert_eq!(ix.verified(b, inode), vec![p("e/a")]);
        assert_eq!(ix.names, 1);
    }
}
