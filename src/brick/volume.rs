//! What the whole volume holds, for the decisions one brick of a
//! distributed volume cannot make alone: which names of a directory the
//! slave keeps when it is pruned, and whether a name that this brick's
//! changelog removes is still there in the volume.
//!
//! DHT spreads a directory's files over the bricks and makes the directory
//! itself on every brick, so the volume's listing of a directory is the
//! union of the bricks' listings, less DHT link files (see
//! [`is_dht_link`]) and GlusterFS's own names. Each brick's worker still
//! ships only what its own changelog records; the view only keeps it from
//! removing on the slave what another brick holds.
//!
//! [`LocalBricks`] reads the bricks themselves: every brick of the volume
//! is on this node, so their listings are one `readdir` each, with no FUSE
//! round trip and no mount to manage. The next step, bricks spread over
//! several nodes, puts another [`VolumeView`] here (a client mount of the
//! master volume, as GlusterFS's geo-replication keeps one) without
//! changing its users.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::dir::BrickDir;
use crate::changelog::glusterfs::is_internal;
use crate::relpath::RelPath;

/// The xattr that makes a file a DHT link file (its value names the
/// subvolume that holds the data).
const LINKTO: &str = "trusted.glusterfs.dht.linkto";

/// A DHT link file's permission bits: only the sticky bit (`---------T`).
const LINK_MODE: u32 = 0o1000;

/// Whether the brick entry at `path` (with `md`, its lstat) is a DHT link
/// file: a regular file of mode `---------T` carrying
/// `trusted.glusterfs.dht.linkto`. It stands for a name whose data lives
/// on another brick (or, while a rebalance migrates it, is being written
/// here), so it is never replicated, never kept by a prune for itself.
/// For an `O_PATH` handle, `path` may be its `/proc/self/fd` path.
pub fn is_dht_link(path: &Path, md: &fs::Metadata) -> bool {
    md.is_file()
        && md.mode() & 0o7777 == LINK_MODE
        // An empty buffer asks for the value's size: any answer but an
        // error (ENODATA above all) means the xattr is there.
        && matches!(
            rustix::fs::getxattr(path, LINKTO, &mut [0u8; 0][..]),
            Ok(_) | Err(rustix::io::Errno::RANGE)
        )
}

/// What the volume holds, as its clients see it; see the module docs.
pub trait VolumeView: Send + Sync {
    /// The names of directory `dir` with their types, as a client lists
    /// them; `None` if it cannot be listed, or holds more than `max`.
    fn listing(&self, dir: &RelPath, max: usize) -> Option<Vec<(OsString, fs::FileType)>>;

    /// Whether the volume holds an entry at `path` (a client's lstat finds
    /// it).
    fn holds(&self, path: &RelPath) -> bool;

    /// The brick that holds the regular file at `path`, if one of them
    /// does (not as a link file).
    fn holder(&self, path: &RelPath) -> Option<std::path::PathBuf>;
}

/// The view of a volume whose bricks are all on this node.
pub struct LocalBricks {
    bricks: Vec<BrickDir>,
}

impl LocalBricks {
    pub fn open(bricks: &[std::path::PathBuf]) -> LocalBricks {
        LocalBricks {
            bricks: bricks.iter().map(|b| BrickDir::open(b)).collect(),
        }
    }

    /// The entry at `path` on `brick`, unless it is missing or a link file.
    fn entry(brick: &BrickDir, path: &RelPath) -> Option<fs::Metadata> {
        let handle = brick.handle(path).ok()?;
        let md = handle.metadata().ok()?;
        (!is_dht_link(&handle.proc_path(), &md)).then_some(md)
    }
}

impl VolumeView for LocalBricks {
    fn listing(&self, dir: &RelPath, max: usize) -> Option<Vec<(OsString, fs::FileType)>> {
        // A name with a regular file on two bricks is a link file on one of
        // them (or, mid-migration, the data on both): only those names are
        // looked at more closely, so a listing costs one readdir a brick.
        let mut names: BTreeMap<OsString, Vec<(usize, fs::FileType)>> = BTreeMap::new();
        let mut listed = false;
        for (i, brick) in self.bricks.iter().enumerate() {
            let Ok(rd) = brick.handle(dir).and_then(|h| fs::read_dir(h.proc_path())) else {
                continue;
            };
            listed = true;
            for entry in rd.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                let name = entry.file_name();
                if dir.is_root() && is_internal(&name) {
                    continue;
                }
                names.entry(name).or_default().push((i, ft));
                if names.len() > max {
                    return None;
                }
            }
        }
        if !listed {
            return None;
        }
        let mut out = Vec::with_capacity(names.len());
        for (name, found) in names {
            let kind = match &found[..] {
                [(_, ft)] => Some(*ft),
                _ => {
                    let path = dir.join(&name).ok()?;
                    found.iter().find_map(|(i, ft)| {
                        if !ft.is_file() {
                            return Some(*ft);
                        }
                        Self::entry(&self.bricks[*i], &path).map(|md| md.file_type())
                    })
                }
            };
            if let Some(kind) = kind {
                out.push((name, kind));
            }
        }
        Some(out)
    }

    fn holds(&self, path: &RelPath) -> bool {
        self.bricks.iter().any(|b| Self::entry(b, path).is_some())
    }

    fn holder(&self, path: &RelPath) -> Option<std::path::PathBuf> {
        self.bricks
            .iter()
            .find(|b| Self::entry(b, path).is_some_and(|md| md.is_file()))
            .map(|b| b.path().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// Two bricks of one directory: a file on each, a name whose data is on
    /// the first and whose link file is on the second, and a stale
    /// internal name. Setting `trusted.*` needs root; without it the link
    /// file is only mode-marked and must not be mistaken for one.
    #[test]
    fn the_listing_is_the_union_without_link_files() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for brick in [&a, &b] {
            fs::create_dir_all(brick.join("d")).unwrap();
            fs::create_dir_all(brick.join(".glusterfs")).unwrap();
        }
        fs::write(a.join("d/one"), b"1").unwrap();
        fs::write(b.join("d/two"), b"2").unwrap();
        fs::write(a.join("d/moved"), b"data").unwrap();
        let link = b.join("d/moved");
        fs::write(&link, b"").unwrap();
        fs::set_permissions(&link, std::os::unix::fs::PermissionsExt::from_mode(0o1000)).unwrap();
        let root = rustix::process::geteuid().is_root();
        if root {
            rustix::fs::setxattr(
                &link,
                LINKTO,
                b"v-client-0",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }
        let view = LocalBricks::open(&[a.clone(), b.clone()]);
        let names: Vec<(String, bool)> = view
            .listing(&p("d"), 100)
            .unwrap()
            .into_iter()
            .map(|(n, ft)| (n.to_string_lossy().into_owned(), ft.is_file()))
            .collect();
        assert_eq!(
            names,
            [
                ("moved".into(), true),
                ("one".into(), true),
                ("two".into(), true)
            ]
        );
        let top: Vec<OsString> = view
            .listing(&RelPath::root(), 100)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(top, [OsString::from("d")]);
        assert!(view.holds(&p("d/two")) && view.holds(&p("d/moved")));
        assert!(!view.holds(&p("d/none")));
        if root {
            assert!(is_dht_link(&link, &fs::symlink_metadata(&link).unwrap()));
            fs::remove_file(a.join("d/moved")).unwrap();
            assert!(!view.holds(&p("d/moved")), "a link file alone is no name");
            assert!(view.listing(&p("d"), 1).is_none(), "over the bound");
        }
    }
}
