//! A real multi-node GlusterFS cluster on this one machine, for the tests
//! and benchmarks of several master nodes, and a DR site to replicate to.
//!
//! Each master node is a network, mount and UTS namespace of its own
//! (host name `node1`…, address `10.A.B.(10+N)` on a bridge that lives in
//! a namespace of its own), with its own `/run` (glusterd's CLI socket is
//! `/run/glusterd.socket`), `/var/lib/glusterd`, `/var/log/glusterfs`,
//! `/etc/hosts` (naming every node and `dr`) and `/etc/fstab` (the shared
//! storage hook rewrites it), bind-mounted inside its mount namespace from
//! directories under the cluster's root. The stock `glusterd` runs in
//! each, unchanged; the nodes are peer-probed, `gv0` is a replica volume
//! with a brick on every node (replica-2 over `node1` and `node2` for the
//! shared cluster) with changelogs on, mounted with FUSE on every
//! node, and GlusterFS's own shared storage (`gluster volume set all
//! cluster.enable-shared-storage enable`) is mounted by its hook at
//! `/run/gluster/shared_storage` on every node. The DR site is one more
//! network namespace (`dr`, address `10.A.B.100`) running the test kit's
//! [`Sshd`] on port 22, which runs `geo-rep slave` through the forced
//! command as on a real slave host; it shares the machine's file system.
//!
//! What this module starts, and only that, it stops: a node's processes
//! are those of its network namespace (the pid namespace is shared, so a
//! `pidof glusterd` would also list the machine's own and other clusters'),
//! and the namespaces, mounts and directories are the ones it made, named
//! `grc<pid>-<n>-…` after the process that made them. Namespaces left by a
//! test process that died (its pid gone) are removed by the next one.
//!
//! Addresses exist only inside the cluster's namespaces (no route leaves
//! them, nothing is added to the machine's own network), so no cluster
//! clashes with another one or with the machine's glusterd, whose ports
//! are in another network namespace; the subnet still differs per
//! instance, for readable logs.
//!
//! One cluster serves every test of a process that holds it at the same
//! time ([`Cluster::shared`]). Building, using and removing one took 19 s
//! for the 2-node test `nodes::a_file_written_on_node1_is_on_both_nodes_bricks`
//! on a 2-core machine under load 4.9 (about 5 s of it the shared-storage
//! hook's own `sleep 5` on the nodes that did not ask for it, 2-3 s the
//! daemons' SIGTERM grace at the end).

mod node;

pub use node::Node;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::glusterfs::{ensure_installed, run, unavailable};
use crate::process::{net_namespace, processes_in_net_namespace, signal, wait_until};
use crate::{Sshd, TestkitError};

/// The replicated volume every cluster is made with.
pub const VOLUME: &str = "gv0";

/// Where GlusterFS's shared-storage hook mounts `gluster_shared_storage`
/// on every node.
pub const SHARED_STORAGE: &str = "/run/gluster/shared_storage";

/// The volume GlusterFS's shared-storage hook makes.
pub const SHARED_VOLUME: &str = "gluster_shared_storage";

/// The DR site's host name in every node's `/etc/hosts`.
pub const DR_HOST: &str = "dr";

/// Bound on waiting for the cluster to settle (peers, bricks, mounts).
const SETTLE: Duration = Duration::from_secs(120);

/// Prefix of everything a cluster names (netns, directories).
const PREFIX: &str = "grc";

static INSTANCES: AtomicUsize = AtomicUsize::new(0);
static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

fn fail(what: impl Into<String>) -> TestkitError {
    TestkitError::Setup(what.into())
}

/// A running cluster; dropping it stops and removes everything it made.
pub struct Cluster {
    name: String,
    root: PathBuf,
    nodes: Vec<Node>,
    dr_netns: String,
    dr_addr: Ipv4Addr,
    dr_ino: u64,
    sshd: Mutex<Option<Sshd>>,
    /// Network namespaces made so far, to delete (the bridge's first).
    netns: Vec<String>,
    ns_dir_mounted: bool,
}

impl Cluster {
    /// The process's 2-node cluster: made on first use (GlusterFS
    /// installed if needed), removed when the last `Arc` is dropped.
    pub fn shared() -> Result<Arc<Cluster>, TestkitError> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = shared.upgrade() {
            return Ok(c);
        }
        let c = Arc::new(Cluster::start(2)?);
        *shared = Arc::downgrade(&c);
        Ok(c)
    }

    /// A cluster of `nodes` (at least 2) master nodes and the DR site, of
    /// its own: for a test that kills or cuts nodes.
    pub fn start(nodes: usize) -> Result<Cluster, TestkitError> {
        if let Some(why) = unavailable() {
            return Err(fail(why));
        }
        if nodes < 2 {
            return Err(fail(format!(
                "a cluster needs 2 nodes or more, not {nodes}"
            )));
        }
        ensure_installed()?;
        remove_stale();
        let pid = std::process::id();
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{pid}-{n}");
        let root = std::env::temp_dir().join(format!("georep-{name}"));
        let net = [10, 20 + (pid % 200) as u8, (n % 256) as u8];
        let mut c = Cluster {
            name,
            root,
            nodes: Vec::new(),
            dr_netns: String::new(),
            dr_addr: Ipv4Addr::new(net[0], net[1], net[2], 100),
            dr_ino: 0,
            sshd: Mutex::new(None),
            netns: Vec::new(),
            ns_dir_mounted: false,
        };
        c.build(nodes, net)?;
        Ok(c)
    }

    fn build(&mut self, count: usize, net: [u8; 3]) -> Result<(), TestkitError> {
        let ns_dir = self.root.join("ns");
        fs::create_dir_all(&ns_dir).map_err(TestkitError::io(format!("{}", ns_dir.display())))?;
        // unshare binds its namespace files here: that needs a mount of
        // private propagation, or the binds would loop back into the
        // namespaces they name.
        cmd(Command::new("mount")
            .arg("--bind")
            .arg(&ns_dir)
            .arg(&ns_dir))?;
        self.ns_dir_mounted = true;
        cmd(Command::new("mount").arg("--make-private").arg(&ns_dir))?;
        let bridge = self.add_netns("br")?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        let addr = |host: u8| Ipv4Addr::new(net[0], net[1], net[2], host);
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for i in 1..=count {
            hosts.push_str(&format!("{} node{i}\n", addr(10 + i as u8)));
        }
        hosts.push_str(&format!("{} {DR_HOST}\n", self.dr_addr));
        for i in 1..=count {
            let node_name = format!("node{i}");
            let ns = self.add_netns(&node_name)?;
            self.link(&bridge, &ns, i, addr(10 + i as u8))?;
            let ino = net_namespace(&Path::new("/run/netns").join(&ns))
                .ok_or_else(|| fail(format!("no inode for netns {ns}")))?;
            let node = Node::new(
                node_name,
                addr(10 + i as u8),
                ns,
                ino,
                self.root.join(format!("node{i}")),
                &ns_dir,
            );
            make_node(&node, &hosts)?;
            self.nodes.push(node);
        }
        self.dr_netns = self.add_netns("dr")?;
        self.link(&bridge, &self.dr_netns.clone(), 100, self.dr_addr)?;
        self.dr_ino = net_namespace(&self.dr_netns_path())
            .ok_or_else(|| fail("no inode for the DR netns"))?;
        for n in &self.nodes {
            n.start_glusterd()?;
        }
        self.join_peers()?;
        self.make_volume()?;
        self.enable_shared_storage()?;
        let sshd = Sshd::start_in_netns(&self.dr_netns_path(), self.dr_addr)?;
        *self.sshd.lock().unwrap_or_else(|p| p.into_inner()) = Some(sshd);
        Ok(())
    }

    fn add_netns(&mut self, what: &str) -> Result<String, TestkitError> {
        let ns = format!("{}-{what}", self.name);
        ip(&["netns", "add", &ns])?;
        self.netns.push(ns.clone());
        Ok(ns)
    }

    /// A veth pair from the bridge to `ns`, where it is `eth0` with `addr`.
    fn link(
        &self,
        bridge: &str,
        ns: &str,
        port: usize,
        addr: Ipv4Addr,
    ) -> Result<(), TestkitError> {
        let veth = format!("v{port}");
        ip(&[
            "-n", bridge, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", bridge, "link", "set", &veth, "master", "br0", "up"])?;
        // `lo` too: the self-heal daemon talks to `localhost`.
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])
    }

    fn join_peers(&self) -> Result<(), TestkitError> {
        let first = &self.nodes[0];
        for n in &self.nodes[1..] {
            first.gluster(["peer", "probe", n.name()])?;
        }
        let want = self.nodes.len() - 1;
        wait_until(SETTLE, Duration::from_millis(200), || {
            first
                .gluster(["peer", "status"])
                .is_ok_and(|s| s.matches("Peer in Cluster (Connected)").count() == want)
        })
        .map_err(|_| fail(format!("peers of {} never all connected", first.name())))
    }

    fn make_volume(&self) -> Result<(), TestkitError> {
        let first = &self.nodes[0];
        let mut args = vec![
            "volume".to_owned(),
            "create".into(),
            VOLUME.into(),
            "replica".into(),
            self.nodes.len().to_string(),
        ];
        for n in &self.nodes {
            fs::create_dir_all(n.brick())
                .map_err(TestkitError::io(format!("{}", n.brick().display())))?;
            args.push(format!("{}:{}", n.name(), n.brick().display()));
        }
        // Bricks on the root file system.
        args.push("force".into());
        first.gluster(&args)?;
        first.gluster(["volume", "set", VOLUME, "changelog.changelog", "on"])?;
        first.gluster(["volume", "set", VOLUME, "changelog.rollover-time", "1"])?;
        first.gluster(["volume", "start", VOLUME])?;
        for n in &self.nodes {
            n.mount_volume(VOLUME, &n.mount())?;
        }
        Ok(())
    }

    /// GlusterFS's shared storage: the volume `gluster_shared_storage`,
    /// made and mounted on every node by glusterd's hook, asynchronously.
    fn enable_shared_storage(&self) -> Result<(), TestkitError> {
        self.nodes[0].gluster([
            "volume",
            "set",
            "all",
            "cluster.enable-shared-storage",
            "enable",
        ])?;
        let mounted = |n: &Node| n.sh(&format!("mountpoint -q {SHARED_STORAGE}")).is_ok();
        for n in &self.nodes {
            if wait_until(SETTLE / 2, Duration::from_millis(200), || mounted(n)).is_ok() {
                continue;
            }
            // The hook runs once, in the background, and on a loaded
            // machine it was seen to make the volume but not mount it on
            // one node: mount it as the hook would, once the volume runs.
            eprintln!(
                "{SHARED_STORAGE} not mounted on {} by glusterd's hook: mounting it",
                n.name()
            );
            wait_until(SETTLE / 2, Duration::from_millis(500), || {
                let started = n
                    .gluster(["volume", "info", SHARED_VOLUME])
                    .is_ok_and(|info| info.contains("Status: Started"));
                started
                    && (n
                        .mount_volume(SHARED_VOLUME, Path::new(SHARED_STORAGE))
                        .is_ok()
                        || mounted(n))
            })
            .map_err(|_| fail(format!("{SHARED_STORAGE} never mounted on {}", n.name())))?;
        }
        Ok(())
    }

    /// Waits until `gluster volume heal VOLUME info` lists nothing left to
    /// heal on any brick: a node that came back holds what was written
    /// while it was away.
    pub fn wait_healed(&self, volume: &str) -> Result<(), TestkitError> {
        let first = &self.nodes[0];
        let mut last = String::new();
        wait_until(SETTLE, Duration::from_millis(500), || {
            let _ = first.gluster(["volume", "heal", volume]);
            match first.gluster(["volume", "heal", volume, "info"]) {
                Ok(info) => {
                    let counts: Vec<&str> = info
                        .lines()
                        .filter_map(|l| l.strip_prefix("Number of entries:"))
                        .map(str::trim)
                        .collect();
                    last = info.clone();
                    !counts.is_empty() && counts.iter().all(|c| *c == "0")
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        })
        .map_err(|_| fail(format!("{volume} never healed; last heal info:\n{last}")))
    }

    /// The process-unique name of this cluster (prefix of its netns).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// `node1` is `node(1)`.
    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n - 1]
    }

    /// The DR site's sshd (port 22 of [`Cluster::dr_addr`], reached as
    /// [`DR_HOST`] from the nodes), to stop, start again or read keys.
    pub fn sshd(&self) -> MutexGuard<'_, Option<Sshd>> {
        self.sshd.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dr_addr(&self) -> Ipv4Addr {
        self.dr_addr
    }

    pub fn dr_netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.dr_netns)
    }

    /// The DR site's live processes (sshd and the slaves it runs).
    pub fn dr_pids(&self) -> Vec<i32> {
        processes_in_net_namespace(self.dr_ino)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut sshd) = self.sshd.get_mut().ok().and_then(Option::take) {
            sshd.stop();
        }
        for pid in self.dr_pids() {
            signal(pid, rustix::process::Signal::KILL);
        }
        for n in &self.nodes {
            if let Err(e) = n.stop_all() {
                eprintln!("cluster {}: {e}", self.name);
            }
            for f in n.ns_files() {
                let _ = cmd(Command::new("umount").arg(f));
            }
        }
        for ns in self.netns.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        if self.ns_dir_mounted {
            let _ = cmd(Command::new("umount").arg(self.root.join("ns")));
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A node's directories, files and namespaces, entered once from the
/// machine's mount namespace so the namespace files stay bound there.
fn make_node(node: &Node, hosts: &str) -> Result<(), TestkitError> {
    let d = node.dir();
    for sub in ["run/gluster", "lib", "log", "brick", "mnt", "home"] {
        let p = d.join(sub);
        fs::create_dir_all(&p).map_err(TestkitError::io(format!("{}", p.display())))?;
    }
    // glusterd's hooks (shared storage among them) and option groups.
    for sub in ["hooks", "groups"] {
        cmd(Command::new("cp")
            .arg("-a")
            .arg(Path::new("/var/lib/glusterd").join(sub))
            .arg(d.join("lib")))?;
    }
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        fs::write(&p, text).map_err(TestkitError::io(format!("{}", p.display())))
    };
    write("hosts", hosts)?;
    write(
        "fstab",
        &fs::read_to_string("/etc/fstab").unwrap_or_default(),
    )?;
    for f in node.ns_files() {
        write_empty(f)?;
    }
    let [mnt, uts] = node.ns_files();
    let d = d.display();
    // The new mount namespace starts as a copy of the machine's: other
    // clusters' namespace files and FUSE mounts are detached from it, so
    // it keeps none of them alive.
    let script = format!(
        "set -e; hostname {name}; \
         awk '$3 == \"nsfs\" || $3 ~ /^fuse/ {{ print $2 }}' /proc/self/mounts \
           | while read -r m; do umount -l \"$m\" 2>/dev/null || true; done; \
         mount --bind {d}/run /run; mount --bind {d}/lib /var/lib/glusterd; \
         mount --bind {d}/log /var/log/glusterfs; mount --bind {d}/hosts /etc/hosts; \
         mount --bind {d}/fstab /etc/fstab",
        name = node.name()
    );
    cmd(Command::new("nsenter")
        .arg(format!("--net={}", node.netns_path().display()))
        .arg("--")
        .arg("unshare")
        .arg(format!("--mount={}", mnt.display()))
        .arg(format!("--uts={}", uts.display()))
        .args(["--propagation", "private", "sh", "-c", &script]))
    .map(drop)
}

fn write_empty(p: &Path) -> Result<(), TestkitError> {
    fs::write(p, b"").map_err(TestkitError::io(format!("{}", p.display())))
}

fn cmd(c: &mut Command) -> Result<String, TestkitError> {
    run(c)
}

fn ip(args: &[&str]) -> Result<(), TestkitError> {
    cmd(Command::new("ip").args(args)).map(drop)
}

/// Removes what clusters of test processes that are gone left behind:
/// their processes (found by network namespace), namespaces and mounts.
fn remove_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    let mut stale: Vec<(String, String)> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let instance = name
            .rsplit_once('-')
            .map_or(name.clone(), |(i, _)| i.to_owned());
        stale.push((instance, name));
    }
    for (_, ns) in &stale {
        if let Some(ino) = net_namespace(&Path::new("/run/netns").join(ns)) {
            for pid in processes_in_net_namespace(ino) {
                signal(pid, rustix::process::Signal::KILL);
            }
        }
    }
    let mut instances: Vec<&String> = stale.iter().map(|(i, _)| i).collect();
    instances.sort();
    instances.dedup();
    for i in instances {
        let root = std::env::temp_dir().join(format!("georep-{i}"));
        for e in fs::read_dir(root.join("ns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = cmd(Command::new("umount").arg(e.path()));
        }
        let _ = cmd(Command::new("umount").arg(root.join("ns")));
        let _ = fs::remove_dir_all(&root);
    }
    for (_, ns) in &stale {
        let _ = ip(&["netns", "del", ns]);
    }
}
