//! One brick's worker: connect, catch up (History then Hybrid Crawl), then
//! follow the journal (Changelog Crawl), shipping batches and advancing
//! stime only after each `Committed`.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use super::heal::HealGate;
use super::rebalance::{self, Phase, Rechecked};
use super::sets::{SetStime, TAKEOVER_REPLAY};
use super::{BrickPlan, Live, SessionPlan};
use crate::brick::volume::{LocalBricks, VolumeView};
use crate::changelog::{ChangelogError, Hook, HookConfig};
use crate::crawl::journal::{self, ChangeSource};
use crate::crawl::{Batch, Entry, HybridCrawl};
use crate::proto::XattrScope;
use crate::relpath::RelPath;
use crate::session::Stime;
use crate::ship::{LaterRecords, ShipError, ShipMemory, ShipReport, Shipper};
use crate::state::{Counters, CrawlStatus, State, StateError, WorkerStatus};
use crate::transport::{SshLink, TransportError};

/// A file's ctime may lag the journal record that announced it by up to this
/// much (events are read asynchronously), so a Hybrid Crawl since stime looks
/// this much further back.
const CTIME_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("slave {target}: {source}")]
    Ship { target: String, source: ShipError },
    #[error("journal: {0}")]
    BrickJournal(#[from] ChangelogError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("journal hook of {brick} failed: {reason}")]
    Hook { brick: String, reason: String },
    #[error("Hybrid Crawl of {brick} stopped: {reason}")]
    Crawl { brick: String, reason: String },
    /// The master volume's topology is not the one the session was
    /// created for (see `monitor::watch_volume`).
    #[error(
        "{0}; georep does not follow such a change yet: stop, delete and create the session again"
    )]
    VolumeChanged(String),
}

/// The journal hook of a brick and what is known about its continuity; it
/// outlives worker restarts so a reconnect needs no full crawl.
#[derive(Default)]
pub struct BrickJournal {
    hook: Option<Hook>,
    /// When the running hook started: everything before it must come from
    /// old journal files or a Hybrid Crawl.
    started: Stime,
    /// Directories where a batch was cut off: they may hold the slave's
    /// temporary files, swept (pruned) on the next connection.
    sweep: BTreeSet<RelPath>,
    /// What the shipper remembers between batches.
    memory: ShipMemory,
}

impl BrickJournal {
    pub fn stop(&mut self) {
        if let Some(hook) = self.hook.take() {
            if let Err(e) = hook.stop() {
                tracing::warn!("stopping the journal hook: {e}");
            }
        }
    }
}

struct Ctx<'a> {
    plan: &'a SessionPlan,
    brick: &'a BrickPlan,
    state: &'a State,
    /// The stime of the brick's replica set (or of the brick alone).
    stime: &'a dyn SetStime,
    /// How far this worker has read its brick's journal; starts at stime
    /// (for a member of a replica set a little before it: see
    /// [`TAKEOVER_REPLAY`]).
    cursor: Option<Stime>,
    link: SshLink,
    batch_id: u64,
    /// Parent directories of the files of the batch being shipped.
    in_flight: BTreeSet<RelPath>,
    /// STATUS and CRAWL STATUS last written, so polling does not rewrite them.
    shown: Option<(WorkerStatus, CrawlStatus)>,
    /// Settings and pause flag, re-read every round.
    live: Live,
    /// Lent by the [`BrickJournal`], which outlives this connection.
    memory: ShipMemory,
    /// Whether a Hybrid Crawl asks the slave which files it has already
    /// (see [`Batch::mark_quick_check`]): not while the slave root was empty
    /// when this connection began and no crawl has completed since, since
    /// then a crawl walks each file once and the answer is almost always
    /// "no" (and a wrong "no" only costs bytes).
    quick_check: bool,
    /// A rebalance of the volume runs, or ended and this brick has not
    /// been re-checked since: nothing is removed on the slave and stime
    /// stays (see `monitor::rebalance`).
    holding: bool,
    /// When this worker began to hold.
    held_since: Option<Stime>,
    rechecked: Rechecked,
    /// The Active member of a replica set moves the set's stime only as
    /// far as the other members' heals allow (see `monitor::heal`).
    heal: Option<HealGate>,
    /// Why stime waits for a heal, as last shown.
    heal_shown: Option<String>,
}

/// Runs until shutdown (Ok) or a failure (Err).
pub async fn run(
    plan: &SessionPlan,
    brick: &BrickPlan,
    state: &State,
    stime: &dyn SetStime,
    journal: &mut BrickJournal,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    state.set_worker(
        brick.brick_id,
        WorkerStatus::Initializing,
        CrawlStatus::NotApplicable,
    )?;
    if let Some(why) = plan.volume_changed.get() {
        return Err(WorkerError::VolumeChanged(why));
    }
    if let Some(err) = journal.hook.as_ref().and_then(|h| h.error()) {
        tracing::error!("journal hook failed: {err}; restarting it");
        journal.stop();
    }
    let own_journal = matches!(brick.source, ChangeSource::Notify(_));
    if !own_journal {
        // GlusterFS journals the brick itself: files closed before this
        // start are history.
        journal.started = Stime::now();
    }
    let hook_config = (own_journal && journal.hook.is_none()).then(|| HookConfig {
        brick: brick.brick.clone(),
        journal_dir: brick.journal_dir.clone(),
        rollover: plan.config.rollover(),
        exclude: brick.exclude.clone(),
    });
    let started = Stime::now();
    // The hook starts (a watch on every directory of the brick) while the
    // connection to the slave is made: nothing is read from the brick
    // before both are ready.
    let hook = async {
        let Some(config) = hook_config else {
            return Ok(None);
        };
        let hook = tokio::task::spawn_blocking(move || {
            let hook = Hook::start(config)?;
            // Close the first journal file (it holds the start-up gap) now,
            // so the healing Hybrid Crawl starts at once instead of a
            // rollover later.
            hook.rollover_now()?;
            Ok::<_, ChangelogError>(hook)
        })
        .await
        .map_err(|e| WorkerError::Hook {
            brick: brick.brick.display().to_string(),
            reason: e.to_string(),
        })??;
        Ok::<_, WorkerError>(Some(hook))
    };
    let (hook, connected) = tokio::join!(hook, plan.connect());
    if let Some(hook) = hook? {
        *journal = BrickJournal {
            hook: Some(hook),
            started,
            sweep: std::mem::take(&mut journal.sweep),
            memory: std::mem::take(&mut journal.memory),
        };
    }
    let (conn, link) = connected?;
    state.set_last_error(brick.brick_id, None)?;
    let quick_check = !link.hello().root_empty;
    let cursor = match (&brick.set, stime.stime()?) {
        (Some(_), Some(s)) => Some(s.minus(TAKEOVER_REPLAY)),
        (_, s) => s,
    };
    let mut ctx = Ctx {
        plan,
        brick,
        state,
        stime,
        cursor,
        link,
        batch_id: 0,
        in_flight: BTreeSet::new(),
        shown: None,
        live: plan.live(state),
        memory: std::mem::take(&mut journal.memory),
        quick_check,
        holding: false,
        held_since: None,
        rechecked: Rechecked::new(
            &crate::session::Home::new(plan.state_home.clone()).session_dir(plan.session_id),
        ),
        heal: heal_gate(plan, brick),
        heal_shown: None,
    };
    if let Some(r) = plan.rebalance.latest().filter(|r| !r.running) {
        // A brick's first sync walks all of it: what an earlier rebalance
        // moved is taken in.
        if stime.stime()?.is_none() {
            mark_rechecked(&ctx, &r.task);
        }
    }
    // A rebalance that runs, or ended unchecked, comes before the sweep's
    // prunes.
    let mut result = follow_rebalance(&mut ctx).await;
    if result.is_ok() {
        result = sweep(&mut ctx, &mut journal.sweep).await;
    }
    if result.is_ok() {
        result = follow(&mut ctx, journal, shutdown).await;
    }
    journal.sweep.append(&mut ctx.in_flight);
    journal.memory = std::mem::take(&mut ctx.memory);
    ctx.link.close().await;
    conn.close().await;
    result
}

/// Prunes the directories where an earlier batch was cut off, so no
/// temporary file of a dead slave process stays behind.
async fn sweep(ctx: &mut Ctx<'_>, dirs: &mut BTreeSet<RelPath>) -> Result<(), WorkerError> {
    if dirs.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for dir in dirs.iter() {
        let Ok(names) = std::fs::read_dir(dir.under(&ctx.brick.brick)) else {
            continue; // gone on the master: the journal removes it
        };
        let keep = names
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        batch.push_entry(Entry::Prune {
            dir: dir.clone(),
            keep,
        });
    }
    tracing::info!(
        dirs = dirs.len(),
        "sweeping directories of a batch that was cut off"
    );
    ship(ctx, &batch, None).await?;
    dirs.clear();
    Ok(())
}

fn stime_of(ctx: &Ctx<'_>) -> Result<Option<Stime>, WorkerError> {
    Ok(ctx.stime.stime()?)
}

async fn follow(
    ctx: &mut Ctx<'_>,
    journal: &mut BrickJournal,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    // Listing the journal directory is cheap, and a rollover is asked for
    // only when the hook has records: polling often keeps the time from a
    // change to its shipment short.
    let poll = (ctx.plan.config.rollover() / 50)
        .clamp(Duration::from_millis(10), Duration::from_millis(100));
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if let Some(why) = ctx.plan.volume_changed.get() {
            return Err(WorkerError::VolumeChanged(why));
        }
        if let Some(err) = journal.hook.as_ref().and_then(|h| h.error()) {
            return Err(WorkerError::Hook {
                brick: ctx.brick.brick.display().to_string(),
                reason: err,
            });
        }
        ctx.live = ctx.plan.live(ctx.state);
        if ctx.live.paused {
            // The hook keeps recording; stime stays, so resume ships it all.
            show(ctx, WorkerStatus::Paused, CrawlStatus::NotApplicable)?;
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        follow_rebalance(ctx).await?;
        follow_heal(ctx)?;
        send_handed(ctx).await?;
        // Close what the hook has gathered so far instead of waiting for the
        // next timed rollover: whenever the worker is free, changes go out
        // within a poll interval. While it is busy shipping, files still roll
        // over at `rollover-time` and are batched together.
        if let Some(hook) = journal.hook.as_ref().filter(|h| h.has_records()) {
            hook.rollover_now()?;
        }
        // Read the hook's watermark before listing files, so a file closed
        // in between is seen next round rather than skipped.
        let closed = journal.hook.as_ref().map(|h| h.closed_through());
        if drain_journal(ctx, journal.started, journal.hook.as_ref()).await? {
            continue;
        }
        show(ctx, WorkerStatus::Active, CrawlStatus::Changelog)?;
        // Quiet journal: stime may follow the hook's watermark, but only once
        // the gap that every hook start records (changes made before it ran)
        // has been healed; until then stime is below the hook's start.
        let healed = stime_of(ctx)?.is_some_and(|s| s >= journal.started);
        if let (Some(closed), true) = (closed, healed) {
            advance(ctx, closed)?;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Holds removals and stime while the volume is rebalanced, and re-checks
/// the brick once the rebalance has ended (see `monitor::rebalance`).
async fn follow_rebalance(ctx: &mut Ctx<'_>) -> Result<(), WorkerError> {
    let rechecked = ctx.rechecked.get(ctx.brick.brick_id);
    match rebalance::phase(ctx.plan.rebalance.latest(), rechecked.as_deref()) {
        Phase::Quiet => Ok(()),
        Phase::Running(r) => {
            if !ctx.holding {
                tracing::info!(task = %r.task, "the volume is being rebalanced: removals on the slave and stime wait until it has ended");
                let why = format!(
                    "volume {} is being rebalanced ({}): nothing is removed on the slave and LAST_SYNCED waits until it has ended and this brick is re-checked",
                    ctx.plan.master_vol, r.status
                );
                ctx.state.set_last_error(ctx.brick.brick_id, Some(&why))?;
                ctx.holding = true;
                ctx.held_since = Some(Stime::now());
            }
            Ok(())
        }
        Phase::Ended(r) => {
            tracing::info!(task = %r.task, status = %r.status, "the volume's rebalance ended: re-checking the brick");
            ctx.holding = false;
            show(ctx, WorkerStatus::Active, CrawlStatus::Hybrid)?;
            let walked_from = Stime::now().minus(CTIME_MARGIN);
            // What changed since the hold began (a moved file is a new
            // inode on its new brick) is compared by content, as a delta
            // against the slave's copy: a file written while it moved can
            // have the size and mtime the slave holds but not its bytes.
            // The rebalance began at most a poll before the hold.
            let since = [stime_of(ctx)?, ctx.held_since]
                .into_iter()
                .flatten()
                .min()
                .map(|s| s.minus(CTIME_MARGIN + rebalance::POLL * 2));
            let quick = std::mem::replace(&mut ctx.quick_check, false);
            let walked = hybrid(ctx, RelPath::root(), since).await;
            ctx.quick_check = quick;
            walked?;
            ctx.held_since = None;
            // Everything changed before the walk is on the slave now; the
            // journal read since the hold began was shipped as it went.
            let to = ctx.cursor.map_or(walked_from, |c| c.min(walked_from));
            advance(ctx, to)?;
            mark_rechecked(ctx, &r.task);
            ctx.state.set_last_error(ctx.brick.brick_id, None)?;
            Ok(())
        }
    }
}

fn mark_rechecked(ctx: &Ctx<'_>, task: &str) {
    if let Err(e) = ctx.rechecked.set(ctx.brick.brick_id, task) {
        // Then the next start re-checks the brick once more: only a cost.
        tracing::warn!("recording that the brick was re-checked after rebalance {task}: {e}");
    }
}

/// Sends the files another brick's worker handed to this one (a
/// rebalance moved them here without a changelog record; see
/// `ship::ShipReport::handed_off`). On failure they stay handed.
async fn send_handed(ctx: &mut Ctx<'_>) -> Result<(), WorkerError> {
    let handed = ctx.plan.volume_bricks.take_handed(&ctx.brick.brick);
    if handed.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for path in &handed {
        batch.push_data(path.clone());
    }
    // Moved by a rebalance: the slave may hold them already.
    if ctx.quick_check {
        batch.mark_quick_check();
    }
    if let Err(e) = ship(ctx, &batch, None).await {
        for path in handed {
            ctx.plan.volume_bricks.hand(ctx.brick.brick.clone(), path);
        }
        return Err(e);
    }
    Ok(())
}

/// Ships one batch of journal files after stime; false if there were none.
/// Files that end before `hook_started` were left by an earlier run (History
/// Crawl). A gap in the journal (the hook records one whenever it starts, so
/// also on the very first start) is healed by a Hybrid Crawl right after.
async fn drain_journal(
    ctx: &mut Ctx<'_>,
    hook_started: Stime,
    hook: Option<&Hook>,
) -> Result<bool, WorkerError> {
    let stime = stime_of(ctx)?;
    let max = ctx.live.config.changelog_batch_size;
    let source = &ctx.brick.source;
    let after = ctx.cursor.or(stime).unwrap_or_default();
    let Some(jb) = tokio::task::block_in_place(|| journal::next_batch(source, after, max))? else {
        return Ok(false);
    };
    let crawl = if jb.through <= hook_started {
        CrawlStatus::History
    } else {
        CrawlStatus::Changelog
    };
    show(ctx, WorkerStatus::Active, crawl)?;
    let brick = ctx.brick;
    let later = hook.map(|hook| JournalAfter {
        hook,
        source: &brick.source,
        through: jb.through,
    });
    ship(
        ctx,
        &jb.batch,
        later.as_ref().map(|l| l as &dyn LaterRecords),
    )
    .await?;
    let mut through = jb.through;
    if let Some(gap) = &jb.gap {
        let reason = &gap.reason;
        // Lost events (overflow, watch limit) are the operator's business;
        // the gap of a hook start, or of a write through a hard link that
        // is gone, is routine.
        let routine = [
            crate::changelog::START_GAP,
            crate::changelog::LINK_GAP,
            crate::changelog::glusterfs::INDEX_GAP,
        ]
        .iter()
        .any(|r| reason.starts_with(r));
        if routine {
            tracing::info!(brick = %ctx.brick.brick.display(), "journal gap ({reason}); running a Hybrid Crawl");
        } else {
            tracing::warn!(brick = %ctx.brick.brick.display(), "journal gap ({reason}); running a Hybrid Crawl");
            let shown = format!("journal gap, healed by a Hybrid Crawl: {reason}");
            ctx.state.set_last_error(ctx.brick.brick_id, Some(&shown))?;
        }
        show(ctx, WorkerStatus::Active, CrawlStatus::Hybrid)?;
        let walked_from = Stime::now();
        // A gap with `since` (unwatched directories) may hide changes older
        // than stime: the crawl must look back to it.
        let since = match (stime, gap.since) {
            (Some(s), Some(g)) => Some(s.min(g)),
            (s, _) => s,
        };
        hybrid(ctx, RelPath::root(), since.map(|s| s.minus(CTIME_MARGIN))).await?;
        if stime.is_none() {
            // A full walk put on the slave everything changed before it
            // began: older journal files need no replay (a GlusterFS brick
            // may keep months of changelogs).
            through = through.max(walked_from.minus(CTIME_MARGIN));
        }
    }
    advance(ctx, through)?;
    if let Err(e) = ctx.brick.source.purge(through) {
        tracing::warn!("purging journal files: {e}");
    }
    Ok(true)
}

/// Walks `start` on the brick and ships everything changed since `since`.
async fn hybrid(
    ctx: &mut Ctx<'_>,
    start: RelPath,
    since: Option<Stime>,
) -> Result<(), WorkerError> {
    // Pruning makes the slave an exact image: deletions made while no hook
    // ran are in no journal, and on a first sync into a non-empty slave
    // directory (`create … force`) what the brick lacks goes too.
    let mut crawl = HybridCrawl::new(
        ctx.brick.brick.clone(),
        start.clone(),
        ctx.brick.exclude.clone(),
        since,
    );
    if !ctx.live.config.ignore_deletes && !ctx.holding {
        crawl = crawl.with_prune();
    }
    let max = ctx.live.config.changelog_batch_size;
    let started = ctx.state.crawl_begin(ctx.brick.brick_id)?;
    super::progress::CrawlScope {
        brick: ctx.brick.brick.clone(),
        start: start.clone(),
        exclude: ctx.brick.exclude.clone(),
        filter: ctx.live.filter.clone(),
        since,
    }
    .count_in_background(ctx.plan.state_home.clone(), ctx.brick.brick_id, started);
    // The walk runs one batch ahead on its own thread, so the next batch is
    // ready when the slave has committed this one. (If shipping fails, the
    // receiver goes away and the walk stops at its next batch.)
    let (tx, mut batches) = tokio::sync::mpsc::channel::<(Batch, Vec<String>)>(1);
    let walker = tokio::task::spawn_blocking(move || {
        while let Some(batch) = crawl.next_batch(max) {
            if tx.blocking_send((batch, crawl.take_errors())).is_err() {
                break;
            }
        }
    });
    while let Some((mut batch, errors)) = batches.recv().await {
        if ctx.quick_check {
            batch.mark_quick_check();
        }
        let report = ship(ctx, &batch, None).await?;
        ctx.state
            .crawl_add(ctx.brick.brick_id, report.data, report.bytes_sent)?;
        for e in errors {
            tracing::warn!("{e}");
        }
    }
    // The channel also closes if the walk died: then it is not complete,
    // and stime must not move.
    walker.await.map_err(|e| WorkerError::Crawl {
        brick: ctx.brick.brick.display().to_string(),
        reason: e.to_string(),
    })?;
    ctx.state.crawl_end(ctx.brick.brick_id)?;
    ctx.quick_check = true;
    Ok(())
}

/// The journal after a batch of georep's own hook. Closing the hook's
/// current file first puts every change made so far in a closed file (a
/// rollover waits for a marker that comes after all earlier events); while
/// some directory has no watch it may close nothing, and the answer then
/// misses recent records, which only means those names are pruned.
struct JournalAfter<'h> {
    hook: &'h Hook,
    source: &'h ChangeSource,
    through: Stime,
}

impl LaterRecords for JournalAfter<'_> {
    fn removed(&self) -> Option<HashSet<RelPath>> {
        tokio::task::block_in_place(|| {
            self.hook.rollover_now().ok()?;
            journal::removed_after(self.source, self.through).ok()
        })
    }
}

async fn ship(
    ctx: &mut Ctx<'_>,
    batch: &Batch,
    later: Option<&dyn LaterRecords>,
) -> Result<ShipReport, WorkerError> {
    // `exclude` and `ignore-deletes` (crawl::filter); no removal while a
    // rebalance holds them.
    let filtered = if ctx.holding {
        let mut filter = ctx.live.filter.clone();
        filter.ignore_deletes = true;
        filter.apply(batch)
    } else {
        ctx.live.filter.apply(batch)
    };
    let batch = filtered.as_ref().unwrap_or(batch);
    if batch.is_empty() {
        return Ok(ShipReport::default());
    }
    ship_now(ctx, batch, later).await
}

/// Ships `batch` as it is (even empty) and counts what it did.
async fn ship_now(
    ctx: &mut Ctx<'_>,
    batch: &Batch,
    later: Option<&dyn LaterRecords>,
) -> Result<ShipReport, WorkerError> {
    ctx.batch_id += 1;
    ctx.in_flight
        .extend(batch.data().iter().map(|p| p.parent().unwrap_or_default()));
    let brick: &Path = &ctx.brick.brick;
    let bricks = ctx.plan.volume_bricks.seen_from(brick);
    let volume = (!bricks.is_empty()).then(|| LocalBricks::open(&bricks));
    // `compression` is live: taken for each batch.
    ctx.link.set_compression(ctx.live.config.compression());
    let committed = ctx.stime.stime()?;
    let mut shipper = Shipper::new(&mut ctx.link, brick, &mut ctx.memory, ctx.batch_id);
    shipper.xattrs = XattrScope {
        user: ctx.live.config.sync_xattrs,
        acls: ctx.live.config.sync_acls,
    };
    shipper.exclude = ctx.brick.exclude.clone();
    shipper.filter = ctx.live.filter.clone();
    shipper.prune_touched = !ctx.live.config.ignore_deletes && !ctx.holding;
    shipper.gluster_brick = ctx.brick.gluster;
    shipper.later = later;
    shipper.volume = volume.as_ref().map(|v| v as &dyn VolumeView);
    shipper.brick_stime = committed.map(|s| (brick_name(brick), s.nanos()));
    let report = shipper
        .ship(batch)
        .await
        .map_err(|source| WorkerError::Ship {
            target: ctx.plan.target.to_string(),
            source,
        })?;
    ctx.in_flight.clear();
    for (brick, path) in &report.handed_off {
        ctx.plan.volume_bricks.hand(brick.clone(), path.clone());
    }
    ctx.state.add_counters(
        ctx.brick.brick_id,
        Counters {
            bytes_sent: report.bytes_sent,
            entries: report.entries,
            data: report.data,
            meta: report.meta,
            failures: (report.failures.len() + report.local_errors.len()) as u64,
        },
    )?;
    if let Some(f) = report.failures.first() {
        ctx.state
            .set_last_error(ctx.brick.brick_id, Some(&f.message))?;
    } else if let Some(e) = report.local_errors.first() {
        ctx.state.set_last_error(ctx.brick.brick_id, Some(e))?;
    }
    Ok(report)
}

/// How the slave knows a brick: `<node>:<path>`.
fn brick_name(brick: &Path) -> String {
    let node = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{node}:{}", brick.display())
}

/// Records the worker's STATUS and CRAWL STATUS if they changed.
fn show(ctx: &mut Ctx<'_>, status: WorkerStatus, crawl: CrawlStatus) -> Result<(), WorkerError> {
    if ctx.shown != Some((status, crawl)) {
        tracing::info!("worker {status}, {crawl}");
        ctx.state.set_worker(ctx.brick.brick_id, status, crawl)?;
        ctx.shown = Some((status, crawl));
    }
    Ok(())
}

/// Moves stime forward to `to` (never back): the journal is read on from
/// there. While a rebalance holds it, only the reading moves on; while the
/// replica set heals what this brick missed, stime stays below the heal.
fn advance(ctx: &mut Ctx<'_>, to: Stime) -> Result<(), WorkerError> {
    ctx.cursor = ctx.cursor.max(Some(to));
    if ctx.holding {
        return Ok(());
    }
    let to = match &mut ctx.heal {
        None => Some(to),
        Some(gate) => {
            if let Some(check) = ctx.plan.heals.latest() {
                gate.observe(&check);
            }
            gate.bound(ctx.cursor).map(|b| b.min(to))
        }
    };
    if let Some(to) = to {
        ctx.stime.advance(to)?;
    }
    Ok(())
}

/// The heal gate of a brick that can be its replica set's Active member.
fn heal_gate(plan: &SessionPlan, brick: &BrickPlan) -> Option<HealGate> {
    let set = brick.set.as_ref().filter(|s| !s.arbiter)?;
    plan.heals
        .gate(plan.topology.as_ref()?, &set.name, &brick.brick)
}

/// Lets stime follow the reading once the set's heals allow it (no new
/// changelog may come to move it), and shows why it waits.
fn follow_heal(ctx: &mut Ctx<'_>) -> Result<(), WorkerError> {
    if ctx.heal.is_none() {
        return Ok(());
    }
    if let Some(cursor) = ctx.cursor {
        advance(ctx, cursor)?;
    }
    let waiting = ctx.heal.as_ref().and_then(HealGate::waiting);
    if waiting != ctx.heal_shown && !ctx.holding {
        match &waiting {
            Some(why) => tracing::info!("{why}"),
            None => tracing::info!("the replica set's heals are shipped: LAST_SYNCED moves on"),
        }
        ctx.state
            .set_last_error(ctx.brick.brick_id, waiting.as_deref())?;
        ctx.heal_shown = waiting;
    }
    Ok(())
}
