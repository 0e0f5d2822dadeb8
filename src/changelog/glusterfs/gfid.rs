//! GFIDs and where a brick keeps them: the `.glusterfs/xx/yy/<gfid>`
//! handles and the `trusted.gfid2path.*` xattrs.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A GlusterFS file identity (a UUID), as the changelogs spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gfid([u8; 16]);

/// The gfid of every volume's root directory.
pub const ROOT: Gfid = Gfid([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/// Length of the canonical text form `8-4-4-4-12`.
pub const TEXT_LEN: usize = 36;

impl Gfid {
    /// Parses the canonical lower- or upper-case text form; `None` for
    /// anything else.
    pub fn parse(text: &[u8]) -> Option<Gfid> {
        if text.len() != TEXT_LEN {
            return None;
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in text.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let v = (c as char).to_digit(16)? as u8;
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        Some(Gfid(out))
    }

    /// A UUID from its 16 bytes (e.g. a volume id xattr).
    pub fn from_bytes(bytes: [u8; 16]) -> Gfid {
        Gfid(bytes)
    }

    pub fn is_root(&self) -> bool {
        *self == ROOT
    }

    /// `<brick>/.glusterfs/xx/yy/<gfid>`.
    pub fn handle(&self, brick: &Path) -> PathBuf {
        let text = self.to_string();
        brick
            .join(".glusterfs")
            .join(&text[0..2])
            .join(&text[2..4])
            .join(&text)
    }
}

impl fmt::Display for Gfid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Where an entry sits: its parent directory's gfid and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub parent: Gfid,
    pub name: Vec<u8>,
}

impl Location {
    /// Parses the `<pargfid>/<basename>` form of changelog entry fields and
    /// gfid2path values. The name must be one non-empty component.
    pub fn parse(field: &[u8]) -> Option<Location> {
        if field.len() <= TEXT_LEN + 1 || field[TEXT_LEN] != b'/' {
            return None;
        }
        let parent = Gfid::parse(&field[..TEXT_LEN])?;
        let name = &field[TEXT_LEN + 1..];
        if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
            return None;
        }
        Some(Location {
            parent,
            name: name.to_vec(),
        })
    }
}

/// Where a directory is now, from its handle: a symlink to
/// `../../xx/yy/<parent gfid>/<name>`. `None` if the handle is gone or is
/// not a directory's (a file's handle is a hard link).
pub fn dir_location(brick: &Path, gfid: Gfid) -> Option<Location> {
    let target = std::fs::read_link(gfid.handle(brick)).ok()?;
    let bytes = target.as_os_str().as_bytes();
    let rest = bytes.strip_prefix(b"../../")?;
    // xx/yy/<gfid>/<name>
    let (prefix, loc) = rest.split_at_checked(6)?;
    let loc = Location::parse(loc)?;
    let text = loc.parent.to_string();
    (prefix[0..2] == text.as_bytes()[0..2] && prefix[3..5] == text.as_bytes()[2..4]).then_some(loc)
}

/// The names a non-directory has now, from the `trusted.gfid2path.*`
/// xattrs of its handle (one per hard link). Empty if the handle is gone or
/// the brick does not keep them (`storage.gfid2path off`).
pub fn file_locations(brick: &Path, gfid: Gfid) -> Vec<Location> {
    let handle = gfid.handle(brick);
    // The largest list Linux returns (XATTR_LIST_MAX): a file may carry
    // many xattrs besides its gfid2path ones.
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(&handle, &mut names[..]) else {
        return Vec::new();
    };
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0) {
        if !name.starts_with(b"trusted.gfid2path.") {
            continue;
        }
        let mut value = vec![0u8; 4096 + TEXT_LEN + 1];
        if let Ok(n) = rustix::fs::lgetxattr(&handle, OsStr::from_bytes(name), &mut value[..]) {
            if let Some(loc) = Location::parse(&value[..n]) {
                out.push(loc);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Directory depth beyond which a chain of handles counts as broken (a
/// loop in a damaged brick).
pub(super) const MAX_DEPTH: usize = 4096;

/// Where a directory is now, as a path from the brick root, following the
/// handles up to the root; `None` if a handle is missing.
fn dir_path(brick: &Path, gfid: Gfid) -> Option<crate::relpath::RelPath> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut g = gfid;
    for _ in 0..MAX_DEPTH {
        if g.is_root() {
            let mut path = crate::relpath::RelPath::root();
            for n in names.iter().rev() {
                path = path.join(OsStr::from_bytes(n)).ok()?;
            }
            return Some(path);
        }
        let loc = dir_location(brick, g)?;
        names.push(loc.name);
        g = loc.parent;
    }
    None
}

/// Every name the non-directory at `path` (from the brick root) has now,
/// from its gfid and the gfid2path xattrs of its handle: a worker that did
/// not see a file's hard links made learns them here. Empty if the brick
/// cannot tell. A name in GlusterFS's own tree is none of the volume's (a
/// heal parks a file's lost name in the anonymous-inode directory).
pub fn file_names(brick: &Path, path: &crate::relpath::RelPath) -> Vec<crate::relpath::RelPath> {
    let mut raw = [0u8; 16];
    let Ok(16) = rustix::fs::lgetxattr(path.under(brick), "trusted.gfid", &mut raw[..]) else {
        return Vec::new();
    };
    file_locations(brick, Gfid(raw))
        .into_iter()
        .filter_map(|loc| {
            dir_path(brick, loc.parent)?
                .join(OsStr::from_bytes(&loc.name))
                .ok()
        })
        .filter(|p| {
            !p.components()
                .next()
                .is_some_and(super::resolve::is_internal)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfids_round_trip_and_bad_text_is_refused() {
        let text = "37cb0cef-ea72-410e-a4e0-b075f8a6c824";
        let g = Gfid::parse(text.as_bytes()).unwrap();
        assert_eq!(g.to_string(), text);
        assert!(Gfid::parse(b"00000000-0000-0000-0000-000000000001")
            .unwrap()
            .is_root());
        for bad in [
            &b""[..],
            b"37cb0cef-ea72-410e-a4e0-b075f8a6c82",
            b"37cb0cef-ea72-410e-a4e0-b075f8a6c82g",
            b"37cb0cef+ea72-410e-a4e0-b075f8a6c824",
        ] {
            assert_eq!(Gfid::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            g.handle(Path::new("/b")),
            Path::new("/b/.glusterfs/37/cb/37cb0cef-ea72-410e-a4e0-b075f8a6c824")
        );
    }

    #[test]
    fn locations_hold_one_component() {
        let loc = Location::parse(b"00000000-0000-0000-0000-000000000001/\xc3\xb1ame").unwrap();
        assert!(loc.parent.is_root());
        assert_eq!(loc.name, b"\xc3\xb1ame");
        for bad in [
            &b"00000000-0000-0000-0000-000000000001/"[..],
            b"00000000-0000-0000-0000-000000000001/a/b",
            b"00000000-0000-0000-0000-000000000001/..",
            b"00000000-0000-0000-0000-000000000001x",
            b"short/a",
        ] {
            assert_eq!(Location::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_directory_handle_names_its_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let brick = tmp.path();
        let d = Gfid::parse(b"37cb0cef-ea72-410e-a4e0-b075f8a6c824").unwrap();
        let h = d.handle(brick);
        std::fs::create_dir_all(h.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("../../00/00/00000000-0000-0000-0000-000000000001/d1", &h)
            .unwrap();
        assert_eq!(
            dir_location(brick, d),
            Some(Location {
                parent: ROOT,
                name: b"d1".to_vec()
            })
        );
        let gone = Gfid::parse(b"f789d853-61ce-4299-8312-6b77587acbc7").unwrap();
        assert_eq!(dir_location(brick, gone), None);
        assert!(file_locations(brick, gone).is_empty());
    }

    #[test]
    fn a_file_handle_names_its_links() {
        let tmp = tempfile::tempdir().unwrap();
        let brick = tmp.path();
        let f = Gfid::parse(b"f789d853-61ce-4299-8312-6b77587acbc7").unwrap();
        let h = f.handle(brick);
        std::fs::create_dir_all(h.parent().unwrap()).unwrap();
        std::fs::write(&h, b"x").unwrap();
        let set = |name: &str, value: &str| {
            rustix::fs::lsetxattr(&h, name, value.as_bytes(), rustix::fs::XattrFlags::empty())
        };
        // trusted.* needs root; a user.* xattr stands beside them either way.
        set("user.other", "y").unwrap();
        if set(
            "trusted.gfid2path.1",
            "37cb0cef-ea72-410e-a4e0-b075f8a6c824/b",
        )
        .is_err()
        {
            eprintln!("skipped: trusted xattrs need root");
            return;
        }
        set(
            "trusted.gfid2path.2",
            "00000000-0000-0000-0000-000000000001/a",
        )
        .unwrap();
        let names: Vec<Vec<u8>> = file_locations(brick, f)
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, [b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn a_file_is_named_by_every_hard_link_beneath_the_brick_root() {
        use crate::relpath::RelPath;
        let tmp = tempfile::tempdir().unwrap();
        let brick = tmp.path();
        // d1 (a directory at the root) holds "b"; the root holds "a"; the
        // anonymous-inode directory holds a name a heal parked there.
        let d = Gfid::parse(b"37cb0cef-ea72-410e-a4e0-b075f8a6c824").unwrap();
        let anon = Gfid::parse(b"a1000000-0000-0000-0000-000000000000").unwrap();
        for (g, name) in [(d, "d1"), (anon, ".glusterfs-anonymous-inode-x")] {
            let h = g.handle(brick);
            std::fs::create_dir_all(h.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(
                format!("../../00/00/00000000-0000-0000-0000-000000000001/{name}"),
                &h,
            )
            .unwrap();
            std::fs::create_dir(brick.join(name)).unwrap();
        }
        std::fs::write(brick.join("a"), b"x").unwrap();
        let f = Gfid::parse(b"f789d853-61ce-4299-8312-6b77587acbc7").unwrap();
        let fh = f.handle(brick);
        std::fs::create_dir_all(fh.parent().unwrap()).unwrap();
        std::fs::hard_link(brick.join("a"), &fh).unwrap();
        std::fs::hard_link(brick.join("a"), brick.join("d1/b")).unwrap();
        let set = |name: &str, value: &[u8]| {
            rustix::fs::lsetxattr(&fh, name, value, rustix::fs::XattrFlags::empty())
        };
        if set("trusted.gfid", &f.0).is_err() {
            eprintln!("skipped: trusted xattrs need root");
            return;
        }
        set(
            "trusted.gfid2path.1",
            b"00000000-0000-0000-0000-000000000001/a",
        )
        .unwrap();
        set(
            "trusted.gfid2path.2",
            b"37cb0cef-ea72-410e-a4e0-b075f8a6c824/b",
        )
        .unwrap();
        set("trusted.gfid2path.3", format!("{anon}/{f}").as_bytes()).unwrap();
        let names = file_names(brick, &RelPath::new("d1/b").unwrap());
        assert_eq!(
            names,
            [RelPath::new("a").unwrap(), RelPath::new("d1/b").unwrap()]
        );
        // Without a gfid (not a GlusterFS file) there is nothing to tell.
        std::fs::write(brick.join("plain"), b"y").unwrap();
        assert!(file_names(brick, &RelPath::new("plain").unwrap()).is_empty());
    }
}
