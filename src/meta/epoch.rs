//! The fencing epoch of each replica set, beside its election lock: each
//! node keeps its own last grant in `<sets dir>/<set>.epoch.<node>`
//! (`<epoch> <holder>`), and the set's epoch is the highest of them. The
//! worker that wins the set's lock raises it ([`EpochFile::raise`]) while
//! it holds the lock, durably, before it ships; the slave then refuses
//! every other grant of a lower or equal epoch (see "Fencing" in `proto`).
//! The files only propose a number: the slave's record decides.
//!
//! One file per node, rewritten in place (see [`super::write`]): the
//! meta-volume may be split when a grant is written.
//!
//! A new epoch is one more than the highest, and at least the current time
//! in seconds: a session made again after its directory was removed (or a
//! node that reads a stale copy of the files) still proposes an epoch
//! above those the slave recorded before, as long as the nodes' clocks are
//! in step. A member deposed by a grant it cannot see on the meta-volume
//! yet does not run for the set (see `monitor::fence`), so the clock never
//! lets it take the set back.

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

/// The epoch files of one set.
#[derive(Debug, Clone)]
pub struct EpochFile {
    dir: PathBuf,
    set: String,
}

impl EpochFile {
    /// The files of `set` in `dir`, the directory of the sets' locks.
    pub fn new(dir: &Path, set: &str) -> EpochFile {
        EpochFile {
            dir: dir.to_owned(),
            set: set.to_owned(),
        }
    }

    fn prefix(&self) -> String {
        format!("{}.epoch.", self.set)
    }

    /// Every node's last grant; a file that cannot be read or does not
    /// parse is left out (a raise then goes by the others and the clock).
    pub fn grants(&self) -> Result<Vec<Grant>, MetaError> {
        Ok(super::write::read_each(&self.dir, &self.prefix())
            .map_err(super::err(&self.dir))?
            .iter()
            .filter_map(|(_, text)| parse(text))
            .collect())
    }

    /// The set's last grant: the highest epoch of any node.
    pub fn latest(&self) -> Result<Option<Grant>, MetaError> {
        Ok(self.grants()?.into_iter().max_by_key(|g| g.epoch))
    }

    /// Writes a new grant for `holder` on `node`, later than every node's
    /// and than `floor`; durable (file and directory synced) when it
    /// returns. Call it only while holding the set's election lock.
    pub fn raise(&self, node: &str, holder: &str, floor: u64) -> Result<Grant, MetaError> {
        let last = match self.latest() {
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
        let path = self.dir.join(format!("{}{node}", self.prefix()));
        let text = format!("{} {}\n", grant.epoch, grant.holder);
        super::write::rewrite(&path, text.as_bytes()).map_err(super::err(&path))?;
        Ok(grant)
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
    fn each_raise_is_later_than_every_nodes_last() {
        let dir = tempfile::tempdir().unwrap();
        let sets = dir.path().join("sets");
        let file = EpochFile::new(&sets, "gv0-replicate-0");
        assert_eq!(file.latest().unwrap(), None);
        let first = file.raise("node1", "node1:/b one", 0).unwrap();
        assert!(first.epoch >= u64::try_from(Timestamp::now().secs()).unwrap() - 1);
        assert_eq!(file.latest().unwrap(), Some(first.clone()));
        let second = file.raise("node2", "node2:/b", 0).unwrap();
        assert!(second.epoch > first.epoch);
        assert_eq!(file.latest().unwrap(), Some(second.clone()));
        // node1 raises again over node2's grant, in its own file.
        let third = file.raise("node1", "node1:/b", second.epoch + 100).unwrap();
        assert_eq!(third.epoch, second.epoch + 101);
        assert_eq!(file.grants().unwrap().len(), 2);
        // Another set's files are not this one's.
        EpochFile::new(&sets, "gv0-replicate-01")
            .raise("node1", "x", third.epoch)
            .unwrap();
        assert_eq!(file.latest().unwrap(), Some(third));
        // A torn file is left out.
        std::fs::write(sets.join("gv0-replicate-0.epoch.node1"), b"torn").unwrap();
        assert_eq!(file.latest().unwrap(), Some(second));
        let a = holder_name("node1", Path::new("/b"));
        assert!(a.starts_with("node1:/b "), "{a}");
        assert_ne!(a, holder_name("node1", Path::new("/b")));
    }
}
