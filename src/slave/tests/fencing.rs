//! Fencing: the epoch a session declares for its replica set, checked
//! against what the slave recorded (see `slave::fence`).

use std::io::Write as _;
use std::os::unix::net::UnixStream;

use super::*;
use crate::proto::Fence;

fn fence(epoch: u64, holder: &str) -> Request {
    Request::Fence(Fence {
        set: "gv0-replicate-0".into(),
        epoch,
        holder: holder.into(),
    })
}

fn mkdir(seq: u64, path: &str) -> Request {
    entry(
        seq,
        EntryOp::Mkdir {
            path: rp(path),
            mode: 0o755,
        },
    )
}

/// A session that declares `epoch` for `holder`, then makes `dir` and
/// commits: its outcome and replies (Hello dropped).
fn declare_and_mkdir(
    root: &Path,
    epoch: u64,
    holder: &str,
    dir: &str,
) -> (Result<(), SlaveError>, Vec<Reply>) {
    let reqs = [
        hello(),
        fence(epoch, holder),
        mkdir(1, dir),
        Request::Commit { batch: 1 },
    ];
    let (r, mut replies) = run_raw(root, &wire(&reqs));
    assert!(
        matches!(replies.first(), Some(Reply::Hello { .. })),
        "{replies:?}"
    );
    replies.remove(0);
    (r, replies)
}

/// What a refused session must have said: `Deposed` naming the set, both
/// epochs and the root, and nothing else after it.
fn assert_deposed(
    root: &Path,
    r: &Result<(), SlaveError>,
    replies: &[Reply],
    epoch: u64,
    current: u64,
) {
    let Err(e @ SlaveError::Deposed { .. }) = r else {
        panic!("not deposed: {r:?} {replies:?}")
    };
    let text = e.to_string();
    for part in [
        "gv0-replicate-0".to_string(),
        format!("epoch {epoch} "),
        format!("epoch {current} "),
        root.display().to_string(),
    ] {
        assert!(text.contains(&part), "{part:?} not in {text}");
    }
    let [Reply::Deposed(d)] = replies else {
        panic!("{replies:?}")
    };
    let root = root.display().to_string();
    assert_eq!(
        (d.set.as_str(), d.epoch, d.current, d.root.as_str()),
        ("gv0-replicate-0", epoch, current, root.as_str())
    );
}

#[test]
fn a_lower_epoch_is_refused_before_it_changes_anything() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (r, replies) = declare_and_mkdir(root, 7, "node1:/b x", "seven");
    r.unwrap();
    assert_eq!(
        replies,
        [Reply::Fenced { epoch: 7 }, Reply::Committed { batch: 1 }]
    );
    // The same grant again (a reconnect, another lane): accepted.
    let (r, _) = declare_and_mkdir(root, 7, "node1:/b x", "seven-again");
    r.unwrap();
    // A lower epoch, and the same epoch by another grant: refused, and
    // their directories never made.
    let (r, replies) = declare_and_mkdir(root, 6, "node2:/b y", "six");
    assert_deposed(root, &r, &replies, 6, 7);
    let (r, replies) = declare_and_mkdir(root, 7, "node2:/b y", "seven-by-node2");
    assert_deposed(root, &r, &replies, 7, 7);
    assert_eq!(names(root), ["seven", "seven-again"]);
    // A higher one: accepted, and from now on node1's is deposed.
    let (r, _) = declare_and_mkdir(root, 8, "node2:/b y", "eight");
    r.unwrap();
    let (r, replies) = declare_and_mkdir(root, 7, "node1:/b x", "seven-late");
    assert_deposed(root, &r, &replies, 7, 8);
    assert_eq!(names(root), ["eight", "seven", "seven-again"]);
}

#[test]
fn the_record_survives_a_restart_of_the_slave() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    declare_and_mkdir(root, 3, "node2:/b y", "three").0.unwrap();
    // Each session is a slave process of its own, as after a restart:
    // what refuses the lower epoch is the record on the root.
    let (r, replies) = declare_and_mkdir(root, 2, "node1:/b x", "two");
    assert_deposed(root, &r, &replies, 2, 3);
    let fd = fs::File::open(root).unwrap();
    assert_eq!(
        fence::recorded(&fd, "gv0-replicate-0").unwrap(),
        Some(fence::Held {
            epoch: 3,
            holder: "node2:/b y".into()
        })
    );
    assert_eq!(names(root), ["three"]);
}

/// Reads replies from `out` until one matches `done`; all of them.
fn replies_until(out: &mut UnixStream, done: impl Fn(&Reply) -> bool) -> Vec<Reply> {
    let mut got = Vec::new();
    loop {
        let reply = read_frame::<Reply, _>(&mut *out).expect("a reply");
        let last = done(&reply);
        got.push(reply);
        if last {
            return got;
        }
    }
}

/// Node1's session is open and has committed under epoch 5 when node2's
/// declares 6: node1's next batch is refused at its first request, its file
/// and directory never appear, and node2's batch stands.
#[test]
fn an_open_session_is_deposed_by_a_later_epoch_and_its_batch_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let (mut master, slave) = UnixStream::pair().unwrap();
    let slave_out = slave.try_clone().unwrap();
    let served = {
        let root = root.clone();
        std::thread::spawn(move || serve(&root, slave, slave_out))
    };
    master
        .write_all(&wire(&[
            hello(),
            fence(5, "node1:/b x"),
            mkdir(1, "d1"),
            Request::Commit { batch: 1 },
        ]))
        .unwrap();
    let got = replies_until(&mut master, |r| matches!(r, Reply::Committed { .. }));
    assert!(
        matches!(
            got[..],
            [
                Reply::Hello { .. },
                Reply::Fenced { epoch: 5 },
                Reply::Committed { batch: 1 }
            ]
        ),
        "{got:?}"
    );
    // node2 takes over meanwhile.
    let (r, _) = declare_and_mkdir(&root, 6, "node2:/b y", "d2");
    r.unwrap();
    // node1 ships on, over its open session.
    let mut batch = vec![mkdir(2, "d1/late")];
    batch.extend(ship(
        3,
        "late-file",
        b"from the deposed node",
        attrs(0o644, 1, 0),
    ));
    batch.push(Request::Commit { batch: 2 });
    master.write_all(&wire(&batch)).unwrap();
    let got = replies_until(&mut master, |r| {
        matches!(r, Reply::Deposed(_) | Reply::Committed { .. })
    });
    // The master hangs up (a slave that took the batch would serve on).
    master.shutdown(std::net::Shutdown::Write).unwrap();
    let r = served.join().unwrap();
    assert_deposed(&root, &r, &got, 5, 6);
    assert_eq!(names(&root), ["d1", "d2"]);
    assert!(names(&root.join("d1")).is_empty());
}
