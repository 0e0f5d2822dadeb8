//! Healing a slave that diverged from the journal: resending what it lacks,
//! walking renamed directories again, what is owed.

use super::*;

impl<'a, S: AsyncRead + AsyncWrite> Shipper<'a, S> {
    /// Resends, from the brick as it is now, the paths the slave reported
    /// missing or in an unexpected state: the directories above each (made
    /// directories again if something else is there), then a Hybrid Crawl
    /// of it with pruning; whole, or for the paths of `heal_quick` (and all
    /// of them on a brick of a distributed volume) through the quick
    /// check. Returns the content and attribute work found.
    pub(super) async fn heal(&mut self) -> Result<Batch, ShipError> {
        // Of a distributed volume, every brick records a directory's rename,
        // and only the first to replay it finds the source on the slave:
        // the others heal its destination, which the slave holds already,
        // so their heals go through the quick check rather than resend it.
        let quick = self.volume.is_some();
        let mut paths: Vec<(RelPath, bool)> = std::mem::take(&mut self.heal_paths)
            .into_iter()
            .map(|p| (p, quick))
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

    /// Walks every directory a rename of this batch produced, as the brick
    /// has it now, with pruning: notify watches a renamed directory again
    /// only after the batch of events that moved it, and what changed
    /// inside meanwhile (removals above all, which no scan can see) was
    /// never journalled. Files go through a quick check: most are on the
    /// slave already, moved there by the rename. First, though, the whole
    /// subtree is compared by digest (see [`Shipper::same_tree_on_slave`]):
    /// one that matches is not walked, so renaming a directory of many
    /// files sends neither their names nor their paths.
    pub(super) async fn rewalk_renamed(&mut self, extra: &mut Batch) -> Result<(), ShipError> {
        let roots: Vec<RelPath> = self
            .renamed_to
            .iter()
            .filter(|p| self.dir.lstat(p).is_ok_and(|m| m.is_dir()))
            .cloned()
            .collect();
        for root in outermost(roots) {
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
    pub(super) async fn resend_walk(
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
                    self.memory.origins.confirmed(&path, Inode::of(&md));
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

    /// Sends again what a replayed rename of this batch moved onto a path
    /// where the brick has another entry (see [`OriginIndex`]): files and
    /// directories through the data and attribute phases, the others as
    /// entries.
    pub(super) async fn resend_stale(&mut self, extra: &mut Batch) -> Result<(), ShipError> {
        let roots = std::mem::take(&mut self.renamed_to);
        for root in outermost(roots) {
            let own_links = 1 + u64::from(self.gluster_brick);
            for (path, md) in self
                .memory
                .origins
                .stale_under(self.brick, &root, own_links)
            {
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
    pub(super) fn written_through_lost_names(&self, batch: &Batch) -> HashSet<Inode> {
        batch
            .data()
            .iter()
            .filter_map(|p| {
                let noted = self.memory.origins.inode_of(p)?;
                let now = self.dir.lstat(p).ok().map(|m| Inode::of(&m));
                (now != Some(noted) && self.memory.links.knows(noted)).then_some(noted)
            })
            .collect()
    }

    /// Adds to the data of this batch every path it names whose file's
    /// content an earlier batch still owes the slave (see
    /// [`ShipMemory::owed`]): renamed, linked or changed since, the file
    /// shows up here under its current name.
    pub(super) fn send_owed(&mut self, batch: &Batch, extra: &mut Batch) {
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
            if md.is_file() && self.memory.owed.contains(&Inode::of(&md)) {
                tracing::debug!(batch = self.batch_id, path = %path, "content owed since an abandoned send");
                extra.push_data(path);
            }
        }
    }

    /// The regular files among `paths` (with one name: a multiply-linked
    /// file goes through the data phase, which keeps its names together)
    /// that the slave already holds with the brick's size and mtime.
    pub(super) async fn unchanged_on_slave(
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
}

/// The roots no other root of the list lies above, each once: a walk of
/// those covers every root.
fn outermost(mut roots: Vec<RelPath>) -> Vec<RelPath> {
    roots.sort();
    roots.dedup();
    let mut kept: Vec<RelPath> = Vec::new();
    for root in roots {
        if !kept.iter().any(|k| root.starts_with(k)) {
            kept.push(root);
        }
    }
    kept
}
