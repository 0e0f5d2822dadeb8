//! The fencing epoch of each replica set, beside its election lock:
//! `<sets dir>/<set>.epoch` holds `<epoch> <holder>`, the last grant of the
//! set. The worker that wins the set's lock raises it ([`EpochFile::raise`])
//! while it holds the lock, durably, before it ships; the slave then
//! refuses every other grant of a lower or equal epoch (see "Fencing" in
//! `proto`). The file only proposes a number: the slave's record decides.
//!
//! A new epoch is one more than the file's, and at least the current time
//! in seconds: a session made again after its directory was removed (or a
//! node that reads a stale copy of the file) still proposes an epoch above
//! those the slave recorded before, as long as the nodes' clocks are in
//! step. A member deposed by a grant it cannot see on the meta-volume yet
//! does not run for the set (see `monitor::fence`), so the clock never
//! lets it take the set back.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::MetaError;
use crate::session::Timestamp;

/// One grant of a set's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub epoch: u64,
    /// Names the grant: node, brick and a part unique to the raise.
    pub holder: String,
}

/// The epoch file of one set.
#[derive(Debug, Clone)]
pub struct EpochFile {
    path: PathBuf,
}

impl EpochFile {
    /// The file of `set` in `dir`, the directory of the sets' locks.
    pub fn new(dir: &Path, set: &str) -> EpochFile {
        EpochFile {
            path: dir.join(format!("{set}.epoch")),
        }
    }

    /// The last grant, if one was written; a file that does not parse is
    /// none (a raise then goes by the clock).
    pub fn read(&self) -> Result<Option<Grant>, MetaError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(super::err(&self.path)(e)),
        }
    }

    /// Writes a new grant for `holder`, later than the file's last one and
    /// than `floor`; durable (file and directory synced) when it returns.
    /// Call it only while holding the set's election lock.
    pub fn raise(&self, holder: &str, floor: u64) -> Result<Grant, MetaError> {
        let last = match self.read() {
            Ok(g) => g.map_or(0, |g| g.epoch),
            Err(e) => {
                tracing::warn!("{e}; raising the epoch by the clock");
                0
            }
        };
        let now = u64::try_from(Timestamp::now().secs()).unwrap_or(0);
        let grant = Grant {
            epoch: (last + 1).max(floor + 1).max(now),
            holder: holder.to_owned(),
        };
        self.write(&grant).map_err(super::err(&self.path))?;
        Ok(grant)
    }

    fn write(&self, grant: &Grant) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::fsutil::create_private_dir(dir)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{} {}", grant.epoch, grant.holder)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

fn parse(text: &str) -> Option<Grant> {
    let (epoch, holder) = text.trim_end_matches('\n').split_once(' ')?;
    Some(Grant {
        epoch: epoch.parse().ok()?,
        holder: holder.to_owned(),
    })
}

/// A holder name for a new grant on this node: `<node>:<brick> <16 hex>`,
/// the hex part unique to this raise.
pub fn holder_name(node: &str, brick: &Path) -> String {
    static RAISES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RAISES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = Timestamp::now().nanos();
    let seed = format!(
        "{node}:{} {now} {} {n}",
        brick.display(),
        std::process::id()
    );
    let hash = blake3::hash(seed.as_bytes()).to_hex();
    format!("{node}:{} {}", brick.display(), &hash[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_raise_is_later_than_the_last_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = EpochFile::new(&dir.path().join("sets"), "gv0-replicate-0");
        assert_eq!(file.read().unwrap(), None);
        let first = file.raise("node1:/b one", 0).unwrap();
        assert!(first.epoch >= u64::try_from(Timestamp::now().secs()).unwrap() - 1);
        assert_eq!(file.read().unwrap(), Some(first.clone()));
        let second = file.raise("node2:/b", 0).unwrap();
        assert!(second.epoch > first.epoch);
        assert_eq!(file.read().unwrap().unwrap().holder, "node2:/b");
        // Above a floor the caller knows of (a deposing epoch).
        let third = file.raise("node1:/b", second.epoch + 100).unwrap();
        assert_eq!(third.epoch, second.epoch + 101);
        std::fs::write(dir.path().join("sets/gv0-replicate-0.epoch"), b"torn").unwrap();
        assert_eq!(file.read().unwrap(), None);
        let a = holder_name("node1", Path::new("/b"));
        assert!(a.starts_with("node1:/b "), "{a}");
        assert_ne!(a, holder_name("node1", Path::new("/b")));
    }
}
