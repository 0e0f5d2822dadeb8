//! The journal hook: notify events of one brick → records → rolling files.
//!
//! Threads: notify's inotify thread hands each event to a closure that
//! `try_send`s it into a bounded channel (it never blocks, so notify never
//! waits for us; when the channel is full the event is counted as dropped and
//! a Gap is written). One std thread, the recorder, owns the watcher, the open
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
use std::os::unix::fs::MetadataExt;
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

mod events;
mod links;
mod markers;
mod recorder;
mod rolling;
mod scan;

use recorder::{gone, Recorder};

/// Default interval between rollovers.
pub const DEFAULT_ROLLOVER: Duration = Duration::from_secs(1);

/// Capacity of the channel from notify to the recorder, in events. Memory stays
/// bounded; when it is full, events are dropped and a Gap is written.
const CHANNEL_CAP: usize = 64 * 1024;

/// For this long after a directory rename, changes notify reports under
/// the old name are recorded under the new one (see [`Recorder::unstale`]).
pub const RENAME_RESCAN_MARGIN: Duration = Duration::from_secs(10);

/// After a directory rename, entries under the new name whose ctime is at
/// most this much older than the moment notify read the rename are recorded
/// again (see the module documentation): file-system timestamps come from a
/// coarse clock that may lag the one events are stamped with.
pub const RENAME_CTIME_MARGIN: Duration = Duration::from_secs(1);

/// How the Gap every hook start records begins (a routine gap, unlike
/// lost events).
pub const START_GAP: &str = "journal hook started";

pub use links::LINK_GAP;

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

type Answer = SyncSender<Result<(), String>>;

enum Msg {
    /// An event and when notify handed it over.
    Event(Stime, notify::Result<notify::Event>),
    Rollover(Answer),
    Stop(Answer),
    /// Events handled back to back, as if one inotify read had delivered
    /// them: tests need events to be queued together, which separate sends
    /// cannot promise (the recorder may act on the first before the next).
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
        let mut worker = Recorder {
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
            links: links::LinkWatch::default(),
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
        Stime::from_nanos(self.closed.load(Ordering::SeqCst))
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

#[cfg(test)]
mod tests;
