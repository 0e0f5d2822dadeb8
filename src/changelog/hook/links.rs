//! Writes through a hard link whose name then goes.
//!
//! inotify reports a write under the name it went through only. When a file
//! has several names and the one written through is removed (or replaced)
//! before the shipper reads it, the new content is in no record under any
//! name that still exists: `link g l; write l; rm l` changes `g` silently.
//! So the recorder remembers the names written through while another name
//! may lead to the same file, and when such a name goes it records a Gap:
//! the Hybrid Crawl that heals it finds `g` changed since stime.
//!
//! "May": a name the recorder saw made as a new file of one link, with no
//! link made anywhere since, has no other name; any other name written
//! through that is already gone when its write is handled could have had
//! one (a link made and removed before the recorder looked at it), so it
//! counts. Ordinary files written and removed after the recorder saw them
//! cost nothing.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use crate::relpath::RelPath;

/// How a Gap that this module causes begins (a routine gap: nothing was
/// lost by the hook, the crawl finds the other names).
pub const LINK_GAP: &str = "a file was written through a hard link that is gone";

/// Most names remembered in each set; beyond it the fresh names are
/// forgotten (then more writes count as through links: only a cost).
const MAX_NAMES: usize = 100_000;

#[derive(Debug, Default)]
pub(super) struct LinkWatch {
    /// Names seen made as new files of one link, with the number of links
    /// made before: no other name leads to such a file unless a link was
    /// made since.
    fresh: HashMap<RelPath, u64>,
    /// Links made (or names already gone when their creation was handled,
    /// which could have been links) since the hook started.
    links_made: u64,
    /// Names written through while another name may lead to their file.
    written: HashSet<RelPath>,
}

impl LinkWatch {
    /// `rel` appeared; `md` is its lstat, `None` if it was gone already.
    pub(super) fn created(&mut self, rel: &RelPath, md: Option<&Metadata>) {
        self.written.remove(rel);
        match md {
            Some(m) if m.is_file() && m.nlink() == 1 => {
                if self.fresh.len() >= MAX_NAMES {
                    self.fresh.clear();
                }
                self.fresh.insert(rel.clone(), self.links_made);
            }
            Some(m) if m.is_file() => {
                self.links_made += 1;
                self.fresh.remove(rel);
            }
            Some(_) => {
                self.fresh.remove(rel);
            }
            None => {
                self.links_made += 1;
                self.fresh.remove(rel);
            }
        }
    }

    /// `rel` was written through; `md` is its lstat now, `None` if gone.
    pub(super) fn wrote(&mut self, rel: &RelPath, md: Option<&Metadata>) {
        let linked = match md {
            Some(m) => m.is_file() && m.nlink() > 1,
            None => self.fresh.get(rel) != Some(&self.links_made),
        };
        if linked && self.written.len() < MAX_NAMES {
            self.written.insert(rel.clone());
        }
    }

    /// `rel` was removed (or left the brick): true if a write through it
    /// may be in no other name's record.
    pub(super) fn removed(&mut self, rel: &RelPath) -> bool {
        self.fresh.remove(rel);
        self.forget_below(rel) | self.written.remove(rel)
    }

    /// `from` was renamed to `to` (replacing it, if it existed): true if
    /// the replaced `to` had been written through as a link.
    pub(super) fn renamed(&mut self, from: &RelPath, to: &RelPath) -> bool {
        let replaced = self.removed(to);
        let moved: Vec<RelPath> = self
            .written
            .iter()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for p in moved {
            self.written.remove(&p);
            if let Some(q) = p.rebase(from, to) {
                self.written.insert(q);
            }
        }
        match self.fresh.remove(from) {
            Some(n) => {
                self.fresh.insert(to.clone(), n);
            }
            // A directory: what was fresh below it is forgotten (rare).
            None => self.fresh.retain(|p, _| !p.starts_with(from)),
        }
        replaced
    }

    /// Forgets the names strictly below `dir`; true if one was written
    /// through as a link (a directory removed or replaced with them).
    fn forget_below(&mut self, dir: &RelPath) -> bool {
        let before = self.written.len();
        self.written.retain(|p| p == dir || !p.starts_with(dir));
        self.fresh.retain(|p, _| p == dir || !p.starts_with(dir));
        self.written.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// The lstat of a file of `links` names.
    fn file_of(links: u64) -> Metadata {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("0"), b"x").unwrap();
        for n in 1..links {
            fs::hard_link(d.path().join("0"), d.path().join(n.to_string())).unwrap();
        }
        fs::symlink_metadata(d.path().join("0")).unwrap()
    }

    #[test]
    fn a_fresh_file_written_and_removed_needs_no_crawl() {
        let md = file_of(1);
        let mut w = LinkWatch::default();
        w.created(&p("f"), Some(&md));
        w.wrote(&p("f"), Some(&md));
        w.wrote(&p("f"), None);
        assert!(!w.removed(&p("f")));
    }

    #[test]
    fn a_write_through_a_link_that_goes_needs_a_crawl() {
        let md = file_of(2);
        let mut w = LinkWatch::default();
        w.created(&p("l"), Some(&md));
        w.wrote(&p("l"), Some(&md));
        assert!(w.removed(&p("l")));
        // Said once.
        assert!(!w.removed(&p("l")));
    }

    #[test]
    fn a_name_gone_before_it_was_seen_counts_as_a_link() {
        let mut w = LinkWatch::default();
        w.created(&p("l"), None);
        w.wrote(&p("l"), None);
        assert!(w.removed(&p("l")));
        // A fresh file gone when its write is handled, after a link was
        // made elsewhere: it may have been linked to.
        let one = file_of(1);
        w.created(&p("f"), Some(&one));
        w.created(&p("other"), None);
        w.wrote(&p("f"), None);
        assert!(w.removed(&p("f")));
    }

    #[test]
    fn marks_follow_renames_and_go_with_their_directory() {
        let md = file_of(2);
        let mut w = LinkWatch::default();
        w.wrote(&p("a/l"), Some(&md));
        assert!(!w.renamed(&p("a"), &p("b")));
        assert!(!w.removed(&p("a/l")));
        assert!(w.removed(&p("b")), "rm -rf of the directory holding it");
        // Replaced by a rename.
        w.wrote(&p("x"), Some(&md));
        assert!(w.renamed(&p("y"), &p("x")));
    }
}
