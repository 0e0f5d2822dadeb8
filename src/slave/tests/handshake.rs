//! The greeting: version, root, and what may come first.

use super::*;

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
fn a_commit_records_the_announced_brick_stime() {
    let dir = tempfile::tempdir().unwrap();
    let brick = "node1:/srv/brick1";
    // Announced but not committed: nothing recorded.
    let (r, _) = run_raw(
        dir.path(),
        &wire(&[
            hello(),
            Request::Stime {
                brick: brick.into(),
                stime: 5,
            },
        ]),
    );
    r.unwrap();
    let root = fs::File::open(dir.path()).unwrap();
    assert_eq!(commits::stimes(&root).unwrap(), []);
    let replies = session(
        dir.path(),
        &[
            Request::Stime {
                brick: brick.into(),
                stime: 7,
            },
            Request::Commit { batch: 1 },
        ],
    );
    assert_eq!(replies, [Reply::Committed { batch: 1 }]);
    let got = commits::stimes(&root).unwrap();
    assert_eq!(
        got,
        [commits::BrickStime {
            brick: brick.into(),
            stime: 7
        }]
    );
}

#[test]
fn stimes_of_more_bricks_than_one_batch_can_have_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut frames = vec![hello()];
    // The same brick again replaces its stime: no growth.
    for stime in 0..200 {
        frames.push(Request::Stime {
            brick: "node1:/b".into(),
            stime,
        });
    }
    for i in 0..=crate::proto::STIME_BRICKS_MAX {
        frames.push(Request::Stime {
            brick: format!("node1:/b{i}"),
            stime: 1,
        });
    }
    let (r, replies) = run_raw(dir.path(), &wire(&frames));
    assert!(matches!(r, Err(SlaveError::Unexpected { .. })), "{r:?}");
    let [Reply::Hello { .. }, Reply::Fatal { message }] = &replies[..] else {
        panic!("{replies:?}")
    };
    assert!(message.contains("bricks in one batch"), "{message}");
}

#[test]
fn a_promoted_root_serves_no_master() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::File::open(dir.path()).unwrap();
    commits::set_promoted(&root, Some(3_000_000_000)).unwrap();
    let (r, replies) = run_raw(dir.path(), &wire(&[hello()]));
    assert!(
        matches!(r, Err(SlaveError::Promoted { at: 3, .. })),
        "{r:?}"
    );
    let [Reply::Fatal { message }] = &replies[..] else {
        panic!("{replies:?}")
    };
    assert!(message.contains("promoted"), "{message}");
    // Promoted while a master is connected: its next commit is refused.
    commits::set_promoted(&root, None).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (out_tx, out_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    tx.send(wire(&[hello(), Request::Barrier { id: 1 }]))
        .unwrap();
    let path = dir.path().to_owned();
    let master = std::thread::spawn(move || {
        // Once the barrier is answered the session is past its handshake.
        let mut got = Vec::new();
        let answered = |got: &[u8]| {
            let mut r = got;
            let _hello = read_frame::<Reply, _>(&mut r);
            matches!(read_frame::<Reply, _>(&mut r), Ok(Reply::Barrier { id: 1 }))
        };
        while !answered(&got) {
            got.extend(out_rx.recv().unwrap());
        }
        let root = fs::File::open(&path).unwrap();
        commits::set_promoted(&root, Some(4_000_000_000)).unwrap();
        tx.send(wire(&[Request::Commit { batch: 1 }])).unwrap();
    });
    let r = serve(dir.path(), ChanIn(rx, Vec::new()), ChanOut(out_tx));
    master.join().unwrap();
    assert!(
        matches!(r, Err(SlaveError::Promoted { at: 4, .. })),
        "{r:?}"
    );
}

/// A stream fed by a channel, for a test that answers what the slave says.
struct ChanIn(std::sync::mpsc::Receiver<Vec<u8>>, Vec<u8>);

impl std::io::Read for ChanIn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.1.is_empty() {
            match self.0.recv() {
                Ok(b) => self.1 = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1[..n]);
        self.1.drain(..n);
        Ok(n)
    }
}

/// The slave's output, handed over at each write.
struct ChanOut(std::sync::mpsc::Sender<Vec<u8>>);

impl std::io::Write for ChanOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
