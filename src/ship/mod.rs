//! Shipping one [`Batch`] to the slave and waiting until it is durable.
//!
//! Order on the wire: entries (journal order), a barrier to learn which
//! renames found no source (those destinations are then resent whole), file
//! contents (small files literally; larger ones as deltas against the slave's
//! signatures, requested a window ahead so the link stays busy), attributes,
//! and finally a commit. Only a `Committed` reply lets the caller advance
//! stime (DESIGN.md invariant 2).
//!
//! May import: `brick` (reads), `crawl` (batches), `changelog` (later
//! records), `proto`, `transport` (the link), `relpath`; the slave only in
//! its in-process tests.
//!
//! A file that changes while it is being read is abandoned (`FileAbort`):
//! the write that changed it happened after this batch's journal files were
//! closed, so a later batch sends it again. Nothing torn is ever marked synced.
//!
//! Fidelity beyond bytes:
//! * **Hard links**: a [`LinkIndex`] per brick (owned by its worker, lent to
//!   each `Shipper`) remembers the names of every
//!   multiply-linked file seen (journal entries, data sent, Hybrid Crawl
//!   walks). Within a batch the content of such a file is sent once, under
//!   one name; its other known names are then linked to that name again
//!   (`EntryOp::Link`), since putting new content in place made a new inode.
//! * **Holes**: each piece's data ranges come from `SEEK_DATA`/`SEEK_HOLE`;
//!   a piece with holes goes as `SparsePiece` (data segments only).
//! * **xattrs**: the `user.*` set of files and directories travels in
//!   `Attrs::xattrs` when `sync-xattrs` is on, the POSIX ACLs when
//!   `sync-acls` is on (both by default; [`Shipper::xattrs`]).
//! * **Healing**: an entry the slave cannot apply because its tree diverged
//!   from the journal (`SourceMissing`, `Conflict`, `Unsafe`) makes the
//!   master resend the paths concerned from the brick as they are now (the
//!   directories above made directories again, then a Hybrid Crawl with
//!   pruning); content and attribute failures of that kind are healed the
//!   same way, at most `HEAL_ROUNDS` times per batch, then they count as
//!   failures. After the files of a journal batch, the slave compares its
//!   listing of each directory the batch's entries touched with the
//!   brick's, by digest (`CheckListing`); a directory that differs is listed
//!   again whole as the brick has it (`Prune`), keeping the names that later
//!   journal records move away ([`LaterRecords`]). Nothing else is
//!   re-walked: the hook journals its scans of new and renamed directories
//!   at their place in the event stream (see `changelog::hook`), so the
//!   journal alone rebuilds them.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use fast_rsync::Signature;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::brick::dir::{unresolved, BrickDir, Handle};
use crate::brick::origin::OriginIndex;
use crate::crawl::filter::SyncFilter;
use crate::crawl::{Batch, Entry, HybridCrawl};
use crate::proto::compress;
use crate::proto::{
    self as protocol, listing_digest, Attrs, EntryOp, Failure, FailureKind, FileStamp, NodeKind,
    PieceKind, ProtocolError, Reply, Request, Segment, SpecialKind, TreeDigest, TreeEntry, Xattr,
    XattrScope, DELTA_MIN_SIZE, MAX_XATTR_BYTES, PIECE_SIZE, RESUME_MIN_SIZE, SIG_BLOCK_SIZE,
    SIG_STRONG_LEN, STAT_MAX,
};
use crate::relpath::RelPath;
use crate::transport::link::{LinkError, SlaveLink};

/// How many signature requests may be outstanding at once.
const SIG_WINDOW: usize = 8;

/// Size of the batches a resync of a missing rename source is cut into.
const RESYNC_BATCH: usize = 4096;

/// How many times content or attribute failures that show a diverged slave
/// tree are healed within one batch before they count as failures.
const HEAL_ROUNDS: usize = 2;

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
    /// A reply the master cannot have asked for (see [`trust`]): the
    /// session ends rather than act on it.
    #[error("protocol error: {0}")]
    Untrusted(String),
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

/// Attributes of a master file, as sent (`xattrs` filled in by the caller).
fn attrs_of(md: &fs::Metadata, with_owner: bool) -> Attrs {
    Attrs {
        mode: md.permissions().mode() & 0o7777,
        uid: with_owner.then(|| md.uid()),
        gid: with_owner.then(|| md.gid()),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        xattrs: None,
    }
}

/// The xattrs of the open `file`, or else of the inode `inode` names (a
/// [`Handle::proc_path`](crate::brick::dir::Handle::proc_path): followed),
/// that `scope` replicates. `Ok(None)` if the file system does not support
/// them.
fn synced_xattrs(
    inode: &Path,
    file: Option<&File>,
    scope: XattrScope,
) -> io::Result<Option<Vec<Xattr>>> {
    use rustix::io::Errno;
    let list_into = |buf: &mut Vec<u8>| -> Result<usize, Errno> {
        match file {
            Some(f) => rustix::fs::flistxattr(f, &mut buf[..]),
            None => rustix::fs::listxattr(inode, &mut buf[..]),
        }
    };
    // Most files have few or no xattrs: start small (zeroing 64 KiB buffers
    // for every file sent was a visible cost of a first sync).
    let mut list = vec![0u8; 4 * 1024];
    let n = match list_into(&mut list) {
        Ok(n) => n,
        Err(Errno::RANGE) => {
            list.resize(MAX_XATTR_BYTES, 0);
            list_into(&mut list)?
        }
        Err(Errno::NOTSUP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    let mut total = 0;
    let mut value = Vec::new();
    for name in list[..n].split(|b| *b == 0) {
        if !scope.includes(name) {
            continue;
        }
        if value.is_empty() {
            value.resize(64 * 1024, 0);
        }
        let got = match file {
            Some(f) => rustix::fs::fgetxattr(f, name, &mut value[..]),
            None => rustix::fs::getxattr(inode, name, &mut value[..]),
        };
        let len = match got {
            Ok(len) => len,
            // Removed since it was listed.
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        total += name.len() + len;
        if total > MAX_XATTR_BYTES {
            return Err(io::Error::other(format!(
                "its user.* extended attributes exceed {MAX_XATTR_BYTES} bytes"
            )));
        }
        out.push(Xattr {
            name: serde_bytes::ByteBuf::from(name.to_vec()),
            value: serde_bytes::ByteBuf::from(value[..len].to_vec()),
        });
    }
    Ok(Some(out))
}

/// The data ranges of `file` within `[start, end)`, relative to `start`;
/// `None` if it is all data (or the file system cannot tell).
fn data_ranges(file: &File, start: u64, end: u64) -> Option<Vec<(u64, u64)>> {
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

/// The names of multiply-linked files of one brick, by `(dev, ino)`, as far
/// as the master has seen them (journal entries, data sent, Hybrid Crawl
/// walks). Every name is checked against the brick before it is used, so a
/// stale one costs nothing; one never seen is not relinked. Bounded by
/// [`LINK_INDEX_MAX`] names.
#[derive(Debug, Default)]
pub struct LinkIndex {
    by_inode: HashMap<(u64, u64), BTreeSet<RelPath>>,
    names: usize,
    full_warned: bool,
}

/// Most names a [`LinkIndex`] holds (memory stays bounded; beyond it, new
/// hard links may arrive as copies, and a warning says so).
pub const LINK_INDEX_MAX: usize = 1_000_000;

impl LinkIndex {
    /// Remembers that `path` is a name of `inode`.
    pub fn note(&mut self, inode: (u64, u64), path: &RelPath) {
        if self.names >= LINK_INDEX_MAX {
            if !self.full_warned {
                self.full_warned = true;
                tracing::warn!(
                    "more than {LINK_INDEX_MAX} hard-linked names: further hard links may be replicated as copies"
                );
            }
            return;
        }
        if self.by_inode.entry(inode).or_default().insert(path.clone()) {
            self.names += 1;
        }
    }

    /// Whether any name of `inode` is known.
    pub fn knows(&self, inode: (u64, u64)) -> bool {
        self.by_inode.contains_key(&inode)
    }

    /// A rename: names at or below `from` are now below `to`.
    pub fn rename(&mut self, from: &RelPath, to: &RelPath) {
        for names in self.by_inode.values_mut() {
            if !names.iter().any(|n| n.starts_with(from)) {
                continue;
            }
            let moved: BTreeSet<RelPath> = names
                .iter()
                .map(|n| n.rebase(from, to).unwrap_or_else(|| n.clone()))
                .collect();
            self.names -= names.len() - moved.len();
            *names = moved;
        }
    }

    /// The known names of `inode` that are still names of it on `brick`
    /// (forgetting the others).
    pub fn verified(&mut self, brick: &Path, inode: (u64, u64)) -> Vec<RelPath> {
        let Some(names) = self.by_inode.get_mut(&inode) else {
            return Vec::new();
        };
        let before = names.len();
        names.retain(|n| {
            fs::symlink_metadata(n.under(brick))
                .is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == inode)
        });
        self.names -= before - names.len();
        let out: Vec<RelPath> = names.iter().cloned().collect();
        if names.is_empty() {
            self.by_inode.remove(&inode);
        }
        out
    }
}

/// What the shipper remembers about one brick between batches; owned by
/// the brick's worker, so it outlives reconnections.
#[derive(Debug, Default)]
pub struct ShipMemory {
    /// Names of multiply-linked files.
    pub links: LinkIndex,
    /// Which brick entry each slave path was made from.
    pub origins: OriginIndex,
    /// Files (`(dev, ino)`) whose send was abandoned because they changed
    /// while read. A write journals the file again, but a rename only
    /// journals the rename: the slave would move stale content into place.
    /// So every later batch sends such a file under whatever name it has.
    owed: HashSet<(u64, u64)>,
}

/// Most abandoned files remembered (abandons are rare; past this, the
/// oldest knowledge is dropped rather than memory grown).
const OWED_MAX: usize = 100_000;

impl ShipMemory {
    fn owe(&mut self, md: &fs::Metadata) {
        if self.owed.len() >= OWED_MAX {
            self.owed.clear();
        }
        self.owed.insert((md.dev(), md.ino()));
    }
}

/// Directories with more entries than this are not listed again after a
/// batch touched them (the name list would cost more than it saves).
const TOUCHED_PRUNE_MAX: usize = 10_000;

/// Most entries of a renamed directory compared by digest before it is
/// walked (see [`Shipper::same_tree_on_slave`]); beyond that the walk runs
/// at once, as comparing would cost about as much again.
const TREE_CHECK_MAX: usize = 1_000_000;

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

/// What the journal holds after the batch being shipped. A journal batch
/// is shipped while the brick goes on changing, and a directory's listing
/// taken now lacks the names that later records rename away or remove:
/// pruning them on the slave would leave those records no source, and the
/// files would be sent again whole. Kept instead, they are moved (or
/// removed) by the batch that replays those records, which touches the same
/// directory and compares it again, so none outlives the journal's next
/// quiet batch.
pub trait LaterRecords: Sync {
    /// Every path that a record after the batch renames away or removes,
    /// counting every change made before the call; `None` when that cannot
    /// be told (then listings prune as they are).
    fn removed(&self) -> Option<HashSet<RelPath>>;
}

/// Sends one batch and waits for the slave to make it durable.
pub struct Shipper<'a, S> {
    link: &'a mut SlaveLink<S>,
    brick: &'a Path,
    /// The brick as a directory handle: what is read from it is resolved
    /// beneath it, never through a symlink (see [`BrickDir`]).
    dir: BrickDir,
    /// Kept by the worker across batches.
    memory: &'a mut ShipMemory,
    batch_id: u64,
    /// Send numeric owners (only meaningful when the slave runs as root).
    pub with_owner: bool,
    /// Absolute directories of the brick the re-walks never enter (the
    /// brick's `exclude`, e.g. GlusterFS's `.glusterfs`).
    pub exclude: Vec<std::path::PathBuf>,
    /// The session's `exclude` patterns: no path they match leaves the
    /// master, whatever asks for it (a journal record, a heal, a re-walk, a
    /// prune's keep list, a failure the slave reports).
    pub filter: SyncFilter,
    /// The last request sequence number of earlier batches: a reply naming
    /// one at or before it, or after the last one sent, is refused.
    seq_before: u64,
    /// Failures the slave reported in this batch, and the names the prunes
    /// sent keep (each may fail on its own): a slave reporting more failures
    /// than requests and kept names is refused, so what the failures hold
    /// stays bounded by what the master sent.
    failures_seen: u64,
    prune_names: u64,
    /// The brick is a GlusterFS brick: send the mtime its clients see
    /// (`trusted.glusterfs.mdata`) rather than the brick inode's, and do
    /// not count the `.glusterfs` handle among a file's links.
    pub gluster_brick: bool,
    /// The extended attributes sent (`sync-xattrs`, `sync-acls`; both on by
    /// default).
    pub xattrs: XattrScope,
    /// Whether the listings of the directories a journal batch touched are
    /// compared (and pruned); off with `ignore-deletes`, which keeps on the
    /// slave what the brick removed.
    pub prune_touched: bool,
    /// The journal after this batch (journal batches of georep's own hook
    /// only): see [`LaterRecords`].
    pub later: Option<&'a dyn LaterRecords>,
    /// What `later` said last, by parent directory (see
    /// [`Shipper::refresh_later`]).
    removed_later: HashMap<RelPath, Vec<std::ffi::OsString>>,
    /// The data paths of the batch being shipped: never kept for `later`.
    batch_data: HashSet<RelPath>,
    /// `Link` requests that relink names of a file sent in this batch: a
    /// missing target there only means the file did not land (it is sent
    /// again by a later batch), so it is no failure.
    relink_seqs: HashSet<u64>,
    /// Regular files whose content (with attributes) was sent, or abandoned
    /// because it changed meanwhile (a later batch sends both again).
    content_sent: HashSet<RelPath>,
    report: ShipReport,
    transient: Vec<Failure>,
    /// Paths to resend whole from the brick (see [`Shipper::heal`]).
    heal_paths: Vec<RelPath>,
    /// Paths to resend from the brick through the quick check: sources of
    /// renames that neither side has (see [`Shipper::absorb`]).
    heal_quick: Vec<RelPath>,
    /// The failures behind `heal_paths`; they count as failures only if
    /// healing runs out of rounds.
    heal_failures: Vec<Failure>,
    /// Parent directories of the files sent.
    touched_dirs: std::collections::BTreeSet<RelPath>,
    /// Data paths that are no regular file: no content to send, but their
    /// attributes are due (see [`Shipper::send_files`]).
    attrs_due: Vec<RelPath>,
    /// Destinations of the renames sent (see [`Shipper::resend_stale`]).
    renamed_to: Vec<RelPath>,
    /// The paths each entry sent concerns (for a rename: its destination,
    /// then its source), by request sequence number.
    entry_paths: HashMap<u64, Vec<RelPath>>,
    /// Entries were sent since the last barrier.
    entries_unsettled: bool,
    /// Files sent as deltas, by the `seq` of their `FileBegin`.
    delta_sends: HashMap<u64, RelPath>,
    /// Files sent as deltas that the slave could not rebuild (its copy was
    /// not the one its signature described): sent again whole.
    literal_due: BTreeSet<RelPath>,
    /// Files that go literally whatever their size (resends of
    /// `literal_due`): no signature, so no base on the slave to disagree.
    literal: HashSet<RelPath>,
    /// Directories the entries of a journal batch touched, whose listing
    /// the slave checks once the batch's files are in place (see
    /// [`Shipper::check_listings`]).
    listings_due: Vec<RelPath>,
    /// The directory of each `CheckListing` sent, by sequence number.
    listing_seqs: HashMap<u64, RelPath>,
    /// Directories whose listing differs on the slave: their whole name
    /// list is sent.
    listings_differ: Vec<RelPath>,
}

impl<'a, S: AsyncRead + AsyncWrite> Shipper<'a, S> {
    pub fn new(
        link: &'a mut SlaveLink<S>,
        brick: &'a Path,
        memory: &'a mut ShipMemory,
        batch_id: u64,
    ) -> Self {
        Shipper {
            seq_before: link.last_seq(),
            failures_seen: 0,
            prune_names: 0,
            link,
            brick,
            dir: BrickDir::open(brick),
            memory,
            batch_id,
            with_owner: nix_is_root(),
            exclude: Vec::new(),
            filter: SyncFilter::default(),
            gluster_brick: false,
            xattrs: XattrScope::default(),
            prune_touched: true,
            later: None,
            removed_later: HashMap::new(),
            batch_data: HashSet::new(),
            relink_seqs: HashSet::new(),
            content_sent: HashSet::new(),
            report: ShipReport::default(),
            transient: Vec::new(),
            heal_paths: Vec::new(),
            heal_quick: Vec::new(),
            heal_failures: Vec::new(),
            entry_paths: HashMap::new(),
            entries_unsettled: false,
            renamed_to: Vec::new(),
            touched_dirs: std::collections::BTreeSet::new(),
            attrs_due: Vec::new(),
            delta_sends: HashMap::new(),
            literal_due: BTreeSet::new(),
            literal: HashSet::new(),
            listings_due: Vec::new(),
            listing_seqs: HashMap::new(),
            listings_differ: Vec::new(),
        }
    }

    /// Ships `batch` and returns once the slave acknowledged it as durable.
    pub async fn ship(mut self, batch: &Batch) -> Result<ShipReport, ShipError> {
        let start_bytes = self.link.bytes_sent();
        let started = std::time::Instant::now();
        if self.later.is_some() {
            self.batch_data = batch.data().iter().cloned().collect();
        }
        for (inode, path) in batch.link_names() {
            self.memory.links.note(*inode, path);
        }
        let written = self.written_through_lost_names(batch);
        for entry in batch.entries() {
            self.send_entry(entry).await?;
        }
        self.barrier().await?;
        let mut extra = self.heal().await?;
        if batch.is_journal() && self.prune_touched {
            self.note_touched(batch, &mut extra);
            self.rewalk_renamed(&mut extra).await?;
        }
        self.resend_stale(&mut extra).await?;
        for inode in written {
            for name in self.memory.links.verified(self.brick, inode) {
                extra.push_data(name);
            }
        }
        self.send_owed(batch, &mut extra);
        self.find_link_names(batch.data().iter().chain(extra.data()));
        let mut unchanged = HashSet::new();
        let probed: &[RelPath] = if batch.quick_check() {
            batch.data()
        } else {
            &[]
        };
        let entries_done = started.elapsed();
        for (path, md) in self.unchanged_on_slave(probed).await? {
            // Its content is there; its attributes may not be.
            self.memory.origins.made(&path, (md.dev(), md.ino()));
            extra.push_meta(path.clone());
            unchanged.insert(path);
        }

        self.send_content(
            batch
                .data()
                .iter()
                .filter(|p| !unchanged.contains(*p))
                .chain(extra.data()),
            batch.meta().iter().chain(extra.meta()),
        )
        .await?;
        let content_done = started.elapsed();
        self.check_listings().await?;
        // Content or attributes that could not be applied because the
        // slave's tree diverged are healed too, and deltas the slave could
        // not apply are sent again literally, a bounded number of times
        // (a failure after the last round is transient: the batch is
        // retried and stime stays where it is). Touched directories that
        // differ on the slave are pruned first (which may find more to heal).
        let mut heals = 0;
        while heals < HEAL_ROUNDS {
            self.barrier().await?;
            if !self.listings_differ.is_empty() {
                self.prune_differing().await?;
                continue;
            }
            if self.heal_paths.is_empty()
                && self.heal_quick.is_empty()
                && self.literal_due.is_empty()
            {
                break;
            }
            heals += 1;
            let extra = self.heal().await?;
            let literal = std::mem::take(&mut self.literal_due);
            self.literal.extend(literal.iter().cloned());
            self.send_content(
                extra.data().iter().chain(literal.iter()),
                extra.meta().iter(),
            )
            .await?;
        }
        let healed = started.elapsed();
        // Every lane makes its part durable (at once), and all must have
        // before the batch counts as committed.
        let lanes = self.link.lane_count();
        for lane in 0..lanes {
            let link = self.link.lane(lane);
            link.send(&Request::Commit {
                batch: self.batch_id,
            })
            .await?;
            link.flush().await?;
        }
        for lane in 0..lanes {
            loop {
                match self.link.lane(lane).recv().await? {
                    Reply::Committed { batch } if batch == self.batch_id => break,
                    other => self.absorb(other)?,
                }
            }
        }
        self.report.bytes_sent = self.link.bytes_sent() - start_bytes;
        tracing::debug!(
            batch = self.batch_id,
            entries = self.report.entries,
            data = self.report.data,
            bytes = self.report.bytes_sent,
            ?entries_done,
            ?content_done,
            ?healed,
            total = ?started.elapsed(),
            "batch committed"
        );
        for f in std::mem::take(&mut self.heal_failures) {
            tracing::warn!(path = %f.path, kind = ?f.kind, "{}", f.message);
            self.report.failures.push(f);
        }
        if !self.transient.is_empty() {
            return Err(ShipError::Transient(self.transient));
        }
        Ok(self.report)
    }

    /// Files, then attributes (of `meta`, of the directories the files were
    /// put in, but not of files whose content carried them).
    async fn send_content(
        &mut self,
        data: impl Iterator<Item = &RelPath>,
        meta: impl Iterator<Item = &RelPath>,
    ) -> Result<(), ShipError> {
        if self.link.lane_count() > 1 && self.entries_unsettled {
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

    /// Resends, from the brick as it is now, the paths the slave reported
    /// missing or in an unexpected state: the directories above each (made
    /// directories again if something else is there), then a Hybrid Crawl
    /// of it with pruning; whole, or for the paths of `heal_quick` through
    /// the quick check. Returns the content and attribute work found.
    async fn heal(&mut self) -> Result<Batch, ShipError> {
        let mut paths: Vec<(RelPath, bool)> = std::mem::take(&mut self.heal_paths)
            .into_iter()
            .map(|p| (p, false))
            .collect();
        paths.extend(
            std::mem::take(&mut self.heal_quick)
                .into_iter()
                .map(|p| (p, true)),
        );
        // Whole resends first: a quick one does not stand in for them.
        paths.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        paths.dedup();
        let mut extra = Batch::new();
        let mut done: Vec<RelPath> = Vec::new();
        for (path, quick) in paths {
            // The nearest path that the brick still has (beneath real
            // directories: the lstat resolves no symlink on the way).
            let mut target = path;
            while !target.is_root() && self.dir.lstat(&target).is_err() {
                target = target.parent().unwrap_or_default();
            }
            if done.iter().any(|d| target.starts_with(d)) || self.withheld(&target) {
                continue;
            }
            tracing::debug!(batch = self.batch_id, path = %target, "resending from the brick");
            done.push(target.clone());
            let mut ancestors = Vec::new();
            let mut a = target.parent();
            while let Some(p) = a.filter(|p| !p.is_root()) {
                a = p.parent();
                ancestors.push(p);
            }
            for dir in ancestors.into_iter().rev() {
                self.send_entry(&Entry::Mkdir(dir.clone())).await?;
                extra.push_meta(dir);
            }
            extra.push_meta(target.parent().unwrap_or_default());
            let exclude = self.exclude.clone();
            self.resend_walk(target, exclude, quick, &mut extra).await?;
        }
        // Failures that led to a resend are healed, not failures.
        self.heal_failures.clear();
        Ok(extra)
    }

    /// Notes every directory an entry of a journal batch touched: its
    /// attributes are set afterwards, and once the batch's files are in
    /// place the slave's listing of it is compared with the brick's (names
    /// left by entries journalled out of order are pruned).
    fn note_touched(&mut self, batch: &Batch, extra: &mut Batch) {
        let mut touched: Vec<RelPath> = batch
            .entries()
            .iter()
            .filter(|e| !matches!(e, Entry::Prune { .. }))
            .flat_map(|e| e.paths().filter_map(RelPath::parent))
            // A directory the brick no longer has may still be on the slave,
            // made as a parent of a path replayed out of order: its nearest
            // ancestor the brick has drops it.
            .map(|mut d| {
                while !d.is_root() && !self.dir.lstat(&d).is_ok_and(|m| m.is_dir()) {
                    d = d.parent().unwrap_or_default();
                }
                d
            })
            .collect();
        touched.sort();
        touched.dedup();
        for dir in &touched {
            extra.push_meta(dir.clone());
        }
        self.listings_due = touched;
    }

    /// The names of directory `dir` of the brick with their kinds; `None`
    /// if it cannot be listed or holds more than [`TOUCHED_PRUNE_MAX`]
    /// entries (the name list would cost more than it saves).
    fn brick_listing(&self, dir: &RelPath) -> Option<Vec<(std::ffi::OsString, NodeKind)>> {
        // Listed through a handle resolved beneath the brick.
        let rd = self
            .dir
            .handle(dir)
            .and_then(|h| fs::read_dir(h.proc_path()))
            .ok()?;
        let mut out = Vec::new();
        for entry in rd.take(TOUCHED_PRUNE_MAX + 1) {
            let Ok(entry) = entry else { continue };
            // From the directory entry's type where the file system gives
            // one; a name gone since it was listed is gone.
            let Ok(ft) = entry.file_type() else { continue };
            let name = entry.file_name();
            // Excluded names are neither listed nor kept: they never leave.
            if dir.join(&name).is_ok_and(|p| self.filter.excluded(&p)) {
                continue;
            }
            out.push((name, node_kind(ft)));
        }
        (out.len() <= TOUCHED_PRUNE_MAX).then_some(out)
    }

    /// Asks the slave to compare its listing of every touched directory
    /// with the brick's, by digest: only a directory that differs gets its
    /// whole name list (see [`Shipper::prune_differing`]). Sent after the
    /// batch's files, so the new ones are on both sides.
    async fn check_listings(&mut self) -> Result<(), ShipError> {
        for dir in std::mem::take(&mut self.listings_due) {
            if self.withheld(&dir) {
                continue;
            }
            let Some(listing) = self.brick_listing(&dir) else {
                continue;
            };
            let mut listing: Vec<(Vec<u8>, NodeKind)> = listing
                .into_iter()
                .map(|(name, kind)| (name.into_encoded_bytes(), kind))
                .collect();
            let digest = listing_digest(&mut listing);
            let seq = self.link.next_seq();
            tracing::debug!(batch = self.batch_id, seq, path = %dir, "check listing");
            self.link
                .send(&Request::CheckListing {
                    seq,
                    path: dir.clone(),
                    digest,
                })
                .await?;
            self.listing_seqs.insert(seq, dir);
        }
        Ok(())
    }

    /// Asks the journal which names later records take away; called after
    /// the listings that the next prunes keep, so every name they lack
    /// because of such a record is in the answer.
    fn refresh_later(&mut self) {
        if let Some(later) = self.later {
            self.removed_later.clear();
            for path in later.removed().unwrap_or_default() {
                // Written in this batch and moved away since, the name's
                // new content could not be read, and the record that moves
                // it carries no data: on the slave it would keep what it
                // held before. Pruned, its rename finds no source and the
                // destination is resent whole.
                if self.batch_data.contains(&path) {
                    continue;
                }
                if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
                    let name = name.to_os_string();
                    self.removed_later.entry(dir).or_default().push(name);
                }
            }
        }
    }

    /// Lists every directory whose listing differs on the slave again, as
    /// the brick has it now: the slave drops names it should not have, and
    /// the directory's attributes are set afterwards (pruning changed its
    /// mtime there).
    async fn prune_differing(&mut self) -> Result<(), ShipError> {
        let mut dirs = std::mem::take(&mut self.listings_differ);
        dirs.sort();
        dirs.dedup();
        let listed: Vec<(RelPath, Vec<(std::ffi::OsString, NodeKind)>)> = dirs
            .into_iter()
            .filter_map(|dir| self.brick_listing(&dir).map(|l| (dir, l)))
            .collect();
        if !listed.is_empty() {
            self.refresh_later();
        }
        for (dir, listing) in listed {
            tracing::debug!(batch = self.batch_id, path = %dir, "listing differs on the slave: pruning");
            let keep = listing.into_iter().map(|(name, _)| name).collect();
            self.send_entry(&Entry::Prune {
                dir: dir.clone(),
                keep,
            })
            .await?;
            self.send_meta(&dir).await?;
        }
        Ok(())
    }

    /// Walks every directory a rename of this batch produced, as the brick
    /// has it now, with pruning: notify watches a renamed directory again
    /// only after the batch of events that moved it, and what changed
    /// inside meanwhile (removals above all, which no scan can see) was
    /// never journalled. Files go through a quick check: most are on the
    /// slave already, moved there by the rename. First, though, the whole
    /// subtree is compared by digest (see [`Shipper::same_tree_on_slave`]):
    /// one that matches is not walked, so renaming a directory of many
    /// files sends neither their names nor their paths.
    async fn rewalk_renamed(&mut self, extra: &mut Batch) -> Result<(), ShipError> {
        let mut roots: Vec<RelPath> = self
            .renamed_to
            .iter()
            .filter(|p| self.dir.lstat(p).is_ok_and(|m| m.is_dir()))
            .cloned()
            .collect();
        roots.sort();
        roots.dedup();
        let mut done: Vec<RelPath> = Vec::new();
        for root in roots {
            if done.iter().any(|d| root.starts_with(d)) {
                continue;
            }
            done.push(root.clone());
            if self.same_tree_on_slave(&root).await? {
                tracing::debug!(batch = self.batch_id, path = %root, "renamed directory is on the slave as on the brick");
                continue;
            }
            self.resend_walk(root, Vec::new(), true, extra).await?;
        }
        Ok(())
    }

    /// Walks the brick's `root` (a Hybrid Crawl with pruning, not entering
    /// `exclude`): its entries are sent, its files and attributes go into
    /// `extra`; with `quick`, a file the slave holds with the brick's size
    /// and mtime gets its attributes only.
    async fn resend_walk(
        &mut self,
        root: RelPath,
        exclude: Vec<std::path::PathBuf>,
        quick: bool,
        extra: &mut Batch,
    ) -> Result<(), ShipError> {
        let mut walk = HybridCrawl::new(self.brick.to_owned(), root, exclude, None).with_prune();
        while let Some(b) = walk.next_batch(RESYNC_BATCH) {
            // The walk listed its directories by now.
            if b.entries().iter().any(|e| matches!(e, Entry::Prune { .. })) {
                self.refresh_later();
            }
            for e in b.entries() {
                self.send_entry(e).await?;
            }
            for (inode, path) in b.link_names() {
                self.memory.links.note(*inode, path);
            }
            let mut skip = HashSet::new();
            if quick {
                for (path, md) in self.unchanged_on_slave(b.data()).await? {
                    self.memory.origins.made(&path, (md.dev(), md.ino()));
                    extra.push_meta(path.clone());
                    skip.insert(path);
                }
            }
            for p in b.data().iter().filter(|p| !skip.contains(*p)) {
                extra.push_data(p.clone());
            }
            b.meta().iter().for_each(|p| extra.push_meta(p.clone()));
        }
        self.report.local_errors.extend(walk.take_errors());
        Ok(())
    }

    /// Whether the slave's subtree at `root` is what walking it would make
    /// it: the same names and kinds (nothing to prune), and every regular
    /// file and directory with the brick's size, mtime, permission bits and
    /// owner (nothing for a quick check to send, no attributes to set but
    /// extended ones). The walk also sends the extended attributes of every
    /// entry; a change of those inside the directory while notify did not
    /// watch it set its ctime, so the hook's rescan of the renamed
    /// directory journalled it (as it does writes). A subtree holding a
    /// multiply-linked file, or more than [`TREE_CHECK_MAX`] entries, is
    /// walked without asking (the walk keeps hard links together).
    async fn same_tree_on_slave(&mut self, root: &RelPath) -> Result<bool, ShipError> {
        let Some(digest) = self.tree_digest(root) else {
            return Ok(false);
        };
        let seq = self.link.next_seq();
        self.link
            .send(&Request::CheckTree {
                seq,
                path: root.clone(),
                digest,
                owners: self.with_owner,
            })
            .await?;
        self.link.flush().await?;
        loop {
            match self.link.recv().await? {
                Reply::Tree { seq: got, same } if got == seq => return Ok(same),
                other => self.absorb(other)?,
            }
        }
    }

    /// The [`TreeDigest`] of the brick's subtree at `root`, read beneath
    /// the brick; `None` if it cannot be read whole, holds a multiply-linked
    /// file or more than [`TREE_CHECK_MAX`] entries.
    fn tree_digest(&self, root: &RelPath) -> Option<[u8; 32]> {
        if self.filter.excluded(root) {
            return None;
        }
        let mut d = TreeDigest::new(self.with_owner);
        let md = self.dir.lstat(root).ok().filter(|m| m.is_dir())?;
        d.add(&self.tree_entry(root, b"", &md));
        let skip = if root.is_root() {
            0
        } else {
            root.as_bytes().len() + 1
        };
        let mut stack = vec![self.sorted_names(root)?.into_iter()];
        let mut dirs = vec![root.clone()];
        let mut entries = 0;
        while let Some(names) = stack.last_mut() {
            let Some(name) = names.next() else {
                stack.pop();
                dirs.pop();
                continue;
            };
            entries += 1;
            let path = dirs.last()?.join(&name).ok()?;
            // As the slave should have it: without what is excluded.
            if self.filter.excluded(&path) {
                continue;
            }
            let md = self.dir.lstat(&path).ok()?;
            let links = 1 + u64::from(self.gluster_brick);
            if entries > TREE_CHECK_MAX || (md.is_file() && md.nlink() > links) {
                return None;
            }
            d.add(&self.tree_entry(&path, &path.as_bytes()[skip..], &md));
            if md.is_dir() {
                stack.push(self.sorted_names(&path)?.into_iter());
                dirs.push(path);
            }
        }
        Some(d.finish())
    }

    /// What [`TreeDigest`] covers of the brick's `path` (at `rel` below the
    /// subtree's root), with the mtime the slave gets.
    fn tree_entry<'p>(&self, path: &RelPath, rel: &'p [u8], md: &fs::Metadata) -> TreeEntry<'p> {
        let (mtime_sec, mtime_nsec) = self.mtime_of(&path.under(self.brick), md);
        TreeEntry {
            path: rel,
            kind: node_kind(md.file_type()),
            mode: md.mode() & 0o7777,
            size: md.size(),
            mtime_sec,
            mtime_nsec,
            uid: md.uid(),
            gid: md.gid(),
        }
    }

    /// The names in the brick's directory `dir`, in byte order (listed
    /// through a handle resolved beneath the brick).
    fn sorted_names(&self, dir: &RelPath) -> Option<Vec<std::ffi::OsString>> {
        let rd = self
            .dir
            .handle(dir)
            .and_then(|h| fs::read_dir(h.proc_path()))
            .ok()?;
        let mut names = rd
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()
            .ok()?;
        names.sort_unstable_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        Some(names)
    }

    /// Sends again what a replayed rename of this batch moved onto a path
    /// where the brick has another entry (see [`OriginIndex`]): files and
    /// directories through the data and attribute phases, the others as
    /// entries.
    async fn resend_stale(&mut self, extra: &mut Batch) -> Result<(), ShipError> {
        let mut roots = std::mem::take(&mut self.renamed_to);
        roots.sort();
        roots.dedup();
        let mut done: Vec<RelPath> = Vec::new();
        for root in roots {
            if done.iter().any(|d| root.starts_with(d)) {
                continue;
            }
            done.push(root.clone());
            for (path, md) in self.memory.origins.stale_under(self.brick, &root) {
                tracing::debug!(batch = self.batch_id, path = %path, "the slave's copy came from another file: resending");
                let ft = md.file_type();
                if ft.is_file() {
                    extra.push_data(path);
                } else if ft.is_dir() {
                    extra.push_meta(path);
                } else {
                    let entry = if ft.is_symlink() {
                        Entry::Symlink(path.clone())
                    } else {
                        Entry::Mknod(path.clone())
                    };
                    self.send_entry(&entry).await?;
                    extra.push_meta(path.parent().unwrap_or_default());
                    extra.push_meta(path);
                }
            }
        }
        Ok(())
    }

    /// The multiply-linked files that the data records of `batch` may have
    /// changed under a name that no longer leads to them (written through
    /// `f`, then `f` unlinked or replaced): their other names must get the
    /// new content, though no record names them.
    fn written_through_lost_names(&self, batch: &Batch) -> HashSet<(u64, u64)> {
        batch
            .data()
            .iter()
            .filter_map(|p| {
                let noted = self.memory.origins.inode_of(p)?;
                let now = self.dir.lstat(p).ok().map(|m| (m.dev(), m.ino()));
                (now != Some(noted) && self.memory.links.knows(noted)).then_some(noted)
            })
            .collect()
    }

    /// Adds to the data of this batch every path it names whose file's
    /// content an earlier batch still owes the slave (see
    /// [`ShipMemory::owed`]): renamed, linked or changed since, the file
    /// shows up here under its current name.
    fn send_owed(&mut self, batch: &Batch, extra: &mut Batch) {
        if self.memory.owed.is_empty() {
            return;
        }
        let named: Vec<RelPath> = batch
            .entries()
            .iter()
            .filter_map(|e| match e {
                Entry::Rename { to: p, .. } | Entry::Create(p) | Entry::Link(p) => Some(p.clone()),
                _ => None,
            })
            .chain(batch.meta().iter().cloned())
            .collect();
        for path in named {
            let Ok(md) = self.dir.lstat(&path) else {
                continue;
            };
            if md.is_file() && self.memory.owed.contains(&(md.dev(), md.ino())) {
                tracing::debug!(batch = self.batch_id, path = %path, "content owed since an abandoned send");
                extra.push_data(path);
            }
        }
    }

    /// Notes the other names of the multiply-linked files among `data` that
    /// the slave already has (sent when they had one name; a new hard link
    /// is journalled under its new name only), so they are linked again to
    /// the content sent.
    fn find_link_names<'b>(&mut self, data: impl Iterator<Item = &'b RelPath>) {
        let inodes: HashSet<(u64, u64)> = data
            .filter_map(|p| self.dir.lstat(p).ok())
            .filter(|m| m.is_file() && m.nlink() > 1)
            .map(|m| (m.dev(), m.ino()))
            .collect();
        for (inode, name) in self.memory.origins.names_of(&inodes) {
            self.memory.links.note(inode, &name);
        }
    }

    /// The regular files among `paths` (with one name: a multiply-linked
    /// file goes through the data phase, which keeps its names together)
    /// that the slave already holds with the brick's size and mtime.
    async fn unchanged_on_slave(
        &mut self,
        paths: &[RelPath],
    ) -> Result<Vec<(RelPath, fs::Metadata)>, ShipError> {
        let mut out = Vec::new();
        for chunk in paths.chunks(STAT_MAX) {
            let local: Vec<(RelPath, fs::Metadata)> = chunk
                .iter()
                .filter(|p| !self.filter.excluded(p))
                .filter_map(|p| {
                    let md = self.dir.lstat(p).ok()?;
                    let handle = u64::from(self.gluster_brick);
                    (md.is_file() && md.nlink() == 1 + handle).then(|| (p.clone(), md))
                })
                .collect();
            if local.is_empty() {
                continue;
            }
            let seq = self.link.next_seq();
            let paths = local.iter().map(|(p, _)| p.clone()).collect();
            self.link.send(&Request::Stat { seq, paths }).await?;
            self.link.flush().await?;
            let files = loop {
                match self.link.recv().await? {
                    Reply::Stat { seq: got, files } if got == seq => break files,
                    other => self.absorb(other)?,
                }
            };
            if files.len() != local.len() {
                return Err(ShipError::Unexpected(format!(
                    "{} answers to a Stat of {} paths",
                    files.len(),
                    local.len()
                )));
            }
            for ((path, md), remote) in local.into_iter().zip(files) {
                let (mtime_sec, mtime_nsec) = self.mtime_of(&path.under(self.brick), &md);
                let here = FileStamp {
                    size: md.size(),
                    mtime_sec,
                    mtime_nsec,
                };
                if remote == Some(here) {
                    out.push((path, md));
                }
            }
        }
        Ok(out)
    }

    /// Records a reply that is not the one being waited for.
    fn absorb(&mut self, reply: Reply) -> Result<(), ShipError> {
        if let Reply::Failed(f) = &reply {
            let last = self.link.last_seq();
            if !trust::sent_in_batch(f.seq, self.seq_before, last) {
                return Err(ShipError::Untrusted(format!(
                    "the slave reported a failure of request {} about {}, which this batch never sent",
                    f.seq, f.path
                )));
            }
            self.failures_seen += 1;
            let sent = last - self.seq_before + self.prune_names;
            if self.failures_seen > sent {
                return Err(ShipError::Untrusted(format!(
                    "the slave reported {} failures for {sent} requests and kept names",
                    self.failures_seen
                )));
            }
        }
        match reply {
            Reply::Failed(f)
                if f.kind == FailureKind::SourceMissing && self.relink_seqs.contains(&f.seq) =>
            {
                tracing::debug!(path = %f.path, "not relinked: {}", f.message);
                Ok(())
            }
            Reply::Failed(f)
                if matches!(
                    f.kind,
                    FailureKind::SourceMissing | FailureKind::Conflict | FailureKind::Unsafe
                ) =>
            {
                // The slave never had the source, or its tree is not what
                // the journal expects: send the paths concerned whole.
                tracing::debug!(path = %f.path, kind = ?f.kind, "healing: {}", f.message);
                let mut paths = self
                    .entry_paths
                    .remove(&f.seq)
                    .unwrap_or_else(|| vec![f.path.clone()]);
                if f.kind == FailureKind::SourceMissing {
                    // A missing source (`f.path`) that the brick lacks too
                    // is healed through the quick check. Both sides agree
                    // about that path itself (the slave has nothing at or
                    // below it: that is what the failure says), so its heal
                    // resends the nearest path the brick has, the directory
                    // above it, and sent whole that would be all of that
                    // directory: one whose names were pruned a batch early
                    // (its listing was compared after later renames of the
                    // brick) would be sent again in full for each batch of
                    // such renames. What the source became is healed as
                    // its destination (the other path here), and later
                    // records say where it went after that. The directory
                    // is still walked, with pruning and the quick check
                    // (files the slave holds with the brick's size and mtime
                    // get their attributes only): a write journalled under
                    // a name replaced since (a hard link written through,
                    // then renamed over) reaches the file's other names
                    // only this way. The destination keeps the whole heal,
                    // even when the brick lost it: what the slave has there
                    // may be moved on by later renames, which the whole
                    // resend of the directory above it catches.
                    if let Some(i) = paths
                        .iter()
                        .position(|p| p == &f.path && self.dir.lstat(p).is_err())
                    {
                        self.heal_quick.push(paths.remove(i));
                    }
                }
                self.heal_paths.extend(paths);
                if f.kind != FailureKind::SourceMissing {
                    self.heal_failures.push(f);
                }
                Ok(())
            }
            Reply::Failed(f)
                if f.kind == FailureKind::Mismatch && self.delta_sends.contains_key(&f.seq) =>
            {
                // The slave's copy changed between its signature and the
                // delta (or the delta was computed against another copy):
                // its temp file is gone and its copy untouched, so sending
                // the bytes themselves puts it right.
                tracing::debug!(path = %f.path, "delta not applied, resending whole: {}", f.message);
                if let Some(path) = self.delta_sends.remove(&f.seq) {
                    self.literal_due.insert(path);
                }
                Ok(())
            }
            Reply::ListingDiffers { seq } => match self.listing_seqs.remove(&seq) {
                Some(dir) => {
                    self.listings_differ.push(dir);
                    Ok(())
                }
                None => Err(ShipError::Unexpected(format!(
                    "ListingDiffers for request {seq}, which checked no listing"
                ))),
            },
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

    /// Waits until every lane has done everything sent so far (files
    /// received on a lane are in place afterwards).
    async fn barrier(&mut self) -> Result<(), ShipError> {
        self.entries_unsettled = false;
        let lanes = self.link.lane_count();
        let mut ids = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            let id = self.link.next_seq();
            let link = self.link.lane(lane);
            link.send(&Request::Barrier { id }).await?;
            link.flush().await?;
            ids.push(id);
        }
        for (lane, id) in ids.into_iter().enumerate() {
            loop {
                match self.link.lane(lane).recv().await? {
                    Reply::Barrier { id: got } if got == id => break,
                    other => self.absorb(other)?,
                }
            }
        }
        Ok(())
    }

    /// Whether the session's `exclude` keeps `path` on the master.
    fn withheld(&self, path: &RelPath) -> bool {
        let excluded = self.filter.excluded(path);
        if excluded {
            tracing::debug!(batch = self.batch_id, path = %path, "excluded: not sent");
        }
        excluded
    }

    fn local_error(&mut self, what: &str, path: &RelPath, e: io::Error) {
        let msg = format!("cannot {what} {}: {e}", path.under(self.brick).display());
        tracing::warn!("{msg}");
        self.report.local_errors.push(msg);
    }

    async fn send_entry(&mut self, entry: &Entry) -> Result<(), ShipError> {
        if entry.paths().any(|p| self.withheld(p)) {
            return Ok(());
        }
        let lstat = |p: &RelPath| self.dir.lstat(p).ok();
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
            Entry::Create(p) | Entry::Link(p) => {
                let md = lstat(p).filter(|m| m.is_file());
                if let Some(m) = md.as_ref().filter(|m| m.nlink() > 1) {
                    self.memory.links.note((m.dev(), m.ino()), p);
                }
                match md {
                    Some(m) if m.size() == 0 => EntryOp::Create {
                        path: p.clone(),
                        mode: m.mode() & 0o7777,
                    },
                    _ => return Ok(()),
                }
            }
            Entry::Symlink(p) if !self.dir.beneath(p) => return Ok(()),
            Entry::Symlink(p) => match fs::read_link(p.under(self.brick)) {
                Ok(target) => EntryOp::Symlink {
                    path: p.clone(),
                    target: target.into_os_string().into_encoded_bytes(),
                },
                // Not a symlink any more: a later record says what it is.
                Err(_) => return Ok(()),
            },
            Entry::Mknod(p) => {
                let Some(md) = lstat(p) else { return Ok(()) };
                let ft = md.file_type();
                let kind = if ft.is_fifo() {
                    SpecialKind::Fifo
                } else if ft.is_socket() {
                    SpecialKind::Socket
                } else if ft.is_char_device() {
                    SpecialKind::CharDevice
                } else if ft.is_block_device() {
                    SpecialKind::BlockDevice
                } else {
                    // Not a special file any more: a later record says what.
                    return Ok(());
                };
                EntryOp::Mknod {
                    path: p.clone(),
                    kind,
                    mode: md.mode() & 0o7777,
                    rdev: md.rdev(),
                }
            }
            Entry::Unlink(p) => EntryOp::Unlink { path: p.clone() },
            Entry::Rmdir(p) => EntryOp::Rmdir { path: p.clone() },
            Entry::Rename { from, to } => {
                self.memory.links.rename(from, to);
                EntryOp::Rename {
                    from: from.clone(),
                    to: to.clone(),
                }
            }
            Entry::Prune { dir, keep } => {
                let mut keep = keep.clone();
                if let Some(later) = self.removed_later.get(dir) {
                    let listed: HashSet<&std::ffi::OsString> = keep.iter().collect();
                    let extra: BTreeSet<std::ffi::OsString> = later
                        .iter()
                        .filter(|n| !listed.contains(n))
                        .cloned()
                        .collect();
                    tracing::debug!(batch = self.batch_id, path = %dir, kept = extra.len(), "names that later records move away are kept");
                    keep.extend(extra);
                }
                // The slave learns no excluded name, so its copies of them
                // (from before the pattern was set) are pruned.
                keep.retain(|k| !dir.join(k).is_ok_and(|p| self.filter.excluded(&p)));
                self.prune_names += keep.len() as u64;
                let kinds: Option<Vec<NodeKind>> = keep
                    .iter()
                    .map(|k| {
                        let child = dir.join(k).ok()?;
                        self.dir
                            .lstat(&child)
                            .ok()
                            .map(|m| node_kind(m.file_type()))
                    })
                    .collect();
                EntryOp::Prune {
                    path: dir.clone(),
                    keep: keep
                        .iter()
                        .map(|k| serde_bytes::ByteBuf::from(k.clone().into_encoded_bytes()))
                        .collect(),
                    // A name gone meanwhile: compare no types this time.
                    kinds: kinds.unwrap_or_default(),
                }
            }
        };
        match &op {
            EntryOp::Rename { from, to } => {
                self.memory.origins.rename(from, to);
                self.renamed_to.push(to.clone());
            }
            EntryOp::Unlink { path } | EntryOp::Rmdir { path } => {
                self.memory.origins.forget(path);
            }
            EntryOp::Mkdir { path, .. }
            | EntryOp::Create { path, .. }
            | EntryOp::Symlink { path, .. }
            | EntryOp::Mknod { path, .. } => {
                self.memory.origins.made_from_brick(self.brick, path);
            }
            EntryOp::Link { .. } | EntryOp::Prune { .. } => {}
        }
        let seq = self.link.next_seq();
        let paths: Vec<RelPath> = match (&op, op.paths()) {
            // Its failures name the path concerned (the directory, or a
            // child of another type).
            (EntryOp::Prune { .. }, _) => vec![],
            (_, (path, other)) => std::iter::once(path).chain(other).cloned().collect(),
        };
        if !paths.is_empty() {
            self.entry_paths.insert(seq, paths);
        }
        tracing::debug!(batch = self.batch_id, seq, "entry {op:?}");
        self.link.send(&Request::Entry { seq, op }).await?;
        self.entries_unsettled = true;
        self.report.entries += 1;
        Ok(())
    }

    fn client_times(&self, full: &Path, attrs: &mut Attrs) {
        if let Some((sec, nsec)) = self.client_mtime(full) {
            attrs.mtime_sec = sec;
            attrs.mtime_nsec = nsec;
        }
    }

    /// The mtime GlusterFS clients see, on a GlusterFS brick.
    fn client_mtime(&self, full: &Path) -> Option<(i64, u32)> {
        self.gluster_brick
            .then(|| crate::changelog::glusterfs::client_mtime(full))
            .flatten()
    }

    /// The mtime the slave gets for a file of the brick.
    fn mtime_of(&self, full: &Path, md: &fs::Metadata) -> (i64, u32) {
        self.client_mtime(full)
            .unwrap_or((md.mtime(), md.mtime_nsec() as u32))
    }

    async fn send_meta(&mut self, path: &RelPath) -> Result<(), ShipError> {
        if self.withheld(path) {
            return Ok(());
        }
        // Resolved beneath the brick: the attributes of whatever a symlink
        // that replaced an ancestor points to are never read (the slave's
        // copy would get them, and their owner would see them leave).
        let read = self
            .dir
            .handle(path)
            .and_then(|h| h.metadata().map(|md| (md, h)));
        let (md, handle) = match read {
            Ok(x) => x,
            Err(e) if unresolved(&e) => return Ok(()),
            Err(e) => {
                self.local_error("stat", path, e);
                return Ok(());
            }
        };
        let seq = self.link.next_seq();
        let mut attrs = attrs_of(&md, self.with_owner);
        self.client_times(&path.under(self.brick), &mut attrs);
        if self.xattrs.any() && (md.is_file() || md.is_dir()) {
            match synced_xattrs(&handle.proc_path(), None, self.xattrs) {
                Ok(x) => attrs.xattrs = x,
                // The inode is held: no error here means it is gone.
                Err(e) => self.local_error("read the extended attributes of", path, e),
            }
        }
        self.memory.origins.made(path, (md.dev(), md.ino()));
        tracing::debug!(batch = self.batch_id, seq, path = %path, "set attributes");
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
        // Large files wait here for their signatures, in request order
        // (with the lane that carries them).
        let mut waiting: VecDeque<(RelPath, u64, usize, Option<Query>, u64)> = VecDeque::new();
        // Multiply-linked files: the one name per inode whose content is
        // sent; its other names are linked to it afterwards.
        let mut primaries: HashMap<(u64, u64), RelPath> = HashMap::new();
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
                Err(e) if unresolved(&e) => continue,
                Err(e) => {
                    self.local_error("stat", path, e);
                    continue;
                }
            };
            if md.nlink() > 1 {
                let inode = (md.dev(), md.ino());
                self.memory.links.note(inode, path);
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

    /// Takes on the lanes opened in the background once they are greeted
    /// (see `transport::open`). A path may then map to another lane, and
    /// two versions of it on two slaves would race: everything sent so far
    /// must be in place first. So a barrier, which awaits no other answer:
    /// only between files, with no signature outstanding.
    async fn adopt_lanes(&mut self) -> Result<(), ShipError> {
        if self.link.adopt_lanes().await? {
            tracing::debug!(
                batch = self.batch_id,
                lanes = self.link.lane_count(),
                "further lanes opened"
            );
            self.barrier().await?;
        }
        Ok(())
    }

    /// Links every known name of each multiply-linked file sent to the name
    /// its content went to: putting the new content in place (temp file,
    /// rename) made that name a new inode on the slave.
    async fn relink(&mut self, primaries: HashMap<(u64, u64), RelPath>) -> Result<(), ShipError> {
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
                self.relink_seqs.insert(seq);
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
    async fn ask_partial(
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
    async fn receive_and_send(
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
    async fn receive_signatures(
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
    async fn send_file(
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
            self.delta_sends.insert(seq, path.clone());
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
        self.memory.origins.made(path, (before.dev(), before.ino()));
        self.memory.owed.remove(&(before.dev(), before.ino()));
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
    async fn send_pieces(
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
    async fn abandon(
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

/// A piece ready to go: most pieces of a first copy are already a frame.
enum Outgoing {
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
fn prepare_piece(
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
fn hash_piece(file: &File, index: u64, size: u64, hasher: &mut blake3::Hasher) -> io::Result<()> {
    let start = index * PIECE_SIZE;
    let len = (size - start).min(PIECE_SIZE) as usize;
    let mut buf = Vec::new();
    read_piece(file, start, len, &mut buf)?;
    hasher.update(&buf);
    Ok(())
}

/// The stamp of a master file a slave's partial copy is matched against.
fn file_stamp(md: &fs::Metadata) -> FileStamp {
    FileStamp {
        size: md.size(),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
    }
}

/// A `Partial` request awaiting its answer.
#[derive(Debug, Clone, Copy)]
struct Query {
    seq: u64,
    stamp: FileStamp,
}

/// Reads exactly `len` bytes at `offset` into `buf`; a short file (truncated
/// while reading) is `UnexpectedEof`.
fn read_piece(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, offset)
}

/// The cheapest of `Same` (the slave's piece has the same signature), a
/// delta against `sig`, and the literal bytes.
fn encode_piece(piece: Vec<u8>, sig: Option<&Signature>) -> (PieceKind, Vec<u8>) {
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

/// How [`EntryOp::Prune`] and [`listing_digest`] name a type of entry.
fn node_kind(ft: fs::FileType) -> NodeKind {
    if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else {
        NodeKind::Other
    }
}

fn nix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn link_index_follows_renames_and_forgets_stale_names() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        fs::create_dir(b.join("d")).unwrap();
        fs::write(b.join("d/a"), b"x").unwrap();
        fs::hard_link(b.join("d/a"), b.join("c")).unwrap();
        let m = fs::metadata(b.join("c")).unwrap();
        let inode = (m.dev(), m.ino());
        let mut ix = LinkIndex::default();
        ix.note(inode, &p("d/a"));
        ix.note(inode, &p("c"));
        ix.note(inode, &p("c"));
        assert_eq!(ix.names, 2);
        fs::rename(b.join("d"), b.join("e")).unwrap();
        ix.rename(&p("d"), &p("e"));
        assert_eq!(ix.verified(b, inode), vec![p("c"), p("e/a")]);
        fs::remove_file(b.join("c")).unwrap();
        assert_eq!(ix.verified(b, inode), vec![p("e/a")]);
        assert_eq!(ix.names, 1);
    }

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

#[cfg(test)]
mod fault_tests;
#[cfg(any(test, feature = "hostile-kit"))]
pub mod hostile_kit;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod in_process;
#[cfg(test)]
mod local_slave_tests;

mod trust;
