//! Making a batch durable before `Committed` (and a temp file durable
//! before its rename), on whatever file system holds the slave root.
//!
//! A local file system makes everything written to it durable with one
//! `syncfs`, so the slave only remembers which file systems changed. A FUSE
//! file system does not: the kernel answers `syncfs` on a FUSE mount
//! without asking the daemon (only virtiofs implements it), so on a
//! GlusterFS volume mounted by the slave (`--volume`) a `syncfs` leaves the
//! bricks' copies in their page caches, and stime could pass what the DR
//! site holds after a power cut. There the slave keeps the inodes and
//! directories it changed and `fsync`s each one (GlusterFS passes `fsync`
//! and `fsyncdir` on to every brick). Many of them at once: each is a round
//! trip through FUSE and the brick, and the bricks' journals commit
//! concurrent syncs together.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs};
use rustix::io::Errno;

/// `FUSE_SUPER_MAGIC` of `statfs(2)`.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Most threads that `fsync` at once.
const SYNC_THREADS: usize = 16;

/// How a file system is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// One `syncfs` per file system covers every change.
    SyncFs,
    /// `syncfs` does not reach the storage: each changed inode and
    /// directory is synced on its own.
    EachInode,
}

impl Durability {
    /// What the file system holding `path` needs.
    pub fn of_path(path: &std::path::Path) -> Result<Durability, Errno> {
        let dir = rfs::open(
            path,
            rfs::OFlags::PATH | rfs::OFlags::CLOEXEC,
            rfs::Mode::empty(),
        )?;
        Durability::of(dir.as_fd())
    }

    /// What the file system of `fd` needs.
    pub(crate) fn of(fd: BorrowedFd<'_>) -> Result<Durability, Errno> {
        let st = rfs::fstatfs(fd)?;
        // `f_type` is an i64 here, an i32 or u32 on other architectures.
        #[allow(clippy::useless_conversion)]
        Ok(if i64::from(st.f_type) == FUSE_SUPER_MAGIC {
            Durability::EachInode
        } else {
            Durability::SyncFs
        })
    }
}

/// What changed since the last commit, as each file system needs it known.
pub(crate) struct Dirty {
    mode: Durability,
    /// The root's file system.
    dev: u64,
    /// One directory fd per other file system changed (`SyncFs`).
    other_devs: Vec<(u64, OwnedFd)>,
    /// The inodes and directories changed (`EachInode`), once each.
    inodes: Vec<OwnedFd>,
    seen: HashSet<(u64, u64)>,
}

/// What one [`Dirty::sync`] did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Synced {
    pub file_systems: usize,
    pub inodes: usize,
}

impl Dirty {
    pub(crate) fn new(mode: Durability, dev: u64) -> Dirty {
        Dirty {
            mode,
            dev,
            other_devs: Vec::new(),
            inodes: Vec::new(),
            seen: HashSet::new(),
        }
    }

    pub(crate) fn mode(&self) -> Durability {
        self.mode
    }

    /// Notes that `dir` (on file system `dev`) or an entry in it changed.
    pub(crate) fn note_dir(&mut self, dev: u64, dir: BorrowedFd<'_>) {
        match self.mode {
            Durability::SyncFs => {
                if dev == self.dev || self.other_devs.iter().any(|(d, _)| *d == dev) {
                    return;
                }
                if let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(dir, 0) {
                    self.other_devs.push((dev, fd));
                }
            }
            Durability::EachInode => self.note_inode(dir),
        }
    }

    /// Notes that the contents or attributes of the inode open as `fd` (not
    /// an `O_PATH` descriptor) changed.
    pub(crate) fn note_inode(&mut self, fd: BorrowedFd<'_>) {
        if self.mode == Durability::SyncFs {
            return;
        }
        // An inode that cannot be told apart is kept: one sync too many.
        let key = rfs::fstat(fd).map(|st| (st.st_dev, st.st_ino)).ok();
        if key.is_some_and(|k| !self.seen.insert(k)) {
            return;
        }
        if let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(fd, 0) {
            self.inodes.push(fd);
        }
    }

    /// Makes `extra` and everything noted durable, `root` being a directory
    /// of the root's file system; then forgets what was noted.
    pub(crate) fn sync(
        &mut self,
        root: BorrowedFd<'_>,
        extra: &[BorrowedFd<'_>],
    ) -> Result<Synced, Errno> {
        match self.mode {
            Durability::SyncFs => {
                rfs::syncfs(root)?;
                for (_, fd) in &self.other_devs {
                    rfs::syncfs(fd)?;
                }
                let file_systems = 1 + self.other_devs.len();
                self.other_devs.clear();
                Ok(Synced {
                    file_systems,
                    inodes: 0,
                })
            }
            Durability::EachInode => {
                let inodes = std::mem::take(&mut self.inodes);
                self.seen.clear();
                let all: Vec<BorrowedFd<'_>> = extra
                    .iter()
                    .copied()
                    .chain(inodes.iter().map(|fd| fd.as_fd()))
                    .collect();
                fsync_all(&all)?;
                Ok(Synced {
                    file_systems: 0,
                    inodes: all.len(),
                })
            }
        }
    }
}

/// `fsync` of every fd, up to [`SYNC_THREADS`] at once; the first error.
fn fsync_all(fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
    if fds.len() <= 1 {
        return fds.iter().try_for_each(rfs::fsync);
    }
    let threads = SYNC_THREADS.min(fds.len());
    let chunk = fds.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = fds
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().try_for_each(rfs::fsync)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(Errno::IO)))
            .collect::<Result<Vec<()>, Errno>>()
            .map(drop)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn dev_of(p: &std::path::Path) -> u64 {
        rfs::stat(p).unwrap().st_dev
    }

    #[test]
    fn a_local_file_system_is_synced_whole_and_a_fuse_one_inode_by_inode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = File::open(tmp.path()).unwrap();
        assert_eq!(Durability::of(dir.as_fd()).unwrap(), Durability::SyncFs);
        // A FUSE mount, where this machine has one (the GlusterFS tests'
        // volumes; /proc/self/mounts tells).
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for line in mounts
            .lines()
            .filter(|l| l.split(' ').nth(2) == Some("fuse.glusterfs"))
        {
            let Some(at) = line.split(' ').nth(1) else {
                continue;
            };
            if let Ok(d) = File::open(at) {
                assert_eq!(Durability::of(d.as_fd()).unwrap(), Durability::EachInode);
            }
        }
    }

    #[test]
    fn each_inode_mode_syncs_every_noted_inode_once_and_then_forgets_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = dev_of(tmp.path());
        let dir = File::open(tmp.path()).unwrap();
        let files: Vec<File> = (0..40)
            .map(|i| File::create(tmp.path().join(format!("f{i}"))).unwrap())
            .collect();
        let mut dirty = Dirty::new(Durability::EachInode, dev);
        dirty.note_dir(dev, dir.as_fd());
        dirty.note_dir(dev, dir.as_fd());
        for f in &files[..30] {
            dirty.note_inode(f.as_fd());
            dirty.note_inode(f.as_fd());
        }
        let extra: Vec<BorrowedFd<'_>> = files[30..].iter().map(|f| f.as_fd()).collect();
        let synced = dirty.sync(dir.as_fd(), &extra).unwrap();
        assert_eq!(
            synced,
            Synced {
                file_systems: 0,
                inodes: 41
            }
        );
        let again = dirty.sync(dir.as_fd(), &[]).unwrap();
        assert_eq!(
            again,
            Synced {
                file_systems: 0,
                inodes: 0
            }
        );
    }

    #[test]
    fn syncfs_mode_keeps_one_fd_per_other_file_system_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = dev_of(tmp.path());
        let dir = File::open(tmp.path()).unwrap();
        let mut dirty = Dirty::new(Durability::SyncFs, dev);
        dirty.note_dir(dev, dir.as_fd());
        dirty.note_inode(dir.as_fd());
        dirty.note_dir(dev + 1, dir.as_fd());
        dirty.note_dir(dev + 1, dir.as_fd());
        let synced = dirty.sync(dir.as_fd(), &[]).unwrap();
        assert_eq!(
            synced,
            Synced {
                file_systems: 2,
                inodes: 0
            }
        );
    }
}
