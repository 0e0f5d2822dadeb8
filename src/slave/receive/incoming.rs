//! One file being received: its temp copy, its base for delta pieces, and
//! how its bytes reach the disk.

use super::*;

/// A temp file that is removed when dropped, unless disarmed.
pub(super) struct TempGuard {
    pub(super) dir: Rc<OwnedFd>,
    /// What is known of `dir`.
    pub(super) info: DirInfo,
    pub(super) name: String,
    pub(super) armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = rfs::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// The file being received.
pub(super) struct Incoming {
    pub(super) seq: u64,
    pub(super) path: RelPath,
    pub(super) final_name: OsString,
    // Field order matters: `out` is closed before `temp` may unlink it.
    pub(super) out: File,
    /// The current file, the base of delta pieces: opened at the first one.
    pub(super) base: Option<Option<File>>,
    pub(super) temp: TempGuard,
    pub(super) size: u64,
    pub(super) written: u64,
    pub(super) next_index: u32,
    pub(super) hasher: blake3::Hasher,
    /// Some bytes were left as holes: the size is set at the end.
    pub(super) holes: bool,
    /// Received resumably (see `partial`): the temp file is the partial
    /// kept across sessions, each piece made durable.
    pub(super) resumable: bool,
    /// `out` is open with `O_DIRECT` (see [`Incoming::write_direct`]).
    pub(super) direct: Option<AlignedBuf>,
    /// Whether the base is open with `O_DIRECT` now...
    pub(super) base_direct: bool,
    /// ...and whether it cannot be.
    pub(super) base_no_direct: bool,
    /// Leading `Same` pieces not yet copied from the base: while every
    /// piece so far is `Same`, nothing is written, and a file that turns
    /// out unchanged keeps the slave's copy (see [`Receiver::end`]).
    pub(super) deferred: u32,
    /// The signatures the base was announced with (what a `Same` piece
    /// refers to), when known.
    pub(super) base_sigs: Option<Sigs>,
    /// The signature of each piece rebuilt so far, kept for the cache for
    /// a large file or one sent against a base (a file that changes once
    /// tends to change again); `None` when not tracked.
    pub(super) sigs: Option<Vec<Vec<u8>>>,
}

impl Incoming {
    /// Refuses `len` more bytes past the announced size.
    pub(super) fn room_for(&self, root: &Root, len: u64) -> Result<(), OpError> {
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
    pub(super) fn skip(&mut self, root: &Root, len: u64) -> Result<(), OpError> {
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
    pub(super) fn sparse(
        &mut self,
        root: &Root,
        index: u32,
        segments: &[Segment],
    ) -> Result<(), OpError> {
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
    pub(super) fn base_piece(
        &mut self,
        root: &Root,
        index: u32,
        buf: &mut Vec<u8>,
    ) -> Result<usize, OpError> {
        self.base_direct(false);
        let read = match self.base() {
            Some(base) => read_piece(base, u64::from(index), buf),
            None => return Ok(0),
        };
        read.map_err(|e| root.error(&self.path, "cannot read the current file", errno_of(&e)))
    }

    /// The base, opened when first needed.
    pub(super) fn base(&mut self) -> Option<&File> {
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
    pub(super) fn same(
        &mut self,
        root: &Root,
        index: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), OpError> {
        if self.same_direct(root, index)? {
            return Ok(());
        }
        let n = self.base_piece(root, index, buf)?;
        self.note_same_sig(index, &buf[..n]);
        self.write(root, &buf[..n])
    }

    /// Records the signature of `Same` piece `index` (`data`).
    pub(super) fn note_same_sig(&mut self, index: u32, data: &[u8]) {
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
    pub(super) fn same_direct(&mut self, root: &Root, index: u32) -> Result<bool, OpError> {
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
    pub(super) fn base_direct(&mut self, on: bool) -> bool {
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
    pub(super) fn catch_up(&mut self, root: &Root, buf: &mut Vec<u8>) -> Result<(), OpError> {
        for index in 0..std::mem::take(&mut self.deferred) {
            self.same(root, index, buf)?;
        }
        Ok(())
    }

    /// Records the signature of rebuilt piece `index`, if they are tracked.
    pub(super) fn note_sig(&mut self, index: u32, data: &[u8]) {
        if self.sigs.is_some() {
            self.push_sig(index, piece_signature(data));
        }
    }

    pub(super) fn push_sig(&mut self, index: u32, sig: Vec<u8>) {
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
    pub(super) fn keeps_base(&mut self, root: &Root, buf: &mut Vec<u8>) -> Result<bool, OpError> {
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
    pub(super) fn write_direct(&mut self, root: &Root, data: &[u8]) -> Result<bool, OpError> {
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
    pub(super) fn write_aligned(&mut self, root: &Root, len: usize) -> Result<bool, OpError> {
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

    pub(super) fn stop_direct(&mut self, root: &Root) -> Result<(), OpError> {
        self.direct = None;
        let flags = rfs::fcntl_getfl(&self.out)
            .and_then(|f| rfs::fcntl_setfl(&self.out, f.difference(OFlags::DIRECT)));
        flags.map_err(|e| root.error(&self.path, "cannot write the temporary file", e))
    }

    pub(super) fn write(&mut self, root: &Root, data: &[u8]) -> Result<(), OpError> {
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

pub(super) fn begin(
    root: &mut Root,
    seq: u64,
    path: &RelPath,
    size: u64,
) -> Result<Incoming, OpError> {
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

pub(super) fn resume(
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
    pub(super) fn new(
        seq: u64,
        path: &RelPath,
        p: Parent<'_>,
        out: File,
        temp: String,
        size: u64,
    ) -> Self {
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
