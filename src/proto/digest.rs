//! Digests of a directory's listing and of a whole subtree, compared by
//! both ends instead of sending the names.

use super::*;

/// The type of a directory entry, as far as [`EntryOp::Prune`] compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The digest of a directory listing that [`Request::CheckListing`]
/// compares: BLAKE3 over the entries sorted by name, each as its name's
/// length, its name and its kind. Master and slave both compute it here, so
/// what a listing covers is decided in one place. Sorts `entries`.
pub fn listing_digest<N: AsRef<[u8]>>(entries: &mut [(N, NodeKind)]) -> [u8; 32] {
    entries.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    let mut hasher = blake3::Hasher::new();
    let mut kind_buf = [0u8; 16];
    for (name, kind) in entries.iter() {
        let name = name.as_ref();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name);
        // The kind's wire encoding: a kind added later is covered as well.
        let kind = postcard::to_slice(kind, &mut kind_buf).map_or(&[][..], |b| &*b);
        hasher.update(kind);
    }
    *hasher.finalize().as_bytes()
}

/// The digest of a whole subtree that [`Request::CheckTree`] compares:
/// BLAKE3 over its entries in walk order (depth first, the names of each
/// directory in byte order, a directory before what it holds, the subtree's
/// root first with an empty path). Each entry adds its path below the root,
/// its kind, and for regular files and directories what a quick check and
/// the attributes sent would compare: permission bits, mtime, a file's size,
/// and with `owners` its numeric owner. Master and slave both build it
/// here, so what a subtree check covers is decided in one place.
pub struct TreeDigest {
    hasher: blake3::Hasher,
    owners: bool,
}

/// One entry of a subtree, as [`TreeDigest`] covers it.
#[derive(Debug, Clone, Copy)]
pub struct TreeEntry<'a> {
    /// Its path below the subtree's root (empty for the root).
    pub path: &'a [u8],
    pub kind: NodeKind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    /// Compared for regular files only.
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
}

impl TreeDigest {
    /// `owners`: numeric owners are compared too (the slave applies them
    /// only when it runs as root, and the master sends them only then).
    pub fn new(owners: bool) -> TreeDigest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[u8::from(owners)]);
        TreeDigest { hasher, owners }
    }

    pub fn add(&mut self, e: &TreeEntry) {
        let h = &mut self.hasher;
        h.update(&(e.path.len() as u64).to_le_bytes());
        h.update(e.path);
        let mut kind_buf = [0u8; 16];
        let kind = postcard::to_slice(&e.kind, &mut kind_buf).map_or(&[][..], |b| &*b);
        h.update(kind);
        if matches!(e.kind, NodeKind::File | NodeKind::Dir) {
            h.update(&e.mode.to_le_bytes());
            let size = if e.kind == NodeKind::File { e.size } else { 0 };
            h.update(&size.to_le_bytes());
            h.update(&e.mtime_sec.to_le_bytes());
            h.update(&e.mtime_nsec.to_le_bytes());
            if self.owners {
                h.update(&e.uid.to_le_bytes());
                h.update(&e.gid.to_le_bytes());
            }
        }
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}
