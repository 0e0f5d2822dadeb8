//! One session for the whole pool: `create … push-pem`, `start`, `stop`,
//! `config` and `delete` run once, on one node, and every master node's
//! agent (`geo-rep agent`) applies them, through the session's definition
//! on the meta-volume. Through the namespace cluster of `tests/nodes.rs`
//! (`georep_testkit::cluster`), with the real shared storage.
//!
//! Needs root and /dev/fuse, as `tests/gluster.rs`: skipped without them,
//! except in CI, where that is a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, Weak};

use georep_testkit::cluster::{Cluster, Node, DR_HOST, SHARED_STORAGE, VOLUME};
use georep_testkit::{wait_until, CommandOutput};
use serde_json::Value;

use crate::common::{GEO_REP, POLL, SYNC_TIMEOUT};
use crate::nodes::{geo_rep_on, roles, wait_rows, wait_slave_equals_mount, write_files};

/// `geo-rep agent` running inside a node with the node's home, logging to
/// `<home>/agent.log`; killed (by its pid) when dropped.
pub(crate) struct Agent {
    child: Child,
}

impl Agent {
    pub(crate) fn start(node: &Node, home: &Path) -> Agent {
        fs::create_dir_all(home).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("agent.log"))
            .unwrap();
        let child = node
            .command(GEO_REP)
            .env("GEOREP_HOME", home)
            .env("GEOREP_LOG", "info")
            .arg("--home")
            .arg(home)
            .arg("agent")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("geo-rep agent on {}: {e}", node.name()));
        Agent { child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `create … push-pem` arguments of a session from `gv0` to `slave`,
/// with the DR site's operator key and authorized_keys.
pub(crate) fn create_args(c: &Cluster, slave: &str) -> Vec<String> {
    let sshd = c.sshd();
    let sshd = sshd.as_ref().unwrap();
    [
        "create",
        VOLUME,
        slave,
        "push-pem",
        "--identity",
        &sshd.operator_key().display().to_string(),
        "--remote-command",
        GEO_REP,
        "--authorized-keys-file",
        &sshd.authorized_keys().display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The process's cluster with an agent on every node, each with the
/// node's `pool-home`: shared by the tests of this file that run at the
/// same time, each with a session of its own.
struct Pool {
    cluster: Arc<Cluster>,
    homes: Vec<PathBuf>,
    _agents: Vec<Agent>,
}

static POOL: Mutex<Weak<Pool>> = Mutex::new(Weak::new());

fn pool() -> Option<Arc<Pool>> {
    let c = crate::nodes::cluster()?;
    let mut shared = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = shared.upgrade() {
        return Some(p);
    }
    let homes: Vec<PathBuf> = c
        .nodes()
        .iter()
        .map(|n| n.dir().join("pool-home"))
        .collect();
    let agents = c
        .nodes()
        .iter()
        .zip(&homes)
        .map(|(n, h)| Agent::start(n, h))
        .collect();
    let p = Arc::new(Pool {
        cluster: c,
        homes,
        _agents: agents,
    });
    *shared = Arc::downgrade(&p);
    Some(p)
}

/// One session of a test, from `gv0` to a directory of its own at the DR
/// site; `home(node)` is the node's home.
struct Session<'a> {
    c: &'a Cluster,
    homes: &'a [PathBuf],
    slave: String,
    slave_dir: tempfile::TempDir,
}

impl<'a> Session<'a> {
    fn new(c: &'a Cluster, homes: &'a [PathBuf]) -> Session<'a> {
        let slave_dir = tempfile::Builder::new()
            .prefix("georep-it-dr-")
            .tempdir()
            .unwrap();
        let slave = format!("root@{DR_HOST}::{}", slave_dir.path().display());
        Session {
            c,
            homes,
            slave,
            slave_dir,
        }
    }

    fn home(&self, node: &Node) -> &Path {
        let i: usize = node.name()["node".len()..].parse().unwrap();
        &self.homes[i - 1]
    }

    /// `geo-rep ARGS…` on `node`, with `VOL SLAVE` after the command name.
    fn run(&self, node: &Node, cmd: &str, rest: &[&str]) -> CommandOutput {
        let mut args = vec![cmd, VOLUME, &self.slave];
        args.extend_from_slice(rest);
        geo_rep_on(node, self.home(node), &args)
    }

    /// Like [`Session::run`], and it must succeed.
    fn ok(&self, node: &Node, cmd: &str, rest: &[&str]) -> String {
        let out = self.run(node, cmd, rest);
        assert!(out.success(), "{cmd} on {}: {out}", node.name());
        out.stdout_str()
    }

    /// `delete` on `node` only, with the operator's key (to remove the
    /// session's keys from the slave).
    fn delete_on(&self, node: &Node) {
        let key = self
            .c
            .sshd()
            .as_ref()
            .unwrap()
            .operator_key()
            .display()
            .to_string();
        let out = self.run(node, "delete", &["--identity", &key]);
        assert!(
            out.success() && !out.stderr_str().contains("warning"),
            "delete on {}: {out}",
            node.name()
        );
    }

    /// `create … push-pem` on `node` only.
    fn create_on(&self, node: &Node) {
        let args = create_args(self.c, &self.slave);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = geo_rep_on(node, self.home(node), &args);
        assert!(out.success(), "create on {}: {out}", node.name());
    }

    fn wait_rows(&self, node: &Node, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        wait_rows(node, self.home(node), &self.slave, what, pred)
    }

    /// Waits until `node` shows a row of every node, one Active and the
    /// other Passive.
    fn wait_one_active(&self, node: &Node) {
        self.wait_rows(node, "node1 and node2, one Active, one Passive", |rows| {
            let r = roles(rows);
            let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
            names == ["node1", "node2"]
                && r.iter().filter(|(_, s)| s == "Active").count() == 1
                && r.iter().filter(|(_, s)| s == "Passive").count() == 1
        });
    }

    /// The lines of the slave's authorized_keys that serve this session's
    /// slave directory.
    fn key_lines(&self) -> usize {
        let keys = self.c.sshd().as_ref().unwrap().authorized_keys().to_owned();
        let dir = format!("'{}'", self.slave_dir.path().display());
        fs::read_to_string(keys)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&dir))
            .count()
    }
}

/// `create … push-pem` and `start`, run once on node1, set the session up
/// on both nodes (each node's own key on the slave, with the forced
/// command): both nodes' rows show, one Active and one Passive, and what
/// is written through a mount reaches the slave. `stop`, run on node2
/// only, stops both nodes' monitors.
#[test]
fn create_and_start_on_one_node_run_the_session_on_every_node() {
    let Some(p) = pool() else { return };
    let c = &p.cluster;
    let s = Session::new(c, &p.homes);
    let (node1, node2) = (c.node(1), c.node(2));
    s.create_on(node1);
    assert_eq!(s.key_lines(), 2, "one key per node on the slave");
    s.ok(node1, "start", &[]);
    for n in [node1, node2] {
        s.wait_one_active(n);
    }
    let mount = node1.view(&node1.mount()).unwrap();
    let top = mount.join(format!("one-{}", std::process::id()));
    write_files(&top, 10, 100, 50);
    // The slave holds this session's copy of the whole volume, which
    // other tests' files share: compare it with the mount.
    wait_slave_equals_mount(node1, s.slave_dir.path());

    s.ok(node2, "stop", &[]);
    for n in [node1, node2] {
        s.wait_rows(n, "every row Stopped", |rows| {
            let r = roles(rows);
            r.len() == 2 && r.iter().all(|(_, st)| st == "Stopped")
        });
    }
    s.delete_on(node1);
    fs::remove_dir_all(&top).unwrap();
}

/// A setting changed on node1 shows on node2 (and a checkpoint set there
/// too); `pause` and `resume` on one node act on both; `delete` on node2
/// removes the session from both nodes and every node's key from the
/// slave.
#[test]
fn config_and_delete_on_one_node_act_on_every_node() {
    let Some(p) = pool() else { return };
    let c = &p.cluster;
    let s = Session::new(c, &p.homes);
    let (node1, node2) = (c.node(1), c.node(2));
    s.create_on(node1);
    s.ok(node1, "config", &["sync-jobs", "5"]);
    let seen = wait_until(SYNC_TIMEOUT, POLL, || {
        s.run(node2, "config", &["sync-jobs"]).stdout_str().trim() == "5"
    });
    assert!(
        seen.is_ok(),
        "node2 never showed sync-jobs 5: {}",
        s.run(node2, "config", &["sync-jobs"])
    );
    s.ok(node2, "config", &["checkpoint", "now"]);
    let at = s.ok(node2, "config", &["checkpoint"]);
    let seen = wait_until(SYNC_TIMEOUT, POLL, || {
        s.run(node1, "config", &["checkpoint"]).stdout_str() == at
    });
    assert!(seen.is_ok(), "node1 never showed the checkpoint {at}");

    s.ok(node1, "start", &[]);
    for n in [node1, node2] {
        s.wait_one_active(n);
    }
    s.ok(node2, "pause", &[]);
    for n in [node1, node2] {
        s.wait_rows(n, "every row Paused", |rows| {
            let r = roles(rows);
            r.len() == 2 && r.iter().all(|(_, st)| st == "Paused")
        });
    }
    s.ok(node1, "resume", &[]);
    for n in [node1, node2] {
        s.wait_one_active(n);
    }
    // The checkpoint (set on node2 before start) completes on both nodes,
    // the one whose brick is Passive too: every node's rows count.
    for n in [node1, node2] {
        let args = ["checkpoint", "wait", VOLUME, &s.slave, "--timeout", "120"];
        let out = geo_rep_on(n, s.home(n), &args);
        assert!(
            out.success() && out.stdout_str().contains("completed on every node"),
            "checkpoint wait on {}: {out}",
            n.name()
        );
    }
    s.ok(node1, "stop", &[]);
    // A running session is refused (as on one node); a stopped one goes.
    assert_eq!(s.key_lines(), 2);
    s.delete_on(node2);
    for n in [node1, node2] {
        let gone = wait_until(SYNC_TIMEOUT, POLL, || {
            let out = s.run(n, "config", &[]);
            !out.success() && out.stderr_str().contains("no session")
        });
        assert!(
            gone.is_ok(),
            "the session stays on {}: {}",
            n.name(),
            s.run(n, "config", &[])
        );
    }
    assert_eq!(s.key_lines(), 0, "a node's key stayed on the slave");
    // Re-created on the other node, it is a new session on both.
    s.create_on(node2);
    assert_eq!(s.key_lines(), 2);
    s.delete_on(node2);
    assert_eq!(s.key_lines(), 0);
}

/// Without node2's agent, `create` on node1 refuses, naming node2 (no key
/// of node2 to install). node2's agent is down while `start` runs on
/// node1: node1 ships alone
/// (Active); when node2's agent comes back it starts node2's share, which
/// joins as Passive. With no meta-volume mounted, the agent says so in
/// its log and keeps waiting. An own cluster: it stops an agent.
#[test]
fn a_node_whose_agent_was_down_starts_its_share_when_it_returns() {
    if !crate::gluster::gluster_can_run() {
        return;
    }
    let c = Cluster::start(2).unwrap_or_else(|e| panic!("cannot build the cluster: {e}"));
    let homes: Vec<PathBuf> = c.nodes().iter().map(|n| n.dir().join("home")).collect();
    let (node1, node2) = (c.node(1), c.node(2));
    let _agent1 = Agent::start(node1, &homes[0]);
    let s = Session::new(&c, &homes);
    // Without node2's agent, node2 publishes no key: `create` refuses,
    // naming it, and leaves nothing behind.
    let args = create_args(&c, &s.slave);
    let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    let out = geo_rep_on(node1, &homes[0], &args);
    assert!(
        !out.success() && out.stderr_str().contains("node2") && out.stderr_str().contains("agent"),
        "create without node2's key: {out}"
    );
    assert_eq!(s.key_lines(), 0);
    assert!(
        !s.run(node1, "config", &[]).success(),
        "node1 kept a session"
    );
    let agent2 = Agent::start(node2, &homes[1]);
    s.create_on(node1);
    // node2's agent sets up node2's share, then goes down.
    let set_up = wait_until(SYNC_TIMEOUT, POLL, || s.run(node2, "config", &[]).success());
    assert!(set_up.is_ok(), "node2's share never appeared");
    drop(agent2);
    s.ok(node1, "start", &[]);
    s.wait_rows(node1, "node1 Active", |rows| {
        roles(rows)
            .iter()
            .any(|(n, st)| n == "node1" && st == "Active")
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let rows = s.wait_rows(node2, "node1's rows", |rows| !rows.is_empty());
    assert!(
        roles(&rows)
            .iter()
            .all(|(n, st)| n != "node2" || st == "Created"),
        "node2 runs without its agent: {rows:?}"
    );
    let _agent2 = Agent::start(node2, &homes[1]);
    for n in [node1, node2] {
        s.wait_one_active(n);
    }
    let mount = node2.view(&node2.mount()).unwrap();
    fs::write(mount.join("after"), b"written on node2").unwrap();
    wait_slave_equals_mount(node2, s.slave_dir.path());

    // The meta-volume goes away under node2's agent: it says so, once.
    node2.sh(&format!("umount -l {SHARED_STORAGE}")).unwrap();
    let log = homes[1].join("agent.log");
    let said = wait_until(SYNC_TIMEOUT, POLL, || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("no meta-volume mounted"))
    });
    assert!(
        said.is_ok(),
        "node2's agent never said the meta-volume is gone:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        text.matches("no meta-volume mounted").count(),
        1,
        "said more than once:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}
