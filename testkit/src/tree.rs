//! Comparing two directory trees entry by entry.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What [`compare_trees`] looks at. The roots themselves are not compared,
/// only what is below them.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Compare permission bits (`mode & 0o7777`) of files and directories.
    pub mode: bool,
    /// Compare mtime (seconds and nanoseconds) of regular files.
    pub file_mtime: bool,
    /// Compare mtime of symlinks themselves (not their targets).
    pub symlink_mtime: bool,
    /// Compare mtime of directories.
    pub dir_mtime: bool,
    /// Relative paths left out on both sides, with everything below them.
    pub exclude: Vec<PathBuf>,
    /// Compare numeric owner and group (meaningful when both sides ran as
    /// root).
    pub owner: bool,
    /// Compare hard-link groups: the names of a regular file that share its
    /// inode inside the tree (shown with its link count).
    pub hard_links: bool,
    /// Compare where regular files have data and where they have holes
    /// (`SEEK_DATA`/`SEEK_HOLE`), so a sparse file filled with zeros differs.
    pub holes: bool,
    /// Compare `user.*` extended attributes and POSIX ACLs of files and
    /// directories.
    pub xattrs: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            mode: true,
            file_mtime: true,
            symlink_mtime: true,
            dir_mtime: true,
            exclude: Vec::new(),
            owner: false,
            hard_links: false,
            holes: false,
            xattrs: false,
        }
    }
}

impl CompareOptions {
    /// Leaves `rel` (relative to both roots) and everything below it out.
    pub fn exclude(mut self, rel: impl Into<PathBuf>) -> Self {
        self.exclude.push(rel.into());
        self
    }

    /// Everything [`Default`] compares, plus owner, hard-link groups, holes
    /// and `user.*` xattrs: what an exact replica must match.
    pub fn exact() -> Self {
        CompareOptions {
            owner: true,
            hard_links: true,
            holes: true,
            xattrs: true,
            ..CompareOptions::default()
        }
    }

    /// Does not compare directory mtimes.
    pub fn without_dir_mtime(mut self) -> Self {
        self.dir_mtime = false;
        self
    }
}

/// The type of a directory entry (symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl fmt::Display for EntryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryType::File => "file",
            EntryType::Dir => "directory",
            EntryType::Symlink => "symlink",
            EntryType::Fifo => "fifo",
            EntryType::Socket => "socket",
            EntryType::CharDevice => "char device",
            EntryType::BlockDevice => "block device",
        })
    }
}

/// One way two trees differ. `a` is the first tree (e.g. the master brick),
/// `b` the second (e.g. the slave directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DifferenceKind {
    /// In `a`, not in `b`.
    Missing,
    /// In `b`, not in `a`.
    Extra,
    Type {
        a: EntryType,
        b: EntryType,
    },
    Size {
        a: u64,
        b: u64,
    },
    /// Same size, different BLAKE3 hash.
    Content {
        a: String,
        b: String,
    },
    Mode {
        a: u32,
        b: u32,
    },
    /// `(seconds, nanoseconds)` since the epoch.
    Mtime {
        a: (i64, i64),
        b: (i64, i64),
    },
    SymlinkTarget {
        a: PathBuf,
        b: PathBuf,
    },
    /// Numeric `(uid, gid)`.
    Owner {
        a: (u32, u32),
        b: (u32, u32),
    },
    /// The names sharing this file's inode (itself included) and its link
    /// count differ.
    HardLinks {
        a: (u64, Vec<PathBuf>),
        b: (u64, Vec<PathBuf>),
    },
    /// The data ranges `[start, end)` differ (holes elsewhere).
    Holes {
        a: Vec<(u64, u64)>,
        b: Vec<(u64, u64)>,
    },
    /// `user.*` extended attributes differ: names with `hash` of the values.
    Xattrs {
        a: Vec<String>,
        b: Vec<String>,
    },
    /// The entry could not be read on one side.
    Unreadable {
        side: char,
        error: String,
    },
}

/// A differing path, relative to both roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: PathBuf,
    pub kind: DifferenceKind,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = display_path(&self.path);
        match &self.kind {
            DifferenceKind::Missing => write!(f, "{p}: missing in b"),
            DifferenceKind::Extra => write!(f, "{p}: extra in b"),
            DifferenceKind::Type { a, b } => write!(f, "{p}: type {a} vs {b}"),
            DifferenceKind::Size { a, b } => write!(f, "{p}: size {a} vs {b}"),
            DifferenceKind::Content { a, b } => write!(f, "{p}: content blake3 {a} vs {b}"),
            DifferenceKind::Mode { a, b } => write!(f, "{p}: mode {a:04o} vs {b:04o}"),
            DifferenceKind::Mtime { a, b } => {
                write!(f, "{p}: mtime {}.{:09} vs {}.{:09}", a.0, a.1, b.0, b.1)
            }
            DifferenceKind::SymlinkTarget { a, b } => write!(
                f,
                "{p}: symlink target {} vs {}",
                display_path(a),
                display_path(b)
            ),
            DifferenceKind::Owner { a, b } => {
                write!(f, "{p}: owner {}:{} vs {}:{}", a.0, a.1, b.0, b.1)
            }
            DifferenceKind::HardLinks { a, b } => {
                let names = |v: &[PathBuf]| {
                    v.iter()
                        .map(|x| display_path(x))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                write!(
                    f,
                    "{p}: hard links nlink={} [{}] vs nlink={} [{}]",
                    a.0,
                    names(&a.1),
                    b.0,
                    names(&b.1)
                )
            }
            DifferenceKind::Holes { a, b } => write!(f, "{p}: data ranges {a:?} vs {b:?}"),
            DifferenceKind::Xattrs { a, b } => write!(f, "{p}: xattrs {a:?} vs {b:?}"),
            DifferenceKind::Unreadable { side, error } => {
                write!(f, "{p}: unreadable in {side}: {error}")
            }
        }
    }
}

/// A path for messages: valid UTF-8 as is, other bytes as `\xNN`.
pub fn display_path(p: &Path) -> String {
    let mut s = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

#[derive(Debug)]
struct Entry {
    ty: EntryType,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    target: Option<PathBuf>,
    owner: (u32, u32),
    nlink: u64,
    /// `(dev, ino)`.
    inode: (u64, u64),
    /// `user.*` xattrs, names with a hash of the value (when asked for).
    xattrs: Vec<String>,
}

/// Every difference between the trees under `a` and `b`, in path order.
/// Symlinks are compared as links, never followed. An empty result means
/// equal.
pub fn compare_trees(a: &Path, b: &Path, opts: &CompareOptions) -> Vec<Difference> {
    let mut diffs = Vec::new();
    let ea = scan(a, 'a', opts, &mut diffs);
    let eb = scan(b, 'b', opts, &mut diffs);
    let links_a = link_groups(&ea);
    let links_b = link_groups(&eb);
    for (rel, x) in &ea {
        let Some(y) = eb.get(rel) else {
            diffs.push(Difference {
                path: rel.clone(),
                kind: DifferenceKind::Missing,
            });
            continue;
        };
        let mut push = |kind| {
            diffs.push(Difference {
                path: rel.clone(),
                kind,
            })
        };
        if x.ty != y.ty {
            push(DifferenceKind::Type { a: x.ty, b: y.ty });
            continue;
        }
        match x.ty {
            EntryType::File => {
                if x.size != y.size {
                    push(DifferenceKind::Size {
                        a: x.size,
                        b: y.size,
                    });
                } else {
                    match (hash(&a.join(rel)), hash(&b.join(rel))) {
                        (Ok(ha), Ok(hb)) if ha != hb => {
                            push(DifferenceKind::Content { a: ha, b: hb })
                        }
                        (Ok(_), Ok(_)) => {}
                        (Err(e), _) => push(DifferenceKind::Unreadable {
                            side: 'a',
                            error: e.to_string(),
                        }),
                        (_, Err(e)) => push(DifferenceKind::Unreadable {
                            side: 'b',
                            error: e.to_string(),
                        }),
                    }
                }
            }
            EntryType::Symlink if x.target != y.target => {
                push(DifferenceKind::SymlinkTarget {
                    a: x.target.clone().unwrap_or_default(),
                    b: y.target.clone().unwrap_or_default(),
                });
            }
            _ => {}
        }
        // Symlink permission bits are meaningless on Linux.
        if opts.mode && x.ty != EntryType::Symlink && x.mode != y.mode {
            push(DifferenceKind::Mode {
                a: x.mode,
                b: y.mode,
            });
        }
        let mtime = match x.ty {
            EntryType::File => opts.file_mtime,
            EntryType::Symlink => opts.symlink_mtime,
            EntryType::Dir => opts.dir_mtime,
            _ => false,
        };
        if mtime && x.mtime != y.mtime {
            push(DifferenceKind::Mtime {
                a: x.mtime,
                b: y.mtime,
            });
        }
        if opts.owner && x.owner != y.owner {
            push(DifferenceKind::Owner {
                a: x.owner,
                b: y.owner,
            });
        }
        if opts.xattrs && x.xattrs != y.xattrs {
            push(DifferenceKind::Xattrs {
                a: x.xattrs.clone(),
                b: y.xattrs.clone(),
            });
        }
        if x.ty != EntryType::File {
            continue;
        }
        if opts.hard_links && (x.nlink > 1 || y.nlink > 1) {
            // A name alone in the tree is no group, whatever its link count.
            let group =
                |g: Option<&Vec<PathBuf>>| g.filter(|g| g.len() > 1).cloned().unwrap_or_default();
            let ga = group(links_a.get(&x.inode));
            let gb = group(links_b.get(&y.inode));
            // The link count itself may include names outside the tree
            // (e.g. a name moved out of a brick), so only the names inside
            // are compared.
            if ga != gb {
                push(DifferenceKind::HardLinks {
                    a: (x.nlink, ga),
                    b: (y.nlink, gb),
                });
            }
        }
        if opts.holes && x.size == y.size {
            match (data_ranges(&a.join(rel)), data_ranges(&b.join(rel))) {
                (Ok(ra), Ok(rb)) if ra != rb => push(DifferenceKind::Holes { a: ra, b: rb }),
                (Ok(_), Ok(_)) => {}
                (Err(e), _) => push(DifferenceKind::Unreadable {
                    side: 'a',
                    error: e.to_string(),
                }),
                (_, Err(e)) => push(DifferenceKind::Unreadable {
                    side: 'b',
                    error: e.to_string(),
                }),
            }
        }
    }
    for rel in eb.keys() {
        if !ea.contains_key(rel) {
            diffs.push(Difference {
                path: rel.clone(),
                kind: DifferenceKind::Extra,
            });
        }
    }
    diffs.sort_by(|x, y| x.path.cmp(&y.path));
    diffs
}

/// Panics listing every differing path unless the trees are equal under
/// [`CompareOptions::default`].
#[track_caller]
pub fn assert_trees_equal(a: &Path, b: &Path) {
    assert_trees_equal_with(a, b, &CompareOptions::default());
}

/// [`assert_trees_equal`] with options.
#[track_caller]
pub fn assert_trees_equal_with(a: &Path, b: &Path, opts: &CompareOptions) {
    let diffs = compare_trees(a, b, opts);
    if !diffs.is_empty() {
        let mut msg = format!(
            "trees differ: {} difference(s)\n  a = {}\n  b = {}\n",
            diffs.len(),
            a.display(),
            b.display()
        );
        for d in &diffs {
            msg.push_str("  ");
            msg.push_str(&d.to_string());
            msg.push('\n');
        }
        panic!("{msg}");
    }
}

fn scan(
    root: &Path,
    side: char,
    opts: &CompareOptions,
    diffs: &mut Vec<Difference>,
) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir_rel) = stack.pop() {
        let rd = match fs::read_dir(root.join(&dir_rel)) {
            Ok(rd) => rd,
            Err(e) => {
                diffs.push(Difference {
                    path: dir_rel,
                    kind: DifferenceKind::Unreadable {
                        side,
                        error: e.to_string(),
                    },
                });
                continue;
            }
        };
        for de in rd {
            let de = match de {
                Ok(de) => de,
                Err(e) => {
                    diffs.push(Difference {
                        path: dir_rel.clone(),
                        kind: DifferenceKind::Unreadable {
                            side,
                            error: e.to_string(),
                        },
                    });
                    continue;
                }
            };
            let rel = dir_rel.join(de.file_name());
            if opts.exclude.iter().any(|x| rel.starts_with(x)) {
                continue;
            }
            match entry(&de.path(), opts) {
                Ok(e) => {
                    if e.ty == EntryType::Dir {
                        stack.push(rel.clone());
                    }
                    out.insert(rel, e);
                }
                Err(e) => diffs.push(Difference {
                    path: rel,
                    kind: DifferenceKind::Unreadable {
                        side,
                        error: e.to_string(),
                    },
                }),
            }
        }
    }
    out
}

fn entry(p: &Path, opts: &CompareOptions) -> io::Result<Entry> {
    let md = fs::symlink_metadata(p)?;
    let ft = md.file_type();
    let ty = if ft.is_symlink() {
        EntryType::Symlink
    } else if ft.is_dir() {
        EntryType::Dir
    } else if ft.is_file() {
        EntryType::File
    } else if ft.is_fifo() {
        EntryType::Fifo
    } else if ft.is_socket() {
        EntryType::Socket
    } else if ft.is_char_device() {
        EntryType::CharDevice
    } else {
        EntryType::BlockDevice
    };
    let target = if ty == EntryType::Symlink {
        Some(fs::read_link(p)?)
    } else {
        None
    };
    let xattrs = if opts.xattrs && matches!(ty, EntryType::File | EntryType::Dir) {
        user_xattrs(p)?
    } else {
        Vec::new()
    };
    Ok(Entry {
        ty,
        size: md.len(),
        mode: md.mode() & 0o7777,
        mtime: (md.mtime(), md.mtime_nsec()),
        target,
        owner: (md.uid(), md.gid()),
        nlink: md.nlink(),
        inode: (md.dev(), md.ino()),
        xattrs,
    })
}

/// For each inode of a regular file with more than one link: its names in
/// the tree, sorted.
fn link_groups(entries: &BTreeMap<PathBuf, Entry>) -> HashMap<(u64, u64), Vec<PathBuf>> {
    let mut groups: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for (rel, e) in entries {
        if e.ty == EntryType::File && e.nlink > 1 {
            groups.entry(e.inode).or_default().push(rel.clone());
        }
    }
    groups
}

/// The `[start, end)` ranges of `p` that hold data, from `SEEK_DATA` and
/// `SEEK_HOLE`; everything else is a hole.
pub fn data_ranges(p: &Path) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let f = fs::File::open(p)?;
    let size = f.metadata()?.len();
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match seek(&f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(&f, SeekFrom::Hole(start))?;
        ranges.push((start, end));
        pos = end;
    }
    Ok(ranges)
}

/// `user.*` xattrs of `p` (not following a symlink) as `name=<hash>`,
/// sorted; the slave's own records (`user.georep.*`, see the slave policy)
/// are no part of the replica.
fn user_xattrs(p: &Path) -> io::Result<Vec<String>> {
    use rustix::fs::{lgetxattr, llistxattr};
    let mut list = vec![0u8; 64 * 1024];
    let n = llistxattr(p, &mut list[..])?;
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let acl = name == b"system.posix_acl_access" || name == b"system.posix_acl_default";
        let records = name.starts_with(georep::slave::policy::RESERVED_PREFIX);
        if (!name.starts_with(b"user.") && !acl) || records {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        let len = lgetxattr(p, name, &mut value[..])?;
        out.push(format!(
            "{}={}",
            String::from_utf8_lossy(name),
            &blake3::hash(&value[..len]).to_hex()[..16]
        ));
    }
    out.sort();
    Ok(out)
}

fn hash(p: &Path) -> io::Result<String> {
    let mut h = blake3::Hasher::new();
    let mut f = fs::File::open(p)?;
    io::copy(&mut f, &mut h)?;
    Ok(h.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{copy_tree, sample_tree, set_mtime, SampleTree};
    use std::ffi::OsStr;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Two equal trees: a sample tree in `a` and its copy in `b`.
    fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        fs::create_dir(&a).unwrap();
        sample_tree(
            &a,
            &SampleTree {
                files: 40,
                dirs: 6,
                symlinks: 4,
                max_file_size: 10_000,
                seed: 7,
            },
        )
        .unwrap();
        fs::write(a.join("file"), b"hello").unwrap();
        fs::create_dir(a.join("dir")).unwrap();
        symlink("file", a.join("link")).unwrap();
        set_mtime(&a.join("dir"), past(1), false).unwrap();
        copy_tree(&a, &b).unwrap();
        assert_eq!(compare_trees(&a, &b, &CompareOptions::default()), vec![]);
        (t, a, b)
    }

    fn past(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_600_000_000 + secs)
    }

    fn only(a: &Path, b: &Path, opts: &CompareOptions) -> Difference {
        let d = compare_trees(a, b, opts);
        assert_eq!(d.len(), 1, "expected one difference, got {d:#?}");
        d.into_iter().next().unwrap()
    }

    /// Changing an entry changes its parent directory's mtime; put it back
    /// so only the intended difference remains.
    fn restore_dir_mtime(a: &Path, b: &Path, rel_dir: &str) {
        let md = fs::symlink_metadata(a.join(rel_dir)).unwrap();
        let t = UNIX_EPOCH + Duration::new(md.mtime() as u64, md.mtime_nsec() as u32);
        set_mtime(&b.join(rel_dir), t, false).unwrap();
    }

    #[test]
    fn equal_trees_have_no_differences() {
        let (_t, a, b) = pair();
        assert_trees_equal(&a, &b);
    }

    #[test]
    fn non_utf8_names_are_compared_and_shown_escaped() {
        let (_t, a, b) = pair();
        let name = OsStr::from_bytes(b"caf\xe9");
        fs::write(a.join(name), b"x").unwrap();
        copy_tree(&a, &b.with_file_name("b2")).unwrap();
        assert_trees_equal(&a, &b.with_file_name("b2"));
        let d = only(&a, &b, &CompareOptions::default().without_dir_mtime());
        assert_eq!(d.kind, DifferenceKind::Missing);
        assert_eq!(d.path, PathBuf::from(name));
        assert_eq!(d.to_string(), "caf\\xe9: missing in b");
    }

    #[test]
    fn detects_missing() {
        let (_t, a, b) = pair();
        fs::remove_file(b.join("file")).unwrap();
        restore_dir_mtime(&a, &b, "");
        let d = only(&a, &b, &CompareOptions::default());
        assert_eq!(
            (d.path.as_path(), d.kind),
            (Path::new("file"), DifferenceKind::Missing)
        );
    }

    #[test]
    fn detects_extra() {
        let (_t, a, b) = pair();
        fs::write(b.join("dir/more"), b"").unwrap();
        restore_dir_mtime(&a, &b, "dir");
        let d = only(&a, &b, &CompareOptions::default());
        assert_eq!(
            (d.path.as_path(), d.kind),
            (Path::new("dir/more"), DifferenceKind::Extra)
        );
    }

    #[test]
    fn detects_type() {
        let (_t, a, b) = pair();
        fs::remove_file(b.join("file")).unwrap();
        fs::create_dir(b.join("file")).unwrap();
        let d = only(&a, &b, &CompareOptions::default().without_dir_mtime());
        assert_eq!(
            d.kind,
            DifferenceKind::Type {
                a: EntryType::File,
                b: EntryType::Dir
            }
        );
    }

    #[test]
    fn detects_size() {
        let (_t, a, b) = pair();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(b.join("file"))
            .unwrap();
        f.set_len(2).unwrap();
        drop(f);
        set_mtime(&b.join("file"), mtime_of(&a.join("file")), true).unwrap();
        let d = only(&a, &b, &CompareOptions::default());
        assert_eq!(d.kind, DifferenceKind::Size { a: 5, b: 2 });
    }

    #[test]
    fn detects_content_of_same_size() {
        let (_t, a, b) = pair();
        fs::write(b.join("file"), b"hellO").unwrap();
        set_mtime(&b.join("file"), mtime_of(&a.join("file")), true).unwrap();
        let d = only(&a, &b, &CompareOptions::default());
        assert!(matches!(d.kind, DifferenceKind::Content { .. }), "{d}");
    }

    #[test]
    fn detects_mode() {
        let (_t, a, b) = pair();
        fs::set_permissions(b.join("file"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(a.join("file"), fs::Permissions::from_mode(0o644)).unwrap();
        let d = only(&a, &b, &CompareOptions::default());
        assert_eq!(d.kind, DifferenceKind::Mode { a: 0o644, b: 0o600 });
    }

    #[test]
    fn detects_file_mtime_down_to_the_nanosecond() {
        let (_t, a, b) = pair();
        let t = past(5);
        set_mtime(&a.join("file"), t, true).unwrap();
        set_mtime(&b.join("file"), t + Duration::from_nanos(1), true).unwrap();
        let d = only(&a, &b, &CompareOptions::default());
        assert!(
            matches!(d.kind, DifferenceKind::Mtime { a, b } if a.1 + 1 == b.1),
            "{d}"
        );
    }

    #[test]
    fn detects_symlink_mtime() {
        let (_t, a, b) = pair();
        set_mtime(&b.join("link"), past(9), false).unwrap();
        let d = only(&a, &b, &CompareOptions::default());
        assert_eq!(d.path, PathBuf::from("link"));
        assert!(matches!(d.kind, DifferenceKind::Mtime { .. }), "{d}");
    }

    #[test]
    fn detects_dir_mtime_unless_turned_off() {
        let (_t, a, b) = pair();
        set_mtime(&b.join("dir"), past(2), false).unwrap();
        let d = only(&a, &b, &CompareOptions::default());
        assert_eq!(d.path, PathBuf::from("dir"));
        assert!(matches!(d.kind, DifferenceKind::Mtime { .. }), "{d}");
        assert_eq!(
            compare_trees(&a, &b, &CompareOptions::default().without_dir_mtime()),
            vec![]
        );
    }

    #[test]
    fn detects_symlink_target() {
        let (_t, a, b) = pair();
        let t = mtime_of_link(&b.join("link"));
        fs::remove_file(b.join("link")).unwrap();
        symlink("nowhere", b.join("link")).unwrap();
        set_mtime(&b.join("link"), t, false).unwrap();
        restore_dir_mtime(&a, &b, "");
        let d = only(&a, &b, &CompareOptions::default());
        assert_eq!(
            d.kind,
            DifferenceKind::SymlinkTarget {
                a: "file".into(),
                b: "nowhere".into()
            }
        );
    }

    #[test]
    fn excluded_paths_are_ignored_with_everything_below() {
        let (_t, a, b) = pair();
        fs::create_dir_all(b.join(".journal/x")).unwrap();
        fs::write(b.join(".journal/x/y"), b"z").unwrap();
        restore_dir_mtime(&a, &b, "");
        assert_eq!(
            compare_trees(&a, &b, &CompareOptions::default().exclude(".journal")),
            vec![]
        );
        assert_eq!(compare_trees(&a, &b, &CompareOptions::default()).len(), 3);
    }

    #[test]
    #[should_panic(expected = "dir/only-in-a: missing in b")]
    fn assert_trees_equal_lists_the_differing_paths() {
        let (_t, a, b) = pair();
        fs::write(a.join("dir/only-in-a"), b"").unwrap();
        fs::write(b.join("only-in-b"), b"").unwrap();
        assert_trees_equal(&a, &b);
    }

    #[test]
    fn exact_detects_hard_links_holes_xattrs_and_owner() {
        let (_t, a, b) = pair();
        let exact = CompareOptions::exact().without_dir_mtime();
        assert_eq!(compare_trees(&a, &b, &exact), vec![]);
        // Hard links: a/file and a/file2 are one inode, b has two copies.
        fs::hard_link(a.join("file"), a.join("dir/file2")).unwrap();
        fs::copy(b.join("file"), b.join("dir/file2")).unwrap();
        set_mtime(&b.join("dir/file2"), mtime_of(&a.join("file")), true).unwrap();
        let d = compare_trees(&a, &b, &exact);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(matches!(&d[0].kind, DifferenceKind::HardLinks { a, b } if a.0 == 2 && b.0 == 1));
        fs::remove_file(b.join("dir/file2")).unwrap();
        fs::hard_link(b.join("file"), b.join("dir/file2")).unwrap();
        assert_eq!(compare_trees(&a, &b, &exact), vec![]);
        // Holes: same bytes, but one side sparse.
        let f = fs::File::create(a.join("sparse")).unwrap();
        f.set_len(1 << 20).unwrap();
        fs::write(b.join("sparse"), vec![0u8; 1 << 20]).unwrap();
        set_mtime(&b.join("sparse"), mtime_of(&a.join("sparse")), true).unwrap();
        let d = only(&a, &b, &exact);
        assert!(matches!(d.kind, DifferenceKind::Holes { .. }), "{d}");
        assert_eq!(data_ranges(&a.join("sparse")).unwrap(), vec![]);
        fs::remove_file(b.join("sparse")).unwrap();
        fs::remove_file(a.join("sparse")).unwrap();
        // Xattrs.
        rustix::fs::setxattr(
            a.join("file"),
            "user.k",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        // (Both names of the linked inode show it.)
        let d = compare_trees(&a, &b, &exact);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(
            matches!(d[1].kind, DifferenceKind::Xattrs { .. }),
            "{}",
            d[1]
        );
        rustix::fs::setxattr(
            b.join("file"),
            "user.k",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        assert_eq!(compare_trees(&a, &b, &exact), vec![]);
    }

    fn mtime_of(p: &Path) -> SystemTime {
        fs::metadata(p).unwrap().modified().unwrap()
    }

    fn mtime_of_link(p: &Path) -> SystemTime {
        fs::symlink_metadata(p).unwrap().modified().unwrap()
    }
}
