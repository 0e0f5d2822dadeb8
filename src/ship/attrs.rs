//! Attributes: what a brick entry's mode, owner, times and xattrs are on
//! the wire, and their sending.

use super::*;

/// Attributes of a master file, as sent (`xattrs` filled in by the caller).
pub(super) fn attrs_of(md: &fs::Metadata, with_owner: bool) -> Attrs {
    Attrs {
        mode: md.permissions().mode() & 0o7777,
        uid: with_owner.then(|| md.uid()),
        gid: with_owner.then(|| md.gid()),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        xattrs: None,
    }
}

/// The xattrs of the open `file`, or else of the inode `inode` names (a
/// [`Handle::proc_path`](crate::brick::dir::Handle::proc_path): followed),
/// that `scope` replicates. `Ok(None)` if the file system does not support
/// them.
pub(super) fn synced_xattrs(
    inode: &Path,
    file: Option<&File>,
    scope: XattrScope,
) -> io::Result<Option<Vec<Xattr>>> {
    use rustix::io::Errno;
    let list_into = |buf: &mut Vec<u8>| -> Result<usize, Errno> {
        match file {
            Some(f) => rustix::fs::flistxattr(f, &mut buf[..]),
            None => rustix::fs::listxattr(inode, &mut buf[..]),
        }
    };
    // Most files have few or no xattrs: start small (zeroing 64 KiB buffers
    // for every file sent was a visible cost of a first sync).
    let mut list = vec![0u8; 4 * 1024];
    let n = match list_into(&mut list) {
        Ok(n) => n,
        Err(Errno::RANGE) => {
            list.resize(MAX_XATTR_BYTES, 0);
            list_into(&mut list)?
        }
        Err(Errno::NOTSUP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    let mut total = 0;
    let mut value = Vec::new();
    for name in list[..n].split(|b| *b == 0) {
        if !scope.includes(name) {
            continue;
        }
        if value.is_empty() {
            value.resize(64 * 1024, 0);
        }
        let got = match file {
            Some(f) => rustix::fs::fgetxattr(f, name, &mut value[..]),
            None => rustix::fs::getxattr(inode, name, &mut value[..]),
        };
        let len = match got {
            Ok(len) => len,
            // Removed since it was listed.
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        total += name.len() + len;
        if total > MAX_XATTR_BYTES {
            return Err(io::Error::other(format!(
                "its user.* extended attributes exceed {MAX_XATTR_BYTES} bytes"
            )));
        }
        out.push(Xattr {
            name: serde_bytes::ByteBuf::from(name.to_vec()),
            value: serde_bytes::ByteBuf::from(value[..len].to_vec()),
        });
    }
    Ok(Some(out))
}

impl<'a, S: AsyncRead + AsyncWrite> Shipper<'a, S> {
    pub(super) fn client_times(&self, full: &Path, attrs: &mut Attrs) {
        if let Some((sec, nsec)) = self.client_mtime(full) {
            attrs.mtime_sec = sec;
            attrs.mtime_nsec = nsec;
        }
    }

    /// The mtime GlusterFS clients see, on a GlusterFS brick.
    pub(super) fn client_mtime(&self, full: &Path) -> Option<(i64, u32)> {
        self.gluster_brick
            .then(|| crate::changelog::glusterfs::client_mtime(full))
            .flatten()
    }

    /// The mtime the slave gets for a file of the brick.
    pub(super) fn mtime_of(&self, full: &Path, md: &fs::Metadata) -> (i64, u32) {
        self.client_mtime(full)
            .unwrap_or((md.mtime(), md.mtime_nsec() as u32))
    }

    pub(super) async fn send_meta(&mut self, path: &RelPath) -> Result<(), ShipError> {
        if self.withheld(path) {
            return Ok(());
        }
        // Resolved beneath the brick: the attributes of whatever a symlink
        // that replaced an ancestor points to are never read (the slave's
        // copy would get them, and their owner would see them leave).
        let read = self
            .dir
            .handle(path)
            .and_then(|h| h.metadata().map(|md| (md, h)));
        let (md, handle) = match read {
            Ok((md, h)) if self.link_file(&h, &md) => return Ok(()),
            Ok(x) => x,
            Err(e) if unresolved(&e) => return Ok(()),
            Err(e) => {
                self.local_error("stat", path, e);
                return Ok(());
            }
        };
        let seq = self.link.next_seq();
        let mut attrs = attrs_of(&md, self.with_owner);
        self.client_times(&path.under(self.brick), &mut attrs);
        if self.xattrs.any() && (md.is_file() || md.is_dir()) {
            match synced_xattrs(&handle.proc_path(), None, self.xattrs) {
                Ok(x) => attrs.xattrs = x,
                // The inode is held: no error here means it is gone.
                Err(e) => self.local_error("read the extended attributes of", path, e),
            }
        }
        self.memory.origins.confirmed(path, Inode::of(&md));
        tracing::debug!(batch = self.batch_id, seq, path = %path, "set attributes");
        self.link
            .send(&Request::SetAttr {
                seq,
                path: path.clone(),
                attrs,
            })
            .await?;
        self.report.meta += 1;
        Ok(())
    }
}
