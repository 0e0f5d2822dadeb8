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

use super::durable::Durability;
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

mod direct;
mod files;
mod incoming;

use direct::*;
use files::*;
use incoming::*;

/// Flush the pending renames when this many files wait (each holds only a
/// share of its directory's fd; every flush is a `syncfs`)...
pub(crate) const MAX_PENDING_FILES: usize = 16 * 1024;
/// ...or when they hold this many bytes.
pub(crate) const MAX_PENDING_BYTES: u64 = 256 * 1024 * 1024;

const PIECE: usize = PIECE_SIZE as usize;

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
        let out = (resumable || sigs.is_some() || root.durability() == Durability::EachInode)
            .then_some(out);
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
        // Where `syncfs` does not reach the storage, each temp file is
        // synced on its own, so each is still open here.
        let outs: Vec<BorrowedFd<'_>> = match root.durability() {
            Durability::SyncFs => Vec::new(),
            Durability::EachInode => pending
                .iter()
                .filter_map(|p| p.out.as_ref())
                .map(|o| o.as_fd())
                .collect(),
        };
        let synced = root.sync_all(&outs);
        drop(outs);
        if let Err(e) = synced {
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
