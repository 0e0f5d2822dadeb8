//! File contents: literal, delta, sparse, compressed, verified before they are put in place.

use super::*;

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
