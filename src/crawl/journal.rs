//! History and Changelog Crawl: journal records after stime, in order,
//! turned into batches. The records come from a [`ChangeSource`]: georep's
//! own journal (the notify hook) or the brick's GlusterFS changelogs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::batch::{Batch, Entry};
use crate::changelog::glusterfs::GlusterBrick;
use crate::changelog::{self, Changelog, ChangelogError, Record};
use crate::relpath::RelPath;
use crate::session::Stime;

/// One batch made from consecutive journal files.
#[derive(Debug)]
pub struct JournalBatch {
    pub batch: Batch,
    /// End time of the last journal file included: stime after it lands.
    pub through: Stime,
    /// The journal says events may have been lost, or a file was corrupt:
    /// a Hybrid Crawl must heal it.
    pub gap: Option<Gap>,
}

/// Why a Hybrid Crawl must follow a journal batch, and what it must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The first reason in the batch (the one shown to the operator).
    pub reason: String,
    /// Changes since then may be in no record, even ones before stime;
    /// `None`: only changes after stime (see [`Record::Gap`]).
    pub since: Option<Stime>,
}

impl Gap {
    fn new(reason: String) -> Gap {
        Gap {
            reason,
            since: None,
        }
    }

    /// One crawl heals both: it covers the earlier `since`.
    fn absorb(&mut self, other: Gap) {
        self.since = match (self.since, other.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Where a brick's changes come from.
#[derive(Debug, Clone)]
pub enum ChangeSource {
    /// georep's own journal directory, written by the notify hook.
    Notify(PathBuf),
    /// GlusterFS's changelogs inside the brick (read only, never purged).
    Glusterfs(GlusterBrick),
}

/// Closed intervals after some stime, oldest first: each ends at the
/// `Stime` given, and its records may fail to read.
type Intervals = Box<dyn Iterator<Item = (Stime, Result<Changelog, ChangelogError>)>>;

impl ChangeSource {
    fn after(&self, after: Stime) -> Result<Intervals, ChangelogError> {
        Ok(match self {
            ChangeSource::Notify(dir) => Box::new(
                changelog::list_closed(dir, after)?
                    .into_iter()
                    .map(|f| (f.end, changelog::read_file(&f.path))),
            ),
            ChangeSource::Glusterfs(brick) => Box::new(
                brick
                    .read_after(after)?
                    .into_iter()
                    .map(|log| (log.end, Ok(log))),
            ),
        })
    }

    /// Drops the journal files stime has passed: only georep's own.
    pub fn purge(&self, through: Stime) -> Result<usize, ChangelogError> {
        match self {
            ChangeSource::Notify(dir) => changelog::purge(dir, through),
            ChangeSource::Glusterfs(_) => Ok(0),
        }
    }
}

/// Reads closed journal files after `after` until about `max_ops`
/// operations are gathered, or up to and including the first file that
/// records a gap. `None` if there is no such file.
pub fn next_batch(
    source: &ChangeSource,
    after: Stime,
    max_ops: usize,
) -> Result<Option<JournalBatch>, ChangelogError> {
    let mut files = source.after(after)?.peekable();
    if files.peek().is_none() {
        return Ok(None);
    }
    let mut out = JournalBatch {
        batch: Batch::new(),
        through: after,
        gap: None,
    };
    out.batch.mark_journal();
    for (end, log) in files {
        match log {
            Ok(log) => {
                for record in log.records {
                    if let Some(gap) = add_record(&mut out.batch, record) {
                        match &mut out.gap {
                            Some(g) => g.absorb(gap),
                            None => out.gap = Some(gap),
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!("{e}; healing with a Hybrid Crawl");
                out.gap.get_or_insert_with(|| Gap::new(e.to_string()));
            }
        }
        out.through = end;
        if out.batch.len() >= max_ops || out.gap.is_some() {
            break;
        }
    }
    Ok(Some(out))
}

/// Every path that a record in the closed journal files after `after`
/// renames away, unlinks or removes: names the brick had until then, which
/// a listing taken now no longer shows. A file that cannot be read adds
/// nothing (a later batch heals it as a gap).
pub fn removed_after(
    source: &ChangeSource,
    after: Stime,
) -> Result<HashSet<RelPath>, ChangelogError> {
    let mut out = HashSet::new();
    for (_, log) in source.after(after)? {
        let Ok(log) = log else { continue };
        for record in log.records {
            match record {
                Record::Rename { from, .. } => {
                    out.insert(from);
                }
                Record::Unlink(p) | Record::Rmdir(p) => {
                    out.insert(p);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn parent(p: &RelPath) -> RelPath {
    p.parent().unwrap_or_default()
}

/// Adds one record to `batch`; returns the gap if it is one.
fn add_record(batch: &mut Batch, record: Record) -> Option<Gap> {
    match record {
        Record::Create(p) => {
            batch.push_meta(parent(&p));
            batch.push_entry(Entry::Create(p.clone()));
            batch.push_data(p);
        }
        Record::Link(p) => {
            batch.push_meta(parent(&p));
            batch.push_entry(Entry::Link(p.clone()));
            batch.push_data(p);
        }
        Record::Mkdir(p) => {
            batch.push_meta(parent(&p));
            batch.push_entry(Entry::Mkdir(p.clone()));
            batch.push_meta(p);
        }
        Record::Mknod(p) => {
            batch.push_meta(parent(&p));
            batch.push_entry(Entry::Mknod(p.clone()));
            batch.push_meta(p);
        }
        Record::Symlink(p) => {
            batch.push_meta(parent(&p));
            batch.push_entry(Entry::Symlink(p.clone()));
            batch.push_meta(p);
        }
        Record::Unlink(p) => {
            batch.push_meta(parent(&p));
            batch.push_entry(Entry::Unlink(p));
        }
        Record::Rmdir(p) => {
            batch.push_meta(parent(&p));
            batch.push_entry(Entry::Rmdir(p));
        }
        Record::Rename { from, to } => {
            batch.push_meta(parent(&from));
            batch.push_meta(parent(&to));
            batch.rename_pending(&from, &to);
            // A directory moved to another parent gets a new `..` entry, which
            // sets its mtime: on the slave too, when the rename is replayed.
            batch.push_meta(to.clone());
            batch.push_entry(Entry::Rename { from, to });
        }
        Record::Data(p) => batch.push_data(p),
        Record::Meta(p) => batch.push_meta(p),
        Record::Gap { reason, since } => return Some(Gap { reason, since }),
    }
    None
}

/// Journal directory of a brick inside a session directory.
pub fn journal_dir(session_dir: &Path, brick: crate::session::BrickId) -> PathBuf {
    session_dir.join("journal").join(brick.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn data_follows_a_rename() {
        let mut b = Batch::new();
        add_record(&mut b, Record::Create(p("d/a")));
        add_record(&mut b, Record::Data(p("d/a")));
        add_record(
            &mut b,
            Record::Rename {
                from: p("d"),
                to: p("e"),
            },
        );
        add_record(&mut b, Record::Create(p("d")));
        assert_eq!(b.data(), &[p("e/a"), p("d")]);
        assert_eq!(
            b.entries(),
            &[
                Entry::Create(p("d/a")),
                Entry::Rename {
                    from: p("d"),
                    to: p("e")
                },
                Entry::Create(p("d"))
            ]
        );
    }

    #[test]
    fn names_that_later_files_take_away_are_those_renamed_unlinked_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |start: i64, end: i64, records: &[Record]| {
            changelog::write_closed(
                dir.path(),
                Stime::from_nanos(start),
                Stime::from_nanos(end),
                records,
            )
            .unwrap();
        };
        write(0, 10, &[Record::Unlink(p("d/before"))]);
        write(
            10,
            20,
            &[
                Record::Create(p("d/new")),
                Record::Rename {
                    from: p("d/a"),
                    to: p("e/a"),
                },
                Record::Data(p("d/b")),
            ],
        );
        write(
            20,
            30,
            &[Record::Unlink(p("d/c")), Record::Rmdir(p("d/sub"))],
        );
        let source = ChangeSource::Notify(dir.path().to_owned());
        let removed = removed_after(&source, Stime::from_nanos(10)).unwrap();
        let want: HashSet<RelPath> = [p("d/a"), p("d/c"), p("d/sub")].into_iter().collect();
        assert_eq!(removed, want);
        assert!(removed_after(&source, Stime::from_nanos(30))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn gap_records_are_reported() {
        let mut b = Batch::new();
        assert_eq!(
            add_record(&mut b, Record::gap("overflow")),
            Some(Gap::new("overflow".into()))
        );
    }

    #[test]
    fn one_crawl_covers_the_earliest_since_of_a_batch() {
        let mut g = Gap::new("first".into());
        g.absorb(Gap {
            reason: "second".into(),
            since: Some(Stime::from_nanos(20)),
        });
        g.absorb(Gap {
            reason: "third".into(),
            since: Some(Stime::from_nanos(10)),
        });
        g.absorb(Gap::new("fourth".into()));
        assert_eq!(
            g,
            Gap {
                reason: "first".into(),
                since: Some(Stime::from_nanos(10))
            }
        );
    }
}
