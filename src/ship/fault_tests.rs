//! Crash safety, walked deterministically: one batch holding entries, a
//! delta and attributes is shipped to an in-process slave through a pipe
//! that cuts the conversation after every request frame, and again after
//! every reply frame, with each reply half written, and with each reply
//! said twice. Whatever happens:
//! - the shipper reports the batch done (what lets the worker move stime)
//!   only if the slave acknowledged its commit, and then the slave holds it;
//! - no file on the slave is torn: each name holds its old content or its
//!   new, whole;
//! - shipping the batch again, as the worker does after reconnecting,
//!   leaves the slave equal to the brick.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use georep_testkit::{compare_trees, random_bytes, CompareOptions};

use super::in_process::{ship_in_process, Crossed, Cut};
use super::*;
use crate::crawl::Entry;
use crate::proto::PieceKind;

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// A brick and its slave before the batch, and the batch.
struct Scene {
    _dir: tempfile::TempDir,
    brick: PathBuf,
    slave: PathBuf,
    /// The slave's `d/f` before the batch.
    old: Vec<u8>,
    batch: Batch,
}

/// `d/f` (2 MiB, one block changed on the brick: a delta), made read-only
/// on the brick (attributes), and a new directory `e` with a new file.
fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let (brick, slave) = (dir.path().join("brick"), dir.path().join("slave"));
    fs::create_dir_all(brick.join("d")).unwrap();
    fs::create_dir_all(slave.join("d")).unwrap();
    let new = random_bytes(2 << 20, 11);
    let mut old = new.clone();
    old[1 << 20..(1 << 20) + 4096].copy_from_slice(&random_bytes(4096, 12));
    fs::write(brick.join("d/f"), &new).unwrap();
    fs::write(slave.join("d/f"), &old).unwrap();
    fs::set_permissions(brick.join("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(brick.join("e")).unwrap();
    fs::write(brick.join("e/new"), random_bytes(70_000, 13)).unwrap();

    let mut batch = Batch::new();
    batch.push_entry(Entry::Mkdir(rp("e")));
    batch.push_entry(Entry::Create(rp("e/new")));
    batch.push_data(rp("e/new"));
    batch.push_data(rp("d/f"));
    batch.push_meta(rp("d/f"));
    Scene {
        _dir: dir,
        brick,
        slave,
        old,
        batch,
    }
}

async fn ship(s: &Scene, cut: Cut) -> (Result<ShipReport, ShipError>, Crossed) {
    let mut memory = ShipMemory::default();
    ship_in_process(
        &s.brick,
        None,
        &s.slave,
        &mut memory,
        &s.batch,
        None,
        |_| {},
        cut,
    )
    .await
}

/// The differences between brick and slave (directory times aside: the
/// batch does not set them).
fn differences(s: &Scene) -> Vec<String> {
    compare_trees(
        &s.brick,
        &s.slave,
        &CompareOptions::default().without_dir_mtime(),
    )
    .iter()
    .map(|d| d.to_string())
    .filter(|d| !d.contains(".georep."))
    .collect()
}

/// No name holds a torn file: each is its old content or its new, whole.
fn assert_nothing_torn(s: &Scene, what: &str) {
    let f = fs::read(s.slave.join("d/f")).unwrap();
    let new = fs::read(s.brick.join("d/f")).unwrap();
    assert!(
        f == s.old || f == new,
        "{what}: d/f is torn ({} bytes)",
        f.len()
    );
    if let Ok(got) = fs::read(s.slave.join("e/new")) {
        assert_eq!(
            got,
            fs::read(s.brick.join("e/new")).unwrap(),
            "{what}: e/new is torn"
        );
    }
}

fn committed(c: &Crossed) -> bool {
    c.requests
        .iter()
        .any(|r| matches!(r, Request::Commit { .. }))
}

/// One run cut at `cut`, then the replay.
async fn cut_then_replay(cut: Cut) {
    let s = scene();
    let (result, crossed) = ship(&s, cut).await;
    let what = format!("{cut:?}");
    assert_nothing_torn(&s, &what);
    if result.is_ok() {
        assert!(committed(&crossed), "{what}: done without a commit");
        assert_eq!(
            differences(&s),
            Vec::<String>::new(),
            "{what}: done, yet the slave differs"
        );
    }
    let (again, _) = ship(&s, Cut::Never).await;
    again.unwrap_or_else(|e| panic!("{what}: the replay failed: {e}"));
    assert_eq!(
        differences(&s),
        Vec::<String>::new(),
        "{what}: the replay left differences"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_at_any_frame_boundary_neither_tears_a_file_nor_reports_an_unheld_batch() {
    let s = scene();
    let (whole, crossed) = ship(&s, Cut::Never).await;
    whole.expect("the batch ships without a cut");
    assert_eq!(differences(&s), Vec::<String>::new());
    let has = |p: &dyn Fn(&Request) -> bool| crossed.requests.iter().any(p);
    assert!(has(&|r| matches!(r, Request::Entry { .. })), "no entry");
    assert!(
        has(&|r| matches!(
            r,
            Request::Piece {
                kind: PieceKind::Delta,
                ..
            }
        )),
        "no delta: {:?}",
        crossed
            .requests
            .iter()
            .map(std::mem::discriminant)
            .collect::<Vec<_>>()
    );
    assert!(
        has(&|r| matches!(r, Request::SetAttr { .. })),
        "no attributes"
    );
    assert!(committed(&crossed));
    let (requests, replies) = (crossed.requests.len(), crossed.replies);
    assert!(
        requests > 5 && replies > 3,
        "{requests} requests, {replies} replies"
    );

    for n in 0..=requests {
        cut_then_replay(Cut::RequestsAfter(n)).await;
    }
    for n in 0..=replies {
        cut_then_replay(Cut::RepliesAfter(n)).await;
    }
    for n in 0..replies {
        cut_then_replay(Cut::TruncatedReply(n)).await;
        cut_then_replay(Cut::DuplicatedReply(n)).await;
    }
}
