//! Disaster recovery of the user's own shape (issue 18 on issue 16's
//! cluster): a replica-2 volume over two namespace nodes, its DR site
//! promoted, then failed back from one node and switched back on both.
//!
//! A cluster of its own: failback levels the whole volume with DR, which
//! would remove what other tests write into a shared one.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use georep_testkit::cluster::{Node, VOLUME};
use georep_testkit::{run_with_timeout, CommandOutput};

use crate::common::{nanos, COMMAND_TIMEOUT, GEO_REP};
use crate::nodes::{
    geo_rep_on, own_cluster_with_sessions, roles, wait_slave_equals_mount, write_files, Sessions,
};

/// Every row on `node` says `status`.
fn wait_all(s: &Sessions, node: &Node, status: &str) {
    s.wait_rows(node, status, |rows| {
        let r = roles(rows);
        r.len() == 2 && r.iter().all(|(_, st)| st == status)
    });
}

/// One row Active and the other Passive on `node`.
fn wait_one_active(s: &Sessions, node: &Node) {
    s.wait_rows(node, "one Active, one Passive", |rows| {
        let r = roles(rows);
        r.len() == 2
            && r.iter().filter(|(_, st)| st == "Active").count() == 1
            && r.iter().filter(|(_, st)| st == "Passive").count() == 1
    });
}

/// `geo-rep --home DR_HOME ARGS…` on the DR host (the machine's own
/// file system, which the DR namespace's sshd serves).
fn at_dr(dr_home: &Path, args: &[&str]) -> CommandOutput {
    let mut cmd = std::process::Command::new(GEO_REP);
    cmd.env_remove("GEOREP_HOME")
        .arg("--home")
        .arg(dr_home)
        .args(args);
    run_with_timeout(&mut cmd, COMMAND_TIMEOUT).unwrap()
}

/// The DR host's home: on drop, ends a journal `promote` started (a
/// failed test never reaches the switch that stops it).
struct DrHome(tempfile::TempDir);

impl Drop for DrHome {
    fn drop(&mut self) {
        let places = fs::read_dir(self.0.path().join("promoted"))
            .into_iter()
            .flatten();
        for place in places.flatten() {
            let pid = fs::read_to_string(place.path().join("journal.pid"));
            let pid = pid.ok().and_then(|p| p.trim().parse().ok());
            if let Some(p) = pid.and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

/// The drill: replicate `gv0` (both nodes' agents, one Active); the site
/// is stopped with a write after the set's stime; DR is promoted and
/// written; `failback` on node2 sets the write aside in node2's home,
/// out of the volume, and levels the volume through its mount (both
/// nodes' bricks then hold DR's write); `--switch` demotes DR and starts
/// the session on both nodes from the set's stime, and a new write
/// reaches DR.
#[test]
fn a_volume_of_two_nodes_fails_back_from_one_node_and_switches_back_on_both() {
    let Some((c, s)) = own_cluster_with_sessions(2, &[]) else {
        return;
    };
    let (node1, node2) = (c.node(1), c.node(2));
    for n in [node1, node2] {
        wait_one_active(&s, n);
    }
    let mount = node1.view(&node1.mount()).unwrap();
    write_files(&mount.join("docs"), 6, 2000, 100);
    wait_slave_equals_mount(node1, s.slave_dir.path());
    let past = nanos(SystemTime::now() + Duration::from_secs(3));
    s.wait_rows(node1, "the set's stime past the writes", |rows| {
        rows.iter()
            .any(|r| r["stime_ns"].as_i64().is_some_and(|t| i128::from(t) > past))
    });
    let out = geo_rep_on(node1, s.home(node1), &["stop", VOLUME, &s.slave]);
    assert!(out.success(), "stop: {out}");
    for n in [node1, node2] {
        wait_all(&s, n, "Stopped");
    }
    // The site is lost with a write that never reached DR.
    fs::write(mount.join("docs/lost"), b"after the stime\n").unwrap();

    let sshd = c.sshd();
    let sshd = sshd.as_ref().unwrap();
    let keys = sshd.authorized_keys().display().to_string();
    let key = sshd.operator_key().display().to_string();
    let dr_home = DrHome(tempfile::tempdir().unwrap());
    let dr_home = &dr_home.0;
    let dr_dir = s.slave_dir.path().display().to_string();
    let promoted = at_dr(
        dr_home.path(),
        &["promote", &dr_dir, "--authorized-keys-file", &keys],
    );
    assert!(promoted.success(), "promote: {promoted}");
    fs::write(s.slave_dir.path().join("docs/at-dr"), b"written at DR\n").unwrap();
    fs::remove_file(s.slave_dir.path().join("docs/f1")).unwrap();

    let dr_home_arg = dr_home.path().display().to_string();
    let failback = |extra: &[&str]| {
        let mut args = vec![
            "failback",
            VOLUME,
            &s.slave,
            "--identity",
            &key,
            "--dr-home",
            &dr_home_arg,
        ];
        args.extend_from_slice(extra);
        let out = geo_rep_on(node2, s.home(node2), &args);
        assert!(out.success(), "failback {extra:?} on node2: {out}");
        out.stdout_str()
    };
    let out = failback(&[]);
    assert!(out.contains("  docs/lost\n"), "{out}");
    let conflicts: Vec<_> = fs::read_dir(s.home(node2).join("georep-conflicts"))
        .unwrap()
        .map(|e| e.unwrap().path().join(VOLUME).join("docs/lost"))
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(fs::read(&conflicts[0]).unwrap(), b"after the stime\n");
    wait_slave_equals_mount(node2, s.slave_dir.path());
    for n in [node1, node2] {
        let brick = n.view(&n.brick()).unwrap();
        assert!(
            brick.join("docs/at-dr").exists() && !brick.join("docs/f1").exists(),
            "{}'s brick does not hold what the mount shows",
            n.name()
        );
    }

    let out = failback(&["--switch"]);
    assert!(out.contains("switched back"), "{out}");
    for n in [node1, node2] {
        wait_one_active(&s, n);
    }
    fs::write(mount.join("docs/after-switch"), b"the master again\n").unwrap();
    wait_slave_equals_mount(node1, s.slave_dir.path());
}
