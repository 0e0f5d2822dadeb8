//! Shipping one [`Batch`] to the slave and waiting until it is durable.
//!
//! Order on the wire: entries (journal order), a barrier to learn which
//! renames found no source (those destinations are then resent whole), file
//! contents (small files literally; larger ones as deltas against the slave's
//! signatures, requested a window ahead so the link stays busy), attributes,
//! and finally a commit. Only a `Committed` reply lets the caller advance
//! stime (DESIGN.md invariant 2).
//!
//! A file that changes while it is being read is abandoned (`FileAbort`):
//! the write that changed it happened after this batch's journal files were
//! closed, so a later batch sends it again. Nothing torn is ever marked synced.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use fast_rsync::Signature;
use tokio::io::{AsyncRead, AsyncWrite};

use super::link::{LinkError, SlaveLink};
use super::protocol::{
    Attrs, EntryOp, Failure, FailureKind, PieceKind, Reply, Request, DELTA_MIN_SIZE, PIECE_SIZE,
};
use crate::crawl::{Batch, Entry, HybridCrawl};
use crate::relpath::RelPath;

/// How many signature requests may be outstanding at once.
const SIG_WINDOW: usize = 8;

/// Size of the batches a resync of a missing rename source is cut into.
const RESYNC_BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The slave could not apply part of the batch for a reason that may go
    /// away (disk full, I/O error): the batch must be retried.
    #[error("the slave could not apply the batch: {}", first_failure(.0))]
    Transient(Vec<Failure>),
    #[error("unexpected reply from the slave: {0}")]
    Unexpected(String),
}

fn first_failure(f: &[Failure]) -> String {
    match f {
        [] => "no details".into(),
        [one] => one.message.clone(),
        [one, rest @ ..] => format!("{} (and {} more)", one.message, rest.len()),
    }
}

/// What a shipped batch did.
#[derive(Debug, Default, Clone)]
pub struct ShipReport {
    pub entries: u64,
    pub data: u64,
    pub meta: u64,
    pub bytes_sent: u64,
    /// Permanent per-path failures (counted in FAILURES, logged).
    pub failures: Vec<Failure>,
    /// Problems reading the brick (master side), with paths.
    pub local_errors: Vec<String>,
}

/// Attributes of a master file, as sent.
fn attrs_of(md: &fs::Metadata, with_owner: bool) -> Attrs {
    Attrs {
        mode: md.permissions().mode() & 0o7777,
        uid: with_owner.then(|| md.uid()),
        gid: with_owner.then(|| md.gid()),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
    }
}

/// The identity of a file's content: if any of this changes while reading,
/// the read may be torn.
fn content_stamp(md: &fs::Metadata) -> (u64, u64, i64, i64, i64, i64) {
    (
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
    )
}

/// Sends one batch and waits for the slave to make it durable.
pub struct Shipper<'a, S> {
    link: &'a mut SlaveLink<S>,
    brick: &'a Path,
    batch_id: u64,
    /// Send numeric owners (only meaningful when the slave runs as root).
    pub with_owner: bool,
    report: ShipReport,
    transient: Vec<Failure>,
    /// Destinations of renames whose source the slave did not have.
    resend: Vec<RelPath>,
    /// Parent directories of the files sent.
    touched_dirs: std::collections::BTreeSet<RelPath>,
    /// Destination of each rename sent, by request sequence number.
    rename_dest: std::collections::HashMap<u64, RelPath>,
}

impl<'a, S: AsyncRead + AsyncWrite> Shipper<'a, S> {
    pub fn new(link: &'a mut SlaveLink<S>, brick: &'a Path, batch_id: u64) -> Self {
        Shipper {
            link,
            brick,
            batch_id,
            with_owner: nix_is_root(),
            report: ShipReport::default(),
            transient: Vec::new(),
            resend: Vec::new(),
            rename_dest: std::collections::HashMap::new(),
            touched_dirs: std::collections::BTreeSet::new(),
        }
    }

    /// Ships `batch` and returns once the slave acknowledged it as durable.
    pub async fn ship(mut self, batch: &Batch) -> Result<ShipReport, ShipError> {
        let start_bytes = self.link.bytes_sent();
        for entry in batch.entries() {
            self.send_entry(entry).await?;
        }
        self.barrier().await?;
        let mut extra = Batch::new();
        for to in std::mem::take(&mut self.resend) {
            let mut walk =
                HybridCrawl::new(self.brick.to_owned(), to, Vec::new(), None).with_prune();
            while let Some(b) = walk.next_batch(RESYNC_BATCH) {
                for e in b.entries() {
                    self.send_entry(e).await?;
                }
                b.data().iter().for_each(|p| extra.push_data(p.clone()));
                b.meta_only().for_each(|p| extra.push_meta(p.clone()));
            }
            self.report.local_errors.extend(walk.take_errors());
        }
        let data = batch.data().iter().chain(extra.data());
        self.send_files(data).await?;
        // Putting a file in place on the slave (temp file, rename) touches
        // its directory's mtime, so each such directory gets its attributes
        // again, after the last file.
        let mut meta: Vec<&RelPath> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let parents: Vec<RelPath> = std::mem::take(&mut self.touched_dirs).into_iter().collect();
        for path in batch
            .meta_only()
            .chain(extra.meta_only())
            .chain(parents.iter())
        {
            if seen.insert(path) {
                meta.push(path);
            }
        }
        for path in meta {
            self.send_meta(path).await?;
        }
        self.link
            .send(&Request::Commit {
                batch: self.batch_id,
            })
            .await?;
        self.link.flush().await?;
        loop {
            match self.link.recv().await? {
                Reply::Committed { batch } if batch == self.batch_id => break,
                other => self.absorb(other)?,
            }
        }
        self.report.bytes_sent = self.link.bytes_sent() - start_bytes;
        if !self.transient.is_empty() {
            return Err(ShipError::Transient(self.transient));
        }
        Ok(self.report)
    }

    /// Records a reply that is not the one being waited for.
    fn absorb(&mut self, reply: Reply) -> Result<(), ShipError> {
        match reply {
            Reply::Failed(f) if f.kind == FailureKind::SourceMissing => {
                // The slave never had the source: send the destination whole.
                match self.rename_dest.get(&f.seq) {
                    Some(to) => self.resend.push(to.clone()),
                    None => self.resend.push(f.path),
                }
                Ok(())
            }
            Reply::Failed(f) if f.kind.is_transient() => {
                self.transient.push(f);
                Ok(())
            }
            Reply::Failed(f) => {
                tracing::warn!(path = %f.path, kind = ?f.kind, "{}", f.message);
                self.report.failures.push(f);
                Ok(())
            }
            other => Err(ShipError::Unexpected(format!("{other:?}"))),
        }
    }

    async fn barrier(&mut self) -> Result<(), ShipError> {
        let id = self.link.next_seq();
        self.link.send(&Request::Barrier { id }).await?;
        self.link.flush().await?;
        loop {
            match self.link.recv().await? {
                Reply::Barrier { id: got } if got == id => return Ok(()),
                other => self.absorb(other)?,
            }
        }
    }

    fn local_error(&mut self, what: &str, path: &RelPath, e: io::Error) {
        let msg = format!("cannot {what} {}: {e}", path.under(self.brick).display());
        tracing::warn!("{msg}");
        self.report.local_errors.push(msg);
    }

    async fn send_entry(&mut self, entry: &Entry) -> Result<(), ShipError> {
        let lstat = |p: &RelPath| fs::symlink_metadata(p.under(self.brick)).ok();
        // The brick may have moved on since the journal was written; the
        // later records describe what happened next, so a placeholder mode
        // is enough for an entry that is gone now.
        let op = match entry {
            Entry::Mkdir(p) => EntryOp::Mkdir {
                path: p.clone(),
                mode: lstat(p)
                    .filter(|m| m.is_dir())
                    .map_or(0o755, |m| m.mode() & 0o7777),
            },
            // Only an empty file is created as an entry: anything with content
            // arrives whole through the data phase, so the slave never shows
            // an empty placeholder for a file whose bytes did not make it. A
            // rename of a file created this way finds no source and is
            // resent whole.
            Entry::Create(p) | Entry::Link(p) => match lstat(p) {
                Some(m) if m.is_file() && m.size() == 0 => EntryOp::Create {
                    path: p.clone(),
                    mode: m.mode() & 0o7777,
                },
                _ => return Ok(()),
            },
            Entry::Symlink(p) => match fs::read_link(p.under(self.brick)) {
                Ok(target) => EntryOp::Symlink {
                    path: p.clone(),
                    target: target.into_os_string().into_encoded_bytes(),
                },
                // Not a symlink any more: a later record says what it is.
                Err(_) => return Ok(()),
            },
            Entry::Mknod(p) => {
                let msg = format!(
                    "special file {} not replicated (FIFOs and devices are not supported yet)",
                    p.under(self.brick).display()
                );
                tracing::warn!("{msg}");
                self.report.local_errors.push(msg);
                return Ok(());
            }
            Entry::Unlink(p) => EntryOp::Unlink { path: p.clone() },
            Entry::Rmdir(p) => EntryOp::Rmdir { path: p.clone() },
            Entry::Rename { from, to } => EntryOp::Rename {
                from: from.clone(),
                to: to.clone(),
            },
            Entry::Prune { dir, keep } => EntryOp::Prune {
                path: dir.clone(),
                keep: keep
                    .iter()
                    .map(|k| serde_bytes::ByteBuf::from(k.clone().into_encoded_bytes()))
                    .collect(),
            },
        };
        let seq = self.link.next_seq();
        if let EntryOp::Rename { to, .. } = &op {
            self.rename_dest.insert(seq, to.clone());
        }
        self.link.send(&Request::Entry { seq, op }).await?;
        self.report.entries += 1;
        Ok(())
    }

    async fn send_meta(&mut self, path: &RelPath) -> Result<(), ShipError> {
        let md = match fs::symlink_metadata(path.under(self.brick)) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                self.local_error("stat", path, e);
                return Ok(());
            }
        };
        let seq = self.link.next_seq();
        let attrs = attrs_of(&md, self.with_owner);
        self.link
            .send(&Request::SetAttr {
                seq,
                path: path.clone(),
                attrs,
            })
            .await?;
        self.report.meta += 1;
        Ok(())
    }

    async fn send_files(&mut self, paths: impl Iterator<Item = &RelPath>) -> Result<(), ShipError> {
        // Large files wait here for their signatures, in request order.
        let mut waiting: VecDeque<(RelPath, u64)> = VecDeque::new();
        for path in paths {
            let md = match fs::symlink_metadata(path.under(self.brick)) {
                Ok(md) if md.is_file() => md,
                // Gone, or not a regular file any more: later records say.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.local_error("stat", path, e);
                    continue;
                }
            };
            if md.size() < DELTA_MIN_SIZE {
                self.send_file(path, None).await?;
                continue;
            }
            let seq = self.link.next_seq();
            self.link
                .send(&Request::Signature {
                    seq,
                    path: path.clone(),
                })
                .await?;
            waiting.push_back((path.clone(), seq));
            if waiting.len() >= SIG_WINDOW {
                self.link.flush().await?;
                let (p, seq) = waiting.pop_front().expect("window is non-empty");
                let sigs = self.receive_signatures(seq).await?;
                self.send_file(&p, sigs).await?;
            }
        }
        self.link.flush().await?;
        while let Some((p, seq)) = waiting.pop_front() {
            let sigs = self.receive_signatures(seq).await?;
            self.send_file(&p, sigs).await?;
        }
        Ok(())
    }

    /// The slave's per-piece signatures for request `seq`; `None` if it has
    /// no regular file there.
    async fn receive_signatures(&mut self, seq: u64) -> Result<Option<Vec<Signature>>, ShipError> {
        let size = loop {
            match self.link.recv().await? {
                Reply::SigBegin { seq: got, size } if got == seq => break size,
                other => self.absorb(other)?,
            }
        };
        let Some(size) = size else { return Ok(None) };
        let pieces = size.div_ceil(PIECE_SIZE);
        let mut sigs = Vec::with_capacity(pieces.min(1 << 16) as usize);
        for _ in 0..pieces {
            match self.link.recv().await? {
                Reply::SigPiece { data } => match Signature::deserialize(data) {
                    Ok(s) => sigs.push(s),
                    Err(_) => return Err(ShipError::Unexpected("malformed signature".into())),
                },
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
    /// has a base and that is smaller.
    async fn send_file(
        &mut self,
        path: &RelPath,
        sigs: Option<Vec<Signature>>,
    ) -> Result<(), ShipError> {
        let full = path.under(self.brick);
        // Never follow a symlink that replaced the file since the journal
        // saw it: that would send the content of a file outside the brick.
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)
            .and_then(|f| {
                let md = f.metadata()?;
                Ok((f, md))
            });
        let (file, before) = match opened {
            Ok(x) if x.1.is_file() => x,
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // ELOOP: it is a symlink now; its own journal record says so.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(()),
            Err(e) => {
                self.local_error("read", path, e);
                return Ok(());
            }
        };
        let size = before.size();
        let seq = self.link.next_seq();
        self.link
            .send(&Request::FileBegin {
                seq,
                path: path.clone(),
                size,
            })
            .await?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = Vec::new();
        let pieces = size.div_ceil(PIECE_SIZE);
        for index in 0..pieces {
            let len = (size - index * PIECE_SIZE).min(PIECE_SIZE) as usize;
            let sig = sigs.as_ref().and_then(|s| s.get(index as usize));
            let piece = tokio::task::block_in_place(|| {
                read_piece(&file, index * PIECE_SIZE, len, &mut buf)?;
                hasher.update(&buf);
                Ok::<_, io::Error>(encode_piece(&buf, sig))
            });
            match piece {
                Ok((kind, data)) => {
                    self.link
                        .send(&Request::Piece {
                            index: index as u32,
                            kind,
                            data,
                        })
                        .await?
                }
                Err(e) => {
                    self.link.send(&Request::FileAbort).await?;
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        self.local_error("read", path, e);
                    }
                    return Ok(());
                }
            }
        }
        let after = file.metadata();
        let unchanged = matches!(&after, Ok(a) if content_stamp(a) == content_stamp(&before));
        // Also catch a write that landed during the read but left the stamp
        // as it was (coarse timestamps): the path must still be this file.
        let same_file = matches!(fs::symlink_metadata(&full), Ok(m) if m.ino() == before.ino());
        if !(unchanged && same_file) {
            tracing::debug!(path = %path, "changed while being sent; a later batch resends it");
            self.link.send(&Request::FileAbort).await?;
            return Ok(());
        }
        let attrs = attrs_of(&before, self.with_owner);
        self.link
            .send(&Request::FileEnd {
                attrs,
                hash: *hasher.finalize().as_bytes(),
            })
            .await?;
        self.report.data += 1;
        self.touched_dirs.insert(path.parent().unwrap_or_default());
        Ok(())
    }
}

/// Reads exactly `len` bytes at `offset` into `buf`; a short file (truncated
/// while reading) is `UnexpectedEof`.
fn read_piece(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, offset)
}

/// The cheaper of a delta against `sig` and the literal bytes.
fn encode_piece(piece: &[u8], sig: Option<&Signature>) -> (PieceKind, Vec<u8>) {
    if let Some(sig) = sig {
        let mut delta = Vec::new();
        if fast_rsync::diff(&sig.index(), piece, &mut delta).is_ok() && delta.len() < piece.len() {
            return (PieceKind::Delta, delta);
        }
    }
    (PieceKind::Literal, piece.to_vec())
}

fn nix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}
