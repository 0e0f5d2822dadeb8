//! What travels of an entry besides its content: attributes, xattrs,
//! special files.

use super::*;

/// Mode, ownership and modification time of one file, directory or symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// Permission bits (`st_mode & 0o7777`); ignored for symlinks.
    pub mode: u32,
    /// Numeric owner; applied only when the slave runs as root.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// The complete set of synced extended attributes (see
    /// [`is_synced_xattr`]: `user.*` and the POSIX ACLs) of a regular file or
    /// directory: the slave sets these and removes its other synced ones.
    /// `None`: leave the slave's alone (xattrs not synced, or not
    /// applicable, e.g. a symlink). At most [`MAX_XATTRS`].
    #[serde(deserialize_with = "bounded::opt_vec::<_, _, MAX_XATTRS>")]
    pub xattrs: Option<Vec<Xattr>>,
}

/// Whether an extended attribute is replicated: `user.*`, and the POSIX
/// ACLs (`system.posix_acl_access`, `system.posix_acl_default`; their ids
/// are numeric, like owners).
pub fn is_synced_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Which of the synced extended attributes a session replicates
/// (`sync-xattrs`, `sync-acls`). The slave makes its synced set exactly the
/// one sent, so with one class off the slave's copies have none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrScope {
    /// `user.*`.
    pub user: bool,
    /// `system.posix_acl_access` and `system.posix_acl_default`.
    pub acls: bool,
}

impl Default for XattrScope {
    fn default() -> Self {
        XattrScope {
            user: true,
            acls: true,
        }
    }
}

impl XattrScope {
    /// Whether anything is replicated at all (else [`Attrs::xattrs`] is
    /// `None` and the slave leaves its attributes alone).
    pub fn any(self) -> bool {
        self.user || self.acls
    }

    /// Whether the attribute `name` is sent.
    pub fn includes(self, name: &[u8]) -> bool {
        if name.starts_with(b"user.") {
            self.user
        } else {
            self.acls && is_synced_xattr(name)
        }
    }
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: serde_bytes::ByteBuf,
    pub value: serde_bytes::ByteBuf,
}

/// Total bytes of names and values of one entry's xattrs that are sent;
/// more is reported as a failure on the master (Linux allows 64 KiB per
/// value on most file systems, so this is plenty for `user.*`).
pub const MAX_XATTR_BYTES: usize = 1024 * 1024;

/// The type of a special file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialKind {
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}
