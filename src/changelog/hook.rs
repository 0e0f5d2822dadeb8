//! The journal hook: notify events of one brick → records → rolling files.
//!
//! Threads: notify's inotify thread hands each event to a closure that
//! `try_send`s it into a bounded channel (it never blocks, so notify never
//! waits for us; when the channel is full the event is counted as dropped and
//! a Gap is written). One std thread, the worker, owns the watcher, the open
//! file and all state: it turns events into records, answers
//! [`Hook::rollover_now`] / [`Hook::stop`] (sent through the same channel,
//! so they are ordered after the events already delivered) and rolls over on
//! a timer. No async runtime is needed.
//!
//! What notify 8's inotify backend emits (read from its `inotify.rs`):
//! * a rename inside the watched tree gives `Name(From)` (tracker = cookie),
//!   then `Name(To)` and `Name(Both)` `[from, to]` with the same tracker,
//!   delivered together. notify remembers only the last `From`.
//! * a move out gives only `Name(From)`; a move in only `Name(To)`.
//! * `MOVE_SELF` of a watched root gives `Name(From)` *without* tracker.
//! * new directories (created or moved in) are watched by notify itself,
//!   after it has delivered the whole batch of events that announced them.
//!   Any request to the watcher (we use `configure`) is served by the same
//!   event-loop thread after that batch, so it is a barrier: once it returns,
//!   the new directory is watched and a scan of it misses nothing.
//! * a moved directory is unwatched at its old name and re-watched at the new
//!   one after the batch; changes inside it in between are lost or reported
//!   under the old name. So after a directory rename we rescan the new name
//!   for entries whose ctime is not older than the moment notify read the
//!   rename (less [`RENAME_CTIME_MARGIN`]): notify stamps nothing, so the
//!   hook's handler stamps every event as it receives it.
//!
//! Ordering of scans. A scan of a new or renamed directory sees the tree as
//! it is when the scan runs, while events of changes made before that moment
//! may still be on their way (in the kernel queue, in notify's thread, in our
//! channel). Journalling the scan at once would put a later state before
//! earlier changes, and replaying those afterwards can undo it on the slave
//! (a rename queued behind the scan moves the scanned file's *new* content to
//! the rename's destination). So each scan first drops a marker into the
//! same inotify instance: it creates and removes a symlink `o.<n>` in a
//! private directory of the journal ([`ORDER_DIR`]), then scans, and holds
//! the scan's records back until the marker's own `Create` event arrives.
//! One inotify instance queues all its events in one FIFO, and notify hands
//! them to us in that order, so by then every event of a change made before
//! the scan began has been journalled: the scan lands exactly at the point
//! of the event stream where it was taken. Events of changes made during or
//! after the scan come after it, and replaying them on top of the scanned
//! state is what the slave does anyway (every record is applied from the
//! brick as it is at shipping time). A marker that cannot arrive (events
//! dropped or the queue overflowed) releases the held scans; that case is a
//! Gap, healed by a Hybrid Crawl. Every rollover drops a marker too, as a
//! barrier for the events of changes made before it. A rollover waits (at most
//! [`MARKER_WAIT`]) for the held scans, so a closed file never leaves out a
//! scan taken before it was closed.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, INotifyWatcher, RecursiveMode, Watcher};

use super::format::OpenFile;
use super::{ChangelogError, Record, CURRENT_FILE};
use crate::relpath::RelPath;
use crate::session::Stime;

/// Default interval between rollovers.
pub const DEFAULT_ROLLOVER: Duration = Duration::from_secs(1);

/// Capacity of the channel from notify to the worker, in events. Memory stays
/// bounded; when it is full, events are dropped and a Gap is written.
const CHANNEL_CAP: usize = 64 * 1024;

/// For this long after a directory rename, changes notify reports under
/// the old name are recorded under the new one (see [`Worker::unstale`]).
pub const RENAME_RESCAN_MARGIN: Duration = Duration::from_secs(10);

/// After a directory rename, entries under the new name whose ctime is at
/// most this much older than the moment notify read the rename are recorded
/// again (see the module documentation): file-system timestamps come from a
/// coarse clock that may lag the one events are stamped with.
pub const RENAME_CTIME_MARGIN: Duration = Duration::from_secs(1);

/// How the Gap every hook start records begins (a routine gap, unlike
/// lost events).
pub const START_GAP: &str = "journal hook started";

/// Subdirectory of the journal directory where scan markers are made (see
/// the module documentation).
pub const ORDER_DIR: &str = ".order";

/// Longest a rollover waits for the markers of scans taken before it.
const MARKER_WAIT: Duration = Duration::from_secs(2);

/// Rollover interval while some directory has no watch (the inotify watch
/// limit was reached): every file then ends with a Gap whose crawl finds the
/// changes no event reported, so a short interval would crawl the brick
/// without pause.
pub const UNWATCHED_ROLLOVER: Duration = Duration::from_secs(10);

/// What the hook writes while directories beyond the watch limit have no
/// watch (each such rollover's Gap begins so).
pub const UNWATCHED_GAP: &str = "directories beyond fs.inotify.max_user_watches are not watched";

/// What the hook watches and where it writes.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The brick directory to journal.
    pub brick: PathBuf,
    /// Where changelog files go; outside the brick (if it is inside, it is
    /// excluded automatically).
    pub journal_dir: PathBuf,
    /// Time between rollovers; must be positive.
    pub rollover: Duration,
    /// Absolute directories inside the brick that are not journalled.
    pub exclude: Vec<PathBuf>,
}

impl HookConfig {
    /// A config with the default rollover and no exclusions.
    pub fn new(brick: impl Into<PathBuf>, journal_dir: impl Into<PathBuf>) -> Self {
        HookConfig {
            brick: brick.into(),
            journal_dir: journal_dir.into(),
            rollover: DEFAULT_ROLLOVER,
            exclude: Vec::new(),
        }
    }
}

type Reply = SyncSender<Result<(), String>>;

enum Msg {
    /// An event and when notify handed it over.
    Event(Stime, notify::Result<notify::Event>),
    Rollover(Reply),
    Stop(Reply),
    /// Events handled back to back, as if one inotify read had delivered
    /// them: tests need events to be queued together, which separate sends
    /// cannot promise (the worker may act on the first before the next).
    #[cfg(test)]
    Events(Vec<(Stime, notify::Result<notify::Event>)>),
}

/// A running journal hook; see the module documentation.
pub struct Hook {
    brick: PathBuf,
    tx: SyncSender<Msg>,
    closed: Arc<AtomicI64>,
    /// The current file holds records (see [`Hook::has_records`]).
    recorded: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("brick", &self.brick)
            .field("closed_through", &self.closed_through())
            .finish_non_exhaustive()
    }
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

impl Hook {
    /// Starts watching; returns once the watch on the whole existing tree is
    /// in place (so anything changed after `start` returns is journalled).
    /// The first file begins with a Gap: what changed before is unknown.
    pub fn start(cfg: HookConfig) -> Result<Hook, ChangelogError> {
        let md = fs::metadata(&cfg.brick)
            .map_err(|e| ChangelogError::io("open brick", &cfg.brick, e))?;
        if !md.is_dir() {
            return Err(ChangelogError::Watch {
                brick: cfg.brick.clone(),
                reason: "not a directory".into(),
            });
        }
        if cfg.rollover.is_zero() {
            return Err(ChangelogError::Watch {
                brick: cfg.brick.clone(),
                reason: "rollover interval must be positive".into(),
            });
        }
        let brick = canonical(&cfg.brick);
        fs::create_dir_all(&cfg.journal_dir)
            .map_err(|e| ChangelogError::io("create journal directory", &cfg.journal_dir, e))?;
        let journal = canonical(&cfg.journal_dir);
        let mut exclude: Vec<PathBuf> = cfg.exclude.iter().map(|p| canonical(p)).collect();
        if journal.starts_with(&brick) {
            exclude.push(journal.clone());
        }
        let order_dir = journal.join(ORDER_DIR);
        // Markers of an earlier run are meaningless now.
        let _ = fs::remove_dir_all(&order_dir);
        fs::create_dir(&order_dir)
            .map_err(|e| ChangelogError::io("create marker directory", &order_dir, e))?;

        let mut why = format!(
            "{START_GAP} for {}: changes made while no hook ran are not journalled",
            brick.display()
        );
        let stale = journal.join(CURRENT_FILE);
        match fs::remove_file(&stale) {
            Ok(()) => why.push_str("; an unclosed file of an earlier run was discarded"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ChangelogError::io("delete stale", &stale, e)),
        }

        let t0 = Stime::now();
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAP);
        let dropped = Arc::new(AtomicU64::new(0));
        let handler = {
            let tx = tx.clone();
            let dropped = dropped.clone();
            move |ev: notify::Result<notify::Event>| {
                // notify 8 always watches IN_OPEN (no event mask before
                // notify 9), and every file the shipper reads raises one:
                // the worker ignores them, so they never cross the channel.
                if matches!(&ev, Ok(e) if matches!(e.kind, EventKind::Access(AccessKind::Open(_))))
                {
                    return;
                }
                match tx.try_send(Msg::Event(Stime::now(), ev)) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                    Err(TrySendError::Full(_)) => {
                        dropped.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        };
        let watch_err = |e: notify::Error| {
            ChangelogError::Watch {
            brick: brick.clone(),
            reason: match e.kind {
                notify::ErrorKind::MaxFilesWatch => format!(
                    "{e} (raise fs.inotify.max_user_watches; the brick needs one watch per directory)"
                ),
                _ => e.to_string(),
            },
        }
        };
        let mut watcher = INotifyWatcher::new(
            handler,
            notify::Config::default().with_follow_symlinks(false),
        )
        .map_err(watch_err)?;
        // The marker directory first: without its events no rollover can
        // close, while a brick directory without a watch is only crawled.
        if !order_dir.starts_with(&brick) {
            watcher
                .watch(&order_dir, RecursiveMode::NonRecursive)
                .map_err(watch_err)?;
        }
        // Past the watch limit the hook still runs: the directories left
        // without a watch are crawled at every rollover (see `rollover`).
        let unwatched_since = match watcher.watch(&brick, RecursiveMode::Recursive) {
            Ok(()) => None,
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                why.push_str(&format!("; {UNWATCHED_GAP} ({e})"));
                Some(t0)
            }
            Err(e) => return Err(watch_err(e)),
        };

        let closed = Arc::new(AtomicI64::new(t0.nanos()));
        let recorded = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let mut worker = Worker {
            brick: brick.clone(),
            journal,
            rollover: cfg.rollover,
            exclude,
            watcher,
            rx,
            dropped,
            closed: closed.clone(),
            recorded: recorded.clone(),
            file: None,
            interval_start: t0,
            last_end: t0,
            last: None,
            pending_from: None,
            moved: Vec::new(),
            order_dir,
            next_marker: 0,
            held: VecDeque::new(),
            capture: None,
            deferred: Vec::new(),
            stop: None,
            unwatched_since,
            last_cover: None,
        };
        worker.gap(why)?;
        let thread = {
            let error = error.clone();
            std::thread::Builder::new()
                .name("georep-journal".into())
                .spawn(move || worker.run(&error))
                .map_err(|e| ChangelogError::Hook {
                    brick: brick.clone(),
                    reason: format!("cannot start thread: {e}"),
                })?
        };
        Ok(Hook {
            brick,
            tx,
            closed,
            recorded,
            error,
            thread: Some(thread),
        })
    }

    /// Every event that happened before this time is in a closed file
    /// (initially the start time; advanced at each rollover, even when the
    /// interval had no records).
    pub fn closed_through(&self) -> Stime {
        Stime(self.closed.load(Ordering::SeqCst))
    }

    /// Whether the current file holds records: whether closing it now
    /// ([`Hook::rollover_now`]) gives the worker anything to ship. Events
    /// not read yet are not counted; the timed rollovers still close files.
    pub fn has_records(&self) -> bool {
        self.recorded.load(Ordering::SeqCst)
    }

    /// Closes the current file now (at shutdown and in tests). While some
    /// directory has no watch, at most once per [`UNWATCHED_ROLLOVER`]: a
    /// request within it returns without closing anything.
    pub fn rollover_now(&self) -> Result<(), ChangelogError> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx.send(Msg::Rollover(rtx)).map_err(|_| self.dead())?;
        match rrx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(ChangelogError::Hook {
                brick: self.brick.clone(),
                reason,
            }),
            Err(_) => Err(self.dead()),
        }
    }

    /// A fatal hook error (e.g. journal directory unwritable), if any. After
    /// one, the hook has stopped and `closed_through` no longer advances.
    pub fn error(&self) -> Option<String> {
        match self.error.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Final rollover, then stop.
    pub fn stop(mut self) -> Result<(), ChangelogError> {
        self.shutdown()
    }

    fn dead(&self) -> ChangelogError {
        ChangelogError::Hook {
            brick: self.brick.clone(),
            reason: self
                .error()
                .unwrap_or_else(|| "the journal thread is not running".into()),
        }
    }

    fn shutdown(&mut self) -> Result<(), ChangelogError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let (rtx, rrx) = mpsc::sync_channel(1);
        let answer = match self.tx.send(Msg::Stop(rtx)) {
            Ok(()) => rrx.recv().ok(),
            Err(_) => None,
        };
        let joined = thread.join();
        match (answer, joined) {
            (_, Err(_)) => Err(ChangelogError::Hook {
                brick: self.brick.clone(),
                reason: "the journal thread panicked".into(),
            }),
            (Some(Ok(())), Ok(())) => Ok(()),
            (Some(Err(reason)), Ok(())) => Err(ChangelogError::Hook {
                brick: self.brick.clone(),
                reason,
            }),
            (None, Ok(())) => Err(self.dead()),
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("{e}");
        }
    }
}

/// The worker thread's state; see the module documentation.
struct Worker {
    brick: PathBuf,
    journal: PathBuf,
    rollover: Duration,
    exclude: Vec<PathBuf>,
    watcher: INotifyWatcher,
    rx: Receiver<Msg>,
    dropped: Arc<AtomicU64>,
    closed: Arc<AtomicI64>,
    recorded: Arc<AtomicBool>,
    file: Option<OpenFile>,
    interval_start: Stime,
    last_end: Stime,
    /// Last record of the current file, to coalesce duplicates.
    last: Option<Record>,
    /// A `Name(From)` waiting for its `To`/`Both`: (tracker, path).
    pending_from: Option<(usize, PathBuf)>,
    /// Directories renamed recently: (old full path, new full path, when).
    /// notify reports changes inside them under the old name until it has
    /// re-watched them; see [`Worker::unstale`].
    moved: Vec<(PathBuf, PathBuf, Instant)>,
    /// Where scan markers are made ([`ORDER_DIR`]).
    order_dir: PathBuf,
    next_marker: u64,
    /// Records of scans waiting for their marker's event, oldest first.
    held: VecDeque<(u64, Vec<Record>)>,
    /// While a scan runs, its records go here instead of the file.
    capture: Option<Vec<Record>>,
    deferred: Vec<Reply>,
    stop: Option<Reply>,
    /// Set while some directory has no watch: when the first one could not
    /// be watched. Changes in such directories since then are in no record.
    unwatched_since: Option<Stime>,
    /// When a rollover last wrote the Gap for unwatched directories.
    last_cover: Option<Instant>,
}

impl Worker {
    fn run(mut self, error: &Mutex<Option<String>>) {
        if let Err(e) = self.main_loop() {
            let msg = e.to_string();
            tracing::error!("journal hook stopped: {msg}");
            for r in self.deferred.drain(..).chain(self.stop.take()) {
                let _ = r.send(Err(msg.clone()));
            }
            match error.lock() {
                Ok(mut g) => *g = Some(msg),
                Err(p) => *p.into_inner() = Some(msg),
            }
        }
    }

    fn interval(&self) -> Duration {
        if self.unwatched_since.is_some() {
            self.rollover.max(UNWATCHED_ROLLOVER)
        } else {
            self.rollover
        }
    }

    fn main_loop(&mut self) -> Result<(), ChangelogError> {
        let mut deadline = Instant::now() + self.interval();
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(m) => self.accept(m)?,
                Err(RecvTimeoutError::Timeout) => {
                    self.rollover(false)?;
                    deadline = Instant::now() + self.interval();
                }
                // Cannot happen while the Hook lives (it holds a sender).
                Err(RecvTimeoutError::Disconnected) => {
                    self.rollover(true)?;
                    return Ok(());
                }
            }
            // Requests are served by a rollover that starts after they came.
            while !self.deferred.is_empty() || self.stop.is_some() {
                let reqs = std::mem::take(&mut self.deferred);
                let stop = self.stop.take();
                if stop.is_none() && self.covered_recently() {
                    // Every rollover now crawls the brick: the worker's
                    // early rollovers would crawl it without pause. The
                    // timed one comes within UNWATCHED_ROLLOVER; until then
                    // `closed_through` does not move.
                    for r in reqs {
                        let _ = r.send(Ok(()));
                    }
                    break;
                }
                self.rollover(stop.is_some())?;
                deadline = Instant::now() + self.interval();
                for r in reqs {
                    let _ = r.send(Ok(()));
                }
                if let Some(r) = stop {
                    for r in self.deferred.drain(..) {
                        let _ = r.send(Ok(()));
                    }
                    let _ = r.send(Ok(()));
                    return Ok(());
                }
            }
        }
    }

    /// Handles an event now; a request is noted and served by the caller.
    fn accept(&mut self, m: Msg) -> Result<(), ChangelogError> {
        match m {
            Msg::Event(at, ev) => self.handle(at, ev)?,
            Msg::Rollover(r) => self.deferred.push(r),
            Msg::Stop(r) => self.stop = Some(r),
            #[cfg(test)]
            Msg::Events(evs) => {
                for (at, ev) in evs {
                    self.handle(at, ev)?;
                }
            }
        }
        Ok(())
    }

    /// Drains what notify has delivered, up to a marker made after the
    /// time `t` taken first, then closes the current file with end = `t`,
    /// and only then advances `closed_through`.
    fn rollover(&mut self, last: bool) -> Result<(), ChangelogError> {
        let t = Stime(Stime::now().nanos().max(self.last_end.nanos() + 1));
        self.cover_unwatched()?;
        // The event of a change made just before `t` may still be in the
        // kernel queue or notify's thread; closing without it would let stime
        // (and a checkpoint) pass `t` while that change is not shipped. A
        // marker made now is a barrier: its event comes after every one of
        // them (one inotify FIFO), and waiting for it is the wait below.
        let barrier = self.drop_marker()?;
        if let Some(n) = barrier {
            self.held.push_back((n, Vec::new()));
        }
        // At most what the channel could hold at `t`: a steady stream of new
        // events must not keep the file open forever.
        for _ in 0..CHANNEL_CAP {
            match self.rx.try_recv() {
                Ok(m) => self.accept(m)?,
                Err(_) => break,
            }
        }
        if let Some(n) = barrier {
            self.await_markers(n + 1)?;
        }
        // Scans opened by events drained so far (up to the barrier) are part
        // of this file; the ones that waiting itself opens may go to the next
        // (not when stopping: there is no next file).
        let upto = if last { u64::MAX } else { self.next_marker };
        self.await_markers(upto)?;
        self.flush_pending_from()?;
        self.check_dropped()?;
        if let Some(f) = self.file.take() {
            self.recorded.store(false, Ordering::SeqCst);
            f.close(t)?;
        }
        self.last = None;
        self.interval_start = t;
        self.last_end = t;
        self.closed.store(t.nanos(), Ordering::SeqCst);
        Ok(())
    }

    /// While directories have no watch, tries to watch them all again (the
    /// limit may have been raised, or directories removed) and writes a Gap
    /// into the file about to close: its crawl, which runs after the file is
    /// closed, finds what changed in them since the first one went
    /// unwatched, so stime never passes a change no record holds.
    fn cover_unwatched(&mut self) -> Result<(), ChangelogError> {
        let Some(since) = self.unwatched_since else {
            return Ok(());
        };
        self.last_cover = Some(Instant::now());
        match self.watcher.watch(&self.brick, RecursiveMode::Recursive) {
            Ok(()) => {
                tracing::info!(brick = %self.brick.display(), "every directory is watched again");
                self.unwatched_since = None;
                self.emit(Record::Gap {
                    reason: "every directory is watched again; crawling what changed while some were not".into(),
                    since: Some(since),
                })
            }
            Err(e) => self.gap(format!(
                "{UNWATCHED_GAP} ({e}; raise it): their changes are found by a Hybrid Crawl every {} s",
                UNWATCHED_ROLLOVER.as_secs()
            )),
        }
    }

    /// Some directory has no watch and the last rollover (which crawls the
    /// brick) was less than [`UNWATCHED_ROLLOVER`] ago.
    fn covered_recently(&self) -> bool {
        self.unwatched_since.is_some()
            && self
                .last_cover
                .is_some_and(|t| t.elapsed() < UNWATCHED_ROLLOVER)
    }

    /// Handles events until the marker of every held scan numbered below
    /// `upto` has arrived, for at most [`MARKER_WAIT`]; then journals what
    /// is still held, after a Gap (its place in the event stream is unknown).
    fn await_markers(&mut self, upto: u64) -> Result<(), ChangelogError> {
        let deadline = Instant::now() + MARKER_WAIT;
        while self.held.front().is_some_and(|(n, _)| *n < upto) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(m) => self.accept(m)?,
                Err(_) => {
                    self.release_all(
                        "the marker event of a directory scan or a rollover did not arrive",
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Journals every held scan now; `why` is the Gap recorded first.
    fn release_all(&mut self, why: &str) -> Result<(), ChangelogError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        self.gap(format!(
            "{why}: held scans journalled out of order, late events may follow the rollover"
        ))?;
        for (_, records) in held {
            for r in records {
                self.emit(r)?;
            }
        }
        Ok(())
    }

    /// The marker number if `path` is a marker the hook made.
    fn marker_of(&self, path: &Path) -> Option<Option<u64>> {
        let name = path.strip_prefix(&self.order_dir).ok()?;
        Some(
            name.to_str()
                .and_then(|n| n.strip_prefix("o."))
                .and_then(|n| n.parse().ok()),
        )
    }

    /// The marker's event arrived: the scans it opened are now in place.
    fn marker_arrived(&mut self, n: u64) -> Result<(), ChangelogError> {
        while self.held.front().is_some_and(|(m, _)| *m <= n) {
            let (_, records) = self.held.pop_front().expect("front exists");
            for r in records {
                self.emit(r)?;
            }
        }
        Ok(())
    }

    /// Drops a marker into the event stream; the number to wait for, or
    /// `None` if it could not be made (then the scan is journalled at once,
    /// after a Gap).
    fn drop_marker(&mut self) -> Result<Option<u64>, ChangelogError> {
        let n = self.next_marker;
        self.next_marker += 1;
        let path = self.order_dir.join(format!("o.{n}"));
        let made =
            std::os::unix::fs::symlink("marker", &path).and_then(|()| fs::remove_file(&path));
        match made {
            Ok(()) => Ok(Some(n)),
            Err(e) => {
                self.gap(format!(
                    "cannot make the scan marker {}: {e}; a directory scan is journalled out of order",
                    path.display()
                ))?;
                Ok(None)
            }
        }
    }

    fn emit(&mut self, r: Record) -> Result<(), ChangelogError> {
        if let Some(c) = &mut self.capture {
            c.push(r);
            return Ok(());
        }
        if matches!(r, Record::Data(_) | Record::Meta(_)) && self.last.as_ref() == Some(&r) {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self
                .file
                .insert(OpenFile::create(&self.journal, self.interval_start)?),
        };
        file.append(&r)?;
        self.recorded.store(true, Ordering::SeqCst);
        self.last = Some(r);
        Ok(())
    }

    fn gap(&mut self, reason: String) -> Result<(), ChangelogError> {
        tracing::warn!(brick = %self.brick.display(), "journal gap: {reason}");
        let since = self.unwatched_since;
        self.emit(Record::Gap { reason, since })
    }

    fn check_dropped(&mut self) -> Result<(), ChangelogError> {
        let n = self.dropped.swap(0, Ordering::SeqCst);
        if n > 0 {
            self.gap(format!(
                "the journal hook fell behind: {n} notify events were dropped (channel of {CHANNEL_CAP} full)"
            ))?;
            // Their markers may be among the dropped events.
            self.release_all("events were dropped")?;
        }
        Ok(())
    }

    fn is_excluded(&self, full: &Path) -> bool {
        self.exclude.iter().any(|x| full.starts_with(x))
    }

    /// The record path of `full`; `None` if it is excluded or cannot be
    /// recorded (then a Gap says so).
    fn rel(&mut self, full: &Path) -> Result<Option<RelPath>, ChangelogError> {
        if self.is_excluded(full) {
            return Ok(None);
        }
        match RelPath::from_full(&self.brick, full) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                self.gap(format!("cannot record a change of {full:?}: {e}"))?;
                Ok(None)
            }
        }
    }

    fn root_gone(&mut self) -> Result<(), ChangelogError> {
        self.gap(format!(
            "the brick root {} was removed or moved away; later changes are not journalled",
            self.brick.display()
        ))
    }

    /// A `Name(From)` without its `To`: the entry left the brick.
    fn flush_pending_from(&mut self) -> Result<(), ChangelogError> {
        if let Some((_, path)) = self.pending_from.take() {
            if let Some(rel) = self.rel(&path)? {
                if rel.is_root() {
                    self.root_gone()?;
                } else {
                    self.emit(Record::Unlink(rel))?;
                }
            }
        }
        Ok(())
    }

    fn pending_matches(&self, tracker: Option<usize>) -> bool {
        matches!((&self.pending_from, tracker), (Some((c, _)), Some(t)) if *c == t)
    }

    fn handle(
        &mut self,
        at: Stime,
        ev: notify::Result<notify::Event>,
    ) -> Result<(), ChangelogError> {
        self.check_dropped()?;
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                self.flush_pending_from()?;
                let hint = match e.kind {
                    notify::ErrorKind::MaxFilesWatch => {
                        // The directory appeared within the current file.
                        let since = self.interval_start.min(at);
                        self.unwatched_since.get_or_insert(since);
                        " (raise fs.inotify.max_user_watches): a new directory is not watched"
                    }
                    _ => "",
                };
                return self.gap(format!("watcher error: {e}{hint}"));
            }
        };
        if ev.need_rescan() {
            self.flush_pending_from()?;
            self.gap("inotify event queue overflowed (IN_Q_OVERFLOW): events were lost".into())?;
            return self.release_all("the event queue overflowed");
        }
        if let Some(marker) = ev.paths.first().and_then(|p| self.marker_of(p)) {
            return match (ev.kind, marker) {
                (EventKind::Create(_), Some(n)) => self.marker_arrived(n),
                _ => Ok(()),
            };
        }
        let mut ev = ev;
        for p in ev.paths.iter_mut() {
            *p = self.unstale(p);
        }
        let Some(path) = ev.paths.first().cloned() else {
            return Ok(());
        };
        match ev.kind {
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                self.flush_pending_from()?;
                match ev.tracker() {
                    Some(c) => self.pending_from = Some((c, path)),
                    // MOVE_SELF: only the brick root has a self watch.
                    None if path == self.brick => self.root_gone()?,
                    None => {}
                }
                Ok(())
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                if self.pending_matches(ev.tracker()) {
                    return Ok(()); // the `Both` right behind it is the rename
                }
                self.flush_pending_from()?;
                self.appeared(&path, false)
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if !self.pending_matches(ev.tracker()) {
                    return Ok(()); // its `To` was handled as a move in
                }
                self.pending_from = None;
                match ev.paths.get(1) {
                    Some(to) => self.renamed(&path, &to.clone(), at),
                    None => Ok(()),
                }
            }
            kind => {
                self.flush_pending_from()?;
                self.simple(kind, &path)
            }
        }
    }

    fn simple(&mut self, kind: EventKind, path: &Path) -> Result<(), ChangelogError> {
        let interesting = matches!(
            kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_))
                | EventKind::Access(AccessKind::Close(AccessMode::Write))
        );
        if !interesting {
            return Ok(());
        }
        let Some(rel) = self.rel(path)? else {
            return Ok(());
        };
        match kind {
            EventKind::Modify(ModifyKind::Metadata(_)) => self.emit(Record::Meta(rel)),
            _ if rel.is_root() => match kind {
                EventKind::Remove(_) => self.root_gone(),
                _ => Ok(()),
            },
            EventKind::Create(k) => self.appeared(path, k == CreateKind::Folder),
            EventKind::Remove(k) => {
                self.emit(if k == RemoveKind::Folder {
                    Record::Rmdir(rel)
                } else {
                    Record::Unlink(rel)
                })?;
                if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                    self.rewatch(path)?;
                }
                Ok(())
            }
            _ => self.emit(Record::Data(rel)),
        }
    }

    /// An entry appeared at `full` (created or moved in): record it, and if
    /// it is a directory, everything already inside it.
    fn appeared(&mut self, full: &Path, dir_hint: bool) -> Result<(), ChangelogError> {
        let Some(rel) = self.rel(full)? else {
            return Ok(());
        };
        if rel.is_root() {
            return Ok(());
        }
        match fs::symlink_metadata(full) {
            Ok(md) => {
                self.entry_records(&rel, &md)?;
                if md.is_dir() {
                    self.barrier()?;
                    self.scan(full, &rel, None)?;
                }
                Ok(())
            }
            // Gone already: its removal follows; say what the event said.
            Err(_) if dir_hint => self.emit(Record::Mkdir(rel)),
            Err(_) => self.emit(Record::Create(rel)),
        }
    }

    /// A directory was reported removed, but `full` is a directory (again).
    /// notify keys its watches by path: when the `IN_DELETE_SELF` of a
    /// directory replaced by a rename (or removed and made again) comes after
    /// notify watched the new one, notify drops the new watch and every watch
    /// below it. So watch it again and record it whole, as if it appeared.
    fn rewatch(&mut self, full: &Path) -> Result<(), ChangelogError> {
        if let Err(e) = self.watcher.watch(full, RecursiveMode::Recursive) {
            self.gap(format!("cannot watch {} again: {e}", full.display()))?;
        }
        self.appeared(full, true)
    }

    /// The current name of `path` if notify reported it under the old name of
    /// a directory renamed moments ago (that old name no longer exists); else
    /// `path` itself. Without this a write or chmod right after a directory
    /// rename would be journalled for a path the slave no longer has.
    ///
    /// Only paths strictly below an old name are stale: those come from the
    /// moved directory's own watch. The old name itself is reported by the
    /// parent's watch, which is right (a new entry of that name, perhaps
    /// moved away again); the moved directory's events about itself are
    /// reported by its new parent too.
    fn unstale(&mut self, path: &Path) -> PathBuf {
        self.moved
            .retain(|(_, _, when)| when.elapsed() < RENAME_RESCAN_MARGIN);
        for (from, to, _) in self.moved.iter().rev() {
            if let Ok(rest) = path.strip_prefix(from) {
                if !rest.as_os_str().is_empty() && fs::symlink_metadata(from).is_err() {
                    return to.join(rest);
                }
                break;
            }
        }
        path.to_owned()
    }

    fn renamed(&mut self, from: &Path, to: &Path, at: Stime) -> Result<(), ChangelogError> {
        match (self.rel(from)?, self.rel(to)?) {
            (Some(f), Some(t)) if f.is_root() || t.is_root() => self.root_gone(),
            (Some(f), Some(t)) => {
                self.emit(Record::Rename {
                    from: f,
                    to: t.clone(),
                })?;
                if fs::symlink_metadata(to).is_ok_and(|m| m.is_dir()) {
                    self.moved
                        .push((from.to_owned(), to.to_owned(), Instant::now()));
                    // notify unwatches the old name only after it read
                    // (at `at`) the batch holding the rename: changes it
                    // missed inside are later than that.
                    let since = at.minus(RENAME_CTIME_MARGIN);
                    self.barrier()?;
                    self.scan(to, &t, Some(since))?;
                }
                Ok(())
            }
            // Into an excluded directory: gone from the journalled tree.
            (Some(f), None) => self.emit(Record::Unlink(f)),
            (None, Some(_)) => self.appeared(to, false),
            (None, None) => Ok(()),
        }
    }

    /// The records for one entry that appeared, from its lstat.
    fn entry_records(&mut self, rel: &RelPath, md: &Metadata) -> Result<(), ChangelogError> {
        let ft = md.file_type();
        if ft.is_dir() {
            self.emit(Record::Mkdir(rel.clone()))
        } else if ft.is_symlink() {
            self.emit(Record::Symlink(rel.clone()))
        } else if ft.is_file() {
            if md.nlink() > 1 {
                self.emit(Record::Link(rel.clone()))?;
            } else {
                self.emit(Record::Create(rel.clone()))?;
            }
            if md.len() > 0 {
                self.emit(Record::Data(rel.clone()))?;
            }
            Ok(())
        } else {
            debug_assert!(
                ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
            );
            self.emit(Record::Mknod(rel.clone()))
        }
    }

    /// Returns once notify has finished handling every batch of events
    /// already delivered, including the watches it adds for new directories.
    fn barrier(&mut self) -> Result<(), ChangelogError> {
        if let Err(e) = self.watcher.configure(notify::Config::default()) {
            self.gap(format!(
                "cannot confirm that new directories are watched: {e}"
            ))?;
        }
        Ok(())
    }

    /// Records everything below `full` (depth first, parents before
    /// children); with `since`, only entries whose ctime is not older.
    fn scan(
        &mut self,
        full: &Path,
        rel: &RelPath,
        since: Option<Stime>,
    ) -> Result<(), ChangelogError> {
        let marker = self.drop_marker()?;
        self.capture = Some(Vec::new());
        let walked = self.walk(full, rel, since);
        let records = self.capture.take().unwrap_or_default();
        walked?;
        match marker {
            Some(n) => self.held.push_back((n, records)),
            None => {
                for r in records {
                    self.emit(r)?;
                }
            }
        }
        Ok(())
    }

    /// The walk of [`Worker::scan`].
    fn walk(
        &mut self,
        full: &Path,
        rel: &RelPath,
        since: Option<Stime>,
    ) -> Result<(), ChangelogError> {
        let mut stack = vec![(full.to_owned(), rel.clone())];
        let mut seen = HashSet::new();
        while let Some((dir, drel)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if gone(&e) => continue,
                Err(e) => {
                    self.gap(format!("cannot scan new directory {dir:?}: {e}"))?;
                    continue;
                }
            };
            let mut names = Vec::new();
            for entry in rd {
                match entry {
                    Ok(e) => names.push(e.file_name()),
                    Err(e) if gone(&e) => break,
                    Err(e) => {
                        self.gap(format!("cannot scan new directory {dir:?}: {e}"))?;
                        break;
                    }
                }
            }
            names.sort();
            let mut subdirs = Vec::new();
            for name in names {
                let child = dir.join(&name);
                if self.is_excluded(&child) {
                    continue;
                }
                let crel = match drel.join(&name) {
                    Ok(r) => r,
                    Err(e) => {
                        self.gap(format!("cannot record {child:?}: {e}"))?;
                        continue;
                    }
                };
                let md = match fs::symlink_metadata(&child) {
                    Ok(md) => md,
                    Err(e) if gone(&e) => continue,
                    Err(e) => {
                        self.gap(format!("cannot stat {child:?}: {e}"))?;
                        continue;
                    }
                };
                let ctime = md.ctime().saturating_mul(1_000_000_000) + md.ctime_nsec();
                if since.is_none_or(|s| ctime >= s.nanos()) {
                    self.entry_records(&crel, &md)?;
                }
                // (dev, ino) guards against a bind mount looping back.
                if md.is_dir() && seen.insert((md.dev(), md.ino())) {
                    subdirs.push((child, crel));
                }
            }
            // Reversed so that the stack pops them in name order.
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }
}

fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests;
