//! Sessions run over in-memory streams against temp directories.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rand::{RngCore, SeedableRng};

use super::*;
use crate::proto::{
    encode, Attrs, EntryOp, Failure, FailureKind, FileStamp, PieceKind, Segment, SpecialKind,
    Xattr, PIECE_SIZE, SIG_BLOCK_SIZE,
};
use crate::relpath::RelPath;

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn hello() -> Request {
    Request::Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: "test".into(),
    }
}

fn entry(seq: u64, op: EntryOp) -> Request {
    Request::Entry { seq, op }
}

fn attrs(mode: u32, mtime_sec: i64, mtime_nsec: u32) -> Attrs {
    Attrs {
        mode,
        uid: None,
        gid: None,
        mtime_sec,
        mtime_nsec,
        xattrs: None,
    }
}

/// Runs a session on `reqs` (Hello is not added) and decodes every reply.
fn run_raw(root: &Path, wire: &[u8]) -> (Result<(), SlaveError>, Vec<Reply>) {
    let mut out = Vec::new();
    let result = serve(root, std::io::Cursor::new(wire.to_vec()), &mut out);
    let mut replies = Vec::new();
    let mut r = &out[..];
    while !r.is_empty() {
        replies.push(read_frame::<Reply, _>(&mut r).expect("slave sent a malformed reply"));
    }
    (result, replies)
}

fn wire(reqs: &[Request]) -> Vec<u8> {
    let mut w = Vec::new();
    for r in reqs {
        write_frame(&mut w, r).unwrap();
    }
    w
}

/// Runs Hello + `reqs`, expects a clean end; returns the replies after Hello.
fn session(root: &Path, reqs: &[Request]) -> Vec<Reply> {
    let mut all = vec![hello()];
    all.extend_from_slice(reqs);
    let (result, mut replies) = run_raw(root, &wire(&all));
    result.unwrap_or_else(|e| panic!("session failed: {e}; replies: {replies:?}"));
    assert!(
        matches!(replies.first(), Some(Reply::Hello { .. })),
        "{replies:?}"
    );
    replies.remove(0);
    replies
}

fn failures(replies: &[Reply]) -> Vec<&Failure> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Failed(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn no_failures(replies: &[Reply]) {
    let f = failures(replies);
    assert!(f.is_empty(), "unexpected failures: {f:#?}");
}

/// Requests that ship `data` as `path` literally.
fn ship(seq: u64, path: &str, data: &[u8], attrs: Attrs) -> Vec<Request> {
    let mut reqs = vec![Request::FileBegin {
        seq,
        path: rp(path),
        size: data.len() as u64,
    }];
    for (index, chunk) in data.chunks(PIECE_SIZE as usize).enumerate() {
        reqs.push(Request::Piece {
            index: index as u32,
            kind: PieceKind::Literal,
            data: chunk.to_vec(),
        });
    }
    reqs.push(Request::FileEnd {
        attrs,
        hash: *blake3::hash(data).as_bytes(),
    });
    reqs
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn hello_reports_root_and_emptiness() {
    let dir = tempfile::tempdir().unwrap();
    let (r, replies) = run_raw(dir.path(), &wire(&[hello()]));
    r.unwrap();
    let Reply::Hello {
        protocol,
        root,
        root_empty,
        agent_version,
    } = &replies[0]
    else {
        panic!("{replies:?}")
    };
    assert_eq!(*protocol, PROTOCOL_VERSION);
    assert_eq!(root, &dir.path().display().to_string());
    assert_eq!(agent_version, env!("CARGO_PKG_VERSION"));
    assert!(root_empty);
    fs::write(dir.path().join("x"), b"").unwrap();
    let (_, replies) = run_raw(dir.path(), &wire(&[hello()]));
    assert!(matches!(
        replies[0],
        Reply::Hello {
            root_empty: false,
            ..
        }
    ));
}

#[test]
fn version_mismatch_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let req = Request::Hello {
        protocol: PROTOCOL_VERSION + 1,
        agent_version: "future".into(),
    };
    let (r, replies) = run_raw(dir.path(), &wire(&[req, Request::Barrier { id: 1 }]));
    assert!(matches!(r, Err(SlaveError::Version { .. })), "{r:?}");
    let [Reply::Fatal { message }] = &replies[..] else {
        panic!("{replies:?}")
    };
    assert!(message.contains("upgrade the slave"), "{message}");
    assert!(
        message.contains(&format!("{}", PROTOCOL_VERSION + 1)),
        "{message}"
    );
}

#[test]
fn missing_or_non_directory_root_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    for root in [&missing, &file] {
        let (r, replies) = run_raw(root, &wire(&[hello()]));
        assert!(matches!(r, Err(SlaveError::Root { .. })), "{r:?}");
        let [Reply::Fatal { message }] = &replies[..] else {
            panic!("{replies:?}")
        };
        assert!(message.contains(&root.display().to_string()), "{message}");
    }
}

#[test]
fn first_frame_must_be_hello() {
    let dir = tempfile::tempdir().unwrap();
    let (r, replies) = run_raw(dir.path(), &wire(&[Request::Barrier { id: 1 }]));
    assert!(matches!(r, Err(SlaveError::Unexpected { .. })), "{r:?}");
    assert!(matches!(&replies[..], [Reply::Fatal { .. }]), "{replies:?}");
}

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
fn literal_file_ship_with_mode_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let big = random(2 * PIECE_SIZE as usize + 12345, 1);
    let mut reqs = ship(1, "a/big", &big, attrs(0o640, 1_700_000_000, 987_654_321));
    reqs.extend(ship(2, "small", b"hello", attrs(0o600, 1_500_000_000, 1)));
    reqs.extend(ship(3, "empty", b"", attrs(0o644, 1_500_000_000, 0)));
    reqs.push(Request::Commit { batch: 7 });
    let replies = session(dir.path(), &reqs);
    assert_eq!(replies, [Reply::Committed { batch: 7 }]);
    assert!(fs::read(dir.path().join("a/big")).unwrap() == big);
    assert_eq!(fs::read(dir.path().join("small")).unwrap(), b"hello");
    assert_eq!(fs::read(dir.path().join("empty")).unwrap(), b"");
    let md = fs::metadata(dir.path().join("a/big")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 987_654_321));
    let md = fs::metadata(dir.path().join("small")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 1));
    assert_eq!(names(dir.path()), ["a", "empty", "small"]);
}

/// Asks the slave for the signature of `path`; returns one per piece.
fn signatures(root: &Path, path: &str) -> Option<Vec<Vec<u8>>> {
    let replies = session(
        root,
        &[Request::Signature {
            seq: 1,
            path: rp(path),
        }],
    );
    let Some(Reply::SigBegin { seq: 1, size }) = replies.first() else {
        panic!("{replies:?}")
    };
    let size = (*size)?;
    let pieces: Vec<Vec<u8>> = replies[1..]
        .iter()
        .map(|r| match r {
            Reply::SigPiece { data } => data.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(pieces.len() as u64, size.div_ceil(PIECE_SIZE));
    Some(pieces)
}

#[test]
fn signatures_per_piece_and_none_for_non_files() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty"), b"").unwrap();
    fs::write(dir.path().join("f"), random(PIECE_SIZE as usize + 1, 2)).unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
    assert_eq!(signatures(dir.path(), "empty"), Some(vec![]));
    let sigs = signatures(dir.path(), "f").unwrap();
    assert_eq!(sigs.len(), 2);
    let sig = fast_rsync::Signature::deserialize(sigs[0].clone()).unwrap();
    let n_blocks = (PIECE_SIZE / u64::from(SIG_BLOCK_SIZE)) as usize;
    assert_eq!(sig.serialized().len(), 12 + n_blocks * (4 + 8));
    assert_eq!(signatures(dir.path(), "d"), None);
    assert_eq!(signatures(dir.path(), "l"), None);
    assert_eq!(signatures(dir.path(), "missing/x"), None);
}

#[test]
fn delta_ship_sends_little_and_rebuilds_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let old = random(20 << 20, 3);
    fs::write(dir.path().join("f"), &old).unwrap();
    let mut new = old.clone();
    let mid = new.len() / 2;
    new[mid..mid + (1 << 20)].copy_from_slice(&random(1 << 20, 4));

    let sigs = signatures(dir.path(), "f").unwrap();
    let mut reqs = vec![Request::FileBegin {
        seq: 5,
        path: rp("f"),
        size: new.len() as u64,
    }];
    let mut delta_bytes = 0;
    for (index, piece) in new.chunks(PIECE_SIZE as usize).enumerate() {
        let sig = fast_rsync::Signature::deserialize(sigs[index].clone()).unwrap();
        let mut delta = Vec::new();
        fast_rsync::diff(&sig.index(), piece, &mut delta).unwrap();
        delta_bytes += delta.len();
        reqs.push(Request::Piece {
            index: index as u32,
            kind: PieceKind::Delta,
            data: delta,
        });
    }
    assert!(delta_bytes < 4 << 20, "{delta_bytes} delta bytes");
    reqs.push(Request::FileEnd {
        attrs: attrs(0o644, 1_600_000_000, 5),
        hash: *blake3::hash(&new).as_bytes(),
    });
    reqs.push(Request::Commit { batch: 1 });
    let replies = session(dir.path(), &reqs);
    assert_eq!(replies, [Reply::Committed { batch: 1 }]);
    assert!(fs::read(dir.path().join("f")).unwrap() == new);
    assert_eq!(names(dir.path()), ["f"]);
}

#[test]
fn same_pieces_are_taken_from_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let old = random(3 * PIECE_SIZE as usize / 2, 5);
    fs::write(dir.path().join("f"), &old).unwrap();
    let mut new = old.clone();
    let last = new.len() - 10;
    new[last..].copy_from_slice(b"0123456789");
    let reqs = vec![
        Request::FileBegin {
            seq: 1,
            path: rp("f"),
            size: new.len() as u64,
        },
        Request::Piece {
            index: 0,
            kind: PieceKind::Same,
            data: Vec::new(),
        },
        Request::Piece {
            index: 1,
            kind: PieceKind::Literal,
            data: new[PIECE_SIZE as usize..].to_vec(),
        },
        Request::FileEnd {
            attrs: attrs(0o644, 1_600_000_000, 0),
            hash: *blake3::hash(&new).as_bytes(),
        },
        Request::Commit { batch: 1 },
    ];
    assert_eq!(session(dir.path(), &reqs), [Reply::Committed { batch: 1 }]);
    assert!(fs::read(dir.path().join("f")).unwrap() == new);
    // Without a current file, `Same` has nothing to copy: the hash check
    // refuses the result and the old name is left alone.
    let reqs = vec![
        Request::FileBegin {
            seq: 2,
            path: rp("g"),
            size: 4,
        },
        Request::Piece {
            index: 0,
            kind: PieceKind::Same,
            data: Vec::new(),
        },
        Request::FileEnd {
            attrs: attrs(0o644, 1, 0),
            hash: *blake3::hash(b"abcd").as_bytes(),
        },
        Request::Commit { batch: 2 },
    ];
    let replies = session(dir.path(), &reqs);
    assert_eq!(
        failures(&replies)
            .iter()
            .map(|f| (f.seq, f.kind))
            .collect::<Vec<_>>(),
        [(2, FailureKind::Mismatch)]
    );
    assert_eq!(names(dir.path()), ["f"]);
}

#[test]
fn mismatch_leaves_the_final_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"old").unwrap();
    let mut bad_hash = ship(1, "f", b"new content", attrs(0o644, 1, 0));
    if let Some(Request::FileEnd { hash, .. }) = bad_hash.last_mut() {
        hash[0] ^= 1;
    }
    // Announced 20 bytes, sent 11.
    let mut short = ship(2, "f", b"new content", attrs(0o644, 1, 0));
    if let Request::FileBegin { size, .. } = &mut short[0] {
        *size = 20;
    }
    // Announced 3 bytes, sent 11: refused while writing; the rest is ignored.
    let mut long = ship(3, "f", b"new content", attrs(0o644, 1, 0));
    if let Request::FileBegin { size, .. } = &mut long[0] {
        *size = 3;
    }
    // A delta that does not apply.
    let garbage_delta = vec![
        Request::FileBegin {
            seq: 4,
            path: rp("f"),
            size: 3,
        },
        Request::Piece {
            index: 0,
            kind: PieceKind::Delta,
            data: vec![1, 2, 3],
        },
        Request::Piece {
            index: 7,
            kind: PieceKind::Literal,
            data: vec![1, 2, 3],
        },
        Request::FileEnd {
            attrs: attrs(0o644, 1, 0),
            hash: [0; 32],
        },
    ];
    let mut reqs = bad_hash;
    reqs.extend(short);
    reqs.extend(long);
    reqs.extend(garbage_delta);
    reqs.push(Request::Commit { batch: 1 });
    let replies = session(dir.path(), &reqs);
    let f = failures(&replies);
    assert_eq!(
        f.iter().map(|f| (f.seq, f.kind)).collect::<Vec<_>>(),
        [1, 2, 3, 4].map(|s| (s, FailureKind::Mismatch)),
        "{replies:#?}"
    );
    assert!(f[0].message.contains("hash"), "{}", f[0].message);
    assert_eq!(replies.last(), Some(&Reply::Committed { batch: 1 }));
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["f"]);
}

#[test]
fn file_abort_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("kept"), b"old").unwrap();
    let mut reqs = Vec::new();
    for (seq, path) in [(1, "new"), (2, "kept")] {
        reqs.push(Request::FileBegin {
            seq,
            path: rp(path),
            size: 10,
        });
        reqs.push(Request::Piece {
            index: 0,
            kind: PieceKind::Literal,
            data: b"01234".to_vec(),
        });
        reqs.push(Request::FileAbort);
    }
    reqs.push(Request::Commit { batch: 1 });
    let replies = session(dir.path(), &reqs);
    assert_eq!(replies, [Reply::Committed { batch: 1 }]);
    assert_eq!(names(dir.path()), ["kept"]);
    assert_eq!(fs::read(dir.path().join("kept")).unwrap(), b"old");
}

#[test]
fn data_is_in_place_before_commit_and_barrier_replies() {
    let dir = tempfile::tempdir().unwrap();
    let mut reqs = ship(1, "f", b"v1", attrs(0o644, 1, 0));
    // A signature of a pending file sees the new content.
    reqs.push(Request::Signature {
        seq: 2,
        path: rp("f"),
    });
    reqs.push(Request::Barrier { id: 3 });
    reqs.extend(ship(4, "f", b"v2!", attrs(0o644, 1, 0)));
    reqs.push(Request::Commit { batch: 5 });
    let replies = session(dir.path(), &reqs);
    assert_eq!(
        replies,
        [
            Reply::SigBegin {
                seq: 2,
                size: Some(2)
            },
            Reply::SigPiece {
                data: fast_rsync::Signature::calculate(
                    b"v1",
                    fast_rsync::SignatureOptions {
                        block_size: SIG_BLOCK_SIZE,
                        crypto_hash_size: crate::proto::SIG_STRONG_LEN
                    }
                )
                .into_serialized()
            },
            Reply::Barrier { id: 3 },
            Reply::Committed { batch: 5 },
        ]
    );
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"v2!");
    assert_eq!(names(dir.path()), ["f"]);
}

#[test]
fn many_files_are_flushed_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut reqs = Vec::new();
    let n = receive::MAX_PENDING_FILES + 10;
    for i in 0..n {
        reqs.extend(ship(
            i as u64,
            &format!("f{i}"),
            format!("{i}").as_bytes(),
            attrs(0o644, 1, 0),
        ));
    }
    reqs.push(Request::Commit { batch: 1 });
    assert_eq!(session(dir.path(), &reqs), [Reply::Committed { batch: 1 }]);
    assert_eq!(names(dir.path()).len(), n);
    assert_eq!(fs::read(dir.path().join("f1029")).unwrap(), b"1029");
}

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
fn frames_out_of_place_are_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let piece = |index| Request::Piece {
        index,
        kind: PieceKind::Literal,
        data: vec![0],
    };
    let begin = Request::FileBegin {
        seq: 1,
        path: rp("f"),
        size: 2,
    };
    let cases: Vec<Vec<Request>> = vec![
        vec![piece(0)],
        vec![begin.clone(), piece(1)],
        vec![begin.clone(), Request::Barrier { id: 1 }],
        vec![Request::FileAbort],
        vec![Request::FileEnd {
            attrs: attrs(0, 0, 0),
            hash: [0; 32],
        }],
        vec![hello()],
    ];
    for case in cases {
        let mut all = vec![hello()];
        all.extend(case.iter().cloned());
        let (r, replies) = run_raw(dir.path(), &wire(&all));
        assert!(
            matches!(r, Err(SlaveError::Unexpected { .. })),
            "{case:?}: {r:?}"
        );
        assert!(
            matches!(replies.last(), Some(Reply::Fatal { .. })),
            "{case:?}: {replies:?}"
        );
        assert_eq!(
            names(dir.path()),
            Vec::<String>::new(),
            "{case:?} left files"
        );
    }
}

#[test]
fn truncated_or_garbage_streams_are_errors_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = wire(&[hello(), Request::Barrier { id: 1 }]);
    // Every truncation inside the Barrier frame.
    let hello_len = encode(&hello()).unwrap().len();
    for cut in hello_len + 1..good.len() {
        let (r, _) = run_raw(dir.path(), &good[..cut]);
        assert!(
            matches!(r, Err(SlaveError::Protocol { .. })),
            "cut {cut}: {r:?}"
        );
    }
    // A clean end between frames is fine.
    let (r, replies) = run_raw(dir.path(), &good);
    r.unwrap();
    assert_eq!(replies.last(), Some(&Reply::Barrier { id: 1 }));
    // Garbage after the handshake, and before it.
    let mut garbage = wire(&[hello()]);
    garbage.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc]);
    let (r, replies) = run_raw(dir.path(), &garbage);
    assert!(matches!(r, Err(SlaveError::Protocol { .. })), "{r:?}");
    assert!(matches!(replies.last(), Some(Reply::Fatal { .. })));
    let (r, _) = run_raw(dir.path(), &[0xff; 64]);
    assert!(r.is_err());
    let (r, _) = run_raw(dir.path(), &[]);
    assert!(r.is_err());
    // Random bytes after the handshake never panic.
    let junk_dir = tempfile::tempdir().unwrap();
    for seed in 0..200 {
        let mut w = wire(&[hello()]);
        let junk = random(64, seed);
        w.extend_from_slice(&[0, 0, 0, 60]);
        w.extend_from_slice(&junk[..60]);
        let _ = run_raw(junk_dir.path(), &w);
    }
    // A half-received file at the end of the stream leaves no temp file.
    let mut w = wire(&[
        hello(),
        Request::FileBegin {
            seq: 1,
            path: rp("f"),
            size: 10,
        },
    ]);
    w.extend_from_slice(&[0, 0, 1]);
    let (r, _) = run_raw(dir.path(), &w);
    assert!(r.is_err());
    assert!(
        !names(dir.path()).iter().any(|n| n.starts_with(".georep.")),
        "{:?}",
        names(dir.path())
    );
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
fn a_sparse_piece_leaves_holes_and_the_size_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let size: u64 = 3 << 20;
    let mut content = vec![0u8; size as usize];
    let data = b"data in the middle".repeat(200);
    content[1 << 20..(1 << 20) + data.len()].copy_from_slice(&data);
    let reqs = vec![
        Request::FileBegin {
            seq: 1,
            path: rp("sparse"),
            size,
        },
        Request::SparsePiece {
            index: 0,
            segments: vec![Segment {
                offset: 1 << 20,
                data: data.clone(),
            }],
        },
        Request::FileEnd {
            attrs: attrs(0o644, 1, 0),
            hash: *blake3::hash(&content).as_bytes(),
        },
        Request::Commit { batch: 1 },
    ];
    let replies = session(root, &reqs);
    no_failures(&replies);
    assert_eq!(fs::read(root.join("sparse")).unwrap(), content);
    let ranges = georep_testkit::data_ranges(&root.join("sparse")).unwrap();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert!(
        ranges[0].0 <= 1 << 20 && ranges[0].1 < 2 << 20,
        "{ranges:?}"
    );
}

#[test]
fn a_sparse_segment_past_its_piece_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let reqs = vec![
        Request::FileBegin {
            seq: 1,
            path: rp("f"),
            size: 100,
        },
        Request::SparsePiece {
            index: 0,
            segments: vec![Segment {
                offset: 90,
                data: vec![1; 20],
            }],
        },
        Request::FileEnd {
            attrs: attrs(0o644, 1, 0),
            hash: [0; 32],
        },
        Request::Commit { batch: 1 },
    ];
    let replies = session(dir.path(), &reqs);
    let f = failures(&replies);
    assert_eq!(f.len(), 1, "{replies:?}");
    assert_eq!(f[0].kind, FailureKind::Mismatch);
    assert!(!dir.path().join("f").exists());
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

#[test]
fn a_delta_against_a_copy_replaced_since_its_signature_is_refused_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let old = random(2 << 20, 20);
    fs::write(dir.path().join("f"), &old).unwrap();
    let sigs = signatures(dir.path(), "f").unwrap();
    let mut new = old.clone();
    new[1 << 20..(1 << 20) + 10].copy_from_slice(b"0123456789");
    let sig = fast_rsync::Signature::deserialize(sigs[0].clone()).unwrap();
    let mut delta = Vec::new();
    fast_rsync::diff(&sig.index(), &new, &mut delta).unwrap();
    // Replaced by a shorter file after its signature was taken (as by a
    // send of the same path that was put in place meanwhile).
    let shorter = random(444_457, 21);
    fs::write(dir.path().join("f"), &shorter).unwrap();
    let reqs = [
        Request::FileBegin {
            seq: 9,
            path: rp("f"),
            size: new.len() as u64,
        },
        Request::Piece {
            index: 0,
            kind: PieceKind::Delta,
            data: delta,
        },
        Request::FileEnd {
            attrs: attrs(0o644, 1, 0),
            hash: *blake3::hash(&new).as_bytes(),
        },
        Request::Commit { batch: 1 },
    ];
    let replies = session(dir.path(), &reqs);
    let f = failures(&replies);
    assert_eq!(
        f.iter().map(|f| (f.seq, f.kind)).collect::<Vec<_>>(),
        [(9, FailureKind::Mismatch)],
        "{replies:#?}"
    );
    assert!(f[0].message.contains("does not apply"), "{}", f[0].message);
    assert_eq!(replies.last(), Some(&Reply::Committed { batch: 1 }));
    assert!(fs::read(dir.path().join("f")).unwrap() == shorter);
    assert_eq!(names(dir.path()), ["f"]);
}

#[test]
fn compressed_pieces_are_applied_as_the_pieces_inside() {
    use crate::proto::compress::{pack, Compression};
    let dir = tempfile::tempdir().unwrap();
    let data = georep_testkit::log_text(PIECE_SIZE as usize + 100_000, 5);
    let reqs: Vec<Request> = ship(1, "log.txt", &data, attrs(0o644, 1, 0))
        .into_iter()
        .map(|r| pack(r, Compression::Zstd))
        .collect();
    let packed = reqs
        .iter()
        .filter(|r| matches!(r, Request::Compressed { .. }))
        .count();
    assert_eq!(packed, 2, "both pieces of text compress");
    let mut reqs = reqs;
    reqs.push(Request::Commit { batch: 1 });
    no_failures(&session(dir.path(), &reqs));
    assert_eq!(fs::read(dir.path().join("log.txt")).unwrap(), data);
}

#[test]
fn a_corrupt_compressed_frame_ends_the_session_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = georep_testkit::log_text(100_000, 6);
    let mut reqs = vec![hello()];
    let mut shipped = ship(1, "log.txt", &data, attrs(0o644, 1, 0));
    // The piece, replaced by a frame that claims it but holds garbage.
    shipped[1] = Request::Compressed {
        raw_len: 200_000,
        data: vec![0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff],
    };
    reqs.extend(shipped);
    reqs.push(Request::Commit { batch: 1 });
    let (r, replies) = run_raw(dir.path(), &wire(&reqs));
    assert!(matches!(r, Err(SlaveError::Protocol { .. })), "{r:?}");
    assert!(
        matches!(replies.last(), Some(Reply::Fatal { message }) if message.contains("corrupt compressed frame")),
        "{replies:?}"
    );
    assert!(!dir.path().join("log.txt").exists());
}

/// The requests that send pieces `from..` of `data` resumably (no `FileEnd`).
fn resumable(seq: u64, path: &str, data: &[u8], stamp: FileStamp, from: u32) -> Vec<Request> {
    let mut reqs = vec![Request::FileResume {
        seq,
        path: rp(path),
        size: data.len() as u64,
        stamp,
        from,
    }];
    for (index, chunk) in data.chunks(PIECE_SIZE as usize).enumerate() {
        if index >= from as usize {
            reqs.push(Request::Piece {
                index: index as u32,
                kind: PieceKind::Literal,
                data: chunk.to_vec(),
            });
        }
    }
    reqs
}

fn partial_query(seq: u64, path: &str, stamp: FileStamp) -> Request {
    Request::Partial {
        seq,
        path: rp(path),
        stamp,
    }
}

#[test]
fn a_resumable_file_cut_off_is_resumed_from_its_partial_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let data = random(4 * PIECE_SIZE as usize + 1000, 77);
    let stamp = FileStamp {
        size: data.len() as u64,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 5,
    };
    // First session: three pieces arrive, then the connection ends.
    let mut first = resumable(1, "big", &data, stamp, 0);
    first.truncate(4);
    session(dir.path(), &first);
    assert!(!dir.path().join("big").exists(), "a partial went in place");
    let part = names(dir.path());
    assert!(
        part.len() == 1 && part[0].ends_with(".part"),
        "the partial was not kept: {part:?}"
    );

    // A prune of its directory leaves a fresh partial alone.
    let prune = entry(
        2,
        EntryOp::Prune {
            path: RelPath::root(),
            keep: vec![],
            kinds: vec![],
        },
    );
    no_failures(&session(dir.path(), &[prune]));
    assert_eq!(names(dir.path()), part);

    // Another version of the file: nothing to keep.
    let other = FileStamp {
        mtime_nsec: 6,
        ..stamp
    };
    let replies = session(dir.path(), &[partial_query(3, "big", other)]);
    assert_eq!(replies, vec![Reply::Partial { seq: 3, pieces: 0 }]);
    // This version: three whole pieces, the last of them sent again.
    let replies = session(dir.path(), &[partial_query(4, "big", stamp)]);
    assert_eq!(replies, vec![Reply::Partial { seq: 4, pieces: 2 }]);

    let mut second = resumable(5, "big", &data, stamp, 2);
    assert_eq!(second.len(), 1 + 3, "pieces 2, 3 and 4 only");
    second.push(Request::FileEnd {
        attrs: attrs(0o640, 1_700_000_000, 5),
        hash: *blake3::hash(&data).as_bytes(),
    });
    second.push(Request::Commit { batch: 1 });
    no_failures(&session(dir.path(), &second));
    assert_eq!(fs::read(dir.path().join("big")).unwrap(), data);
    assert_eq!(names(dir.path()), vec!["big".to_owned()]);
    // The partial's record stays behind.
    assert_eq!(
        rustix::fs::getxattr(
            dir.path().join("big"),
            "user.georep.partial",
            &mut [0u8; 64][..]
        ),
        Err(rustix::io::Errno::NODATA)
    );
}

#[test]
fn a_resumed_file_whose_partial_is_wrong_is_not_put_in_place_and_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = random(3 * PIECE_SIZE as usize, 78);
    let stamp = FileStamp {
        size: data.len() as u64,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 0,
    };
    let mut first = resumable(1, "big", &data, stamp, 0);
    first.truncate(3);
    session(dir.path(), &first);
    // The partial is damaged behind the slave's back (a torn write).
    let part = dir.path().join(&names(dir.path())[0]);
    let f = fs::OpenOptions::new().write(true).open(&part).unwrap();
    f.write_all_at(b"torn", 100).unwrap();
    drop(f);

    let mut second = resumable(2, "big", &data, stamp, 1);
    second.push(Request::FileEnd {
        attrs: attrs(0o640, 1_700_000_000, 0),
        hash: *blake3::hash(&data).as_bytes(),
    });
    second.push(Request::Commit { batch: 1 });
    let replies = session(dir.path(), &second);
    let f = failures(&replies);
    assert!(
        f.len() == 1 && f[0].kind == FailureKind::Mismatch,
        "{replies:?}"
    );
    assert!(
        !dir.path().join("big").exists(),
        "a torn copy went in place"
    );
    // The partial went with the mismatch: the retry starts from 0.
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    let replies = session(dir.path(), &[partial_query(3, "big", stamp)]);
    assert_eq!(replies, vec![Reply::Partial { seq: 3, pieces: 0 }]);
}

#[test]
fn resuming_more_pieces_than_the_partial_holds_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let data = random(3 * PIECE_SIZE as usize, 79);
    let stamp = FileStamp {
        size: data.len() as u64,
        mtime_sec: 1,
        mtime_nsec: 0,
    };
    let mut reqs = resumable(1, "big", &data, stamp, 2);
    reqs.push(Request::FileEnd {
        attrs: attrs(0o640, 1, 0),
        hash: *blake3::hash(&data).as_bytes(),
    });
    let replies = session(dir.path(), &reqs);
    let f = failures(&replies);
    assert!(
        f.len() == 1 && f[0].kind == FailureKind::Mismatch,
        "{replies:?}"
    );
    assert!(!dir.path().join("big").exists());
}

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

/// A stream of `first` then `then`, that runs `between` before giving
/// any byte of `then` (the slave reads ahead on a thread of its own, so
/// `between` waits for the answers it needs).
struct Staged<F: FnMut()> {
    first: std::io::Cursor<Vec<u8>>,
    then: std::io::Cursor<Vec<u8>>,
    between: Option<F>,
}

impl<F: FnMut()> std::io::Read for Staged<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.first.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if let Some(mut f) = self.between.take() {
            f();
        }
        self.then.read(buf)
    }
}

/// Output shared with the test while the session runs.
#[derive(Clone, Default)]
struct SharedOut(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedOut {
    fn replies(&self) -> Vec<Reply> {
        let out = self.0.lock().unwrap().clone();
        let mut replies = Vec::new();
        let mut r = &out[..];
        while let Ok(reply) = read_frame::<Reply, _>(&mut r) {
            replies.push(reply);
        }
        replies
    }
}

/// The `SigPiece`s answering the `Signature` request `seq` among `replies`.
fn sig_answer(replies: &[Reply], seq: u64) -> Vec<Vec<u8>> {
    let at = replies
        .iter()
        .position(|r| matches!(r, Reply::SigBegin { seq: s, .. } if *s == seq))
        .unwrap_or_else(|| panic!("no SigBegin {seq} in {replies:?}"));
    replies[at + 1..]
        .iter()
        .map_while(|r| match r {
            Reply::SigPiece { data } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn sig_answer_len(replies: &[Reply], seq: u64) -> usize {
    match replies
        .iter()
        .position(|r| matches!(r, Reply::SigBegin { seq: s, .. } if *s == seq))
    {
        Some(_) => sig_answer(replies, seq).len(),
        None => 0,
    }
}

/// `content` sent to `path` as `pieces` (`FileBegin` as request `seq`),
/// committed, then its signatures asked for (request `seq + 1`).
fn sent_then_signed(path: &str, seq: u64, content: &[u8], pieces: Vec<Request>) -> Vec<Request> {
    let mut reqs = vec![Request::FileBegin {
        seq,
        path: rp(path),
        size: content.len() as u64,
    }];
    reqs.extend(pieces);
    reqs.extend([
        Request::FileEnd {
            attrs: attrs(0o644, 1_600_000_000, 0),
            hash: *blake3::hash(content).as_bytes(),
        },
        Request::Commit { batch: 1 },
        Request::Signature {
            seq: seq + 1,
            path: rp(path),
        },
    ]);
    reqs
}

#[test]
fn signatures_answered_after_a_delta_are_those_of_the_new_content() {
    let dir = tempfile::tempdir().unwrap();
    let old = random(5 * PIECE_SIZE as usize / 2, 21);
    fs::write(dir.path().join("f"), &old).unwrap();
    let mut new = old.clone();
    let mid = PIECE_SIZE as usize + 4096;
    new[mid..mid + 1000].copy_from_slice(&random(1000, 22));
    let sigs = signatures(dir.path(), "f").unwrap();
    let piece =
        |i: usize| &new[i * PIECE_SIZE as usize..((i + 1) * PIECE_SIZE as usize).min(new.len())];
    let sig1 = fast_rsync::Signature::deserialize(sigs[1].clone()).unwrap();
    let mut delta = Vec::new();
    fast_rsync::diff(&sig1.index(), piece(1), &mut delta).unwrap();
    let same = |index| Request::Piece {
        index,
        kind: PieceKind::Same,
        data: Vec::new(),
    };
    let mut reqs = vec![Request::Signature {
        seq: 1,
        path: rp("f"),
    }];
    let delta = Request::Piece {
        index: 1,
        kind: PieceKind::Delta,
        data: delta,
    };
    reqs.extend(sent_then_signed(
        "f",
        2,
        &new,
        vec![same(0), delta, same(2)],
    ));
    let replies = session(dir.path(), &reqs);
    no_failures(&replies);
    assert!(fs::read(dir.path().join("f")).unwrap() == new);
    assert_eq!(sig_answer(&replies, 1), sigs);
    let after = sig_answer(&replies, 3);
    assert_eq!(after.len(), 3);
    assert!(
        after == signatures(dir.path(), "f").unwrap(),
        "stale signatures after the delta"
    );
    // A large file received whole: its signatures too.
    let whole = random(3 * PIECE_SIZE as usize / 2, 26);
    let (a, b) = whole.split_at(PIECE_SIZE as usize);
    let literal = |index, data: &[u8]| Request::Piece {
        index,
        kind: PieceKind::Literal,
        data: data.to_vec(),
    };
    let reqs = sent_then_signed("h", 1, &whole, vec![literal(0, a), literal(1, b)]);
    let replies = session(dir.path(), &reqs);
    no_failures(&replies);
    assert!(sig_answer(&replies, 2) == signatures(dir.path(), "h").unwrap());
}

#[test]
fn a_signature_is_computed_anew_once_the_slaves_copy_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, random(PIECE_SIZE as usize + 5, 23)).unwrap();
    let ask = |seq| Request::Signature { seq, path: rp("f") };
    let out = SharedOut::default();
    let changed = random(PIECE_SIZE as usize + 5, 24);
    let input = Staged {
        first: std::io::Cursor::new(wire(&[hello(), ask(1)])),
        then: std::io::Cursor::new(wire(&[ask(2)])),
        between: Some({
            let path = path.clone();
            let out = out.clone();
            move || {
                // The first answer is complete.
                while sig_answer_len(&out.replies(), 1) < 2 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                // Same size, and the mtime put back: only the ctime tells.
                let mtime = fs::metadata(&path).unwrap().modified().unwrap();
                fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .write_all_at(&changed, 0)
                    .unwrap();
                fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
            }
        }),
    };
    serve(dir.path(), input, &mut out.clone()).unwrap();
    let replies = out.replies();
    let first = sig_answer(&replies, 1);
    let second = sig_answer(&replies, 2);
    assert!(
        first != second,
        "the cached signature of the old content was answered"
    );
    assert!(second == signatures(dir.path(), "f").unwrap());
}

#[test]
fn a_file_whose_pieces_are_all_same_keeps_the_slaves_copy() {
    let dir = tempfile::tempdir().unwrap();
    let content = random(3 * PIECE_SIZE as usize / 2, 25);
    let (f, g) = (dir.path().join("f"), dir.path().join("g"));
    fs::write(&f, &content).unwrap();
    fs::write(&g, &content).unwrap();
    fs::hard_link(&g, dir.path().join("g2")).unwrap();
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    let (f_ino, g_ino) = (ino(&f), ino(&g));
    let all_same = |seq, name: &str, hash: &[u8]| {
        vec![
            Request::FileBegin {
                seq,
                path: rp(name),
                size: content.len() as u64,
            },
            Request::Piece {
                index: 0,
                kind: PieceKind::Same,
                data: Vec::new(),
            },
            Request::Piece {
                index: 1,
                kind: PieceKind::Same,
                data: Vec::new(),
            },
            Request::FileEnd {
                attrs: attrs(0o640, 1_600_000_000, 7),
                hash: *blake3::hash(hash).as_bytes(),
            },
        ]
    };
    let mut reqs = all_same(1, "f", &content);
    reqs.extend(all_same(2, "g", &content));
    reqs.push(Request::Commit { batch: 1 });
    let replies = session(dir.path(), &reqs);
    no_failures(&replies);
    // Not rewritten: the same inode, with the new attributes.
    let md = fs::metadata(&f).unwrap();
    assert_eq!(md.ino(), f_ino);
    assert_eq!(
        (md.mode() & 0o7777, md.mtime(), md.mtime_nsec()),
        (0o640, 1_600_000_000, 7)
    );
    assert!(fs::read(&f).unwrap() == content);
    // A copy with another name is rewritten, so the other name keeps its
    // own attributes.
    let md = fs::metadata(&g).unwrap();
    assert_ne!(md.ino(), g_ino);
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o640, 1_600_000_000));
    assert!(fs::read(&g).unwrap() == content);
    assert_eq!(ino(&dir.path().join("g2")), g_ino);
    assert_eq!(names(dir.path()), ["f", "g", "g2"]);
    // A copy that is not what the master has is refused and left alone.
    let mut reqs = all_same(3, "f", b"something else");
    reqs.push(Request::Commit { batch: 2 });
    let replies = session(dir.path(), &reqs);
    assert_eq!(
        failures(&replies)
            .iter()
            .map(|f| (f.seq, f.kind))
            .collect::<Vec<_>>(),
        [(3, FailureKind::Mismatch)]
    );
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.ino(), md.mode() & 0o7777), (f_ino, 0o640));
    assert_eq!(names(dir.path()), ["f", "g", "g2"]);
}
