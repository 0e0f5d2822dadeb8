//! Signatures the slave answers, and its cache of them.

use super::*;

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
