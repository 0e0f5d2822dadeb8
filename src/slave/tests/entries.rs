//! Entry operations: applied, replayed, confined.

use super::*;

#[test]
fn entry_ops_apply_and_replay_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let batch = vec![
        entry(
            1,
            EntryOp::Mkdir {
                path: rp("d"),
                mode: 0o755,
            },
        ),
        entry(
            2,
            EntryOp::Mkdir {
                path: rp("d/e"),
                mode: 0o750,
            },
        ),
        entry(
            3,
            EntryOp::Create {
                path: rp("d/f"),
                mode: 0o644,
            },
        ),
        entry(
            4,
            EntryOp::Symlink {
                path: rp("d/l"),
                target: b"f".to_vec(),
            },
        ),
        entry(
            5,
            EntryOp::Link {
                path: rp("d/h"),
                target: rp("d/f"),
            },
        ),
        entry(
            6,
            EntryOp::Rename {
                from: rp("d/f"),
                to: rp("d/g"),
            },
        ),
        entry(
            7,
            EntryOp::Create {
                path: rp("x"),
                mode: 0o644,
            },
        ),
        entry(8, EntryOp::Unlink { path: rp("x") }),
        entry(
            9,
            EntryOp::Mkdir {
                path: rp("r/s"),
                mode: 0o755,
            },
        ),
        entry(
            10,
            EntryOp::Create {
                path: rp("r/s/a"),
                mode: 0o644,
            },
        ),
        entry(11, EntryOp::Rmdir { path: rp("r") }),
        // Missing parents are made.
        entry(
            12,
            EntryOp::Create {
                path: rp("p/q/z"),
                mode: 0o600,
            },
        ),
        Request::Commit { batch: 1 },
    ];
    let check = || {
        assert_eq!(names(root), ["d", "p"]);
        assert_eq!(names(&root.join("d")), ["e", "g", "h", "l"]);
        assert!(root.join("d/e").is_dir());
        let g = fs::symlink_metadata(root.join("d/g")).unwrap();
        let h = fs::symlink_metadata(root.join("d/h")).unwrap();
        assert!(g.is_file());
        assert_eq!(
            (g.dev(), g.ino()),
            (h.dev(), h.ino()),
            "d/h is a hard link of d/g"
        );
        assert_eq!(fs::read_link(root.join("d/l")).unwrap(), Path::new("f"));
        assert!(root.join("p/q/z").is_file());
    };
    let replies = session(root, &batch);
    no_failures(&replies);
    assert_eq!(replies.last(), Some(&Reply::Committed { batch: 1 }));
    check();
    let replies = session(root, &batch);
    no_failures(&replies);
    check();
}

#[test]
fn entry_ops_replace_what_is_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("was_file"), b"x").unwrap();
    fs::create_dir_all(root.join("was_dir/sub")).unwrap();
    fs::write(root.join("was_dir/sub/f"), b"x").unwrap();
    fs::create_dir_all(root.join("dir_to_unlink/a")).unwrap();
    fs::write(root.join("keep"), b"content").unwrap();
    fs::write(root.join("sym"), b"x").unwrap();
    std::os::unix::fs::symlink("old", root.join("sym2")).unwrap();
    fs::create_dir_all(root.join("src_dir/x")).unwrap();
    fs::create_dir_all(root.join("dst_dir/y")).unwrap();
    let replies = session(
        root,
        &[
            entry(
                1,
                EntryOp::Mkdir {
                    path: rp("was_file"),
                    mode: 0o755,
                },
            ),
            entry(
                2,
                EntryOp::Create {
                    path: rp("was_dir"),
                    mode: 0o644,
                },
            ),
            entry(
                3,
                EntryOp::Unlink {
                    path: rp("dir_to_unlink"),
                },
            ),
            entry(
                4,
                EntryOp::Create {
                    path: rp("keep"),
                    mode: 0o644,
                },
            ),
            entry(
                5,
                EntryOp::Symlink {
                    path: rp("sym"),
                    target: b"/etc/passwd".to_vec(),
                },
            ),
            entry(
                6,
                EntryOp::Symlink {
                    path: rp("sym2"),
                    target: b"new".to_vec(),
                },
            ),
            entry(
                7,
                EntryOp::Rename {
                    from: rp("src_dir"),
                    to: rp("dst_dir"),
                },
            ),
            entry(
                8,
                EntryOp::Unlink {
                    path: rp("never/was"),
                },
            ),
            entry(9, EntryOp::Rmdir { path: rp("never") }),
            Request::Commit { batch: 1 },
        ],
    );
    no_failures(&replies);
    assert!(root.join("was_file").is_dir());
    assert!(fs::symlink_metadata(root.join("was_dir"))
        .unwrap()
        .is_file());
    assert!(!root.join("dir_to_unlink").exists());
    assert_eq!(fs::read(root.join("keep")).unwrap(), b"content");
    assert_eq!(
        fs::read_link(root.join("sym")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read_link(root.join("sym2")).unwrap(), Path::new("new"));
    assert_eq!(names(&root.join("dst_dir")), ["x"]);
    assert!(!root.join("src_dir").exists());
    assert!(
        !names(root).iter().any(|n| n.starts_with(".georep.")),
        "{:?}",
        names(root)
    );
}

#[test]
fn rename_with_missing_source_is_source_missing() {
    let dir = tempfile::tempdir().unwrap();
    let replies = session(
        dir.path(),
        &[
            entry(
                3,
                EntryOp::Rename {
                    from: rp("gone"),
                    to: rp("b"),
                },
            ),
            entry(
                4,
                EntryOp::Rename {
                    from: rp("no/parent"),
                    to: rp("c"),
                },
            ),
            Request::Barrier { id: 9 },
        ],
    );
    let f = failures(&replies);
    assert_eq!(f.len(), 2, "{replies:?}");
    assert_eq!(
        (f[0].seq, f[0].kind, &f[0].path),
        (3, FailureKind::SourceMissing, &rp("gone"))
    );
    assert!(
        f[0].message
            .contains(&format!("{}/gone", dir.path().display())),
        "{}",
        f[0].message
    );
    assert_eq!((f[1].seq, f[1].kind), (4, FailureKind::SourceMissing));
    assert_eq!(replies.last(), Some(&Reply::Barrier { id: 9 }));
    assert!(!dir.path().join("b").exists());
}

#[test]
fn renaming_a_hard_link_over_its_twin_removes_the_source() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a"), b"x").unwrap();
    fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
    let replies = session(
        dir.path(),
        &[entry(
            1,
            EntryOp::Rename {
                from: rp("a"),
                to: rp("b"),
            },
        )],
    );
    no_failures(&replies);
    assert_eq!(names(dir.path()), ["b"]);
}

#[test]
fn symlinked_parent_is_refused_and_outside_untouched() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("sentinel"), b"secret").unwrap();
    fs::set_permissions(outside.join("sentinel"), fs::Permissions::from_mode(0o600)).unwrap();
    let before = fs::metadata(outside.join("sentinel")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    // A regular file as a parent is refused the same way.
    fs::write(root.join("plain"), b"").unwrap();

    let mut reqs = vec![
        entry(
            1,
            EntryOp::Create {
                path: rp("evil/new"),
                mode: 0o644,
            },
        ),
        entry(
            2,
            EntryOp::Mkdir {
                path: rp("evil/newdir"),
                mode: 0o755,
            },
        ),
        entry(
            3,
            EntryOp::Unlink {
                path: rp("evil/sentinel"),
            },
        ),
        entry(
            4,
            EntryOp::Rmdir {
                path: rp("evil/sub"),
            },
        ),
        entry(
            5,
            EntryOp::Symlink {
                path: rp("evil/sentinel"),
                target: b"x".to_vec(),
            },
        ),
        entry(
            6,
            EntryOp::Rename {
                from: rp("evil/sentinel"),
                to: rp("stolen"),
            },
        ),
        entry(
            7,
            EntryOp::Link {
                path: rp("stolen2"),
                target: rp("evil/sentinel"),
            },
        ),
        Request::SetAttr {
            seq: 8,
            path: rp("evil/sentinel"),
            attrs: attrs(0o777, 1, 0),
        },
        Request::Signature {
            seq: 9,
            path: rp("evil/sentinel"),
        },
    ];
    reqs.extend(ship(
        10,
        "evil/sentinel",
        b"overwritten",
        attrs(0o644, 1, 0),
    ));
    reqs.push(entry(
        11,
        EntryOp::Create {
            path: rp("plain/x"),
            mode: 0o644,
        },
    ));
    reqs.push(Request::Commit { batch: 1 });
    let replies = session(&root, &reqs);

    let f = failures(&replies);
    let seqs: Vec<u64> = f.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>(), "{replies:#?}");
    for f in &f {
        assert_eq!(f.kind, FailureKind::Unsafe, "{f:?}");
        assert!(
            f.message.contains(&root.display().to_string()),
            "{}",
            f.message
        );
    }
    // The signature request still gets its (empty) answer, leaking nothing.
    assert!(replies.contains(&Reply::SigBegin { seq: 9, size: None }));
    assert!(!replies.iter().any(|r| matches!(r, Reply::SigPiece { .. })));
    assert_eq!(replies.last(), Some(&Reply::Committed { batch: 1 }));

    assert_eq!(names(&outside), ["sentinel", "sub"]);
    assert_eq!(fs::read(outside.join("sentinel")).unwrap(), b"secret");
    let after = fs::metadata(outside.join("sentinel")).unwrap();
    assert_eq!(after.mode(), before.mode());
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(names(&root), ["evil", "plain"]);
}

#[test]
fn operations_on_the_root_itself_are_refused_except_setattr() {
    let dir = tempfile::tempdir().unwrap();
    let before = fs::metadata(dir.path()).unwrap().mode();
    let replies = session(
        dir.path(),
        &[
            entry(
                1,
                EntryOp::Rmdir {
                    path: RelPath::root(),
                },
            ),
            Request::FileBegin {
                seq: 2,
                path: RelPath::root(),
                size: 0,
            },
            Request::FileEnd {
                attrs: attrs(0o644, 0, 0),
                hash: *blake3::hash(b"").as_bytes(),
            },
            Request::SetAttr {
                seq: 3,
                path: RelPath::root(),
                attrs: attrs(0o750, 1_600_000_000, 123_456_789),
            },
        ],
    );
    let f = failures(&replies);
    assert_eq!(
        f.iter().map(|f| (f.seq, f.kind)).collect::<Vec<_>>(),
        [(1, FailureKind::Unsafe), (2, FailureKind::Unsafe)]
    );
    // The root's own mode is the slave operator's: only recorded.
    let md = fs::metadata(dir.path()).unwrap();
    assert_eq!(md.mode(), before);
    let rec = super::policy::recorded_stat(dir.path()).unwrap().unwrap();
    assert_eq!(rec.mode & 0o7777, 0o750);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));
}

#[test]
fn symlink_as_last_component_is_replaced_never_followed() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(outside.join("d")).unwrap();
    fs::write(outside.join("sentinel"), b"secret").unwrap();
    for name in ["file", "dir", "attr", "gone"] {
        let target = if name == "dir" {
            outside.join("d")
        } else {
            outside.join("sentinel")
        };
        std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    }
    let mut reqs = ship(1, "file", b"mine", attrs(0o644, 1, 0));
    reqs.push(entry(2, EntryOp::Rmdir { path: rp("dir") }));
    reqs.push(Request::SetAttr {
        seq: 3,
        path: rp("attr"),
        attrs: attrs(0o777, 1, 0),
    });
    reqs.push(entry(4, EntryOp::Unlink { path: rp("gone") }));
    reqs.push(Request::Commit { batch: 1 });
    let replies = session(&root, &reqs);
    no_failures(&replies);
    assert_eq!(fs::read(root.join("file")).unwrap(), b"mine");
    assert_eq!(names(&root), ["attr", "file"]);
    assert_eq!(names(&outside), ["d", "sentinel"]);
    assert_eq!(fs::read(outside.join("sentinel")).unwrap(), b"secret");
    assert_ne!(
        fs::metadata(outside.join("sentinel")).unwrap().mode() & 0o777,
        0o777
    );
}

#[test]
fn mknod_makes_fifos_and_replaces_what_is_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("p"), b"a file first").unwrap();
    let reqs = vec![
        Request::Entry {
            seq: 1,
            op: EntryOp::Mknod {
                path: rp("p"),
                kind: SpecialKind::Fifo,
                mode: 0o600,
                rdev: 0,
            },
        },
        Request::Entry {
            seq: 2,
            op: EntryOp::Mknod {
                path: rp("d/q"),
                kind: SpecialKind::Fifo,
                mode: 0o644,
                rdev: 0,
            },
        },
        Request::Commit { batch: 1 },
    ];
    no_failures(&session(root, &reqs));
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(root.join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(fs::symlink_metadata(root.join("d/q"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn prune_reports_a_kept_name_of_another_type_as_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("d/b")).unwrap();
    fs::write(root.join("d/b/f"), b"x").unwrap();
    fs::write(root.join("d/gone"), b"x").unwrap();
    let reqs = vec![
        entry(
            1,
            EntryOp::Prune {
                path: rp("d"),
                keep: vec![serde_bytes::ByteBuf::from(b"b".to_vec())],
                kinds: vec![crate::proto::NodeKind::Symlink],
            },
        ),
        Request::Commit { batch: 1 },
    ];
    let replies = session(root, &reqs);
    let f = failures(&replies);
    assert_eq!(f.len(), 1, "{replies:?}");
    assert_eq!(f[0].kind, FailureKind::Conflict);
    assert_eq!(f[0].path, rp("d/b"));
    assert!(!root.join("d/gone").exists());
}
