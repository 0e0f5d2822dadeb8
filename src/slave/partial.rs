//! Partial copies of large files, kept across sessions so that a dropped
//! connection does not restart a large file from byte 0 (see "Resuming
//! large files" in `proto`).
//!
//! A partial lives next to its final name as `.georep.<hash>.part` (one
//! name per final name, so the next session finds it without listing the
//! directory, and a partial of another version of the file is reused, not
//! left behind). The extended attribute [`STAMP_XATTR`] holds the stamp
//! (size, mtime) of the master file whose bytes it holds: set once when the
//! partial is started, before any data, and untouched by the writes (an
//! mtime would move with each of them, so a kill between a write and its
//! record would lose the partial). It is removed just before the partial
//! is renamed into place. A file system without user xattrs still receives
//! large files, only without resuming them. The partial's length is the
//! record of how much it holds: each piece is made durable (`fdatasync`)
//! before the next is written, and the last whole piece is sent again
//! anyway, in case a crash of the slave's host tore it. Whatever these
//! records say, the BLAKE3 check of the whole file decides before the
//! partial is renamed into place.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

use rustix::fs::{self as rfs, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::root::{errno_of, file_type, lstat, remove_any};
use crate::proto::{FileStamp, PARTIAL_MAX_AGE_SECS, PIECE_SIZE};

/// The extended attribute recording whose bytes a partial holds.
pub(super) const STAMP_XATTR: &str = "user.georep.partial";

fn stamp_bytes(stamp: &FileStamp) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&stamp.size.to_be_bytes());
    b[8..16].copy_from_slice(&stamp.mtime_sec.to_be_bytes());
    b[16..].copy_from_slice(&stamp.mtime_nsec.to_be_bytes());
    b
}

/// Whether the partial open at `fd` holds bytes of the master file `stamp`.
fn same_origin(fd: BorrowedFd<'_>, stamp: &FileStamp) -> bool {
    let mut got = [0u8; 21];
    let Ok(st) = rfs::fstat(fd) else { return false };
    file_type(&st) == FileType::RegularFile
        && st.st_size as u64 <= stamp.size
        && matches!(rfs::fgetxattr(fd, STAMP_XATTR, &mut got[..]), Ok(20) if got[..20] == stamp_bytes(stamp))
}

/// Removes the record from a partial about to be renamed into place.
pub(super) fn unmark(file: &File) -> Result<(), Errno> {
    match rfs::fremovexattr(file, STAMP_XATTR) {
        Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The partial's name for the final name `name`.
pub(super) fn partial_name(name: &OsStr) -> String {
    let hash = blake3::hash(name.as_encoded_bytes());
    format!(".georep.{}.part", &hash.to_hex()[..16])
}

fn is_partial_name(name: &[u8]) -> bool {
    name.starts_with(b".georep.") && name.ends_with(b".part")
}

/// Whether a prune leaves `name` in `dir` alone: a partial written to
/// within [`PARTIAL_MAX_AGE_SECS`] (its ctime moves with every piece).
pub(super) fn is_fresh_partial(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    if !is_partial_name(name) {
        return false;
    }
    let Ok(Some(st)) = lstat(dir, OsStr::from_bytes(name)) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    file_type(&st) == FileType::RegularFile && now - st.st_ctime < PARTIAL_MAX_AGE_SECS
}

const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// How many leading pieces of the partial for `name` in `dir` can be kept
/// for the master file `stamp` (0 if there is none, or one of another
/// version).
pub(super) fn kept_pieces(dir: BorrowedFd<'_>, name: &OsStr, stamp: &FileStamp) -> u32 {
    let pname = partial_name(name);
    // Look before opening: opening a device or FIFO can have side effects.
    match lstat(dir, pname.as_str()) {
        Ok(Some(st)) if file_type(&st) == FileType::RegularFile => {}
        _ => return 0,
    }
    let Ok(fd) = rfs::openat(dir, pname.as_str(), READ_FLAGS, Mode::empty()) else {
        return 0;
    };
    match rfs::fstat(&fd) {
        Ok(st) if same_origin(fd.as_fd(), stamp) => {
            // The last whole piece goes again (see the module docs).
            let whole = st.st_size as u64 / PIECE_SIZE;
            u32::try_from(whole.saturating_sub(1)).unwrap_or(u32::MAX)
        }
        _ => 0,
    }
}

/// The outcome of [`open`].
pub(super) enum Opened {
    /// The partial, locked, positioned after its kept pieces, with their
    /// hash.
    Ready {
        file: File,
        name: String,
        kept: u64,
        /// Boxed: a hasher is large beside the other outcomes.
        hasher: Box<blake3::Hasher>,
    },
    /// Another live process writes it (a slave frozen while the master
    /// reconnected): not shared.
    Busy,
    /// It no longer holds the `from` pieces the master was told of.
    Changed,
}

/// Opens (or makes) the partial for `name` in `dir` for the master file
/// `stamp`, keeping its first `from` pieces (`from == 0`: starting over).
pub(super) fn open(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    stamp: &FileStamp,
    from: u32,
) -> Result<Opened, Errno> {
    let pname = partial_name(name);
    if let Some(st) = lstat(dir, pname.as_str())? {
        if file_type(&st) != FileType::RegularFile {
            remove_any(dir, pname.as_ref())?;
        }
    }
    let flags = OFlags::CREATE
        | OFlags::RDWR
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::NOCTTY
        | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, pname.as_str(), flags, Mode::from_raw_mode(0o600))?;
    let st = rfs::fstat(&fd)?;
    if file_type(&st) != FileType::RegularFile {
        // Swapped in between the look and the open: not ours to use.
        return Ok(Opened::Changed);
    }
    match rfs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Ok(Opened::Busy),
        Err(e) => return Err(e),
    }
    let kept = u64::from(from) * PIECE_SIZE;
    // Looked at again under the lock: the previous holder may have gone on.
    if from > 0 && !(same_origin(fd.as_fd(), stamp) && rfs::fstat(&fd)?.st_size as u64 >= kept) {
        return Ok(Opened::Changed);
    }
    let mut file = File::from(fd);
    file.set_len(kept).map_err(|e| errno_of(&e))?;
    if from == 0 {
        // Without user xattrs the file still arrives, only not resumably.
        match rfs::fsetxattr(
            &file,
            STAMP_XATTR,
            &stamp_bytes(stamp),
            rfs::XattrFlags::empty(),
        ) {
            Ok(()) | Err(Errno::NOTSUP | Errno::PERM) => {}
            Err(e) => return Err(e),
        }
        file.sync_all().map_err(|e| errno_of(&e))?;
    }
    let mut hasher = Box::new(blake3::Hasher::new());
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < kept {
        let n = (kept - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| errno_of(&e))?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    file.seek(SeekFrom::Start(kept)).map_err(|e| errno_of(&e))?;
    Ok(Opened::Ready {
        file,
        name: pname,
        kept,
        hasher,
    })
}

/// Makes the first `written` bytes of a partial durable (see the module
/// docs). Holes at the end become its length.
pub(super) fn settle(file: &File, written: u64) -> Result<(), Errno> {
    if rfs::fstat(file)?.st_size as u64 != written {
        rfs::ftruncate(file, written)?;
    }
    rfs::fdatasync(file.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_are_recognised_and_short() {
        let long = "x".repeat(255);
        let n = partial_name(OsStr::new(&long));
        assert!(is_partial_name(n.as_bytes()) && n.len() < 40, "{n}");
        assert_ne!(partial_name(OsStr::new("a")), partial_name(OsStr::new("b")));
        assert!(!is_partial_name(b".georep.0123.77.tmp"));
        assert!(!is_partial_name(b"data.part"));
    }

    #[test]
    fn a_partial_held_by_one_writer_is_busy_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rfs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let stamp = FileStamp {
            size: 3 * PIECE_SIZE,
            mtime_sec: 7,
            mtime_nsec: 0,
        };
        let name = OsStr::new("big");
        let first = open(fd.as_fd(), name, &stamp, 0).unwrap();
        assert!(matches!(first, Opened::Ready { kept: 0, .. }));
        assert!(matches!(
            open(fd.as_fd(), name, &stamp, 0),
            Ok(Opened::Busy)
        ));
        drop(first);
        // Free again, but it holds nothing to resume from.
        assert!(matches!(
            open(fd.as_fd(), name, &stamp, 1),
            Ok(Opened::Changed)
        ));
        assert!(matches!(
            open(fd.as_fd(), name, &stamp, 0),
            Ok(Opened::Ready { .. })
        ));
    }
}
