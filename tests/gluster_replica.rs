//! georep on a replicated GlusterFS volume with all its bricks on this
//! node: one worker per replica set is Active and ships, the others are
//! Passive; when the Active brick dies a Passive worker takes over from the
//! set's stime. The slave must equal the FUSE mount (never a brick: the
//! replicate layer keeps internals there, and an arbiter holds 0-byte
//! files).
//!
//! Needs root and /dev/fuse, as `tests/gluster.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use georep_testkit::churn::{churn, SlaveCheck, SlaveWatch};
use georep_testkit::glusterfs::{gluster, Glusterd, Volume};
use georep_testkit::{find_processes, random_bytes, signal, wait_until};
use serde_json::Value;

use crate::common::{Scenario, SYNC_TIMEOUT};
use crate::gluster::{assert_same_tree, glusterd};

/// A started and mounted volume of `bricks` bricks laid out by `shape`.
fn replicated(g: &Arc<Glusterd>, s: &Scenario, tag: &str, shape: &[&str], bricks: usize) -> Volume {
    let name = format!("georep{}{tag}", std::process::id());
    let mut v = Volume::define(g, &name, &s.path(&format!("gluster-{tag}")), shape, bricks)
        .unwrap_or_else(|e| panic!("cannot create GlusterFS volume {name}: {e}"));
    v.start()
        .unwrap_or_else(|e| panic!("cannot start GlusterFS volume {name}: {e}"));
    v
}

/// `create` without `--brick` (every brick of the volume is on this node),
/// then `start`.
fn create_and_start(s: &mut Scenario, v: &Volume) {
    create_whole(s, v);
    s.start().ok();
}

/// `create` without `--brick`: every brick of the volume is on this node,
/// and `create` names each one it took.
pub(crate) fn create_whole(s: &mut Scenario, v: &Volume) {
    s.vol = v.name.clone();
    let created = s.geo_rep(s.create_args(&[], &s.slave_url(), false)).ok();
    for b in &v.bricks {
        assert!(
            created.stdout().contains(&format!("brick {}", b.display())),
            "{}",
            created.0
        );
    }
}

/// `(brick, status)` of each row.
fn roles(rows: &[Value]) -> Vec<(PathBuf, String)> {
    rows.iter()
        .map(|r| {
            (
                PathBuf::from(r["master_brick"].as_str().unwrap_or_default()),
                r["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The one Active brick, if exactly one row is Active.
fn active(rows: &[Value]) -> Option<PathBuf> {
    let active: Vec<PathBuf> = roles(rows)
        .into_iter()
        .filter(|(_, st)| st == "Active")
        .map(|(b, _)| b)
        .collect();
    (active.len() == 1).then(|| active[0].clone())
}

/// Waits until one row is Active with an stime and every other row is
/// Passive; returns the Active brick.
fn wait_one_active(s: &Scenario) -> PathBuf {
    let rows = s.wait_status("one Active brick, the others Passive", |rows| {
        active(rows).is_some()
            && rows.iter().all(|r| r["stime_ns"].is_i64())
            && roles(rows)
                .iter()
                .all(|(_, st)| st == "Active" || st == "Passive")
    });
    active(&rows).unwrap_or_default()
}

/// What must never be on the slave: a volume's internals, or an empty
/// file (the workload leaves none; an arbiter brick holds only empty ones)
/// other than the slave's own temporary or partial file being written.
fn internals_or_empty() -> Box<SlaveCheck> {
    let internals = SlaveWatch::volume_internals();
    Box::new(move |rel, md| {
        let name = rel.file_name()?.to_string_lossy();
        let incoming =
            name.starts_with(".georep.") && (name.ends_with(".tmp") || name.ends_with(".part"));
        internals(rel, md).or_else(|| {
            (md.is_file() && md.len() == 0 && !incoming)
                .then(|| "an empty file (an arbiter brick's?)".into())
        })
    })
}

/// The slave equals the mount now and still after ten seconds, and the
/// watch saw nothing it must not while it synced.
fn assert_converged(s: &Scenario, v: &Volume, watch: &SlaveWatch) {
    s.wait_synced_past(SystemTime::now());
    assert_same_tree(&v.mount, &s.slave, "the slave differs from the mount");
    std::thread::sleep(Duration::from_secs(10));
    assert_same_tree(
        &v.mount,
        &s.slave,
        "the slave differs from the mount 10 s later",
    );
    assert!(watch.samples() > 0, "the slave was never sampled");
    assert_eq!(watch.flagged(), vec![], "seen on the slave while it synced");
}

/// `verify` finds the slave equal to the volume, read through one member
/// of each set (see `tests/gluster_verify.rs`).
pub(crate) fn assert_verifies_equal(s: &Scenario) {
    let run = s.geo_rep(["verify", s.vol.as_str(), &s.slave_url()]).ok();
    assert!(run.stdout().contains(": 0 differences"), "{}", run.0);
}

/// Every row names the volume's one replica set; the Passive rows show the
/// set's LAST_SYNCED, the Active row's.
fn assert_rows_name_the_set(s: &Scenario, v: &Volume) {
    let rows = s.status_json();
    let set = format!("{}-replicate-0", v.name);
    for r in &rows {
        assert_eq!(r["subvolume"], set.as_str(), "{rows:#?}");
    }
    let stimes: Vec<&Value> = rows.iter().map(|r| &r["last_synced"]).collect();
    assert!(stimes.windows(2).all(|w| w[0] == w[1]), "{rows:#?}");
    let detail = s
        .geo_rep(["status", &s.vol, &s.slave_url(), "detail"])
        .ok()
        .stdout();
    assert!(
        detail.contains("SUBVOLUME") && detail.contains(&set),
        "{detail}"
    );
}

#[test]
fn a_replica_2_volume_ships_from_one_active_brick_and_equals_the_mount() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let v = replicated(&g, &s, "r2", &["replica", "2"], 2);
    churn(&v.mount, 0).unwrap();
    let watch = SlaveWatch::start(&s.slave, SlaveWatch::volume_internals());
    create_and_start(&mut s, &v);
    let first = wait_one_active(&s);
    churn(&v.mount, 1).unwrap();
    churn(&v.mount, 2).unwrap();
    assert_converged(&s, &v, &watch);
    assert_verifies_equal(&s);
    // The replicate layer's own directory is on the bricks, not the slave.
    assert!(
        fs::read_dir(&v.brick).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with(".glusterfs-anonymous-inode-")),
        "the brick has no anonymous-inode directory: this test shows nothing about it"
    );
    let rows = s.status_json();
    assert_eq!(active(&rows), Some(first.clone()), "{rows:#?}");
    for r in &rows {
        if r["status"] == "Passive" {
            assert_eq!(r["bytes_sent"], 0, "a Passive worker shipped: {rows:#?}");
        }
    }
    assert_rows_name_the_set(&s, &v);
}

/// The glusterfsd serving `brick` (only this test's volume's).
pub(crate) fn brick_process(brick: &Path) -> Vec<i32> {
    let brick = brick.display().to_string();
    find_processes(|a| a[0].ends_with("glusterfsd") && a.contains(&brick))
}

/// Writes small files through the mount (or runs a step) until dropped.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl Writer {
    fn start(dir: PathBuf) -> Writer {
        fs::create_dir_all(&dir).unwrap();
        // A write may fail while the client notices the dead brick; it is
        // retried under the next name.
        Writer::each(move |n| {
            fs::write(dir.join(format!("w{n}")), random_bytes(3000, n.into())).is_ok()
        })
    }

    /// Runs `step(n)` every 50 ms until dropped; `n` counts the steps
    /// that succeeded.
    pub(crate) fn each(mut step: impl FnMut(u32) -> bool + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if step(n) {
                        n += 1;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                n
            })
        };
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; how many steps succeeded.
    pub(crate) fn finish(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_passive_worker_takes_over_when_the_active_brick_dies() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let v = replicated(&g, &s, "fo", &["replica", "2"], 2);
    let big = 8usize << 20;
    fs::write(v.mount.join("big"), random_bytes(big, 11)).unwrap();
    churn(&v.mount, 0).unwrap();
    let watch = SlaveWatch::start(&s.slave, SlaveWatch::volume_internals());
    create_and_start(&mut s, &v);
    let old = wait_one_active(&s);
    s.wait_synced_past(SystemTime::now());
    let bytes_of = |rows: &[Value], brick: &Path| {
        rows.iter()
            .find(|r| r["master_brick"] == brick.display().to_string().as_str())
            .and_then(|r| r["bytes_sent"].as_u64())
            .unwrap_or_else(|| panic!("no bytes_sent for {}: {rows:#?}", brick.display()))
    };
    let new = v.bricks.iter().find(|b| **b != old).unwrap().clone();
    assert_eq!(
        bytes_of(&s.status_json(), &new),
        0,
        "the Passive worker shipped"
    );

    // Kill the Active brick's process while a client keeps writing.
    let writer = Writer::start(v.mount.join("during"));
    std::thread::sleep(Duration::from_secs(2));
    let pids = brick_process(&old);
    assert_eq!(pids.len(), 1, "glusterfsd of {}: {pids:?}", old.display());
    signal(pids[0], rustix::process::Signal::KILL);
    s.wait_status("the Passive brick Active, the killed one Faulty", |rows| {
        let actives = roles(rows).iter().filter(|(_, st)| st == "Active").count();
        assert!(actives <= 1, "two Active workers of one set: {rows:#?}");
        active(rows).as_ref() == Some(&new)
            && roles(rows)
                .iter()
                .any(|(b, st)| *b == old && st == "Faulty")
    });
    churn(&v.mount, 1).unwrap();
    let written = writer.finish();
    assert!(written > 0, "the writer wrote nothing");
    assert_converged(&s, &v, &watch);
    // The new Active continued from the set's stime through its own
    // changelog: no gap to heal by walking the brick (unless GlusterFS
    // itself lost a changelog, see `gluster::a_restart_replays_…`).
    let log = s.monitor_log();
    let of_new: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("brick={}", new.display())))
        .collect();
    assert!(
        of_new.iter().any(|l| l.contains("History Crawl")),
        "{}",
        of_new.join("\n")
    );
    let gaps = of_new.iter().filter(|l| l.contains("journal gap")).count();
    let clobbered = log.matches("the second replaced the first").count();
    assert!(
        gaps == 0 || clobbered > 0,
        "the new Active did not continue from the set's stime:\n{}",
        of_new.join("\n")
    );
    // The big file was on the slave before the takeover: not sent again.
    let sent = bytes_of(&s.status_json(), &new);
    assert!(
        sent < big as u64 / 2,
        "the new Active sent {sent} bytes: what the slave held travelled again"
    );

    // The brick comes back Passive, and the roles stay put.
    gluster(["volume", "start", &v.name, "force"]).unwrap();
    s.wait_status("the restarted brick Passive", |rows| {
        roles(rows)
            .iter()
            .any(|(b, st)| *b == old && st == "Passive")
    });
    let steady = wait_until(Duration::from_secs(15), Duration::from_millis(300), || {
        active(&s.status_json()).as_ref() != Some(&new)
    });
    assert!(
        steady.is_err(),
        "the roles flapped after the brick came back"
    );
    churn(&v.mount, 2).unwrap();
    s.wait_synced_past(SystemTime::now());
    assert_same_tree(&v.mount, &s.slave, "after the brick came back");
    assert_rows_name_the_set(&s, &v);
    let log = s.monitor_log();
    assert!(log.contains("elected Active"), "{log}");
}

#[test]
fn an_arbiter_brick_is_never_active_and_its_empty_files_never_reach_the_slave() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let v = replicated(&g, &s, "arb", &["replica", "3", "arbiter", "1"], 3);
    let arbiter = v.bricks[2].clone();
    churn(&v.mount, 0).unwrap();
    let watch = SlaveWatch::start(&s.slave, internals_or_empty());
    create_and_start(&mut s, &v);
    wait_one_active(&s);
    churn(&v.mount, 1).unwrap();
    // While it syncs, the arbiter is never Active.
    let deadline = std::time::Instant::now() + SYNC_TIMEOUT;
    let t = SystemTime::now();
    loop {
        let rows = s.status_json();
        assert!(
            roles(&rows)
                .iter()
                .all(|(b, st)| *b != arbiter || st == "Passive"),
            "{rows:#?}"
        );
        let synced = rows.iter().all(|r| {
            r["stime_ns"]
                .as_i64()
                .is_some_and(|n| i128::from(n) > crate::common::nanos(t))
        });
        if synced || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // The arbiter holds the names as 0-byte files.
    let arbiter_file = arbiter.join("r1/sub/deeper/big");
    assert_eq!(
        fs::metadata(&arbiter_file).map(|m| m.len()).ok(),
        Some(0),
        "{} is not an arbiter's empty file: this test shows nothing about them",
        arbiter_file.display()
    );
    assert_converged(&s, &v, &watch);
    // Never read through the arbiter, whose files are empty.
    assert_verifies_equal(&s);
    let rows = s.status_json();
    let row = rows
        .iter()
        .find(|r| r["master_brick"] == arbiter.display().to_string().as_str())
        .unwrap();
    assert_eq!(row["arbiter"], true, "{rows:#?}");
    assert_eq!(row["status"], "Passive", "{rows:#?}");
    assert_rows_name_the_set(&s, &v);

    // With both data bricks down the arbiter is the only member up, and
    // still never Active; once they are back, one of them is.
    for b in &v.bricks[..2] {
        for pid in brick_process(b) {
            signal(pid, rustix::process::Signal::KILL);
        }
    }
    s.wait_status("both data bricks Faulty", |rows| {
        roles(rows)
            .iter()
            .filter(|(b, st)| *b != arbiter && st == "Faulty")
            .count()
            == 2
    });
    // Two failover intervals (5 s each): time for the arbiter to be elected.
    let elected = wait_until(Duration::from_secs(12), Duration::from_millis(300), || {
        roles(&s.status_json())
            .iter()
            .any(|(b, st)| *b == arbiter && st != "Passive")
    });
    assert!(
        elected.is_err(),
        "the arbiter left Passive: {:#?}",
        s.status_json()
    );
    gluster(["volume", "start", &v.name, "force"]).unwrap();
    let back = wait_one_active(&s);
    assert_ne!(back, arbiter);
    // The client reconnects to the restarted bricks in its own time.
    wait_until(SYNC_TIMEOUT, Duration::from_millis(300), || {
        fs::write(v.mount.join("back"), b"bricks are back").is_ok()
    })
    .expect("the mount never took writes again");
    churn(&v.mount, 2).unwrap();
    assert_converged(&s, &v, &watch);
}

/// The clients lose the Active brick while its process and its worker stay
/// up (here: the process is frozen until the mount gives up on it). What
/// is written meanwhile reaches the other member only, and the Active
/// brick's changelog records it only when the replicate layer heals the
/// brick. Until then its empty changelogs must not move the set's stime
/// past those writes: the row says the set is healing, and once the heal
/// is on the brick it is shipped and the slave equals the mount.
#[test]
fn an_active_brick_the_clients_lost_holds_stime_until_its_heal_is_shipped() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let v = replicated(&g, &s, "lost", &["replica", "2"], 2);
    // Writes go on with one member, a silent brick is given up within
    // seconds, and nothing heals until this test lets the daemon run.
    for (key, value) in [
        ("cluster.quorum-type", "none"),
        ("network.ping-timeout", "3"),
        ("cluster.self-heal-daemon", "off"),
        ("cluster.data-self-heal", "off"),
        ("cluster.metadata-self-heal", "off"),
        ("cluster.entry-self-heal", "off"),
    ] {
        gluster(["volume", "set", &v.name, key, value]).unwrap();
    }
    churn(&v.mount, 0).unwrap();
    let watch = SlaveWatch::start(&s.slave, SlaveWatch::volume_internals());
    create_and_start(&mut s, &v);
    let lost = wait_one_active(&s);
    s.wait_synced_past(SystemTime::now());

    let frozen = brick_process(&lost);
    assert!(
        !frozen.is_empty(),
        "no glusterfsd serves {}",
        lost.display()
    );
    for &pid in &frozen {
        signal(pid, rustix::process::Signal::STOP);
    }
    churn(&v.mount, 1).unwrap();
    // A write counts once the other member has applied it, which comes
    // after the mount gave up on the frozen brick: none is older than this.
    let written = SystemTime::now();
    for &pid in &frozen {
        signal(pid, rustix::process::Signal::CONT);
    }
    assert!(
        !lost.join("r1").exists(),
        "the frozen brick got the writes: this test shows nothing"
    );
    s.wait_status("the Active row saying its set is healing", |rows| {
        rows.iter().any(|r| {
            r["status"] == "Active"
                && r["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("healing"))
        })
    });
    // The brick rolls its changelog over every second again; stime stays.
    std::thread::sleep(Duration::from_secs(6));
    let rows = s.status_json();
    assert_eq!(active(&rows), Some(lost.clone()), "{rows:#?}");
    for r in &rows {
        let stime = i128::from(r["stime_ns"].as_i64().unwrap_or_default());
        assert!(
            stime < crate::common::nanos(written),
            "stime passed writes the slave lacks ({}): {rows:#?}",
            crate::common::nanos(written)
        );
    }
    gluster(["volume", "set", &v.name, "cluster.self-heal-daemon", "on"]).unwrap();
    assert_converged(&s, &v, &watch);
    let rows = s.status_json();
    assert_eq!(active(&rows), Some(lost), "{rows:#?}");
    assert!(rows.iter().all(|r| r["last_error"].is_null()), "{rows:#?}");
}

/// A 2x2 distributed-replicate volume (two replica sets, each holding
/// part of the namespace): one worker per set is Active, and no Active
/// worker removes on the slave what the other set holds. The churn
/// workload through the mount, before and after `start`: the slave equals
/// the mount, and still 10 s later; a watch of the slave while it syncs
/// never sees a volume internal or an empty file.
#[test]
fn a_distributed_replicate_volume_ships_one_active_brick_per_set() {
    let Some(g) = glusterd() else { return };
    let mut s = Scenario::new();
    let name = format!("sh{}dr", std::process::id());
    let mut v = Volume::define(&g, &name, &s.path("gluster-shdr"), &["replica", "2"], 4)
        .unwrap_or_else(|e| panic!("cannot create GlusterFS volume {name}: {e}"));
    // Files go where their names hash even on a nearly full disk.
    v.set("cluster.min-free-disk", "1%").unwrap();
    v.start()
        .unwrap_or_else(|e| panic!("cannot start GlusterFS volume {name}: {e}"));
    churn(&v.mount, 0).unwrap();
    let watch = SlaveWatch::start(&s.slave, internals_or_empty());
    create_and_start(&mut s, &v);
    let sets = [format!("{name}-replicate-0"), format!("{name}-replicate-1")];
    let rows = s.wait_status("one Active and one Passive brick per set", |rows| {
        sets.iter().all(|set| {
            let of_set: Vec<&str> = rows
                .iter()
                .filter(|r| r["subvolume"] == set.as_str())
                .map(|r| r["status"].as_str().unwrap_or_default())
                .collect();
            of_set.len() == 2 && of_set.contains(&"Active") && of_set.contains(&"Passive")
        }) && rows.iter().all(|r| r["stime_ns"].is_i64())
    });
    assert_eq!(rows.len(), 4, "{rows:#?}");
    churn(&v.mount, 1).unwrap();
    churn(&v.mount, 2).unwrap();
    // Both sets hold part of r2/: a prune by either Active worker alone
    // would lose the other's files.
    let holds_files = |set: &[PathBuf]| {
        set.iter().any(|b| {
            fs::read_dir(b.join("r2"))
                .unwrap()
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_file()))
        })
    };
    assert!(
        holds_files(&v.bricks[..2]) && holds_files(&v.bricks[2..]),
        "r2/ is not spread over both sets: this test shows nothing about them"
    );
    assert_converged(&s, &v, &watch);
    assert_verifies_equal(&s);
    for r in s.status_json() {
        if r["status"] == "Passive" {
            assert_eq!(r["bytes_sent"], 0, "a Passive worker shipped: {r}");
        }
    }
}
