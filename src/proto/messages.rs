//! The messages: master to slave ([`Request`]) and back ([`Reply`]),
//! with the caps a decoder holds them to.

use super::*;

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
///
/// Apart from the batch's `crawl::Entry` (and the journal's `Record`)
/// because this is the wire format between a master and a slave that may
/// run other versions: it stays as it is while those change, and it is
/// whole in itself (mode, symlink target, device number, a prune's types,
/// read from the brick when sent), as the slave sees no brick.
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
    /// Answered with [`Reply::Scan`] frames (the last one `done`): the
    /// entries of the slave's directory `path`, sorted by name, each with
    /// its status as the policy recorded it and, with `hashes`, the BLAKE3
    /// hash of each regular file's content, read at most `rate` bytes a
    /// second (0: unpaced). A directory that cannot be listed is answered
    /// with [`Reply::Failed`]. `geo-rep verify` walks a tree with it, one
    /// directory at a time.
    Scan {
        seq: u64,
        path: RelPath,
        hashes: bool,
        rate: u64,
    },
    /// The master's stime of `brick` (`<node>:<brick path>`, at most
    /// [`STIME_BRICK_MAX`] bytes) when this batch began: everything changed
    /// there before it is durably on the slave already. No answer; the
    /// slave records it with the next `Commit`, so a DR site knows how far
    /// each brick of its master got (`geo-rep promote`).
    Stime {
        brick: String,
        stime: i64,
    },
    /// The fencing epoch this conversation ships under (see "Fencing"):
    /// sent right after `Hello` by a worker that is the Active member of a
    /// replica set, on every stream of its link. Answered with
    /// [`Reply::Fenced`], or with [`Reply::Deposed`] (and the end of the
    /// session) if the slave has seen a later epoch of the set.
    Fence(Fence),
}

/// Who may ship a replica set: its fencing epoch and the grant that holds
/// it. A worker that wins its set's election raises the epoch; the slave
/// refuses any conversation of the set with a lower epoch, or with the same
/// epoch and another holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The replica set (GlusterFS's subvolume name), at most
    /// [`FENCE_NAME_MAX`] bytes.
    pub set: String,
    pub epoch: u64,
    /// Names this grant of the epoch (node, brick and a random part), at
    /// most [`FENCE_NAME_MAX`] bytes.
    pub holder: String,
}

/// Longest set or holder name a [`Request::Fence`] may carry.
pub const FENCE_NAME_MAX: usize = 4096;

/// Longest brick name a [`Request::Stime`] may carry.
pub const STIME_BRICK_MAX: usize = 4096;

/// Most bricks whose stimes one batch announces: a worker ships one brick,
/// so more is no honest master (and would grow the slave's memory).
pub const STIME_BRICKS_MAX: usize = 64;

/// Most entries in one [`Reply::Scan`]: with a name of 255 bytes and a
/// symlink target of 4096 each, a frame stays well under [`MAX_FRAME`].
pub const SCAN_PART_MAX: usize = 1024;

/// One entry of a directory as [`Request::Scan`] reports it. The master
/// builds the same for its brick, so both sides compare one shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// `st_mode`, type and permission bits (the recorded ones where the
    /// slave's policy recorded them instead of applying them).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number of a device node.
    pub rdev: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// Inode number and link count, for comparing hard-link groups.
    pub ino: u64,
    pub nlink: u64,
    /// A symlink's target.
    pub target: Option<serde_bytes::ByteBuf>,
    /// BLAKE3 of a regular file's content, when asked for.
    pub hash: Option<[u8; 32]>,
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
    /// Part of the answer to [`Request::Scan`]: at most [`SCAN_PART_MAX`]
    /// entries, in name order; `done` on the last part.
    Scan {
        seq: u64,
        entries: Vec<ScanEntry>,
        done: bool,
    },
    /// Answer to [`Request::Fence`]: the slave ships this set under `epoch`
    /// now (recorded durably when it was a raise).
    Fenced {
        epoch: u64,
    },
    /// The conversation's epoch is deposed and nothing more of it is
    /// applied; the session ends after this.
    Deposed(Deposed),
}

/// The slave has seen epoch `current` of `set`, held by `holder`: the
/// declared `epoch` is deposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("slave root {root}: replica set {set}: epoch {epoch} is deposed: the slave has seen epoch {current} (held by {holder})")]
pub struct Deposed {
    pub set: String,
    pub epoch: u64,
    pub current: u64,
    pub holder: String,
    /// The slave root.
    pub root: String,
}
