//! Listing and subtree digests.

use super::*;

#[test]
fn a_listing_is_reported_only_where_a_prune_would_change_something() {
    use crate::proto::{listing_digest, NodeKind};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("d/sub")).unwrap();
    fs::write(root.join("d/f"), b"x").unwrap();
    std::os::unix::fs::symlink("f", root.join("d/l")).unwrap();
    fs::write(root.join("top"), b"x").unwrap();
    let digest = |v: &[(&str, NodeKind)]| listing_digest(&mut v.to_vec());
    let same = digest(&[
        ("l", NodeKind::Symlink),
        ("f", NodeKind::File),
        ("sub", NodeKind::Dir),
    ]);
    let check = |seq, path: &str, digest| Request::CheckListing {
        seq,
        path: rp(path),
        digest,
    };
    let replies = session(
        root,
        &[
            check(1, "d", same),
            // A name the master lacks.
            check(
                2,
                "d",
                digest(&[("f", NodeKind::File), ("sub", NodeKind::Dir)]),
            ),
            // A name of another kind.
            check(
                3,
                "d",
                digest(&[
                    ("l", NodeKind::File),
                    ("f", NodeKind::File),
                    ("sub", NodeKind::Dir),
                ]),
            ),
            // The root, and a directory the slave does not have.
            check(
                4,
                "",
                digest(&[("d", NodeKind::Dir), ("top", NodeKind::File)]),
            ),
            check(5, "missing", digest(&[("x", NodeKind::File)])),
            // Not a directory: the Prune that follows says why.
            check(6, "top", digest(&[])),
            Request::Barrier { id: 7 },
        ],
    );
    assert_eq!(
        replies,
        vec![
            Reply::ListingDiffers { seq: 2 },
            Reply::ListingDiffers { seq: 3 },
            Reply::ListingDiffers { seq: 6 },
            Reply::Barrier { id: 7 },
        ]
    );
}

#[test]
fn a_subtree_is_the_same_only_with_the_same_names_kinds_sizes_and_times() {
    use crate::proto::{NodeKind, TreeDigest, TreeEntry};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("d/sub")).unwrap();
    fs::write(root.join("d/f"), b"x").unwrap();
    fs::write(root.join("d/sub/g"), b"yy").unwrap();
    std::os::unix::fs::symlink("../f", root.join("d/sub/l")).unwrap();
    // The digest as the master builds it, from the tree as it is now.
    let digest = |owners: bool| {
        let mut d = TreeDigest::new(owners);
        for rel in ["", "f", "sub", "sub/g", "sub/l"] {
            let md = fs::symlink_metadata(root.join("d").join(rel)).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_file() {
                NodeKind::File
            } else if ft.is_dir() {
                NodeKind::Dir
            } else {
                NodeKind::Symlink
            };
            d.add(&TreeEntry {
                path: rel.as_bytes(),
                kind,
                mode: md.mode() & 0o7777,
                size: md.size(),
                mtime_sec: md.mtime(),
                mtime_nsec: md.mtime_nsec() as u32,
                uid: md.uid(),
                gid: md.gid(),
            });
        }
        d.finish()
    };
    let check = |seq, path: &str, digest| Request::CheckTree {
        seq,
        path: rp(path),
        digest,
        owners: true,
    };
    let same = digest(true);
    let replies = session(
        root,
        &[
            check(1, "d", same),
            // Owners compared on one side only.
            check(2, "d", digest(false)),
            // Not a directory, or not there.
            check(3, "d/f", same),
            check(4, "missing", same),
        ],
    );
    let tree = |seq, same| Reply::Tree { seq, same };
    assert_eq!(
        replies,
        vec![
            tree(1, true),
            tree(2, false),
            tree(3, false),
            tree(4, false)
        ]
    );
    // A stray name, a file of another size, another mtime: each differs.
    fs::write(root.join("d/sub/stray"), b"").unwrap();
    let replies = session(root, &[check(5, "d", same)]);
    assert_eq!(replies, vec![tree(5, false)]);
    fs::remove_file(root.join("d/sub/stray")).unwrap();
    fs::write(root.join("d/sub/g"), b"yyy").unwrap();
    let replies = session(root, &[check(6, "d", same), check(7, "d", digest(true))]);
    assert_eq!(replies, vec![tree(6, false), tree(7, true)]);
    let now = digest(true);
    let g = fs::File::options()
        .write(true)
        .open(root.join("d/sub/g"))
        .unwrap();
    g.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        .unwrap();
    let replies = session(root, &[check(8, "d", now)]);
    assert_eq!(replies, vec![tree(8, false)]);
}
