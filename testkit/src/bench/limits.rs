//! The machine's own limits the workloads run against: an SSH pipe
//! (`head -c N /dev/zero | ssh … 'cat >/dev/null'`) and a local `cp -a`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Sshd;
use anyhow::{bail, Context, Result};

/// Pushes `bytes` zero bytes through the system ssh client with `cipher`
/// into `cat >/dev/null` on the sshd at `port`; returns the elapsed time
/// (connection set-up included, as rsync pays it too).
pub fn ssh_pipe(sshd: &Sshd, port: u16, cipher: &str, bytes: u64) -> Result<Duration> {
    let mut cmd = sshd.ssh_command(sshd.operator_key());
    let mut args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let dest = args.pop().context("ssh_command has a destination")?;
    if let Some(i) = args.iter().position(|a| a == "-p") {
        args[i + 1] = port.to_string().into();
    }
    cmd = Command::new("ssh");
    cmd.args(&args)
        .args(["-c", cipher])
        .arg(dest)
        .arg("cat >/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting ssh")?;
    let mut stdin = child.stdin.take().context("ssh stdin")?;
    let buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        if let Err(e) = stdin.write_all(&buf[..n]) {
            let out = child.wait_with_output()?;
            bail!(
                "ssh pipe broke: {e}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        left -= n as u64;
    }
    drop(stdin);
    let out = child.wait_with_output().context("waiting for ssh")?;
    let elapsed = t0.elapsed();
    if !out.status.success() {
        bail!(
            "ssh -c {cipher} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(elapsed)
}

/// `cp -a SRC DST` (DST must not exist).
pub fn cp_a(src: &Path, dst: &Path) -> Result<Duration> {
    let t0 = Instant::now();
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .context("running cp -a")?;
    if !st.success() {
        bail!("cp -a {} {} failed ({st})", src.display(), dst.display());
    }
    Ok(t0.elapsed())
}
