//! The slave root and confined, fd-relative path resolution (invariant 3).
//!
//! The root is opened once as a directory fd. A [`RelPath`] is never turned
//! back into a string path: its parent is reached by opening one component
//! at a time with `O_DIRECTORY | O_NOFOLLOW` relative to the previous
//! directory fd, so a symlink (or a non-directory) anywhere in the parent
//! chain stops the walk with [`FailureKind::Unsafe`]. The last component is
//! then used only with `*at` calls that do not follow symlinks.
//!
//! Opened parent directories are kept (up to [`DIR_CACHE_MAX`]) so that
//! files of the same directory do not walk the path again; the cache is
//! dropped whenever an operation may have moved or removed a directory
//! ([`Root::forget_dirs`]) and at every commit, so a cached fd always names
//! what a fresh walk would find, as far as the slave's own changes go.
//!
//! This module also remembers which file systems were changed since the last
//! commit, so a commit can `syncfs` each of them (a mount point below the root
//! is a different file system than the root itself).

use std::ffi::{CStr, OsStr};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use crate::proto::{Failure, FailureKind};
use crate::proto::{FileStamp, Xattr};
use crate::relpath::RelPath;

use super::durable::{Dirty, Durability, Synced};
use super::policy::{is_managed_xattr, Policy};

/// Flags used to open each directory while walking a path.
pub(crate) const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::RDONLY);

/// Mode of parent directories created because the journal was replayed
/// partially (their real mode arrives later with a `SetAttr`).
const PARENT_MODE: u32 = 0o755;

/// A request that did not take effect; becomes a [`Failure`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpError {
    pub kind: FailureKind,
    pub errno: Option<i32>,
    /// Names the slave path and the cause.
    pub message: String,
}

impl OpError {
    /// Whether the cause is "no such file or directory".
    pub fn is_enoent(&self) -> bool {
        self.errno == Some(Errno::NOENT.raw_os_error())
    }

    pub fn into_failure(self, seq: u64, path: RelPath) -> Failure {
        Failure {
            seq,
            path,
            kind: self.kind,
            errno: self.errno,
            message: self.message,
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The failure kind of an OS error on the final component of a path.
pub(crate) fn kind_of(e: Errno) -> FailureKind {
    match e {
        Errno::NOSPC | Errno::DQUOT => FailureKind::NoSpace,
        Errno::ACCESS | Errno::PERM => FailureKind::Permission,
        Errno::NOTSUP => FailureKind::Unsupported,
        Errno::NOTEMPTY
        | Errno::INVAL
        | Errno::EXIST
        | Errno::NOTDIR
        | Errno::ISDIR
        | Errno::LOOP
        | Errno::MLINK => FailureKind::Conflict,
        _ => FailureKind::Io,
    }
}

/// Converts an `std::io::Error` (from `File` reads and writes) to an errno.
pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

/// Most parent directories kept open between requests, whatever the
/// file descriptor limit allows (see [`super::limits`]).
pub(crate) const DIR_CACHE_MAX: usize = 1024;

/// The parent directory of a path, opened, and the path's last component.
pub(crate) struct Parent<'a> {
    pub dir: Rc<OwnedFd>,
    pub name: &'a OsStr,
    /// What is known of `dir`.
    pub info: DirInfo,
}

/// Facts about an opened directory, learnt once per cached directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirInfo {
    /// Its file system.
    pub dev: u64,
    /// Whether new files in it may inherit an ACL (it has a default ACL, or
    /// that cannot be told): only then can a freshly created file carry a
    /// synced extended attribute of its own.
    pub inherits_xattrs: bool,
}

impl DirInfo {
    fn of(dir: BorrowedFd<'_>) -> Result<DirInfo, Errno> {
        let dev = rfs::fstat(dir)?.st_dev;
        let inherits_xattrs = !matches!(
            rfs::fgetxattr(dir, "system.posix_acl_default", &mut [0u8; 0][..]),
            Err(Errno::NODATA | Errno::NOTSUP)
        );
        Ok(DirInfo {
            dev,
            inherits_xattrs,
        })
    }
}

/// The slave root: its directory fd, how to show it, and the file systems
/// touched since the last commit.
pub(crate) struct Root {
    fd: OwnedFd,
    shown: String,
    /// What changed since the last commit, for making it durable.
    dirty: Dirty,
    /// Opened parent directories by path (see the module docs).
    dirs: std::collections::HashMap<RelPath, (Rc<OwnedFd>, DirInfo)>,
    /// How many `dirs` may hold (sized from the fd limit).
    dir_cache_max: usize,
    /// What the slave agrees to arm.
    pub policy: Policy,
}

impl Root {
    /// Opens `path` as the root. The root itself may be reached through
    /// symlinks: it is the operator's configuration, not wire data.
    pub fn open(path: &Path, policy: Policy, dir_cache_max: usize) -> Result<Root, Errno> {
        let fd = rfs::openat(
            CWD,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let dev = rfs::fstat(&fd)?.st_dev;
        let dirty = Dirty::new(Durability::of(fd.as_fd())?, dev);
        Ok(Root {
            fd,
            shown: path.display().to_string(),
            dirty,
            dirs: std::collections::HashMap::new(),
            dir_cache_max: dir_cache_max.max(1),
            policy,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `<root>/<rel>` for messages.
    pub fn shown(&self, rel: &RelPath) -> String {
        if rel.is_root() {
            self.shown.clone()
        } else {
            format!("{}/{}", self.shown.trim_end_matches('/'), rel)
        }
    }

    /// Whether the root holds no entries at all.
    pub fn is_empty(&self) -> Result<bool, Errno> {
        for entry in Dir::read_from(&self.fd)? {
            if !is_dot(entry?.file_name()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// An error about `rel`: `<root>/<rel>: <what>: <os error>`.
    pub fn error(&self, rel: &RelPath, what: &str, e: Errno) -> OpError {
        OpError {
            kind: kind_of(e),
            errno: Some(e.raw_os_error()),
            message: format!("{}: {what}: {}", self.shown(rel), std::io::Error::from(e)),
        }
    }

    /// An error about `rel` with its own kind and no errno.
    pub fn refuse(&self, rel: &RelPath, kind: FailureKind, why: &str) -> OpError {
        OpError {
            kind,
            errno: None,
            message: format!("{}: {why}", self.shown(rel)),
        }
    }

    /// Size and mtime of the regular file at `rel`, if there is one that can
    /// be looked at safely (a quick check for the master, which then sends
    /// it only if they differ from the brick's).
    pub fn stamp(&mut self, rel: &RelPath) -> Option<FileStamp> {
        let p = self.parent(rel, false).ok()?;
        let st = lstat(p.dir.as_fd(), p.name).ok()??;
        (file_type(&st) == FileType::RegularFile).then_some(FileStamp {
            size: st.st_size as u64,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
        })
    }

    /// Opens the parent directory of `rel` without following any symlink.
    ///
    /// With `create`, missing parent directories are made (mode 0755): the
    /// journal may be replayed partially. A symlink or a non-directory in the
    /// way is refused as [`FailureKind::Unsafe`]. Without `create`, a missing
    /// parent is an error for which [`OpError::is_enoent`] holds. The root
    /// itself has no parent: that is refused as `Unsafe` too.
    pub fn parent<'a>(&mut self, rel: &'a RelPath, create: bool) -> Result<Parent<'a>, OpError> {
        let Some((parent, name)) = rel.split_last() else {
            return Err(self.refuse(
                rel,
                FailureKind::Unsafe,
                "this operation is not allowed on the slave root itself",
            ));
        };
        if let Some((dir, info)) = self.dirs.get(&parent) {
            return Ok(Parent {
                dir: dir.clone(),
                name,
                info: *info,
            });
        }
        let mut cur = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| self.error(rel, "cannot duplicate the root fd", e))?;
        let mut walked: Vec<u8> = Vec::new();
        for comp in parent.components() {
            if !walked.is_empty() {
                walked.push(b'/');
            }
            walked.extend_from_slice(comp.as_encoded_bytes());
            let next = match rfs::openat(&cur, comp, DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rfs::mkdirat(&cur, comp, Mode::from_raw_mode(PARENT_MODE)) {
                        Ok(()) => self.note_changed(cur.as_fd()),
                        Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(self.error(
                                rel,
                                &format!(
                                    "cannot create parent directory {}",
                                    self.shown_bytes(&walked)
                                ),
                                e,
                            ))
                        }
                    }
                    rfs::openat(&cur, comp, DIR_FLAGS, Mode::empty())
                }
                other => other,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    return Err(OpError {
                        kind: FailureKind::Unsafe,
                        errno: Some(e.raw_os_error()),
                        message: format!(
                        "{}: refusing to resolve through {}: it is a symlink or not a directory",
                        self.shown(rel),
                        self.shown_bytes(&walked)
                    ),
                    })
                }
                Err(e) => {
                    return Err(self.error(
                        rel,
                        &format!("cannot open parent directory {}", self.shown_bytes(&walked)),
                        e,
                    ))
                }
            };
        }
        let info = DirInfo::of(cur.as_fd())
            .map_err(|e| self.error(rel, "cannot look at the parent directory", e))?;
        let dir = Rc::new(cur);
        if self.dirs.len() >= self.dir_cache_max {
            self.dirs.clear();
        }
        self.dirs.insert(parent, (dir.clone(), info));
        Ok(Parent { dir, name, info })
    }

    /// Drops the cached directories: an operation may have renamed or
    /// removed one of them (or one above).
    pub fn forget_dirs(&mut self) {
        self.dirs.clear();
    }

    fn shown_bytes(&self, walked: &[u8]) -> String {
        format!(
            "{}/{}",
            self.shown.trim_end_matches('/'),
            walked.escape_ascii()
        )
    }

    /// Remembers that the file system of `dir` changed since the last commit.
    pub fn note_changed(&mut self, dir: BorrowedFd<'_>) {
        // If fstat fails we cannot tell the file system: sync the root's only
        // (the directory fd is still valid, so this practically never happens).
        let Ok(st) = rfs::fstat(dir) else { return };
        self.note_changed_dev(st.st_dev, dir);
    }

    /// [`Root::note_changed`] for a directory whose file system is known.
    pub fn note_changed_dev(&mut self, dev: u64, dir: BorrowedFd<'_>) {
        self.dirty.note_dir(dev, dir);
    }

    /// Notes that the contents or attributes of the file or directory open
    /// as `fd` changed (see `durable`).
    pub fn note_inode(&mut self, fd: BorrowedFd<'_>) {
        self.dirty.note_inode(fd);
    }

    /// [`Root::note_inode`] of the root itself.
    pub fn note_root_changed(&mut self) {
        self.dirty.note_inode(self.fd.as_fd());
    }

    /// How the root's file system is made durable.
    pub fn durability(&self) -> Durability {
        self.dirty.mode()
    }

    /// Makes every change since the last call durable, with the files open
    /// as `extra` (temp files about to be renamed into place).
    pub fn sync_all(&mut self, extra: &[BorrowedFd<'_>]) -> Result<Synced, Errno> {
        self.dirty.sync(self.fd.as_fd(), extra)
    }

    /// [`Root::sync_all`] with the root directory's own inode among what is
    /// made durable (its xattrs changed: see `commits`).
    pub fn sync_all_and_root(&mut self) -> Result<Synced, Errno> {
        self.dirty.sync(self.fd.as_fd(), &[self.fd.as_fd()])
    }
}

/// `.` or `..`
pub(crate) fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// `lstat` of `name` in `dir`; `None` if nothing is there.
pub(crate) fn lstat(dir: impl AsFd, name: impl rustix::path::Arg) -> Result<Option<Stat>, Errno> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Removes whatever is at `name` in `dir` (recursively for a directory);
/// nothing there is success.
pub(crate) fn remove_any(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => remove_tree(dir, name),
        Err(e) => Err(e),
    }
}

/// Removes the directory `name` in `dir` and everything below it, fd-relative
/// and never following a symlink. A non-directory there is unlinked; nothing
/// there is success.
pub(crate) fn remove_tree(
    dir: BorrowedFd<'_>,
    name: impl rustix::path::Arg + Copy,
) -> Result<(), Errno> {
    let sub = match rfs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return match rfs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    // Entries that exist for the whole read are returned exactly once even if
    // others are removed meanwhile; a few passes cover concurrent creations.
    let mut attempts = 0;
    loop {
        for entry in Dir::read_from(&sub)? {
            let entry = entry?;
            let child = entry.file_name();
            if is_dot(child) {
                continue;
            }
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => {
                    lstat(&sub, child)?.is_some_and(|st| file_type(&st) == FileType::Directory)
                }
                _ => false,
            };
            if is_dir {
                remove_tree(sub.as_fd(), child)?;
            } else {
                match rfs::unlinkat(&sub, child, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(Errno::ISDIR) => remove_tree(sub.as_fd(), child)?,
                    Err(e) => return Err(e),
                }
            }
        }
        match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            Err(Errno::NOTEMPTY) if attempts < 3 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A temporary name in the same directory for the final name `name`, short
/// enough that a 255-byte final name still works.
/// The temporary name a file is built under before it is renamed over
/// `name`. It carries this process's id so that two slave processes (one of
/// them stale, e.g. frozen while the master reconnected) never share one;
/// leftovers of a killed process are removed by the master's next prune.
pub(crate) fn temp_name(name: &OsStr) -> String {
    let hash = blake3::hash(name.as_encoded_bytes());
    format!(".georep.{}.{}.tmp", &hash.to_hex()[..16], own_pid())
}

/// How recently another process's temporary file must have been written
/// for a prune to leave it alone.
const LIVE_TEMP_SECS: i64 = 60;

/// Whether a prune leaves `name` in `dir` alone: the temporary file of
/// another slave process that is alive and wrote to it within
/// [`LIVE_TEMP_SECS`]. Several workers (the bricks of a distributed volume)
/// write into one slave directory, and one's prune must not take the file
/// another is building; a killed or frozen process's leftovers still go.
pub(crate) fn is_live_temp(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    let Some(pid) = name
        .strip_prefix(b".georep.")
        .and_then(|n| n.strip_suffix(b".tmp"))
        .and_then(|n| n.rsplit(|b| *b == b'.').next())
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return false;
    };
    if pid as u32 == own_pid() || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return false;
    }
    let Ok(st) = rfs::statat(
        dir,
        <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name),
        AtFlags::SYMLINK_NOFOLLOW,
    ) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    now - st.st_ctime < LIVE_TEMP_SECS
}

/// This process's id (asked once: it is part of every temp name).
fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Whether the slave runs as root (asked once: it decides every chown).
pub(crate) fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| rustix::process::geteuid().is_root())
}

/// The owner to apply, if the slave runs as root and the master sent one.
pub(crate) fn owner(
    uid: Option<u32>,
    gid: Option<u32>,
) -> Option<(Option<rfs::Uid>, Option<rfs::Gid>)> {
    if !is_root() {
        return None;
    }
    let uid = uid.filter(|&u| u != u32::MAX).map(rfs::Uid::from_raw);
    let gid = gid.filter(|&g| g != u32::MAX).map(rfs::Gid::from_raw);
    if uid.is_none() && gid.is_none() {
        None
    } else {
        Some((uid, gid))
    }
}

/// Makes the synced xattrs (`user.*`, POSIX ACLs) of the open file or
/// directory `fd` exactly `want` (other names are left alone).
pub(crate) fn set_user_xattrs(fd: BorrowedFd<'_>, want: &[Xattr]) -> Result<(), Errno> {
    remove_other_xattrs(fd, want)?;
    add_xattrs(fd, want)
}

/// [`set_user_xattrs`] for a file just created in a directory whose new
/// files inherit no ACL: it has no synced xattrs yet, so there is nothing
/// to list or remove.
pub(crate) fn set_fresh_xattrs(
    fd: BorrowedFd<'_>,
    want: &[Xattr],
    inherits: bool,
) -> Result<(), Errno> {
    if inherits {
        set_user_xattrs(fd, want)
    } else {
        add_xattrs(fd, want)
    }
}

/// Removes the synced xattrs of `fd` whose name is not in `want`.
fn remove_other_xattrs(fd: BorrowedFd<'_>, want: &[Xattr]) -> Result<(), Errno> {
    let mut list = vec![0u8; 64 * 1024];
    let n = match rfs::flistxattr(fd, &mut list[..]) {
        Ok(n) => n,
        Err(Errno::RANGE) => {
            let len = rfs::flistxattr_query(fd)?;
            list.resize(len, 0);
            rfs::flistxattr(fd, &mut list[..])?
        }
        Err(Errno::NOTSUP) if want.is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in list[..n].split(|b| *b == 0) {
        if is_managed_xattr(name) && !want.iter().any(|x| x.name.as_slice() == name) {
            match rfs::fremovexattr(fd, name) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Sets each synced xattr of `want` on `fd`.
fn add_xattrs(fd: BorrowedFd<'_>, want: &[Xattr]) -> Result<(), Errno> {
    for x in want {
        if !is_managed_xattr(&x.name) {
            continue;
        }
        match rfs::fsetxattr(fd, x.name.as_slice(), &x.value, rfs::XattrFlags::empty()) {
            Ok(()) => {}
            // The file system cannot hold this attribute (ext4 keeps them in
            // one block): retrying will not help.
            Err(Errno::NOSPC | Errno::TOOBIG | Errno::RANGE) => return Err(Errno::NOTSUP),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Modification (and access) time as `utimensat` wants them.
pub(crate) fn timestamps(mtime_sec: i64, mtime_nsec: u32) -> rfs::Timestamps {
    let t = rfs::Timespec {
        tv_sec: mtime_sec,
        tv_nsec: mtime_nsec.into(),
    };
    rfs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}
