//! Closing the current journal file on time, and covering directories that
//! have no watch with a Gap.

use super::*;

impl Recorder {
    /// Drains what notify has delivered, up to a marker made after the
    /// time `t` taken first, then closes the current file with end = `t`,
    /// and only then advances `closed_through`.
    pub(super) fn rollover(&mut self, last: bool) -> Result<(), ChangelogError> {
        let t = Stime::from_nanos(Stime::now().nanos().max(self.last_end.nanos() + 1));
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
    pub(super) fn cover_unwatched(&mut self) -> Result<(), ChangelogError> {
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
    pub(super) fn covered_recently(&self) -> bool {
        self.unwatched_since.is_some()
            && self
                .last_cover
                .is_some_and(|t| t.elapsed() < UNWATCHED_ROLLOVER)
    }
}
