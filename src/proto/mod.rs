//! The georep wire protocol between the master worker and `geo-rep slave`:
//! both ends speak it, so it lives beside them, not in either (the master's
//! `transport` and the `slave` import it; it imports neither).
//!
//! # Framing
//! Each message is one frame: a 4-byte big-endian payload length, then the
//! payload, a [postcard] encoding of [`Request`] (master → slave) or [`Reply`]
//! (slave → master). A frame longer than [`MAX_FRAME`] is a protocol error:
//! the reader refuses it before allocating, so a hostile peer cannot make
//! either side allocate without bound. The sequences of a request are
//! capped too ([`MAX_SEGMENTS`], [`MAX_PRUNE_NAMES`], [`STAT_MAX`],
//! [`MAX_XATTRS`]): a count over its cap is refused as soon as it is read,
//! since a sequence of small elements takes many times its wire bytes.
//!
//! # Conversation
//! 1. The master sends [`Request::Hello`]; the slave answers [`Reply::Hello`]
//!    (or [`Reply::Fatal`] if it cannot serve, e.g. its root is missing).
//!    The version check happens on both sides; the error says which side to
//!    upgrade.
//! 2. Then batches, pipelined: the master does not wait for an answer between
//!    requests. A batch is `Entry`* (journal order), then data (`FileBegin`,
//!    `Piece`*, `FileEnd` | `FileAbort`, with `Signature` requests sent
//!    ahead), then `SetAttr`*, then `Commit`.
//! 3. The slave processes requests strictly in order, and answers in order:
//!    `SigBegin`+`SigPiece`* for each `Signature`, `Failed` for any request
//!    that did not take effect (tagged with the request's `seq`), `Barrier`
//!    for each `Barrier`, and `Committed` once everything before the `Commit`
//!    is durable (synced to disk). Only `Committed` may advance stime.
//!
//! # Files and pieces
//! A file is cut into pieces of [`PIECE_SIZE`] bytes. For a file the slave
//! already has, the master asks for its signature: one fast_rsync signature
//! per piece of the slave's copy. The master then sends each piece of its own
//! copy either as a delta against the slave's piece with the same index, or as
//! literal bytes. So memory on both sides is bounded by a few pieces, whatever
//! the file size. The slave writes the new content to a temporary file,
//! checks its size and BLAKE3 hash against [`Request::FileEnd`], and only then
//! renames it over the final name (DESIGN.md invariants 1 and 6).
//!
//! A piece of a sparse file that contains holes is sent as
//! [`Request::SparsePiece`]: only its data segments travel, and the slave
//! leaves the rest of the piece a hole (it seeks instead of writing zeros),
//! so holes stay holes. The hash covers the zeros a hole reads as.
//!
//! # Hard links, special files, xattrs
//! Hard links are [`EntryOp::Link`]: the master knows which names share an
//! inode and, after putting new content in place under one name, links the
//! other names to it again (a temp file renamed over one name would split
//! the group). FIFOs, sockets and device nodes are [`EntryOp::Mknod`] (the
//! slave makes devices only as root and when its policy allows it). `user.*` extended attributes and
//! POSIX ACLs travel in [`Attrs::xattrs`] when the session syncs them.
//!
//! # Versions
//! 1: first version. 2: `Attrs::xattrs`, `EntryOp::Mknod`,
//! `Request::SparsePiece`, `FailureKind::Conflict`. 3: `Request::Stat`
//! (a Hybrid Crawl sends only files whose size or mtime differ on the slave).
//! 4: `PieceKind::Same`. 5: `Request::Compressed` (zstd data frames, see
//! [`compress`]; a v5 slave always accepts them, the master sends
//! them when the session's `compression` is `zstd`, so the version check of
//! the handshake is the negotiation, and `Hello` keeps its shape so that a
//! mismatched peer still gets the clear version error); `Request::Partial`,
//! `Reply::Partial` and `Request::FileResume` (see "Resuming large files");
//! `Request::CheckListing`, `Reply::ListingDiffers` (a digest of a touched
//! directory's listing instead of its name list). 6: `Request::CheckTree`,
//! `Reply::Tree` (one digest of a renamed directory's whole subtree
//! instead of a walk). Later changes kept the wire format of 6: the caps
//! decoders hold sequences to ([`MAX_SEGMENTS`], [`MAX_PRUNE_NAMES`],
//! [`STAT_MAX`], [`MAX_XATTRS`]) refuse only what no honest peer sends.
//! 7: `Request::Scan`, `Reply::Scan` (one directory's entries with their
//! status and content hashes, for `geo-rep verify`). 8: `Request::Stime`
//! (the master's stime of a brick, recorded by the slave at the next
//! commit, for `geo-rep promote`). 9: `Request::Fence`, `Reply::Fenced`,
//! `Reply::Deposed` (see "Fencing").
//!
//! # Fencing
//! The members of a replica set on several master nodes elect their Active
//! worker through a lock on the meta-volume; a partition can leave two
//! members that both believe they hold it and both reach the slave. So the
//! winner of an election raises the set's epoch and declares it
//! ([`Request::Fence`]) on every stream, right after `Hello`. The slave
//! records the highest epoch of each set (and the grant holding it) durably
//! on its root and refuses, with [`Reply::Deposed`], a declaration of a
//! lower epoch, or of the same epoch by another holder. A session that
//! declared an epoch checks it again before every request that changes the
//! tree and at `Commit`, so once a later epoch is recorded, nothing more of
//! the deposed one is applied.
//!
//! # Resuming large files
//! A file of at least [`RESUME_MIN_SIZE`] bytes is not restarted from byte 0
//! after a dropped connection. With its `Signature` request the master sends
//! [`Request::Partial`] with the file's stamp (size and mtime on the
//! master); the slave answers [`Reply::Partial`]: how many leading pieces of
//! a partial copy of that same master file it holds durably. The master then
//! sends [`Request::FileResume`] instead of `FileBegin`, and only the pieces
//! from there on; it still hashes the whole file (reading the skipped
//! pieces locally), and the slave hashes its kept pieces from disk, so the
//! BLAKE3 check of `FileEnd` covers every byte as always.
//!
//! On the slave such a file is built under a name derived from its final
//! name (`.georep.<hash>.part`, next to it, so the final rename stays in one
//! directory), locked (`flock`) by the process writing it, with each piece
//! made durable (`fdatasync`) and the master file's stamp in an extended
//! attribute as the record of whose bytes it holds. It survives the end of
//! a session (a killed process, a dropped connection), never a mismatch or
//! a `FileAbort`, and is never renamed into place before a verified
//! `FileEnd`. A partial of another version of the file (another stamp) is
//! started over; a prune leaves partials alone until they have not been
//! written for [`PARTIAL_MAX_AGE_SECS`].

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::relpath::RelPath;

pub mod compress;

/// Bumped on every incompatible change of [`Request`] or [`Reply`].
pub const PROTOCOL_VERSION: u32 = 9;

/// Files are shipped in pieces of this many bytes (the last may be shorter).
pub const PIECE_SIZE: u64 = 8 * 1024 * 1024;

/// Largest frame payload either side accepts: a literal piece plus headroom.
pub const MAX_FRAME: usize = PIECE_SIZE as usize + 64 * 1024;

/// Files smaller than this are always sent literally: a signature round trip
/// costs more than the bytes it could save.
pub const DELTA_MIN_SIZE: u64 = 256 * 1024;

/// Files at least this large are received resumably (see "Resuming large
/// files"): the per-piece sync costs little against their transfer time.
pub const RESUME_MIN_SIZE: u64 = 64 * 1024 * 1024;

/// A partial file untouched this long is removed by the next prune of its
/// directory (its master file was deleted or renamed meanwhile).
pub const PARTIAL_MAX_AGE_SECS: i64 = 24 * 3600;

/// fast_rsync block size used for signatures.
pub const SIG_BLOCK_SIZE: u32 = 4096;

/// Bytes of MD4 kept per block in signatures (the result is verified with
/// BLAKE3 anyway, see [`Request::FileEnd`]).
pub const SIG_STRONG_LEN: u32 = 8;

mod attrs;
mod bounded;
mod digest;
mod frame;
mod messages;
#[cfg(test)]
mod tests;

pub use attrs::*;
pub use digest::*;
pub use frame::*;
pub use messages::*;
