//! From gfid-keyed records to georep's path-keyed [`Record`]s.
//!
//! The brick only says where each gfid is *now* (handles, gfid2path). A
//! record must name the path its entry had *when it was recorded*, since
//! the batch replays entry operations in order (a file created in `d1`
//! before `mv d1 d3` must be created as `d1/f`, then renamed). So records
//! are resolved walking backwards from now: before each record is turned
//! into paths, the namespace is as it was right after it; then the record
//! is undone in an overlay (a rename puts its gfid back at the source, an
//! unlink or rmdir brings the entry back, a create removes it), so the
//! records before it see the namespace of their own time.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::format::{GEntryOp, GRecord};
use super::gfid::{self, Gfid, Location};
use crate::changelog::Record;
use crate::relpath::RelPath;

/// Top-level names of the brick that belong to GlusterFS, never replicated.
pub const INTERNAL: &[&str] = &[".glusterfs", ".trashcan"];

/// Directory depth beyond which a chain of handles counts as broken (a
/// loop in a damaged brick).
const MAX_DEPTH: usize = 4096;

/// Resolves the records of consecutive changelog files (oldest first)
/// against the brick as it is now; one list of records per file.
pub fn resolve(brick: &Path, files: &[Vec<GRecord>]) -> Vec<Vec<Record>> {
    let mut ns = Namespace {
        brick,
        overlay: HashMap::new(),
        now: HashMap::new(),
        recorded: HashMap::new(),
    };
    for r in files.iter().flatten() {
        if let GRecord::Entry { gfid, op, at } = r {
            let loc = match op {
                GEntryOp::Rename { to } => to,
                _ => at,
            };
            ns.recorded.insert(*gfid, loc.clone());
        }
    }
    let mut out: Vec<Vec<Record>> = vec![Vec::new(); files.len()];
    for (i, records) in files.iter().enumerate().rev() {
        for r in records.iter().rev() {
            if let Some(rec) = ns.record(r) {
                out[i].push(rec);
            }
            ns.undo(r);
        }
        out[i].reverse();
    }
    out
}

struct Namespace<'a> {
    brick: &'a Path,
    /// Where a gfid was at the point of the backward walk (`None`: it did
    /// not exist), for gfids an undone record moved.
    overlay: HashMap<Gfid, Option<Location>>,
    /// Where a gfid is on the brick now (cached handle lookups).
    now: HashMap<Gfid, Option<Location>>,
    /// The last place the records name for a gfid: where a file whose
    /// handle is gone (deleted by a record not read yet) last was.
    recorded: HashMap<Gfid, Location>,
}

impl Namespace<'_> {
    fn location(&mut self, g: Gfid) -> Option<Location> {
        if let Some(l) = self.overlay.get(&g) {
            return l.clone();
        }
        let brick = self.brick;
        self.now
            .entry(g)
            .or_insert_with(|| {
                gfid::dir_location(brick, g)
                    .or_else(|| gfid::file_locations(brick, g).into_iter().next())
            })
            .clone()
            .or_else(|| self.recorded.get(&g).cloned())
    }

    /// The path of `g`, unless it cannot be found or lies in GlusterFS's
    /// own tree.
    fn path(&mut self, g: Gfid) -> Option<RelPath> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut cur = g;
        while !cur.is_root() {
            if names.len() >= MAX_DEPTH {
                return None;
            }
            let loc = self.location(cur)?;
            names.push(loc.name);
            cur = loc.parent;
        }
        names.reverse();
        replicable(RelPath::new(names.join(&b'/')).ok()?)
    }

    fn entry_path(&mut self, at: &Location) -> Option<RelPath> {
        let dir = self.path(at.parent)?;
        replicable(dir.join(std::ffi::OsStr::from_bytes(&at.name)).ok()?)
    }

    /// `r` in paths as of right after it happened.
    fn record(&mut self, r: &GRecord) -> Option<Record> {
        let rec = match r {
            GRecord::Data(g) => Record::Data(self.path(*g)?),
            GRecord::Meta(g) => Record::Meta(self.path(*g)?),
            GRecord::Entry {
                op: GEntryOp::Rename { to },
                at,
                ..
            } => Record::Rename {
                from: self.entry_path(at)?,
                to: self.entry_path(to)?,
            },
            GRecord::Entry { op, at, .. } => {
                let make: fn(RelPath) -> Record = match op {
                    GEntryOp::Create { mode } | GEntryOp::Mknod { mode } if is_regular(*mode) => {
                        Record::Create
                    }
                    GEntryOp::Create { .. } | GEntryOp::Mknod { .. } => Record::Mknod,
                    GEntryOp::Mkdir => Record::Mkdir,
                    GEntryOp::Symlink => Record::Symlink,
                    GEntryOp::Link => Record::Link,
                    GEntryOp::Unlink => Record::Unlink,
                    GEntryOp::Rmdir => Record::Rmdir,
                    GEntryOp::Rename { .. } => return None,
                };
                make(self.entry_path(at)?)
            }
        };
        Some(rec)
    }

    /// Moves the backward walk to just before `r`.
    fn undo(&mut self, r: &GRecord) {
        let GRecord::Entry { gfid, op, at } = r else {
            return;
        };
        match op {
            GEntryOp::Rename { .. } | GEntryOp::Unlink | GEntryOp::Rmdir => {
                self.overlay.insert(*gfid, Some(at.clone()));
            }
            GEntryOp::Create { .. }
            | GEntryOp::Mkdir
            | GEntryOp::Mknod { .. }
            | GEntryOp::Symlink => {
                self.overlay.insert(*gfid, None);
            }
            GEntryOp::Link => {
                // Before the link the file had its other names only.
                if self.overlay.get(gfid) == Some(&Some(at.clone())) {
                    self.overlay.remove(gfid);
                }
                if let Some(Some(l)) = self.now.get(gfid) {
                    if l == at {
                        let others = gfid::file_locations(self.brick, *gfid)
                            .into_iter()
                            .find(|l| l != at);
                        self.now.insert(*gfid, others);
                    }
                }
            }
        }
    }
}

/// A mode of 0 (unknown type) counts as a regular file, as `creat` makes.
fn is_regular(mode: u32) -> bool {
    let fmt = mode & libc::S_IFMT;
    fmt == 0 || fmt == libc::S_IFREG
}

fn replicable(p: RelPath) -> Option<RelPath> {
    let internal = p.components().next().is_some_and(internal_name);
    (!internal).then_some(p)
}

/// Whether a top-level name of a brick is GlusterFS's own: [`INTERNAL`],
/// or a directory where AFR keeps unlinked inodes
/// (`.glusterfs-anonymous-inode-<uuid>`). Never replicated, never kept by
/// a prune.
pub fn internal_name(name: &std::ffi::OsStr) -> bool {
    let n = name.as_encoded_bytes();
    INTERNAL.iter().any(|i| n == i.as_bytes()) || n.starts_with(b".glusterfs-anonymous-inode-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn g(n: u8) -> Gfid {
        Gfid::parse(format!("{n:08x}-0000-0000-0000-000000000000").as_bytes()).unwrap()
    }
    fn at(parent: Gfid, name: &str) -> Location {
        Location {
            parent,
            name: name.as_bytes().to_vec(),
        }
    }
    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }
    fn dir_handle(brick: &Path, d: Gfid, loc: &Location) {
        let h = d.handle(brick);
        std::fs::create_dir_all(h.parent().unwrap()).unwrap();
        let t = loc.parent.to_string();
        symlink(
            format!(
                "../../{}/{}/{}/{}",
                &t[0..2],
                &t[2..4],
                t,
                String::from_utf8_lossy(&loc.name)
            ),
            h,
        )
        .unwrap();
    }

    /// mkdir d1; create d1/f (write); mv d1 d3 — and, in a later file,
    /// rm -r of a directory whose handle is gone by now.
    #[test]
    fn paths_are_those_of_the_records_time() {
        let tmp = tempfile::tempdir().unwrap();
        let brick = tmp.path();
        let (d1, f, gone, x) = (g(1), g(2), g(3), g(4));
        dir_handle(brick, d1, &at(gfid::ROOT, "d3"));
        let files = vec![
            vec![
                GRecord::Entry {
                    gfid: d1,
                    op: GEntryOp::Mkdir,
                    at: at(gfid::ROOT, "d1"),
                },
                GRecord::Entry {
                    gfid: f,
                    op: GEntryOp::Create { mode: 0o100644 },
                    at: at(d1, "f"),
                },
                GRecord::Data(f),
                GRecord::Entry {
                    gfid: d1,
                    op: GEntryOp::Rename {
                        to: at(gfid::ROOT, "d3"),
                    },
                    at: at(gfid::ROOT, "d1"),
                },
                GRecord::Entry {
                    gfid: gone,
                    op: GEntryOp::Mkdir,
                    at: at(gfid::ROOT, "tmp"),
                },
                GRecord::Entry {
                    gfid: x,
                    op: GEntryOp::Create { mode: 0o100644 },
                    at: at(gone, "x"),
                },
                GRecord::Meta(d1),
            ],
            vec![
                GRecord::Entry {
                    gfid: x,
                    op: GEntryOp::Unlink,
                    at: at(gone, "x"),
                },
                GRecord::Entry {
                    gfid: gone,
                    op: GEntryOp::Rmdir,
                    at: at(gfid::ROOT, "tmp"),
                },
                GRecord::Entry {
                    gfid: g(5),
                    op: GEntryOp::Mkdir,
                    at: at(gfid::ROOT, ".glusterfs"),
                },
            ],
        ];
        let got = resolve(brick, &files);
        assert_eq!(
            got[0],
            vec![
                Record::Mkdir(p("d1")),
                Record::Create(p("d1/f")),
                Record::Data(p("d1/f")),
                Record::Rename {
                    from: p("d1"),
                    to: p("d3")
                },
                Record::Mkdir(p("tmp")),
                Record::Create(p("tmp/x")),
                Record::Meta(p("d3")),
            ]
        );
        assert_eq!(
            got[1],
            vec![Record::Unlink(p("tmp/x")), Record::Rmdir(p("tmp"))]
        );
    }

    #[test]
    fn special_files_keep_their_type() {
        assert!(is_regular(0o100644));
        assert!(is_regular(0));
        assert!(!is_regular(0o010644));
    }
}
