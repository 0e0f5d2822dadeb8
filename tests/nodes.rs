//! Several master nodes: a real GlusterFS cluster of network namespaces on
//! this machine (`georep_testkit::cluster`), with a DR site behind its own
//! sshd.
//!
//! Needs root and /dev/fuse, as `tests/gluster.rs`: skipped without them,
//! except in CI, where that is a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use georep_testkit::cluster::{Cluster, Node, DR_HOST, SHARED_STORAGE, VOLUME};
use georep_testkit::glusterfs::{gluster, Glusterd, Volume};
use georep_testkit::{
    compare_trees, random_bytes, run_with_timeout, wait_for, wait_until, CommandOutput,
    CompareOptions,
};
use serde_json::Value;

use crate::common::{nanos, COMMAND_TIMEOUT, GEO_REP, POLL, SYNC_TIMEOUT};
use crate::gluster::gluster_can_run;

/// The process's cluster, or `None` when the test must be skipped.
pub(crate) fn cluster() -> Option<Arc<Cluster>> {
    gluster_can_run().then(|| {
        Cluster::shared().unwrap_or_else(|e| panic!("cannot build the GlusterFS cluster: {e}"))
    })
}

/// The cluster is real: every node sees every other as a connected peer,
/// a file written through node1's FUSE mount lands on both bricks (on two
/// nodes) and shows through node2's mount, the shared storage is mounted
/// on every node, and node1 reaches the DR site's sshd by name.
#[test]
fn a_file_written_on_node1_is_on_both_nodes_bricks() {
    let Some(c) = cluster() else { return };
    for n in c.nodes() {
        let peers = n.gluster(["peer", "status"]).unwrap();
        assert_eq!(
            peers.matches("Peer in Cluster (Connected)").count(),
            c.nodes().len() - 1,
            "{}: {peers}",
            n.name()
        );
        assert_eq!(n.sh("hostname").unwrap().trim(), n.name());
        n.sh(&format!("mountpoint -q {SHARED_STORAGE}"))
            .unwrap_or_else(|e| panic!("no shared storage on {}: {e}", n.name()));
    }
    let name = format!("probe-{}", std::process::id());
    let (node1, node2) = (c.node(1), c.node(2));
    let written = node1.view(&node1.mount()).unwrap().join(&name);
    fs::write(&written, b"hello from node1").unwrap();
    for brick in [node1.brick(), node2.brick()] {
        let on_brick = brick.join(&name);
        wait_until(SYNC_TIMEOUT, Duration::from_millis(100), || {
            fs::read(&on_brick).is_ok_and(|b| b == b"hello from node1")
        })
        .unwrap_or_else(|_| panic!("{} never held the file", on_brick.display()));
    }
    let seen = node2.view(&node2.mount()).unwrap().join(&name);
    assert_eq!(fs::read(&seen).unwrap(), b"hello from node1");
    let sshd = c.sshd();
    let sshd = sshd.as_ref().unwrap();
    let key = sshd.operator_key().display().to_string();
    let out = run_with_timeout(
        node1.command("ssh").args([
            "-i",
            &key,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            &format!("root@{DR_HOST}"),
            "cat /proc/sys/kernel/hostname; readlink /proc/self/ns/net",
        ]),
        SYNC_TIMEOUT,
    )
    .unwrap();
    assert!(out.success(), "{out}\n{}", sshd.log());
    let dr_ns = fs::metadata(c.dr_netns_path()).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert!(
        out.stdout_str()
            .contains(&format!("net:[{}]", dr_ns.unwrap())),
        "the DR login ran outside the DR namespace: {out}"
    );
    fs::remove_file(&written).unwrap();
}

/// The machine's own glusterd (the one the single-node tests share) is
/// the one in the test's network namespace: with the cluster's glusterds
/// running, a volume made through it is listed by the machine's CLI and
/// by no node's.
#[test]
fn the_single_node_glusterd_is_never_a_cluster_nodes() {
    let Some(c) = cluster() else { return };
    let g = Glusterd::shared().unwrap_or_else(|e| panic!("cannot run GlusterFS: {e}"));
    let dir = tempfile::Builder::new()
        .prefix("georep-it-")
        .tempdir()
        .unwrap();
    let name = format!("georep{}hostgd", std::process::id());
    let v = Volume::create(&g, &name, dir.path())
        .unwrap_or_else(|e| panic!("cannot create GlusterFS volume {name}: {e}"));
    let listed = gluster(["volume", "list"]).unwrap();
    assert!(listed.lines().any(|l| l == name), "{listed}");
    for n in c.nodes() {
        let theirs = n.gluster(["volume", "list"]).unwrap();
        assert!(!theirs.lines().any(|l| l == name), "{}: {theirs}", n.name());
        assert!(
            theirs.lines().any(|l| l == VOLUME),
            "{}: {theirs}",
            n.name()
        );
    }
    assert!(Path::new(&v.mount).is_dir());
    drop(v);
}

/// `geo-rep --home HOME ARGS…` run inside `node`.
pub(crate) fn geo_rep_on(node: &Node, home: &Path, args: &[&str]) -> CommandOutput {
    run_with_timeout(
        node.command(GEO_REP)
            .env("GEOREP_HOME", home)
            .arg("--home")
            .arg(home)
            .args(args),
        COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("geo-rep on {}: {e}", node.name()))
}

/// Files `f0`… `f<n-1>` in `dir` (made if missing), of `base + i * step`
/// random bytes each.
pub(crate) fn write_files(dir: &Path, n: usize, base: usize, step: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        fs::write(
            dir.join(format!("f{i}")),
            random_bytes(base + i * step, i as u64),
        )
        .unwrap();
    }
}

/// `status VOL SLAVE --json` on `node`, parsed.
pub(crate) fn status_on(node: &Node, home: &Path, slave: &str) -> Vec<Value> {
    let out = geo_rep_on(node, home, &["status", VOLUME, slave, "--json"]);
    assert!(out.success(), "status on {}: {out}", node.name());
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{out}"))
}

/// `(master_node, status)` of each row, sorted.
pub(crate) fn roles(rows: &[Value]) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["master_node"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    r.sort();
    r
}

/// Waits until `node`'s status rows satisfy `pred`; returns them.
pub(crate) fn wait_rows(
    node: &Node,
    home: &Path,
    slave: &str,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut last = Vec::new();
    let found = wait_for(SYNC_TIMEOUT, POLL, || {
        last = status_on(node, home, slave);
        pred(&last).then_some(())
    });
    if found.is_err() {
        panic!(
            "status on {} never showed {what}; last:\n{}",
            node.name(),
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
    }
    last
}

/// What a slave must hold the same as the mount: owners and hard links
/// too.
fn tree_options() -> CompareOptions {
    CompareOptions {
        owner: true,
        hard_links: true,
        ..CompareOptions::default()
    }
}

/// Waits until the slave equals the volume as `node`'s mount shows it.
pub(crate) fn wait_slave_equals_mount(node: &Node, slave: &Path) {
    let opts = tree_options().without_dir_mtime();
    let mut diffs = Vec::new();
    let same = wait_until(SYNC_TIMEOUT, POLL, || {
        // Looked up each time: the process whose root it goes through
        // may be a short-lived one (a `gluster` call) that is gone by the
        // next poll.
        let mount = node.view(&node.mount()).expect("the node runs");
        diffs = compare_trees(&mount, slave, &opts);
        diffs.is_empty()
    });
    assert!(
        same.is_ok(),
        "the slave never equalled {}'s mount: {diffs:?}",
        node.name()
    );
}

/// A session from the cluster's `gv0` to a directory of the DR site,
/// created and started once, on node1: every node's agent (each with its
/// own home) sets up and starts that node's share.
pub(crate) struct Sessions {
    pub(crate) slave: String,
    pub(crate) slave_dir: tempfile::TempDir,
    homes: Vec<PathBuf>,
    _agents: Vec<crate::cluster::Agent>,
}

impl Sessions {
    /// With each `(key, value)` set by `config` (on node1, for every
    /// node) before the start.
    fn start(c: &Cluster, config: &[(&str, &str)]) -> Sessions {
        let slave_dir = tempfile::Builder::new()
            .prefix("georep-it-dr-")
            .tempdir()
            .unwrap();
        let slave = format!("root@{DR_HOST}::{}", slave_dir.path().display());
        let homes: Vec<PathBuf> = c.nodes().iter().map(|n| n.dir().join("home")).collect();
        let agents = c
            .nodes()
            .iter()
            .zip(&homes)
            .map(|(n, h)| crate::cluster::Agent::start(n, h))
            .collect();
        let node1 = c.node(1);
        let args = crate::cluster::create_args(c, &slave);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = geo_rep_on(node1, &homes[0], &args);
        assert!(out.success(), "create on node1: {out}");
        for (key, value) in config {
            let out = geo_rep_on(node1, &homes[0], &["config", VOLUME, &slave, key, value]);
            assert!(out.success(), "config on node1: {out}");
        }
        let s = Sessions {
            slave,
            slave_dir,
            homes,
            _agents: agents,
        };
        s.start_on(node1, false);
        s
    }

    /// `start` on `node` (`force`: its monitor died with the node).
    fn start_on(&self, node: &Node, force: bool) {
        let mut args = vec!["start", VOLUME, &self.slave];
        if force {
            args.push("force");
        }
        let out = geo_rep_on(node, self.home(node), &args);
        assert!(out.success(), "start on {}: {out}", node.name());
    }

    pub(crate) fn home(&self, node: &Node) -> &Path {
        let i: usize = node.name()["node".len()..].parse().unwrap();
        &self.homes[i - 1]
    }

    fn status(&self, node: &Node) -> Vec<Value> {
        status_on(node, self.home(node), &self.slave)
    }

    pub(crate) fn wait_rows(
        &self,
        node: &Node,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        wait_rows(node, self.home(node), &self.slave, what, pred)
    }

    /// Waits until one node of `c` (two nodes) is Active: that node, then
    /// the other.
    fn active_and_other<'c>(&self, c: &'c Cluster) -> (&'c Node, &'c Node) {
        let rows = self.wait_rows(c.node(1), "one Active node", |rows| {
            the_active(rows).is_some() && roles(rows).len() == 2
        });
        if the_active(&rows).as_deref() == Some("node1") {
            (c.node(1), c.node(2))
        } else {
            (c.node(2), c.node(1))
        }
    }

    /// Waits until `node` shows `active` Active and every other row
    /// Passive.
    fn wait_active(&self, node: &Node, active: &str) {
        self.wait_rows(
            node,
            &format!("{active} Active, the others Passive"),
            |rows| {
                let r = roles(rows);
                r.len() == 2
                    && r.iter().all(|(n, s)| {
                        if n == active {
                            s == "Active"
                        } else {
                            s == "Passive"
                        }
                    })
            },
        );
    }
}

/// A cluster of `nodes` nodes of the test's own (it kills nodes), `gv0` a
/// replica set over all of them, with a session on each node, or `None`
/// when the test must be skipped.
pub(crate) fn own_cluster_with_sessions(
    nodes: usize,
    config: &[(&str, &str)],
) -> Option<(Cluster, Sessions)> {
    if !gluster_can_run() {
        return None;
    }
    let c = Cluster::start(nodes).unwrap_or_else(|e| panic!("cannot build the cluster: {e}"));
    let s = Sessions::start(&c, config);
    Some((c, s))
}

/// `node`'s row among `rows`.
fn row_of<'r>(rows: &'r [Value], node: &Node) -> &'r Value {
    rows.iter()
        .find(|r| r["master_node"] == node.name())
        .unwrap_or_else(|| panic!("no row of {}: {rows:?}", node.name()))
}

/// The one node whose row is Active, if exactly one is.
fn the_active(rows: &[Value]) -> Option<String> {
    let active: Vec<String> = roles(rows)
        .into_iter()
        .filter(|(_, s)| s == "Active")
        .map(|(n, _)| n)
        .collect();
    (active.len() == 1).then(|| active[0].clone())
}

/// The Active node of `c` dies with every process on it: `survivor`
/// shows the dead node's rows `Offline` (with when it was last seen),
/// never its stale Active, one other node Active and the rest Passive.
/// The new Active's name.
fn wait_took_over(s: &Sessions, c: &Cluster, dead: &Node, survivor: &Node) -> String {
    let rows = s.wait_rows(
        survivor,
        "the dead node Offline, one other Active, the rest Passive",
        |rows| {
            let r = roles(rows);
            r.len() == c.nodes().len()
                && r.iter().all(|(n, st)| {
                    if n == dead.name() {
                        st == "Offline"
                    } else {
                        st == "Active" || st == "Passive"
                    }
                })
                && the_active(rows).is_some()
        },
    );
    let gone = rows
        .iter()
        .find(|r| r["master_node"] == dead.name())
        .unwrap();
    assert!(gone["last_seen"].is_string(), "{gone}");
    assert!(
        gone["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(dead.name())),
        "{gone}"
    );
    the_active(&rows).unwrap()
}

/// One session on every node of a replica-3 volume whose members are on
/// three nodes: the replica set is elected across the nodes on the
/// meta-volume (one Active, two Passive, as GlusterFS shows them), and
/// `status` on any node shows a row for each node's brick with its
/// MASTER NODE. When the Active node dies, the other nodes' rows say it
/// is `Offline` (never its stale Active), one of them takes over from the
/// set's stime (no walk of its brick, nothing sent again) while the third
/// stays Passive, and what is written through a mount reaches the slave.
/// (Two nodes, the user's own shape, fail over in the tests below.)
#[test]
fn each_node_shows_every_nodes_rows_and_the_set_fails_over_across_three_nodes() {
    let Some((c, s)) = own_cluster_with_sessions(3, &[]) else {
        return;
    };
    let names = ["node1", "node2", "node3"];
    let mut active = String::new();
    for n in c.nodes() {
        let rows = s.wait_rows(n, "one Active and two Passive nodes", |rows| {
            let r = roles(rows);
            r.iter().map(|(n, _)| n.as_str()).eq(names)
                && the_active(rows).is_some()
                && r.iter().filter(|(_, s)| s == "Passive").count() == 2
        });
        let now = the_active(&rows).unwrap_or_default();
        assert!(active.is_empty() || active == now, "{active} vs {now}");
        active = now;
        let table = geo_rep_on(n, s.home(n), &["status", VOLUME, &s.slave]).stdout_str();
        for node in names {
            assert!(
                table.lines().any(|l| l.starts_with(node)),
                "no row of {node} on {}:\n{table}",
                n.name()
            );
        }
    }
    let dead_index: usize = active["node".len()..].parse().unwrap();
    let dead = c.node(dead_index);
    // The writer and the node asked: the first that does not die.
    let writer = c.nodes().iter().find(|n| n.name() != active).unwrap();
    let mount = writer.view(&writer.mount()).unwrap();
    fs::create_dir_all(mount.join("d/e")).unwrap();
    let mut first_bytes = 0;
    for i in 0..20 {
        first_bytes += i * 1000 + 7;
        fs::write(
            mount.join(format!("d/e/f{i}")),
            random_bytes(i * 1000 + 7, i as u64),
        )
        .unwrap();
    }
    wait_slave_equals_mount(writer, s.slave_dir.path());
    // A new Active replays its changelog from a few seconds before the
    // set's stime (`TAKEOVER_REPLAY`): let stime pass the writes by more,
    // so that what the slave holds is outside that window.
    let past = nanos(SystemTime::now() + Duration::from_secs(7));
    s.wait_rows(writer, "the set's stime 7 s past the writes", |rows| {
        rows.iter().any(|r| {
            r["status"] == "Active" && r["stime_ns"].as_i64().is_some_and(|t| i128::from(t) > past)
        })
    });

    dead.kill_all().unwrap();
    let new_active = wait_took_over(&s, &c, dead, writer);
    assert_ne!(new_active, dead.name());
    for i in 0..10 {
        fs::write(
            mount.join(format!("d/after{i}")),
            random_bytes(i * 300 + 1, 100 + i as u64),
        )
        .unwrap();
    }
    fs::remove_file(mount.join("d/e/f3")).unwrap();
    wait_slave_equals_mount(writer, s.slave_dir.path());
    let rows = s.status(writer);
    let third = c
        .nodes()
        .iter()
        .find(|n| n.name() != dead.name() && n.name() != new_active)
        .unwrap();
    assert_eq!(
        row_of(&rows, third)["status"],
        "Passive",
        "the third node stays Passive: {rows:?}"
    );
    let mine = rows
        .iter()
        .find(|r| r["master_node"] == new_active.as_str())
        .unwrap();
    assert!(
        mine["crawl_progress"].is_null(),
        "the new Active walked its brick instead of going on from the set's stime: {mine}"
    );
    let sent = mine["bytes_sent"].as_u64().unwrap_or(u64::MAX);
    assert!(
        sent < first_bytes as u64,
        "the new Active sent {sent} bytes, as many as the files the slave already had ({first_bytes}): {mine}"
    );
}

/// Kill and return, five times: each time the Active node is killed while
/// a writer writes through the other node's mount, the other node becomes
/// Active, the slave converges with the mount, and the killed node, back
/// (glusterd, mounts, `start force`), rejoins as Passive and stays so
/// while the other one keeps shipping (no flapping).
#[test]
fn the_set_survives_five_kill_and_return_cycles() {
    let Some((c, s)) = own_cluster_with_sessions(2, &[]) else {
        return;
    };
    let rows = s.wait_rows(c.node(1), "one Active node", |rows| {
        the_active(rows).is_some() && roles(rows).len() == 2
    });
    let mut active = the_active(&rows).unwrap();
    let mut failovers = Vec::new();
    for cycle in 0..5 {
        let (dead, survivor) = if active == "node1" {
            (c.node(1), c.node(2))
        } else {
            (c.node(2), c.node(1))
        };
        let mount = survivor.view(&survivor.mount()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, mount) = (stop.clone(), mount.clone());
            std::thread::spawn(move || {
                let dir = mount.join(format!("c{cycle}"));
                fs::create_dir_all(&dir).unwrap();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || i < 20 {
                    fs::write(
                        dir.join(format!("f{i}")),
                        random_bytes(500 + i * 37, (cycle * 1000 + i) as u64),
                    )
                    .unwrap();
                    i += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let killed = SystemTime::now();
        dead.kill_all().unwrap();
        // The new Active's first batch committed after the kill (the
        // writer keeps writing): how long the set went without shipping.
        s.wait_rows(survivor, "a batch committed after the kill", |rows| {
            rows.iter().any(|r| {
                r["master_node"] == survivor.name()
                    && r["stime_ns"]
                        .as_i64()
                        .is_some_and(|t| i128::from(t) > nanos(killed))
            })
        });
        failovers.push(killed.elapsed().unwrap_or_default());
        assert_eq!(wait_took_over(&s, &c, dead, survivor), survivor.name());
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        wait_slave_equals_mount(survivor, s.slave_dir.path());

        dead.restart(VOLUME)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {} does not come back: {e}", dead.name()));
        s.start_on(dead, true);
        for n in [dead, survivor] {
            s.wait_active(n, survivor.name());
        }
        c.wait_healed(VOLUME).unwrap();
        // No flapping: the node that came back stays Passive.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_secs(1));
            assert_eq!(
                the_active(&s.status(dead)).as_deref(),
                Some(survivor.name()),
                "cycle {cycle}: the Active role moved back"
            );
        }
        active = survivor.name().to_owned();
    }
    wait_slave_equals_mount(c.node(1), s.slave_dir.path());
    // A figure for the notes (polled through `status`, so an upper bound),
    // never asserted.
    failovers.sort();
    eprintln!(
        "failover, kill to the new Active's first committed batch: median {:?} of {failovers:?}",
        failovers[failovers.len() / 2]
    );
}

/// The slave becomes unreachable from the Active node only (its route to
/// the DR site is cut): its worker fails, it steps down, and its rows show
/// `Faulty` naming the slave host, while the other node, which reaches
/// the slave, becomes Active and brings the slave level with the mount.
/// With the route back, the node rejoins as Passive.
#[test]
fn a_node_that_cannot_reach_the_slave_hands_the_set_to_one_that_can() {
    // A batch stuck on the cut link is given up after 10 s, not 120.
    let Some((c, s)) = own_cluster_with_sessions(2, &[("timeout", "10")]) else {
        return;
    };
    let (cut, other) = s.active_and_other(&c);
    let route = format!("{}/32", c.dr_addr());
    cut.sh(&format!("ip route add unreachable {route}"))
        .unwrap();
    let mount = other.view(&other.mount()).unwrap();
    fs::create_dir_all(mount.join("cut")).unwrap();
    for i in 0..10 {
        fs::write(
            mount.join(format!("cut/f{i}")),
            random_bytes(100 + i * 10, 7 + i as u64),
        )
        .unwrap();
    }
    let rows = s.wait_rows(other, "the cut node Faulty and the other Active", |rows| {
        let r = roles(rows);
        r.len() == 2
            && r.iter().any(|(n, st)| n == cut.name() && st == "Faulty")
            && r.iter().any(|(n, st)| n == other.name() && st == "Active")
    });
    let faulty = row_of(&rows, cut);
    assert!(
        faulty["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(DR_HOST)),
        "the error does not name the slave host: {faulty}"
    );
    wait_slave_equals_mount(other, s.slave_dir.path());
    cut.sh(&format!("ip route del unreachable {route}"))
        .unwrap();
    for n in [cut, other] {
        s.wait_active(n, other.name());
    }
}

/// The replica set's fence as the slave root records it: `(epoch,
/// holder)`.
fn slave_fence(slave: &Path) -> Option<(u64, String)> {
    let root = fs::File::open(slave).ok()?;
    georep::slave::fence::recorded(&root, "gv0-replicate-0")
        .ok()
        .flatten()
        .map(|h| (h.epoch, h.holder))
}

/// A copy of `dir` (modes, times, links kept) to compare with later.
fn snapshot(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::Builder::new()
        .prefix("georep-it-snap-")
        .tempdir()
        .unwrap();
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "cp -a: {out:?}");
    copy
}

/// Cuts (or, with `heal`, restores) the traffic between the two master
/// nodes only: each node's route to the other becomes `unreachable`, while
/// both keep their routes to the DR site.
fn partition(c: &Cluster, heal: bool) {
    let (verb, n1, n2) = (if heal { "del" } else { "add" }, c.node(1), c.node(2));
    for (on, other) in [(n1, n2), (n2, n1)] {
        on.sh(&format!("ip route {verb} unreachable {}/32", other.addr()))
            .unwrap();
    }
}

/// A partition between the master nodes while both still reach the slave:
/// the meta-volume splits, so the node that was Active keeps its lock on
/// its side while the other node's side hands the lock to its member, which
/// raises the set's epoch and ships. The slave then refuses the old
/// Active's next batch (it is deposed, and says by which epoch), and the
/// slave is left as it was; the deposed node stays out while the partition
/// lasts. Once the partition heals, the slave equals the mount.
#[test]
fn a_partition_between_the_master_nodes_leaves_one_active_the_slave_accepts() {
    if !gluster_can_run() {
        return;
    }
    let c = Cluster::start(2).unwrap_or_else(|e| panic!("cannot build the cluster: {e}"));
    // The locks translator hands a lock over once the holder's connection
    // to the brick is known dead: seconds, not the default 42 s, and each
    // side of the split meta-volume takes writes (no quorum).
    for (key, value) in [
        ("network.ping-timeout", "3"),
        ("server.tcp-user-timeout", "3"),
        ("server.keepalive-time", "2"),
        ("server.keepalive-interval", "1"),
        ("server.keepalive-count", "2"),
        ("cluster.quorum-type", "none"),
    ] {
        c.node(1)
            .gluster(["volume", "set", "gluster_shared_storage", key, value])
            .unwrap_or_else(|e| panic!("setting {key} on the shared storage: {e}"));
    }
    let s = Sessions::start(&c, &[("timeout", "10")]);
    let (old, new) = s.active_and_other(&c);
    let old_mount = old.view(&old.mount()).unwrap();
    fs::create_dir_all(old_mount.join("p")).unwrap();
    fs::write(old_mount.join("p/before"), b"before the partition").unwrap();
    wait_slave_equals_mount(old, s.slave_dir.path());
    let slave = s.slave_dir.path();
    let (old_epoch, holder) = slave_fence(slave).expect("the Active declared no epoch");
    assert!(holder.starts_with(&format!("{}:", old.name())), "{holder}");

    partition(&c, false);
    // The other side elects its member, which raises the epoch on the
    // slave...
    // How soon depends on GlusterFS seeing the old holder's connection to
    // the meta-volume's bricks dead: seconds on an idle machine; on a
    // loaded one it did not happen within 90 s twice (cause not found), so
    // the bound is longer and a failure shows both nodes' rows.
    let mut new_epoch = 0;
    let raised = wait_until(3 * SYNC_TIMEOUT, POLL, || {
        slave_fence(slave).is_some_and(|(e, h)| {
            new_epoch = e;
            e > old_epoch && h.starts_with(&format!("{}:", new.name()))
        })
    });
    assert!(
        raised.is_ok(),
        "{} never raised the epoch on the slave: {:?}\n{}: {:#?}\n{}: {:#?}",
        new.name(),
        slave_fence(slave),
        new.name(),
        s.status(new),
        old.name(),
        s.status(old)
    );
    // ...and ships under it.
    let new_mount = new.view(&new.mount()).unwrap();
    fs::write(new_mount.join("p/new-side"), b"written on the new side").unwrap();
    wait_until(SYNC_TIMEOUT, POLL, || slave.join("p/new-side").exists())
        .expect("the new Active's batch never reached the slave");
    let before = snapshot(slave);

    // The old Active still holds its side's lock and ships what is written
    // on its side: refused, and it steps down naming the epoch.
    fs::write(old_mount.join("p/old-side"), b"written on the old side").unwrap();
    let deposed_by = format!("by epoch {new_epoch}");
    let rows = s.wait_rows(old, "the old Active deposed", |rows| {
        rows.iter().any(|r| {
            r["master_node"] == old.name()
                && r["status"] == "Faulty"
                && r["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("deposed") && e.contains(&deposed_by))
        })
    });
    let mine = row_of(&rows, old);
    assert!(
        mine["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("epoch {old_epoch}"))),
        "{mine}"
    );
    assert_eq!(
        compare_trees(before.path(), slave, &tree_options()),
        [],
        "the deposed node's batch changed the slave"
    );
    // It does not take the set back while the partition lasts.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(slave_fence(slave).map(|(e, _)| e), Some(new_epoch));
        assert!(!slave.join("p/old-side").exists());
        let rows = s.status(old);
        let mine = row_of(&rows, old);
        assert_eq!(mine["status"], "Faulty", "{mine}");
    }

    partition(&c, true);
    c.wait_healed(VOLUME).unwrap();
    for n in [old, new] {
        s.wait_active(n, new.name());
    }
    assert_eq!(slave_fence(slave).map(|(e, _)| e), Some(new_epoch));
    wait_slave_equals_mount(new, slave);
}
