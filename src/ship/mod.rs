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
//! One phase a file: `entries` (journal order), `content` (files, pieces,
//! resumes, hard links put back), `attrs`, `heals` (a diverged slave),
//! `listings` (listing and subtree digests, prunes), `memory` (what a
//! worker keeps between batches), `trust` (checks of what the slave says),
//! `ledger` (the requests whose replies matter, and where each stray reply
//! goes). Here: the shipper, the order of the phases, the waits on every
//! lane (barrier, commit), and acting on what the ledger routes.
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
use crate::brick::volume::{is_dht_link, VolumeView};
use crate::brick::Inode;
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

mod attrs;
mod content;
mod entries;
mod heals;
mod ledger;
mod listings;
mod memory;

use attrs::*;
use content::*;
use ledger::{Awaiting, Ledger, Routed};
use listings::*;
pub use memory::{LinkIndex, ShipMemory, LINK_INDEX_MAX};

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
    /// Files of the batch that another brick of the volume holds now (a
    /// rebalance moved them, unrecorded, before this brick sent them), by
    /// that brick: its worker sends them.
    pub handed_off: Vec<(std::path::PathBuf, RelPath)>,
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
    /// The whole volume, when the brick is one of several of a distributed
    /// volume: prunes keep, and removals spare, what another brick holds
    /// (see [`VolumeView`]).
    pub volume: Option<&'a dyn VolumeView>,
    /// The brick (`<node>:<path>`) and its stime (ns) as this batch
    /// begins: sent before the commit, so the slave records how far the
    /// brick got (see `proto::Request::Stime`).
    pub brick_stime: Option<(String, i64)>,
    /// What `later` said last, by parent directory (see
    /// [`Shipper::refresh_later`]).
    removed_later: HashMap<RelPath, Vec<std::ffi::OsString>>,
    /// The data paths of the batch being shipped: never kept for `later`.
    batch_data: HashSet<RelPath>,
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
    /// The requests whose replies matter, by sequence number (see
    /// [`Ledger`]).
    ledger: Ledger,
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
            volume: None,
            brick_stime: None,
            removed_later: HashMap::new(),
            batch_data: HashSet::new(),
            content_sent: HashSet::new(),
            report: ShipReport::default(),
            transient: Vec::new(),
            heal_paths: Vec::new(),
            heal_quick: Vec::new(),
            heal_failures: Vec::new(),
            ledger: Ledger::default(),
            renamed_to: Vec::new(),
            touched_dirs: std::collections::BTreeSet::new(),
            attrs_due: Vec::new(),
            literal_due: BTreeSet::new(),
            literal: HashSet::new(),
            listings_due: Vec::new(),
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
            self.memory.origins.confirmed(&path, Inode::of(&md));
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
        let batch = self.batch_id;
        if let Some((brick, stime)) = self.brick_stime.take() {
            let link = self.link.lane(0);
            link.send(&Request::Stime { brick, stime }).await?;
        }
        self.on_every_lane(|_| Request::Commit { batch }).await?;
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
        match self.ledger.route(reply)? {
            Routed::NotRelinked(f) => {
                tracing::debug!(path = %f.path, "not relinked: {}", f.message);
            }
            Routed::Heal {
                mut paths,
                failure: f,
            } => {
                // The slave never had the source, or its tree is not what
                // the journal expects: send the paths concerned whole.
                tracing::debug!(path = %f.path, kind = ?f.kind, "healing: {}", f.message);
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
            }
            Routed::Literal { path, failure: f } => {
                // The slave's copy changed between its signature and the
                // delta (or the delta was computed against another copy):
                // its temp file is gone and its copy untouched, so sending
                // the bytes themselves puts it right.
                tracing::debug!(path = %f.path, "delta not applied, resending whole: {}", f.message);
                self.literal_due.insert(path);
            }
            Routed::ListingDiffers(dir) => self.listings_differ.push(dir),
            Routed::Transient(f) => self.transient.push(f),
            Routed::Failed(f) => {
                tracing::warn!(path = %f.path, kind = ?f.kind, "{}", f.message);
                self.report.failures.push(f);
            }
        }
        Ok(())
    }

    /// Waits until every lane has done everything sent so far (files
    /// received on a lane are in place afterwards).
    async fn barrier(&mut self) -> Result<(), ShipError> {
        self.ledger.settle();
        self.on_every_lane(|link| Request::Barrier {
            id: link.next_seq(),
        })
        .await
    }

    /// Sends every lane the request `make` gives for it, then waits for
    /// each lane's answer to it (see [`ledger::answers`]), absorbing the
    /// other replies on the way.
    async fn on_every_lane(
        &mut self,
        mut make: impl FnMut(&mut SlaveLink<S>) -> Request,
    ) -> Result<(), ShipError> {
        let lanes = self.link.lane_count();
        let mut sent = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            let request = make(self.link);
            let link = self.link.lane(lane);
            link.send(&request).await?;
            link.flush().await?;
            sent.push(request);
        }
        for (lane, request) in sent.iter().enumerate() {
            loop {
                let reply = self.link.lane(lane).recv().await?;
                if ledger::answers(request, &reply) {
                    break;
                }
                self.absorb(reply)?;
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
#[cfg(test)]
mod volume_tests;

mod trust;
