//! What a slave directory knows about the masters that ship to it and about
//! its own promotion, kept as xattrs of its root in the slave's own
//! `user.georep.` namespace (a master's xattrs never set or remove a name
//! there, and the root's attributes are not replicated), so they travel
//! with the directory and are made durable with the batch they belong to.
//!
//! * `user.georep.stime.<16 hex digits>`: `<stime ns> <brick>`, the
//!   stime a master brick (`<node>:<path>`) had when its last committed
//!   batch began (see `Request::Stime`): everything it changed before that
//!   is here. Written before the commit's sync.
//! * `user.georep.promoted`: the moment (ns) this directory was promoted to
//!   be the primary (`geo-rep promote`). A promoted directory serves no
//!   master any more: `geo-rep slave` refuses it at the handshake and at
//!   every commit.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, XattrFlags};
use rustix::io::Errno;

/// Prefix of the per-brick stime records.
pub const STIME_XATTR_PREFIX: &str = "user.georep.stime.";
/// The promotion mark.
pub const PROMOTED_XATTR: &str = "user.georep.promoted";

/// One master brick's last committed stime, as this directory recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrickStime {
    /// `<node>:<brick path>`, as the master named it.
    pub brick: String,
    /// Nanoseconds since the epoch.
    pub stime: i64,
}

fn stime_name(brick: &str) -> String {
    keyed_name(STIME_XATTR_PREFIX, brick)
}

/// `prefix` and 16 hex digits of a hash of `key`: one xattr name per key,
/// of bounded length whatever the key.
pub(super) fn keyed_name(prefix: &str, key: &str) -> String {
    let hash = blake3::hash(key.as_bytes());
    let hex: String = hash.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}{hex}")
}

/// Records `brick`'s stime on the root `dir` (durable with the next sync).
pub fn record_stime(dir: BorrowedFd<'_>, brick: &str, stime: i64) -> Result<(), Errno> {
    let value = format!("{stime} {brick}");
    rfs::fsetxattr(
        dir,
        stime_name(brick).as_str(),
        value.as_bytes(),
        XattrFlags::empty(),
    )
}

/// Every brick stime recorded on the root `dir`, sorted by brick.
pub fn stimes(dir: impl AsFd) -> Result<Vec<BrickStime>, Errno> {
    let dir = dir.as_fd();
    let mut found = Vec::new();
    for name in xattr_names(dir)? {
        if !name.starts_with(STIME_XATTR_PREFIX.as_bytes()) {
            continue;
        }
        let Some(value) = get(dir, &name)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&value);
        if let Some((ns, brick)) = text.split_once(' ') {
            if let Ok(stime) = ns.parse() {
                found.push(BrickStime {
                    brick: brick.to_owned(),
                    stime,
                });
            }
        }
    }
    found.sort_by(|a, b| a.brick.cmp(&b.brick));
    Ok(found)
}

/// When the root `dir` was promoted, if it was.
pub fn promoted(dir: impl AsFd) -> Result<Option<i64>, Errno> {
    Ok(get(dir.as_fd(), PROMOTED_XATTR.as_bytes())?
        .and_then(|v| String::from_utf8_lossy(&v).trim().parse().ok()))
}

/// Marks the root `dir` promoted at `at` (ns), or clears the mark.
pub fn set_promoted(dir: impl AsFd, at: Option<i64>) -> Result<(), Errno> {
    let dir = dir.as_fd();
    match at {
        Some(at) => rfs::fsetxattr(
            dir,
            PROMOTED_XATTR,
            at.to_string().as_bytes(),
            XattrFlags::empty(),
        ),
        None => match rfs::fremovexattr(dir, PROMOTED_XATTR) {
            Ok(()) | Err(Errno::NODATA) => Ok(()),
            Err(e) => Err(e),
        },
    }?;
    rfs::fsync(dir)
}

fn get(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let name = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
    let mut buf = vec![0u8; 8192];
    match rfs::fgetxattr(dir, name.as_c_str(), &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

fn xattr_names(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut list = vec![0u8; 64 * 1024];
    let n = match rfs::flistxattr(dir, &mut list[..]) {
        Ok(n) => n,
        Err(Errno::RANGE) => {
            list.resize(rfs::flistxattr(dir, &mut [0u8; 0][..])?, 0);
            rfs::flistxattr(dir, &mut list[..])?
        }
        Err(e) => return Err(e),
    };
    Ok(list[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stimes_and_the_promotion_mark_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        assert_eq!(stimes(&fd).unwrap(), []);
        record_stime(fd.as_fd(), "n1:/b/2", 7).unwrap();
        record_stime(fd.as_fd(), "n1:/b/1", 5).unwrap();
        record_stime(fd.as_fd(), "n1:/b/1", 9).unwrap();
        let got = stimes(&fd).unwrap();
        let want = [("n1:/b/1", 9), ("n1:/b/2", 7)]
            .map(|(brick, stime)| BrickStime {
                brick: brick.into(),
                stime,
            })
            .to_vec();
        assert_eq!(got, want);
        assert_eq!(promoted(&fd).unwrap(), None);
        set_promoted(&fd, Some(42)).unwrap();
        assert_eq!(promoted(&fd).unwrap(), Some(42));
        set_promoted(&fd, None).unwrap();
        set_promoted(&fd, None).unwrap();
        assert_eq!(promoted(&fd).unwrap(), None);
    }
}
