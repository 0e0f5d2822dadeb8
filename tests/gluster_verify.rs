//! `geo-rep verify` of GlusterFS volumes (issue 18): the master side is
//! the volume as its clients see it (one member read per replica set,
//! the union of the distribute legs, no DHT link files), so a synced
//! volume verifies equal, a member that was down is not taken for the
//! volume, writes made on the slave behind georep's back are caught, and
//! `--repair` makes the pair equal again.
//!
//! Needs what `gluster.rs` needs (root, /dev/fuse, GlusterFS).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use georep_testkit::churn::churn;
use georep_testkit::glusterfs::{gluster, Volume};
use georep_testkit::{random_bytes, set_mtime, signal, wait_until};

use crate::common::{Run, Scenario, SYNC_TIMEOUT};
use crate::distribute::{link_file_on, spread};
use crate::gluster::assert_same_tree;
use crate::gluster_replica::{brick_process, Writer};
use crate::verify::assert_prints_each;

/// The churn workload and the files the slave is tampered with later,
/// through the mount; then a session of the whole volume, synced past
/// the margin within which verify counts a change as in flight.
fn synced(s: &mut Scenario, v: &Volume) {
    churn(&v.mount, 0).unwrap();
    let d = v.mount.join("d");
    fs::create_dir_all(&d).unwrap();
    for i in 0..12 {
        fs::write(d.join(format!("f{i}")), format!("content of f{i}\n")).unwrap();
    }
    crate::gluster_replica::create_whole(s, v);
    s.start().ok();
    s.wait_synced_past(SystemTime::now() + Duration::from_secs(3));
    assert_same_tree(&v.mount, &s.slave, "the slave differs from the mount");
}

fn verify(s: &Scenario, extra: &[&str]) -> Run {
    let url = s.slave_url();
    let mut args = vec!["verify", s.vol.as_str(), &url];
    args.extend_from_slice(extra);
    s.geo_rep(args)
}

fn assert_equal(s: &Scenario, what: &str) {
    for extra in [&[][..], &["--quick"]] {
        let run = verify(s, extra);
        assert!(
            run.code() == Some(0) && run.stdout().contains(": 0 differences"),
            "{what} ({extra:?}): verify should find the pair equal\n{}",
            run.0
        );
    }
}

/// One write of each kind on the slave behind georep's back, at the given
/// names under `d/`, on a pair verify found equal; returns the lines
/// verify must print.
fn tamper(slave: &Path, [content, mode, mtime, missing]: [&str; 4]) -> Vec<String> {
    let d = slave.join("d");
    let f = d.join(content);
    let kept = fs::metadata(&f).unwrap().modified().unwrap();
    let mut bytes = fs::read(&f).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&f, &bytes).unwrap();
    set_mtime(&f, kept, false).unwrap();
    fs::set_permissions(d.join(mode), fs::Permissions::from_mode(0o600)).unwrap();
    // The master's mtime is the slave's before it is changed.
    let f = d.join(mtime);
    let md = fs::metadata(&f).unwrap();
    set_mtime(
        &f,
        md.modified().unwrap() - Duration::from_secs(3600),
        false,
    )
    .unwrap();
    fs::remove_file(d.join(missing)).unwrap();
    fs::write(d.join("intruder"), b"written on the slave").unwrap();
    let (sec, nsec) = (md.mtime(), md.mtime_nsec());
    vec![
        format!("differs content d/{content}"),
        format!("mode 0644 vs 0600 d/{mode}"),
        format!(
            "mtime {sec}.{nsec:09} vs {}.{nsec:09} d/{mtime}",
            sec - 3600
        ),
        format!("missing on slave d/{missing}"),
        "extra on slave d/intruder".to_owned(),
    ]
}

/// verify fails with exit 1 and prints each of `lines`, none of them in
/// flight; `--quick` all but the content.
fn assert_caught(s: &Scenario, lines: &[String]) {
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_prints_each(&verify(s, &[]).fails_with(1), &lines);
    let run = verify(s, &["--quick"]).fails_with(1);
    assert_prints_each(&run, &lines[1..]);
    assert!(!run.stdout().contains(lines[0]), "{}", run.0);
}

/// `verify --repair` on the stopped session resends what differs; then the
/// pair is equal, to verify and to a comparison with the mount.
fn assert_repaired(s: &Scenario, v: &Volume) {
    s.stop().ok();
    let run = verify(s, &["--repair"]).ok();
    assert!(run.stdout().contains("repair: resent"), "{}", run.0);
    assert!(!run.stdout().contains("after repair:"), "{}", run.0);
    assert_equal(s, "after the repair");
    assert_same_tree(
        &v.mount,
        &s.slave,
        "the slave differs from the mount after the repair",
    );
    assert!(!s.slave.join("d/intruder").exists());
}

/// A client writing to the master makes no false alarm: three verifies
/// while it writes exit 0, and its changes show as in flight.
fn assert_no_false_alarm_while_writing(s: &Scenario, v: &Volume) {
    let dir = v.mount.join("busy");
    fs::create_dir_all(&dir).unwrap();
    // New files, removals and rewrites.
    let writer = Writer::each(move |i| {
        let new = fs::write(
            dir.join(format!("f{}", i % 30)),
            random_bytes(4096 + i as usize, i.into()),
        );
        let _ = fs::remove_file(dir.join(format!("f{}", (i + 15) % 30)));
        new.is_ok() && fs::write(dir.join("rewritten"), format!("version {i}\n")).is_ok()
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut in_flight_seen = false;
    for _ in 0..3 {
        let run = verify(s, &[]);
        assert_eq!(run.code(), Some(0), "a false alarm\n{}", run.0);
        in_flight_seen |= run.stdout().contains("in flight:");
    }
    assert!(writer.finish() > 0, "the writer wrote nothing");
    assert!(
        in_flight_seen,
        "the writer's changes should show as in flight"
    );
    s.wait_synced_past(SystemTime::now() + Duration::from_secs(3));
}

/// The replicate layer's own heals, on or off (the self-heal daemon and
/// the heals a client's lookups start).
fn self_heal(v: &Volume, on: bool) {
    for key in [
        "cluster.self-heal-daemon",
        "cluster.data-self-heal",
        "cluster.metadata-self-heal",
        "cluster.entry-self-heal",
    ] {
        v.set(key, if on { "on" } else { "off" }).unwrap();
    }
}

/// A replica-2 volume, read through one member: synced it is equal, also
/// while a client writes; with one member down and changes made through
/// the mount meanwhile (the member that was down lacks them), it is still
/// equal, running and stopped, and still once that member is back but not
/// healed (it is online, first, and stale); writes on the slave behind
/// georep's back are each caught; `--repair` makes the pair equal again.
#[test]
fn a_replica_2_volume_verifies_through_one_member_and_is_repaired() {
    let mut s = Scenario::new();
    let Some(v) = spread(&s, "vr2", &["replica", "2"], 2) else {
        return;
    };
    synced(&mut s, &v);
    assert_equal(&s, "a synced replica-2 volume");
    assert_no_false_alarm_while_writing(&s, &v);

    // The first brick goes down; changes through the mount reach only the
    // second (and the slave, from it). Nothing heals the first meanwhile.
    self_heal(&v, false);
    let (down, up) = (v.bricks[0].clone(), v.bricks[1].clone());
    for pid in brick_process(&down) {
        signal(pid, rustix::process::Signal::KILL);
    }
    s.wait_status("the other brick Active", |rows| {
        rows.iter().any(|r| {
            r["status"] == "Active" && r["master_brick"] == up.display().to_string().as_str()
        })
    });
    let m = &v.mount;
    // The client notices the dead brick in its own time.
    wait_until(SYNC_TIMEOUT, Duration::from_millis(300), || {
        fs::write(m.join("d/f11"), b"rewritten while a member was down\n").is_ok()
    })
    .expect("the mount never took writes with one member down");
    fs::remove_file(m.join("d/f10")).unwrap();
    fs::write(m.join("d/new"), b"made while a member was down\n").unwrap();
    s.wait_synced_past(SystemTime::now() + Duration::from_secs(3));
    let stale = || down.join("d/f10").exists() && !down.join("d/new").exists();
    assert!(
        stale(),
        "the member that was down has the changes: this test shows nothing"
    );
    assert_equal(&s, "a member down, the session running");
    s.stop().ok();
    assert_equal(&s, "a member down, the session stopped");

    // Back, and not healed: online, listed first, and stale.
    gluster(["volume", "start", &v.name, "force"]).unwrap();
    wait_until(SYNC_TIMEOUT, Duration::from_millis(300), || {
        let summary = gluster(["volume", "heal", &v.name, "info", "summary"]).unwrap_or_default();
        summary.matches("Status: Connected").count() == 2
    })
    .expect("the restarted brick never connected");
    assert!(
        stale(),
        "the member that came back was healed: this test shows nothing"
    );
    assert_equal(&s, "a member back but not healed, the session stopped");

    // Healed before the session elects its Active member again.
    self_heal(&v, true);
    wait_until(SYNC_TIMEOUT, Duration::from_millis(500), || {
        let _ = gluster(["volume", "heal", &v.name]);
        !down.join("d/f10").exists()
            && fs::read(down.join("d/new")).is_ok_and(|b| b.starts_with(b"made"))
            && fs::read(down.join("d/f11")).is_ok_and(|b| b.starts_with(b"rewritten"))
    })
    .expect("the member that was down was never healed");
    s.start().ok();
    // The heal changed the member that was down after the set's stime.
    s.wait_synced_past(SystemTime::now() + Duration::from_secs(3));

    let lines = tamper(&s.slave, ["f0", "f1", "f2", "f3"]);
    assert_caught(&s, &lines);
    assert_repaired(&s, &v);
}

/// The first of the names `d/f<i>` but `skip` whose data is on `brick`.
fn held_by(brick: &Path, skip: Option<&str>) -> String {
    (0..12)
        .map(|i| format!("f{i}"))
        .find(|n| {
            skip != Some(n.as_str())
                && fs::symlink_metadata(brick.join("d").join(n))
                    .is_ok_and(|md| md.permissions().mode() & 0o7777 != 0o1000)
        })
        .unwrap_or_else(|| panic!("no d/f<i> on {}", brick.display()))
}

/// A distribute-2 volume is compared as the union of its bricks: a name
/// with a DHT link file on one brick and its data on the other is one
/// file, not a difference; writes behind georep's back are caught on
/// either brick's part; `--repair` walks both without removing what the
/// other holds; a volume sharded since `create` is refused, naming it.
#[test]
fn a_distributed_volume_with_a_dht_link_file_verifies_as_its_mount_shows_it() {
    let mut s = Scenario::new();
    let Some(v) = spread(&s, "vdist", &[], 2) else {
        return;
    };
    let m = &v.mount;
    // A file renamed until its name hashes to the other brick: DHT leaves
    // the data where it is and puts a link file there.
    fs::create_dir_all(m.join("moves")).unwrap();
    fs::write(m.join("moves/travels"), random_bytes(100_000, 5)).unwrap();
    let mut name = PathBuf::from("moves/travels");
    for i in 0.. {
        assert!(i < 64, "no name of 64 hashed to another brick");
        let next = PathBuf::from(format!("moves/moved-{i}"));
        fs::rename(m.join(&name), m.join(&next)).unwrap();
        name = next;
        if link_file_on(&v, &name).is_some() {
            break;
        }
    }
    synced(&mut s, &v);
    assert!(
        link_file_on(&v, &name).is_some(),
        "the link file went: this test shows nothing"
    );
    assert_equal(&s, "a synced distribute volume with a link file");
    assert_no_false_alarm_while_writing(&s, &v);

    // Tampered names on both bricks' parts.
    let (one, two) = (&v.bricks[0], &v.bricks[1]);
    let content = held_by(one, None);
    let mode = held_by(two, None);
    let mtime = held_by(one, Some(&content));
    let missing = held_by(two, Some(&mode));
    let lines = tamper(&s.slave, [&content, &mode, &mtime, &missing]);
    assert_caught(&s, &lines);
    assert_repaired(&s, &v);
    assert!(link_file_on(&v, &name).is_some());

    v.set("features.shard", "on").unwrap();
    verify(&s, &[])
        .usage_error()
        .stderr_mentions("features.shard");
}
