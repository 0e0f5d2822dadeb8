//! Driving the real `geo-rep` binary through its CLI: create … push-pem,
//! start, `status --json` polling, stop. One [`Geo`] is one session with its
//! own `GEOREP_HOME`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{run_with_timeout, Sshd};
use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::procfs;

const VOL: &str = "bench";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Nanoseconds since the epoch, the unit of `stime_ns`.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// What `status --json` says about one brick.
#[derive(Debug, Clone)]
pub struct BrickStatus {
    pub status: String,
    pub stime_ns: Option<i64>,
    pub bytes_sent: u64,
    pub last_error: Option<String>,
}

/// A georep session under benchmark.
pub struct Geo {
    bin: PathBuf,
    home: PathBuf,
    slave_dir: PathBuf,
    slave_url: String,
    running: bool,
    /// How often `status --json` is run while waiting.
    pub poll: Duration,
}

impl Geo {
    /// `geo-rep create bench root@127.0.0.1::SLAVE push-pem --brick …` with a
    /// fresh home; `ssh_port` may differ from the sshd's (a WAN relay).
    pub fn create(
        bin: &Path,
        home: &Path,
        bricks: &[&Path],
        slave_dir: &Path,
        sshd: &Sshd,
        ssh_port: u16,
    ) -> Result<Geo> {
        std::fs::create_dir_all(slave_dir)
            .with_context(|| format!("creating {}", slave_dir.display()))?;
        let slave = slave_dir.display().to_string();
        Self::create_into(bin, home, bricks, &slave, slave_dir, sshd, ssh_port)
    }

    /// [`Geo::create`] into the slave named `slave` (a directory, or a
    /// GlusterFS volume by name), whose tree is seen at `slave_dir`.
    pub fn create_into(
        bin: &Path,
        home: &Path,
        bricks: &[&Path],
        slave: &str,
        slave_dir: &Path,
        sshd: &Sshd,
        ssh_port: u16,
    ) -> Result<Geo> {
        std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
        let geo = Geo {
            bin: bin.to_path_buf(),
            home: home.to_path_buf(),
            slave_dir: slave_dir.to_path_buf(),
            slave_url: format!("{}@{}::{slave}", sshd.user(), sshd.host()),
            running: false,
            poll: Duration::from_millis(25),
        };
        let mut args: Vec<OsString> = vec![
            "create".into(),
            VOL.into(),
            geo.slave_url.clone().into(),
            "push-pem".into(),
        ];
        for b in bricks {
            args.push("--brick".into());
            args.push(b.into());
        }
        args.extend([
            "--ssh-port".into(),
            ssh_port.to_string().into(),
            "--identity".into(),
            sshd.operator_key().into(),
            "--remote-command".into(),
            bin.into(),
            "--authorized-keys-file".into(),
            sshd.authorized_keys().into(),
        ]);
        geo.run(&args)?;
        Ok(geo)
    }

    pub fn slave_dir(&self) -> &Path {
        &self.slave_dir
    }

    fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("GEOREP_HOME", &self.home)
            .arg("--home")
            .arg(&self.home)
            .args(args);
        cmd
    }

    fn run(&self, args: &[OsString]) -> Result<String> {
        let out = run_with_timeout(&mut self.command(args), COMMAND_TIMEOUT)?;
        if !out.success() {
            bail!(
                "geo-rep {} failed ({}): {}",
                args[0].to_string_lossy(),
                out.status,
                out.stderr_str().trim()
            );
        }
        Ok(out.stdout_str())
    }

    /// `geo-rep start`; returns when the command returned (the monitor runs
    /// in the background).
    pub fn start(&mut self) -> Result<()> {
        self.run(&["start".into(), VOL.into(), self.slave_url.clone().into()])?;
        self.running = true;
        Ok(())
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = self.run(&[
                "stop".into(),
                VOL.into(),
                self.slave_url.clone().into(),
                "force".into(),
            ]);
            self.running = false;
        }
    }

    /// `geo-rep config … KEY VALUE`.
    pub fn config(&self, key: &str, value: &str) -> Result<()> {
        self.run(&[
            "config".into(),
            VOL.into(),
            self.slave_url.clone().into(),
            key.into(),
            value.into(),
        ])?;
        Ok(())
    }

    pub fn status(&self) -> Result<Vec<BrickStatus>> {
        let out = self.run(&[
            "status".into(),
            VOL.into(),
            self.slave_url.clone().into(),
            "--json".into(),
        ])?;
        let v: Value = serde_json::from_str(&out).context("parsing geo-rep status --json")?;
        let Value::Array(rows) = v else {
            bail!("geo-rep status --json: expected an array, got {out}");
        };
        Ok(rows
            .iter()
            .map(|r| BrickStatus {
                status: r["status"].as_str().unwrap_or("").to_owned(),
                stime_ns: r["stime_ns"].as_i64(),
                bytes_sent: r["bytes_sent"].as_u64().unwrap_or(0),
                last_error: r["last_error"].as_str().map(str::to_owned),
            })
            .collect())
    }

    /// Total `bytes_sent` over the bricks.
    pub fn bytes_sent(&self) -> Result<u64> {
        Ok(self.status()?.iter().map(|b| b.bytes_sent).sum())
    }

    /// Polls `status --json` until every brick's stime is past `t_ns`;
    /// returns the moment that was first seen.
    pub fn wait_stime_past(&self, t_ns: i64, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let bricks = self.status()?;
            let now = Instant::now();
            if !bricks.is_empty() && bricks.iter().all(|b| b.stime_ns.is_some_and(|s| s > t_ns)) {
                return Ok(now);
            }
            if now >= deadline {
                bail!(
                    "georep did not sync within {timeout:?}: stime {:?} still before {t_ns}; status {:?}; last error {:?}",
                    bricks.iter().map(|b| b.stime_ns).collect::<Vec<_>>(),
                    bricks.iter().map(|b| b.status.as_str()).collect::<Vec<_>>(),
                    bricks.iter().filter_map(|b| b.last_error.as_deref()).collect::<Vec<_>>(),
                );
            }
            std::thread::sleep(self.poll);
        }
    }

    /// The monitor process of this session.
    pub fn monitor_pid(&self) -> Option<u32> {
        procfs::monitor_pid(&self.home)
    }

    /// The long-lived `geo-rep slave` process of this session.
    pub fn slave_pid(&self) -> Option<u32> {
        procfs::slave_pid(&self.slave_dir)
    }

    /// The monitor's log (`$GEOREP_HOME/sessions/*/monitor.log`), for errors.
    pub fn monitor_log_tail(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.home.join("sessions")) {
            for e in rd.flatten() {
                if let Ok(s) = std::fs::read_to_string(e.path().join("monitor.log")) {
                    let lines: Vec<&str> = s.lines().collect();
                    let from = lines.len().saturating_sub(20);
                    out.push_str(&lines[from..].join("\n"));
                }
            }
        }
        out
    }
}

impl Drop for Geo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resource use of a running session, sampled before and after a measured
/// step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Peak RSS of the monitor (KiB).
    pub monitor_hwm_kib: u64,
    /// Peak RSS of the slave process (KiB).
    pub slave_hwm_kib: u64,
    /// CPU seconds of monitor + slave.
    pub cpu_secs: f64,
}

/// Tracks CPU and peak RSS of a session's processes across one step.
pub struct UsageProbe {
    monitor: Option<u32>,
    slave: Option<u32>,
    cpu0: f64,
}

impl UsageProbe {
    /// Starts a step: resets the peaks of the processes that already run.
    pub fn begin(geo: &Geo) -> UsageProbe {
        let monitor = geo.monitor_pid();
        let slave = geo.slave_pid();
        for p in [monitor, slave].into_iter().flatten() {
            procfs::reset_peak_rss(p);
        }
        let cpu0 = [monitor, slave]
            .into_iter()
            .flatten()
            .filter_map(procfs::cpu_secs)
            .sum();
        UsageProbe {
            monitor,
            slave,
            cpu0,
        }
    }

    /// Ends the step (processes started meanwhile are found now).
    pub fn end(self, geo: &Geo) -> Usage {
        let monitor = self.monitor.or_else(|| geo.monitor_pid());
        // The slave process may have been replaced (reconnect); take the
        // current one.
        let slave = geo.slave_pid().or(self.slave);
        let cpu1: f64 = [monitor, slave]
            .into_iter()
            .flatten()
            .filter_map(procfs::cpu_secs)
            .sum();
        Usage {
            monitor_hwm_kib: monitor.and_then(procfs::peak_rss_kib).unwrap_or(0),
            slave_hwm_kib: slave.and_then(procfs::peak_rss_kib).unwrap_or(0),
            cpu_secs: (cpu1 - self.cpu0).max(0.0),
        }
    }
}
