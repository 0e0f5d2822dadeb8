//! The master's view of its brick through one directory handle: every path
//! below it is resolved by the kernel (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`), so a record replayed after an ancestor became a
//! symlink never makes the master read (content, attributes, xattrs) from
//! wherever that symlink points, and no lstat of each ancestor is needed.
//!
//! Kernels without `openat2` (before 5.6) get the same answer, less
//! atomically: each ancestor is checked with lstat, then the path opened
//! without following its last component.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

use crate::relpath::RelPath;

/// A brick opened once; see the module docs.
#[derive(Debug)]
pub struct BrickDir {
    path: PathBuf,
    /// `None` if the brick could not be opened: nothing resolves then.
    fd: Option<OwnedFd>,
}

/// A path opened as `O_PATH` (no read access, no side effects) beneath the
/// brick; the last component is not followed, so it may be a symlink.
pub struct Handle {
    /// Only for `fstat` and `/proc/self/fd` (no read access).
    fd: File,
}

impl Handle {
    /// `lstat` of the path it was opened as.
    pub fn metadata(&self) -> io::Result<fs::Metadata> {
        // fstat works on an O_PATH descriptor.
        self.fd.metadata()
    }

    /// This very inode opened for reading, without resolving its path
    /// again (through `/proc/self/fd`): only for an inode whose
    /// [`Handle::metadata`] said regular file, so no device or FIFO is
    /// ever opened, and nothing that took the path's place since.
    pub fn open_file(&self) -> io::Result<File> {
        // NONBLOCK and NOCTTY cost nothing here and keep the promise even
        // if a caller forgot to check the type.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        Ok(File::from(rfs::open(
            self.proc_path(),
            flags,
            Mode::empty(),
        )?))
    }

    /// A path naming this very inode (not re-resolved), for the calls that
    /// take no descriptor of an `O_PATH` open (xattrs): the calls that
    /// follow symlinks, applied to it, reach the inode itself. Only for
    /// regular files and directories (a symlink's own xattrs would need the
    /// link itself).
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

impl BrickDir {
    /// The brick's path, as opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn open(path: &Path) -> BrickDir {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        BrickDir {
            path: path.to_owned(),
            fd,
        }
    }

    /// Opens `rel` (the brick itself if it is the root) with `flags`
    /// (`O_NOFOLLOW` and `O_CLOEXEC` are added), resolving every component
    /// beneath the brick without following a symlink: one on the way is
    /// `ELOOP`.
    pub fn open_beneath(&self, rel: &RelPath, flags: OFlags) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Some(fd) = &self.fd else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot open the brick {}", self.path.display()),
            ));
        };
        let name: &OsStr = if rel.is_root() {
            OsStr::new(".")
        } else {
            rel.as_os_str()
        };
        match rfs::openat2(fd, name, flags, Mode::empty(), RESOLVE) {
            Err(Errno::NOSYS) => {}
            // openat2 refuses to retry a lookup that raced with a rename
            // elsewhere on the system: once more, then it is an answer.
            Err(Errno::AGAIN) => {
                return rfs::openat2(fd, name, flags, Mode::empty(), RESOLVE)
                    .map_err(io::Error::from)
            }
            other => return other.map_err(io::Error::from),
        }
        if !self.ancestors_are_dirs(rel) {
            return Err(Errno::LOOP.into());
        }
        Ok(rfs::openat(
            CWD,
            rel.under(&self.path),
            flags,
            Mode::empty(),
        )?)
    }

    /// `rel` opened as `O_PATH` (see [`Handle`]).
    pub fn handle(&self, rel: &RelPath) -> io::Result<Handle> {
        Ok(Handle {
            fd: File::from(self.open_beneath(rel, OFlags::PATH)?),
        })
    }

    /// `lstat` of `rel`, resolved beneath the brick.
    pub fn lstat(&self, rel: &RelPath) -> io::Result<fs::Metadata> {
        File::from(self.open_beneath(rel, OFlags::PATH)?).metadata()
    }

    /// Whether every ancestor of `rel` below the brick is a real directory
    /// (not a symlink): whether `rel` itself can be looked at safely.
    pub fn beneath(&self, rel: &RelPath) -> bool {
        let parent = rel.parent().unwrap_or_default();
        self.open_beneath(&parent, OFlags::PATH | OFlags::DIRECTORY)
            .is_ok()
    }

    /// The fallback of [`BrickDir::beneath`] without `openat2`.
    fn ancestors_are_dirs(&self, rel: &RelPath) -> bool {
        let mut dir = self.path.clone();
        let comps: Vec<&OsStr> = rel.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            dir.push(c);
            if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                return false;
            }
        }
        true
    }
}

/// Whether a failure to resolve a brick path means the path is not (or no
/// longer) there as named: missing, a non-directory or a symlink on the way.
/// Later journal records say what happened.
pub fn unresolved(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn nothing_is_resolved_through_a_symlink_or_outside_the_brick() {
        let t = tempfile::tempdir().unwrap();
        let brick = t.path().join("brick");
        let outside = t.path().join("outside");
        fs::create_dir_all(brick.join("d/e")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(brick.join("d/e/f"), b"in").unwrap();
        fs::write(outside.join("f"), b"out").unwrap();
        symlink(&outside, brick.join("l")).unwrap();
        symlink("../outside", brick.join("d/up")).unwrap();
        let b = BrickDir::open(&brick);

        assert!(b.beneath(&rp("d/e/f")));
        assert_eq!(b.lstat(&rp("d/e/f")).unwrap().len(), 2);
        assert!(b.lstat(&RelPath::default()).unwrap().is_dir());
        // A symlink as the last component is itself looked at...
        assert!(b.beneath(&rp("l")));
        assert!(b.lstat(&rp("l")).unwrap().file_type().is_symlink());
        // ...never followed on the way.
        assert!(!b.beneath(&rp("l/f")));
        assert!(unresolved(&b.lstat(&rp("l/f")).unwrap_err()));
        assert!(!b.beneath(&rp("d/up/f")));
        assert!(unresolved(&b.lstat(&rp("d/up/f")).unwrap_err()));
        // A file on the way is no directory.
        assert!(unresolved(&b.lstat(&rp("d/e/f/g")).unwrap_err()));
        assert!(unresolved(&b.lstat(&rp("d/nope")).unwrap_err()));
    }

    #[test]
    fn a_handle_reads_the_inode_it_resolved_not_what_took_its_path() {
        let t = tempfile::tempdir().unwrap();
        let brick = t.path().join("brick");
        let outside = t.path().join("outside");
        fs::create_dir_all(brick.join("d")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(brick.join("d/f"), b"in").unwrap();
        fs::write(outside.join("f"), b"out").unwrap();
        let b = BrickDir::open(&brick);
        let h = b.handle(&rp("d/f")).unwrap();
        assert!(h.metadata().unwrap().is_file());
        // The file moves away and its name (and its directory's) become
        // symlinks out of the brick: the handle still reads the file.
        fs::rename(brick.join("d/f"), brick.join("kept")).unwrap();
        fs::rename(brick.join("d"), brick.join("d.old")).unwrap();
        symlink(&outside, brick.join("d")).unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut h.open_file().unwrap(), &mut got).unwrap();
        assert_eq!(got, "in");
    }
}
