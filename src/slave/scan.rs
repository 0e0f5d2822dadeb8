//! `Request::Scan`: one directory of the slave as `geo-rep verify`
//! compares it, sent in parts so that memory holds its names and one part.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, FileType};

use super::apply::{open_listed_dir, record_of};
use super::nofollow::open_regular;
use super::root::{file_type, is_dot, lstat, OpError, Root};
use crate::fsutil::{hash_paced, Pace};
use crate::proto::{ScanEntry, SCAN_PART_MAX};
use crate::relpath::RelPath;

/// Why a scan stopped: the directory could not be listed (answered as a
/// failure), or a part could not be sent (the session ends).
pub(super) enum ScanError<E> {
    Op(OpError),
    Send(E),
}

/// Lists the directory `path` and hands its entries, sorted by name, to
/// `send` in parts of at most [`SCAN_PART_MAX`] (the last with `true`).
/// Entries that vanish meanwhile are left out, and so are this slave's own
/// temporary and partial files (a file being received, not a difference).
pub(super) fn scan<E>(
    root: &mut Root,
    path: &RelPath,
    hashes: bool,
    rate: u64,
    mut send: impl FnMut(Vec<ScanEntry>, bool) -> Result<(), E>,
) -> Result<(), ScanError<E>> {
    let dir = match open_listed_dir(root, path) {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            return Err(ScanError::Op(root.error(
                path,
                "cannot list directory",
                rustix::io::Errno::NOENT,
            )))
        }
        Err(e) => return Err(ScanError::Op(e)),
    };
    let names = sorted_names(&dir)
        .map_err(|e| ScanError::Op(root.error(path, "cannot list directory", e)))?;
    let mut pace = Pace::new(rate);
    let mut part = Vec::new();
    for name in names {
        if let Some(entry) = entry(&dir, name, hashes, &mut pace) {
            part.push(entry);
        }
        if part.len() == SCAN_PART_MAX {
            send(std::mem::take(&mut part), false).map_err(ScanError::Send)?;
        }
    }
    send(part, true).map_err(ScanError::Send)
}

fn sorted_names(dir: &OwnedFd) -> Result<Vec<CString>, rustix::io::Errno> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !is_dot(name) && !is_own_temp(name.to_bytes()) {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// A temporary file of a receiving slave (`root::temp_name`) or a
/// partial one (`partial`).
fn is_own_temp(name: &[u8]) -> bool {
    name.starts_with(b".georep.") && (name.ends_with(b".tmp") || name.ends_with(b".part"))
}

/// The entry `name` of `dir` with the brick's values where the policy
/// recorded them; `None` if it is gone.
fn entry(dir: &OwnedFd, name: CString, hashes: bool, pace: &mut Pace) -> Option<ScanEntry> {
    let st = lstat(dir, name.as_c_str()).ok()??;
    let ft = file_type(&st);
    let record = match ft {
        FileType::RegularFile | FileType::Directory => record_of(dir.as_fd(), Some(&name)),
        _ => None,
    };
    let (mode, uid, gid, rdev) = record
        .map_or((st.st_mode, st.st_uid, st.st_gid, st.st_rdev), |r| {
            (r.mode, r.uid, r.gid, r.rdev)
        });
    let os_name = std::ffi::OsStr::from_bytes(name.as_bytes());
    let target = (ft == FileType::Symlink)
        .then(|| rfs::readlinkat(dir, name.as_c_str(), Vec::new()).ok())
        .flatten()
        .map(|t| serde_bytes::ByteBuf::from(t.into_bytes()));
    let hash = (hashes && ft == FileType::RegularFile)
        .then(|| {
            let fd = open_regular(dir.as_fd(), os_name).ok()??;
            hash_paced(&mut std::fs::File::from(fd), pace).ok()
        })
        .flatten();
    Some(ScanEntry {
        name: name.into_bytes(),
        mode,
        uid,
        gid,
        rdev,
        size: st.st_size as u64,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as u32,
        ino: st.st_ino,
        nlink: st.st_nlink,
        target,
        hash,
    })
}
