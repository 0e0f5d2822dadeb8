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
                let md = lstat(p).filter(|m| m.is_file());
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
            Entry::Unlink(p) => EntryOp::Unlink { path: p.clone() },
            Entry::Rmdir(p) => EntryOp::Rmdir { path: p.clone() },
            Entry::Rename { from, to } => {
                self.memory.links.rename(from, to);
                EntryOp::Rename {
                    from: from.clone(),
                    to: to.clone(),
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
            EntryOp::Mkdir { path, .. }
            | EntryOp::Create { path, .. }
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
}
