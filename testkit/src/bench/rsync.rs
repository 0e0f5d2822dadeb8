//! rsync over the same sshd: `rsync -a --delete --stats -e "ssh …"` (with
//! `-z` where compression is compared).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{run_with_timeout, Sshd};
use anyhow::{bail, Context, Result};

/// How rsync reaches the slave.
#[derive(Debug, Clone)]
pub struct Rsync {
    /// The `-e` value: ssh with the test kit's options, the operator key, a
    /// port (the sshd's or a WAN relay's) and a cipher.
    rsh: String,
    /// `root@127.0.0.1`.
    dest_host: String,
    /// `-z`: rsync compresses what it sends.
    compress: bool,
}

/// One rsync run.
#[derive(Debug, Clone, Copy)]
pub struct RsyncRun {
    pub elapsed: Duration,
    /// rsync's "Total bytes sent" (protocol bytes, before ssh).
    pub bytes_sent: u64,
}

impl Rsync {
    pub fn new(sshd: &Sshd, port: u16, cipher: Option<&str>) -> Rsync {
        let cmd = sshd.ssh_command(sshd.operator_key());
        let mut args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let dest_host = args.pop().unwrap_or_default();
        // Replace the port the test kit put first.
        if let Some(i) = args.iter().position(|a| a == "-p") {
            args[i + 1] = port.to_string();
        }
        if let Some(c) = cipher {
            args.push("-c".into());
            args.push(c.into());
        }
        let mut rsh = String::from("ssh");
        for a in args {
            rsh.push(' ');
            rsh.push_str(&a);
        }
        Rsync {
            rsh,
            dest_host,
            compress: false,
        }
    }

    /// The same with `-z` (compression), to compare with georep's zstd.
    pub fn compressed(mut self) -> Rsync {
        self.compress = true;
        self
    }

    /// The ssh command line rsync uses, for the report.
    pub fn rsh(&self) -> &str {
        &self.rsh
    }

    /// `rsync -a --delete --stats SRC/ HOST:DST/` (DST is created).
    pub fn sync(&self, src: &Path, dst: &Path) -> Result<RsyncRun> {
        let mut cmd = Command::new("rsync");
        cmd.args(["-a", "--delete", "--stats", "-e", &self.rsh]);
        if self.compress {
            cmd.arg("-z");
        }
        cmd.arg(format!("{}/", src.display())).arg(format!(
            "{}:{}/",
            self.dest_host,
            dst.display()
        ));
        let t0 = Instant::now();
        let out = run_with_timeout(&mut cmd, Duration::from_secs(3600))
            .context("running rsync (is it installed?)")?;
        let elapsed = t0.elapsed();
        if !out.success() {
            bail!("rsync failed ({}): {}", out.status, out.stderr_str().trim());
        }
        let bytes_sent = parse_stat(&out.stdout_str(), "Total bytes sent:")
            .context("rsync --stats printed no 'Total bytes sent'")?;
        Ok(RsyncRun {
            elapsed,
            bytes_sent,
        })
    }
}

/// The number after `key` in rsync's `--stats` output (`1,234,567`).
fn parse_stat(stats: &str, key: &str) -> Option<u64> {
    let rest = stats.lines().find_map(|l| l.trim().strip_prefix(key))?;
    let num: String = rest
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(char::is_ascii_digit)
        .collect();
    num.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stats() {
        let s = "Number of files: 3\nTotal bytes sent: 1,234,567\nTotal bytes received: 35\n";
        assert_eq!(parse_stat(s, "Total bytes sent:"), Some(1_234_567));
        assert_eq!(parse_stat(s, "Total bytes received:"), Some(35));
        assert_eq!(parse_stat(s, "Nope:"), None);
    }
}
