//! File contents: signatures of the slave's copies, incoming files written to
//! temp names, verification, and the batched renames into place.
//!
//! A file arrives as `FileBegin`, `Piece`* (in index order), then `FileEnd`
//! or `FileAbort`. Its bytes go to `.georep.<hash>.tmp` in the target's
//! directory; the old file, if any, stays open as the base for delta pieces.
//! At `FileEnd` the size and BLAKE3 hash are checked (invariant 6) and the
//! attributes applied to the temp file, which then waits in the pending list.
//! [`Receiver::flush`] makes the pending temp files durable with one `syncfs`
//! and only then renames each over its final name (invariant 1), so a crash
//! leaves either the old file or the complete new one under the final name.
//!
//! A file that arrives with `FileResume` (a large one) is built in its
//! partial instead (see `partial`): kept when the session ends, resumed by
//! the next, and renamed into place under the same rules.
//!
//! Leading `Same` pieces are not copied until a piece that differs
//! arrives: a file whose every piece is `Same` (sent again though the
//! slave holds it, e.g. when a write and its close fell into two batches)
//! is not rewritten. Its copy is hashed and, if it matches `FileEnd`, only
//! its attributes are set. The signatures of large files this process
//! signed or rebuilt are cached (`sigcache`), so the next delta of an
//! unchanged copy does not read it whole first.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use fast_rsync::{Signature, SignatureOptions};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::partial;
use super::policy::{keep_record, FakeStat, Policy};
use super::root::{
    errno_of, remove_any, remove_tree, set_fresh_xattrs, temp_name, timestamps, DirInfo, OpError,
    Parent, Root,
};
use super::sigcache::{SigCache, Sigs, Stamp};
use crate::proto::{
    write_frame, Attrs, Failure, FailureKind, FileStamp, PieceKind, ProtocolError, Reply, Segment,
    PIECE_SIZE, SIG_BLOCK_SIZE, SIG_STRONG_LEN,
};
use crate::relpath::RelPath;

/// Flush the pending renames when this many files wait (each holds only a
/// share of its directory's fd; every flush is a `syncfs`)...
pub(crate) const MAX_PENDING_FILES: usize = 16 * 1024;
/// ...or when they hold this many bytes.
pub(crate) const MAX_PENDING_BYTES: u64 = 256 * 1024 * 1024;

const PIECE: usize = PIECE_SIZE as usize;

/// A temp file that is removed when dropped, unless disarmed.
struct TempGuard {
    dir: Rc<OwnedFd>,
    /// What is known of `dir`.
    info: DirInfo,
    name: String,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = rfs::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// The file being received.
struct Incoming {
    seq: u64,
    path: RelPath,
    final_name: OsString,
    // Field order matters: `out` is closed before `temp` may unlink it.
    out: File,
    /// The current file, the base of delta pieces: opened at the first one.
    base: Option<Option<File>>,
    temp: TempGuard,
    size: u64,
    written: u64,
    next_index: u32,
    hasher: blake3::Hasher,
    /// Some bytes were left as holes: the size is set at the end.
    holes: bool,
    /// Received resumably (see `partial`): the temp file is the partial
    /// kept across sessions, each piece made durable.
    resumable: bool,
    /// `out` is open with `O_DIRECT` (see [`Incoming::write_direct`]).
    direct: Option<AlignedBuf>,
    /// Whether the base is open with `O_DIRECT` now...
    base_direct: bool,
    /// ...and whether it cannot be.
    base_no_direct: bool,
    /// Leading `Same` pieces not yet copied from the base: while every
    /// piece so far is `Same`, nothing is written, and a file that turns
    /// out unchanged keeps the slave's copy (see [`Receiver::end`]).
    deferred: u32,
    /// The signatures the base was announced with (what a `Same` piece
    /// refers to), when known.
    base_sigs: Option<Sigs>,
    /// The signature of each piece rebuilt so far, kept for the cache for
    /// a large file or one sent against a base (a file that changes once
    /// tends to change again); `None` when not tracked.
    sigs: Option<Vec<Vec<u8>>>,
}

impl Incoming {
    /// Refuses `len` more bytes past the announced size.
    fn room_for(&self, root: &Root, len: u64) -> Result<(), OpError> {
        if self.written.saturating_add(len) > self.size {
            return Err(root.refuse(
                &self.path,
                FailureKind::Mismatch,
                &format!(
                    "received more than the announced {} bytes (at least {})",
                    self.size,
                    self.written.saturating_add(len)
                ),
            ));
        }
        Ok(())
    }

    /// Leaves `len` bytes a hole (they read as zeros).
    fn skip(&mut self, root: &Root, len: u64) -> Result<(), OpError> {
        self.room_for(root, len)?;
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            self.hasher.update(&ZEROS[..n]);
            left -= n as u64;
        }
        self.written += len;
        self.holes = true;
        Ok(())
    }

    /// Piece `index` given as data segments, holes elsewhere.
    fn sparse(&mut self, root: &Root, index: u32, segments: &[Segment]) -> Result<(), OpError> {
        let start = u64::from(index) * PIECE_SIZE;
        let piece_len = self.size.saturating_sub(start).min(PIECE_SIZE);
        let mut pos = 0u64;
        for seg in segments {
            let off = u64::from(seg.offset);
            let end = off.saturating_add(seg.data.len() as u64);
            if off < pos || end > piece_len {
                return Err(root.refuse(
                    &self.path,
                    FailureKind::Mismatch,
                    &format!(
                        "sparse piece {index}: segment at {off} of {} bytes is out of order or past the piece ({piece_len} bytes)",
                        seg.data.len()
                    ),
                ));
            }
            self.skip(root, off - pos)?;
            self.write(root, &seg.data)?;
            pos = end;
        }
        self.skip(root, piece_len - pos)
    }

    /// Piece `index` of the base (the file at the final name when the
    /// first piece needed it) into `buf`; its length (0 without a base).
    fn base_piece(&mut self, root: &Root, index: u32, buf: &mut Vec<u8>) -> Result<usize, OpError> {
        self.base_direct(false);
        let read = match self.base() {
            Some(base) => read_piece(base, u64::from(index), buf),
            None => return Ok(0),
        };
        read.map_err(|e| root.error(&self.path, "cannot read the current file", errno_of(&e)))
    }

    /// The base, opened when first needed.
    fn base(&mut self) -> Option<&File> {
        let Incoming {
            base,
            temp,
            final_name,
            ..
        } = self;
        base.get_or_insert_with(|| open_regular_at(temp.dir.as_fd(), final_name).unwrap_or(None))
            .as_ref()
    }

    /// A `Same` piece: the base's bytes, copied.
    fn same(&mut self, root: &Root, index: u32, buf: &mut Vec<u8>) -> Result<(), OpError> {
        if self.same_direct(root, index)? {
            return Ok(());
        }
        let n = self.base_piece(root, index, buf)?;
        self.note_same_sig(index, &buf[..n]);
        self.write(root, &buf[..n])
    }

    /// Records the signature of `Same` piece `index` (`data`).
    fn note_same_sig(&mut self, index: u32, data: &[u8]) {
        if self.sigs.is_some() {
            // The base's signature as announced, which the master found its
            // piece to have.
            let known = self.base_sigs.as_ref().and_then(|s| s.get(index as usize));
            match known {
                Some(sig) => {
                    let sig = sig.clone();
                    self.push_sig(index, sig);
                }
                None => self.note_sig(index, data),
            }
        }
    }

    /// A whole aligned `Same` piece read from the base and written without
    /// going through the page cache on either side; whether it was (else
    /// it is copied as any other).
    fn same_direct(&mut self, root: &Root, index: u32) -> Result<bool, OpError> {
        let offset = u64::from(index) * PIECE_SIZE;
        if self.direct.is_none() || offset != self.written || !self.base_direct(true) {
            return Ok(false);
        }
        let (Some(buf), Some(Some(base))) = (&mut self.direct, &self.base) else {
            return Ok(false);
        };
        let n = match read_full_at(base, buf.get(PIECE), offset) {
            Ok(n) => n,
            // Not supported for this file after all.
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                self.base_no_direct = true;
                return Ok(false);
            }
            Err(e) => {
                return Err(root.error(&self.path, "cannot read the current file", errno_of(&e)))
            }
        };
        if !n.is_multiple_of(DIRECT_ALIGN) {
            // The base's tail: copied as any other piece.
            return Ok(false);
        }
        self.room_for(root, n as u64)?;
        if !self.write_aligned(root, n)? {
            return Ok(false);
        }
        let Incoming {
            direct: Some(buf),
            hasher,
            sigs,
            base_sigs,
            ..
        } = self
        else {
            return Ok(false);
        };
        let data = buf.get(n);
        hasher.update(data);
        // As in `note_same_sig`.
        let sig = sigs.is_some().then(|| {
            base_sigs
                .as_ref()
                .and_then(|s| s.get(index as usize).cloned())
                .unwrap_or_else(|| piece_signature(data))
        });
        if let Some(sig) = sig {
            self.push_sig(index, sig);
        }
        self.written += n as u64;
        Ok(true)
    }

    /// Puts the base in or out of `O_DIRECT` mode (buffered reads need it
    /// out: their buffers are not aligned); whether it now is as asked.
    fn base_direct(&mut self, on: bool) -> bool {
        if on && self.base_no_direct {
            return false;
        }
        if self.base_direct == on {
            return true;
        }
        let Some(base) = self.base() else {
            return false;
        };
        let set = rfs::fcntl_getfl(base).and_then(|f| {
            rfs::fcntl_setfl(
                base,
                if on {
                    f | OFlags::DIRECT
                } else {
                    f.difference(OFlags::DIRECT)
                },
            )
        });
        match set {
            Ok(()) => self.base_direct = on,
            Err(_) => self.base_no_direct |= on,
        }
        self.base_direct == on
    }

    /// Copies the deferred leading `Same` pieces into the temp file.
    fn catch_up(&mut self, root: &Root, buf: &mut Vec<u8>) -> Result<(), OpError> {
        for index in 0..std::mem::take(&mut self.deferred) {
            self.same(root, index, buf)?;
        }
        Ok(())
    }

    /// Records the signature of rebuilt piece `index`, if they are tracked.
    fn note_sig(&mut self, index: u32, data: &[u8]) {
        if self.sigs.is_some() {
            self.push_sig(index, piece_signature(data));
        }
    }

    fn push_sig(&mut self, index: u32, sig: Vec<u8>) {
        if let Some(sigs) = &mut self.sigs {
            if sigs.len() == index as usize {
                sigs.push(sig);
            } else {
                self.sigs = None;
            }
        }
    }

    /// Whether the deferred pieces are the whole file and the base is a
    /// copy that can stay where it is (a regular file of the announced size
    /// with no other name); if so, hashes it, as if it had been received.
    fn keeps_base(&mut self, root: &Root, buf: &mut Vec<u8>) -> Result<bool, OpError> {
        if self.written != 0 || u64::from(self.deferred) != self.size.div_ceil(PIECE_SIZE) {
            return Ok(false);
        }
        let size = self.size;
        let fits = self.base().is_some_and(|base| {
            rfs::fstat(base).is_ok_and(|st| st.st_size as u64 == size && st.st_nlink == 1)
        });
        if !fits {
            return Ok(false);
        }
        for index in 0..std::mem::take(&mut self.deferred) {
            let n = self.base_piece(root, index, buf)?;
            self.hasher.update(&buf[..n]);
            self.written += n as u64;
        }
        Ok(true)
    }

    /// Writes `data` at `written` bypassing the page cache, if the file is
    /// written so and `data` is aligned for it; whether it did. Copying a
    /// large file through the page cache costs several times the CPU of
    /// the rest of its rebuild here, and it is read back from disk rarely
    /// (its signatures are cached). The first unaligned write (the file's
    /// tail, a sparse segment) turns this off for the rest of the file.
    fn write_direct(&mut self, root: &Root, data: &[u8]) -> Result<bool, OpError> {
        let Some(buf) = &mut self.direct else {
            return Ok(false);
        };
        let len = data.len();
        let aligned = self.written.is_multiple_of(DIRECT_ALIGN as u64)
            && len.is_multiple_of(DIRECT_ALIGN)
            && len <= buf.capacity();
        if aligned {
            buf.get(len).copy_from_slice(data);
            return self.write_aligned(root, len);
        }
        self.stop_direct(root)?;
        Ok(false)
    }

    /// Writes the first `len` bytes of the aligned buffer at `written`
    /// (`len` aligned too); whether it did (if not, the file is written
    /// through the page cache from now on).
    fn write_aligned(&mut self, root: &Root, len: usize) -> Result<bool, OpError> {
        let Some(buf) = &mut self.direct else {
            return Ok(false);
        };
        match self.out.write_all_at(buf.get(len), self.written) {
            Ok(()) => return Ok(true),
            // Not supported here after all: written through the cache.
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {}
            Err(e) => {
                return Err(root.error(&self.path, "cannot write the temporary file", errno_of(&e)))
            }
        }
        self.stop_direct(root)?;
        Ok(false)
    }

    fn stop_direct(&mut self, root: &Root) -> Result<(), OpError> {
        self.direct = None;
        let flags = rfs::fcntl_getfl(&self.out)
            .and_then(|f| rfs::fcntl_setfl(&self.out, f.difference(OFlags::DIRECT)));
        flags.map_err(|e| root.error(&self.path, "cannot write the temporary file", e))
    }

    fn write(&mut self, root: &Root, data: &[u8]) -> Result<(), OpError> {
        let len = data.len() as u64;
        self.room_for(root, len)?;
        if !self.write_direct(root, data)? {
            self.out.write_all_at(data, self.written).map_err(|e| {
                root.error(&self.path, "cannot write the temporary file", errno_of(&e))
            })?;
        }
        if self.size >= PIECE_SIZE && self.direct.is_none() {
            // Start writing a large file out now, so the sync before its
            // rename only waits for the tail (best effort: a failure here
            // only leaves the work to that sync).
            let _ = rfs::fadvise(
                &self.out,
                self.written,
                std::num::NonZeroU64::new(len),
                rfs::Advice::DontNeed,
            );
        }
        self.hasher.update(data);
        self.written += len;
        Ok(())
    }
}

enum Current {
    Active(Box<Incoming>),
    /// The file failed (and was reported) before its end: its remaining
    /// pieces are ignored until `FileEnd` or `FileAbort`.
    Skipping,
}

/// A verified temp file waiting to be renamed over its final name.
struct Pending {
    seq: u64,
    path: RelPath,
    final_name: OsString,
    // Closed (unlocked) before `temp` may unlink it.
    /// The open temp file, kept for a partial (see `partial`: the lock held
    /// on it keeps another slave process from rewriting it before it is
    /// renamed into place) and for a file whose signatures are cached
    /// (recorded under its state once in place).
    out: Option<File>,
    resumable: bool,
    /// Per-piece signatures of the content, for the cache.
    sigs: Option<Vec<Vec<u8>>>,
    temp: TempGuard,
}

/// Receiving state of one session.
#[derive(Default)]
pub(crate) struct Receiver {
    current: Option<Current>,
    pending: Vec<Pending>,
    /// The paths of `pending`, to look them up.
    pending_paths: std::collections::HashSet<RelPath>,
    pending_bytes: u64,
    /// A piece of an old file (delta base, or input of a signature).
    base_buf: Vec<u8>,
    /// A piece rebuilt from a delta.
    out_buf: Vec<u8>,
    /// Signatures of large files this process signed or put in place.
    sig_cache: SigCache,
    /// Most files waiting in `pending` (each holds fds, see `limits`).
    pending_max: usize,
}

impl Receiver {
    /// A receiver that flushes once `pending_max` files wait.
    pub fn new(pending_max: usize) -> Receiver {
        Receiver {
            pending_max: pending_max.clamp(1, MAX_PENDING_FILES),
            ..Receiver::default()
        }
    }

    /// Whether a file is between `FileBegin` and `FileEnd`/`FileAbort`.
    pub fn in_file(&self) -> bool {
        self.current.is_some()
    }

    /// Whether a received file waits to be renamed over `path`.
    pub fn is_pending(&self, path: &RelPath) -> bool {
        self.pending_paths.contains(path)
    }

    /// Whether the pending list reached its limits.
    pub fn needs_flush(&self) -> bool {
        self.pending.len() >= self.pending_max || self.pending_bytes >= MAX_PENDING_BYTES
    }

    /// Answers `Signature`: `SigBegin` then one `SigPiece` per piece of the
    /// regular file at `path`, or `SigBegin{size: None}` (preceded by a
    /// `Failed` if the path could not be looked at safely).
    pub fn signature<W: Write>(
        &mut self,
        root: &mut Root,
        seq: u64,
        path: &RelPath,
        out: &mut W,
    ) -> Result<(), ProtocolError> {
        let file = match open_regular(root, path) {
            Ok(f) => f,
            Err(e) => {
                write_frame(out, &Reply::Failed(e.into_failure(seq, path.clone())))?;
                None
            }
        };
        let st = file.as_ref().and_then(|f| rfs::fstat(f).ok());
        let (Some(file), Some(st)) = (file, st) else {
            self.sig_cache.forget(path);
            return write_frame(out, &Reply::SigBegin { seq, size: None });
        };
        let size = st.st_size as u64;
        write_frame(
            out,
            &Reply::SigBegin {
                seq,
                size: Some(size),
            },
        )?;
        // Taken before reading: a write during the read moves the ctime,
        // so what is recorded below can only miss, never match it.
        let stamp = Stamp::of(&st);
        if let Some(sigs) = self.sig_cache.get(path, &stamp) {
            if sigs.len() as u64 == size.div_ceil(PIECE_SIZE) {
                for data in sigs.iter() {
                    write_frame(out, &Reply::SigPiece { data: data.clone() })?;
                }
                return Ok(());
            }
        }
        let mut sigs = Vec::new();
        let mut whole = true;
        for index in 0..size.div_ceil(PIECE_SIZE) {
            // A read error (or a file shrinking meanwhile) gives a shorter
            // piece: its signature then matches less and the master sends more
            // literal bytes; the result is verified by hash anyway.
            let n = read_piece(&file, index, &mut self.base_buf).unwrap_or(0);
            whole &= n as u64 == (size - index * PIECE_SIZE).min(PIECE_SIZE);
            let data = piece_signature(&self.base_buf[..n]);
            write_frame(out, &Reply::SigPiece { data: data.clone() })?;
            sigs.push(data);
        }
        // A piece read short was signed as it was read, not as it is.
        if whole {
            self.sig_cache.insert(path, stamp, Rc::new(sigs));
        } else {
            self.sig_cache.forget(path);
        }
        Ok(())
    }

    /// The file being received from now on, or the failure to report (its
    /// pieces are then ignored).
    fn start(
        &mut self,
        started: Result<Incoming, OpError>,
        seq: u64,
        path: &RelPath,
    ) -> Option<Failure> {
        match started {
            Ok(mut inc) => {
                // The signatures of a large file's new content are kept:
                // the next delta of it then starts at once. Those of `Same`
                // pieces are the base's as this process announced them;
                // only other pieces are signed here.
                inc.base_sigs = self.sig_cache.last(path);
                let large = inc.size > PIECE_SIZE;
                if (large || inc.base_sigs.is_some()) && inc.next_index == 0 {
                    inc.sigs = Some(Vec::new());
                }
                self.current = Some(Current::Active(Box::new(inc)));
                None
            }
            Err(e) => {
                self.current = Some(Current::Skipping);
                Some(e.into_failure(seq, path.clone()))
            }
        }
    }

    /// Starts receiving `path`; returns the failure to report, if any (the
    /// file's pieces are then ignored).
    pub fn begin(
        &mut self,
        root: &mut Root,
        seq: u64,
        path: &RelPath,
        size: u64,
    ) -> Option<Failure> {
        let started = begin(root, seq, path, size);
        self.start(started, seq, path)
    }

    /// One piece of the current file. `Err` is a protocol error (no file
    /// open, index out of order); `Ok(Some)` a failure of this file.
    pub fn piece(
        &mut self,
        root: &Root,
        index: u32,
        kind: PieceKind,
        data: &[u8],
    ) -> Result<Option<Failure>, String> {
        self.any_piece(root, index, Ok((kind, data)))
    }

    /// A piece with holes; see [`Receiver::piece`].
    pub fn sparse_piece(
        &mut self,
        root: &Root,
        index: u32,
        segments: &[Segment],
    ) -> Result<Option<Failure>, String> {
        self.any_piece(root, index, Err(segments))
    }

    fn any_piece(
        &mut self,
        root: &Root,
        index: u32,
        piece: Result<(PieceKind, &[u8]), &[Segment]>,
    ) -> Result<Option<Failure>, String> {
        let Receiver {
            current,
            base_buf,
            out_buf,
            ..
        } = self;
        let inc = match current {
            None => return Err(format!("Piece {index} without FileBegin")),
            Some(Current::Skipping) => return Ok(None),
            Some(Current::Active(inc)) => inc,
        };
        if index != inc.next_index {
            return Err(format!(
                "piece {index} of {} out of order, expected piece {}",
                root.shown(&inc.path),
                inc.next_index
            ));
        }
        inc.next_index = index.saturating_add(1);
        let deferrable =
            matches!(piece, Ok((PieceKind::Same, _))) && inc.written == 0 && index == inc.deferred;
        let result = if deferrable {
            inc.deferred += 1;
            Ok(())
        } else {
            inc.catch_up(root, base_buf).and_then(|()| match piece {
                Err(segments) => {
                    inc.sigs = None;
                    inc.sparse(root, index, segments)
                }
                Ok((PieceKind::Literal, data)) => {
                    inc.note_sig(index, data);
                    inc.write(root, data)
                }
                Ok((PieceKind::Same, _)) => inc.same(root, index, base_buf),
                Ok((PieceKind::Delta, data)) => {
                    let n = inc.base_piece(root, index, base_buf)?;
                    out_buf.clear();
                    fast_rsync::apply_limited(&base_buf[..n], data, out_buf, PIECE).map_err(
                        |e| {
                            root.refuse(
                                &inc.path,
                                FailureKind::Mismatch,
                                &format!("delta for piece {index} does not apply: {e}"),
                            )
                        },
                    )?;
                    inc.note_sig(index, out_buf);
                    inc.write(root, out_buf)
                }
            })
        };
        let result = match (result, inc.resumable && !deferrable) {
            (Ok(()), true) => partial::settle(&inc.out, inc.written)
                .map_err(|e| root.error(&inc.path, "cannot sync the partial file", e)),
            (other, _) => other,
        };
        match result {
            Ok(()) => Ok(None),
            Err(e) => {
                let failure = e.into_failure(inc.seq, inc.path.clone());
                // Dropping the incoming file removes its temp file.
                *current = Some(Current::Skipping);
                Ok(Some(failure))
            }
        }
    }

    /// `FileEnd`: verify, apply attributes, queue the rename. `Err` is a
    /// protocol error (no file open).
    pub fn end(
        &mut self,
        root: &mut Root,
        attrs: &Attrs,
        hash: &[u8; 32],
    ) -> Result<Option<Failure>, String> {
        let mut inc = match self.current.take() {
            None => return Err("FileEnd without FileBegin".into()),
            Some(Current::Skipping) => return Ok(None),
            Some(Current::Active(inc)) => inc,
        };
        let buf = &mut self.base_buf;
        let kept = match inc.keeps_base(root, buf).and_then(|keep| match keep {
            true => Ok(true),
            false => inc.catch_up(root, buf).map(|()| false),
        }) {
            Ok(kept) => kept,
            Err(e) => return Ok(Some(e.into_failure(inc.seq, inc.path.clone()))),
        };
        let verdict = if inc.written != inc.size {
            Err(root.refuse(
                &inc.path,
                FailureKind::Mismatch,
                &format!(
                    "received {} bytes, {} were announced",
                    inc.written, inc.size
                ),
            ))
        } else if inc.hasher.finalize().as_bytes() != hash {
            Err(root.refuse(
                &inc.path,
                FailureKind::Mismatch,
                "the rebuilt file does not match the announced BLAKE3 hash",
            ))
        } else if kept {
            Ok(())
        } else {
            let sized = if inc.holes {
                // A hole at the end is only a size.
                rfs::ftruncate(&inc.out, inc.size)
            } else {
                Ok(())
            };
            sized
                .and_then(|()| apply_owner_mode(&inc.out, attrs, &root.policy))
                .map_err(|e| root.error(&inc.path, "cannot set attributes", e))
        };
        if let Err(e) = verdict {
            return Ok(Some(e.into_failure(inc.seq, inc.path.clone())));
        }
        if kept {
            return Ok(self.keep(root, &inc, attrs));
        }
        // The content goes in place even if the slave's file system cannot
        // hold the xattrs; that is reported as a failure of its own.
        let xattr_failure = match &attrs.xattrs {
            Some(x) => set_fresh_xattrs(
                inc.out.as_fd(),
                &root.policy.xattrs(x, false),
                inc.temp.info.inherits_xattrs,
            )
            .err()
            .map(|e| {
                root.error(&inc.path, "cannot set extended attributes", e)
                    .into_failure(inc.seq, inc.path.clone())
            }),
            None => None,
        };
        // Last, as setting anything else may touch the times.
        if let Err(e) = rfs::futimens(&inc.out, &timestamps(attrs.mtime_sec, attrs.mtime_nsec)) {
            let e = root.error(&inc.path, "cannot set attributes", e);
            return Ok(Some(e.into_failure(inc.seq, inc.path.clone())));
        }
        let Incoming {
            seq,
            path,
            final_name,
            out,
            base,
            temp,
            size,
            resumable,
            sigs,
            ..
        } = *inc;
        drop(base);
        let sigs = sigs.filter(|s| s.len() as u64 == size.div_ceil(PIECE_SIZE));
        let out = (resumable || sigs.is_some()).then_some(out);
        root.note_changed_dev(temp.info.dev, temp.dir.as_fd());
        self.pending_bytes = self.pending_bytes.saturating_add(size);
        self.pending_paths.insert(path.clone());
        self.pending.push(Pending {
            seq,
            path,
            final_name,
            out,
            resumable,
            sigs,
            temp,
        });
        Ok(xattr_failure)
    }

    /// A file whose every piece was `Same` and whose copy on the slave
    /// hashed as announced: that copy stays, without being rewritten;
    /// only its attributes are set (in place, as `SetAttr` does). Returns
    /// the failure to report, if any.
    fn keep(&mut self, root: &mut Root, inc: &Incoming, attrs: &Attrs) -> Option<Failure> {
        let base = match &inc.base {
            Some(Some(base)) => base,
            _ => return None,
        };
        let before = rfs::fstat(base).ok().map(|st| Stamp::of(&st));
        let failure = super::apply::set_attr(root, &inc.path, attrs)
            .err()
            .map(|e| e.into_failure(inc.seq, inc.path.clone()));
        // Its signatures still hold for its content, under its new ctime.
        let known = before.and_then(|b| self.sig_cache.get(&inc.path, &b));
        match (known, rfs::fstat(base)) {
            (Some(sigs), Ok(st)) => self.sig_cache.insert(&inc.path, Stamp::of(&st), sigs),
            _ => self.sig_cache.forget(&inc.path),
        }
        failure
    }

    /// `FileAbort`: drop the current file. `Err` is a protocol error.
    pub fn abort(&mut self) -> Result<(), String> {
        match self.current.take() {
            None => Err("FileAbort without FileBegin".into()),
            Some(_) => Ok(()),
        }
    }

    /// Makes the pending temp files durable, then renames each over its final
    /// name. Returns a failure per file that did not get into place.
    pub fn flush(&mut self, root: &mut Root) -> Vec<Failure> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_paths.clear();
        self.pending_bytes = 0;
        if let Err(e) = root.sync_all() {
            // Temp files are removed as `pending` drops.
            return pending
                .into_iter()
                .map(|p| {
                    root.error(&p.path, "cannot sync the received data to disk", e)
                        .into_failure(p.seq, p.path.clone())
                })
                .collect();
        }
        let mut failures = Vec::new();
        for mut p in pending {
            let dir = p.temp.dir.as_fd();
            let tmp = p.temp.name.as_str();
            // A partial's record must not reach the final name.
            let unmarked = match (&p.out, p.resumable) {
                (Some(out), true) => partial::unmark(out),
                _ => Ok(()),
            };
            let result = match unmarked.and_then(|()| rfs::renameat(dir, tmp, dir, &p.final_name)) {
                // A directory is in the way: the file replaces it.
                Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
                    root.forget_dirs();
                    remove_tree(dir, p.final_name.as_os_str())
                        .and_then(|()| rfs::renameat(dir, tmp, dir, &p.final_name))
                }
                other => other,
            };
            match result {
                Ok(()) => {
                    p.temp.armed = false;
                    root.note_changed_dev(p.temp.info.dev, dir);
                    match (&p.out, p.sigs.take()) {
                        (Some(out), Some(sigs)) => match rfs::fstat(out) {
                            Ok(st) => self
                                .sig_cache
                                .insert(&p.path, Stamp::of(&st), Rc::new(sigs)),
                            Err(_) => self.sig_cache.forget(&p.path),
                        },
                        _ => self.sig_cache.forget(&p.path),
                    }
                }
                Err(e) => failures.push(
                    root.error(&p.path, "cannot rename the received file into place", e)
                        .into_failure(p.seq, p.path.clone()),
                ),
            }
        }
        failures
    }

    /// Forgets the verified files not yet renamed into place; their temp
    /// files are removed, except partials: a large file verified but not
    /// yet in place is resumed from its last piece.
    pub fn discard_pending(&mut self) {
        for p in &mut self.pending {
            if p.resumable {
                p.temp.armed = false;
            }
        }
        self.pending.clear();
        self.pending_paths.clear();
    }

    /// Drops the file being received; a resumable one keeps its partial
    /// (the next session resumes it).
    pub fn discard_current(&mut self) {
        if let Some(Current::Active(inc)) = &mut self.current {
            if inc.resumable {
                inc.temp.armed = false;
            }
        }
        self.current = None;
    }

    /// Answers `Partial`: the pieces of a partial copy of `stamp` kept for
    /// `path` (0 if none, or it cannot be looked at safely).
    pub fn partial_pieces(&self, root: &mut Root, path: &RelPath, stamp: &FileStamp) -> u32 {
        if path.is_root() {
            return 0;
        }
        match root.parent(path, false) {
            Ok(p) => partial::kept_pieces(p.dir.as_fd(), p.name, stamp),
            Err(_) => 0,
        }
    }

    /// `FileResume`: starts receiving `path` into its partial, keeping the
    /// first `from` pieces; see [`Receiver::begin`].
    pub fn resume(
        &mut self,
        root: &mut Root,
        seq: u64,
        path: &RelPath,
        size: u64,
        stamp: &FileStamp,
        from: u32,
    ) -> Option<Failure> {
        let started = resume(root, seq, path, size, stamp, from);
        self.start(started, seq, path)
    }
}

fn begin(root: &mut Root, seq: u64, path: &RelPath, size: u64) -> Result<Incoming, OpError> {
    let p = root.parent(path, true)?;
    let tmp = temp_name(p.name);
    let fail = |e| root.error(path, &format!("cannot create temporary file {tmp}"), e);
    let create = || {
        rfs::openat(
            &p.dir,
            tmp.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    };
    let fd = match create() {
        // A leftover of this process (a file it abandoned): replace it.
        Err(Errno::EXIST) => remove_any(p.dir.as_fd(), tmp.as_ref()).and_then(|()| create()),
        other => other,
    }
    .map_err(fail)?;
    Ok(Incoming::new(seq, path, p, File::from(fd), tmp, size))
}

fn resume(
    root: &mut Root,
    seq: u64,
    path: &RelPath,
    size: u64,
    stamp: &FileStamp,
    from: u32,
) -> Result<Incoming, OpError> {
    let p = root.parent(path, true)?;
    let opened = partial::open(p.dir.as_fd(), p.name, stamp, from)
        .map_err(|e| root.error(path, "cannot open the partial file", e))?;
    let (file, name, kept, hasher) = match opened {
        partial::Opened::Ready {
            file,
            name,
            kept,
            hasher,
        } => (file, name, kept, hasher),
        // Another process still writes it: this copy starts from 0 under
        // a temp name of its own.
        partial::Opened::Busy if from == 0 => return begin(root, seq, path, size),
        partial::Opened::Busy | partial::Opened::Changed => {
            // The master skipped pieces that are not here (any more): the
            // batch is retried, and then starts over.
            return Err(root.refuse(
                path,
                FailureKind::Mismatch,
                &format!("the partial copy no longer holds the first {from} pieces"),
            ));
        }
    };
    if kept > size {
        return Err(root.refuse(
            path,
            FailureKind::Mismatch,
            &format!("resumed at {kept} bytes, past the announced {size}"),
        ));
    }
    Ok(Incoming {
        written: kept,
        next_index: from,
        hasher: *hasher,
        resumable: true,
        ..Incoming::new(seq, path, p, file, name, size)
    })
}

impl Incoming {
    /// A file received from its first byte into `out`, named `temp` in
    /// `p`'s directory until it is put in place.
    fn new(seq: u64, path: &RelPath, p: Parent<'_>, out: File, temp: String, size: u64) -> Self {
        // A file of several pieces is written bypassing the page cache
        // where the file system allows it.
        let direct = (size > PIECE_SIZE)
            .then(|| {
                rfs::fcntl_getfl(&out)
                    .and_then(|f| rfs::fcntl_setfl(&out, f | OFlags::DIRECT))
                    .ok()
            })
            .flatten()
            .map(|()| AlignedBuf::new(PIECE));
        Incoming {
            direct,
            base_direct: false,
            base_no_direct: false,
            seq,
            path: path.clone(),
            final_name: p.name.to_owned(),
            out,
            base: None,
            temp: TempGuard {
                dir: p.dir,
                info: p.info,
                name: temp,
                armed: true,
            },
            size,
            written: 0,
            next_index: 0,
            hasher: blake3::Hasher::new(),
            holes: false,
            resumable: false,
            deferred: 0,
            base_sigs: None,
            sigs: None,
        }
    }
}

/// Owner and mode of a received file, on its open fd, as the policy allows,
/// and the record of the brick's values where they differ. The owner goes
/// first: `chown` clears set-user-ID bits.
fn apply_owner_mode(file: &File, attrs: &Attrs, policy: &Policy) -> Result<(), Errno> {
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
fn open_regular(root: &mut Root, path: &RelPath) -> Result<Option<File>, OpError> {
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

fn open_regular_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<File>, Errno> {
    // Opened once: opening a device or FIFO can have side effects.
    Ok(super::nofollow::open_regular(dir, name)?.map(File::from))
}

/// Alignment of the memory, offset and length of an `O_DIRECT` write (the
/// usual largest logical block size).
const DIRECT_ALIGN: usize = 4096;

/// A buffer whose start is aligned for `O_DIRECT`.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new(capacity: usize) -> Self {
        let raw = vec![0u8; capacity + DIRECT_ALIGN];
        let start = (DIRECT_ALIGN - raw.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        AlignedBuf { raw, start }
    }

    fn capacity(&self) -> usize {
        self.raw.len() - DIRECT_ALIGN
    }

    fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.raw[self.start..self.start + len]
    }
}

/// The serialized signature of one piece, as the master expects it.
fn piece_signature(data: &[u8]) -> Vec<u8> {
    let options = SignatureOptions {
        block_size: SIG_BLOCK_SIZE,
        crypto_hash_size: SIG_STRONG_LEN,
    };
    Signature::calculate(data, options).into_serialized()
}

/// Reads `buf.len()` bytes at `offset` (fewer at the end of the file);
/// how many.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
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
fn read_piece(file: &File, index: u64, buf: &mut Vec<u8>) -> std::io::Result<usize> {
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
