//! Listings and subtree digests: comparing a touched directory, or a
//! renamed one, with the slave's instead of sending names.

use super::*;

/// Directories with more entries than this are not listed again after a
/// batch touched them (the name list would cost more than it saves).
pub(super) const TOUCHED_PRUNE_MAX: usize = 10_000;

/// Most entries of a renamed directory compared by digest before it is
/// walked (see [`Shipper::same_tree_on_slave`]); beyond that the walk runs
/// at once, as comparing would cost about as much again.
pub(super) const TREE_CHECK_MAX: usize = 1_000_000;

/// How [`EntryOp::Prune`] and [`listing_digest`] name a type of entry.
pub(super) fn node_kind(ft: fs::FileType) -> NodeKind {
    if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else {
        NodeKind::Other
    }
}

impl<'a, S: AsyncRead + AsyncWrite> Shipper<'a, S> {
    /// Notes every directory an entry of a journal batch touched: its
    /// attributes are set afterwards, and once the batch's files are in
    /// place the slave's listing of it is compared with the brick's (names
    /// left by entries journalled out of order are pruned).
    pub(super) fn note_touched(&mut self, batch: &Batch, extra: &mut Batch) {
        let mut touched: Vec<RelPath> = batch
            .entries()
            .iter()
            .filter(|e| !matches!(e, Entry::Prune { .. }))
            .flat_map(|e| e.paths().filter_map(RelPath::parent))
            // A directory the brick no longer has may still be on the slave,
            // made as a parent of a path replayed out of order: its nearest
            // ancestor the brick has drops it.
            .map(|mut d| {
                while !d.is_root() && !self.dir.lstat(&d).is_ok_and(|m| m.is_dir()) {
                    d = d.parent().unwrap_or_default();
                }
                d
            })
            .collect();
        touched.sort();
        touched.dedup();
        for dir in &touched {
            extra.push_meta(dir.clone());
        }
        self.listings_due = touched;
    }

    /// The names of directory `dir` of the brick with their kinds; `None`
    /// if it cannot be listed or holds more than [`TOUCHED_PRUNE_MAX`]
    /// entries (the name list would cost more than it saves).
    pub(super) fn brick_listing(
        &self,
        dir: &RelPath,
    ) -> Option<Vec<(std::ffi::OsString, NodeKind)>> {
        if let Some(volume) = self.volume {
            return self.volume_listing(volume, dir);
        }
        // Listed through a handle resolved beneath the brick.
        let rd = self
            .dir
            .handle(dir)
            .and_then(|h| fs::read_dir(h.proc_path()))
            .ok()?;
        let mut out = Vec::new();
        for entry in rd.take(TOUCHED_PRUNE_MAX + 1) {
            let Ok(entry) = entry else { continue };
            // From the directory entry's type where the file system gives
            // one; a name gone since it was listed is gone.
            let Ok(ft) = entry.file_type() else { continue };
            let name = entry.file_name();
            // Excluded names are neither listed nor kept: they never leave.
            if dir.join(&name).is_ok_and(|p| self.filter.excluded(&p)) {
                continue;
            }
            out.push((name, node_kind(ft)));
        }
        (out.len() <= TOUCHED_PRUNE_MAX).then_some(out)
    }

    /// [`Shipper::brick_listing`] of a brick of a distributed volume: the
    /// names the volume holds in `dir`, from whichever brick, as clients
    /// list them (no DHT link file).
    pub(super) fn volume_listing(
        &self,
        volume: &dyn VolumeView,
        dir: &RelPath,
    ) -> Option<Vec<(std::ffi::OsString, NodeKind)>> {
        let listed = volume.listing(dir, TOUCHED_PRUNE_MAX)?;
        Some(
            listed
                .into_iter()
                .filter(|(name, _)| !dir.join(name).is_ok_and(|p| self.filter.excluded(&p)))
                .map(|(name, ft)| (name, node_kind(ft)))
                .collect(),
        )
    }

    /// Whether `md`, the brick entry behind `handle`, is a DHT link file:
    /// its name's data is on another brick, and neither its content nor
    /// its attributes (mode `---------T`) are the volume's.
    pub(super) fn link_file(&self, handle: &Handle, md: &fs::Metadata) -> bool {
        self.gluster_brick && is_dht_link(&handle.proc_path(), md)
    }

    /// Notes that the file at `path`, which this brick no longer holds,
    /// is now on another brick of the volume: a rebalance moves files
    /// without a changelog record on either brick, so no other worker
    /// would send it (see [`ShipReport::handed_off`]).
    pub(super) fn hand_off(&mut self, path: &RelPath) {
        let Some(holder) = self.volume.and_then(|v| v.holder(path)) else {
            return;
        };
        if holder != self.brick {
            tracing::debug!(batch = self.batch_id, path = %path, brick = %holder.display(), "held by another brick now: handed to its worker");
            self.report.handed_off.push((holder, path.clone()));
        }
    }

    /// Asks the slave to compare its listing of every touched directory
    /// with the brick's, by digest: only a directory that differs gets its
    /// whole name list (see [`Shipper::prune_differing`]). Sent after the
    /// batch's files, so the new ones are on both sides.
    pub(super) async fn check_listings(&mut self) -> Result<(), ShipError> {
        for dir in std::mem::take(&mut self.listings_due) {
            if self.withheld(&dir) {
                continue;
            }
            let Some(listing) = self.brick_listing(&dir) else {
                continue;
            };
            let mut listing: Vec<(Vec<u8>, NodeKind)> = listing
                .into_iter()
                .map(|(name, kind)| (name.into_encoded_bytes(), kind))
                .collect();
            let digest = listing_digest(&mut listing);
            let seq = self.link.next_seq();
            tracing::debug!(batch = self.batch_id, seq, path = %dir, "check listing");
            self.link
                .send(&Request::CheckListing {
                    seq,
                    path: dir.clone(),
                    digest,
                })
                .await?;
            self.ledger.record(seq, Awaiting::Listing { dir });
        }
        Ok(())
    }

    /// Asks the journal which names later records take away; called after
    /// the listings that the next prunes keep, so every name they lack
    /// because of such a record is in the answer.
    pub(super) fn refresh_later(&mut self) {
        if let Some(later) = self.later {
            self.removed_later.clear();
            for path in later.removed().unwrap_or_default() {
                // Written in this batch and moved away since, the name's
                // new content could not be read, and the record that moves
                // it carries no data: on the slave it would keep what it
                // held before. Pruned, its rename finds no source and the
                // destination is resent whole.
                if self.batch_data.contains(&path) {
                    continue;
                }
                if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
                    let name = name.to_os_string();
                    self.removed_later.entry(dir).or_default().push(name);
                }
            }
        }
    }

    /// Lists every directory whose listing differs on the slave again, as
    /// the brick has it now: the slave drops names it should not have, and
    /// the directory's attributes are set afterwards (pruning changed its
    /// mtime there).
    pub(super) async fn prune_differing(&mut self) -> Result<(), ShipError> {
        let mut dirs = std::mem::take(&mut self.listings_differ);
        dirs.sort();
        dirs.dedup();
        let listed: Vec<(RelPath, Vec<(std::ffi::OsString, NodeKind)>)> = dirs
            .into_iter()
            .filter_map(|dir| self.brick_listing(&dir).map(|l| (dir, l)))
            .collect();
        if !listed.is_empty() {
            self.refresh_later();
        }
        for (dir, listing) in listed {
            tracing::debug!(batch = self.batch_id, path = %dir, "listing differs on the slave: pruning");
            let keep = listing.into_iter().map(|(name, _)| name).collect();
            self.send_entry(&Entry::Prune {
                dir: dir.clone(),
                keep,
            })
            .await?;
            self.send_meta(&dir).await?;
        }
        Ok(())
    }

    /// Whether the slave's subtree at `root` is what walking it would make
    /// it: the same names and kinds (nothing to prune), and every regular
    /// file and directory with the brick's size, mtime, permission bits and
    /// owner (nothing for a quick check to send, no attributes to set but
    /// extended ones). The walk also sends the extended attributes of every
    /// entry; a change of those inside the directory while notify did not
    /// watch it set its ctime, so the hook's rescan of the renamed
    /// directory journalled it (as it does writes). A subtree holding a
    /// multiply-linked file, or more than [`TREE_CHECK_MAX`] entries, is
    /// walked without asking (the walk keeps hard links together).
    pub(super) async fn same_tree_on_slave(&mut self, root: &RelPath) -> Result<bool, ShipError> {
        let Some(digest) = self.tree_digest(root) else {
            return Ok(false);
        };
        let seq = self.link.next_seq();
        self.link
            .send(&Request::CheckTree {
                seq,
                path: root.clone(),
                digest,
                owners: self.with_owner,
            })
            .await?;
        self.link.flush().await?;
        loop {
            match self.link.recv().await? {
                Reply::Tree { seq: got, same } if got == seq => return Ok(same),
                other => self.absorb(other)?,
            }
        }
    }

    /// The [`TreeDigest`] of the brick's subtree at `root`, read beneath
    /// the brick; `None` if it cannot be read whole, holds a multiply-linked
    /// file or more than [`TREE_CHECK_MAX`] entries, or the brick is one of
    /// a distributed volume.
    pub(super) fn tree_digest(&self, root: &RelPath) -> Option<[u8; 32]> {
        // One brick of a distributed volume holds part of the subtree: the
        // walk (quick check, union-aware prunes) compares it instead.
        if self.filter.excluded(root) || self.volume.is_some() {
            return None;
        }
        let mut d = TreeDigest::new(self.with_owner);
        let md = self.dir.lstat(root).ok().filter(|m| m.is_dir())?;
        d.add(&self.tree_entry(root, b"", &md));
        let skip = if root.is_root() {
            0
        } else {
            root.as_bytes().len() + 1
        };
        let mut stack = vec![self.sorted_names(root)?.into_iter()];
        let mut dirs = vec![root.clone()];
        let mut entries = 0;
        while let Some(names) = stack.last_mut() {
            let Some(name) = names.next() else {
                stack.pop();
                dirs.pop();
                continue;
            };
            entries += 1;
            let path = dirs.last()?.join(&name).ok()?;
            // As the slave should have it: without what is excluded.
            if self.filter.excluded(&path) {
                continue;
            }
            let md = self.dir.lstat(&path).ok()?;
            let links = 1 + u64::from(self.gluster_brick);
            if entries > TREE_CHECK_MAX || (md.is_file() && md.nlink() > links) {
                return None;
            }
            d.add(&self.tree_entry(&path, &path.as_bytes()[skip..], &md));
            if md.is_dir() {
                stack.push(self.sorted_names(&path)?.into_iter());
                dirs.push(path);
            }
        }
        Some(d.finish())
    }

    /// What [`TreeDigest`] covers of the brick's `path` (at `rel` below the
    /// subtree's root), with the mtime the slave gets.
    pub(super) fn tree_entry<'p>(
        &self,
        path: &RelPath,
        rel: &'p [u8],
        md: &fs::Metadata,
    ) -> TreeEntry<'p> {
        let (mtime_sec, mtime_nsec) = self.mtime_of(&path.under(self.brick), md);
        TreeEntry {
            path: rel,
            kind: node_kind(md.file_type()),
            mode: md.mode() & 0o7777,
            size: md.size(),
            mtime_sec,
            mtime_nsec,
            uid: md.uid(),
            gid: md.gid(),
        }
    }

    /// The names in the brick's directory `dir`, in byte order (listed
    /// through a handle resolved beneath the brick).
    pub(super) fn sorted_names(&self, dir: &RelPath) -> Option<Vec<std::ffi::OsString>> {
        let rd = self
            .dir
            .handle(dir)
            .and_then(|h| fs::read_dir(h.proc_path()))
            .ok()?;
        let mut names = rd
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()
            .ok()?;
        names.sort_unstable_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        Some(names)
    }
}
