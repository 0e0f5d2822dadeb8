//! One master node of a [`super::Cluster`]: a network, mount and UTS
//! namespace of its own, entered with `nsenter` for every command.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::glusterfs::run;
use crate::process::{net_namespace, processes_in_net_namespace, signal, wait_until};
use crate::TestkitError;

/// How long a node's daemons get to stop on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The environment a node's commands see: nothing of the test's own (its
/// `GEOREP_HOME`, `CARGO_*`…), as a login on that machine would.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn fail(what: impl Into<String>) -> TestkitError {
    TestkitError::Setup(what.into())
}

/// When process `pid` started (clock ticks after boot; `u64::MAX` if it
/// is gone).
fn started(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(19)?
                .parse()
                .ok()
        })
        .unwrap_or(u64::MAX)
}

/// A node: host name `node<N>`, its own address, its own `/run`,
/// `/var/lib/glusterd`, `/var/log/glusterfs`, `/etc/hosts` and `/etc/fstab`
/// (bind mounts inside its mount namespace, over directories under
/// [`Node::dir`]). Its processes are told from every other process on the
/// machine by their network namespace, never by name.
#[derive(Debug)]
pub struct Node {
    name: String,
    addr: Ipv4Addr,
    /// `ip netns` name (unique to the cluster instance).
    netns: String,
    /// Inode of the network namespace, taken when it was made.
    net_ino: u64,
    dir: PathBuf,
    mnt_ns: PathBuf,
    uts_ns: PathBuf,
}

impl Node {
    pub(super) fn new(
        name: String,
        addr: Ipv4Addr,
        netns: String,
        net_ino: u64,
        dir: PathBuf,
        ns_dir: &Path,
    ) -> Node {
        Node {
            mnt_ns: ns_dir.join(format!("{name}.mnt")),
            uts_ns: ns_dir.join(format!("{name}.uts")),
            name,
            addr,
            netns,
            net_ino,
            dir,
        }
    }

    /// The host name, `node1`…, which every node (and the cluster's
    /// bricks) resolve through their `/etc/hosts`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// `/run/netns/<name>`: the node's network namespace.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    pub(super) fn ns_files(&self) -> [&Path; 2] {
        [&self.mnt_ns, &self.uts_ns]
    }

    /// The node's own directory (on the machine's file system, visible
    /// from everywhere): `brick/`, `mnt/`, `home/` and the directories
    /// bound over the node's system paths.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's brick of the cluster's volume (a plain directory,
    /// readable from the test too).
    pub fn brick(&self) -> PathBuf {
        self.dir.join("brick")
    }

    /// Where the cluster's volume is mounted with FUSE inside the node.
    /// The mount exists only in the node's mount namespace: reach it from
    /// the test through [`Node::view`].
    pub fn mount(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// `program` run inside the node (its network, mount and UTS
    /// namespaces) with a clean environment (`PATH`, `HOME`, `LANG`); the
    /// caller adds arguments and variables.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns_path().display()))
            .arg(format!("--mount={}", self.mnt_ns.display()))
            .arg(format!("--uts={}", self.uts_ns.display()))
            .arg("--")
            .arg(program)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        c
    }

    /// `sh -c script` inside the node; its stdout, or an error with its
    /// output.
    pub fn sh(&self, script: &str) -> Result<String, TestkitError> {
        run(self.command("sh").arg("-c").arg(script))
            .map_err(|e| fail(format!("on {}: {e}", self.name)))
    }

    /// `gluster --mode=script ARGS…` against the node's own glusterd.
    pub fn gluster<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(
        &self,
        args: I,
    ) -> Result<String, TestkitError> {
        run(self.command("gluster").arg("--mode=script").args(args))
            .map_err(|e| fail(format!("on {}: {e}", self.name)))
    }

    /// The node's live processes (glusterd, bricks, self-heal daemon, FUSE
    /// clients, and whatever a test started inside it).
    pub fn pids(&self) -> Vec<i32> {
        processes_in_net_namespace(self.net_ino)
    }

    /// `path` as seen inside the node's mount namespace, reachable from
    /// the test (through `/proc/<pid>/root` of one of its processes): the
    /// FUSE mount of [`Node::mount`], for a writer or a comparison. `None`
    /// while no process of the node runs.
    pub fn view(&self, path: &Path) -> Option<PathBuf> {
        let mnt = net_namespace(&self.mnt_ns)?;
        // The oldest one (glusterd, as a rule): a short-lived command's
        // root would vanish under a caller that holds the path a while.
        let pid = self
            .pids()
            .into_iter()
            .filter(|pid| net_namespace(Path::new(&format!("/proc/{pid}/ns/mnt"))) == Some(mnt))
            .min_by_key(|pid| started(*pid))?;
        let rel = path.strip_prefix("/").unwrap_or(path);
        Some(Path::new(&format!("/proc/{pid}/root")).join(rel))
    }

    /// Starts the node's glusterd (its saved state brings back its bricks
    /// and self-heal daemon) and waits until its CLI answers.
    pub fn start_glusterd(&self) -> Result<(), TestkitError> {
        run(self.command("glusterd").args(["-p", "/run/glusterd.pid"]))
            .map_err(|e| fail(format!("on {}: {e}", self.name)))?;
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            self.gluster(["pool", "list"]).is_ok()
        })
        .map_err(|_| fail(format!("glusterd on {} does not answer", self.name)))
    }

    /// Brings a node back after [`Node::kill_all`]: its glusterd (whose
    /// saved state respawns its bricks and self-heal daemon), then the FUSE
    /// mounts of `volume` at [`Node::mount`] and of the shared storage,
    /// which nothing remounts by itself (GlusterFS's
    /// `glusterfssharedstorage` service would).
    pub fn restart(&self, volume: &str) -> Result<(), TestkitError> {
        self.start_glusterd()?;
        self.mount_volume(volume, &self.mount())?;
        self.mount_volume(super::SHARED_VOLUME, Path::new(super::SHARED_STORAGE))
    }

    /// Kills every process of the node at once (SIGKILL), as a power cut
    /// would, and waits until they are gone.
    pub fn kill_all(&self) -> Result<(), TestkitError> {
        self.stop_with(&[rustix::process::Signal::KILL])
    }

    /// SIGTERM, then after [`STOP_GRACE`] SIGKILL, to every process of
    /// the node.
    pub(super) fn stop_all(&self) -> Result<(), TestkitError> {
        self.stop_with(&[rustix::process::Signal::TERM, rustix::process::Signal::KILL])
    }

    fn stop_with(&self, signals: &[rustix::process::Signal]) -> Result<(), TestkitError> {
        for sig in signals {
            for pid in self.pids() {
                signal(pid, *sig);
            }
            if wait_until(STOP_GRACE, Duration::from_millis(50), || {
                self.pids().is_empty()
            })
            .is_ok()
            {
                return Ok(());
            }
        }
        Err(fail(format!(
            "processes {:?} of {} outlived SIGKILL",
            self.pids(),
            self.name
        )))
    }

    /// Mounts `volume` with FUSE at `at` inside the node, from the node's
    /// own glusterd; a dead mount left there (its client killed) is
    /// detached first.
    pub fn mount_volume(&self, volume: &str, at: &Path) -> Result<(), TestkitError> {
        let at = at.display();
        self.sh(&format!(
            "mountpoint -q '{at}' 2>/dev/null && exit 0; umount -l '{at}' 2>/dev/null; \
             mkdir -p '{at}' && mount -t glusterfs {}:/{volume} '{at}'",
            self.name
        ))
        .map(drop)
    }
}
