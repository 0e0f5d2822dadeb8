//! The Active member's fencing epoch (see "Fencing" in `proto`): the winner
//! of a set's election raises the set's epoch beside the lock
//! ([`crate::meta::epoch`]) and ships under it; the slave refuses every
//! other grant. A member the slave told it is deposed stops shipping,
//! steps down, and stays out of the election until the meta-volume shows
//! the grant that deposed it: during a partition its side of the
//! meta-volume still shows an older epoch and its lock may look free, and
//! running again from there would only take the set back and forth.

use std::path::Path;

use crate::meta::epoch::{holder_name, EpochFile, Grant};
use crate::proto::Fence;
use crate::transport::link::LinkError;

/// Why an Active member stopped before its shutdown.
pub enum GaveUp {
    /// Its worker failed for the failover interval without shipping.
    Failing(String),
    /// The slave has seen a later epoch of its set.
    Deposed(Deposed),
}

/// A slave's word that a later grant holds the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposed {
    /// The worker's epoch, refused.
    pub epoch: u64,
    /// The one the slave holds, and its holder.
    pub by: Grant,
}

impl Deposed {
    /// The [`LinkError::Deposed`] anywhere in `err`'s chain of causes.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> Option<Deposed> {
        let mut cause = Some(err);
        while let Some(e) = cause {
            if let Some(LinkError::Deposed(d)) = e.downcast_ref::<LinkError>() {
                return Some(Deposed {
                    epoch: d.epoch,
                    by: Grant {
                        epoch: d.current,
                        holder: d.holder.clone(),
                    },
                });
            }
            cause = e.source();
        }
        None
    }

    /// The member's last error while it waits.
    pub fn describe(&self, set: &str) -> String {
        format!(
            "deposed as Active of {set} by epoch {} (held by {}): the slave refused this node's epoch {}; out of the election until the meta-volume shows epoch {}",
            self.by.epoch, self.by.holder, self.epoch, self.by.epoch
        )
    }

    /// Whether the meta-volume, as this node reads it, shows the deposing
    /// grant (or a later one): the partition that hid it is over.
    pub fn seen_in(&self, file: &EpochFile) -> bool {
        match file.grants() {
            Ok(grants) => grants
                .iter()
                .any(|g| g.epoch > self.by.epoch || *g == self.by),
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        }
    }
}

/// Raises `set`'s epoch in `dir` for `brick` of this node (the caller holds
/// the set's lock), above `floor` (this member's last grant): the fence it
/// ships under.
pub fn raise(
    dir: &Path,
    set: &str,
    brick: &Path,
    floor: u64,
) -> Result<Fence, crate::meta::MetaError> {
    let node = node_name();
    let grant = EpochFile::new(dir, set).raise(&node, &holder_name(&node, brick), floor)?;
    Ok(Fence {
        set: set.to_owned(),
        epoch: grant.epoch,
        holder: grant.holder,
    })
}

/// This node's name on the meta-volume: its host name.
pub fn node_name() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deposed_member_waits_for_the_grant_that_deposed_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = EpochFile::new(dir.path(), "gv0-replicate-0");
        let mine = raise(dir.path(), "gv0-replicate-0", Path::new("/b"), 0).unwrap();
        let deposed = Deposed {
            epoch: mine.epoch,
            by: Grant {
                epoch: mine.epoch + 1,
                holder: "node2:/b 1".into(),
            },
        };
        // Its side of the meta-volume shows its own grant only.
        assert!(!deposed.seen_in(&file));
        let err = crate::transport::TransportError::Link {
            target: "dr".into(),
            source: LinkError::Deposed(Box::new(crate::proto::Deposed {
                set: "gv0-replicate-0".into(),
                epoch: deposed.epoch,
                current: deposed.by.epoch,
                holder: deposed.by.holder.clone(),
                root: "/srv/dr".into(),
            })),
        };
        assert_eq!(Deposed::of(&err), Some(deposed.clone()));
        assert!(deposed.describe("gv0-replicate-0").contains(&format!(
            "deposed as Active of gv0-replicate-0 by epoch {}",
            mine.epoch + 1
        )));
        // The partition heals: the other grant shows.
        std::fs::write(
            dir.path().join("gv0-replicate-0.epoch.node2"),
            format!("{} node2:/b 1\n", mine.epoch + 1),
        )
        .unwrap();
        assert!(deposed.seen_in(&file));
    }
}
