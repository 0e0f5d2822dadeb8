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
//!
//! A heal moves an entry through the replicate layer's anonymous-inode
//! directory: a directory (or a file with other names) whose name the
//! healthy members lost is renamed into it, and renamed out again when the
//! name it has there is healed. Those two renames are one rename on the
//! slave when both are read together; a move in alone removes the name,
//! and a move out alone makes the entry appear with all it holds now.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::format::{GEntryOp, GRecord};
use super::gfid::{self, Gfid, Location, MAX_DEPTH};
use crate::changelog::Record;
use crate::relpath::RelPath;

/// Top-level names of the brick that belong to GlusterFS, never replicated.
pub const INTERNAL: &[&str] = &[".glusterfs", ".trashcan"];

/// The replicate layer keeps inodes whose name it lost during a heal in a
/// top-level directory `.glusterfs-anonymous-inode-<volume id>`, which the
/// mount never shows.
pub const ANON_INODE_PREFIX: &str = ".glusterfs-anonymous-inode-";

/// Whether a top-level name of a brick belongs to GlusterFS.
pub fn is_internal(first: &std::ffi::OsStr) -> bool {
    INTERNAL.iter().any(|n| first == std::ffi::OsStr::new(n))
        || first.as_bytes().starts_with(ANON_INODE_PREFIX.as_bytes())
}

/// The top-level names of `brick` that belong to GlusterFS: [`INTERNAL`],
/// and the replicate layer's anonymous-inode directory, named after the
/// volume id the brick root carries (whether or not it exists yet), and
/// any such directory already there.
pub fn internal_names(brick: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<std::ffi::OsString> = INTERNAL.iter().map(Into::into).collect();
    let mut id = [0u8; 16];
    if let Ok(16) = rustix::fs::getxattr(brick, "trusted.glusterfs.volume-id", &mut id) {
        names.push(format!("{ANON_INODE_PREFIX}{}", Gfid::from_bytes(id)).into());
    }
    for e in std::fs::read_dir(brick).into_iter().flatten().flatten() {
        let name = e.file_name();
        if is_internal(&name) && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

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
    // Slots are filled walking backwards; a move out of the anonymous-inode
    // directory waits there for the move in that comes before it.
    let mut slots: Vec<Slot> = Vec::new();
    let mut reappearing: HashMap<Gfid, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); files.len()];
    for (i, records) in files.iter().enumerate().rev() {
        for r in records.iter().rev() {
            let slot = match ns.hidden_move(r) {
                Some(Hidden::Out { gfid, to }) => {
                    reappearing.insert(gfid, slots.len());
                    Some(Slot::Reappear {
                        gfid,
                        to,
                        from: None,
                    })
                }
                Some(Hidden::In { gfid, from }) => match reappearing.remove(&gfid) {
                    Some(k) => {
                        if let Slot::Reappear { from: f, .. } = &mut slots[k] {
                            *f = Some(from);
                        }
                        None
                    }
                    None => Some(Slot::Ready(Record::Unlink(from))),
                },
                None => ns.record(r).map(Slot::Ready),
            };
            if let Some(slot) = slot {
                out[i].push(slots.len());
                slots.push(slot);
            }
            ns.undo(r);
        }
        out[i].reverse();
    }
    out.into_iter()
        .map(|file| {
            file.into_iter()
                .flat_map(|k| match std::mem::replace(&mut slots[k], Slot::Taken) {
                    Slot::Ready(r) => vec![r],
                    Slot::Reappear {
                        from: Some(from),
                        to,
                        ..
                    } => vec![Record::Rename { from, to }],
                    Slot::Reappear {
                        gfid,
                        to,
                        from: None,
                    } => reappeared(brick, gfid, &to),
                    Slot::Taken => Vec::new(),
                })
                .collect()
        })
        .collect()
}

enum Slot {
    Ready(Record),
    /// Moved out of the anonymous-inode directory to `to`; `from`: where
    /// the move in took it from, if that was read too.
    Reappear {
        gfid: Gfid,
        to: RelPath,
        from: Option<RelPath>,
    },
    Taken,
}

/// A rename between a replicable path and the anonymous-inode directory.
enum Hidden {
    In { gfid: Gfid, from: RelPath },
    Out { gfid: Gfid, to: RelPath },
}

/// The records of an entry that came out of the anonymous-inode directory
/// to `to` and whose move in was not read with it: the entry and all it
/// holds now, found through its handle (nothing if it is gone since).
fn reappeared(brick: &Path, gfid: Gfid, to: &RelPath) -> Vec<Record> {
    let handle = gfid.handle(brick);
    // A directory's handle is a symlink to it, a file's a hard link.
    let Ok(md) = std::fs::metadata(&handle) else {
        return Vec::new();
    };
    let mut out = Record::appeared(to, &md);
    if !md.is_dir() {
        return out;
    }
    let mut stack = vec![(handle, to.clone())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let (Ok(md), Ok(child)) = (e.path().symlink_metadata(), rel.join(&e.file_name()))
            else {
                continue;
            };
            out.extend(Record::appeared(&child, &md));
            if md.is_dir() {
                stack.push((e.path(), child));
            }
        }
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
        replicable(self.any_path(g)?)
    }

    /// Whether `at` names an entry of the anonymous-inode directory.
    fn hidden(&mut self, at: &Location) -> bool {
        self.any_path(at.parent).is_some_and(|p| {
            let mut c = p.components();
            c.next()
                .is_some_and(|first| first.as_bytes().starts_with(ANON_INODE_PREFIX.as_bytes()))
                && c.next().is_none()
        })
    }

    /// `r` if it is a rename between a replicable path and the
    /// anonymous-inode directory, in paths as of right after it.
    fn hidden_move(&mut self, r: &GRecord) -> Option<Hidden> {
        let GRecord::Entry {
            gfid,
            op: GEntryOp::Rename { to },
            at,
        } = r
        else {
            return None;
        };
        match (self.hidden(at), self.hidden(to)) {
            (false, true) => Some(Hidden::In {
                gfid: *gfid,
                from: self.entry_path(at)?,
            }),
            (true, false) => Some(Hidden::Out {
                gfid: *gfid,
                to: self.entry_path(to)?,
            }),
            _ => None,
        }
    }

    /// The path of `g`, wherever it lies.
    fn any_path(&mut self, g: Gfid) -> Option<RelPath> {
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
        RelPath::new(names.join(&b'/')).ok()
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
    let internal = p.components().next().is_some_and(is_internal);
    (!internal).then_some(p)
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

    /// A heal renames `d` into the anonymous-inode directory and out again
    /// as `d2`: one rename. A move in alone removes the name; a move out
    /// alone brings the entry with all it holds.
    #[test]
    fn moves_through_the_anonymous_inode_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let brick = tmp.path();
        let (anon, d, e) = (g(9), g(1), g(2));
        let anon_loc = at(gfid::ROOT, &format!("{ANON_INODE_PREFIX}x"));
        dir_handle(brick, anon, &anon_loc);
        dir_handle(brick, d, &at(gfid::ROOT, "d2"));
        dir_handle(brick, e, &at(gfid::ROOT, "e2"));
        // The root's handle leads back to the brick, as on a real brick.
        let root = gfid::ROOT.handle(brick);
        std::fs::create_dir_all(root.parent().unwrap()).unwrap();
        symlink("../../..", root).unwrap();
        std::fs::create_dir_all(brick.join("d2")).unwrap();
        std::fs::create_dir_all(brick.join("e2/sub")).unwrap();
        std::fs::write(brick.join("e2/sub/f"), b"data").unwrap();
        let hidden = |g: Gfid| at(anon, &g.to_string());
        let rename = |gfid, from, to| GRecord::Entry {
            gfid,
            op: GEntryOp::Rename { to },
            at: from,
        };
        let paired = vec![
            vec![rename(d, at(gfid::ROOT, "d"), hidden(d))],
            vec![rename(d, hidden(d), at(gfid::ROOT, "d2"))],
        ];
        assert_eq!(
            resolve(brick, &paired),
            vec![
                vec![],
                vec![Record::Rename {
                    from: p("d"),
                    to: p("d2")
                }]
            ]
        );
        let alone_in = vec![vec![rename(d, at(gfid::ROOT, "old"), hidden(d))]];
        assert_eq!(
            resolve(brick, &alone_in),
            vec![vec![Record::Unlink(p("old"))]]
        );
        let alone_out = vec![vec![rename(e, hidden(e), at(gfid::ROOT, "e2"))]];
        let mut got = resolve(brick, &alone_out).remove(0);
        got.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            got,
            vec![
                Record::Create(p("e2/sub/f")),
                Record::Data(p("e2/sub/f")),
                Record::Mkdir(p("e2")),
                Record::Mkdir(p("e2/sub")),
            ]
        );
    }

    #[test]
    fn special_files_keep_their_type() {
        assert!(is_regular(0o100644));
        assert!(is_regular(0));
        assert!(!is_regular(0o010644));
    }

    #[test]
    fn the_anonymous_inode_directory_is_internal_before_it_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let brick = tmp.path();
        let raw = [0x0d; 16];
        let id = Gfid::from_bytes(raw);
        if rustix::fs::setxattr(
            brick,
            "trusted.glusterfs.volume-id",
            &raw,
            rustix::fs::XattrFlags::empty(),
        )
        .is_err()
        {
            eprintln!("skipped: trusted xattrs need root");
            return;
        }
        let names = internal_names(brick);
        let anon = format!("{ANON_INODE_PREFIX}{id}");
        assert!(names.contains(&anon.clone().into()), "{names:?}");
        assert!(names.contains(&".glusterfs".into()));
        // One already there under another id is left out too.
        std::fs::create_dir(brick.join(".glusterfs-anonymous-inode-other")).unwrap();
        assert!(internal_names(brick).contains(&".glusterfs-anonymous-inode-other".into()));
        let inside = RelPath::new(format!("{anon}/f").into_bytes()).unwrap();
        assert_eq!(replicable(inside), None);
        let user = RelPath::new(".glusterfsy/f").unwrap();
        assert_eq!(replicable(user.clone()), Some(user));
    }
}
