//! A hostile master: with a real session key, through the real sshd, frames
//! try to make the slave read, write, chmod or delete outside its root. Each
//! attempt fails, and a sentinel outside the root stays exactly as it was.

use std::fs;
use std::io::{BufReader, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use georep::proto::{
    encode, read_frame, Attrs, EntryOp, FailureKind, PieceKind, Reply, Request, PROTOCOL_VERSION,
};
use georep::relpath::RelPath;

use crate::common::Scenario;

/// A `geo-rep slave` reached with the session key, spoken to frame by frame.
struct Hostile {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Hostile {
    fn connect(s: &Scenario) -> Hostile {
        let mut child = s
            .sshd
            .ssh_command(&s.session_key())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut h = Hostile {
            child,
            stdin,
            stdout,
        };
        h.send(&Request::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "hostile".into(),
        });
        assert!(matches!(h.recv(), Some(Reply::Hello { .. })));
        h
    }

    fn send_raw(&mut self, frame: &[u8]) {
        let w = self.stdin.as_mut().unwrap();
        // The slave may already have hung up on an earlier frame.
        let _ = w.write_all(frame).and_then(|()| w.flush());
    }

    fn send(&mut self, req: &Request) {
        self.send_raw(&encode(req).unwrap());
    }

    fn recv(&mut self) -> Option<Reply> {
        read_frame::<Reply, _>(&mut self.stdout).ok()
    }

    /// Sends a barrier and returns every reply up to it.
    fn barrier(&mut self, id: u64) -> Vec<Reply> {
        self.send(&Request::Barrier { id });
        let mut got = Vec::new();
        while let Some(r) = self.recv() {
            if r == (Reply::Barrier { id }) {
                return got;
            }
            got.push(r);
        }
        panic!("the slave hung up before barrier {id}; replies: {got:?}");
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory outside the slave root with a file that must not change.
struct Sentinel {
    dir: PathBuf,
}

impl Sentinel {
    fn new(s: &Scenario) -> Sentinel {
        let dir = s.path("outside");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("secret"), b"keep me").unwrap();
        fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        Sentinel { dir }
    }

    fn assert_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec!["secret"],
            "something appeared or vanished outside the root"
        );
        let secret = self.dir.join("secret");
        assert_eq!(fs::read(&secret).unwrap(), b"keep me");
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "the sentinel's mode changed");
    }
}

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn attrs() -> Attrs {
    Attrs {
        mode: 0o777,
        uid: Some(65534),
        gid: Some(65534),
        mtime_sec: 0,
        mtime_nsec: 0,
        xattrs: Some(Vec::new()),
    }
}

/// Every operation aimed through `via` (a symlink in a parent position).
fn attempts_through(via: &str) -> Vec<Request> {
    let p = |rest: &str| rp(&format!("{via}/{rest}"));
    let mut seq = 100;
    let mut next = || {
        seq += 1;
        seq
    };
    let entry = |seq, op| Request::Entry { seq, op };
    vec![
        entry(
            next(),
            EntryOp::Create {
                path: p("new"),
                mode: 0o644,
            },
        ),
        entry(
            next(),
            EntryOp::Mkdir {
                path: p("newdir"),
                mode: 0o755,
            },
        ),
        entry(
            next(),
            EntryOp::Symlink {
                path: p("ln"),
                target: b"/".to_vec(),
            },
        ),
        entry(next(), EntryOp::Unlink { path: p("secret") }),
        entry(next(), EntryOp::Rmdir { path: p("secret") }),
        entry(
            next(),
            EntryOp::Rename {
                from: p("secret"),
                to: rp("stolen"),
            },
        ),
        entry(
            next(),
            EntryOp::Link {
                path: rp("hardlinked"),
                target: p("secret"),
            },
        ),
        entry(
            next(),
            EntryOp::Prune {
                path: p("sub"),
                keep: Vec::new(),
                kinds: Vec::new(),
            },
        ),
        Request::SetAttr {
            seq: next(),
            path: p("secret"),
            attrs: attrs(),
        },
        Request::Signature {
            seq: next(),
            path: p("secret"),
        },
        Request::FileBegin {
            seq: next(),
            path: p("secret"),
            size: 4,
        },
        Request::Piece {
            index: 0,
            kind: PieceKind::Literal,
            data: b"evil".to_vec(),
        },
        Request::FileEnd {
            attrs: attrs(),
            hash: *blake3::hash(b"evil").as_bytes(),
        },
    ]
}

/// No reply may carry the sentinel's content, and every operation that
/// named a path through the link must have failed as unsafe (or, for a
/// source that could not be reached, as missing).
fn assert_all_refused(replies: &[Reply], sent: &[Request]) {
    for r in replies {
        if let Reply::SigBegin { size: Some(_), .. } = r {
            panic!("the slave read a file outside its root: {r:?}");
        }
    }
    let failed: Vec<u64> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::Failed(f)
                if matches!(f.kind, FailureKind::Unsafe | FailureKind::SourceMissing) =>
            {
                Some(f.seq)
            }
            _ => None,
        })
        .collect();
    for req in sent {
        let seq = match req {
            Request::Entry { seq, .. }
            | Request::SetAttr { seq, .. }
            | Request::Signature { seq, .. }
            | Request::FileBegin { seq, .. } => *seq,
            _ => continue,
        };
        assert!(
            failed.contains(&seq),
            "request {req:?} was not refused; replies: {replies:?}"
        );
    }
}

#[test]
fn a_symlink_planted_in_a_parent_directory_leads_nowhere() {
    let s = Scenario::new();
    s.create(false).ok();
    let sentinel = Sentinel::new(&s);
    // Planted on the slave, by anyone: a directory symlink to the outside.
    symlink(&sentinel.dir, s.slave.join("link")).unwrap();

    let mut h = Hostile::connect(&s);
    let sent = attempts_through("link");
    for r in &sent {
        h.send(r);
    }
    let replies = h.barrier(1);
    assert_all_refused(&replies, &sent);
    sentinel.assert_untouched();
    assert!(fs::symlink_metadata(s.slave.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_parent_swapped_for_a_symlink_between_operations_leads_nowhere() {
    let s = Scenario::new();
    s.create(false).ok();
    let sentinel = Sentinel::new(&s);

    let mut h = Hostile::connect(&s);
    h.send(&Request::Entry {
        seq: 1,
        op: EntryOp::Mkdir {
            path: rp("d"),
            mode: 0o755,
        },
    });
    assert!(h.barrier(1).is_empty());
    assert!(s.slave.join("d").is_dir());
    // Between two operations the directory becomes a symlink to the outside.
    fs::remove_dir(s.slave.join("d")).unwrap();
    symlink(&sentinel.dir, s.slave.join("d")).unwrap();

    let sent = attempts_through("d");
    for r in &sent {
        h.send(r);
    }
    let replies = h.barrier(2);
    assert_all_refused(&replies, &sent);
    sentinel.assert_untouched();
}

/// A valid frame for an unlink of `aa/x`, with `aa` then overwritten by
/// `patch` (two bytes): how a hostile master smuggles a path the encoder
/// would never produce.
fn patched_unlink(patch: &[u8; 2]) -> Vec<u8> {
    let frame = encode(&Request::Entry {
        seq: 1,
        op: EntryOp::Unlink { path: rp("aa/x") },
    })
    .unwrap();
    let at = frame.windows(4).position(|w| w == b"aa/x").unwrap();
    let mut evil = frame.clone();
    evil[at..at + 2].copy_from_slice(patch);
    evil
}

fn assert_refused_and_hung_up(s: &Scenario, frame: &[u8], what: &str) {
    let mut h = Hostile::connect(s);
    h.send_raw(frame);
    h.send(&Request::Barrier { id: 9 });
    let mut replies = Vec::new();
    while let Some(r) = h.recv() {
        replies.push(r);
    }
    assert!(
        matches!(replies.first(), Some(Reply::Fatal { .. })),
        "{what}: expected a protocol error and the end of the session, got {replies:?}"
    );
    assert!(
        !replies.contains(&Reply::Barrier { id: 9 }),
        "{what}: the session went on"
    );
}

#[test]
fn escaping_paths_on_the_wire_end_the_session() {
    let s = Scenario::new();
    s.create(false).ok();
    let sentinel = Sentinel::new(&s);
    // `x` next to the root, to be reached with `..`.
    let root_parent: &Path = s.slave.parent().unwrap();
    fs::write(root_parent.join("x"), b"outside the root").unwrap();

    assert_refused_and_hung_up(&s, &patched_unlink(b".."), "a `..` component");
    assert_refused_and_hung_up(&s, &patched_unlink(b"/a"), "an absolute path");
    assert_refused_and_hung_up(&s, &patched_unlink(b"a\0"), "a NUL byte");
    assert_refused_and_hung_up(&s, &patched_unlink(b"a/"), "an empty component");
    let mut huge = 0xffff_fff0u32.to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 16]);
    assert_refused_and_hung_up(&s, &huge, "an absurd frame length");

    assert_eq!(
        fs::read(root_parent.join("x")).unwrap(),
        b"outside the root"
    );
    sentinel.assert_untouched();
}
