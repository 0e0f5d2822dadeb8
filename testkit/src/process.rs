//! Running commands and waiting for conditions, always with a bound.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::TestkitError;

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// The exit code, `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl fmt::Display for CommandOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout_str(),
            self.stderr_str()
        )
    }
}

/// Runs `cmd` with stdin from `/dev/null`, stdout and stderr captured in
/// anonymous temporary files (not pipes: a daemon the command leaves behind
/// cannot make the caller wait for EOF), and kills it after `timeout`.
pub fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<CommandOutput, TestkitError> {
    let what = format!("{:?}", cmd);
    let mut out = tempfile::tempfile().map_err(TestkitError::io("temporary file for stdout"))?;
    let mut err = tempfile::tempfile().map_err(TestkitError::io("temporary file for stderr"))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(
            out.try_clone()
                .map_err(TestkitError::io("dup stdout file"))?,
        )
        .stderr(
            err.try_clone()
                .map_err(TestkitError::io("dup stderr file"))?,
        )
        .spawn()
        .map_err(TestkitError::io(format!("spawn {what}")))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(TestkitError::io(format!("wait for {what}")))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut partial = Vec::new();
            let _ = err.seek(SeekFrom::Start(0));
            let _ = err.read_to_end(&mut partial);
            return Err(TestkitError::Timeout {
                what: format!(
                    "{what} to exit (killed it; its stderr so far: {})",
                    String::from_utf8_lossy(&partial)
                ),
                waited: timeout,
            });
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    out.seek(SeekFrom::Start(0))
        .and_then(|_| out.read_to_end(&mut stdout))
        .map_err(TestkitError::io("read captured stdout"))?;
    err.seek(SeekFrom::Start(0))
        .and_then(|_| err.read_to_end(&mut stderr))
        .map_err(TestkitError::io("read captured stderr"))?;
    Ok(CommandOutput {
        status,
        stdout,
        stderr,
    })
}

/// Polls `cond` every `poll` until it returns true; `Err(Timeout)` after
/// `timeout`. The condition is always checked once more at the deadline.
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), TestkitError> {
    wait_for(timeout, poll, || cond().then_some(())).map_err(|e| match e {
        TestkitError::Timeout { waited, .. } => TestkitError::Timeout {
            what: "condition".into(),
            waited,
        },
        other => other,
    })
}

/// Polls `probe` every `poll` until it returns `Some`; `Err(Timeout)` after
/// `timeout`.
pub fn wait_for<T>(
    timeout: Duration,
    poll: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, TestkitError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TestkitError::Timeout {
                what: "value".into(),
                waited: timeout,
            });
        }
        thread::sleep(poll);
    }
}

/// Live (not zombie) processes whose argument list satisfies `pred`: how
/// fault tests find a monitor or a slave process to kill.
pub fn find_processes(pred: impl Fn(&[String]) -> bool) -> Vec<i32> {
    live_processes()
        .into_iter()
        .filter(|(_, args)| pred(args))
        .map(|(pid, _)| pid)
        .collect()
}

/// The inode of the network namespace a `/proc/PID/ns/net` or
/// `/run/netns/NAME` path stands for.
pub fn net_namespace(path: &std::path::Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    })
}

/// Live processes of the network namespace with inode `ino`: the pid
/// namespace is shared, so this is how a namespaced daemon is told from
/// the same program run elsewhere on the machine.
pub fn processes_in_net_namespace(ino: u64) -> Vec<i32> {
    live_processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| {
            net_namespace(std::path::Path::new(&format!("/proc/{pid}/ns/net"))) == Some(ino)
        })
        .collect()
}

/// Every live (not zombie) process with its argument list.
fn live_processes() -> Vec<(i32, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !zombie && !args.is_empty() {
            found.push((pid, args));
        }
    }
    found
}

/// Sends `signal` to `pid`; false if there is no such process.
pub fn signal(pid: i32, signal: rustix::process::Signal) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| rustix::process::kill_process(p, signal).is_ok())
}

/// The `geo-rep` binary next to the running executable (the demo, the
/// benchmark). Under `cargo run` it is (re)built first into the same target
/// directory, because cargo builds only the binary it was asked to run.
pub fn geo_rep_beside_current_exe() -> std::io::Result<std::path::PathBuf> {
    use std::io::Error;
    use std::path::Path;
    let exe = std::env::current_exe()?;
    let geo_rep = exe.with_file_name("geo-rep");
    if let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) {
        // <target-dir>/<profile>/<this executable>
        let target_dir = exe.parent().and_then(Path::parent).ok_or_else(|| {
            Error::other(format!(
                "{} is not in a cargo target directory",
                exe.display()
            ))
        })?;
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--package",
            "georep",
            "--bin",
            "geo-rep",
            "--manifest-path",
        ])
        .arg(Path::new(&manifest_dir).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status()?;
        if !status.success() {
            return Err(Error::other(format!(
                "cargo build --bin geo-rep failed ({status})"
            )));
        }
    }
    if !geo_rep.is_file() {
        return Err(Error::other(format!(
            "{} not found: build it with `cargo build --release --bins`",
            geo_rep.display()
        )));
    }
    Ok(geo_rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_with_timeout_captures_output_and_status() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_str(), "err\n");
    }

    #[test]
    fn run_with_timeout_does_not_wait_for_a_daemon_holding_stdout() {
        // The background `sleep` keeps the captured stdout open; the call
        // must still return once `sh` exits (it would hit the timeout and
        // fail if it waited for EOF).
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "sleep 20 & echo started"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout_str(), "started\n");
    }

    #[test]
    fn run_with_timeout_kills_a_hanging_command() {
        let err = run_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, TestkitError::Timeout { .. }), "{err}");
    }

    #[test]
    fn wait_until_returns_ok_or_timeout() {
        let mut n = 0;
        wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
            n += 1;
            n == 3
        })
        .unwrap();
        assert_eq!(n, 3);
        let err = wait_until(Duration::from_millis(20), Duration::from_millis(5), || {
            false
        })
        .unwrap_err();
        assert!(matches!(err, TestkitError::Timeout { .. }));
    }
}
