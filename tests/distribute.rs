//! georep on a distributed GlusterFS volume whose bricks are all on this
//! node: each brick ships what its own changelog records, and the slave
//! is an image of the volume as its FUSE mount shows it, never of one
//! brick (no worker removes what another brick holds, no DHT link file
//! leaves the master).
//!
//! Needs what `gluster.rs` needs (root, /dev/fuse, GlusterFS).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use georep_testkit::churn::{churn, SlaveWatch};
use georep_testkit::glusterfs::{gluster, Volume};
use georep_testkit::random_bytes;

use crate::common::Scenario;
use crate::gluster::{assert_same_tree, glusterd};

/// A started distribute volume of `bricks` bricks under the scenario.
fn distributed(s: &Scenario, tag: &str, bricks: usize) -> Option<Volume> {
    let g = glusterd()?;
    let name = format!("georep{}{tag}", std::process::id());
    let mut v = Volume::define(&g, &name, &s.path(&format!("gluster-{tag}")), &[], bricks)
        .unwrap_or_else(|e| panic!("cannot create GlusterFS volume {name}: {e}"));
    // Files go to the brick their name hashes to even on a disk fuller
    // than GlusterFS's default 10 % reserve (where DHT would put every
    // file on one brick, with link files on the other).
    v.set("cluster.min-free-disk", "1%")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    v.start()
        .unwrap_or_else(|e| panic!("cannot start GlusterFS volume {name}: {e}"));
    Some(v)
}

fn assert_slave_is_the_mount(v: &Volume, s: &Scenario, what: &str) {
    assert_same_tree(&v.mount, &s.slave, what);
}

/// Creates and starts a session of all of `v`'s bricks that compares the
/// volume's topology every second; returns once every worker is Active.
fn start_watching(s: &mut Scenario, v: &Volume) {
    s.vol = v.name.clone();
    let url = s.slave_url();
    s.geo_rep(s.create_args(&[], &url, false)).ok();
    s.geo_rep(["config", &s.vol, &url, "volume-check-interval", "1"])
        .ok();
    s.start().ok();
    s.wait_active();
}

/// The brick that holds a DHT link file at `rel`, if any.
fn link_file_on(v: &Volume, rel: &Path) -> Option<PathBuf> {
    v.bricks.iter().find_map(|b| {
        let md = fs::symlink_metadata(b.join(rel)).ok()?;
        (md.is_file() && md.mode() & 0o7777 == 0o1000).then(|| b.clone())
    })
}

/// The churn workload through the mount of a distribute-2 volume, before
/// and after `start`: the slave equals the mount, and still does 10 s
/// later (no worker trims it to its own brick afterwards); a watch of the
/// slave while it syncs never sees a DHT link file or a GlusterFS name.
/// A file renamed to a name another brick hashes to arrives as a rename:
/// its content does not travel again.
#[test]
fn a_distributed_volume_is_copied_as_its_mount_shows_it() {
    let mut s = Scenario::new();
    let Some(v) = distributed(&s, "dist", 2) else {
        return;
    };
    let m = &v.mount;
    churn(m, 0).unwrap();
    // No --brick: `create` takes both bricks from `gluster volume info`.
    crate::gluster_replica::create_whole(&mut s, &v);
    let watch = SlaveWatch::start(&s.slave, SlaveWatch::volume_internals());
    s.start().ok();
    s.wait_active();
    assert_eq!(s.status_json().len(), 2, "one worker per brick");
    for round in 1..=2 {
        churn(m, round).unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    s.wait_synced_past(SystemTime::now());
    assert_slave_is_the_mount(&v, &s, "after the churn");

    // A big file renamed until its name hashes to the other brick: DHT
    // leaves the data where it is and puts a link file there.
    let dir = Path::new("r2/sub");
    let big = random_bytes(3 << 20, 77);
    fs::write(m.join(dir).join("travels"), &big).unwrap();
    s.wait_synced_past(SystemTime::now());
    let before = s.bytes_sent();
    let mut name = PathBuf::from("travels");
    for i in 0.. {
        assert!(i < 64, "no name of 64 hashed to another brick");
        let next = PathBuf::from(format!("moved-{i}"));
        fs::rename(m.join(dir).join(&name), m.join(dir).join(&next)).unwrap();
        name = next;
        if link_file_on(&v, &dir.join(&name)).is_some() {
            break;
        }
    }
    s.wait_synced_past(SystemTime::now());
    assert_eq!(fs::read(s.slave.join(dir).join(&name)).unwrap(), big);
    let sent = s.bytes_sent() - before;
    assert!(
        sent < 1 << 20,
        "renamed across bricks, the 3 MiB file travelled again ({sent} bytes)"
    );
    assert_slave_is_the_mount(&v, &s, "after the cross-brick rename");

    std::thread::sleep(Duration::from_secs(10));
    assert_slave_is_the_mount(&v, &s, "10 s after it was synced");
    assert!(watch.samples() > 0, "the slave was never sampled");
    assert_eq!(watch.flagged(), vec![], "GlusterFS internals on the slave");
    s.stop().ok();
}

/// The volume's topology is recorded at `create`: sharding turned on
/// while the session runs stops every worker (Faulty, naming the change)
/// instead of copying shard pieces as files, and `start` refuses it.
#[test]
fn a_change_georep_does_not_follow_stops_the_workers_naming_it() {
    let mut s = Scenario::new();
    let Some(v) = distributed(&s, "shardon", 2) else {
        return;
    };
    start_watching(&mut s, &v);
    v.set("features.shard", "on").unwrap();
    let named = "features.shard was turned on";
    s.wait_status("every worker Faulty, naming the change", |rows| {
        rows.len() == 2
            && rows.iter().all(|r| {
                r["status"] == "Faulty"
                    && r["last_error"].as_str().is_some_and(|e| e.contains(named))
            })
    });
    s.stop().ok();
    s.start()
        .fails_with(1)
        .stderr_mentions("changed since the session was created")
        .stderr_mentions(named);
}

/// A brick added to the running session's volume joins the session: its
/// worker ships what clients write onto it (a directory made after
/// `add-brick` is spread over all three bricks), the others' views take
/// it in, and the slave ends equal to the mount.
#[test]
fn a_brick_added_while_running_joins_the_session() {
    let mut s = Scenario::new();
    let Some(v) = distributed(&s, "grow3", 2) else {
        return;
    };
    start_watching(&mut s, &v);
    let m = v.mount.clone();
    fs::write(m.join("before"), b"before the brick").unwrap();
    s.wait_synced_past(SystemTime::now());
    let host = glusterd().map(|g| g.host().to_owned()).unwrap_or_default();
    let added = s.path("gluster-grow3/brick3");
    fs::create_dir_all(&added).unwrap();
    gluster([
        "volume",
        "add-brick",
        &v.name,
        &format!("{host}:{}", added.display()),
        "force",
    ])
    .unwrap();
    s.wait_status("the added brick joined the session", |rows| {
        rows.len() == 3 && rows.iter().all(|r| r["status"] == "Active")
    });
    fs::create_dir(m.join("after")).unwrap();
    for i in 0..30 {
        fs::write(m.join(format!("after/f{i}")), random_bytes(2000, i)).unwrap();
    }
    s.wait_synced_past(SystemTime::now());
    assert_slave_is_the_mount(&v, &s, "after the brick was added");
    let on_new = fs::read_dir(added.join("after"))
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|md| md.mode() & 0o7777 != 0o1000))
        .count();
    assert!(
        on_new > 0,
        "no file of after/ landed on {}",
        added.display()
    );
    let rows = s.status_json();
    let new_row = rows
        .iter()
        .find(|r| r["master_brick"] == added.display().to_string())
        .unwrap_or_else(|| panic!("no status row for {}: {rows:?}", added.display()));
    assert!(
        new_row["bytes_sent"].as_u64().unwrap() > 0,
        "the new brick's worker sent nothing: {new_row}"
    );
}
