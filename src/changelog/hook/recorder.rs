//! The hook's one thread: it owns the watcher, the open journal file and
//! all state, and turns what arrives on its channel into records.

use super::*;

/// The worker thread's state; see the module documentation.
pub(super) struct Recorder {
    pub(super) brick: PathBuf,
    pub(super) journal: PathBuf,
    pub(super) rollover: Duration,
    pub(super) exclude: Vec<PathBuf>,
    pub(super) watcher: INotifyWatcher,
    pub(super) rx: Receiver<Msg>,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) closed: Arc<AtomicI64>,
    pub(super) recorded: Arc<AtomicBool>,
    pub(super) file: Option<OpenFile>,
    pub(super) interval_start: Stime,
    pub(super) last_end: Stime,
    /// Last record of the current file, to coalesce duplicates.
    pub(super) last: Option<Record>,
    /// A `Name(From)` waiting for its `To`/`Both`: (tracker, path).
    pub(super) pending_from: Option<(usize, PathBuf)>,
    /// Directories renamed recently: (old full path, new full path, when).
    /// notify reports changes inside them under the old name until it has
    /// re-watched them; see [`Recorder::unstale`].
    pub(super) moved: Vec<(PathBuf, PathBuf, Instant)>,
    /// Where scan markers are made ([`ORDER_DIR`]).
    pub(super) order_dir: PathBuf,
    pub(super) next_marker: u64,
    /// Records of scans waiting for their marker's event, oldest first.
    pub(super) held: VecDeque<(u64, Vec<Record>)>,
    /// While a scan runs, its records go here instead of the file.
    pub(super) capture: Option<Vec<Record>>,
    pub(super) deferred: Vec<Answer>,
    pub(super) stop: Option<Answer>,
    /// Set while some directory has no watch: when the first one could not
    /// be watched. Changes in such directories since then are in no record.
    pub(super) unwatched_since: Option<Stime>,
    /// When a rollover last wrote the Gap for unwatched directories.
    pub(super) last_cover: Option<Instant>,
    /// Names written through as hard links (see `links`).
    pub(super) links: super::links::LinkWatch,
}

impl Recorder {
    pub(super) fn run(mut self, error: &Mutex<Option<String>>) {
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

    pub(super) fn interval(&self) -> Duration {
        if self.unwatched_since.is_some() {
            self.rollover.max(UNWATCHED_ROLLOVER)
        } else {
            self.rollover
        }
    }

    pub(super) fn main_loop(&mut self) -> Result<(), ChangelogError> {
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
    pub(super) fn accept(&mut self, m: Msg) -> Result<(), ChangelogError> {
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

    pub(super) fn emit(&mut self, r: Record) -> Result<(), ChangelogError> {
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

    pub(super) fn gap(&mut self, reason: String) -> Result<(), ChangelogError> {
        tracing::warn!(brick = %self.brick.display(), "journal gap: {reason}");
        self.record_gap(reason)
    }

    fn record_gap(&mut self, reason: String) -> Result<(), ChangelogError> {
        let since = self.unwatched_since;
        self.emit(Record::Gap { reason, since })
    }

    /// `rel` was removed or replaced: if it was written through as a hard
    /// link, the file's other names are found by a crawl (see `links`).
    pub(super) fn name_gone(&mut self, rel: &RelPath) -> Result<(), ChangelogError> {
        if !self.links.removed(rel) {
            return Ok(());
        }
        self.link_gap(rel)
    }

    /// The Gap for a name written through as a hard link that is gone.
    pub(super) fn link_gap(&mut self, rel: &RelPath) -> Result<(), ChangelogError> {
        tracing::debug!(path = %rel, "written through as a hard link and gone: a crawl finds its other names");
        self.record_gap(format!("{} ({rel})", super::LINK_GAP))
    }

    pub(super) fn check_dropped(&mut self) -> Result<(), ChangelogError> {
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

    pub(super) fn is_excluded(&self, full: &Path) -> bool {
        self.exclude.iter().any(|x| full.starts_with(x))
    }

    /// The record path of `full`; `None` if it is excluded or cannot be
    /// recorded (then a Gap says so).
    pub(super) fn rel(&mut self, full: &Path) -> Result<Option<RelPath>, ChangelogError> {
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

    pub(super) fn root_gone(&mut self) -> Result<(), ChangelogError> {
        self.gap(format!(
            "the brick root {} was removed or moved away; later changes are not journalled",
            self.brick.display()
        ))
    }
}

pub(super) fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}
