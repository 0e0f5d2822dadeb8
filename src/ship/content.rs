//! File contents: literal files, deltas against the slave's signatures,
//! holes, resumed large files, hard links put back.

use super::*;

/// The data ranges of `file` within `[start, end)`, relative to `start`;
/// `None` if it is all data (or the file system cannot tell).
pub(super) fn data_ranges(file: &File, start: u64, end: u64) -> Option<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let mut ranges = Vec::new();
    let mut pos = start;
    while pos < end {
        let d = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return None,
        };
        if d >= end {
            break;
        }
        let h = seek(file, SeekFrom::Hole(d)).ok()?.min(end);
        if h <= d {
            return None;
        }
        ranges.push((d - start, h - start));
        pos = h;
    }
    if ranges == [(0, end - start)] {
        None
    } else {
        Some(ranges)
    }
}

/// The identity of a file's content: if any of this changes while reading,
/// the read may be torn.
pub(super) fn content_stamp(md: &fs::Metadata) -> (u64, u64, i64, i64, i64, i64) {
    (
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
    )
}

/// A piece ready to go: most pieces of a first copy are already a frame.
pub(super) enum Outgoing {
    Frame(Vec<u8>),
    Request(Request),
}

impl Outgoing {
    async fn send<S: AsyncRead + AsyncWrite>(
        self,
        link: &mut SlaveLink<S>,
    ) -> Result<(), LinkError> {
        match self {
            Outgoing::Frame(frame) => link.send_frame(frame).await,
            Outgoing::Request(request) => link.send(&request).await,
        }
    }
}

/// Reads piece `index` of a file of `size` bytes, adds it to `hasher`, and
/// encodes it: with holes (the first of `prepared`) as a `SparsePiece`,
/// else literally, as a delta against the slave's signature `sig`, or as
/// `Same` when the signatures agree; compressed as `compression` says
/// when that pays. A literal piece without holes that does not compress
/// is read straight into its frame.
pub(super) fn prepare_piece(
    file: &File,
    index: u64,
    size: u64,
    (may_have_holes, sig, compression): (bool, Option<&Signature>, compress::Compression),
    hasher: &mut blake3::Hasher,
) -> io::Result<Outgoing> {
    let start = index * PIECE_SIZE;
    let len = (size - start).min(PIECE_SIZE) as usize;
    if sig.is_none() && !may_have_holes {
        let framed = protocol::literal_piece_frame(index as u32, len, |bytes| {
            file.read_exact_at(bytes, start)?;
            hasher.update(bytes);
            Ok(())
        });
        match framed {
            Ok(frame) => {
                let data = &frame[frame.len() - len..];
                if !compress::worth_packing(data, compression) {
                    return Ok(Outgoing::Frame(frame));
                }
                let piece = Request::Piece {
                    index: index as u32,
                    kind: PieceKind::Literal,
                    data: data.to_vec(),
                };
                return Ok(Outgoing::Request(compress::pack(piece, compression)));
            }
            Err(ProtocolError::Io(e)) => return Err(e),
            // Not sent as a frame (nothing was read): the request below
            // meets the same error where requests are encoded.
            Err(_) => {}
        }
    }
    let mut buf = Vec::new();
    read_piece(file, start, len, &mut buf)?;
    hasher.update(&buf);
    // Only a file with fewer blocks than bytes can have holes.
    let ranges = if may_have_holes {
        data_ranges(file, start, start + len as u64)
    } else {
        None
    };
    let request = match ranges {
        Some(ranges) => Request::SparsePiece {
            index: index as u32,
            segments: ranges
                .into_iter()
                .map(|(a, b)| Segment {
                    offset: a as u32,
                    data: buf[a as usize..b as usize].to_vec(),
                })
                .collect(),
        },
        None => {
            let (kind, data) = encode_piece(buf, sig);
            Request::Piece {
                index: index as u32,
                kind,
                data,
            }
        }
    };
    Ok(Outgoing::Request(compress::pack(request, compression)))
}

/// Reads piece `index` of a file of `size` bytes into `hasher` only (the
/// slave holds it already).
pub(super) fn hash_piece(
    file: &File,
    index: u64,
    size: u64,
    hasher: &mut blake3::Hasher,
) -> io::Result<()> {
    let start = index * PIECE_SIZE;
    let len = (size - start).min(PIECE_SIZE) as usize;
    let mut buf = Vec::new();
    read_piece(file, start, len, &mut buf)?;
    hasher.update(&buf);
    Ok(())
}

/// The stamp of a master file a slave's partial copy is matched against.
pub(super) fn file_stamp(md: &fs::Metadata) -> FileStamp {
    FileStamp {
        size: md.size(),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
    }
}

/// A `Partial` request awaiting its answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Query {
    seq: u64,
    stamp: FileStamp,
}

/// Reads exactly `len` bytes at `offset` into `buf`; a short file (truncated
/// while reading) is `UnexpectedEof`.
pub(super) fn read_piece(
    file: &File,
    offset: u64,
    len: usize,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, offset)
}

/// The cheapest of `Same` (the slave's piece has the same signature), a
/// delta against `sig`, and the literal bytes.
pub(super) fn encode_piece(piece: Vec<u8>, sig: Option<&Signature>) -> (PieceKind, Vec<u8>) {
    if let Some(sig) = sig {
        let options = fast_rsync::SignatureOptions {
            block_size: SIG_BLOCK_SIZE,
            crypto_hash_size: SIG_STRONG_LEN,
        };
        // Calculating a signature is several times faster than a diff.
        if Signature::calculate(&piece, options).serialized() == sig.serialized() {
            return (PieceKind::Same, Vec::new());
        }
        let mut delta = Vec::new();
        if fast_rsync::diff(&sig.index(), &piece, &mut delta).is_ok() && delta.len() < piece.len() {
            return (PieceKind::Delta, delta);
        }
    }
    (PieceKind::Literal, piece)
}

pub(super) fn nix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl<'a, S: AsyncRead + AsyncWrite> Shipper<'a, S> {
    /// Files, then attributes (of `meta`, of the directories the files were
    /// put in, but not of files whose content carried them).
    pub(super) async fn send_content(
        &mut self,
        data: impl Iterator<Item = &RelPath>,
        meta: impl Iterator<Item = &RelPath>,
    ) -> Result<(), ShipError> {
        if self.link.lane_count() > 1 && self.ledger.unsettled() {
            // The other lanes must not write files while the entries sent
            // before (prunes, removals, renames) are still being applied.
            self.barrier().await?;
        }
        self.send_files(data).await?;
        // Putting a file in place on the slave (temp file, rename) touches
        // its directory's mtime, so each such directory gets its attributes
        // again, after the last file.
        let parents: Vec<RelPath> = std::mem::take(&mut self.touched_dirs).into_iter().collect();
        let due = std::mem::take(&mut self.attrs_due);
        let sent = std::mem::take(&mut self.content_sent);
        let mut seen = HashSet::new();
        let mut todo: Vec<RelPath> = Vec::new();
        for path in meta
            .filter(|p| !sent.contains(*p))
            .cloned()
            .chain(parents)
            .chain(due)
        {
            if seen.insert(path.clone()) {
                todo.push(path);
            }
        }
        for path in &todo {
            self.send_meta(path).await?;
        }
        Ok(())
    }

    pub(super) async fn send_files(
        &mut self,
        paths: impl Iterator<Item = &RelPath>,
    ) -> Result<(), ShipError> {
        // Large files wait here for their signatures, in request order
        // (with the lane that carries them).
        let mut waiting: VecDeque<(RelPath, u64, usize, Option<Query>, u64)> = VecDeque::new();
        // Multiply-linked files: the one name per inode whose content is
        // sent; its other names are linked to it afterwards.
        let mut primaries: HashMap<Inode, RelPath> = HashMap::new();
        // A path named twice (a record of the batch and a re-walk, say) is
        // sent once: its second signature would be asked before the first
        // send is in place, so the slave would apply the second delta to
        // the first send's content, not to the copy it signed.
        let mut queued: HashSet<&RelPath> = HashSet::new();
        for path in paths {
            if !queued.insert(path) || self.withheld(path) {
                continue;
            }
            if waiting.is_empty() {
                self.adopt_lanes().await?;
            }
            // One resolution of the path serves the type check and, for a
            // file sent at once, the read (see `send_file`).
            let probed = self.dir.handle(path).and_then(|h| {
                let md = h.metadata()?;
                Ok((h, md))
            });
            let (handle, md) = match probed {
                // Its data is another brick's to send.
                Ok((h, md)) if self.link_file(&h, &md) => {
                    self.hand_off(path);
                    continue;
                }
                Ok((h, md)) if md.is_file() => (h, md),
                // No content to send, but inotify reports an mtime set with
                // the access time omitted (`touch -m`, rsync) as a write: a
                // directory or symlink may have nothing else telling that
                // its attributes changed. (If it replaced a file, later
                // records make it anew.)
                Ok(_) => {
                    self.attrs_due.push(path.clone());
                    continue;
                }
                // Gone as a file (or beyond a symlink now): a later record
                // tells what the path is now.
                Err(e) if unresolved(&e) => {
                    self.hand_off(path);
                    continue;
                }
                Err(e) => {
                    self.local_error("stat", path, e);
                    continue;
                }
            };
            if md.nlink() > 1 {
                let inode = Inode::of(&md);
                self.memory.links.note(inode, path);
                // A GlusterFS brick names every hard link of a file (besides
                // its handle): those this worker never saw made, e.g. since
                // it took over a replica set, are relinked too.
                if self.gluster_brick && md.nlink() > 2 {
                    for name in crate::changelog::glusterfs::file_names(self.brick, path) {
                        self.memory.links.note(inode, &name);
                    }
                }
                if primaries.contains_key(&inode) {
                    continue;
                }
                primaries.insert(inode, path.clone());
            }
            let lane = self.link.lane_of(path);
            if md.size() < DELTA_MIN_SIZE || self.literal.contains(path) {
                self.send_file(path, lane, Some((handle, md)), None, None)
                    .await?;
                continue;
            }
            drop(handle);
            let seq = self.link.next_seq();
            self.link
                .lane(lane)
                .send(&Request::Signature {
                    seq,
                    path: path.clone(),
                })
                .await?;
            let query = self.ask_partial(path, lane, &md).await?;
            waiting.push_back((path.clone(), seq, lane, query, md.size()));
            if waiting.len() >= SIG_WINDOW {
                if let Some((p, seq, lane, query, size)) = waiting.pop_front() {
                    self.receive_and_send(&p, lane, (seq, size), query).await?;
                }
            }
        }
        for lane in 0..self.link.lane_count() {
            self.link.lane(lane).flush().await?;
        }
        while let Some((p, seq, lane, query, size)) = waiting.pop_front() {
            self.receive_and_send(&p, lane, (seq, size), query).await?;
        }
        if self.link.lane_count() > 1 {
            // What follows (relinks, attributes of the directories) must
            // find the files of the other lanes in place.
            self.barrier().await?;
        }
        self.relink(primaries).await
    }

    /// Notes the other names of the multiply-linked files among `data` that
    /// the slave already has (sent when they had one name; a new hard link
    /// is journalled under its new name only), so they are linked again to
    /// the content sent.
    pub(super) fn find_link_names<'b>(&mut self, data: impl Iterator<Item = &'b RelPath>) {
        let inodes: HashSet<Inode> = data
            .filter_map(|p| self.dir.lstat(p).ok())
            .filter(|m| m.is_file() && m.nlink() > 1)
            .map(|m| Inode::of(&m))
            .collect();
        for (inode, name) in self.memory.origins.names_of(&inodes) {
            self.memory.links.note(inode, &name);
        }
    }

    /// Links every known name of each multiply-linked file sent to the name
    /// its content went to: putting the new content in place (temp file,
    /// rename) made that name a new inode on the slave.
    pub(super) async fn relink(
        &mut self,
        primaries: HashMap<Inode, RelPath>,
    ) -> Result<(), ShipError> {
        let mut primaries: Vec<_> = primaries.into_iter().collect();
        primaries.sort_by(|a, b| a.1.cmp(&b.1));
        for (inode, primary) in primaries {
            let names = self.memory.links.verified(self.brick, inode);
            for name in names {
                if name == primary || self.withheld(&name) {
                    continue;
                }
                self.memory.origins.link(&name, &primary);
                let seq = self.link.next_seq();
                self.ledger.record(seq, Awaiting::Relink);
                tracing::debug!(batch = self.batch_id, seq, path = %name, target = %primary, "relink");
                self.link
                    .send(&Request::Entry {
                        seq,
                        op: EntryOp::Link {
                            path: name.clone(),
                            target: primary.clone(),
                        },
                    })
                    .await?;
                self.report.entries += 1;
                self.touched_dirs.insert(name.parent().unwrap_or_default());
            }
        }
        Ok(())
    }

    /// For a file received resumably (at least [`RESUME_MIN_SIZE`] bytes),
    /// asks how much of it the slave already holds (see "Resuming large
    /// files" in `protocol`).
    pub(super) async fn ask_partial(
        &mut self,
        path: &RelPath,
        lane: usize,
        md: &fs::Metadata,
    ) -> Result<Option<Query>, ShipError> {
        if md.size() < RESUME_MIN_SIZE {
            return Ok(None);
        }
        let seq = self.link.next_seq();
        let stamp = file_stamp(md);
        self.link
            .lane(lane)
            .send(&Request::Partial {
                seq,
                path: path.clone(),
                stamp,
            })
            .await?;
        Ok(Some(Query { seq, stamp }))
    }

    /// Takes the answers to a file's `Signature` (request `seq`, for a local
    /// file of `size` bytes) and `Partial` requests, then sends the file.
    pub(super) async fn receive_and_send(
        &mut self,
        path: &RelPath,
        lane: usize,
        (seq, size): (u64, u64),
        query: Option<Query>,
    ) -> Result<(), ShipError> {
        let sigs = self.receive_signatures(path, lane, seq, size).await?;
        let resume = match query {
            Some(q) => loop {
                match self.link.lane(lane).recv().await? {
                    Reply::Partial { seq, pieces } if seq == q.seq => {
                        break Some((q.stamp, pieces));
                    }
                    other => self.absorb(other)?,
                }
            },
            None => None,
        };
        self.send_file(path, lane, None, sigs, resume).await
    }

    /// The slave's per-piece signatures of `path` for request `seq`, as far
    /// as a local file of `local_size` bytes uses them (checked: see
    /// [`trust`]); `None` if it has no regular file there.
    pub(super) async fn receive_signatures(
        &mut self,
        path: &RelPath,
        lane: usize,
        seq: u64,
        local_size: u64,
    ) -> Result<Option<Vec<Signature>>, ShipError> {
        let size = loop {
            match self.link.lane(lane).recv().await? {
                Reply::SigBegin { seq: got, size } if got == seq => break size,
                other => self.absorb(other)?,
            }
        };
        let Some(size) = size else { return Ok(None) };
        let (keep, drop) =
            trust::signature_pieces(path, size, local_size).map_err(ShipError::Untrusted)?;
        let mut sigs = Vec::with_capacity(keep as usize);
        for index in 0..keep + drop {
            match self.link.lane(lane).recv().await? {
                Reply::SigPiece { data } if index < keep => sigs.push(
                    trust::check_signature(path, index, size, data)
                        .map_err(ShipError::Untrusted)?,
                ),
                Reply::SigPiece { .. } => {}
                other => {
                    return Err(ShipError::Unexpected(format!(
                        "{other:?} inside a signature"
                    )))
                }
            }
        }
        Ok(Some(sigs))
    }

    /// Sends one file's content, piece by piece, as deltas where the slave
    /// has a base and that is smaller. `resume`: the file is received
    /// resumably; the stamp it was asked about and the pieces the slave
    /// holds of it. `probed`: the path already opened as a handle and found
    /// a regular file (it is then read through that handle).
    pub(super) async fn send_file(
        &mut self,
        path: &RelPath,
        lane: usize,
        probed: Option<(Handle, fs::Metadata)>,
        sigs: Option<Vec<Signature>>,
        resume: Option<(FileStamp, u32)>,
    ) -> Result<(), ShipError> {
        let full = path.under(self.brick);
        // Never follow a symlink (on the way or at the end: ELOOP; its own
        // journal record says what it is), and never block on a FIFO that
        // took the file's place since it was listed.
        let flags =
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
        let opened = match probed {
            Some((handle, md)) => handle.open_file().map(|f| (f, md)),
            None => self.dir.open_beneath(path, flags).and_then(|fd| {
                let f = File::from(fd);
                let md = f.metadata()?;
                Ok((f, md))
            }),
        };
        let (file, before) = match opened {
            Ok(x) if x.1.is_file() => x,
            Ok(_) => return Ok(()),
            Err(e) if unresolved(&e) => return Ok(()),
            Err(e) => {
                self.local_error("read", path, e);
                return Ok(());
            }
        };
        let size = before.size();
        let may_have_holes = before.blocks().saturating_mul(512) < size;
        self.content_sent.insert(path.clone());
        let seq = self.link.next_seq();
        if sigs.is_some() {
            self.ledger
                .record(seq, Awaiting::Delta { path: path.clone() });
        }
        tracing::debug!(batch = self.batch_id, seq, path = %path, size, "file");
        let begin = match resume {
            // What the slave holds is of this very file only if it has not
            // changed since the question (else it starts over).
            Some((stamp, held)) if size >= RESUME_MIN_SIZE => {
                let stamp_now = file_stamp(&before);
                let from = if stamp_now == stamp { held } else { 0 };
                if from > 0 {
                    tracing::info!(path = %path, from_piece = from, "resuming a partial transfer");
                }
                Request::FileResume {
                    seq,
                    path: path.clone(),
                    size,
                    stamp: stamp_now,
                    from,
                }
            }
            _ => Request::FileBegin {
                seq,
                path: path.clone(),
                size,
            },
        };
        let from = match &begin {
            Request::FileResume { from, .. } => u64::from(*from),
            _ => 0,
        };
        self.link.lane(lane).send(&begin).await?;
        let pieces = size.div_ceil(PIECE_SIZE);
        let (file, hasher) = match self
            .send_pieces(file, path, lane, size, may_have_holes, sigs, from)
            .await?
        {
            Some(done) => done,
            None => {
                self.touched_dirs.insert(path.parent().unwrap_or_default());
                self.memory.origins.forget(path);
                self.memory.owe(&before);
                return Ok(());
            }
        };
        debug_assert!(pieces == 0 || hasher.count() == size);
        let after = file.metadata();
        let unchanged = matches!(&after, Ok(a) if content_stamp(a) == content_stamp(&before));
        // Also catch a write that landed during the read but left the stamp
        // as it was (coarse timestamps): the path must still be this file.
        let same_file = matches!(self.dir.lstat(path), Ok(m) if m.ino() == before.ino());
        // The slave made (and will remove) a temp file next to it.
        self.touched_dirs.insert(path.parent().unwrap_or_default());
        if !(unchanged && same_file) {
            tracing::debug!(path = %path, "changed while being sent; a later batch resends it");
            self.memory.origins.forget(path);
            self.memory.owe(&before);
            self.link.lane(lane).send(&Request::FileAbort).await?;
            return Ok(());
        }
        let mut attrs = attrs_of(&before, self.with_owner);
        self.client_times(&full, &mut attrs);
        if self.xattrs.any() {
            match synced_xattrs(&full, Some(&file), self.xattrs) {
                Ok(x) => attrs.xattrs = x,
                Err(e) => self.local_error("read the extended attributes of", path, e),
            }
        }
        self.memory.origins.made(path, Inode::of(&before));
        self.memory.owed.remove(&Inode::of(&before));
        self.link
            .lane(lane)
            .send(&Request::FileEnd {
                attrs,
                hash: *hasher.finalize().as_bytes(),
            })
            .await?;
        self.report.data += 1;
        Ok(())
    }

    /// Sends the pieces of one file; `None` if it could not be read (the
    /// file is then abandoned with `FileAbort`). The pieces of a large file
    /// are read and encoded one ahead, off the runtime, while the previous
    /// one is being sent. Pieces before `from` (held by the slave) are only
    /// read and hashed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_pieces(
        &mut self,
        file: File,
        path: &RelPath,
        lane: usize,
        size: u64,
        may_have_holes: bool,
        sigs: Option<Vec<Signature>>,
        from: u64,
    ) -> Result<Option<(File, blake3::Hasher)>, ShipError> {
        let pieces = size.div_ceil(PIECE_SIZE);
        let mut hasher = blake3::Hasher::new();
        // Compressed (when it pays) where the piece is read: off the runtime.
        let compression = self.link.compression();
        if pieces <= 1 {
            let sig = sigs.as_ref().and_then(|s| s.first());
            let piece = if pieces == 0 {
                None
            } else {
                Some(tokio::task::block_in_place(|| {
                    let prepared = (may_have_holes, sig, compression);
                    prepare_piece(&file, 0, size, prepared, &mut hasher)
                }))
            };
            match piece {
                None => {}
                Some(Ok(out)) => out.send(self.link.lane(lane)).await?,
                Some(Err(e)) => return self.abandon(path, lane, e).await.map(|()| None),
            }
            return Ok(Some((file, hasher)));
        }
        let file = std::sync::Arc::new(file);
        let sigs = std::sync::Arc::new(sigs.unwrap_or_default());
        let spawn = |index: u64, mut hasher: blake3::Hasher| {
            let (file, sigs) = (file.clone(), sigs.clone());
            tokio::task::spawn_blocking(move || {
                let sig = sigs.get(index as usize);
                let r = if index < from {
                    hash_piece(&file, index, size, &mut hasher).map(|()| None)
                } else {
                    let prepared = (may_have_holes, sig, compression);
                    prepare_piece(&file, index, size, prepared, &mut hasher).map(Some)
                };
                (hasher, r)
            })
        };
        let mut next = Some(spawn(0, std::mem::take(&mut hasher)));
        let mut index = 0;
        loop {
            let Some(job) = next.take() else { break };
            let (h, prepared) = job
                .await
                .map_err(|e| ShipError::Unexpected(format!("reading a piece: {e}")))?;
            index += 1;
            match prepared {
                Ok(request) => {
                    if index < pieces {
                        next = Some(spawn(index, h));
                    } else {
                        hasher = h;
                    }
                    if let Some(out) = request {
                        out.send(self.link.lane(lane)).await?;
                    }
                }
                Err(e) => return self.abandon(path, lane, e).await.map(|()| None),
            }
        }
        let file = std::sync::Arc::try_unwrap(file)
            .map_err(|_| ShipError::Unexpected("a piece reader outlived its file".into()))?;
        Ok(Some((file, hasher)))
    }

    /// Drops a file whose reading failed (reported unless it was truncated
    /// meanwhile, which a later batch sees).
    pub(super) async fn abandon(
        &mut self,
        path: &RelPath,
        lane: usize,
        e: io::Error,
    ) -> Result<(), ShipError> {
        self.link.lane(lane).send(&Request::FileAbort).await?;
        if e.kind() != io::ErrorKind::UnexpectedEof {
            self.local_error("read", path, e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ranges_of_a_piece_report_holes_only() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("f");
        let f = File::create(&path).unwrap();
        f.write_all_at(&[1u8; 8192], 1 << 20).unwrap();
        f.set_len(4 << 20).unwrap();
        let f = File::open(&path).unwrap();
        let r = data_ranges(&f, 0, 4 << 20).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].0 <= 1 << 20 && r[0].1 >= (1 << 20) + 8192, "{r:?}");
        // A piece that is all data has no holes to report.
        assert_eq!(data_ranges(&f, 1 << 20, (1 << 20) + 4096), None);
        fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(data_ranges(&File::open(&path).unwrap(), 0, 100), None);
    }
}
