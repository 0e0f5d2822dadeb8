//! georep on a distributed GlusterFS volume whose bricks are all on this
//! node: each brick ships what its own changelog records, and the slave
//! is an image of the volume as its FUSE mount shows it, never of one
//! brick (no worker removes what another brick holds, no DHT link file
//! leaves the master).
//!
//! Needs what `gluster.rs` needs (root, /dev/fuse, GlusterFS).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use georep_testkit::churn::{churn, SlaveWatch};
use georep_testkit::glusterfs::{gluster, Volume};
use georep_testkit::{random_bytes, wait_until};

use crate::common::{Scenario, SYNC_TIMEOUT};
use crate::gluster::{assert_same_tree, glusterd};

/// A started distribute volume of `bricks` bricks under the scenario.
fn distributed(s: &Scenario, tag: &str, bricks: usize) -> Option<Volume> {
    spread(s, tag, &[], bricks)
}

/// A started, mounted volume of `bricks` bricks laid out by `shape` under
/// the scenario, whose files go where their names hash.
pub(crate) fn spread(s: &Scenario, tag: &str, shape: &[&str], bricks: usize) -> Option<Volume> {
    let g = glusterd()?;
    let name = format!("georep{}{tag}", std::process::id());
    let mut v = Volume::define(&g, &name, &s.path(&format!("gluster-{tag}")), shape, bricks)
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

/// `gluster volume add-brick` of a new brick at `brick` on `host`.
pub(crate) fn add_brick(v: &Volume, host: &str, brick: &Path) {
    fs::create_dir_all(brick).unwrap();
    gluster([
        "volume",
        "add-brick",
        &v.name,
        &format!("{host}:{}", brick.display()),
        "force",
    ])
    .unwrap();
}

/// Waits until the session has `bricks` rows, all Active.
fn wait_joined(s: &Scenario, bricks: usize) {
    s.wait_status("the added brick joined the session", |rows| {
        rows.len() == bricks && rows.iter().all(|r| r["status"] == "Active")
    });
}

/// The brick that holds a DHT link file at `rel`, if any.
pub(crate) fn link_file_on(v: &Volume, rel: &Path) -> Option<PathBuf> {
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
    add_brick(&v, &host, &added);
    wait_joined(&s, 3);
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

/// Walks the slave in the background and remembers every file that was
/// there once and is gone later while the mount still holds it.
struct Vanished {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<PathBuf>, u64)>>,
}

impl Vanished {
    fn start(slave: &Path, mount: &Path) -> Vanished {
        let stop = Arc::new(AtomicBool::new(false));
        let (slave, mount) = (slave.to_owned(), mount.to_owned());
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = BTreeSet::new();
                let mut gone = Vec::new();
                let mut samples = 0;
                while !stop.load(Ordering::Relaxed) {
                    let now = files_under(&slave);
                    for f in seen.difference(&now) {
                        if fs::symlink_metadata(mount.join(f)).is_ok() {
                            gone.push(f.clone());
                        }
                    }
                    seen.extend(now);
                    samples += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                (gone, samples)
            })
        };
        Vanished {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; the files that vanished, and how many walks were made.
    fn finish(mut self) -> (Vec<PathBuf>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or_else(Default::default, |t| t.join().unwrap())
    }
}

/// The regular files under `root`, relative to it (the slave's own
/// temporary files left out).
fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() && !e.file_name().to_string_lossy().starts_with(".georep.") {
                out.insert(path.strip_prefix(root).unwrap_or(&path).to_owned());
            }
        }
    }
    out
}

/// `add-brick`, then `rebalance start` while the session runs and a
/// client writes new files and removes some: georep sees the
/// rebalance (the rows say so), removes nothing on the slave while it
/// runs (no file the mount holds is ever missing on the slave after it
/// first arrived, sampled throughout), re-checks the bricks once it has
/// ended (the removals made meanwhile arrive then), and the slave ends
/// equal to the mount (mtimes included), still 10 s later.
#[test]
fn a_rebalance_while_running_loses_nothing_and_converges() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let name = format!("sh{}reb", std::process::id());
    let mut v = Volume::define(&g, &name, &s.path("gluster-shreb"), &[], 2)
        .unwrap_or_else(|e| panic!("cannot create GlusterFS volume {name}: {e}"));
    v.set("cluster.min-free-disk", "1%").unwrap();
    v.start()
        .unwrap_or_else(|e| panic!("cannot start GlusterFS volume {name}: {e}"));
    let m = v.mount.clone();
    const DIRS: u64 = 8;
    const FILES: u64 = 150;
    for d in 0..DIRS {
        fs::create_dir_all(m.join(format!("d{d}"))).unwrap();
        for i in 0..FILES {
            fs::write(
                m.join(format!("d{d}/f{i}")),
                random_bytes(6000, d * FILES + i),
            )
            .unwrap();
        }
    }
    start_watching(&mut s, &v);
    s.wait_synced_past(SystemTime::now());
    let vanished = Vanished::start(&s.slave, &m);

    // A client writes new files throughout, and removes some of them.
    // (Not rewrites of old files: GlusterFS 10.3 can leave a file written
    // while it migrates as data on two bricks, and its own mount then
    // shows one copy or the other.)
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, m) = (stop.clone(), m.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let name = |n: u64| m.join(format!("d{}/w{n}", n % DIRS));
            while !stop.load(Ordering::Relaxed) {
                fs::write(name(n), random_bytes(3000, n)).unwrap();
                if n.is_multiple_of(5) && n >= 40 {
                    // A file being migrated can be briefly unknown to the
                    // mount (GlusterFS 10.3 under load): whether it is
                    // gone or not, the slave is compared with the mount.
                    match fs::remove_file(name(n - 40)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            panic!("removing {}: {e}", name(n - 40).display())
                        }
                        _ => {}
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    let added = s.path("gluster-shreb/brick3");
    add_brick(&v, g.host(), &added);
    wait_joined(&s, 3);
    gluster(["volume", "rebalance", &v.name, "start"]).unwrap();
    // While it runs, the rows say so.
    let mut said = false;
    let mut migrated = String::new();
    // GlusterFS's own migration, slow on a loaded machine: not georep's
    // time, so a wider wait than a sync's.
    wait_until(4 * SYNC_TIMEOUT, Duration::from_millis(300), || {
        let rows = s.status_json();
        said |= rows.iter().any(|r| {
            r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("is being rebalanced"))
        });
        migrated = gluster(["volume", "rebalance", &v.name, "status"]).unwrap_or_default();
        assert!(
            !migrated.contains("failed"),
            "GlusterFS's rebalance failed:\n{migrated}"
        );
        migrated.contains("completed")
    })
    .unwrap_or_else(|e| panic!("the rebalance never completed ({e:?}):\n{migrated}"));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0, "the writer wrote nothing");
    assert!(said, "no status row said the volume was being rebalanced");
    s.wait_synced_past(SystemTime::now());
    let (gone, samples) = vanished.finish();
    assert!(samples > 10, "the slave was sampled {samples} times");
    assert_eq!(
        gone,
        Vec::<PathBuf>::new(),
        "files the mount holds went missing on the slave"
    );
    let moved = fs::read_dir(added.join("d0"))
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|md| md.mode() & 0o7777 != 0o1000))
        .count();
    assert!(moved > 0, "nothing was moved to the new brick:\n{migrated}");
    assert_slave_is_the_mount(&v, &s, "after the rebalance");
    std::thread::sleep(Duration::from_secs(10));
    assert_slave_is_the_mount(&v, &s, "10 s after the rebalance");
    // Re-checked: no row says it still holds.
    for r in s.status_json() {
        let said = r["last_error"].as_str().unwrap_or_default();
        assert!(!said.contains("rebalanced"), "{r}");
    }
}
