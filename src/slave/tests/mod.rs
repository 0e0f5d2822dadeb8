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

mod attributes;
mod contents;
mod entries;
mod fencing;
mod handshake;
mod listings;
mod resume;
mod scan;
mod signed;
mod streams;
