//! The comparison of one directory, without a slave.

use super::compare::*;
use crate::proto::ScanEntry;
use crate::relpath::RelPath;

const CUTOFF: i64 = 1_000;

fn file(name: &str, size: u64, hash: u8) -> ScanEntry {
    ScanEntry {
        name: name.as_bytes().to_vec(),
        mode: 0o100644,
        uid: 0,
        gid: 0,
        rdev: 0,
        size,
        mtime_sec: 5,
        mtime_nsec: 0,
        ino: 1,
        nlink: 1,
        target: None,
        hash: Some([hash; 32]),
    }
}

fn master(e: ScanEntry, changed_ns: i64) -> MasterEntry {
    MasterEntry {
        entry: e,
        changed_ns,
    }
}

/// The findings of comparing `m` with `s` in directory `d` (master
/// contents hash to the byte the entry's `hash` holds).
fn compare(m: &[MasterEntry], s: &[ScanEntry], content: bool) -> (Vec<String>, Vec<Vec<u8>>) {
    compare_with(m, s, content, true)
}

fn compare_with(
    m: &[MasterEntry],
    s: &[ScanEntry],
    content: bool,
    dir_mtimes: bool,
) -> (Vec<String>, Vec<Vec<u8>>) {
    let dir: RelPath = "d".parse().unwrap();
    let cx = DirContext {
        dir: &dir,
        cutoff_ns: CUTOFF,
        dir_in_flight: false,
        owners: true,
        content,
        dir_mtimes,
    };
    let mut found = Vec::new();
    let subdirs = compare_dir(&cx, m, s, &mut |_, m| Ok(m.entry.hash.unwrap()), &mut |f| {
        found.push(f.to_string())
    });
    (found, subdirs)
}

#[test]
fn equal_directories_have_no_findings_and_name_their_common_subdirectories() {
    let mut sub = file("sub", 0, 0);
    sub.mode = 0o40755;
    sub.hash = None;
    let m = [master(file("a", 3, 1), 0), master(sub.clone(), 0)];
    let (found, subdirs) = compare(&m, &[file("a", 3, 1), sub], true);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(subdirs, [b"sub".to_vec()]);
}

#[test]
fn a_changed_content_is_found_unless_quick() {
    let m = [master(file("a", 3, 1), 0)];
    let (found, _) = compare(&m, &[file("a", 3, 2)], true);
    assert_eq!(found, ["differs content d/a"]);
    let (found, _) = compare(&m, &[file("a", 3, 2)], false);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn missing_extra_mode_owner_mtime_size_and_type_are_each_named() {
    let m = [
        master(file("gone", 1, 1), 0),
        master(file("mode", 1, 1), 0),
        master(file("owner", 1, 1), 0),
        master(file("size", 1, 1), 0),
        master(file("type", 1, 1), 0),
    ];
    let mut mode = file("mode", 1, 1);
    mode.mode = 0o100600;
    let mut owner = file("owner", 1, 1);
    owner.uid = 7;
    let mut size = file("size", 2, 1);
    size.mtime_sec = 6;
    let mut typ = file("type", 1, 1);
    typ.mode = 0o40755;
    let s = [file("extra", 1, 1), mode, owner, size, typ];
    let (found, subdirs) = compare(&m, &s, true);
    assert_eq!(
        found,
        [
            "extra on slave d/extra",
            "missing on slave d/gone",
            "mode 0644 vs 0600 d/mode",
            "owner 0:0 vs 7:0 d/owner",
            "size 1 vs 2 d/size",
            "mtime 5.000000000 vs 6.000000000 d/size",
            "type file vs dir d/type",
        ]
    );
    assert!(subdirs.is_empty());
}

#[test]
fn what_the_master_changed_after_the_cutoff_is_in_flight() {
    let m = [
        master(file("new", 1, 1), CUTOFF + 1),
        master(file("old", 1, 1), CUTOFF),
    ];
    let (found, _) = compare(&m, &[file("new", 1, 2), file("old", 1, 2)], true);
    assert_eq!(
        found,
        ["in flight: differs content d/new", "differs content d/old"]
    );
}

#[test]
fn symlink_targets_are_compared() {
    let link = |t: &str| ScanEntry {
        mode: 0o120777,
        target: Some(serde_bytes::ByteBuf::from(t.as_bytes().to_vec())),
        hash: None,
        ..file("l", 1, 0)
    };
    let (found, _) = compare(&[master(link("x"), 0)], &[link("y")], true);
    assert_eq!(found, ["symlink target \"x\" vs \"y\" d/l"]);
}

/// Of a GlusterFS volume directories' mtimes are left out, files' not.
#[test]
fn directory_mtimes_can_be_left_out() {
    let dir = |mtime_sec| ScanEntry {
        mode: 0o40755,
        hash: None,
        mtime_sec,
        ..file("sub", 0, 0)
    };
    let f = |mtime_sec| ScanEntry {
        mtime_sec,
        ..file("f", 1, 1)
    };
    let m = [master(f(5), 0), master(dir(5), 0)];
    let s = [f(6), dir(6)];
    let (found, _) = compare_with(&m, &s, true, false);
    assert_eq!(found, ["mtime 5.000000000 vs 6.000000000 d/f"]);
    let (found, _) = compare_with(&m, &s, true, true);
    assert_eq!(found.len(), 2, "{found:?}");
}
