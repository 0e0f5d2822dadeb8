//! Broken streams: frames out of place, truncated or garbage input.

use super::*;

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
