//! georep on a real GlusterFS volume: the brick's own changelogs are the
//! change source, every change is made through the FUSE mount as a client
//! would, and the slave (behind the real sshd) must equal the mount.
//!
//! Needs root and /dev/fuse; without them the tests are skipped, except in
//! CI (`CI` set), where that is a failure. GlusterFS is installed when
//! missing (see `georep_testkit::glusterfs`).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use georep::changelog::glusterfs::{self as gfs, GRecord};
use georep_testkit::glusterfs::{unavailable, Glusterd, Volume};
use georep_testkit::{compare_trees, random_bytes, CompareOptions};

use crate::common::Scenario;

/// The shared glusterd, or `None` when the test must be skipped.
pub(crate) fn glusterd() -> Option<Arc<Glusterd>> {
    gluster_can_run()
        .then(|| Glusterd::shared().unwrap_or_else(|e| panic!("cannot run GlusterFS: {e}")))
}

/// Whether GlusterFS can run here; false (the test is skipped) without
/// root or FUSE, except in CI, where that is a failure.
pub(crate) fn gluster_can_run() -> bool {
    if let Some(why) = unavailable() {
        if std::env::var_os("CI").is_some() {
            panic!("{why}; CI must run the GlusterFS tests");
        }
        eprintln!("skipped: {why}");
        return false;
    }
    true
}

fn volume(g: &Arc<Glusterd>, s: &Scenario, tag: &str) -> Volume {
    let name = format!("georep{}{tag}", std::process::id());
    Volume::create(g, &name, &s.path(&format!("gluster-{tag}")))
        .unwrap_or_else(|e| panic!("cannot create GlusterFS volume {name}: {e}"))
}

/// The slave equals the mount: types, contents, modes, owners, mtimes of
/// files and symlinks, hard-link groups. (Directory mtimes: GlusterFS keeps
/// its own in `trusted.glusterfs.mdata`, see the README.)
fn assert_slave_matches(v: &Volume, s: &Scenario) {
    assert_same_tree(
        &v.mount,
        &s.slave,
        "the slave differs from the GlusterFS mount",
    );
}

/// `slave` equals `master` as [`assert_slave_matches`] compares them, and
/// shows no GlusterFS internals.
pub(crate) fn assert_same_tree(master: &Path, slave: &Path, what: &str) {
    let opts = CompareOptions {
        owner: true,
        hard_links: true,
        ..CompareOptions::default()
    };
    let diffs = compare_trees(master, slave, &opts.without_dir_mtime());
    assert!(
        diffs.is_empty(),
        "{what}:\n{}",
        diffs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !slave.join(".glusterfs").exists(),
        "{what}: GlusterFS internals are visible"
    );
}

fn write(p: &Path, bytes: &[u8]) {
    fs::write(p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

pub(crate) fn session_log(s: &Scenario) -> String {
    let mut out = String::new();
    for e in fs::read_dir(s.home.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        out.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
    }
    out
}

#[test]
fn a_real_volume_replicates_through_its_changelogs() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let v = volume(&g, &s, "a");
    let m = &v.mount;
    // The slave is a GlusterFS volume too, mounted on the slave host.
    let slave_vol = volume(&g, &s, "s");
    s.slave = slave_vol.mount.clone();
    // Before the session: the first sync finds these with a Hybrid Crawl.
    fs::create_dir(m.join("old")).unwrap();
    write(&m.join("old/kept"), b"from before");
    write(&m.join("old/gone"), b"removed later");

    s.geo_rep(s.create_args(&[&v.brick], &s.slave_url(), false))
        .ok();
    s.start().ok();
    s.wait_active();

    fs::create_dir_all(m.join("d1/sub")).unwrap();
    write(&m.join("d1/f1"), b"hello");
    write(&m.join("f2"), &vec![7u8; 300_000]);
    fs::rename(m.join("f2"), m.join("d1/f2r")).unwrap();
    fs::hard_link(m.join("d1/f1"), m.join("d1/hl")).unwrap();
    fs::hard_link(m.join("d1/f1"), m.join("d1/hl2")).unwrap();
    symlink("../f2", m.join("d1/sl")).unwrap();
    symlink("/nonexistent/target", m.join("dangling")).unwrap();
    fs::set_permissions(m.join("d1/f1"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.join("d1/f2r"), Some(1234), Some(4321)).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(m.join("d1/f2r"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    fs::create_dir_all(m.join("tmp/deep/er")).unwrap();
    write(&m.join("tmp/deep/er/x"), b"x");
    fs::remove_dir_all(m.join("tmp")).unwrap();
    fs::remove_file(m.join("d1/hl2")).unwrap();
    fs::remove_file(m.join("old/gone")).unwrap();
    write(&m.join("ñame é"), "non-ASCII ✓".as_bytes());
    fs::create_dir(m.join("répertoire")).unwrap();
    write(&m.join("répertoire/日本"), b"nihon");
    // A directory renamed after files were made in it: the records of
    // those files name it by gfid, and must land under the old name first.
    fs::create_dir(m.join("early")).unwrap();
    write(&m.join("early/inner"), b"inner");
    fs::rename(m.join("early"), m.join("late")).unwrap();
    fs::rename(m.join("d1/sub"), m.join("sub-moved")).unwrap();
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_slave_matches(&v, &s);

    // The changes came from GlusterFS's changelogs, not a journal hook.
    let rows = s.status_json();
    assert_eq!(rows[0]["crawl_status"], "Changelog Crawl", "{rows:?}");
    let session_dir = fs::read_dir(s.home.join("sessions"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let own_journal = session_dir.join("journal");
    let own_files = fs::read_dir(&own_journal)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
        .count();
    assert_eq!(own_files, 0, "georep's own journal was written");

    // The real changelog files the brick wrote parse, and record what the
    // mount did (e.g. the rename of early -> late).
    let files = v.changelog_files();
    assert!(!files.is_empty(), "the brick wrote no changelog");
    let mut renames = 0;
    for f in &files {
        let bytes = fs::read(f).unwrap();
        let recs = gfs::parse(f, &bytes).unwrap_or_else(|e| panic!("{e}"));
        renames += recs
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    GRecord::Entry {
                        op: gfs::GEntryOp::Rename { .. },
                        ..
                    }
                )
            })
            .count();
    }
    // A changelog closed twice in one second loses the first file's
    // records (georep heals that gap with a Hybrid Crawl; the slave matched
    // above), which happens on a loaded machine.
    let replaced = v.replaced_changelogs();
    assert!(
        renames >= 3 || replaced > 0,
        "expected the renames in the changelogs, saw {renames} (no changelog replaced)"
    );
}

#[test]
fn a_restart_replays_the_history_from_the_changelogs() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let v = volume(&g, &s, "b");
    let m = &v.mount;
    // No --brick: `create` asks `gluster volume info` for the local bricks.
    s.vol = v.name.clone();
    let created = s.geo_rep(s.create_args(&[], &s.slave_url(), false)).ok();
    assert!(
        created
            .stdout()
            .contains(&format!("brick {}", v.brick.display())),
        "{}",
        created.0
    );
    s.start().ok();
    s.wait_active();
    assert_eq!(
        s.status_json()[0]["master_brick"],
        v.brick.display().to_string()
    );
    write(&m.join("a"), b"one");
    fs::create_dir(m.join("dir")).unwrap();
    write(&m.join("dir/big"), &random_bytes(2 << 20, 7));
    let t = SystemTime::now();
    s.wait_synced_past(t);
    s.stop().ok();
    let before = session_log(&s).len();

    // Changed while georep is stopped: only the changelogs know.
    write(&m.join("a"), b"two, longer");
    write(&m.join("dir/new"), b"new");
    fs::rename(m.join("dir"), m.join("dir2")).unwrap();
    symlink("a", m.join("link")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));

    s.start().ok();
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_slave_matches(&v, &s);
    let log = session_log(&s);
    let after = &log[before.min(log.len())..];
    assert!(
        after.contains("History Crawl"),
        "no History Crawl after the restart:\n{after}"
    );
    // Only a changelog GlusterFS itself lost (two closed in one second,
    // the second renamed over the first) may call for a Hybrid Crawl.
    let hybrids = after.matches("Hybrid Crawl").count();
    let clobbered = after.matches("the second replaced the first").count();
    assert!(
        hybrids == 0 || clobbered > 0,
        "a Hybrid Crawl ran although the changelogs were intact:\n{after}"
    );

    // Re-created over the same slave with the sync times dropped: a full
    // Hybrid Crawl, whose quick check finds every file there already (same
    // size, and the mtime GlusterFS clients see), so no content travels.
    s.stop().ok();
    let key = s.sshd.operator_key().display().to_string();
    let url = s.slave_url();
    s.geo_rep([
        "delete",
        &s.vol,
        &url,
        "reset-sync-time",
        "--identity",
        &key,
    ])
    .ok();
    s.geo_rep(s.create_args(&[], &url, true)).ok();
    s.start().ok();
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_slave_matches(&v, &s);
    let sent = s.bytes_sent();
    assert!(
        sent < 1 << 20,
        "the full crawl sent {sent} bytes: the 2 MiB file travelled again"
    );
}

/// Until georep copies a volume of disperse sets (fragments) or shard
/// pieces exactly, `create` and `start` refuse it, naming the type and
/// what is missing; nothing reaches the slave. (Replica sets are handled,
/// also distributed: see `gluster_replica`; plain distribute: see
/// `distribute`.)
#[test]
fn volumes_of_shapes_not_handled_yet_are_refused() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let keys_before = s.session_key_lines().len();
    let shapes: [(&str, &[&str], usize, &[&str]); 3] = [
        (
            "distdisp",
            &["disperse", "3", "redundancy", "1"],
            6,
            &["Distributed-Disperse", "erasure-coded"],
        ),
        (
            "disp",
            &["disperse", "3", "redundancy", "1"],
            3,
            &["Disperse", "erasure-coded"],
        ),
        ("shard", &[], 1, &["features.shard"]),
    ];
    for (tag, shape, bricks, words) in shapes {
        let name = format!("georep{}{tag}", std::process::id());
        let v = Volume::define(&g, &name, &s.path(&format!("gluster-{tag}")), shape, bricks)
            .unwrap_or_else(|e| panic!("cannot create GlusterFS volume {name}: {e}"));
        if tag == "shard" {
            v.set("features.shard", "on").unwrap();
        }
        s.vol = v.name.clone();
        // Found through `gluster volume info`, and named with --brick.
        let first: &[&Path] = &[&v.brick];
        for named in [&[][..], first] {
            let mut run = s
                .geo_rep(s.create_args(named, &s.slave_url(), false))
                .fails_with(1);
            for w in words
                .iter()
                .chain(&[name.as_str(), "georep replicates only"])
            {
                run = run.stderr_mentions(w);
            }
        }
    }
    assert_eq!(
        s.session_key_lines().len(),
        keys_before,
        "a key reached the slave"
    );
    assert_eq!(fs::read_dir(&s.slave).unwrap().count(), 0);

    // A single-brick volume is accepted; a brick it grows joins the
    // session at `start` (a distributed volume is copied only whole).
    let v = volume(&g, &s, "grow");
    s.vol = v.name.clone();
    s.geo_rep(s.create_args(&[], &s.slave_url(), false)).ok();
    let added = s.path("gluster-grow/brick2");
    crate::distribute::add_brick(&v, g.host(), &added);
    let started = s.start().ok();
    assert!(
        started
            .stdout()
            .contains(&format!("brick {} was added to", added.display())),
        "{}",
        started.0
    );
    assert_eq!(s.status_json().len(), 2, "the added brick has no worker");
}

/// Whether anything is mounted at `dir` (from this process's mountinfo).
fn mounted_at(dir: &Path) -> bool {
    let want = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m.replace("\\040", " ") == want)
}

/// A slave given as `host::VOLUME`: the slave side mounts the volume itself
/// and writes through that mount; a killed slave's mount is reused; the
/// last slave to leave unmounts; a wrong name is refused at `create`.
#[test]
fn a_slave_volume_given_by_name_is_mounted_and_written_by_the_slave() {
    let Some(g) = glusterd() else { return };
    let s = Scenario::new();
    // The slave volume, and the test's own view of it through its own mount.
    let dr = volume(&g, &s, "dr");
    let host = format!("{}@{}", s.sshd.user(), s.sshd.host());
    let url = format!("{host}::{}", dr.name);
    let slave_mount = s
        .sshd
        .slave_home()
        .join("slave-volumes")
        .join(&dr.name)
        .join("mnt");

    let missing = format!("georep{}none", std::process::id());
    s.geo_rep(s.create_args(&[&s.brick], &format!("{host}::{missing}"), false))
        .fails_with(1)
        .stderr_mentions(&format!("GlusterFS volume {missing}"))
        .stderr_mentions("does not exist");
    assert!(s.session_key_lines().is_empty());

    fs::create_dir(s.brick.join("before")).unwrap();
    write(&s.brick.join("before/old"), b"from before the session");
    s.geo_rep(s.create_args(&[&s.brick], &url, false)).ok();
    s.geo_rep(["start", &s.vol, &url]).ok();
    let b = &s.brick;
    fs::create_dir_all(b.join("d/sub")).unwrap();
    write(&b.join("d/f"), b"hello");
    write(&b.join("big"), &random_bytes(3 << 20, 5));
    fs::rename(b.join("big"), b.join("d/big")).unwrap();
    fs::hard_link(b.join("d/f"), b.join("d/hl")).unwrap();
    symlink("f", b.join("d/sl")).unwrap();
    fs::set_permissions(b.join("d/f"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(b.join("d/big"), Some(1234), Some(4321)).unwrap();
    write(&b.join("gone"), b"x");
    fs::remove_file(b.join("gone")).unwrap();
    write(&b.join("ñame"), "✓".as_bytes());
    rustix::fs::lsetxattr(
        b.join("d/f"),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    s.wait_synced_past_of(&s.vol, &url, SystemTime::now());
    let mut note = [0u8; 16];
    let n = rustix::fs::lgetxattr(dr.mount.join("d/f"), "user.note", &mut note)
        .unwrap_or_else(|e| panic!("user.note on the slave volume: {e}"));
    assert_eq!(&note[..n], b"kept");
    // The SLAVE column names the volume as GlusterFS prints it.
    let rows = s.status_json_of(&s.vol, &url);
    assert_eq!(
        rows[0]["slave"],
        format!("ssh://{}::{}", s.sshd.host(), dr.name),
        "{rows:?}"
    );
    assert_eq!(rows[0]["slave_node"], s.sshd.host(), "{rows:?}");
    assert!(
        mounted_at(&slave_mount),
        "the slave did not mount {}",
        dr.name
    );
    // `syncfs` does not reach GlusterFS through FUSE: the slave must sync
    // what it changed inode by inode there.
    assert_eq!(
        georep::slave::Durability::of_path(&slave_mount)
            .unwrap_or_else(|e| panic!("statfs {}: {e}", slave_mount.display())),
        georep::slave::Durability::EachInode
    );
    let same = |what: &str| assert_same_tree(&s.brick, &dr.mount, what);
    same("first sync");

    // Slave processes killed mid-batch: their mount stays, the next ones
    // take it over, and the copy converges.
    let slaves = || {
        georep_testkit::find_processes(|a| {
            a.iter().any(|x| x == "slave") && a.iter().any(|x| x.trim_matches('\'') == dr.name)
        })
    };
    write(&b.join("d/later"), &random_bytes(8 << 20, 6));
    let pids = slaves();
    assert!(!pids.is_empty(), "no slave process serves {}", dr.name);
    for pid in pids {
        georep_testkit::signal(pid, rustix::process::Signal::KILL);
    }
    write(&b.join("d/after-kill"), b"after");
    s.wait_synced_past_of(&s.vol, &url, SystemTime::now());
    same("after the slaves were killed");
    assert!(mounted_at(&slave_mount));

    // The last slave to leave unmounts; delete leaves nothing mounted.
    s.geo_rep(["stop", &s.vol, &url]).ok();
    georep_testkit::wait_until(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(100),
        || slaves().is_empty() && !mounted_at(&slave_mount),
    )
    .unwrap_or_else(|_| panic!("{} still mounted after stop", slave_mount.display()));
    let key = s.sshd.operator_key().display().to_string();
    s.geo_rep(["delete", &s.vol, &url, "--identity", &key]).ok();
    assert!(!mounted_at(&slave_mount));
}
