//! Large files resumed from their partial copy.

use super::*;

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
