//! A guided run of georep's main job on one machine: a throwaway sshd on
//! 127.0.0.1 plays the slave host, a temporary directory plays the master
//! brick, and the real `geo-rep` binary replicates it.
//!
//! `cargo run --release --bin georep-demo`

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use georep_testkit::{compare_trees, random_bytes, run_with_timeout, CompareOptions, Sshd};
use serde_json::Value;

const VOL: &str = "demo";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);

fn main() {
    if let Err(e) = run() {
        eprintln!("georep-demo: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let geo_rep = geo_rep_binary()?;
    println!(
        "== georep demo: replicate a brick to a \"remote\" directory over a real sshd on 127.0.0.1"
    );

    let sshd = Sshd::start().context("starting a loopback sshd")?;
    println!(
        "sshd listening on 127.0.0.1:{} (throwaway keys in {})",
        sshd.port(),
        sshd.dir().display()
    );
    let tmp = tempfile::Builder::new()
        .prefix("georep-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let home = tmp.path().join("home");
    let brick = tmp.path().join("brick");
    let slave = tmp.path().join("slave");
    for d in [&home, &brick, &slave] {
        fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    println!("master brick: {}", brick.display());
    println!("slave dir:    {}", slave.display());
    let slave_url = format!("root@127.0.0.1::{}", slave.display());
    let mut session = Session {
        geo_rep: geo_rep.clone(),
        home: home.clone(),
        slave_url: slave_url.clone(),
        started: false,
    };

    let create: Vec<OsString> = vec![
        "create".into(),
        VOL.into(),
        slave_url.clone().into(),
        "push-pem".into(),
        "--brick".into(),
        brick.clone().into(),
        "--ssh-port".into(),
        sshd.port().to_string().into(),
        "--identity".into(),
        sshd.operator_key().into(),
        "--remote-command".into(),
        geo_rep.clone().into(),
        "--authorized-keys-file".into(),
        sshd.authorized_keys().into(),
    ];
    // From here on, a failure stops the session on the way out.
    session.started = true;
    session.run_shown(&create)?;
    session.run_shown(&["start".into(), VOL.into(), slave_url.clone().into()])?;

    println!("\n== waiting for the session to become Active");
    session.wait_until(|bricks| {
        bricks
            .iter()
            .all(|b| b["status"] == "Active" && b["stime_ns"].is_i64())
    })?;

    println!("\n== writing sample files on the master brick");
    write_samples(&brick)?;
    let t = SystemTime::now();
    let t_ns = t.duration_since(UNIX_EPOCH)?.as_nanos();

    println!("== waiting until every brick's stime passes the last change");
    session.wait_until(|bricks| {
        bricks
            .iter()
            .all(|b| b["stime_ns"].as_i64().is_some_and(|s| s as u128 > t_ns))
    })?;

    println!();
    session.run_shown(&["status".into(), VOL.into(), slave_url.clone().into()])?;

    let diffs = compare_trees(&brick, &slave, &CompareOptions::default());
    if !diffs.is_empty() {
        for d in &diffs {
            eprintln!("  {d}");
        }
        bail!(
            "the slave differs from the master in {} place(s)",
            diffs.len()
        );
    }
    println!(
        "\ntrees identical: {} == {}",
        brick.display(),
        slave.display()
    );

    println!();
    session.run_shown(&["stop".into(), VOL.into(), slave_url.into()])?;
    session.started = false;
    println!("\n== cleaning up (sshd stopped, temporary directories removed)");
    drop(session);
    drop(sshd);
    drop(tmp);
    Ok(())
}

fn geo_rep_binary() -> Result<PathBuf> {
    georep_testkit::geo_rep_beside_current_exe()
        .context("locating or building geo-rep for the demo")
}

/// Calls of the `geo-rep` CLI for one session; stops it on the way out if
/// the demo fails half-way.
struct Session {
    geo_rep: PathBuf,
    home: PathBuf,
    slave_url: String,
    started: bool,
}

impl Session {
    fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.geo_rep);
        cmd.env("GEOREP_HOME", &self.home)
            .arg("--home")
            .arg(&self.home)
            .args(args);
        cmd
    }

    /// Runs `geo-rep ARGS`, echoing the command line and its output.
    fn run_shown(&self, args: &[OsString]) -> Result<String> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        println!("$ geo-rep {}", shown.join(" "));
        let out = run_with_timeout(&mut self.command(args), COMMAND_TIMEOUT)?;
        print!("{}", out.stdout_str());
        eprint!("{}", out.stderr_str());
        if !out.success() {
            bail!("geo-rep {} failed ({})", shown[0], out.status);
        }
        Ok(out.stdout_str())
    }

    fn status(&self) -> Result<Vec<Value>> {
        let args: Vec<OsString> = vec![
            "status".into(),
            VOL.into(),
            self.slave_url.clone().into(),
            "--json".into(),
        ];
        let out = run_with_timeout(&mut self.command(&args), COMMAND_TIMEOUT)?;
        if !out.success() {
            bail!(
                "geo-rep status failed ({}): {}",
                out.status,
                out.stderr_str()
            );
        }
        match serde_json::from_slice(&out.stdout).context("parsing geo-rep status --json")? {
            Value::Array(rows) if !rows.is_empty() => Ok(rows),
            other => bail!("geo-rep status --json: expected a non-empty array, got {other}"),
        }
    }

    fn wait_until(&self, done: impl Fn(&[Value]) -> bool) -> Result<()> {
        let deadline = std::time::Instant::now() + SYNC_TIMEOUT;
        loop {
            let bricks = self.status()?;
            if done(&bricks) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "gave up after {SYNC_TIMEOUT:?}; last status: {}",
                    serde_json::to_string_pretty(&bricks)?
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.started {
            let args: Vec<OsString> = vec![
                "stop".into(),
                VOL.into(),
                self.slave_url.clone().into(),
                "force".into(),
            ];
            let _ = run_with_timeout(&mut self.command(&args), COMMAND_TIMEOUT);
        }
    }
}

fn write_samples(brick: &Path) -> Result<()> {
    let files: [(&str, &[u8]); 4] = [
        ("README.txt", b"This brick is replicated by georep.\n"),
        (
            "docs/guide.txt",
            b"Step 1: create. Step 2: start. Step 3: relax.\n",
        ),
        ("docs/notes/todo.txt", b"- checkpoint\n- failover\n"),
        ("src/main.c", b"int main(void) { return 0; }\n"),
    ];
    for (rel, data) in files {
        let p = brick.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        println!("  wrote {rel} ({} bytes)", data.len());
    }
    fs::create_dir_all(brick.join("data"))?;
    fs::write(brick.join("data/blob.bin"), random_bytes(4 << 20, 4))?;
    println!("  wrote data/blob.bin (4 MiB of random bytes)");
    symlink("docs/guide.txt", brick.join("GUIDE"))?;
    println!("  linked GUIDE -> docs/guide.txt");
    Ok(())
}
