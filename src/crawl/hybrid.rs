//! Hybrid Crawl: find what to send by walking the brick instead of reading
//! the journal. Used for the first sync, after a journal gap, and to resend a
//! subtree the slave turned out not to have.
//!
//! The walk is depth-first with an explicit stack and hands out bounded
//! batches, so memory grows with the depth and the widest directory, not with
//! the tree. A directory's attributes are queued after everything below it,
//! so its mtime is set last. An unreadable entry is recorded in
//! [`HybridCrawl::errors`] and the walk goes on.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use super::batch::{Batch, Entry};
use crate::brick::volume::is_dht_link;
use crate::brick::Inode;
use crate::relpath::RelPath;
use crate::session::Stime;

struct Level {
    dir: RelPath,
    children: std::vec::IntoIter<OsString>,
}

pub struct HybridCrawl {
    root: PathBuf,
    start: Option<RelPath>,
    exclude: Vec<PathBuf>,
    since: Option<Stime>,
    prune: bool,
    stack: Vec<Level>,
    errors: Vec<String>,
}

/// Directories with more entries than this are not pruned (the name list
/// must fit in one protocol frame); the error list says so.
const PRUNE_MAX_ENTRIES: usize = 100_000;

impl HybridCrawl {
    /// Walks `root/start`. With `since`, files and symlinks whose ctime is
    /// older are skipped (they are already on the slave); directories are
    /// always visited. `exclude` holds absolute paths not to descend into.
    pub fn new(root: PathBuf, start: RelPath, exclude: Vec<PathBuf>, since: Option<Stime>) -> Self {
        HybridCrawl {
            root,
            start: Some(start),
            exclude,
            since,
            prune: false,
            stack: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Also make the slave delete what the brick no longer has, directory by
    /// directory (for healing a gap; pointless on a first sync).
    pub fn with_prune(mut self) -> Self {
        self.prune = true;
        self
    }

    /// Problems met so far (unreadable directories or entries), with paths.
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// The next batch of at most about `max_ops` operations; `None` when the
    /// walk is complete.
    pub fn next_batch(&mut self, max_ops: usize) -> Option<Batch> {
        let mut batch = Batch::new();
        if let Some(start) = self.start.take() {
            self.visit(start, &mut batch);
        }
        while batch.len() < max_ops.max(1) {
            let Some(level) = self.stack.last_mut() else {
                break;
            };
            match level.children.next() {
                Some(name) => {
                    let dir = level.dir.clone();
                    match dir.join(&name) {
                        Ok(child) => self.visit(child, &mut batch),
                        Err(e) => self.errors.push(format!("skipping entry in {dir}: {e}")),
                    }
                }
                None => {
                    let done = self.stack.pop().map(|l| l.dir);
                    if let Some(dir) = done {
                        batch.push_meta(dir);
                    }
                }
            }
        }
        if batch.is_empty() && self.stack.is_empty() {
            None
        } else {
            Some(batch)
        }
    }

    fn changed_since(&self, md: &fs::Metadata) -> bool {
        match self.since {
            None => true,
            Some(s) => Stime::from_nanos(md.ctime() * 1_000_000_000 + md.ctime_nsec()) >= s,
        }
    }

    fn visit(&mut self, path: RelPath, batch: &mut Batch) {
        let full = path.under(&self.root);
        if self.exclude.iter().any(|x| full.starts_with(x)) {
            return;
        }
        let md = match fs::symlink_metadata(&full) {
            Ok(md) => md,
            // Gone since it was listed: the journal describes what happened.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return
            }
            Err(e) => {
                self.errors
                    .push(format!("cannot stat {}: {e}", full.display()));
                return;
            }
        };
        let ft = md.file_type();
        // A DHT link file stands for a name whose data another brick holds
        // (and ships): never sent.
        if is_dht_link(&full, &md) {
            return;
        }
        if ft.is_file() && md.nlink() > 1 {
            batch.push_link_name(Inode::of(&md), path.clone());
        }
        if ft.is_dir() {
            let mut names = match fs::read_dir(&full) {
                Ok(rd) => rd
                    .filter_map(|e| match e {
                        Ok(e) => Some(e.file_name()),
                        Err(err) => {
                            self.errors
                                .push(format!("cannot list {}: {err}", full.display()));
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
                Err(e) => {
                    self.errors
                        .push(format!("cannot list {}: {e}", full.display()));
                    return;
                }
            };
            names.sort();
            if !path.is_root() {
                batch.push_entry(Entry::Mkdir(path.clone()));
            }
            if self.prune && names.len() <= PRUNE_MAX_ENTRIES {
                let keep = names
                    .iter()
                    .filter(|n| !self.exclude.contains(&full.join(n)))
                    .cloned()
                    .collect();
                batch.push_entry(Entry::Prune {
                    dir: path.clone(),
                    keep,
                });
            } else if self.prune {
                self.errors.push(format!(
                    "not removing stale entries of {} on the slave: more than {PRUNE_MAX_ENTRIES} entries",
                    full.display()
                ));
            }
            self.stack.push(Level {
                dir: path,
                children: names.into_iter(),
            });
        } else if !self.changed_since(&md) {
        } else if ft.is_file() {
            batch.push_data(path);
        } else if ft.is_symlink() {
            batch.push_entry(Entry::Symlink(path.clone()));
            batch.push_meta(path);
        } else if ft.is_fifo() || ft.is_block_device() || ft.is_char_device() || ft.is_socket() {
            batch.push_entry(Entry::Mknod(path.clone()));
            batch.push_meta(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn all(mut c: HybridCrawl, max: usize) -> (Vec<Entry>, Vec<RelPath>, Vec<RelPath>, usize) {
        let (mut e, mut d, mut m, mut n) = (vec![], vec![], vec![], 0);
        while let Some(b) = c.next_batch(max) {
            n += 1;
            e.extend_from_slice(b.entries());
            d.extend_from_slice(b.data());
            m.extend(b.meta_only().cloned());
        }
        (e, d, m, n)
    }

    #[test]
    fn walks_everything_in_bounded_batches_with_dirs_meta_last() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/b/f"), "x").unwrap();
        fs::write(r.join("top"), "y").unwrap();
        std::os::unix::fs::symlink("../nowhere", r.join("a/l")).unwrap();
        fs::create_dir(r.join("skip")).unwrap();
        fs::write(r.join("skip/secret"), "z").unwrap();
        let c = HybridCrawl::new(r.to_owned(), RelPath::root(), vec![r.join("skip")], None);
        let (e, d, m, n) = all(c, 2);
        assert_eq!(
            e,
            vec![
                Entry::Mkdir(p("a")),
                Entry::Mkdir(p("a/b")),
                Entry::Symlink(p("a/l"))
            ]
        );
        assert_eq!(d, vec![p("a/b/f"), p("top")]);
        assert_eq!(m, vec![p("a/b"), p("a/l"), p("a"), RelPath::root()]);
        assert!(n >= 3, "batches should be bounded, got {n}");
    }

    #[test]
    fn prune_lists_what_the_master_has() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/f"), "x").unwrap();
        let c = HybridCrawl::new(t.path().to_owned(), RelPath::root(), vec![], None).with_prune();
        let (e, _, _, _) = all(c, 100);
        assert_eq!(
            e,
            vec![
                Entry::Prune {
                    dir: RelPath::root(),
                    keep: vec!["d".into()]
                },
                Entry::Mkdir(p("d")),
                Entry::Prune {
                    dir: p("d"),
                    keep: vec!["f".into()]
                },
            ]
        );
    }

    #[test]
    fn since_skips_old_files_but_not_dirs() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/old"), "x").unwrap();
        let future = Stime::now().minus(std::time::Duration::from_secs(0));
        let future = Stime::from_nanos(future.nanos() + 3_600_000_000_000);
        let c = HybridCrawl::new(t.path().to_owned(), RelPath::root(), vec![], Some(future));
        let (e, d, _, _) = all(c, 100);
        assert_eq!(e, vec![Entry::Mkdir(p("d"))]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_subtree_or_single_file_can_be_walked() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/f"), "x").unwrap();
        let c = HybridCrawl::new(t.path().to_owned(), p("d/f"), vec![], None);
        let (e, d, _, _) = all(c, 100);
        assert!(e.is_empty());
        assert_eq!(d, vec![p("d/f")]);
        let c = HybridCrawl::new(t.path().to_owned(), p("missing"), vec![], None);
        assert_eq!(all(c, 100).3, 0);
    }
}
