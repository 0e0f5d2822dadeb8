//! Glue between the scenarios and the test kit: one [`Scenario`] per test,
//! each with its own sshd, `GEOREP_HOME`, brick and slave directory, so tests
//! run in parallel. All waiting is bounded by generous timeouts; no test
//! asserts how long anything took.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use georep_testkit::{run_with_timeout, wait_for, CommandOutput, Sshd};
use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const GEO_REP: &str = env!("CARGO_BIN_EXE_geo-rep");
/// Bound for one `geo-rep` command (create/start/stop/status).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for waiting until the slave has caught up.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(90);
pub const POLL: Duration = Duration::from_millis(200);

/// A finished `geo-rep` run.
pub struct Run(pub CommandOutput);

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.0.code()
    }
    pub fn stdout(&self) -> String {
        self.0.stdout_str()
    }
    pub fn stderr(&self) -> String {
        self.0.stderr_str()
    }

    /// Exit 0, and never a panic.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.no_panic();
        assert_eq!(self.code(), Some(0), "expected success\n{}", self.0);
        self
    }

    /// Exit `code`, an error on stderr in the form `geo-rep: <what>: <cause>`,
    /// and never a panic.
    #[track_caller]
    pub fn fails_with(self, code: i32) -> Self {
        self.no_panic();
        assert_eq!(self.code(), Some(code), "expected exit {code}\n{}", self.0);
        let err = self.stderr();
        assert!(
            err.lines().any(|l| l.starts_with("geo-rep: ")),
            "expected a `geo-rep: <what>: <cause>` line on stderr\n{}",
            self.0
        );
        self
    }

    /// Exit 2 (usage error) with something on stderr, and never a panic.
    /// (The `geo-rep: ` prefix is not required here: argument parsers print
    /// their own usage errors.)
    #[track_caller]
    pub fn usage_error(self) -> Self {
        self.no_panic();
        assert_eq!(
            self.code(),
            Some(2),
            "expected usage error (exit 2)\n{}",
            self.0
        );
        assert!(
            !self.stderr().trim().is_empty(),
            "expected a message on stderr\n{}",
            self.0
        );
        self
    }

    /// stderr mentions `needle` (case-insensitive).
    #[track_caller]
    pub fn stderr_mentions(self, needle: &str) -> Self {
        assert!(
            self.stderr()
                .to_lowercase()
                .contains(&needle.to_lowercase()),
            "expected stderr to mention {needle:?}\n{}",
            self.0
        );
        self
    }

    #[track_caller]
    fn no_panic(&self) {
        assert!(
            !self.stderr().contains("panicked") && !self.stdout().contains("panicked"),
            "geo-rep panicked\n{}",
            self.0
        );
    }
}

/// A master volume with one brick and its slave directory behind a loopback
/// sshd. Dropping it runs `geo-rep stop … force`, so no monitor outlives the
/// test, then stops sshd and removes the directories.
pub struct Scenario {
    pub vol: String,
    pub home: PathBuf,
    pub brick: PathBuf,
    pub slave: PathBuf,
    pub sshd: Sshd,
    /// Further sessions (volume, slave URL) to stop when the scenario ends.
    others: std::cell::RefCell<Vec<(String, String)>>,
    tmp: TempDir,
}

impl Scenario {
    pub fn new() -> Scenario {
        let tmp = tempfile::Builder::new()
            .prefix("georep-it-")
            .tempdir()
            .expect("temporary directory");
        let home = tmp.path().join("home");
        let brick = tmp.path().join("brick");
        let slave = tmp.path().join("slave");
        for d in [&home, &brick, &slave] {
            fs::create_dir(d).expect("create scenario directory");
        }
        let sshd = Sshd::start().unwrap_or_else(|e| panic!("cannot start sshd: {e}"));
        Scenario {
            vol: "gv0".to_owned(),
            home,
            brick,
            slave,
            sshd,
            others: Default::default(),
            tmp,
        }
    }

    /// `root@127.0.0.1::<dir>` for another slave directory on the same sshd.
    pub fn slave_url_of(&self, dir: &Path) -> String {
        format!(
            "{}@{}::{}",
            self.sshd.user(),
            self.sshd.host(),
            dir.display()
        )
    }

    /// `create VOL SLAVE push-pem [force] --brick …` for a session other
    /// than the scenario's own; it is stopped when the scenario ends.
    pub fn create_other(&self, vol: &str, bricks: &[&Path], slave_url: &str, force: bool) -> Run {
        let mut args = self.create_args(bricks, slave_url, force);
        args[1] = vol.to_owned();
        self.others
            .borrow_mut()
            .push((vol.to_owned(), slave_url.to_owned()));
        self.geo_rep(args)
    }

    /// `status VOL SLAVE --json`, parsed.
    #[track_caller]
    pub fn status_json_of(&self, vol: &str, slave_url: &str) -> Vec<Value> {
        let run = self.geo_rep(["status", vol, slave_url, "--json"]).ok();
        match serde_json::from_str::<Value>(&run.stdout()) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("status --json is not a JSON array ({other:?})\n{}", run.0),
        }
    }

    /// Waits until every brick of `vol` -> `slave_url` has an stime later
    /// than `t`.
    pub fn wait_synced_past_of(&self, vol: &str, slave_url: &str, t: SystemTime) {
        let t_ns = nanos(t);
        let mut last = Vec::new();
        let r = wait_for(SYNC_TIMEOUT, POLL, || {
            last = self.status_json_of(vol, slave_url);
            synced_and_idle(&last, t_ns).then_some(())
        });
        if let Err(e) = r {
            panic!(
                "stime of {vol} -> {slave_url} never passed {t_ns}: {e}\nlast status: {}\n{}",
                pretty(&last),
                self.diagnostics()
            );
        }
    }

    /// Waits until `pred` holds for the JSON status rows of the scenario's
    /// session; returns them.
    pub fn wait_status(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut last = Vec::new();
        let r = wait_for(SYNC_TIMEOUT, POLL, || {
            last = self.status_json();
            pred(&last).then_some(())
        });
        if let Err(e) = r {
            panic!(
                "status never showed {what}: {e}\nlast status: {}\n{}",
                pretty(&last),
                self.diagnostics()
            );
        }
        last
    }

    /// The lines of the slave's authorized_keys that carry a georep session
    /// key (comment `georep:…`).
    pub fn session_key_lines(&self) -> Vec<String> {
        fs::read_to_string(self.sshd.authorized_keys())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("georep:"))
            .map(str::to_owned)
            .collect()
    }

    /// A scratch path inside the scenario's directory (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `root@127.0.0.1::<slave dir>`.
    pub fn slave_url(&self) -> String {
        format!(
            "{}@{}::{}",
            self.sshd.user(),
            self.sshd.host(),
            self.slave.display()
        )
    }

    /// `geo-rep --home <home> <args…>`, also with `GEOREP_HOME` set so a
    /// product that ignored `--home` still could not touch /var/lib/georep.
    pub fn geo_rep<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.geo_rep_through(&[], args)
    }

    /// [`Scenario::geo_rep`] started by `wrapper`, a command line that ends
    /// by executing the arguments it is given (e.g. `unshare … sh -c '…;
    /// exec "$@"' sh`), so a monitor it starts lives where the wrapper put it.
    pub fn geo_rep_through<I, S>(&self, wrapper: &[&str], args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(GEO_REP);
                c
            }
            None => Command::new(GEO_REP),
        };
        // HOME too: the operator's ~/.ssh (known_hosts, default keys) is the
        // scenario's own, never the machine's.
        cmd.env("GEOREP_HOME", &self.home)
            .env("HOME", self.tmp.path())
            .env_remove("SSH_AUTH_SOCK")
            .arg("--home")
            .arg(&self.home)
            .args(args);
        let out = run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("running geo-rep: {e}"));
        Run(out)
    }

    /// The arguments `create` needs to reach this scenario's sshd with the
    /// operator key, given the brick and slave URL.
    pub fn create_args(&self, bricks: &[&Path], slave_url: &str, force: bool) -> Vec<String> {
        self.create_args_port(bricks, slave_url, force, self.sshd.port())
    }

    /// [`Scenario::create_args`] aimed at another port.
    pub fn create_args_port(
        &self,
        bricks: &[&Path],
        slave_url: &str,
        force: bool,
        port: u16,
    ) -> Vec<String> {
        let mut a = vec![
            "create".to_owned(),
            self.vol.clone(),
            slave_url.to_owned(),
            "push-pem".to_owned(),
        ];
        if force {
            a.push("force".to_owned());
        }
        for b in bricks {
            a.push("--brick".to_owned());
            a.push(b.display().to_string());
        }
        a.extend([
            "--ssh-port".to_owned(),
            port.to_string(),
            "--identity".to_owned(),
            self.sshd.operator_key().display().to_string(),
            "--remote-command".to_owned(),
            GEO_REP.to_owned(),
            "--authorized-keys-file".to_owned(),
            self.sshd.authorized_keys().display().to_string(),
        ]);
        a
    }

    /// `create gv0 root@127.0.0.1::<slave> push-pem [force] --brick <brick> …`.
    pub fn create(&self, force: bool) -> Run {
        self.geo_rep(self.create_args(&[&self.brick], &self.slave_url(), force))
    }

    pub fn start(&self) -> Run {
        self.geo_rep(["start", &self.vol, &self.slave_url()])
    }

    pub fn stop(&self) -> Run {
        self.geo_rep(["stop", &self.vol, &self.slave_url()])
    }

    /// `status gv0 <slave> --json`, parsed: one object per brick.
    #[track_caller]
    pub fn status_json(&self) -> Vec<Value> {
        let run = self
            .geo_rep(["status", &self.vol, &self.slave_url(), "--json"])
            .ok();
        match serde_json::from_str::<Value>(&run.stdout()) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("status --json is not a JSON array ({other:?})\n{}", run.0),
        }
    }

    /// `create` then `start`, then wait until every brick is Active with an
    /// stime.
    pub fn create_and_start(&self, force: bool) {
        self.create_and_start_with(force, &[]);
    }

    /// [`Scenario::create_and_start`] with more options for `create` (e.g.
    /// the slave policy's).
    pub fn create_and_start_with(&self, force: bool, extra: &[&str]) {
        let mut args = self.create_args(&[&self.brick], &self.slave_url(), force);
        args.extend(extra.iter().map(|a| a.to_string()));
        self.geo_rep(args).ok();
        self.start().ok();
        self.wait_active();
    }

    /// Waits until every brick shows `status == "Active"` and a non-null
    /// `stime_ns`.
    pub fn wait_active(&self) {
        let mut last = Vec::new();
        let r = wait_for(SYNC_TIMEOUT, POLL, || {
            last = self.status_json();
            let ready = !last.is_empty()
                && last
                    .iter()
                    .all(|b| b["status"] == "Active" && b["stime_ns"].is_i64());
            ready.then_some(())
        });
        if let Err(e) = r {
            panic!(
                "session never became Active with an stime: {e}\nlast status: {}\n{}",
                pretty(&last),
                self.diagnostics()
            );
        }
    }

    /// Waits until every brick's stime is later than `t`: every change made
    /// before `t` is on the slave.
    pub fn wait_synced_past(&self, t: SystemTime) {
        self.wait_synced_past_within(t, SYNC_TIMEOUT)
    }

    /// [`Scenario::wait_synced_past`] with another bound on the wait.
    pub fn wait_synced_past_within(&self, t: SystemTime, timeout: Duration) {
        let t_ns = nanos(t);
        let mut last = Vec::new();
        let r = wait_for(timeout, POLL, || {
            last = self.status_json();
            synced_and_idle(&last, t_ns).then_some(())
        });
        if let Err(e) = r {
            panic!(
                "stime never passed {t_ns}: {e}\nlast status: {}\n{}",
                pretty(&last),
                self.diagnostics()
            );
        }
    }

    /// Sum of `bytes_sent` over the bricks.
    #[track_caller]
    pub fn bytes_sent(&self) -> u64 {
        self.status_json()
            .iter()
            .map(|b| {
                b["bytes_sent"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("status --json lacks integer bytes_sent: {b}"))
            })
            .sum()
    }

    /// The session's private key: `<home>/sessions/*/secret.pem`.
    #[track_caller]
    pub fn session_key(&self) -> PathBuf {
        let sessions = self.home.join("sessions");
        let found: Vec<PathBuf> = fs::read_dir(&sessions)
            .unwrap_or_else(|e| panic!("read {}: {e}", sessions.display()))
            .filter_map(|d| d.ok())
            .map(|d| d.path().join("secret.pem"))
            .filter(|p| p.is_file())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {}/*/secret.pem, found {found:?}",
            sessions.display()
        );
        found.into_iter().next().unwrap()
    }

    /// The pids of this session's monitor process(es).
    pub fn monitor_pids(&self) -> Vec<i32> {
        let home = self.home.display().to_string();
        georep_testkit::find_processes(|a| {
            a.iter().any(|x| x == "monitor") && a.iter().any(|x| x == &home)
        })
    }

    /// The pids of the `geo-rep slave` processes sshd runs for this scenario.
    pub fn slave_pids(&self) -> Vec<i32> {
        let root = self.slave.display().to_string();
        georep_testkit::find_processes(|a| {
            a.iter().any(|x| x == "slave") && a.iter().any(|x| x.trim_matches('\'') == root)
        })
    }

    /// Every session log under `logs/`, rotated ones included.
    pub fn monitor_log(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = fs::read_dir(self.home.join("logs")) {
            for e in rd.flatten() {
                out.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// What helps when a wait fails: the sshd log.
    pub fn diagnostics(&self) -> String {
        format!("--- sshd log ---\n{}", self.sshd.log())
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // Best effort, never a second panic while unwinding.
        let mut cmd = Command::new(GEO_REP);
        cmd.env("GEOREP_HOME", &self.home)
            .arg("--home")
            .arg(&self.home)
            .args(["stop", &self.vol, &self.slave_url(), "force"]);
        let _ = run_with_timeout(&mut cmd, COMMAND_TIMEOUT);
        for (vol, slave) in self.others.borrow().iter() {
            let mut cmd = Command::new(GEO_REP);
            cmd.env("GEOREP_HOME", &self.home)
                .arg("--home")
                .arg(&self.home)
                .args(["stop", vol, slave, "force"]);
            let _ = run_with_timeout(&mut cmd, COMMAND_TIMEOUT);
        }
    }
}

/// Every brick's stime is past `t_ns` and no journal work is pending (no
/// batch in flight): only then is comparing the trees meaningful, since a
/// batch in flight may hold a temporary file in a directory whose mtime it
/// has not set back yet.
fn synced_and_idle(rows: &[Value], t_ns: i128) -> bool {
    let pending = |b: &Value| {
        ["pending_entry", "pending_data", "pending_meta"]
            .iter()
            .map(|k| b[*k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    !rows.is_empty()
        && rows.iter().all(|b| {
            b["stime_ns"].as_i64().is_some_and(|s| i128::from(s) > t_ns) && pending(b) == 0
        })
}

/// Nanoseconds since the epoch.
pub fn nanos(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn pretty(v: &[Value]) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// Whether `ssh -N -L` with `key` through `sshd` gives a working tunnel to
/// the sshd port itself: the tunnel must deliver the server's SSH-2.0 banner.
pub fn forwarding_works(sshd: &Sshd, key: &Path) -> bool {
    use std::io::Read;
    use std::process::Stdio;
    let local = closed_port();
    let mut child = sshd
        .ssh_command(key)
        .args(["-N", "-L"])
        .arg(format!("127.0.0.1:{local}:127.0.0.1:{}", sshd.port()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh -N -L");
    let verdict = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false); // ssh gave up: no tunnel
        }
        let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut buf = [0u8; 7];
        Some(s.read_exact(&mut buf).is_ok() && &buf == b"SSH-2.0")
    });
    let _ = child.kill();
    let _ = child.wait();
    verdict.unwrap_or(false)
}
