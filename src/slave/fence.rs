//! The fence of each replica set (see "Fencing" in `proto`): the highest
//! epoch the slave has seen for a set and the grant that holds it, kept as
//! an xattr of the root in the slave's own `user.georep.` namespace (as
//! `commits` keeps the stimes), so it survives the slave process, a restart
//! of the host, and travels with the directory.
//!
//! * `user.georep.fence.<16 hex digits>`: `<epoch>\n<holder>\n<set>`.
//!
//! A raise is a read, a comparison and a write under an exclusive `flock`
//! of the root directory, so two masters raising at once never move the
//! record back; it is made durable (`fsync` of the root) before the
//! declaration is answered. A check is a read: a session compares the
//! record with its own declaration before every request.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, FlockOperation, XattrFlags};
use rustix::io::Errno;

use crate::proto::Fence;

/// Prefix of the per-set fence records.
pub const FENCE_XATTR_PREFIX: &str = "user.georep.fence.";

/// The epoch of a set as the slave recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    pub holder: String,
}

/// What a declaration meets on the slave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The declared epoch is the recorded one, by the same holder.
    Holds,
    /// The declared epoch is later than the recorded one (or none is).
    Raises,
    /// A later epoch, or the same one by another holder, is recorded.
    Deposed(Held),
}

/// How `declared` compares with what is `recorded` for its set.
pub fn judge(recorded: Option<&Held>, declared: &Fence) -> Verdict {
    match recorded {
        None => Verdict::Raises,
        Some(r) if declared.epoch > r.epoch => Verdict::Raises,
        Some(r) if declared.epoch == r.epoch && declared.holder == r.holder => Verdict::Holds,
        Some(r) => Verdict::Deposed(r.clone()),
    }
}

fn name(set: &str) -> String {
    super::commits::keyed_name(FENCE_XATTR_PREFIX, set)
}

/// The record of `set` on the root `dir`, if any. A record that does not
/// parse, or names another set (a hash collision), counts as none.
pub fn recorded(dir: impl AsFd, set: &str) -> Result<Option<Held>, Errno> {
    let mut buf = vec![0u8; 2 * crate::proto::FENCE_NAME_MAX + 64];
    let n = match rfs::fgetxattr(dir.as_fd(), name(set).as_str(), &mut buf[..]) {
        Ok(n) => n,
        Err(Errno::NODATA) => return Ok(None),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&buf[..n]);
    let mut lines = text.splitn(3, '\n');
    let (Some(epoch), Some(holder), Some(of)) = (lines.next(), lines.next(), lines.next()) else {
        return Ok(None);
    };
    Ok(epoch.parse().ok().filter(|_| of == set).map(|epoch| Held {
        epoch,
        holder: holder.to_owned(),
    }))
}

/// Declares `fence` on the root `dir`: records it (durably) when it raises
/// the set's epoch; the record it meets otherwise.
pub fn declare(dir: BorrowedFd<'_>, fence: &Fence) -> Result<Verdict, Errno> {
    // A raise by another slave process of this root waits for this one.
    rfs::flock(dir, FlockOperation::LockExclusive)?;
    let verdict = declare_locked(dir, fence);
    let unlocked = rfs::flock(dir, FlockOperation::Unlock);
    let verdict = verdict?;
    unlocked?;
    Ok(verdict)
}

fn declare_locked(dir: BorrowedFd<'_>, fence: &Fence) -> Result<Verdict, Errno> {
    let verdict = judge(recorded(dir, &fence.set)?.as_ref(), fence);
    if verdict == Verdict::Raises {
        let value = format!("{}\n{}\n{}", fence.epoch, fence.holder, fence.set);
        rfs::fsetxattr(
            dir,
            name(&fence.set).as_str(),
            value.as_bytes(),
            XattrFlags::empty(),
        )?;
        rfs::fsync(dir)?;
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(epoch: u64, holder: &str) -> Fence {
        Fence {
            set: "gv0-replicate-0".into(),
            epoch,
            holder: holder.into(),
        }
    }

    #[test]
    fn a_lower_epoch_or_another_holder_of_the_same_is_deposed() {
        let dir = tempfile::tempdir().unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        let fd = fd.as_fd();
        assert_eq!(declare(fd, &fence(5, "node1")).unwrap(), Verdict::Raises);
        // The same grant again (another stream of its link, a reconnect).
        assert_eq!(declare(fd, &fence(5, "node1")).unwrap(), Verdict::Holds);
        let held = Held {
            epoch: 5,
            holder: "node1".into(),
        };
        assert_eq!(
            declare(fd, &fence(5, "node2")).unwrap(),
            Verdict::Deposed(held.clone())
        );
        assert_eq!(
            declare(fd, &fence(4, "node1")).unwrap(),
            Verdict::Deposed(held)
        );
        assert_eq!(declare(fd, &fence(6, "node2")).unwrap(), Verdict::Raises);
        // node1's grant is deposed now, whichever epoch it declared.
        let held = Held {
            epoch: 6,
            holder: "node2".into(),
        };
        assert_eq!(
            judge(
                recorded(fd, "gv0-replicate-0").unwrap().as_ref(),
                &fence(5, "node1")
            ),
            Verdict::Deposed(held.clone())
        );
        // Each set has its own record.
        let other = Fence {
            set: "gv0-replicate-1".into(),
            ..fence(1, "node1")
        };
        assert_eq!(declare(fd, &other).unwrap(), Verdict::Raises);
        assert_eq!(recorded(fd, "gv0-replicate-0").unwrap(), Some(held));
    }

    #[test]
    fn the_record_outlives_the_process_that_made_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let fd = std::fs::File::open(dir.path()).unwrap();
            declare(fd.as_fd(), &fence(9, "node2")).unwrap();
        }
        // Read through a new descriptor, as a new slave process does.
        let fd = std::fs::File::open(dir.path()).unwrap();
        assert_eq!(
            recorded(&fd, "gv0-replicate-0").unwrap(),
            Some(Held {
                epoch: 9,
                holder: "node2".into()
            })
        );
        assert!(matches!(
            declare(fd.as_fd(), &fence(8, "node1")).unwrap(),
            Verdict::Deposed(Held { epoch: 9, .. })
        ));
        // A torn record counts as none, never as a raise past a number.
        rfs::fsetxattr(
            &fd,
            name("gv0-replicate-0").as_str(),
            b"x",
            XattrFlags::empty(),
        )
        .unwrap();
        assert_eq!(recorded(&fd, "gv0-replicate-0").unwrap(), None);
    }
}
