//! Looking at an entry once: open it by name a single time, never following
//! a symlink, and do everything else through that fd.
//!
//! Looking with `lstat` and then opening by name is a race: between the two
//! another stream of the same session (or anything else on the slave host)
//! may rename a directory or put another entry under the name, and the open
//! then reaches what was not looked at, a device node perhaps, whose open
//! alone can have effects. Here the name is opened with `O_PATH`, which
//! opens nothing (no device driver, no FIFO peer), the type is read from
//! that fd, and a regular file or directory is then reopened for real
//! through `/proc/self/fd`, which names the same inode whatever happened to
//! its name since.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use super::root::file_type;

/// An entry opened once (`O_PATH`), and its status from that fd.
pub(crate) struct Entry {
    pub fd: OwnedFd,
    pub st: Stat,
}

impl Entry {
    /// Opens `name` in `dir` without following a symlink; `None` if nothing
    /// is there.
    pub fn open(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<Entry>, Errno> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rfs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = rfs::fstat(&fd)?;
        Ok(Some(Entry { fd, st }))
    }

    pub fn file_type(&self) -> FileType {
        file_type(&self.st)
    }

    /// This path fd's `/proc/self/fd` name.
    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    /// The same regular file or directory opened for reading (`None` for
    /// any other type). Without `/proc`, the name is opened again and must
    /// still be the same inode.
    pub fn reopen(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<OwnedFd>, Errno> {
        let flags = match self.file_type() {
            FileType::RegularFile => OFlags::RDONLY,
            FileType::Directory => OFlags::RDONLY | OFlags::DIRECTORY,
            _ => return Ok(None),
        } | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        let fd = match rfs::openat(CWD, self.proc_path().as_str(), flags, Mode::empty()) {
            Err(Errno::NOENT) => rfs::openat(dir, name, flags | OFlags::NOFOLLOW, Mode::empty())?,
            other => other?,
        };
        let st = rfs::fstat(&fd)?;
        if (st.st_dev, st.st_ino) != (self.st.st_dev, self.st.st_ino) {
            // Only without /proc: the name now names something else.
            return Err(Errno::STALE);
        }
        Ok(Some(fd))
    }

    /// Its record (see `policy`), read through its `/proc/self/fd` name.
    pub fn record(&self) -> Option<super::policy::FakeStat> {
        let mut buf = [0u8; 128];
        let n = rfs::getxattr(
            self.proc_path().as_str(),
            super::policy::STAT_XATTR,
            &mut buf[..],
        );
        super::policy::FakeStat::parse(&buf[..n.ok()?])
    }

    /// `chown` of the entry itself (a symlink included).
    pub fn chown(&self, uid: Option<rfs::Uid>, gid: Option<rfs::Gid>) -> Result<(), Errno> {
        rfs::chownat(&self.fd, "", uid, gid, AtFlags::EMPTY_PATH)
    }

    /// `chmod` of the entry itself; a symlink is left alone (Linux ignores
    /// symlink modes anyway). Without `/proc`, by name after the type check.
    pub fn chmod(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> Result<(), Errno> {
        if self.file_type() == FileType::Symlink {
            return Ok(());
        }
        let mode = Mode::from_raw_mode(mode & 0o7777);
        match rfs::chmodat(CWD, self.proc_path().as_str(), mode, AtFlags::empty()) {
            Err(Errno::NOENT) => rfs::chmodat(dir, name, mode, AtFlags::empty()),
            other => other,
        }
    }
}

/// The regular file `name` in `dir`, opened for reading without following a
/// symlink and without opening anything else; `None` if there is none.
pub(crate) fn open_regular(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<OwnedFd>, Errno> {
    match Entry::open(dir, name) {
        Ok(Some(e)) if e.file_type() == FileType::RegularFile => match e.reopen(dir, name) {
            Err(Errno::STALE | Errno::NOENT) => Ok(None),
            other => other,
        },
        Ok(_) => Ok(None),
        Err(Errno::LOOP) => Ok(None),
        Err(e) => Err(e),
    }
}
