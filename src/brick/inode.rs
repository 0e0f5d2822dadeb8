//! A brick entry's identity: its device and inode numbers.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// Which file a name on the brick is (hard links share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Inode {
    pub dev: u64,
    pub ino: u64,
}

impl Inode {
    pub fn of(md: &Metadata) -> Inode {
        Inode {
            dev: md.dev(),
            ino: md.ino(),
        }
    }
}
