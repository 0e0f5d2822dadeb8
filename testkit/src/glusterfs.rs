//! A real GlusterFS for tests and benchmarks: installs `glusterfs-server`
//! when missing, starts one `glusterd` with its own working directory
//! (shared by everyone in the process, stopped when the last user is
//! gone), and makes volumes with changelogs on, mounted through FUSE as a
//! client would. Only processes this module started are
//! ever stopped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::process::{find_processes, net_namespace, run_with_timeout, signal, wait_until};
use super::TestkitError;

/// Bound on one `gluster` or `mount` command.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Why GlusterFS cannot run here at all (not root, no FUSE): the caller
/// skips, or fails where skipping is not allowed.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("GlusterFS tests need root (glusterd, FUSE mounts)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("GlusterFS tests need /dev/fuse".into());
    }
    None
}

/// A running glusterd, shared; see [`Glusterd::shared`].
pub struct Glusterd {
    /// The pid of the glusterd this process started; `None` if one was
    /// already running (it is used, never stopped).
    own: Option<i32>,
    /// The host name bricks are created with.
    host: String,
    _dir: tempfile::TempDir,
}

static SHARED: Mutex<Weak<Glusterd>> = Mutex::new(Weak::new());

fn fail(what: impl Into<String>) -> TestkitError {
    TestkitError::Setup(what.into())
}

pub(crate) fn run(cmd: &mut Command) -> Result<String, TestkitError> {
    let shown = format!("{cmd:?}");
    let out = run_with_timeout(cmd, CLI_TIMEOUT).map_err(|e| fail(format!("{shown}: {e}")))?;
    if !out.success() {
        return Err(fail(format!("{shown} failed:\n{out}")));
    }
    Ok(out.stdout_str())
}

/// `gluster --mode=script ARGS…`.
pub fn gluster<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(
    args: I,
) -> Result<String, TestkitError> {
    run(Command::new("gluster").arg("--mode=script").args(args))
}

/// Installs Debian's `glusterfs-server` and `glusterfs-client` if
/// `glusterd` or the FUSE client is missing.
pub fn ensure_installed() -> Result<(), TestkitError> {
    let have = |p: &str| Path::new(p).exists();
    if have("/usr/sbin/glusterd") && have("/usr/sbin/gluster") && have("/sbin/mount.glusterfs") {
        return Ok(());
    }
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args))
    };
    apt(&["update", "-q"])?;
    apt(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "glusterfs-server",
        "glusterfs-client",
    ])?;
    Ok(())
}

impl Glusterd {
    /// The process's glusterd: started on first use (after installing
    /// GlusterFS if needed), stopped when the last `Arc` is dropped.
    pub fn shared() -> Result<Arc<Glusterd>, TestkitError> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = shared.upgrade() {
            return Ok(g);
        }
        let g = Arc::new(Glusterd::start()?);
        *shared = Arc::downgrade(&g);
        Ok(g)
    }

    /// A glusterd on the system's working directory (`/var/lib/glusterd`),
    /// for GlusterFS's own geo-replication: gsyncd reads its session files
    /// there whatever glusterd's working directory is. Started unless one
    /// already runs on it; one running on another working directory (the
    /// shared one of [`Glusterd::shared`]) is an error, never stopped.
    pub fn system() -> Result<Glusterd, TestkitError> {
        let (host, dir) = Self::prepare()?;
        let elsewhere = host_glusterd(|a| {
            a.iter()
                .skip_while(|x| x.as_str() != "-f")
                .nth(1)
                .is_some_and(|f| f != "/etc/glusterfs/glusterd.vol")
        });
        if let Some(pid) = elsewhere {
            return Err(fail(format!(
                "glusterd (pid {pid}) runs with its own volfile, not on /var/lib/glusterd, \
                 which GlusterFS geo-replication needs; wait until it is gone"
            )));
        }
        if host_glusterd(|_| true).is_some() {
            return Ok(Glusterd {
                own: None,
                host,
                _dir: dir,
            });
        }
        Self::spawn(host, dir, None)
    }

    /// Checks that GlusterFS can run, installs it, finds the brick host and
    /// makes the directory for glusterd's pid, log and volfile.
    fn prepare() -> Result<(String, tempfile::TempDir), TestkitError> {
        if let Some(why) = unavailable() {
            return Err(fail(why));
        }
        ensure_installed()?;
        let host = brick_host()?;
        let dir = tempfile::Builder::new()
            .prefix("georep-glusterd-")
            .tempdir()
            .map_err(|e| fail(format!("temporary directory: {e}")))?;
        Ok((host, dir))
    }

    fn start() -> Result<Glusterd, TestkitError> {
        let (host, dir) = Self::prepare()?;
        if host_glusterd(|_| true).is_some() {
            return Ok(Glusterd {
                own: None,
                host,
                _dir: dir,
            });
        }
        let wd = dir.path().join("wd");
        std::fs::create_dir(&wd).map_err(|e| fail(format!("{}: {e}", wd.display())))?;
        let system_vol = std::fs::read_to_string("/etc/glusterfs/glusterd.vol")
            .map_err(|e| fail(format!("/etc/glusterfs/glusterd.vol: {e}")))?;
        let vol = dir.path().join("glusterd.vol");
        let text: String = system_vol
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("option working-directory") {
                    format!("    option working-directory {}", wd.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&vol, text).map_err(|e| fail(format!("{}: {e}", vol.display())))?;
        Self::spawn(host, dir, Some(vol))
    }

    /// Runs glusterd (with the volfile `vol`, or the system's) and waits
    /// until it answers.
    fn spawn(
        host: String,
        dir: tempfile::TempDir,
        vol: Option<PathBuf>,
    ) -> Result<Glusterd, TestkitError> {
        let pidfile = dir.path().join("glusterd.pid");
        let mut cmd = Command::new("glusterd");
        cmd.arg("-p")
            .arg(&pidfile)
            .arg("-l")
            .arg(dir.path().join("glusterd.log"));
        match vol {
            Some(vol) => {
                cmd.arg("-f").arg(vol);
            }
            // The system's glusterd runs gsyncd, whose processes find
            // `python3` and `ssh` through PATH: the system's, as a service
            // manager would give it, not a caller's (a pyenv, say).
            None => {
                cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
            }
        }
        run(&mut cmd)?;
        let pid = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .is_some()
        })
        .ok()
        .and_then(|()| std::fs::read_to_string(&pidfile).ok())
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| fail("glusterd wrote no pid file"))?;
        let g = Glusterd {
            own: Some(pid),
            host,
            _dir: dir,
        };
        wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            gluster(["volume", "list"]).is_ok()
        })
        .map_err(|_| fail("glusterd does not answer `gluster volume list`"))?;
        Ok(g)
    }

    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for Glusterd {
    fn drop(&mut self) {
        if let Some(pid) = self.own {
            signal(pid, rustix::process::Signal::TERM);
            let _ = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
                find_processes(|_| true).iter().all(|p| *p != pid)
            });
        }
    }
}

/// A glusterd already running in this process's network namespace, whose
/// CLI socket a plain `gluster` here reaches: it is used, never stopped.
/// The glusterds of [`crate::cluster`] nodes share the process table but
/// each runs in a network namespace of its own: they are never taken for
/// it, whatever their name. `also` narrows by command line.
fn host_glusterd(also: impl Fn(&[String]) -> bool) -> Option<i32> {
    let own = net_namespace(Path::new("/proc/self/ns/net"))?;
    find_processes(|a| a[0].ends_with("glusterd") && also(a))
        .into_iter()
        .find(|pid| net_namespace(Path::new(&format!("/proc/{pid}/ns/net"))) == Some(own))
}

/// The machine's host name, which GlusterFS needs as brick host (it
/// refuses localhost and 127.0.0.1); it must resolve to an address of
/// this machine, e.g. through a line in /etc/hosts, which is never changed
/// here.
fn brick_host() -> Result<String, TestkitError> {
    let host = hostname_of_machine()?;
    use std::net::ToSocketAddrs;
    let resolves = (host.as_str(), 0)
        .to_socket_addrs()
        .map(|mut a| a.next().is_some())
        .unwrap_or(false);
    if !resolves {
        return Err(fail(format!(
            "the host name {host:?} does not resolve; GlusterFS bricks need it \
             (map it to a loopback address in /etc/hosts)"
        )));
    }
    Ok(host)
}

fn hostname_of_machine() -> Result<String, TestkitError> {
    let out = run(&mut Command::new("hostname"))?;
    let host = out.trim().to_owned();
    if host.is_empty() || host == "localhost" {
        return Err(fail(format!(
            "unusable host name {host:?} for a GlusterFS brick"
        )));
    }
    Ok(host)
}

/// A volume made by the test kit, with `changelog.changelog on` and a
/// one-second rollover; started and mounted with FUSE unless made with
/// [`Volume::define`]. Dropping it unmounts, stops and deletes the volume.
pub struct Volume {
    pub name: String,
    /// The first brick (the only one of a single-brick volume).
    pub brick: PathBuf,
    /// Every brick, in the order the volume lists them.
    pub bricks: Vec<PathBuf>,
    pub mount: PathBuf,
    glusterd: Arc<Glusterd>,
    mounted: bool,
}

impl Volume {
    /// Creates a single-brick `name` with its brick at `dir/brick`, started
    /// and mounted at `dir/mnt`.
    pub fn create(
        glusterd: &Arc<Glusterd>,
        name: &str,
        dir: &Path,
    ) -> Result<Volume, TestkitError> {
        let mut v = Volume::define(glusterd, name, dir, &[], 1)?;
        v.start()?;
        Ok(v)
    }

    /// Starts a volume made with [`Volume::define`] and mounts it with FUSE
    /// at `mount`, as a client would.
    pub fn start(&mut self) -> Result<(), TestkitError> {
        gluster(["volume", "start", &self.name])?;
        run(Command::new("mount")
            .args(["-t", "glusterfs"])
            .arg(format!("{}:/{}", self.glusterd.host(), self.name))
            .arg(&self.mount))?;
        self.mounted = true;
        Ok(())
    }

    /// Creates, without starting it, `name` of `bricks` bricks at
    /// `dir/brick1`… laid out by `shape` (e.g. `["replica", "3", "arbiter",
    /// "1"]`, or nothing for plain distribute). All bricks are on this node,
    /// hence `force`.
    pub fn define(
        glusterd: &Arc<Glusterd>,
        name: &str,
        dir: &Path,
        shape: &[&str],
        bricks: usize,
    ) -> Result<Volume, TestkitError> {
        let paths: Vec<PathBuf> = if bricks == 1 {
            vec![dir.join("brick")]
        } else {
            (1..=bricks)
                .map(|i| dir.join(format!("brick{i}")))
                .collect()
        };
        let mount = dir.join("mnt");
        for d in paths.iter().chain([&mount]) {
            std::fs::create_dir_all(d).map_err(|e| fail(format!("{}: {e}", d.display())))?;
        }
        let v = Volume {
            name: name.to_owned(),
            brick: paths[0].clone(),
            bricks: paths,
            mount,
            glusterd: glusterd.clone(),
            mounted: false,
        };
        let specs = v
            .bricks
            .iter()
            .map(|b| format!("{}:{}", glusterd.host(), b.display()));
        let mut args: Vec<String> = ["volume", "create", name]
            .into_iter()
            .chain(shape.iter().copied())
            .map(str::to_owned)
            .collect();
        args.extend(specs);
        args.push("force".to_owned());
        gluster(&args)?;
        v.set("changelog.changelog", "on")?;
        v.set("changelog.rollover-time", "1")?;
        Ok(v)
    }

    /// `gluster volume set NAME KEY VALUE`.
    pub fn set(&self, key: &str, value: &str) -> Result<(), TestkitError> {
        gluster(["volume", "set", &self.name, key, value]).map(drop)
    }

    /// The brick's GlusterFS changelog files (closed ones), oldest first.
    pub fn changelog_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.brick.join(".glusterfs/changelogs")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() && !p.ends_with("htime") && !p.ends_with("csnap") {
                    stack.push(p);
                } else if e.file_name().to_string_lossy().starts_with("CHANGELOG.") {
                    out.push(p);
                }
            }
        }
        out.sort_by_key(|p| p.file_name().map(|n| n.to_owned()));
        out
    }

    /// How many closed changelogs of the brick replaced an earlier one of
    /// the same second (GlusterFS names them by the second they were
    /// closed in, and two rollovers in one second rename onto one name):
    /// names its HTIME index lists more than once, its first entry aside,
    /// which GlusterFS always lists twice.
    pub fn replaced_changelogs(&self) -> usize {
        let dir = self.brick.join(".glusterfs/changelogs/htime");
        let mut replaced = 0;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(index) = std::fs::read(e.path()) else {
                continue;
            };
            let names: Vec<&[u8]> = index
                .split(|&b| b == 0)
                .filter(|n| !n.is_empty())
                .skip(1)
                .collect();
            replaced += names
                .windows(2)
                .filter(|w| {
                    w[0] == w[1]
                        && w[0]
                            .split(|&b| b == b'/')
                            .next_back()
                            .is_some_and(|n| n.starts_with(b"CHANGELOG."))
                })
                .count();
        }
        replaced
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run(Command::new("umount").arg(&self.mount));
            if find_processes(|a| a.iter().any(|x| Path::new(x) == self.mount)).is_empty() {
                self.mounted = false;
            } else {
                let _ = run(Command::new("umount").arg("-l").arg(&self.mount));
            }
        }
        let _ = gluster(["volume", "stop", &self.name, "force"]);
        let _ = gluster(["volume", "delete", &self.name]);
        let _ = &self.glusterd;
    }
}
