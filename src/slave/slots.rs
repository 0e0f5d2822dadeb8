//! `--max-processes N`: how many `geo-rep slave` processes may serve one
//! root at once. A session key can start as many processes as sshd lets it
//! connect; each costs memory and file descriptors on the slave host.
//!
//! Each process holds an exclusive `flock` on one of N slot files in the
//! slave user's `~/.georep/slave-slots` (created 0700, so no other user can
//! take or block a slot); the kernel releases it when the process ends,
//! however it ends. A process that finds every slot taken refuses to serve.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use rustix::io::Errno;

/// A slot taken: held until dropped (the end of the process).
pub(crate) struct Slot {
    _lock: File,
}

/// The directory of the slot files.
fn slots_dir() -> io::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| io::Error::other("HOME is not set: nowhere to count slave processes"))?;
    Ok(PathBuf::from(home).join(".georep/slave-slots"))
}

/// Takes one of the `max` slots of `root`; `None` when all are taken.
pub(crate) fn take(root: &Path, max: u32) -> io::Result<Option<Slot>> {
    let dir = slots_dir()?;
    crate::fsutil::create_private_dir(&dir)?;
    let root = root.canonicalize()?;
    let key = blake3::hash(root.as_os_str().as_bytes()).to_hex();
    for i in 0..max {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(dir.join(format!("{}.{i}", &key[..32])))?;
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(Slot { _lock: lock })),
            Err(Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}
