//! The receiving side: `geo-rep slave --root DIR`, run by sshd, its stdin and
//! stdout being the SSH channel.
//!
//! # Place in the flow
//! A master worker (`ship/`, over `transport/`) sends batches of [`Request`]s: entry
//! operations in journal order, then file contents (signatures asked for
//! first, then pieces, literal or delta), then attributes, then `Commit`.
//! [`serve`] applies them in order below the root and answers in order; its
//! `Committed` is what lets the master advance stime.
//!
//! # Invariants owned here (DESIGN.md)
//! 1. *No half-written file under its final name*: contents go to a temp
//!    file in the same directory, are made durable (`syncfs`), and only then
//!    renamed into place (`receive`). Symlinks and hard links replace an
//!    existing name by renaming over it too. A large file's temp file is a
//!    partial that outlives the session so the next one resumes it
//!    (`partial`); it too goes in place only after a verified `FileEnd`.
//! 3. *Confinement*: every path is resolved from the root's directory fd one
//!    component at a time without following symlinks (`root`); a symlink or
//!    non-directory in a parent is refused as `FailureKind::Unsafe`. The root
//!    itself only takes `SetAttr`.
//! 6. *Verify before rename*: each rebuilt file's size and BLAKE3 hash are
//!    checked against `FileEnd` before it may be renamed into place.
//!
//! `Committed` is sent only after everything before the `Commit` is durable:
//! pending renames done, then `syncfs` of every file system touched.
//!
//! Beyond bytes: a `SparsePiece` leaves the gaps between its segments as
//! holes (the temp file is sought over, then sized at `FileEnd`); `Mknod`
//! makes FIFOs, sockets and, if the policy allows (`policy`), device nodes;
//! set-id bits, owners and the root's own mode likewise go through the
//! policy, and what it does not apply is recorded; `Attrs::xattrs`, when
//! present, makes the `user.*` xattrs of a file or directory exactly that
//! set. Errors showing that the tree is not in the state an operation
//! expects (a non-empty directory in the way of a rename, …) are reported as
//! `FailureKind::Conflict`, which the master heals by resending from its
//! brick.
//!
//! A request that fails is answered with `Reply::Failed` and the session goes
//! on; a frame out of place (e.g. a `Piece` with no `FileBegin`) or a broken
//! stream ends it with `Reply::Fatal` (when it can still be sent) and an
//! error. Memory is bounded by a few [`PIECE_SIZE`] buffers, the frames
//! read ahead (counted decoded, see `intake`), plus the
//! signature cache (`sigcache`: the piece signatures of large files this
//! process signed or wrote, so a delta against an unchanged copy need not
//! read it first).
//!
//! [`PIECE_SIZE`]: crate::proto::PIECE_SIZE
//!
//! May import: `proto` (the wire format both ends share), `relpath`,
//! `fsutil`; never the master's `transport`, `ship` or `monitor`.

mod apply;
pub mod commits;
mod durable;
pub mod fence;
mod intake;
mod limits;
pub mod mount;
mod nofollow;
mod partial;
pub mod policy;
mod receive;
mod root;
mod scan;
mod sigcache;
mod slots;

#[cfg(test)]
mod tests;

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

use std::path::{Path, PathBuf};

use crate::proto::compress::unpack;
use crate::proto::{
    check_version, next_frame_len, read_frame, write_frame, ProtocolError, Reply, Request,
    PROTOCOL_VERSION,
};
pub use durable::Durability;
pub use policy::{Owners, Policy};
use receive::Receiver;
use root::Root;

/// Why a slave session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SlaveError {
    #[error("slave root {root}: cannot use it: {source}")]
    Root { root: PathBuf, source: io::Error },
    #[error("slave root {root}: {source}")]
    Version {
        root: PathBuf,
        source: ProtocolError,
    },
    #[error("slave root {root}: protocol error: {source}")]
    Protocol {
        root: PathBuf,
        source: ProtocolError,
    },
    #[error("slave root {root}: protocol error: {what}")]
    Unexpected { root: PathBuf, what: String },
    #[error("slave root {root}: I/O error on the protocol stream: {source}")]
    Stream { root: PathBuf, source: io::Error },
    #[error("slave root {root}: cannot make the batch durable: {source}")]
    Sync { root: PathBuf, source: io::Error },
    #[error("slave root {root}: already served by {max} geo-rep slave processes (--max-processes {max})")]
    Busy { root: PathBuf, max: u32 },
    #[error("slave root {root}: cannot count its slave processes: {source}")]
    Slots { root: PathBuf, source: io::Error },
    /// `geo-rep promote` made the directory the primary: no master ships to
    /// it any more (see `commits`).
    #[error("slave root {root} was promoted to primary (geo-rep promote, at {at} s since the epoch); it takes no more batches from a master")]
    Promoted { root: PathBuf, at: i64 },
    #[error("slave root {root}: cannot record the master's stime: {source}")]
    Stime { root: PathBuf, source: io::Error },
    /// The master declared an epoch of its replica set that a later one
    /// replaced (see `fence`): nothing more of it is applied.
    #[error(transparent)]
    Deposed(Box<crate::proto::Deposed>),
    #[error(
        "slave root {root}: cannot read or record the fencing epoch of replica set {set}: {source}"
    )]
    Fence {
        root: PathBuf,
        set: String,
        source: io::Error,
    },
}

/// Batches of frames read ahead of the one being applied.
const READ_AHEAD: usize = 4;

/// A batch of frames ends after this many...
const BATCH_FRAMES: usize = 256;
/// ...or once its frames take this many bytes decoded (see `intake`; a
/// larger frame, at most [`MAX_FRAME`](crate::proto::MAX_FRAME)
/// of bytes, makes a batch of its own).
const BATCH_BYTES: usize = 1024 * 1024;

/// What the reading thread hands over: one decoded frame, the end of the
/// input between frames (`None`), or why reading stopped.
type ReadFrame = Result<Option<Request>, ProtocolError>;

/// A batch of frames and the memory they take decoded.
type Batch = (Vec<ReadFrame>, usize);

/// Serves one master over `input`/`output` with `root` as the slave root,
/// until the input closes between frames (`Ok`) or the session cannot go on.
///
/// Blocking. A thread reads and decodes frames up to [`READ_AHEAD`] batches
/// ahead, so the stream keeps flowing while a piece is written to disk
/// (otherwise the SSH window fills and the master waits for every write);
/// requests are still applied one at a time, in order, by the calling thread.
pub fn serve<R: Read + Send + 'static, W: Write>(
    root: &Path,
    input: R,
    output: W,
) -> Result<(), SlaveError> {
    serve_with(root, Policy::default(), input, output)
}

/// [`serve`] under the slave policy `policy`.
pub fn serve_with<R: Read + Send + 'static, W: Write>(
    root: &Path,
    policy: Policy,
    input: R,
    output: W,
) -> Result<(), SlaveError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(READ_AHEAD);
    let inflight = intake::InFlight::default();
    let reader_inflight = inflight.clone();
    // Not joined: after a fatal error it may sit in a read until the master
    // hangs up, and it ends by itself once nobody receives.
    std::thread::spawn(move || read_requests(input, tx, reader_inflight));
    let mut requests = Requests {
        rx,
        batch: Vec::new().into_iter(),
        inflight,
        held: 0,
    };
    let mut out = BufWriter::with_capacity(256 * 1024, output);
    let result = Session::start(root, policy, &mut requests, &mut out).and_then(|mut s| {
        let r = s.run(&mut requests, &mut out);
        s.finish();
        r
    });
    if let Err(e) = &result {
        let last = match e {
            SlaveError::Stream { .. } => None,
            SlaveError::Deposed(d) => Some(Reply::Deposed((**d).clone())),
            e => Some(Reply::Fatal {
                message: e.to_string(),
            }),
        };
        if let Some(last) = last {
            // Best effort: the peer may be gone already.
            let _ = write_frame(&mut out, &last);
        }
    }
    let flushed = out.flush();
    result?;
    flushed.map_err(|source| SlaveError::Stream {
        root: root.to_owned(),
        source,
    })
}

/// Reads frames from `input` into `tx` until the input ends (then `None`),
/// an error, or the receiver is gone. Compressed data frames are unwrapped
/// here, so decompression overlaps with applying the previous request.
///
/// Frames go over in batches: every complete frame already read from the
/// stream joins the batch of the one before (up to [`BATCH_FRAMES`] and
/// [`BATCH_BYTES`]). Handing over each small file's three frames one by one
/// made the two threads wake each other for every frame, which cost the
/// slave more CPU than writing the files.
fn read_requests<R: Read>(
    input: R,
    tx: std::sync::mpsc::SyncSender<Batch>,
    inflight: intake::InFlight,
) {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    loop {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let last = loop {
            let next = match input.fill_buf() {
                Ok([]) => Ok(None),
                Ok(_) => read_frame(&mut input).and_then(unpack).map(Some),
                Err(e) => Err(ProtocolError::Io(e)),
            };
            if let Ok(Some(req)) = &next {
                bytes += intake::decoded_size(req);
            }
            let last = !matches!(next, Ok(Some(_)));
            batch.push(next);
            if last
                || batch.len() >= BATCH_FRAMES
                || bytes >= BATCH_BYTES
                || next_frame_len(input.buffer()).is_none_or(|n| input.buffer().len() < n)
            {
                break last;
            }
        };
        // Decode no further while enough waits to be applied.
        if !inflight.reserve(bytes) || tx.send((batch, bytes)).is_err() || last {
            return;
        }
    }
}

/// The requests the reading thread decoded, in order.
struct Requests {
    rx: std::sync::mpsc::Receiver<Batch>,
    /// What is left of the batch being applied.
    batch: std::vec::IntoIter<ReadFrame>,
    /// Decoded bytes handed over and not yet applied...
    inflight: intake::InFlight,
    /// ...of which those of the batch being applied (released once it is).
    held: usize,
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.inflight.close();
    }
}

impl Requests {
    /// The next request if one was read already (without blocking).
    fn try_next(&mut self) -> Option<ReadFrame> {
        if let Some(next) = self.batch.next() {
            return Some(next);
        }
        // The batch is applied (its last request dropped): the reader may
        // decode more now, before this waits for it (else one batch larger
        // than the read-ahead would wait for itself to be released).
        if self.held > 0 {
            self.inflight.release(std::mem::take(&mut self.held));
        }
        let batch = self.rx.try_recv().ok()?;
        self.take(batch);
        self.batch.next()
    }

    /// The next request; `Ok(None)` when the input ended between frames.
    fn next(&mut self) -> ReadFrame {
        if let Some(next) = self.try_next() {
            return next;
        }
        // The reader never leaves without saying why, and sends no empty
        // batch.
        match self.rx.recv() {
            Ok(batch) => {
                self.take(batch);
                self.batch.next().unwrap_or(Err(ProtocolError::Closed))
            }
            Err(_) => Err(ProtocolError::Closed),
        }
    }

    /// Starts applying `batch` (the one before is released).
    fn take(&mut self, (batch, bytes): Batch) {
        self.held = bytes;
        self.batch = batch.into_iter();
    }
}

/// What happens to the session after one request.
type Step = Result<(), SlaveError>;

struct Session {
    root_path: PathBuf,
    root: Root,
    receiver: Receiver,
    /// This process's slot under `--max-processes`, held to the end.
    _slot: Option<slots::Slot>,
    /// Brick stimes the master announced in this batch (`Request::Stime`),
    /// recorded by its commit.
    stimes_due: Vec<(String, i64)>,
    /// The epoch this session ships under (`Request::Fence`), checked
    /// before every request.
    fence: Option<crate::proto::Fence>,
}

impl Session {
    /// Handshake: `Hello` with a compatible version, and a usable root.
    fn start<W: Write>(
        root_path: &Path,
        policy: Policy,
        requests: &mut Requests,
        out: &mut W,
    ) -> Result<Session, SlaveError> {
        let path = root_path.to_owned();
        let protocol_err = |source| SlaveError::Protocol {
            root: path.clone(),
            source,
        };
        let first: Request = requests
            .next()
            .map_err(protocol_err)?
            .ok_or_else(|| protocol_err(ProtocolError::Closed))?;
        let Request::Hello { protocol, .. } = first else {
            return Err(SlaveError::Unexpected {
                root: path,
                what: format!("expected Hello first, got {}", request_name(&first)),
            });
        };
        check_version(protocol, PROTOCOL_VERSION).map_err(|source| SlaveError::Version {
            root: path.clone(),
            source,
        })?;
        let slot = match policy.max_processes {
            Some(max) => Some(
                slots::take(root_path, max)
                    .map_err(|source| SlaveError::Slots {
                        root: path.clone(),
                        source,
                    })?
                    .ok_or_else(|| SlaveError::Busy {
                        root: path.clone(),
                        max,
                    })?,
            ),
            None => None,
        };
        // The fd limit as raised at start decides what the caches hold.
        let budget = limits::FdBudget::of(crate::fsutil::raise_nofile_limit());
        let root =
            Root::open(root_path, policy, budget.dir_cache).map_err(|e| SlaveError::Root {
                root: path.clone(),
                source: e.into(),
            })?;
        let root_empty = root.is_empty().map_err(|e| SlaveError::Root {
            root: path.clone(),
            source: e.into(),
        })?;
        refuse_if_promoted(&root, &path)?;
        let hello = Reply::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            root: root_path.display().to_string(),
            root_empty,
        };
        let session = Session {
            root_path: path,
            root,
            receiver: Receiver::new(budget.pending_files),
            _slot: slot,
            stimes_due: Vec::new(),
            fence: None,
        };
        session.send(out, &hello)?;
        out.flush().map_err(|e| session.stream(e))?;
        Ok(session)
    }

    fn run<W: Write>(&mut self, requests: &mut Requests, out: &mut W) -> Step {
        loop {
            let next = match requests.try_next() {
                Some(next) => next,
                None => {
                    // Nothing more to process without blocking: let the
                    // master see every reply so far.
                    out.flush().map_err(|e| self.stream(e))?;
                    requests.next()
                }
            };
            let request = match next {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(ProtocolError::Io(e)) => return Err(self.stream(e)),
                Err(source) => {
                    return Err(SlaveError::Protocol {
                        root: self.root_path.clone(),
                        source,
                    })
                }
            };
            self.handle(request, out)?;
        }
    }

    fn handle<W: Write>(&mut self, request: Request, out: &mut W) -> Step {
        // A later epoch of the set may have been recorded by another
        // session since the last request: nothing more is applied then.
        self.check_fence()?;
        match request {
            Request::Piece { index, kind, data } => {
                let failure = self
                    .receiver
                    .piece(&self.root, index, kind, &data)
                    .map_err(|what| self.unexpected(what))?;
                self.send_failures(out, failure)
            }
            Request::SparsePiece { index, segments } => {
                let failure = self
                    .receiver
                    .sparse_piece(&self.root, index, &segments)
                    .map_err(|what| self.unexpected(what))?;
                self.send_failures(out, failure)
            }
            Request::FileEnd { attrs, hash } => {
                let failure = self
                    .receiver
                    .end(&mut self.root, &attrs, &hash)
                    .map_err(|what| self.unexpected(what))?;
                self.send_failures(out, failure)?;
                if self.receiver.needs_flush() {
                    self.flush_pending(out)?;
                }
                Ok(())
            }
            Request::FileAbort => self.receiver.abort().map_err(|what| self.unexpected(what)),
            Request::Signature { seq, path } => {
                // Signatures may be asked ahead, even while a file arrives.
                if self.receiver.is_pending(&path) {
                    self.flush_pending(out)?;
                }
                self.receiver
                    .signature(&mut self.root, seq, &path, out)
                    .map_err(|e| self.protocol(e))?;
                out.flush().map_err(|e| self.stream(e))
            }
            Request::Partial { seq, path, stamp } => {
                // Asked with the signature, ahead of the file.
                let pieces = self.receiver.partial_pieces(&mut self.root, &path, &stamp);
                self.send(out, &Reply::Partial { seq, pieces })
            }
            other if self.receiver.in_file() => Err(self.unexpected(format!(
                "{} while a file is being received (expected Piece, SparsePiece, FileEnd or FileAbort)",
                request_name(&other)
            ))),
            Request::FileBegin { seq, path, size } => {
                if self.receiver.is_pending(&path) {
                    self.flush_pending(out)?;
                }
                let failure = self.receiver.begin(&mut self.root, seq, &path, size);
                self.send_failures(out, failure)
            }
            Request::FileResume {
                seq,
                path,
                size,
                stamp,
                from,
            } => {
                if self.receiver.is_pending(&path) {
                    self.flush_pending(out)?;
                }
                let failure = self
                    .receiver
                    .resume(&mut self.root, seq, &path, size, &stamp, from);
                self.send_failures(out, failure)
            }
            Request::Entry { seq, op } => {
                self.flush_pending(out)?;
                // Anything but a `Mkdir` may move or remove a directory
                // (making one keeps an existing directory).
                if !matches!(op, crate::proto::EntryOp::Mkdir { .. }) {
                    self.root.forget_dirs();
                }
                let failure = apply::entry(&mut self.root, &op)
                    .err()
                    .map(|(path, e)| e.into_failure(seq, path));
                self.send_failures(out, failure)
            }
            Request::SetAttr { seq, path, attrs } => {
                self.flush_pending(out)?;
                let failure = apply::set_attr(&mut self.root, &path, &attrs)
                    .err()
                    .map(|e| e.into_failure(seq, path));
                self.send_failures(out, failure)
            }
            Request::Stat { seq, paths } => {
                self.flush_pending(out)?;
                let files = paths.iter().map(|p| self.root.stamp(p)).collect();
                self.send(out, &Reply::Stat { seq, files })?;
                out.flush().map_err(|e| self.stream(e))
            }
            Request::CheckListing { seq, path, digest } => {
                // Files received before are in place in the listing.
                self.flush_pending(out)?;
                if apply::listing_differs(&mut self.root, &path, &digest) {
                    self.send(out, &Reply::ListingDiffers { seq })?;
                }
                Ok(())
            }
            Request::CheckTree {
                seq,
                path,
                digest,
                owners,
            } => {
                // Files received before are in place in the subtree.
                self.flush_pending(out)?;
                let same = apply::tree_same(&mut self.root, &path, &digest, owners);
                self.send(out, &Reply::Tree { seq, same })?;
                out.flush().map_err(|e| self.stream(e))
            }
            Request::Scan {
                seq,
                path,
                hashes,
                rate,
            } => {
                // Files received before are in place in the listing.
                self.flush_pending(out)?;
                let sent = scan::scan(&mut self.root, &path, hashes, rate, |entries, done| {
                    write_frame(&mut *out, &Reply::Scan { seq, entries, done })
                });
                match sent {
                    Ok(()) => {}
                    Err(scan::ScanError::Op(e)) => {
                        self.send(out, &Reply::Failed(e.into_failure(seq, path)))?
                    }
                    Err(scan::ScanError::Send(e)) => return Err(self.protocol(e)),
                }
                out.flush().map_err(|e| self.stream(e))
            }
            Request::Barrier { id } => {
                self.flush_pending(out)?;
                // With several streams, the entries that follow a barrier
                // may go over another one and move directories cached here.
                self.root.forget_dirs();
                self.send(out, &Reply::Barrier { id })?;
                out.flush().map_err(|e| self.stream(e))
            }
            Request::Commit { batch } => {
                self.flush_pending(out)?;
                // Changes made behind the slave's back are seen from the
                // next batch on.
                self.root.forget_dirs();
                // A master that still reaches a promoted directory (it was
                // connected before the fence) gets no commit.
                refuse_if_promoted(&self.root, &self.root_path)?;
                let stimes = std::mem::take(&mut self.stimes_due);
                for (brick, stime) in &stimes {
                    commits::record_stime(self.root.fd(), brick, *stime).map_err(|e| {
                        SlaveError::Stime {
                            root: self.root_path.clone(),
                            source: e.into(),
                        }
                    })?;
                }
                let synced = if stimes.is_empty() {
                    self.root.sync_all(&[])
                } else {
                    self.root.sync_all_and_root()
                };
                synced.map_err(|e| SlaveError::Sync {
                    root: self.root_path.clone(),
                    source: e.into(),
                })?;
                self.send(out, &Reply::Committed { batch })?;
                out.flush().map_err(|e| self.stream(e))
            }
            Request::Stime { brick, stime } => {
                if brick.len() > crate::proto::STIME_BRICK_MAX {
                    return Err(self.unexpected(format!(
                        "a brick name of {} bytes in Stime",
                        brick.len()
                    )));
                }
                self.stimes_due.retain(|(b, _)| *b != brick);
                if self.stimes_due.len() >= crate::proto::STIME_BRICKS_MAX {
                    return Err(self.unexpected(format!(
                        "stimes of more than {} bricks in one batch",
                        crate::proto::STIME_BRICKS_MAX
                    )));
                }
                self.stimes_due.push((brick, stime));
                Ok(())
            }
            Request::Fence(fence) => self.declare(fence, out),
            Request::Hello { .. } => {
                Err(self.unexpected("Hello in the middle of a session".into()))
            }
            // Unwrapped by the reader; one left is a frame nested in another.
            Request::Compressed { .. } => {
                Err(self.unexpected("a compressed frame inside another".into()))
            }
        }
    }

    /// Takes on the epoch `fence` of its replica set for this session
    /// (once, before anything else), or ends the session if it is deposed.
    fn declare<W: Write>(&mut self, fence: crate::proto::Fence, out: &mut W) -> Step {
        if self.fence.is_some() {
            return Err(self.unexpected("a second Fence in one session".into()));
        }
        for name in [&fence.set, &fence.holder] {
            if name.is_empty() || name.len() > crate::proto::FENCE_NAME_MAX || name.contains('\n') {
                return Err(self.unexpected(format!(
                    "a set or holder name of {} bytes in Fence",
                    name.len()
                )));
            }
        }
        let verdict = fence::declare(self.root.fd(), &fence).map_err(|e| SlaveError::Fence {
            root: self.root_path.clone(),
            set: fence.set.clone(),
            source: e.into(),
        })?;
        if let fence::Verdict::Deposed(held) = verdict {
            return Err(self.deposed(&fence, held));
        }
        let epoch = fence.epoch;
        self.fence = Some(fence);
        self.send(out, &Reply::Fenced { epoch })?;
        out.flush().map_err(|e| self.stream(e))
    }

    /// [`SlaveError::Deposed`] if the session's epoch is no longer its
    /// set's.
    fn check_fence(&self) -> Step {
        let Some(declared) = &self.fence else {
            return Ok(());
        };
        let recorded =
            fence::recorded(self.root.fd(), &declared.set).map_err(|e| SlaveError::Fence {
                root: self.root_path.clone(),
                set: declared.set.clone(),
                source: e.into(),
            })?;
        match fence::judge(recorded.as_ref(), declared) {
            fence::Verdict::Holds => Ok(()),
            fence::Verdict::Deposed(held) => Err(self.deposed(declared, held)),
            // The record of its own raise is gone (restored from a copy
            // without xattrs?): no proof this session still holds the set.
            fence::Verdict::Raises => Err(self.deposed(
                declared,
                fence::Held {
                    epoch: 0,
                    holder: "nobody: the record of the set's epoch is gone".into(),
                },
            )),
        }
    }

    fn deposed(&self, declared: &crate::proto::Fence, held: fence::Held) -> SlaveError {
        SlaveError::Deposed(Box::new(crate::proto::Deposed {
            set: declared.set.clone(),
            epoch: declared.epoch,
            current: held.epoch,
            holder: held.holder,
            root: self.root_path.display().to_string(),
        }))
    }

    /// Renames the pending files into place, reporting those that failed.
    fn flush_pending<W: Write>(&mut self, out: &mut W) -> Step {
        for failure in self.receiver.flush(&mut self.root) {
            self.send(out, &Reply::Failed(failure))?;
        }
        Ok(())
    }

    /// End of session without a commit: drop the half-received file and the
    /// verified ones not yet in place. The master replays the batch anyway,
    /// and a slave that was frozen (SIGSTOP) while a newer session took over
    /// must not put stale content in place when it wakes up.
    fn finish(&mut self) {
        self.receiver.discard_current();
        self.receiver.discard_pending();
    }

    fn send_failures<W: Write>(&self, out: &mut W, failure: Option<crate::proto::Failure>) -> Step {
        match failure {
            Some(f) => self.send(out, &Reply::Failed(f)),
            None => Ok(()),
        }
    }

    fn send<W: Write>(&self, out: &mut W, reply: &Reply) -> Step {
        write_frame(out, reply).map_err(|e| self.protocol(e))
    }

    fn protocol(&self, e: ProtocolError) -> SlaveError {
        match e {
            ProtocolError::Io(source) => self.stream(source),
            source => SlaveError::Protocol {
                root: self.root_path.clone(),
                source,
            },
        }
    }

    fn stream(&self, source: io::Error) -> SlaveError {
        SlaveError::Stream {
            root: self.root_path.clone(),
            source,
        }
    }

    fn unexpected(&self, what: String) -> SlaveError {
        SlaveError::Unexpected {
            root: self.root_path.clone(),
            what,
        }
    }
}

/// The name of a request's variant, for protocol errors.
fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Hello { .. } => "Hello",
        Request::Entry { .. } => "Entry",
        Request::Signature { .. } => "Signature",
        Request::FileBegin { .. } => "FileBegin",
        Request::Piece { .. } => "Piece",
        Request::SparsePiece { .. } => "SparsePiece",
        Request::FileEnd { .. } => "FileEnd",
        Request::FileAbort => "FileAbort",
        Request::SetAttr { .. } => "SetAttr",
        Request::Barrier { .. } => "Barrier",
        Request::Commit { .. } => "Commit",
        Request::Stat { .. } => "Stat",
        Request::Compressed { .. } => "Compressed",
        Request::Partial { .. } => "Partial",
        Request::FileResume { .. } => "FileResume",
        Request::CheckListing { .. } => "CheckListing",
        Request::CheckTree { .. } => "CheckTree",
        Request::Scan { .. } => "Scan",
        Request::Stime { .. } => "Stime",
        Request::Fence(_) => "Fence",
    }
}

/// [`SlaveError::Promoted`] if `promote` marked the root.
fn refuse_if_promoted(root: &Root, path: &Path) -> Result<(), SlaveError> {
    match commits::promoted(root.fd()) {
        Ok(Some(at)) => Err(SlaveError::Promoted {
            root: path.to_owned(),
            at: at.div_euclid(1_000_000_000),
        }),
        // No mark, or a file system without xattrs (nothing can be marked).
        Ok(None) | Err(_) => Ok(()),
    }
}
