//! Writing files on the meta-volume so that a split heals: each file is
//! written by one node only (its name carries the node's), and rewritten
//! in place (truncated, written, synced), never replaced by a rename.
//!
//! While the pool is split, each side writes to its own brick of the
//! meta-volume. A rename makes a new inode under the old name on one side
//! only, and two sides writing one file both change it: either way the
//! name is in split-brain once the partition heals (GlusterFS answers
//! EIO for it until an operator resolves it). A file of one writer,
//! changed in place, heals from that side. A reader may meet a file
//! being rewritten (empty, or a prefix of it): callers treat what does
//! not parse as absent.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces the contents of `path` (mode 0600) in place; durable, with its
/// directory entry, when it returns.
pub fn rewrite(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::fsutil::create_private_dir(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// The text of each file in `dir` whose name starts with `prefix`; one
/// that cannot be read is left out with a warning (a missing `dir` has
/// none).
pub fn read_each(dir: &Path, prefix: &str) -> io::Result<Vec<(PathBuf, String)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| match std::fs::read_to_string(e.path()) {
            Ok(text) => Some((e.path(), text)),
            Err(err) => {
                tracing::warn!("reading {}: {err}", e.path().display());
                None
            }
        })
        .collect())
}
