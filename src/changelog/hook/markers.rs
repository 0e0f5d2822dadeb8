//! Scan markers: a scan's records are held until its marker's own event
//! arrives, so it lands at its place in the event stream (see the module
//! documentation of `hook`).

use super::*;

impl Recorder {
    /// Handles events until the marker of every held scan numbered below
    /// `upto` has arrived, for at most [`MARKER_WAIT`]; then journals what
    /// is still held, after a Gap (its place in the event stream is unknown).
    pub(super) fn await_markers(&mut self, upto: u64) -> Result<(), ChangelogError> {
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
    pub(super) fn release_all(&mut self, why: &str) -> Result<(), ChangelogError> {
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
    pub(super) fn marker_of(&self, path: &Path) -> Option<Option<u64>> {
        let name = path.strip_prefix(&self.order_dir).ok()?;
        Some(
            name.to_str()
                .and_then(|n| n.strip_prefix("o."))
                .and_then(|n| n.parse().ok()),
        )
    }

    /// The marker's event arrived: the scans it opened are now in place.
    pub(super) fn marker_arrived(&mut self, n: u64) -> Result<(), ChangelogError> {
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
    pub(super) fn drop_marker(&mut self) -> Result<Option<u64>, ChangelogError> {
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

    /// Returns once notify has finished handling every batch of events
    /// already delivered, including the watches it adds for new directories.
    pub(super) fn barrier(&mut self) -> Result<(), ChangelogError> {
        if let Err(e) = self.watcher.configure(notify::Config::default()) {
            self.gap(format!(
                "cannot confirm that new directories are watched: {e}"
            ))?;
        }
        Ok(())
    }
}
