//! Entry operations in journal order, translated for the slave.

use super::*;

impl<'a, S: AsyncRead + AsyncWrite> Shipper<'a, S> {
    pub(super) async fn send_entry(&mut self, entry: &Entry) -> Result<(), ShipError> {
        if entry.paths().any(|p| self.withheld(p)) {
            return Ok(());
        }
        let lstat = |p: &RelPath| self.dir.lstat(p).ok();
        // The brick may have moved on since the journal was written; the
        // later records describe what happened next, so a placeholder mode
        // is enough for an entry that is gone now.
        let op = match entry {
            // Of a distributed volume, a directory gone from the volume is
            // not made again: every brick records its rename, and a replay
            // (after a retry, or behind another brick's) would rename a
            // new, empty one over what the other bricks put at its
            // destination. Its rename then finds no source and heals the
            // destination from this brick instead.
            Entry::Mkdir(p) if self.volume.is_some_and(|v| !v.holds(p)) => return Ok(()),
            Entry::Mkdir(p) => EntryOp::Mkdir {
                path: p.clone(),
                mode: lstat(p)
                    .filter(|m| m.is_dir())
                    .map_or(0o755, |m| m.mode() & 0o7777),
            },
            // Only an empty file is created as an entry: anything with content
            // arrives whole through the data phase, so the slave never shows
            // an empty placeholder for a file whose bytes did not make it. A
            // rename of a file created this way finds no source and is
            // resent whole.
            Entry::Create(p) | Entry::Link(p) => {
                let md = self
                    .dir
                    .handle(p)
                    .and_then(|h| Ok((h.metadata()?, h)))
                    .ok()
                    .filter(|(m, h)| m.is_file() && !self.link_file(h, m))
                    .map(|(m, _)| m);
                if let Some(m) = md.as_ref().filter(|m| m.nlink() > 1) {
                    self.memory.links.note(Inode::of(m), p);
                }
                match md {
                    Some(m) if m.size() == 0 => EntryOp::Create {
                        path: p.clone(),
                        mode: m.mode() & 0o7777,
                    },
                    _ => return Ok(()),
                }
            }
            Entry::Symlink(p) if !self.dir.beneath(p) => return Ok(()),
            Entry::Symlink(p) => match fs::read_link(p.under(self.brick)) {
                Ok(target) => EntryOp::Symlink {
                    path: p.clone(),
                    target: target.into_os_string().into_encoded_bytes(),
                },
                // Not a symlink any more: a later record says what it is.
                Err(_) => return Ok(()),
            },
            Entry::Mknod(p) => {
                let Some(md) = lstat(p) else { return Ok(()) };
                let ft = md.file_type();
                let kind = if ft.is_fifo() {
                    SpecialKind::Fifo
                } else if ft.is_socket() {
                    SpecialKind::Socket
                } else if ft.is_char_device() {
                    SpecialKind::CharDevice
                } else if ft.is_block_device() {
                    SpecialKind::BlockDevice
                } else {
                    // Not a special file any more: a later record says what.
                    return Ok(());
                };
                EntryOp::Mknod {
                    path: p.clone(),
                    kind,
                    mode: md.mode() & 0o7777,
                    rdev: md.rdev(),
                }
            }
            Entry::Unlink(p) | Entry::Rmdir(p) if self.volume_holds(p) => return Ok(()),
            Entry::Unlink(p) => EntryOp::Unlink { path: p.clone() },
            Entry::Rmdir(p) => EntryOp::Rmdir { path: p.clone() },
            Entry::Rename { to, from } if self.volume_holds(from) => {
                // Whatever the slave has at `from` may be another brick's
                // file by now: `to` is sent from this brick instead.
                self.heal_quick.push(to.clone());
                return Ok(());
            }
            Entry::Rename { from, to } => {
                self.memory.links.rename(from, to);
                EntryOp::Rename {
                    from: from.clone(),
                    to: to.clone(),
                }
            }
            Entry::Prune { dir, .. } if self.volume.is_some() => {
                // Of a distributed volume, the slave keeps what any brick
                // holds; a directory the volume cannot list is not pruned
                // (this brick's names alone would remove the others').
                let Some(volume) = self.volume else {
                    return Ok(());
                };
                let Some(listing) = self.volume_listing(volume, dir) else {
                    tracing::debug!(batch = self.batch_id, path = %dir, "the volume's listing is not known: not pruned");
                    return Ok(());
                };
                self.prune_names += listing.len() as u64;
                let (keep, kinds): (Vec<_>, Vec<_>) = listing
                    .into_iter()
                    .map(|(name, kind)| {
                        (serde_bytes::ByteBuf::from(name.into_encoded_bytes()), kind)
                    })
                    .unzip();
                EntryOp::Prune {
                    path: dir.clone(),
                    keep,
                    kinds,
                }
            }
            Entry::Prune { dir, keep } => {
                let mut keep = keep.clone();
                if let Some(later) = self.removed_later.get(dir) {
                    let listed: HashSet<&std::ffi::OsString> = keep.iter().collect();
                    let extra: BTreeSet<std::ffi::OsString> = later
                        .iter()
                        .filter(|n| !listed.contains(n))
                        .cloned()
                        .collect();
                    tracing::debug!(batch = self.batch_id, path = %dir, kept = extra.len(), "names that later records move away are kept");
                    keep.extend(extra);
                }
                // The slave learns no excluded name, so its copies of them
                // (from before the pattern was set) are pruned.
                keep.retain(|k| !dir.join(k).is_ok_and(|p| self.filter.excluded(&p)));
                self.prune_names += keep.len() as u64;
                let kinds: Option<Vec<NodeKind>> = keep
                    .iter()
                    .map(|k| {
                        let child = dir.join(k).ok()?;
                        self.dir
                            .lstat(&child)
                            .ok()
                            .map(|m| node_kind(m.file_type()))
                    })
                    .collect();
                EntryOp::Prune {
                    path: dir.clone(),
                    keep: keep
                        .iter()
                        .map(|k| serde_bytes::ByteBuf::from(k.clone().into_encoded_bytes()))
                        .collect(),
                    // A name gone meanwhile: compare no types this time.
                    kinds: kinds.unwrap_or_default(),
                }
            }
        };
        match &op {
            EntryOp::Rename { from, to } => {
                self.memory.origins.rename(from, to);
                self.renamed_to.push(to.clone());
            }
            EntryOp::Unlink { path } | EntryOp::Rmdir { path } => {
                self.memory.origins.forget(path);
            }
            EntryOp::Create { path, .. } => {
                self.memory.origins.created_from_brick(self.brick, path);
            }
            EntryOp::Mkdir { path, .. }
            | EntryOp::Symlink { path, .. }
            | EntryOp::Mknod { path, .. } => {
                self.memory.origins.made_from_brick(self.brick, path);
            }
            EntryOp::Link { .. } | EntryOp::Prune { .. } => {}
        }
        let seq = self.link.next_seq();
        let paths: Vec<RelPath> = match (&op, op.paths()) {
            // Its failures name the path concerned (the directory, or a
            // child of another type).
            (EntryOp::Prune { .. }, _) => vec![],
            (_, (path, other)) => std::iter::once(path).chain(other).cloned().collect(),
        };
        if !paths.is_empty() {
            self.ledger.record(seq, Awaiting::Entry { paths });
        }
        tracing::debug!(batch = self.batch_id, seq, "entry {op:?}");
        self.link.send(&Request::Entry { seq, op }).await?;
        self.ledger.entry_sent();
        self.report.entries += 1;
        Ok(())
    }

    /// Whether this brick is one of a distributed volume that still holds
    /// `path` (on this brick or another): a removal replayed from this
    /// brick's changelog (an unlink, a rmdir, a rename's source) must not
    /// take it from the slave. GlusterFS records, say, the unlink of a link
    /// file that a rebalance or a rename replaced, under the name of the
    /// file the volume keeps.
    pub(super) fn volume_holds(&self, path: &RelPath) -> bool {
        let held = self.volume.is_some_and(|v| v.holds(path));
        if held {
            tracing::debug!(batch = self.batch_id, path = %path, "the volume still holds it: not removed");
        }
        held
    }
}
