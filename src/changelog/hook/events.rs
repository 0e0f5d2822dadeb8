//! notify events turned into records: creations, writes, removals, and
//! renames paired by their tracker.

use super::*;

impl Recorder {
    /// A `Name(From)` without its `To`: the entry left the brick.
    pub(super) fn flush_pending_from(&mut self) -> Result<(), ChangelogError> {
        if let Some((_, path)) = self.pending_from.take() {
            if let Some(rel) = self.rel(&path)? {
                if rel.is_root() {
                    self.root_gone()?;
                } else {
                    self.emit(Record::Unlink(rel.clone()))?;
                    self.name_gone(&rel)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn pending_matches(&self, tracker: Option<usize>) -> bool {
        matches!((&self.pending_from, tracker), (Some((c, _)), Some(t)) if *c == t)
    }

    pub(super) fn handle(
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

    pub(super) fn simple(&mut self, kind: EventKind, path: &Path) -> Result<(), ChangelogError> {
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
                    Record::Rmdir(rel.clone())
                } else {
                    Record::Unlink(rel.clone())
                })?;
                self.name_gone(&rel)?;
                if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                    self.rewatch(path)?;
                }
                Ok(())
            }
            _ => {
                let md = fs::symlink_metadata(path).ok();
                self.links.wrote(&rel, md.as_ref());
                self.emit(Record::Data(rel))
            }
        }
    }

    /// An entry appeared at `full` (created or moved in): record it, and if
    /// it is a directory, everything already inside it.
    pub(super) fn appeared(&mut self, full: &Path, dir_hint: bool) -> Result<(), ChangelogError> {
        let Some(rel) = self.rel(full)? else {
            return Ok(());
        };
        if rel.is_root() {
            return Ok(());
        }
        match fs::symlink_metadata(full) {
            Ok(md) => {
                self.links.created(&rel, Some(&md));
                self.entry_records(&rel, &md)?;
                if md.is_dir() {
                    self.barrier()?;
                    self.scan(full, &rel, None)?;
                }
                Ok(())
            }
            // Gone already: its removal follows; say what the event said.
            Err(_) if dir_hint => self.emit(Record::Mkdir(rel)),
            Err(_) => {
                self.links.created(&rel, None);
                self.emit(Record::Create(rel))
            }
        }
    }

    /// A directory was reported removed, but `full` is a directory (again).
    /// notify keys its watches by path: when the `IN_DELETE_SELF` of a
    /// directory replaced by a rename (or removed and made again) comes after
    /// notify watched the new one, notify drops the new watch and every watch
    /// below it. So watch it again and record it whole, as if it appeared.
    pub(super) fn rewatch(&mut self, full: &Path) -> Result<(), ChangelogError> {
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
    pub(super) fn unstale(&mut self, path: &Path) -> PathBuf {
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

    pub(super) fn renamed(
        &mut self,
        from: &Path,
        to: &Path,
        at: Stime,
    ) -> Result<(), ChangelogError> {
        match (self.rel(from)?, self.rel(to)?) {
            (Some(f), Some(t)) if f.is_root() || t.is_root() => self.root_gone(),
            (Some(f), Some(t)) => {
                let replaced = self.links.renamed(&f, &t);
                self.emit(Record::Rename {
                    from: f,
                    to: t.clone(),
                })?;
                if replaced {
                    self.link_gap(&t)?;
                }
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
            (Some(f), None) => {
                self.emit(Record::Unlink(f.clone()))?;
                self.name_gone(&f)
            }
            (None, Some(_)) => self.appeared(to, false),
            (None, None) => Ok(()),
        }
    }

    /// The records for one entry that appeared, from its lstat.
    pub(super) fn entry_records(
        &mut self,
        rel: &RelPath,
        md: &Metadata,
    ) -> Result<(), ChangelogError> {
        for r in Record::appeared(rel, md) {
            self.emit(r)?;
        }
        Ok(())
    }
}
