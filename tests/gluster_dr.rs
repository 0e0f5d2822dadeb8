//! Disaster recovery of a GlusterFS master volume (issue 18): failback
//! reads and changes the volume only through a mount of its own, keeps
//! the loss window outside the volume, levels it with DR so that both
//! replicas hold DR's changes, and switches back with no resend.
//!
//! Needs what `gluster.rs` needs (root, /dev/fuse, GlusterFS).

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use georep_testkit::random_bytes;

use crate::common::Scenario;
use crate::distribute::spread;
use crate::dr::{
    assert_set_aside, failback, failback_with, lose_the_site, write_rename_delete_at_dr, DrHost,
};
use crate::gluster::assert_same_tree;
use crate::gluster_replica::create_whole;

/// The one `georep-conflicts/<time>/<volume>` in the master's home.
fn conflicts_dir(s: &Scenario) -> PathBuf {
    let all: Vec<PathBuf> = fs::read_dir(s.home.join("georep-conflicts"))
        .unwrap()
        .map(|e| e.unwrap().path().join(&s.vol))
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

/// The drill on a replica-2 volume: replicate, lose the site with writes
/// after the last committed stime (through the mount), promote DR and
/// change things there, fail back: the loss window is set aside out of
/// the volume and listed, the volume (both replicas) is level with DR,
/// and after the switch the session ships again from the mount's bricks.
#[test]
fn a_replica_2_volume_fails_back_through_its_mount_and_switches_back() {
    let mut s = Scenario::new();
    let Some(v) = spread(&s, "vfb", &["replica", "2"], 2) else {
        return;
    };
    let m = v.mount.clone();
    fs::create_dir_all(m.join("docs")).unwrap();
    for i in 0..10 {
        fs::write(m.join(format!("docs/f{i}")), random_bytes(64 * 1024, i)).unwrap();
    }
    create_whole(&mut s, &v);
    s.start().ok();
    s.wait_synced_past(SystemTime::now() + Duration::from_secs(3));
    assert_same_tree(&m, &s.slave, "the slave differs from the mount");
    lose_the_site(&s, &m);

    let dr = DrHost::new(&s);
    dr.promote().ok();
    write_rename_delete_at_dr(&s);

    let run = failback(&s, &dr).ok();
    assert_set_aside(&run, &conflicts_dir(&s));
    assert_same_tree(&m, &s.slave, "the volume is not level with DR");
    // Through the volume: GlusterFS put DR's new file on both replicas.
    for b in &v.bricks {
        assert!(
            b.join("docs/at-dr").exists() && !b.join("docs/lost-new").exists(),
            "{} does not hold what the mount shows",
            b.display()
        );
    }

    fs::write(s.slave.join("docs/last-at-dr"), b"the last write at DR\n").unwrap();
    let switch = failback_with(&s, &dr, &["--switch"]).ok();
    assert!(switch.stdout().contains("switched back"), "{}", switch.0);
    assert_eq!(
        fs::read(m.join("docs/last-at-dr")).unwrap(),
        b"the last write at DR\n"
    );
    s.wait_status("an Active brick with an stime", |rows| {
        rows.iter()
            .any(|r| r["status"] == "Active" && r["stime_ns"].is_i64())
    });
    fs::write(m.join("docs/after-switch"), b"the master again\n").unwrap();
    s.wait_synced_past(SystemTime::now() + Duration::from_secs(3));
    assert_same_tree(
        &m,
        &s.slave,
        "the slave differs from the mount after the switch",
    );
}
