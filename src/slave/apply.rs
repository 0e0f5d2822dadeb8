//! Entry operations and `SetAttr`, applied by path; each one idempotent so a
//! replayed batch is harmless (see [`EntryOp`]).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::nofollow::Entry;
use super::policy::{keep_record, FakeStat, STAT_XATTR};
use super::root::{
    file_type, is_dot, lstat, remove_any, remove_tree, set_user_xattrs, temp_name, timestamps,
    OpError, Root,
};
use crate::proto::{
    listing_digest, Attrs, EntryOp, FailureKind, NodeKind, SpecialKind, TreeDigest, TreeEntry,
};
use crate::relpath::RelPath;

/// Applies one entry operation. `Err` names the path it concerns, which is
/// returned alongside (for `Link` and `Rename` it may be either path).
pub(crate) fn entry(root: &mut Root, op: &EntryOp) -> Result<(), (RelPath, OpError)> {
    match op {
        EntryOp::Mkdir { path, mode } => mkdir(root, path, *mode).map_err(|e| (path.clone(), e)),
        EntryOp::Create { path, mode } => create(root, path, *mode).map_err(|e| (path.clone(), e)),
        EntryOp::Symlink { path, target } => {
            symlink(root, path, target).map_err(|e| (path.clone(), e))
        }
        EntryOp::Link { path, target } => link(root, path, target),
        EntryOp::Mknod {
            path,
            kind,
            mode,
            rdev,
        } => mknod(root, path, *kind, *mode, *rdev).map_err(|e| (path.clone(), e)),
        EntryOp::Unlink { path } => {
            remove(root, path, "cannot unlink").map_err(|e| (path.clone(), e))
        }
        EntryOp::Rmdir { path } => {
            remove(root, path, "cannot remove directory").map_err(|e| (path.clone(), e))
        }
        EntryOp::Rename { from, to } => rename(root, from, to),
        EntryOp::Prune { path, keep, kinds } => prune(root, path, keep, kinds),
    }
}

/// Removes what the master no longer has in directory `path`. A missing
/// directory has nothing to prune.
fn prune(
    root: &mut Root,
    path: &RelPath,
    keep: &[serde_bytes::ByteBuf],
    kinds: &[NodeKind],
) -> Result<(), (RelPath, OpError)> {
    prune_names(root, path, keep).map_err(|e| (path.clone(), e))?;
    if kinds.is_empty() || kinds.len() != keep.len() {
        return Ok(());
    }
    let opened;
    let dir_fd = if path.is_root() {
        root.fd()
    } else {
        let Ok(p) = root.parent(path, false) else {
            return Ok(());
        };
        match rfs::openat(&p.dir, p.name, super::root::DIR_FLAGS, Mode::empty()) {
            Ok(fd) => {
                opened = fd;
                opened.as_fd()
            }
            Err(_) => return Ok(()),
        }
    };
    for (name, kind) in keep.iter().zip(kinds) {
        let Ok(Some(st)) = lstat(dir_fd, OsStr::from_bytes(name)) else {
            continue;
        };
        let have = match node_kind(file_type(&st)) {
            // A device kept as a placeholder is one (see `policy`).
            NodeKind::File
                if *kind == NodeKind::Other
                    && recorded_device(dir_fd, OsStr::from_bytes(name)).is_some() =>
            {
                NodeKind::Other
            }
            have => have,
        };
        if have != *kind {
            let Ok(child) = path.join(OsStr::from_bytes(name)) else {
                continue;
            };
            let e = root.refuse(
                &child,
                FailureKind::Conflict,
                &format!("is a {have:?} here but a {kind:?} on the master"),
            );
            return Err((child, e));
        }
    }
    Ok(())
}

/// Opens the directory `path` to list it; `None` if it is missing.
pub(super) fn open_listed_dir(root: &mut Root, path: &RelPath) -> Result<Option<OwnedFd>, OpError> {
    let fail = |root: &Root, e| root.error(path, "cannot list directory", e);
    if path.is_root() {
        return rustix::io::fcntl_dupfd_cloexec(root.fd(), 0)
            .map(Some)
            .map_err(|e| fail(root, e));
    }
    let p = match root.parent(path, false) {
        Ok(p) => p,
        Err(e) if e.is_enoent() => return Ok(None),
        Err(e) => return Err(e),
    };
    match rfs::openat(&p.dir, p.name, super::root::DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
            Err(root.refuse(path, FailureKind::Unsafe, &format!("not a directory ({e})")))
        }
        Err(e) => Err(fail(root, e)),
    }
}

/// Removes every entry of `path` whose name is not in `keep`.
fn prune_names(
    root: &mut Root,
    path: &RelPath,
    keep: &[serde_bytes::ByteBuf],
) -> Result<(), OpError> {
    let fail = |root: &Root, e| root.error(path, "cannot prune directory", e);
    let Some(dir) = open_listed_dir(root, path)? else {
        return Ok(());
    };
    let keep: std::collections::HashSet<&[u8]> = keep.iter().map(|k| k.as_slice()).collect();
    let mut doomed = Vec::new();
    for entry in rfs::Dir::read_from(&dir).map_err(|e| fail(root, e))? {
        let entry = entry.map_err(|e| fail(root, e))?;
        let name = entry.file_name().to_bytes();
        // A partial being resumed is kept until it goes stale, and so is
        // a file another slave process is building.
        if name != b"."
            && name != b".."
            && !keep.contains(name)
            && !super::partial::is_fresh_partial(dir.as_fd(), name)
            && !super::root::is_live_temp(dir.as_fd(), name)
        {
            doomed.push(name.to_vec());
        }
    }
    for name in &doomed {
        remove_any(dir.as_fd(), OsStr::from_bytes(name)).map_err(|e| fail(root, e))?;
    }
    if !doomed.is_empty() {
        root.note_changed(dir.as_fd());
    }
    Ok(())
}

/// Whether an [`EntryOp::Prune`] of `path` with the master's listing, whose
/// [`listing_digest`] is `digest`, could change anything here. A directory
/// that cannot be listed counts as differing: the `Prune` then reports why.
pub(crate) fn listing_differs(root: &mut Root, path: &RelPath, digest: &[u8; 32]) -> bool {
    let dir = match open_listed_dir(root, path) {
        Ok(Some(dir)) => dir,
        Ok(None) => return false,
        Err(_) => return true,
    };
    let Ok(entries) = rfs::Dir::read_from(&dir) else {
        return true;
    };
    let mut listing = Vec::new();
    for entry in entries {
        let Ok(entry) = entry else { return true };
        let name = entry.file_name();
        if is_dot(name) {
            continue;
        }
        let ft = match entry.file_type() {
            FileType::Unknown => match lstat(&dir, name) {
                Ok(Some(st)) => file_type(&st),
                // Gone since it was listed.
                Ok(None) => continue,
                Err(_) => return true,
            },
            ft => ft,
        };
        listing.push((name.to_bytes().to_vec(), node_kind(ft)));
    }
    listing_digest(&mut listing) != *digest
}

/// Whether the subtree at `path` (a directory) has the [`TreeDigest`]
/// `digest`. Anything that cannot be looked at, or that changes while it is
/// walked, counts as differing: the master then walks the subtree itself.
pub(crate) fn tree_same(root: &mut Root, path: &RelPath, digest: &[u8; 32], owners: bool) -> bool {
    let Ok(Some(dir)) = open_listed_dir(root, path) else {
        return false;
    };
    let Ok(st) = rfs::fstat(&dir) else {
        return false;
    };
    let mut d = TreeDigest::new(owners);
    d.add(&tree_entry(b"", &st, record_of(dir.as_fd(), None)));
    let mut rel = Vec::new();
    tree_walk(dir, &mut rel, &mut d).is_some() && d.finish() == *digest
}

/// The record of `name` in `dir` (of `dir` itself without a name), read by
/// path so that an entry without one costs a single syscall. Only regular
/// files and directories hold one.
pub(super) fn record_of(dir: BorrowedFd<'_>, name: Option<&std::ffi::CStr>) -> Option<FakeStat> {
    let mut path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir)).into_bytes();
    if let Some(name) = name {
        path.push(b'/');
        path.extend_from_slice(name.to_bytes());
    }
    let mut buf = [0u8; 128];
    let n = rfs::lgetxattr(OsStr::from_bytes(&path), STAT_XATTR, &mut buf[..]).ok()?;
    FakeStat::parse(&buf[..n])
}

/// What [`TreeDigest`] covers of the entry at `rel` with status `st`: the
/// brick's values where the policy recorded them instead of applying them
/// (so a copy within the policy is the same tree as its brick).
fn tree_entry<'a>(rel: &'a [u8], st: &rfs::Stat, record: Option<FakeStat>) -> TreeEntry<'a> {
    let (mode, uid, gid) = record.map_or((st.st_mode, st.st_uid, st.st_gid), |r| {
        (r.mode, r.uid, r.gid)
    });
    TreeEntry {
        path: rel,
        kind: node_kind(FileType::from_raw_mode(mode)),
        mode: mode & 0o7777,
        size: st.st_size as u64,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as u32,
        uid,
        gid,
    }
}

/// Adds what is below the directory `dir` (at `rel`, kept as it was on
/// return) to `d`, in [`TreeDigest`]'s order; `None` if it cannot.
fn tree_walk(dir: OwnedFd, rel: &mut Vec<u8>, d: &mut TreeDigest) -> Option<()> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(&dir).ok()? {
        let entry = entry.ok()?;
        if !is_dot(entry.file_name()) {
            names.push(entry.file_name().to_owned());
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let base = rel.len();
    for name in names {
        if base > 0 {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let st = lstat(&dir, name.as_c_str()).ok()??;
        let record = match file_type(&st) {
            FileType::RegularFile | FileType::Directory => {
                record_of(dir.as_fd(), Some(name.as_c_str()))
            }
            _ => None,
        };
        d.add(&tree_entry(rel, &st, record));
        if file_type(&st) == FileType::Directory {
            let sub =
                rfs::openat(&dir, name.as_c_str(), super::root::DIR_FLAGS, Mode::empty()).ok()?;
            tree_walk(sub, rel, d)?;
        }
        rel.truncate(base);
    }
    Some(())
}

/// How [`EntryOp::Prune`] and [`listing_digest`] name a type of entry.
fn node_kind(ft: FileType) -> NodeKind {
    match ft {
        FileType::RegularFile => NodeKind::File,
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        _ => NodeKind::Other,
    }
}

fn mkdir(root: &mut Root, path: &RelPath, mode: u32) -> Result<(), OpError> {
    let p = root.parent(path, true)?;
    let fail = |root: &Root, e| root.error(path, "cannot create directory", e);
    match lstat(&p.dir, p.name).map_err(|e| fail(root, e))? {
        Some(st) if file_type(&st) == FileType::Directory => return Ok(()),
        Some(_) => remove_any(p.dir.as_fd(), p.name).map_err(|e| fail(root, e))?,
        None => {}
    }
    match rfs::mkdirat(&p.dir, p.name, Mode::from_raw_mode(mode & 0o7777)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(fail(root, e)),
    }
    root.note_changed(p.dir.as_fd());
    Ok(())
}

fn create(root: &mut Root, path: &RelPath, mode: u32) -> Result<(), OpError> {
    let p = root.parent(path, true)?;
    let fail = |root: &Root, e| root.error(path, "cannot create file", e);
    match lstat(&p.dir, p.name).map_err(|e| fail(root, e))? {
        Some(st) if file_type(&st) == FileType::RegularFile => return Ok(()),
        Some(_) => remove_any(p.dir.as_fd(), p.name).map_err(|e| fail(root, e))?,
        None => {}
    }
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(root.policy.mode(false, mode));
    match rfs::openat(&p.dir, p.name, flags, mode) {
        Ok(_) | Err(Errno::EXIST) => {}
        Err(e) => return Err(fail(root, e)),
    }
    root.note_changed(p.dir.as_fd());
    Ok(())
}

fn symlink(root: &mut Root, path: &RelPath, target: &[u8]) -> Result<(), OpError> {
    let p = root.parent(path, true)?;
    let fail = |root: &Root, e| root.error(path, "cannot create symlink", e);
    let target = OsStr::from_bytes(target);
    match lstat(&p.dir, p.name).map_err(|e| fail(root, e))? {
        Some(st) if file_type(&st) == FileType::Symlink => {
            let current = rfs::readlinkat(&p.dir, p.name, Vec::new()).map_err(|e| fail(root, e))?;
            if current.as_bytes() == target.as_encoded_bytes() {
                return Ok(());
            }
        }
        // rename(2) cannot put a symlink over a directory.
        Some(st) if file_type(&st) == FileType::Directory => {
            remove_tree(p.dir.as_fd(), p.name).map_err(|e| fail(root, e))?
        }
        _ => {}
    }
    let tmp = temp_name(p.name);
    remove_any(p.dir.as_fd(), tmp.as_ref()).map_err(|e| fail(root, e))?;
    rfs::symlinkat(target, &p.dir, tmp.as_str()).map_err(|e| fail(root, e))?;
    if let Err(e) = rfs::renameat(&p.dir, tmp.as_str(), &p.dir, p.name) {
        let _ = rfs::unlinkat(&p.dir, tmp.as_str(), AtFlags::empty());
        return Err(fail(root, e));
    }
    root.note_changed(p.dir.as_fd());
    Ok(())
}

fn link(root: &mut Root, path: &RelPath, target: &RelPath) -> Result<(), (RelPath, OpError)> {
    let missing = |root: &Root| {
        (
            target.clone(),
            root.refuse(
                target,
                FailureKind::SourceMissing,
                &format!(
                    "cannot link {}: the link target does not exist",
                    root.shown(path)
                ),
            ),
        )
    };
    let t = match root.parent(target, false) {
        Ok(t) => t,
        Err(e) if e.is_enoent() => return Err(missing(root)),
        Err(e) => return Err((target.clone(), e)),
    };
    let tst = match lstat(&t.dir, t.name) {
        Ok(Some(st)) => st,
        Ok(None) => return Err(missing(root)),
        Err(e) => {
            return Err((
                target.clone(),
                root.error(target, "cannot stat link target", e),
            ))
        }
    };
    let p = root.parent(path, true).map_err(|e| (path.clone(), e))?;
    let fail = |root: &Root, e| (path.clone(), root.error(path, "cannot create hard link", e));
    match lstat(&p.dir, p.name).map_err(|e| fail(root, e))? {
        Some(st) if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino => return Ok(()),
        Some(st) if file_type(&st) == FileType::Directory => {
            remove_tree(p.dir.as_fd(), p.name).map_err(|e| fail(root, e))?
        }
        _ => {}
    }
    let tmp = temp_name(p.name);
    remove_any(p.dir.as_fd(), tmp.as_ref()).map_err(|e| fail(root, e))?;
    rfs::linkat(&t.dir, t.name, &p.dir, tmp.as_str(), AtFlags::empty())
        .map_err(|e| fail(root, e))?;
    if let Err(e) = rfs::renameat(&p.dir, tmp.as_str(), &p.dir, p.name) {
        let _ = rfs::unlinkat(&p.dir, tmp.as_str(), AtFlags::empty());
        return Err(fail(root, e));
    }
    root.note_changed(p.dir.as_fd());
    Ok(())
}

fn mknod(
    root: &mut Root,
    path: &RelPath,
    kind: SpecialKind,
    mode: u32,
    rdev: u64,
) -> Result<(), OpError> {
    let ft = match kind {
        SpecialKind::Fifo => FileType::Fifo,
        SpecialKind::Socket => FileType::Socket,
        SpecialKind::CharDevice => FileType::CharacterDevice,
        SpecialKind::BlockDevice => FileType::BlockDevice,
    };
    let is_dev = matches!(kind, SpecialKind::CharDevice | SpecialKind::BlockDevice);
    // Unless allowed, a device is an empty file recording it (see `policy`).
    let fake = is_dev && !root.policy.allow_devices;
    let p = root.parent(path, true)?;
    let fail = |root: &Root, e| root.error(path, "cannot create special file", e);
    let dir = p.dir.as_fd();
    match Entry::open(dir, p.name).map_err(|e| fail(root, e))? {
        Some(e) if !fake && e.file_type() == ft && (!is_dev || e.st.st_rdev == rdev) => {
            return Ok(())
        }
        Some(_) if fake && recorded_device(dir, p.name).is_some_and(|r| r.is(ft, rdev)) => {
            return Ok(())
        }
        Some(e) if e.file_type() == FileType::Directory => {
            remove_tree(dir, p.name).map_err(|e| fail(root, e))?
        }
        _ => {}
    }
    let tmp = temp_name(p.name);
    remove_any(dir, tmp.as_ref()).map_err(|e| fail(root, e))?;
    let made = if fake {
        make_placeholder(dir, &tmp, ft, mode, rdev)
    } else {
        rfs::mknodat(
            dir,
            tmp.as_str(),
            ft,
            Mode::from_raw_mode(root.policy.mode(false, mode)),
            if is_dev { rdev } else { 0 },
        )
    };
    match made {
        Ok(()) => {}
        Err(Errno::PERM) if is_dev => {
            return Err(root.refuse(
                path,
                FailureKind::Unsupported,
                "device nodes can only be created when the slave runs as root",
            ))
        }
        Err(e) => return Err(fail(root, e)),
    }
    if let Err(e) = rfs::renameat(dir, tmp.as_str(), dir, p.name) {
        let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(fail(root, e));
    }
    root.note_changed(dir);
    Ok(())
}

/// Mode of the empty regular file standing for a device node.
const PLACEHOLDER_MODE: u32 = 0o600;

/// Creates `name` in `dir` as the placeholder of a device of type `ft`,
/// permission bits `mode` and number `rdev`: an empty regular file with
/// the device in its record.
fn make_placeholder(
    dir: BorrowedFd<'_>,
    name: &str,
    ft: FileType,
    mode: u32,
    rdev: u64,
) -> Result<(), Errno> {
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(PLACEHOLDER_MODE))?;
    let have = FakeStat::on_disk(&rfs::fstat(&fd)?);
    let want = FakeStat {
        mode: ft.as_raw_mode() | (mode & 0o7777),
        rdev,
        ..have
    };
    keep_record(fd.as_fd(), &have, &want, true)
}

/// The device recorded by the placeholder at `name` in `dir`, if that is
/// one: a regular file whose record names a device.
fn recorded_device(dir: BorrowedFd<'_>, name: &OsStr) -> Option<FakeStat> {
    let e = Entry::open(dir, name).ok()??;
    if e.file_type() != FileType::RegularFile {
        return None;
    }
    e.record().filter(FakeStat::is_device)
}

/// `Unlink` and `Rmdir`: the journal may not know the type, so whatever is
/// there goes; nothing there (even no parent) is success.
fn remove(root: &mut Root, path: &RelPath, what: &str) -> Result<(), OpError> {
    let p = match root.parent(path, false) {
        Ok(p) => p,
        Err(e) if e.is_enoent() => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_any(p.dir.as_fd(), p.name).map_err(|e| root.error(path, what, e))?;
    root.note_changed(p.dir.as_fd());
    Ok(())
}

fn rename(root: &mut Root, from: &RelPath, to: &RelPath) -> Result<(), (RelPath, OpError)> {
    let missing = |root: &Root| {
        (
            from.clone(),
            root.refuse(
                from,
                FailureKind::SourceMissing,
                &format!(
                    "cannot rename to {}: the source does not exist",
                    root.shown(to)
                ),
            ),
        )
    };
    let f = match root.parent(from, false) {
        Ok(f) => f,
        Err(e) if e.is_enoent() => return Err(missing(root)),
        Err(e) => return Err((from.clone(), e)),
    };
    let fst = match lstat(&f.dir, f.name) {
        Ok(Some(st)) => st,
        Ok(None) => return Err(missing(root)),
        Err(e) => {
            return Err((
                from.clone(),
                root.error(from, "cannot stat rename source", e),
            ))
        }
    };
    if from == to {
        return Ok(());
    }
    let t = root.parent(to, true).map_err(|e| (to.clone(), e))?;
    let fail = |root: &Root, e| {
        (
            to.clone(),
            root.error(to, &format!("cannot rename {} here", root.shown(from)), e),
        )
    };
    let tst = lstat(&t.dir, t.name).map_err(|e| fail(root, e))?;
    if let Some(tst) = &tst {
        if tst.st_dev == fst.st_dev
            && tst.st_ino == fst.st_ino
            && file_type(&fst) != FileType::Directory
        {
            // Two names of one file: rename(2) would do nothing, leaving both.
            rfs::unlinkat(&f.dir, f.name, AtFlags::empty()).map_err(|e| fail(root, e))?;
            root.note_changed(f.dir.as_fd());
            return Ok(());
        }
    }
    match rfs::renameat(&f.dir, f.name, &t.dir, t.name) {
        Ok(()) => {}
        // Something of another type, or a non-empty directory, is in the way:
        // the rename replaces it. Never remove an ancestor of the source.
        Err(Errno::ISDIR | Errno::NOTDIR | Errno::NOTEMPTY | Errno::EXIST)
            if tst.is_some() && !from.starts_with(to) =>
        {
            remove_any(t.dir.as_fd(), t.name).map_err(|e| fail(root, e))?;
            rfs::renameat(&f.dir, f.name, &t.dir, t.name).map_err(|e| fail(root, e))?;
        }
        Err(e) => return Err(fail(root, e)),
    }
    root.note_changed(f.dir.as_fd());
    root.note_changed(t.dir.as_fd());
    Ok(())
}

/// Applies mode, owner and times as the policy allows, and keeps the
/// record of the brick's values where they differ (see `policy`). A path
/// that is not there is fine: a later journal record removed it.
pub(crate) fn set_attr(root: &mut Root, path: &RelPath, attrs: &Attrs) -> Result<(), OpError> {
    let times = timestamps(attrs.mtime_sec, attrs.mtime_nsec);
    let policy = root.policy;
    if path.is_root() {
        // The root's own owner, mode and ACLs are the slave operator's,
        // never the master's: they are only recorded.
        let fd = root.fd();
        let r = (|| {
            if let Some(x) = &attrs.xattrs {
                set_user_xattrs(fd, &policy.xattrs(x, true))?;
            }
            let st = rfs::fstat(fd)?;
            let want = FakeStat::of(FileType::Directory, 0, attrs, &st, &policy);
            keep_record(fd, &FakeStat::on_disk(&st), &want, false)?;
            rfs::futimens(fd, &times)
        })();
        if r.is_ok() {
            root.note_root_changed();
        }
        return r.map_err(|e| root.error(path, "cannot set attributes", e));
    }
    let p = match root.parent(path, false) {
        Ok(p) => p,
        Err(e) if e.is_enoent() => return Ok(()),
        Err(e) => return Err(e),
    };
    let dir = p.dir.as_fd();
    // The inode whose attributes were set, when it could be opened.
    let mut changed = None;
    let r = (|| {
        // Opened once: everything below applies to what was looked at.
        let Some(e) = Entry::open(dir, p.name)? else {
            return Ok(());
        };
        let ft = e.file_type();
        if let Some((u, g)) = policy.chown(attrs.uid, attrs.gid) {
            e.chown(u, g)?;
        }
        let device = match ft {
            FileType::RegularFile if !policy.allow_devices => {
                e.record().filter(FakeStat::is_device)
            }
            _ => None,
        };
        let mode = match device {
            Some(_) => PLACEHOLDER_MODE,
            None => policy.mode(ft == FileType::Directory, attrs.mode),
        };
        e.chmod(dir, p.name, mode)?;
        let fd = match e.reopen(dir, p.name) {
            Ok(Some(fd)) => fd,
            // Symlinks, FIFOs, sockets, devices hold no xattrs, no record;
            // a copy its (non-root) slave may not read keeps none either.
            Ok(None) => return rfs::utimensat(dir, p.name, &times, AtFlags::SYMLINK_NOFOLLOW),
            Err(Errno::ACCESS) if attrs.xattrs.is_none() => {
                return rfs::utimensat(dir, p.name, &times, AtFlags::SYMLINK_NOFOLLOW)
            }
            Err(e) => return Err(e),
        };
        if let Some(x) = &attrs.xattrs {
            set_user_xattrs(fd.as_fd(), &policy.xattrs(x, false))?;
        }
        let st = rfs::fstat(&fd)?;
        let (ft, rdev) = device.map_or((ft, 0), |r| (r.file_type(), r.rdev));
        let want = FakeStat::of(ft, rdev, attrs, &st, &policy);
        keep_record(fd.as_fd(), &FakeStat::on_disk(&st), &want, false)?;
        rfs::futimens(&fd, &times)?;
        changed = Some(fd);
        Ok(())
    })();
    match r {
        Ok(()) | Err(Errno::NOENT) => {
            root.note_changed(dir);
            if let Some(fd) = changed {
                root.note_inode(fd.as_fd());
            }
            Ok(())
        }
        Err(e) => Err(root.error(path, "cannot set attributes", e)),
    }
}
