//! The times GlusterFS shows its clients: with `features.ctime` on (the
//! default since GlusterFS 7) a mount reports the times kept in the
//! brick's `trusted.glusterfs.mdata` xattr, not the brick inode's own,
//! which differ by the time the request took to reach the brick.
//!
//! ```text
//! version u8 (= 1)  flags u64  ctime {sec u64, nsec u64}
//!                              mtime {sec u64, nsec u64}
//!                              atime {sec u64, nsec u64}    big-endian
//! ```

use std::path::Path;

const NAME: &str = "trusted.glusterfs.mdata";
const LEN: usize = 1 + 8 + 6 * 8;

/// The mtime (seconds, nanoseconds) a GlusterFS client sees for `path` on
/// a brick (a symlink is not followed); `None` without a valid xattr.
pub fn client_mtime(path: &Path) -> Option<(i64, u32)> {
    let mut buf = [0u8; 64];
    let n = rustix::fs::lgetxattr(path, NAME, &mut buf[..]).ok()?;
    decode(&buf[..n])
}

fn decode(b: &[u8]) -> Option<(i64, u32)> {
    if b.len() != LEN || b[0] != 1 {
        return None;
    }
    let word =
        |i: usize| u64::from_be_bytes(b[9 + 8 * i..17 + 8 * i].try_into().unwrap_or_default());
    let (sec, nsec) = (word(2), word(3));
    Some((
        i64::try_from(sec).ok()?,
        u32::try_from(nsec).ok().filter(|n| *n < 1_000_000_000)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mtime_of_a_real_mdata_xattr() {
        // From a GlusterFS 10.3 brick; the mount showed mtime
        // 2026-11-27 16:31:13.710107391 for this file.
        let hex = "010000000000000000000000006b09b0510000000030d391ee000000006b09b051000000002a5360ff000000006b09b051000000002a16744e";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(decode(&bytes), Some((1795797073, 710107391)));
        assert_eq!(decode(&bytes[..20]), None);
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(decode(&v2), None);
    }
}
