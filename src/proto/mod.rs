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
//! directory's listing instead of its name list).
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
pub const PROTOCOL_VERSION: u32 = 6;

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

/// Mode, ownership and modification time of one file, directory or symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// Permission bits (`st_mode & 0o7777`); ignored for symlinks.
    pub mode: u32,
    /// Numeric owner; applied only when the slave runs as root.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// The complete set of synced extended attributes (see
    /// [`is_synced_xattr`]: `user.*` and the POSIX ACLs) of a regular file or
    /// directory: the slave sets these and removes its other synced ones.
    /// `None`: leave the slave's alone (xattrs not synced, or not
    /// applicable, e.g. a symlink). At most [`MAX_XATTRS`].
    #[serde(deserialize_with = "bounded::opt_vec::<_, _, MAX_XATTRS>")]
    pub xattrs: Option<Vec<Xattr>>,
}

/// Whether an extended attribute is replicated: `user.*`, and the POSIX
/// ACLs (`system.posix_acl_access`, `system.posix_acl_default`; their ids
/// are numeric, like owners).
pub fn is_synced_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Which of the synced extended attributes a session replicates
/// (`sync-xattrs`, `sync-acls`). The slave makes its synced set exactly the
/// one sent, so with one class off the slave's copies have none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrScope {
    /// `user.*`.
    pub user: bool,
    /// `system.posix_acl_access` and `system.posix_acl_default`.
    pub acls: bool,
}

impl Default for XattrScope {
    fn default() -> Self {
        XattrScope {
            user: true,
            acls: true,
        }
    }
}

impl XattrScope {
    /// Whether anything is replicated at all (else [`Attrs::xattrs`] is
    /// `None` and the slave leaves its attributes alone).
    pub fn any(self) -> bool {
        self.user || self.acls
    }

    /// Whether the attribute `name` is sent.
    pub fn includes(self, name: &[u8]) -> bool {
        if name.starts_with(b"user.") {
            self.user
        } else {
            self.acls && is_synced_xattr(name)
        }
    }
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: serde_bytes::ByteBuf,
    pub value: serde_bytes::ByteBuf,
}

/// Total bytes of names and values of one entry's xattrs that are sent;
/// more is reported as a failure on the master (Linux allows 64 KiB per
/// value on most file systems, so this is plenty for `user.*`).
pub const MAX_XATTR_BYTES: usize = 1024 * 1024;

/// The type of a special file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialKind {
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// The type of a directory entry, as far as [`EntryOp::Prune`] compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The digest of a directory listing that [`Request::CheckListing`]
/// compares: BLAKE3 over the entries sorted by name, each as its name's
/// length, its name and its kind. Master and slave both compute it here, so
/// what a listing covers is decided in one place. Sorts `entries`.
pub fn listing_digest<N: AsRef<[u8]>>(entries: &mut [(N, NodeKind)]) -> [u8; 32] {
    entries.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    let mut hasher = blake3::Hasher::new();
    let mut kind_buf = [0u8; 16];
    for (name, kind) in entries.iter() {
        let name = name.as_ref();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name);
        // The kind's wire encoding: a kind added later is covered as well.
        let kind = postcard::to_slice(kind, &mut kind_buf).map_or(&[][..], |b| &*b);
        hasher.update(kind);
    }
    *hasher.finalize().as_bytes()
}

/// The digest of a whole subtree that [`Request::CheckTree`] compares:
/// BLAKE3 over its entries in walk order (depth first, the names of each
/// directory in byte order, a directory before what it holds, the subtree's
/// root first with an empty path). Each entry adds its path below the root,
/// its kind, and for regular files and directories what a quick check and
/// the attributes sent would compare: permission bits, mtime, a file's size,
/// and with `owners` its numeric owner. Master and slave both build it
/// here, so what a subtree check covers is decided in one place.
pub struct TreeDigest {
    hasher: blake3::Hasher,
    owners: bool,
}

/// One entry of a subtree, as [`TreeDigest`] covers it.
#[derive(Debug, Clone, Copy)]
pub struct TreeEntry<'a> {
    /// Its path below the subtree's root (empty for the root).
    pub path: &'a [u8],
    pub kind: NodeKind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    /// Compared for regular files only.
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
}

impl TreeDigest {
    /// `owners`: numeric owners are compared too (the slave applies them
    /// only when it runs as root, and the master sends them only then).
    pub fn new(owners: bool) -> TreeDigest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[u8::from(owners)]);
        TreeDigest { hasher, owners }
    }

    pub fn add(&mut self, e: &TreeEntry) {
        let h = &mut self.hasher;
        h.update(&(e.path.len() as u64).to_le_bytes());
        h.update(e.path);
        let mut kind_buf = [0u8; 16];
        let kind = postcard::to_slice(&e.kind, &mut kind_buf).map_or(&[][..], |b| &*b);
        h.update(kind);
        if matches!(e.kind, NodeKind::File | NodeKind::Dir) {
            h.update(&e.mode.to_le_bytes());
            let size = if e.kind == NodeKind::File { e.size } else { 0 };
            h.update(&size.to_le_bytes());
            h.update(&e.mtime_sec.to_le_bytes());
            h.update(&e.mtime_nsec.to_le_bytes());
            if self.owners {
                h.update(&e.uid.to_le_bytes());
                h.update(&e.gid.to_le_bytes());
            }
        }
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}

/// One data segment of a [`Request::SparsePiece`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Offset within the piece.
    pub offset: u32,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// An entry operation, applied by path in journal order. Every one of them is
/// idempotent, so replaying a batch after a crash is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryOp {
    /// Make a directory; an existing directory is kept, anything else in the
    /// way is removed first.
    Mkdir { path: RelPath, mode: u32 },
    /// Make an empty regular file unless a regular file is already there.
    Create { path: RelPath, mode: u32 },
    /// Make (or replace with) a symlink with this exact target, never followed.
    Symlink {
        path: RelPath,
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// Make `path` another name of the file at `target` (replacing what is
    /// at `path`). A missing `target` is [`FailureKind::SourceMissing`].
    Link { path: RelPath, target: RelPath },
    /// Make (or replace with) a FIFO, socket or device node; an entry of the
    /// same kind (and device number) is kept. Devices need a root slave,
    /// else [`FailureKind::Unsupported`].
    Mknod {
        path: RelPath,
        kind: SpecialKind,
        mode: u32,
        rdev: u64,
    },
    /// Remove a non-directory; nothing there is success.
    Unlink { path: RelPath },
    /// Remove a directory and everything below it; nothing there is success.
    Rmdir { path: RelPath },
    /// Remove every entry of the directory `path` whose name is not in
    /// `keep`: how a Hybrid Crawl heals deletions the journal never saw.
    ///
    /// `kinds`, when not empty, gives the type of each kept name on the
    /// master: a kept name of another type on the slave is reported as
    /// [`FailureKind::Conflict`] (with its path), so the master resends it.
    Prune {
        path: RelPath,
        /// At most [`MAX_PRUNE_NAMES`], none empty.
        #[serde(deserialize_with = "bounded::names")]
        keep: Vec<serde_bytes::ByteBuf>,
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_PRUNE_NAMES>")]
        kinds: Vec<NodeKind>,
    },
    /// Rename; replaces whatever is at `to`. A missing `from` is reported as
    /// [`FailureKind::SourceMissing`] so the master can resend `to`.
    Rename { from: RelPath, to: RelPath },
}

impl EntryOp {
    /// The path the operation makes or removes (a rename's destination, a
    /// link's new name, a prune's directory), then the other path it names
    /// (a rename's source, a link's target), if any.
    pub fn paths(&self) -> (&RelPath, Option<&RelPath>) {
        match self {
            EntryOp::Rename { from, to } => (to, Some(from)),
            EntryOp::Link { path, target } => (path, Some(target)),
            EntryOp::Mkdir { path, .. }
            | EntryOp::Create { path, .. }
            | EntryOp::Symlink { path, .. }
            | EntryOp::Mknod { path, .. }
            | EntryOp::Unlink { path }
            | EntryOp::Rmdir { path }
            | EntryOp::Prune { path, .. } => (path, None),
        }
    }
}

/// How the bytes of one piece are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PieceKind {
    /// The piece's bytes as they are.
    Literal,
    /// A fast_rsync delta against the slave's piece with the same index.
    Delta,
    /// The slave's piece with the same index, unchanged (the master's
    /// signature of its piece equals the slave's; `data` is empty). The
    /// file's BLAKE3 hash still decides whether the result is right.
    Same,
}

/// Master → slave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Hello {
        protocol: u32,
        agent_version: String,
    },
    Entry {
        seq: u64,
        op: EntryOp,
    },
    /// Ask for the signatures of the slave's copy of `path`.
    Signature {
        seq: u64,
        path: RelPath,
    },
    /// Start receiving the new content of `path` (`size` bytes).
    FileBegin {
        seq: u64,
        path: RelPath,
        size: u64,
    },
    /// How many leading pieces of a partial copy of the master file
    /// stamped `stamp` the slave holds for `path` (see "Resuming large
    /// files"); answered with [`Reply::Partial`].
    Partial {
        seq: u64,
        path: RelPath,
        stamp: FileStamp,
    },
    /// [`Request::FileBegin`] for a file received resumably: its first
    /// `from` pieces are those the slave announced in [`Reply::Partial`]
    /// (0: start over), and the next `Piece` is number `from`.
    FileResume {
        seq: u64,
        path: RelPath,
        size: u64,
        stamp: FileStamp,
        from: u32,
    },
    /// Piece number `index` (0-based, in order) of the current file.
    Piece {
        index: u32,
        kind: PieceKind,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Piece number `index` of the current file, with holes: the bytes of
    /// the piece outside `segments` are a hole (read as zeros). Segments are
    /// in order and do not overlap.
    SparsePiece {
        index: u32,
        /// At most [`MAX_SEGMENTS`].
        #[serde(deserialize_with = "bounded::vec::<_, _, MAX_SEGMENTS>")]
        segments: Vec<Segment>,
    },
    /// The current file is complete: verify, apply `attrs`, put it in place.
    FileEnd {
        attrs: Attrs,
        hash: [u8; 32],
    },
    /// The master saw the file change while reading it: drop what was sent.
    FileAbort,
    SetAttr {
        seq: u64,
        path: RelPath,
        attrs: Attrs,
    },
    /// Answered with [`Reply::Barrier`] once every earlier request is done.
    Barrier {
        id: u64,
    },
    /// Make everything before this durable, then answer [`Reply::Committed`].
    Commit {
        batch: u64,
    },
    /// Answered with [`Reply::Stat`]: size and mtime of the regular file at
    /// each of `paths` (at most [`STAT_MAX`]).
    Stat {
        seq: u64,
        #[serde(deserialize_with = "bounded::vec::<_, _, STAT_MAX>")]
        paths: Vec<RelPath>,
    },
    /// A `Piece` or `SparsePiece`, postcard-encoded (`raw_len` bytes, at
    /// most [`MAX_FRAME`]) and then zstd-compressed; the slave unwraps it
    /// on reading (see [`compress`]).
    Compressed {
        raw_len: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Answered with [`Reply::ListingDiffers`] only if an [`EntryOp::Prune`]
    /// of the directory `path` with the master's listing could change
    /// something: the slave's names and kinds there do not have the
    /// [`listing_digest`] `digest` (a directory missing on the slave has
    /// nothing to prune). The master then sends the whole `Prune`, so the
    /// name list travels only when the slave's directory differs.
    CheckListing {
        seq: u64,
        path: RelPath,
        digest: [u8; 32],
    },
    /// Answered with [`Reply::Tree`]: whether the slave's subtree at
    /// `path` (a directory) has the [`TreeDigest`] `digest` (with numeric
    /// owners if `owners`). A subtree that matches needs no walk.
    CheckTree {
        seq: u64,
        path: RelPath,
        digest: [u8; 32],
        owners: bool,
    },
}

/// Most paths in one [`Request::Stat`].
pub const STAT_MAX: usize = 1024;

/// Most segments in one [`Request::SparsePiece`]: one per 1 KiB block of a
/// piece, the smallest block a file system gives holes. An empty segment
/// is 2 bytes on the wire but 32 in memory: without a cap a few KB of
/// compressed frame decoded to gigabytes.
pub const MAX_SEGMENTS: usize = (PIECE_SIZE / 1024) as usize;

/// Most names in one [`EntryOp::Prune`]: more than a frame holds of
/// names of 7 bytes, whatever the directory.
pub const MAX_PRUNE_NAMES: usize = 1 << 20;

/// Most xattrs in one [`Attrs`] (their bytes are limited by
/// [`MAX_XATTR_BYTES`] on the master).
pub const MAX_XATTRS: usize = 64 * 1024;

/// Size and modification time of a regular file on the slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
}

/// Why a request did not take effect on the slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// A rename's source is not there (the master resends the destination).
    SourceMissing,
    /// The slave's disk is full (ENOSPC or EDQUOT): retry later.
    NoSpace,
    /// Permission denied on the slave.
    Permission,
    /// The rebuilt file did not match the announced size or hash.
    Mismatch,
    /// A path on the slave could not be resolved safely (e.g. a symlink in a
    /// parent directory): never retried blindly.
    Unsafe,
    /// The operation is not possible here (e.g. a device node as non-root).
    Unsupported,
    /// The slave's tree is not in the state the operation expects (e.g. a
    /// rename onto a non-empty directory, a file where a directory should
    /// be): the journal and the slave diverged, and the master heals it by
    /// resending the paths concerned from the brick as they are now.
    Conflict,
    /// Any other I/O error.
    Io,
}

impl FailureKind {
    /// Whether retrying the same batch later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureKind::NoSpace | FailureKind::Mismatch | FailureKind::Io
        )
    }
}

/// One request that failed on the slave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// `seq` of the failed request (for `Piece`/`FileEnd`, of its `FileBegin`).
    pub seq: u64,
    pub path: RelPath,
    pub kind: FailureKind,
    pub errno: Option<i32>,
    /// Human-readable, names the slave path.
    pub message: String,
}

/// Slave → master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Hello {
        protocol: u32,
        agent_version: String,
        /// The slave root as the slave sees it.
        root: String,
        /// Whether the root holds no entries.
        root_empty: bool,
    },
    /// Answer to `Signature`: `size` is `None` if there is no regular file
    /// at the path; otherwise one `SigPiece` follows per piece of the file.
    SigBegin {
        seq: u64,
        size: Option<u64>,
    },
    SigPiece {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Failed(Failure),
    Barrier {
        id: u64,
    },
    Committed {
        batch: u64,
    },
    /// The slave cannot go on; the session ends after this.
    Fatal {
        message: String,
    },
    /// Answer to `Stat`, one entry per path: `None` if there is no regular
    /// file there (or it cannot be looked at safely).
    Stat {
        seq: u64,
        files: Vec<Option<FileStamp>>,
    },
    /// Answer to [`Request::Partial`]: the slave keeps this many leading
    /// pieces (0: none).
    Partial {
        seq: u64,
        pieces: u32,
    },
    /// Answer to a `CheckListing` whose directory differs on the slave.
    ListingDiffers {
        seq: u64,
    },
    /// Answer to `CheckTree`: `same` if the slave's subtree has the digest.
    Tree {
        seq: u64,
        same: bool,
    },
}

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection closed by peer")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    Oversize(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("corrupt {0}")]
    Corrupt(String),
    #[error("unexpected message: {0}")]
    Unexpected(String),
    #[error("protocol version mismatch: master speaks {master}, slave speaks {slave}; upgrade the {older} side")]
    Version {
        master: u32,
        slave: u32,
        older: &'static str,
    },
    #[error("I/O error on the protocol stream: {0}")]
    Io(#[from] io::Error),
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = vec![0u8; 4];
    let mut buf = postcard::to_extend(msg, std::mem::take(&mut buf))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(ProtocolError::Oversize(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// The frame of a literal `Request::Piece` number `index` of `len` bytes,
/// with the bytes written by `fill` straight into the frame (a large file's
/// bytes are then copied once less on their way to the wire).
pub fn literal_piece_frame(
    index: u32,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> io::Result<()>,
) -> Result<Vec<u8>, ProtocolError> {
    // The frame of the piece with no bytes ends with their count (0, one
    // byte): put the real count there, then the bytes.
    let mut frame = encode(&Request::Piece {
        index,
        kind: PieceKind::Literal,
        data: Vec::new(),
    })?;
    frame.pop();
    let mut n = len;
    while n >= 0x80 {
        frame.push((n as u8) | 0x80);
        n >>= 7;
    }
    frame.push(n as u8);
    let head = frame.len();
    let body = head - 4 + len;
    if body > MAX_FRAME {
        return Err(ProtocolError::Oversize(body));
    }
    frame.resize(head + len, 0);
    fill(&mut frame[head..])?;
    frame[..4].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(frame)
}

fn frame_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::Oversize(len));
    }
    Ok(len)
}

/// The length (header included) of the frame at the start of `buf`, once
/// its header is there: whether the whole frame is buffered already.
pub fn next_frame_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(4 + u32::from_be_bytes(header) as usize)
}

fn map_eof(e: io::Error) -> ProtocolError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ProtocolError::Closed
    } else {
        ProtocolError::Io(e)
    }
}

/// Reads one frame with blocking I/O (the slave side).
pub fn read_frame<T: for<'de> Deserialize<'de>, R: Read>(r: &mut R) -> Result<T, ProtocolError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).map_err(map_eof)?;
    let mut payload = vec![0u8; frame_len(header)?];
    r.read_exact(&mut payload).map_err(map_eof)?;
    decode(&payload)
}

/// Decodes one frame's payload. A sequence over its cap is refused as
/// [`ProtocolError::Corrupt`] naming the cap (postcard keeps no message of
/// its own for it).
pub fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, ProtocolError> {
    bounded::take_refusal();
    postcard::from_bytes(payload).map_err(|e| match bounded::take_refusal() {
        Some(why) => ProtocolError::Corrupt(format!("frame refused: {why}")),
        None => ProtocolError::Malformed(e),
    })
}

/// Writes one frame with blocking I/O (the slave side). Does not flush.
pub fn write_frame<T: Serialize, W: Write>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    w.write_all(&encode(msg)?)?;
    Ok(())
}

/// Reads one frame from an async stream (the master side).
pub async fn read_frame_async<T, R>(r: &mut R) -> Result<T, ProtocolError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    read_frame_within(r, MAX_FRAME).await
}

/// [`read_frame_async`] for a frame of at most `max` bytes: what a peer may send of a kind of message is bounded by the
/// largest such message, not by [`MAX_FRAME`].
pub async fn read_frame_within<T, R>(r: &mut R, max: usize) -> Result<T, ProtocolError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await.map_err(map_eof)?;
    let len = frame_len(header)?;
    if len > max {
        return Err(ProtocolError::Corrupt(format!(
            "frame of {len} bytes, more than the {max} such a message can need"
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(map_eof)?;
    decode(&payload)
}

/// Writes one frame to an async stream (the master side). Does not flush.
pub async fn write_frame_async<T, W>(w: &mut W, msg: &T) -> Result<(), ProtocolError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    w.write_all(&encode(msg)?).await?;
    Ok(())
}

/// Deserializers for sequences that refuse a count over their cap as soon
/// as the count is read, before any element is decoded or any memory
/// reserved for them (the default preallocates from the count too).
mod bounded {
    use std::fmt;
    use std::marker::PhantomData;

    use std::cell::RefCell;

    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;

    thread_local! {
        /// Why the last decode on this thread was refused by a cap.
        static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// The refusal of the last decode on this thread, if a cap refused it.
    pub(super) fn take_refusal() -> Option<String> {
        REFUSAL.with(|r| r.borrow_mut().take())
    }

    fn refuse<E: de::Error>(why: String) -> E {
        let e = E::custom(&why);
        REFUSAL.with(|r| *r.borrow_mut() = Some(why));
        e
    }

    struct Bounded<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a sequence of at most {N} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let too_many = || refuse(format!("a sequence of more than {N} elements"));
            let hint = seq.size_hint().unwrap_or(0);
            if hint > N {
                return Err(too_many());
            }
            // Reserve for what the bytes of the frame can hold at most.
            let mut v = Vec::with_capacity(hint.min(4096));
            while let Some(x) = seq.next_element()? {
                if v.len() == N {
                    return Err(too_many());
                }
                v.push(x);
            }
            Ok(v)
        }
    }

    /// A `Vec` of at most `N` elements.
    pub fn vec<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        d.deserialize_seq(Bounded::<T, N>(PhantomData))
    }

    struct OptBounded<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for OptBounded<T, N> {
        type Value = Option<Vec<T>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an optional sequence of at most {N} elements")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            vec::<D, T, N>(d).map(Some)
        }
    }

    /// An optional `Vec` of at most `N` elements.
    pub fn opt_vec<'de, D, T, const N: usize>(d: D) -> Result<Option<Vec<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        d.deserialize_option(OptBounded::<T, N>(PhantomData))
    }

    /// The names of a `Prune`: at most [`super::MAX_PRUNE_NAMES`], none
    /// empty (no file has an empty name).
    pub fn names<'de, D>(d: D) -> Result<Vec<serde_bytes::ByteBuf>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let names: Vec<serde_bytes::ByteBuf> = vec::<D, _, { super::MAX_PRUNE_NAMES }>(d)?;
        if names.iter().any(|n| n.is_empty()) {
            return Err(refuse("an empty name in a Prune".into()));
        }
        Ok(names)
    }
}

/// Checks the peer's protocol version; `master` and `slave` as seen from the
/// handshake.
pub fn check_version(master: u32, slave: u32) -> Result<(), ProtocolError> {
    if master == slave {
        return Ok(());
    }
    Err(ProtocolError::Version {
        master,
        slave,
        older: if master < slave { "master" } else { "slave" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_piece_frames_are_the_encoded_pieces() {
        for (index, len) in [
            (0, 0),
            (1, 1),
            (2, 127),
            (300, 128),
            (70_000, 16_384),
            (5, 8 << 20),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let frame = literal_piece_frame(index, len, |b| {
                b.copy_from_slice(&data);
                Ok(())
            })
            .unwrap();
            let piece = Request::Piece {
                index,
                kind: PieceKind::Literal,
                data,
            };
            assert_eq!(
                frame,
                encode(&piece).unwrap(),
                "piece {index} of {len} bytes"
            );
        }
        let failed = literal_piece_frame(0, 10, |_| Err(io::ErrorKind::UnexpectedEof.into()));
        assert!(matches!(failed, Err(ProtocolError::Io(_))));
        let huge = literal_piece_frame(0, MAX_FRAME + 1, |_| Ok(()));
        assert!(matches!(huge, Err(ProtocolError::Oversize(_))));
    }

    #[test]
    fn listing_digest_depends_on_names_and_kinds_not_order() {
        let d = |v: &[(&str, NodeKind)]| listing_digest(&mut v.to_vec());
        let base = d(&[("a", NodeKind::File), ("bc", NodeKind::Dir)]);
        assert_eq!(base, d(&[("bc", NodeKind::Dir), ("a", NodeKind::File)]));
        assert_ne!(base, d(&[("a", NodeKind::File), ("bc", NodeKind::Symlink)]));
        assert_ne!(base, d(&[("ab", NodeKind::File), ("c", NodeKind::Dir)]));
        assert_ne!(base, d(&[("a", NodeKind::File)]));
        assert_ne!(d(&[]), d(&[("", NodeKind::File)]));
    }

    #[test]
    fn round_trip_sync() {
        let msgs = vec![
            Request::Hello {
                protocol: PROTOCOL_VERSION,
                agent_version: "x".into(),
            },
            Request::Entry {
                seq: 7,
                op: EntryOp::Rename {
                    from: RelPath::new("a").unwrap(),
                    to: RelPath::new(b"b\xff\n".to_vec()).unwrap(),
                },
            },
            Request::Piece {
                index: 3,
                kind: PieceKind::Delta,
                data: vec![1, 2, 3],
            },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            write_frame(&mut wire, m).unwrap();
        }
        let mut r = &wire[..];
        for m in &msgs {
            assert_eq!(&read_frame::<Request, _>(&mut r).unwrap(), m);
        }
        assert!(matches!(
            read_frame::<Request, _>(&mut r),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn refuses_oversize_before_allocating() {
        let wire = u32::MAX.to_be_bytes();
        assert!(matches!(
            read_frame::<Request, _>(&mut &wire[..]),
            Err(ProtocolError::Oversize(_))
        ));
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors() {
        let frame = encode(&Request::Barrier { id: 1 }).unwrap();
        assert!(matches!(
            read_frame::<Request, _>(&mut &frame[..frame.len() - 1]),
            Err(ProtocolError::Closed)
        ));
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame::<Request, _>(&mut &garbage[..]),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn escaping_paths_are_refused_on_decode() {
        // Hand-build an Unlink with "../x": encode a valid one and patch it.
        let frame = encode(&Request::Entry {
            seq: 0,
            op: EntryOp::Unlink {
                path: RelPath::new("aa/x").unwrap(),
            },
        })
        .unwrap();
        let pos = frame.windows(4).position(|w| w == b"aa/x").unwrap();
        let mut evil = frame.clone();
        evil[pos..pos + 2].copy_from_slice(b"..");
        assert!(matches!(
            read_frame::<Request, _>(&mut &evil[..]),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn sequences_over_their_caps_are_refused_when_their_count_is_read() {
        // MAX_SEGMENTS + 1 empty segments: refused on their count.
        let mut frame = encode(&Request::SparsePiece {
            index: 0,
            segments: Vec::new(),
        })
        .unwrap();
        frame.pop();
        let mut n = MAX_SEGMENTS + 1;
        while n >= 0x80 {
            frame.push((n as u8) | 0x80);
            n >>= 7;
        }
        frame.push(n as u8);
        frame.extend(std::iter::repeat_n(0u8, 2 * (MAX_SEGMENTS + 1)));
        let e = decode::<Request>(&frame[4..]).unwrap_err().to_string();
        assert!(e.contains(&format!("more than {MAX_SEGMENTS}")), "{e}");
        // At the cap, a piece decodes.
        let full = Request::SparsePiece {
            index: 0,
            segments: vec![
                Segment {
                    offset: 0,
                    data: vec![]
                };
                MAX_SEGMENTS
            ],
        };
        assert_eq!(
            decode::<Request>(&encode(&full).unwrap()[4..]).unwrap(),
            full
        );
        let empty_name = Request::Entry {
            seq: 1,
            op: EntryOp::Prune {
                path: RelPath::root(),
                keep: vec![serde_bytes::ByteBuf::new()],
                kinds: vec![],
            },
        };
        let e = decode::<Request>(&encode(&empty_name).unwrap()[4..]).unwrap_err();
        assert!(e.to_string().contains("empty name"), "{e}");
        // Other malformed frames keep their own error.
        assert!(matches!(
            decode::<Request>(&[0xff, 0xff]),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn version_errors_name_the_side_to_upgrade() {
        let e = check_version(1, 2).unwrap_err().to_string();
        assert!(e.contains("upgrade the master"), "{e}");
        let e = check_version(3, 2).unwrap_err().to_string();
        assert!(e.contains("upgrade the slave"), "{e}");
    }
}
