//! A brick of a distributed volume ships to an in-process slave: what the
//! other bricks hold stays on the slave, and DHT link files never leave.

use std::path::PathBuf;

use super::in_process::{ship_in_process, Cut};
use super::*;
use crate::brick::volume::LocalBricks;

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// Bricks `a` and `b` of one directory `d`: `x` has its data on `a` and
/// (as root, who may set `trusted.*`) a link file on `b`; `y` is on `b`.
/// The slave holds both, and a name no brick has.
fn volume() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf, bool) {
    let t = tempfile::tempdir().unwrap();
    let (a, b, slave) = (
        t.path().join("a"),
        t.path().join("b"),
        t.path().join("slave"),
    );
    for dir in [&a, &b, &slave] {
        fs::create_dir_all(dir.join("d")).unwrap();
    }
    fs::write(a.join("d/x"), b"x data").unwrap();
    fs::write(b.join("d/y"), b"y data").unwrap();
    let root = rustix::process::geteuid().is_root();
    if root {
        let link = b.join("d/x");
        fs::write(&link, b"").unwrap();
        fs::set_permissions(&link, fs::Permissions::from_mode(0o1000)).unwrap();
        rustix::fs::setxattr(
            &link,
            "trusted.glusterfs.dht.linkto",
            b"v-client-0",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    fs::write(slave.join("d/x"), b"x data").unwrap();
    fs::write(slave.join("d/y"), b"y data").unwrap();
    fs::write(slave.join("d/stale"), b"gone from the volume").unwrap();
    (t, a, b, slave, root)
}

/// Ships `batch` from brick `b` of `view` to `slave`.
async fn ship_from(
    b: &Path,
    view: &LocalBricks,
    slave: &Path,
    memory: &mut ShipMemory,
    batch: &Batch,
) -> ShipReport {
    let (report, _) = ship_in_process(
        b,
        Some(view),
        slave,
        memory,
        batch,
        None,
        |_| {},
        Cut::Never,
    )
    .await;
    report.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brick_keeps_what_the_other_bricks_hold_and_sends_no_link_file() {
    let (_t, a, b, slave, root) = volume();
    let view = LocalBricks::open(&[b.clone(), a.clone()]);
    // What brick b's changelog may say: the unlink of x's link file (a
    // rebalance retired it), a write to it, and a prune of `d` from a walk
    // of b (which lists x's link file and y).
    let mut batch = Batch::new();
    batch.push_entry(Entry::Unlink(rp("d/x")));
    batch.push_entry(Entry::Prune {
        dir: rp("d"),
        keep: vec!["x".into(), "y".into()],
    });
    batch.push_data(rp("d/x"));
    batch.push_meta(rp("d/x"));
    let mut memory = ShipMemory::default();
    let report = ship_from(&b, &view, &slave, &mut memory, &batch).await;
    assert_eq!(fs::read(slave.join("d/x")).unwrap(), b"x data");
    assert_eq!(fs::read(slave.join("d/y")).unwrap(), b"y data");
    assert!(
        !slave.join("d/stale").exists(),
        "the prune kept a name no brick has"
    );
    if root {
        // The write recorded on b is a's file's now: a's worker sends it.
        assert_eq!(report.handed_off, [(a.clone(), rp("d/x"))]);
        let md = fs::metadata(slave.join("d/x")).unwrap();
        assert_ne!(
            md.permissions().mode() & 0o7777,
            0o1000,
            "the link file's mode arrived"
        );
    }

    // Once x is gone from the volume, its unlink goes through.
    fs::remove_file(a.join("d/x")).unwrap();
    let mut batch = Batch::new();
    batch.push_entry(Entry::Unlink(rp("d/x")));
    ship_from(&b, &view, &slave, &mut memory, &batch).await;
    assert!(!slave.join("d/x").exists());
    assert!(slave.join("d/y").exists());
}
