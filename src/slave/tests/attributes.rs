//! Attributes: modes, owners, times, xattrs.

use super::*;

#[test]
fn setattr_on_dirs_files_symlinks_and_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/f"), b"x").unwrap();
    std::os::unix::fs::symlink("f", root.join("d/l")).unwrap();
    let replies = session(
        root,
        &[
            Request::SetAttr {
                seq: 1,
                path: rp("d/f"),
                attrs: attrs(0o604, 1_234_567_890, 42),
            },
            Request::SetAttr {
                seq: 2,
                path: rp("d/l"),
                attrs: attrs(0o777, 1_111_111_111, 7),
            },
            Request::SetAttr {
                seq: 3,
                path: rp("d"),
                attrs: attrs(0o711, 1_222_222_222, 999_999_999),
            },
            Request::SetAttr {
                seq: 4,
                path: rp("gone/x"),
                attrs: attrs(0o711, 1, 0),
            },
            Request::SetAttr {
                seq: 5,
                path: rp("d/gone"),
                attrs: attrs(0o711, 1, 0),
            },
        ],
    );
    no_failures(&replies);
    let f = fs::symlink_metadata(root.join("d/f")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o604);
    assert_eq!((f.mtime(), f.mtime_nsec()), (1_234_567_890, 42));
    let l = fs::symlink_metadata(root.join("d/l")).unwrap();
    assert_eq!((l.mtime(), l.mtime_nsec()), (1_111_111_111, 7));
    // The symlink's target was not changed through the link.
    assert_eq!(
        fs::symlink_metadata(root.join("d/f")).unwrap().mode() & 0o7777,
        0o604
    );
    let d = fs::symlink_metadata(root.join("d")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o711);
    assert_eq!((d.mtime(), d.mtime_nsec()), (1_222_222_222, 999_999_999));
}

#[test]
fn owner_is_applied_when_running_as_root() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: not running as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("target"), b"x").unwrap();
    std::os::unix::fs::symlink("target", root.join("l")).unwrap();
    let owned = Attrs {
        mode: 0o4755,
        uid: Some(1234),
        gid: Some(5678),
        mtime_sec: 1,
        mtime_nsec: 0,
        xattrs: None,
    };
    let mut reqs = ship(1, "f", b"data", owned.clone());
    reqs.push(Request::SetAttr {
        seq: 2,
        path: rp("l"),
        attrs: Attrs {
            uid: Some(4321),
            ..owned
        },
    });
    reqs.push(Request::Commit { batch: 1 });
    assert_eq!(session(root, &reqs), [Reply::Committed { batch: 1 }]);
    let f = fs::metadata(root.join("f")).unwrap();
    // The set-user-ID bit is not armed by default, but recorded.
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 5678, 0o755));
    let rec = super::policy::recorded_stat(&root.join("f"))
        .unwrap()
        .unwrap();
    assert_eq!((rec.mode, rec.uid, rec.gid), (0o104755, 1234, 5678));
    let l = fs::symlink_metadata(root.join("l")).unwrap();
    assert_eq!((l.uid(), l.gid()), (4321, 5678));
    let t = fs::metadata(root.join("target")).unwrap();
    assert_eq!(
        (t.uid(), t.gid()),
        (0, 0),
        "the link's target was not changed"
    );
}

#[test]
fn user_xattrs_are_set_exactly_on_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("d")).unwrap();
    let x = |k: &str, v: &[u8]| Xattr {
        name: serde_bytes::ByteBuf::from(k.as_bytes().to_vec()),
        value: serde_bytes::ByteBuf::from(v.to_vec()),
    };
    let mut with = attrs(0o644, 5, 0);
    with.xattrs = Some(vec![x("user.a", b"1"), x("user.b", b"")]);
    let mut reqs = ship(1, "f", b"content", with.clone());
    reqs.push(Request::SetAttr {
        seq: 2,
        path: rp("d"),
        attrs: Attrs {
            mode: 0o755,
            ..with.clone()
        },
    });
    reqs.push(Request::Commit { batch: 1 });
    no_failures(&session(root, &reqs));
    let get = |p: &str, k: &str| {
        let mut buf = [0u8; 64];
        rustix::fs::lgetxattr(root.join(p), k, &mut buf[..])
            .ok()
            .map(|n| buf[..n].to_vec())
    };
    assert_eq!(get("f", "user.a"), Some(b"1".to_vec()));
    assert_eq!(get("f", "user.b"), Some(Vec::new()));
    assert_eq!(get("d", "user.a"), Some(b"1".to_vec()));
    // The set is exact: what is not listed goes; `None` leaves them alone.
    let mut only_b = attrs(0o644, 5, 0);
    only_b.xattrs = Some(vec![x("user.b", b"2")]);
    let reqs = vec![
        Request::SetAttr {
            seq: 1,
            path: rp("f"),
            attrs: only_b,
        },
        Request::SetAttr {
            seq: 2,
            path: rp("d"),
            attrs: attrs(0o755, 5, 0),
        },
        Request::Commit { batch: 2 },
    ];
    no_failures(&session(root, &reqs));
    assert_eq!(get("f", "user.a"), None);
    assert_eq!(get("f", "user.b"), Some(b"2".to_vec()));
    assert_eq!(get("d", "user.a"), Some(b"1".to_vec()));
}

#[test]
fn a_file_is_placed_even_if_its_xattrs_do_not_fit_on_the_slave() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut a = attrs(0o644, 5, 0);
    a.xattrs = Some(vec![Xattr {
        name: serde_bytes::ByteBuf::from(b"user.huge".to_vec()),
        value: serde_bytes::ByteBuf::from(vec![7u8; 60_000]),
    }]);
    let mut reqs = ship(1, "f", b"content", a);
    reqs.push(Request::Commit { batch: 1 });
    let replies = session(root, &reqs);
    assert_eq!(fs::read(root.join("f")).unwrap(), b"content");
    // ext4 cannot hold a 60 kB value (others can): then a permanent
    // failure is reported, never a retry.
    for f in failures(&replies) {
        assert_eq!(f.kind, FailureKind::Unsupported, "{f:?}");
    }
}
