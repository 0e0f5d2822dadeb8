//! The slave policy: what `geo-rep slave` agrees to arm on its host.
//!
//! The master is trusted with the contents of the slave root, not with the
//! slave host. By default the slave therefore never creates a device node
//! (it would give whoever can reach it the disk or memory it names), never
//! leaves a set-user-ID or set-group-ID bit on anything but a directory (a
//! copied setuid-root program run by a local user would run as root), never
//! changes the owner, mode or ACLs of the root itself, and with
//! `--owners fake` never gives a file away to another user, nor applies an
//! ACL (an ACL names users as an owner does).
//!
//! What it does not apply it keeps with the copy, as rsync's `--fake-super`
//! does, so that a restore or a verify can bring back or compare the
//! brick's exact values:
//! - [`STAT_XATTR`] holds the brick's mode (file type included), device
//!   number and numeric owner, in rsync's `%o %u,%u %u:%u` form, on any
//!   regular file or directory whose values on disk differ from the brick's;
//!   a device node is an empty regular file carrying it.
//! - [`ACL_ACCESS_XATTR`] and [`ACL_DEFAULT_XATTR`] hold the POSIX ACLs not
//!   applied, byte for byte.
//!
//! `user.*` attributes can only be set on regular files and directories, so
//! the owner of a symlink, FIFO or socket that is not applied is lost, as
//! with rsync. The `user.georep.` namespace belongs to the slave: the
//! master's xattrs never set or remove a name in it.
//!
//! Opt in per slave in its forced command: `--allow-devices`,
//! `--allow-setid`, `--owners keep|fake`.

use std::borrow::Cow;
use std::fmt;
use std::os::fd::BorrowedFd;

use rustix::fs::{self as rfs, FileType, Stat};
use rustix::io::Errno;

use crate::proto::{Attrs, Xattr};

/// The brick's mode, device number and owner, when the copy differs.
pub const STAT_XATTR: &str = "user.georep.stat";
/// A `system.posix_acl_access` the policy did not apply.
pub const ACL_ACCESS_XATTR: &str = "user.georep.posix_acl_access";
/// A `system.posix_acl_default` the policy did not apply.
pub const ACL_DEFAULT_XATTR: &str = "user.georep.posix_acl_default";
/// Names the slave keeps for itself (see the module docs).
pub const RESERVED_PREFIX: &[u8] = b"user.georep.";

/// Set-user-ID and set-group-ID bits.
const SETID_BITS: u32 = 0o6000;

/// What happens to the numeric owners the master sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Owners {
    /// `chown` when the slave runs as root; not applied otherwise.
    #[default]
    Keep,
    /// Never `chown` (nor apply ACLs): record them with the copy. The
    /// recommended setup for a slave that does not run as root.
    Fake,
}

/// The options of `geo-rep slave` that decide what it arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::Args)]
pub struct Policy {
    /// Create device nodes as such (needs root); by default they are empty
    /// regular files recording the device.
    #[arg(long)]
    pub allow_devices: bool,
    /// Keep set-user-ID and set-group-ID bits of files; by default they are
    /// removed and recorded.
    #[arg(long)]
    pub allow_setid: bool,
    /// `keep`: chown as root (not applied otherwise); `fake`: never chown
    /// nor apply ACLs, record them.
    #[arg(long, value_enum, default_value_t = Owners::Keep)]
    pub owners: Owners,
    /// Serve the root with at most this many slave processes at once (a
    /// session runs one per brick and stream); more are refused.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_processes: Option<u32>,
}

impl Policy {
    /// The options as they go on the slave's command line (empty for the
    /// default), each preceded by a space.
    pub fn args(&self) -> String {
        let mut a = String::new();
        if self.allow_devices {
            a.push_str(" --allow-devices");
        }
        if self.allow_setid {
            a.push_str(" --allow-setid");
        }
        if self.owners == Owners::Fake {
            a.push_str(" --owners fake");
        }
        if let Some(n) = self.max_processes {
            a.push_str(&format!(" --max-processes {n}"));
        }
        a
    }

    /// The permission bits to give an entry whose brick mode is `mode`.
    pub(crate) fn mode(&self, is_dir: bool, mode: u32) -> u32 {
        // On a directory set-group-ID only decides the group of new entries.
        let mut m = if self.allow_setid || is_dir {
            mode & 0o7777
        } else {
            mode & 0o7777 & !SETID_BITS
        };
        // As rsync's --fake-super: a slave that is not root keeps the right
        // to read and write its copies (and their records); the brick's
        // mode is in the record.
        if self.owners == Owners::Fake && !super::root::is_root() {
            m |= if is_dir { 0o700 } else { 0o600 };
        }
        m
    }

    /// The owner to `chown` to, if any.
    pub(crate) fn chown(
        &self,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Option<(Option<rfs::Uid>, Option<rfs::Gid>)> {
        match self.owners {
            Owners::Keep => super::root::owner(uid, gid),
            Owners::Fake => None,
        }
    }

    /// The xattrs to make a file's synced set: `want` itself, or with the
    /// ACLs moved to their records when owners are not kept (or on the root,
    /// whose mode is never given away).
    pub(crate) fn xattrs<'a>(&self, want: &'a [Xattr], is_root: bool) -> Cow<'a, [Xattr]> {
        let map_acls = self.owners == Owners::Fake || is_root;
        let reserved = |x: &Xattr| x.name.starts_with(RESERVED_PREFIX);
        let mapped = |x: &Xattr| map_acls && acl_record(&x.name).is_some();
        if !want.iter().any(|x| reserved(x) || mapped(x)) {
            return Cow::Borrowed(want);
        }
        Cow::Owned(
            want.iter()
                .filter(|x| !reserved(x))
                .map(|x| match acl_record(&x.name).filter(|_| map_acls) {
                    Some(record) => Xattr {
                        name: serde_bytes::ByteBuf::from(record.as_bytes()),
                        value: x.value.clone(),
                    },
                    None => x.clone(),
                })
                .collect(),
        )
    }
}

/// The record name of an ACL the policy does not apply.
fn acl_record(name: &[u8]) -> Option<&'static str> {
    match name {
        b"system.posix_acl_access" => Some(ACL_ACCESS_XATTR),
        b"system.posix_acl_default" => Some(ACL_DEFAULT_XATTR),
        _ => None,
    }
}

/// Whether `set_user_xattrs` manages `name`: a synced xattr outside the
/// slave's namespace, or the record of an ACL.
pub(crate) fn is_managed_xattr(name: &[u8]) -> bool {
    if name.starts_with(RESERVED_PREFIX) {
        name == ACL_ACCESS_XATTR.as_bytes() || name == ACL_DEFAULT_XATTR.as_bytes()
    } else {
        crate::proto::is_synced_xattr(name)
    }
}

/// A brick's values as [`STAT_XATTR`] records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeStat {
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub rdev: u64,
    pub uid: u32,
    pub gid: u32,
}

impl fmt::Display for FakeStat {
    /// rsync's `--fake-super` form: `%o %u,%u %u:%u`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:o} {},{} {}:{}",
            self.mode,
            rfs::major(self.rdev),
            rfs::minor(self.rdev),
            self.uid,
            self.gid
        )
    }
}

impl FakeStat {
    /// Parses the [`fmt::Display`] form.
    pub fn parse(text: &[u8]) -> Option<FakeStat> {
        let text = std::str::from_utf8(text).ok()?;
        let mut words = text.split(' ');
        let mode = u32::from_str_radix(words.next()?, 8).ok()?;
        let (major, minor) = words.next()?.split_once(',')?;
        let (uid, gid) = words.next()?.split_once(':')?;
        if words.next().is_some() {
            return None;
        }
        Some(FakeStat {
            mode,
            rdev: rfs::makedev(major.parse().ok()?, minor.parse().ok()?),
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
        })
    }

    /// The file type it records.
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    /// The brick's values for an entry of type `ft` (device `rdev`) sent
    /// with `attrs`, as far as `policy` records them: the owner sent when
    /// owners are faked, else the one on disk (`st`; the owner sent when
    /// the slave could apply it).
    pub(crate) fn of(ft: FileType, rdev: u64, attrs: &Attrs, st: &Stat, policy: &Policy) -> Self {
        let sent = |id: Option<u32>| id.filter(|&i| i != u32::MAX);
        let fake = policy.owners == Owners::Fake;
        FakeStat {
            mode: ft.as_raw_mode() | (attrs.mode & 0o7777),
            rdev,
            uid: sent(attrs.uid).filter(|_| fake).unwrap_or(st.st_uid),
            gid: sent(attrs.gid).filter(|_| fake).unwrap_or(st.st_gid),
        }
    }

    /// What an entry with status `st` shows.
    pub(crate) fn on_disk(st: &Stat) -> FakeStat {
        FakeStat {
            mode: st.st_mode,
            rdev: st.st_rdev,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }

    /// Whether an entry showing `have` shows exactly these values.
    fn matches(&self, have: &FakeStat) -> bool {
        let dev = self.is_device();
        have.mode == self.mode
            && (!dev || have.rdev == self.rdev)
            && have.uid == self.uid
            && have.gid == self.gid
    }

    /// Whether it records a device node.
    pub(crate) fn is_device(&self) -> bool {
        matches!(
            self.file_type(),
            FileType::CharacterDevice | FileType::BlockDevice
        )
    }

    /// Whether it records the device node `ft`, `rdev`.
    pub(crate) fn is(&self, ft: FileType, rdev: u64) -> bool {
        self.file_type() == ft && self.rdev == rdev
    }
}

/// Keeps `want` as the record of `fd`, which shows `have` (once everything
/// is applied), if the two differ, and removes a stale record otherwise
/// (unless `fresh`: a file just created has none). A file system that
/// cannot hold user xattrs keeps none.
pub(crate) fn keep_record(
    fd: BorrowedFd<'_>,
    have: &FakeStat,
    want: &FakeStat,
    fresh: bool,
) -> Result<(), Errno> {
    if !want.matches(have) {
        let value = want.to_string();
        return match rfs::fsetxattr(fd, STAT_XATTR, value.as_bytes(), rfs::XattrFlags::empty()) {
            // The copy still arrives, within the policy.
            Err(Errno::NOTSUP) => Ok(()),
            other => other,
        };
    }
    if fresh {
        return Ok(());
    }
    // Most entries never had one: asking costs one syscall and, unlike a
    // removal, no write permission (a read-only copy of a slave that is
    // not root stays fine).
    match rfs::fgetxattr_query(fd, STAT_XATTR) {
        Err(Errno::NODATA | Errno::NOTSUP) => return Ok(()),
        Ok(_) => {}
        Err(e) => return Err(e),
    }
    match rfs::fremovexattr(fd, STAT_XATTR) {
        Ok(()) | Err(Errno::NODATA) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The record of a file at `path` (for tests and a later verify).
pub fn recorded_stat(path: &std::path::Path) -> std::io::Result<Option<FakeStat>> {
    let mut buf = [0u8; 128];
    match rfs::lgetxattr(path, STAT_XATTR, &mut buf[..]) {
        Ok(n) => Ok(FakeStat::parse(&buf[..n])),
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_back() {
        let s = FakeStat {
            mode: 0o104755,
            rdev: rfs::makedev(254, 3),
            uid: 0,
            gid: 4294967294,
        };
        assert_eq!(s.to_string(), "104755 254,3 0:4294967294");
        assert_eq!(FakeStat::parse(s.to_string().as_bytes()), Some(s));
        for bad in ["", "104755", "x 0,0 0:0", "644 0,0 0:0 extra", "644 0 0:0"] {
            assert_eq!(FakeStat::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn set_id_bits_stay_only_on_directories_unless_allowed() {
        let p = Policy::default();
        assert_eq!(p.mode(false, 0o104755), 0o755);
        assert_eq!(p.mode(false, 0o2711), 0o711);
        assert_eq!(p.mode(true, 0o3775), 0o3775);
        let allow = Policy {
            allow_setid: true,
            ..p
        };
        assert_eq!(allow.mode(false, 0o4755), 0o4755);
    }

    #[test]
    fn args_name_the_options() {
        assert_eq!(Policy::default().args(), "");
        let all = Policy {
            allow_devices: true,
            allow_setid: true,
            owners: Owners::Fake,
            max_processes: Some(8),
        };
        assert_eq!(
            all.args(),
            " --allow-devices --allow-setid --owners fake --max-processes 8"
        );
    }
}
