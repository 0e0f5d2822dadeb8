//! A throwaway OpenSSH server on 127.0.0.1.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::run_with_timeout;
use super::TestkitError;

const SSHD: &str = "/usr/sbin/sshd";
const PRIVSEP_DIR: &str = "/run/sshd";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const BIND_ATTEMPTS: usize = 5;

/// An `sshd -D` child process listening on 127.0.0.1 with its own host key,
/// `authorized_keys` and config in a temporary directory. The operator key
/// pair it creates is authorized without restrictions (it plays the admin's
/// own key that `geo-rep create … push-pem` connects with). TCP forwarding is
/// allowed by the config, so a test that sees forwarding refused proves the
/// key's `restrict` option did it.
///
/// Dropping it kills and reaps the daemon; connections already open are
/// served by their own sshd processes until they end.
#[derive(Debug)]
pub struct Sshd {
    port: u16,
    /// The address it listens on, and the network namespace it runs in
    /// (`None`: the test's own, on 127.0.0.1).
    host: String,
    netns: Option<PathBuf>,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    host_key: PathBuf,
    operator_key: PathBuf,
    authorized_keys: PathBuf,
    // Last: removed after the daemon is gone.
    dir: TempDir,
}

impl Sshd {
    /// Generates keys and config, starts sshd on a free port and waits until
    /// it answers with an `SSH-2.0` banner.
    pub fn start() -> Result<Sshd, TestkitError> {
        Sshd::start_at(None)
    }

    /// Starts sshd on port 22 of `addr` inside the network namespace
    /// `netns` (a `/run/netns/…` path), as the SSH server of a remote site
    /// (see [`crate::cluster`]). The port is the namespace's own, so no
    /// other process can hold it; readiness is our daemon's own log line
    /// (no banner probe: the address is not reachable from the test's
    /// namespace).
    pub fn start_in_netns(netns: &Path, addr: std::net::Ipv4Addr) -> Result<Sshd, TestkitError> {
        Sshd::start_at(Some((netns.to_owned(), addr)))
    }

    fn start_at(at: Option<(PathBuf, std::net::Ipv4Addr)>) -> Result<Sshd, TestkitError> {
        ensure_privsep_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("georep-sshd-")
            .tempdir()
            .map_err(TestkitError::io("create sshd temporary directory"))?;
        let root = dir.path().to_path_buf();
        let host_key = root.join("ssh_host_ed25519_key");
        let operator_key = root.join("operator_ed25519");
        let authorized_keys = root.join("authorized_keys");
        keygen(&host_key, "georep-test-host")?;
        keygen(&operator_key, "georep-test-operator")?;
        let operator_pub = read_to_string(&pub_path(&operator_key))?;
        fs::write(&authorized_keys, operator_pub.as_bytes()).map_err(TestkitError::io(format!(
            "write {}",
            authorized_keys.display()
        )))?;
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o600)).map_err(
            TestkitError::io(format!("chmod {}", authorized_keys.display())),
        )?;
        let (host, netns) = match at {
            Some((ns, addr)) => (addr.to_string(), Some(ns)),
            None => ("127.0.0.1".to_owned(), None),
        };
        let mut sshd = Sshd {
            port: 0,
            host,
            netns,
            child: None,
            config: root.join("sshd_config"),
            log: root.join("sshd.log"),
            host_key,
            operator_key,
            authorized_keys,
            dir,
        };
        let mut last_err = None;
        if sshd.netns.is_some() {
            sshd.port = 22;
            sshd.write_config()?;
            sshd.spawn_and_wait()?;
            return Ok(sshd);
        }
        for _ in 0..BIND_ATTEMPTS {
            sshd.port = free_port()?;
            sshd.write_config()?;
            match sshd.spawn_and_wait() {
                Ok(()) => return Ok(sshd),
                // Another process took the port between our probe and
                // sshd's bind: pick another one.
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// The TCP port on [`Sshd::host`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host the daemon listens on, as a client should name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The user clients log in as (the daemon runs as root).
    pub fn user(&self) -> &'static str {
        "root"
    }

    /// The host public key as an OpenSSH line (`ssh-ed25519 AAAA… comment`).
    pub fn host_key_pub(&self) -> String {
        read_to_string(&pub_path(&self.host_key))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    /// The current host key's `SHA256:…` fingerprint, as `ssh-keygen -l`
    /// prints it.
    pub fn host_key_fingerprint(&self) -> Result<String, TestkitError> {
        fingerprint(&pub_path(&self.host_key))
    }

    /// The operator's private key (authorized without restrictions).
    pub fn operator_key(&self) -> &Path {
        &self.operator_key
    }

    /// `GEOREP_HOME` of every session this daemon runs (`SetEnv`): a slave
    /// keeps its state there.
    pub fn slave_home(&self) -> std::path::PathBuf {
        self.dir.path().join("slave-home")
    }

    /// The `authorized_keys` file this daemon reads (`AuthorizedKeysFile`).
    pub fn authorized_keys(&self) -> &Path {
        &self.authorized_keys
    }

    /// The temporary directory holding keys, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log (`-E`), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the daemon process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the daemon (the port is closed until [`Sshd::start_again`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same port with the same keys.
    pub fn start_again(&mut self) -> Result<(), TestkitError> {
        self.stop();
        // The port was ours a moment ago; retry briefly in case the kernel
        // has not let go of it yet.
        let mut last = None;
        for _ in 0..BIND_ATTEMPTS {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            thread::sleep(Duration::from_millis(200));
        }
        Err(last.expect("at least one attempt"))
    }

    /// Replaces the host key with a fresh one and restarts on the same port:
    /// what a client sees when the slave was reinstalled, or an attacker sits
    /// in between.
    pub fn restart_with_new_host_key(&mut self) -> Result<(), TestkitError> {
        self.replace_host_key("ed25519", "georep-test-host-new", None)
    }

    /// Replaces the host key with an RSA key that the daemon signs with
    /// SHA-1 only (`ssh-rsa`, as sshd before 7.2 did) and restarts on the
    /// same port.
    pub fn restart_with_sha1_rsa_host_key(&mut self) -> Result<(), TestkitError> {
        self.replace_host_key(
            "rsa",
            "georep-test-host-rsa",
            Some("HostKeyAlgorithms ssh-rsa"),
        )
    }

    /// A new host key of type `kind`, `config` added to the daemon's, and
    /// a restart on the same port.
    fn replace_host_key(
        &mut self,
        kind: &str,
        comment: &str,
        config: Option<&str>,
    ) -> Result<(), TestkitError> {
        self.stop();
        for p in [self.host_key.clone(), pub_path(&self.host_key)] {
            fs::remove_file(&p).map_err(TestkitError::io(format!("remove {}", p.display())))?;
        }
        keygen_of(kind, &self.host_key, comment)?;
        if let Some(line) = config {
            let mut cfg = read_to_string(&self.config)?;
            let _ = writeln!(cfg, "{line}");
            fs::write(&self.config, cfg)
                .map_err(TestkitError::io(format!("write {}", self.config.display())))?;
        }
        self.start_again()
    }

    /// The system `ssh` client aimed at this daemon as root with `key` only,
    /// without touching any known_hosts file. The caller appends options and
    /// the remote command.
    pub fn ssh_command(&self, key: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-p")
            .arg(self.port.to_string())
            .arg("-i")
            .arg(key)
            .args([
                "-F",
                "/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=20",
            ])
            .arg(format!("{}@{}", self.user(), self.host()));
        cmd
    }

    fn write_config(&self) -> Result<(), TestkitError> {
        let mut cfg = String::new();
        let d = self.dir.path();
        let _ = writeln!(
            cfg,
            "# georep testkit: throwaway sshd, never the system one"
        );
        let _ = writeln!(cfg, "ListenAddress {}", self.host);
        let _ = writeln!(cfg, "Port {}", self.port);
        let _ = writeln!(cfg, "HostKey {}", self.host_key.display());
        let _ = writeln!(cfg, "AuthorizedKeysFile {}", self.authorized_keys.display());
        // The slave's own state (e.g. where it mounts a slave volume) stays
        // in this daemon's directory, never the machine's /var/lib/georep.
        let _ = writeln!(cfg, "SetEnv GEOREP_HOME={}", self.slave_home().display());
        let _ = writeln!(cfg, "PubkeyAuthentication yes");
        let _ = writeln!(cfg, "PasswordAuthentication no");
        let _ = writeln!(cfg, "KbdInteractiveAuthentication no");
        let _ = writeln!(cfg, "PermitRootLogin prohibit-password");
        let _ = writeln!(cfg, "StrictModes no");
        let _ = writeln!(cfg, "UsePAM no");
        let _ = writeln!(cfg, "PidFile {}", d.join("sshd.pid").display());
        let _ = writeln!(cfg, "LogLevel VERBOSE");
        let _ = writeln!(cfg, "AllowTcpForwarding yes");
        let _ = writeln!(cfg, "PermitTTY yes");
        let _ = writeln!(cfg, "PrintMotd no");
        let _ = writeln!(cfg, "PrintLastLog no");
        let _ = writeln!(cfg, "UseDNS no");
        let _ = writeln!(cfg, "MaxStartups 100:30:200");
        let _ = writeln!(cfg, "MaxSessions 100");
        fs::write(&self.config, cfg)
            .map_err(TestkitError::io(format!("write {}", self.config.display())))
    }

    fn spawn_and_wait(&mut self) -> Result<(), TestkitError> {
        // A fresh log per attempt, so "Server listening" below is this run's.
        let _ = fs::remove_file(&self.log);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(SSHD);
                c
            }
            None => Command::new(SSHD),
        };
        let child = cmd
            .arg("-D")
            .arg("-f")
            .arg(&self.config)
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(TestkitError::io(format!(
                "start {SSHD} (is openssh-server installed? .ci/run installs it)"
            )))?;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(why) => {
                self.stop();
                Err(TestkitError::SshdNotReady {
                    port: self.port,
                    why,
                    log_path: self.log.clone(),
                    log: self.log(),
                })
            }
        }
    }

    /// Ready = our process is alive, its log says it listens on our port
    /// (so the banner below is not another test's sshd that won a port
    /// race), and the port answers with an SSH-2.0 banner.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let listening = format!("Server listening on {} port {}", self.host, self.port);
        let in_netns = self.netns.is_some();
        let probe = move |port| if in_netns { Ok(()) } else { banner(port) };
        loop {
            if let Some(child) = &mut self.child {
                match child.try_wait() {
                    Ok(Some(status)) => return Err(format!("sshd exited early ({status})")),
                    Ok(None) => {}
                    Err(e) => return Err(format!("cannot wait for sshd: {e}")),
                }
            }
            if self.log().contains(&listening) && probe(self.port).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why = match probe(self.port) {
                    Ok(()) => "its log never said it was listening".to_owned(),
                    Err(e) => format!("no SSH banner: {e}"),
                };
                return Err(format!("not ready after {READY_TIMEOUT:?}: {why}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn banner(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 8 {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    // Say goodbye politely so sshd logs a plain disconnect.
    let _ = s.write_all(b"SSH-2.0-georep-testkit-probe\r\n");
    if got.starts_with(b"SSH-2.0") {
        Ok(())
    } else {
        Err(format!(
            "unexpected banner {:?}",
            String::from_utf8_lossy(&got)
        ))
    }
}

fn free_port() -> Result<u16, TestkitError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(TestkitError::io("bind 127.0.0.1:0"))?;
    let port = l
        .local_addr()
        .map_err(TestkitError::io("local address of probe listener"))?
        .port();
    Ok(port)
}

/// sshd refuses to start without its privilege separation directory; a
/// fresh container does not have it until the service first runs.
fn ensure_privsep_dir() -> Result<(), TestkitError> {
    let p = Path::new(PRIVSEP_DIR);
    if !p.is_dir() {
        fs::create_dir_all(p).map_err(TestkitError::io(format!("create {PRIVSEP_DIR}")))?;
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))
            .map_err(TestkitError::io(format!("chmod {PRIVSEP_DIR}")))?;
    }
    Ok(())
}

fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn read_to_string(p: &Path) -> Result<String, TestkitError> {
    fs::read_to_string(p).map_err(TestkitError::io(format!("read {}", p.display())))
}

fn keygen(path: &Path, comment: &str) -> Result<(), TestkitError> {
    keygen_of("ed25519", path, comment)
}

fn keygen_of(kind: &str, path: &Path, comment: &str) -> Result<(), TestkitError> {
    let out = run_with_timeout(
        Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
            .arg(path),
        Duration::from_secs(60),
    )?;
    if !out.success() {
        return Err(TestkitError::Command {
            what: format!("ssh-keygen -f {}", path.display()),
            status: out.status.to_string(),
            stderr: out.stderr_str(),
        });
    }
    Ok(())
}

/// `SHA256:…` of a public key file, via `ssh-keygen -l`.
fn fingerprint(pub_key: &Path) -> Result<String, TestkitError> {
    let out = run_with_timeout(
        Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(pub_key),
        Duration::from_secs(60),
    )?;
    let line = out.stdout_str();
    line.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .map(str::to_owned)
        .ok_or_else(|| TestkitError::Command {
            what: format!("ssh-keygen -l -f {}", pub_key.display()),
            status: out.status.to_string(),
            stderr: format!("no SHA256 fingerprint in {line:?}: {}", out.stderr_str()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn operator_key_logs_in_and_runs_a_command() {
        let sshd = Sshd::start().unwrap();
        let out =
            run_with_timeout(sshd.ssh_command(sshd.operator_key()).arg("echo hello"), T).unwrap();
        assert!(out.success(), "{out}\n{}", sshd.log());
        assert_eq!(out.stdout_str(), "hello\n");
        let out = run_with_timeout(sshd.ssh_command(sshd.operator_key()).arg("true"), T).unwrap();
        assert!(out.success(), "{out}");
    }

    #[test]
    fn a_key_that_is_not_authorized_is_refused() {
        let sshd = Sshd::start().unwrap();
        let stranger = sshd.dir().join("stranger");
        keygen(&stranger, "stranger").unwrap();
        let out = run_with_timeout(sshd.ssh_command(&stranger).arg("true"), T).unwrap();
        assert!(!out.success(), "{out}");
        assert!(out.stderr_str().contains("Permission denied"), "{out}");
    }

    #[test]
    fn files_live_in_the_temporary_directory_and_vanish_on_drop() {
        let sshd = Sshd::start().unwrap();
        let dir = sshd.dir().to_path_buf();
        for p in [sshd.operator_key(), sshd.authorized_keys()] {
            assert!(p.starts_with(&dir), "{}", p.display());
            assert!(p.is_file());
        }
        assert!(sshd.host_key_pub().starts_with("ssh-ed25519 "));
        assert!(sshd.host_key_fingerprint().unwrap().starts_with("SHA256:"));
        drop(sshd);
        assert!(!dir.exists());
    }

    #[test]
    fn new_host_key_keeps_the_port_and_changes_the_fingerprint() {
        let mut sshd = Sshd::start().unwrap();
        let port = sshd.port();
        let before = sshd.host_key_fingerprint().unwrap();
        sshd.restart_with_new_host_key().unwrap();
        assert_eq!(sshd.port(), port);
        assert_ne!(sshd.host_key_fingerprint().unwrap(), before);
        let out = run_with_timeout(sshd.ssh_command(sshd.operator_key()).arg("true"), T).unwrap();
        assert!(out.success(), "{out}");
    }

    #[test]
    fn stop_closes_the_port_and_start_again_reopens_it() {
        let mut sshd = Sshd::start().unwrap();
        sshd.stop();
        assert!(!sshd.is_running());
        let out = run_with_timeout(sshd.ssh_command(sshd.operator_key()).arg("true"), T).unwrap();
        assert!(!out.success());
        sshd.start_again().unwrap();
        assert!(sshd.is_running());
        let out = run_with_timeout(sshd.ssh_command(sshd.operator_key()).arg("true"), T).unwrap();
        assert!(out.success(), "{out}");
    }

    #[test]
    fn the_config_allows_forwarding_so_only_a_key_restriction_can_block_it() {
        // Control for the security tests: with the unrestricted operator key,
        // `-L` forwarding through this sshd works.
        let sshd = Sshd::start().unwrap();
        let local = free_port().unwrap();
        let mut fwd = sshd
            .ssh_command(sshd.operator_key())
            .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
            .arg(format!("127.0.0.1:{local}:127.0.0.1:{}", sshd.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let got = crate::wait_for(T, Duration::from_millis(50), || banner(local).ok());
        let _ = fwd.kill();
        let _ = fwd.wait();
        got.unwrap_or_else(|e| panic!("forwarding with the operator key failed: {e}"));
    }
}
