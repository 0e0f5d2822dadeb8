//! One directory of the master against the slave's: pure, so every kind of
//! difference is tested without a slave.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::FileType;
use serde::Serialize;

use crate::proto::ScanEntry;
use crate::relpath::RelPath;

/// An entry of the master's directory: what the slave should show, and
/// when it last changed on the master (`st_ctime`, nanoseconds).
#[derive(Debug, Clone)]
pub struct MasterEntry {
    pub entry: ScanEntry,
    pub changed_ns: i64,
}

/// What differs at one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum What {
    Missing,
    Extra,
    Type {
        master: String,
        slave: String,
    },
    Content,
    Size {
        master: u64,
        slave: u64,
    },
    Mode {
        master: u32,
        slave: u32,
    },
    Owner {
        master: String,
        slave: String,
    },
    Mtime {
        master: String,
        slave: String,
    },
    Target {
        master: String,
        slave: String,
    },
    Device {
        master: u64,
        slave: u64,
    },
    HardLinks,
    /// The path could not be read on one side.
    Unreadable {
        why: String,
    },
}

/// One difference; `in_flight` when the master changed it after the
/// point the slave is known to have caught up with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub path: String,
    #[serde(flatten)]
    pub what: What,
    pub in_flight: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.in_flight {
            write!(f, "in flight: ")?;
        }
        let p = &self.path;
        match &self.what {
            What::Missing => write!(f, "missing on slave {p}"),
            What::Extra => write!(f, "extra on slave {p}"),
            What::Type { master, slave } => write!(f, "type {master} vs {slave} {p}"),
            What::Content => write!(f, "differs content {p}"),
            What::Size { master, slave } => write!(f, "size {master} vs {slave} {p}"),
            What::Mode { master, slave } => write!(f, "mode {master:04o} vs {slave:04o} {p}"),
            What::Owner { master, slave } => write!(f, "owner {master} vs {slave} {p}"),
            What::Mtime { master, slave } => write!(f, "mtime {master} vs {slave} {p}"),
            What::Target { master, slave } => {
                write!(f, "symlink target {master:?} vs {slave:?} {p}")
            }
            What::Device { master, slave } => write!(f, "device {master} vs {slave} {p}"),
            What::HardLinks => write!(f, "hard-link group {p}"),
            What::Unreadable { why } => write!(f, "unreadable {p}: {why}"),
        }
    }
}

/// Gives the content hash of a master file (or why it cannot).
pub type HashMaster<'a> = dyn FnMut(&RelPath, &MasterEntry) -> Result<[u8; 32], String> + 'a;

/// What one directory's comparison needs besides the two listings.
pub struct DirContext<'a> {
    pub dir: &'a RelPath,
    /// Changes on the master after this (nanoseconds) may still be on
    /// their way: a difference they explain is in flight.
    pub cutoff_ns: i64,
    /// The master's directory itself changed after the cutoff (an entry
    /// removed there may not be removed on the slave yet).
    pub dir_in_flight: bool,
    /// Numeric owners are compared (the master sends them).
    pub owners: bool,
    /// Regular files' contents are compared.
    pub content: bool,
    /// Directories' mtimes are compared (not those of a GlusterFS volume:
    /// georep does not keep them equal; see the README, "Times").
    pub dir_mtimes: bool,
}

/// Compares the master's entries of a directory with the slave's (both
/// sorted by name), reporting each difference to `found`, and returns the
/// names of the subdirectories both hold, to be compared next. `hash`
/// gives the content hash of a master file, asked only for a file the
/// slave hashed and whose size matches.
pub fn compare_dir(
    cx: &DirContext,
    master: &[MasterEntry],
    slave: &[ScanEntry],
    hash: &mut HashMaster,
    found: &mut dyn FnMut(Finding),
) -> Vec<Vec<u8>> {
    let mut subdirs = Vec::new();
    let (mut m, mut s) = (master.iter().peekable(), slave.iter().peekable());
    loop {
        let order = match (m.peek(), s.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => a.entry.name.cmp(&b.name),
        };
        let (me, se) = match order {
            std::cmp::Ordering::Less => (m.next(), None),
            std::cmp::Ordering::Greater => (None, s.next()),
            std::cmp::Ordering::Equal => (m.next(), s.next()),
        };
        let name = match (me, se) {
            (Some(e), _) => e.entry.name.clone(),
            (None, Some(e)) => e.name.clone(),
            (None, None) => break,
        };
        let Ok(path) = cx.dir.join(OsStr::from_bytes(&name)) else {
            continue;
        };
        let shown = path.to_string();
        let mut report = |what: What, in_flight: bool| {
            found(Finding {
                path: shown.clone(),
                what,
                in_flight,
            })
        };
        match (me, se) {
            (Some(me), None) => report(What::Missing, me.changed_ns > cx.cutoff_ns),
            (None, Some(_)) => report(What::Extra, cx.dir_in_flight),
            (Some(me), Some(se)) => {
                let in_flight = me.changed_ns > cx.cutoff_ns;
                let m = &me.entry;
                let (mt, st) = (kind(m.mode), kind(se.mode));
                if mt != st {
                    report(
                        What::Type {
                            master: mt.into(),
                            slave: st.into(),
                        },
                        in_flight,
                    );
                    continue;
                }
                for what in entry_differences(cx, m, se) {
                    report(what, in_flight);
                }
                if mt == "file" && cx.content && m.size == se.size {
                    match (&se.hash, hash(&path, me)) {
                        (None, _) => report(
                            What::Unreadable {
                                why: "cannot hash the slave's copy".into(),
                            },
                            in_flight,
                        ),
                        (_, Err(why)) => report(What::Unreadable { why }, in_flight),
                        (Some(s), Ok(h)) if *s != h => report(What::Content, in_flight),
                        _ => {}
                    }
                }
                if mt == "dir" {
                    subdirs.push(name);
                }
            }
            (None, None) => {}
        }
    }
    subdirs
}

/// The differences of attributes between two entries of the same type.
fn entry_differences(cx: &DirContext, m: &ScanEntry, s: &ScanEntry) -> Vec<What> {
    let mut out = Vec::new();
    match kind(m.mode) {
        "file" | "dir" => {
            if kind(m.mode) == "file" && m.size != s.size {
                out.push(What::Size {
                    master: m.size,
                    slave: s.size,
                });
            }
            if m.mode & 0o7777 != s.mode & 0o7777 {
                out.push(What::Mode {
                    master: m.mode & 0o7777,
                    slave: s.mode & 0o7777,
                });
            }
            if cx.owners && (m.uid, m.gid) != (s.uid, s.gid) {
                out.push(What::Owner {
                    master: format!("{}:{}", m.uid, m.gid),
                    slave: format!("{}:{}", s.uid, s.gid),
                });
            }
            let compared = kind(m.mode) == "file" || cx.dir_mtimes;
            if compared && (m.mtime_sec, m.mtime_nsec) != (s.mtime_sec, s.mtime_nsec) {
                out.push(What::Mtime {
                    master: format!("{}.{:09}", m.mtime_sec, m.mtime_nsec),
                    slave: format!("{}.{:09}", s.mtime_sec, s.mtime_nsec),
                });
            }
        }
        "symlink" if m.target != s.target => out.push(What::Target {
            master: shown_target(&m.target),
            slave: shown_target(&s.target),
        }),
        "char-device" | "block-device" if m.rdev != s.rdev => out.push(What::Device {
            master: m.rdev,
            slave: s.rdev,
        }),
        _ => {}
    }
    out
}

fn shown_target(t: &Option<serde_bytes::ByteBuf>) -> String {
    t.as_ref()
        .map_or_else(String::new, |t| String::from_utf8_lossy(t).into_owned())
}

/// The name of the type in `st_mode`.
pub fn kind(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "char-device",
        FileType::BlockDevice => "block-device",
        FileType::Unknown => "unknown",
    }
}
