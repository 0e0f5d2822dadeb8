//! Scans of new and renamed directories, journalled like events.

use super::*;

impl Recorder {
    /// Records everything below `full` (depth first, parents before
    /// children); with `since`, only entries whose ctime is not older.
    pub(super) fn scan(
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

    /// The walk of [`Recorder::scan`].
    pub(super) fn walk(
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
