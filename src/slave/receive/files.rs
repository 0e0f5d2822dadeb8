//! Reading and opening the slave's copies: pieces, their signatures,
//! owner and mode.

use super::*;

/// Owner and mode of a received file, on its open fd, as the policy allows,
/// and the record of the brick's values where they differ. The owner goes
/// first: `chown` clears set-user-ID bits.
pub(super) fn apply_owner_mode(file: &File, attrs: &Attrs, policy: &Policy) -> Result<(), Errno> {
    if let Some((u, g)) = policy.chown(attrs.uid, attrs.gid) {
        rfs::fchown(file, u, g)?;
    }
    let mode = policy.mode(false, attrs.mode);
    // The record goes first, while the new file is still writable.
    let st = rfs::fstat(file)?;
    let have = FakeStat {
        mode: FileType::RegularFile.as_raw_mode() | mode,
        ..FakeStat::on_disk(&st)
    };
    let want = FakeStat::of(FileType::RegularFile, 0, attrs, &st, policy);
    keep_record(file.as_fd(), &have, &want, true)?;
    rfs::fchmod(file, Mode::from_raw_mode(mode))
}

/// The regular file at `path`, opened for reading without following a
/// symlink; `None` if there is none (or it is the root, or its parent is
/// missing).
pub(super) fn open_regular(root: &mut Root, path: &RelPath) -> Result<Option<File>, OpError> {
    if path.is_root() {
        return Ok(None);
    }
    let p = match root.parent(path, false) {
        Ok(p) => p,
        Err(e) if e.is_enoent() => return Ok(None),
        Err(e) => return Err(e),
    };
    open_regular_at(p.dir.as_fd(), p.name)
        .map_err(|e| root.error(path, "cannot open for reading", e))
}

pub(super) fn open_regular_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<File>, Errno> {
    // Opened once: opening a device or FIFO can have side effects.
    Ok(crate::slave::nofollow::open_regular(dir, name)?.map(File::from))
}

/// The serialized signature of one piece, as the master expects it.
pub(super) fn piece_signature(data: &[u8]) -> Vec<u8> {
    let options = SignatureOptions {
        block_size: SIG_BLOCK_SIZE,
        crypto_hash_size: SIG_STRONG_LEN,
    };
    Signature::calculate(data, options).into_serialized()
}

/// Reads `buf.len()` bytes at `offset` (fewer at the end of the file);
/// how many.
pub(super) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads piece `index` of `file` into `buf` (grown to one piece once);
/// returns its length (short or zero at the end of the file).
pub(super) fn read_piece(file: &File, index: u64, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.len() < PIECE {
        buf.resize(PIECE, 0);
    }
    let offset = index.saturating_mul(PIECE_SIZE);
    let mut n = 0;
    while n < PIECE {
        match file.read_at(&mut buf[n..PIECE], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
